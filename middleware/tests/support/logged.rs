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
    let guard = tracing::subscriber::set_default(subscriber);
    // A callsite first hit by another test's thread while this subscriber
    // was being registered can keep the interest it computed without it
    // (and skip this thread's events); computed again now, it includes it.
    tracing::callsite::rebuild_interest_cache();
    f();
    drop(guard);
    let bytes = captured.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}
