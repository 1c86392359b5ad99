//! The handlers' client: the tutorial's hand-written calls, and timers that
//! play the role of `@statsd.timer`.

mod support;

use std::time::Duration;

use support::{flushed_lines, spy_statsd, totals};
use tower_statsd::cadence::prelude::*;

#[test]
fn the_tutorials_calls() {
    let (statsd, rx) = spy_statsd("statstest");
    statsd.incr("root.called").unwrap();
    statsd.count("root.called", 10).unwrap();
    statsd.decr("stock").unwrap();
    statsd.gauge("resources.memory", 4128).unwrap();
    statsd.gauge_delta("level", 5.0);
    statsd.gauge_delta("level", -2.0);
    statsd.set("user", 123).unwrap();
    statsd.set("user", 123).unwrap();
    statsd.set("user", 124).unwrap();
    let t = totals(&flushed_lines(&statsd, &rx));
    assert_eq!(t.counters["statstest.root.called"], 11.0);
    assert_eq!(t.counters["statstest.stock"], -1.0);
    assert_eq!(t.gauges["statstest.resources.memory"], ["4128"]);
    assert_eq!(t.gauges["statstest.level"], ["+3"]);
    let mut users = t.sets["statstest.user"].clone();
    users.sort();
    assert_eq!(users, ["123", "124"]);
}

#[test]
fn timers_record_float_milliseconds_even_on_error_or_panic() {
    let (statsd, rx) = spy_statsd("statstest");
    let answer: Result<u8, &str> = statsd.time_fn("work", || Err("failed"));
    assert!(answer.is_err());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        statsd.time_fn("panicky", || -> u8 { panic!("boom") })
    }));
    assert!(caught.is_err());
    {
        let _guard = statsd.start_timer("guarded");
        std::thread::sleep(Duration::from_millis(2));
    }
    statsd.timing_ms("exact", 0.3);
    let t = totals(&flushed_lines(&statsd, &rx));
    assert_eq!(t.timers["statstest.work"].len(), 1);
    assert_eq!(t.timers["statstest.panicky"].len(), 1);
    let guarded = t.timers["statstest.guarded"][0];
    assert!((2.0..1000.0).contains(&guarded), "{guarded}");
    assert_eq!(
        t.timers["statstest.exact"],
        [0.3],
        "sub-millisecond values are kept"
    );
}

#[tokio::test]
async fn futures_are_timed_to_completion() {
    let (statsd, rx) = spy_statsd("statstest");
    let out = statsd
        .time_future("slow", async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Err::<(), _>("the timed code failed")
        })
        .await;
    assert!(out.is_err());
    let t = totals(&flushed_lines(&statsd, &rx));
    let ms = t.timers["statstest.slow"][0];
    assert!(ms >= 5.0, "{ms}");
}

#[test]
fn a_key_with_no_name_left_is_dropped_and_counted_never_sent_as_the_prefix() {
    let (statsd, rx) = spy_statsd("p");
    statsd.timing_ms("...", 1.5);
    statsd.gauge_delta("", 2.0);
    statsd.timing_ms("ok", 1.5);
    assert_eq!(statsd.sink().dropped(), 2);
    let lines = flushed_lines(&statsd, &rx);
    let mut lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    lines.sort();
    assert_eq!(lines, ["p.ok:1.5|ms", "p.tower_statsd.dropped:2|c"]);
}

#[test]
fn debug_and_prefix_show_the_sanitized_prefix() {
    let (statsd, _rx) = spy_statsd(".my..app.");
    assert_eq!(statsd.prefix(), "my.app");
    assert_eq!(
        format!("{statsd:?}"),
        r#"Statsd { prefix: "my.app", naming: Hierarchical, .. }"#
    );
}

#[test]
fn values_that_are_not_numbers_or_negative_times_are_not_sent() {
    let (statsd, rx) = spy_statsd("p");
    statsd.timing_ms("negative", -0.5);
    statsd.timing_ms("nan", f64::NAN);
    statsd.timing_ms("infinite", f64::INFINITY);
    statsd.gauge_delta("nan", f64::NAN);
    statsd.gauge_delta("infinite", f64::NEG_INFINITY);
    statsd.timing_ms("zero", 0.0);
    statsd.gauge_delta("down", -1.5);
    let mut lines = flushed_lines(&statsd, &rx);
    lines.sort();
    assert_eq!(lines, ["p.down:-1.5|g", "p.zero:0|ms"]);
}
