//! What `tracing` logs: shared by the crate's unit tests (`sink/testing.rs`
//! includes this file) and its integration tests (`tests/support`).

#![allow(dead_code, unreachable_pub)]

/// What `tracing` writes while `f` runs, formatted as the fmt subscriber
/// prints it (no colours).
pub fn logged(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // tracing caches each callsite's interest for the whole process, from
    // the first thread that reaches it. While at most one subscriber is
    // registered, that thread's own subscriber decides: a parallel test's
    // thread with none caches "never", and this thread's events are lost.
    // A second subscriber held meanwhile makes every registration ask all
    // of them; the rebuild heals a callsite cached before this one was set.
    let anchor = tracing::Dispatch::new(tracing_subscriber::registry());
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    f();
    drop(guard);
    drop(anchor);
    let bytes = captured.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}
