//! The flusher thread never polls: between windows it sleeps, so over a second of short windows
//! with a line now and then it uses a few milliseconds of CPU. A flusher that
//! wakes in a loop (a window end or a send time already past, a flush asked
//! when none was) burns a core instead.
//!
//! Alone in its test binary: the one `tower-statsd` thread of this process is
//! the one measured.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use tower_statsd::cadence::MetricSink;
use tower_statsd::sink::AggregatingSink;

mod support;
use support::spy::spy;

/// The threads of this process named `tower-statsd`.
fn flusher_threads() -> Vec<String> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() == "tower-statsd" {
            found.push(path.join("stat").to_string_lossy().into_owned());
        }
    }
    found
}

/// User plus system CPU time of a thread, in clock ticks (10 ms).
fn cpu_ticks(stat: &str) -> u64 {
    let text = std::fs::read_to_string(stat).unwrap();
    // After the `(comm)` field: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = text[text.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn the_flusher_sleeps_between_windows() {
    let (packets, spy) = spy();
    let sink = AggregatingSink::builder(spy)
        .flush_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    // The thread names itself once it runs.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut threads = flusher_threads();
    while threads.is_empty() && Instant::now() < deadline {
        std::thread::yield_now();
        threads = flusher_threads();
    }
    assert_eq!(threads.len(), 1, "{threads:?}");
    let before = cpu_ticks(&threads[0]);
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(2) {
        sink.emit("a:1|c").unwrap();
        sent += 1;
        // The window's line arrives within a few windows.
        let line = packets.wait(Duration::from_secs(5)).unwrap();
        assert_eq!(line, "a:1|c");
        std::thread::sleep(Duration::from_millis(40));
    }
    assert!(sent > 10, "{sent} windows");
    // 2 s of 20 ms windows: about a hundred short wakes. A loop that never
    // sleeps gets tens of ticks even on a busy machine.
    let used = cpu_ticks(&threads[0]) - before;
    assert!(used <= 10, "the flusher used {used} ticks of CPU in 2 s");
}
