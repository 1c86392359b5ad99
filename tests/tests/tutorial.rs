//! The tutorial, end to end: the built example API sends to the real StatsD
//! 0.9.0, which flushes to real carbon; we read Graphite's render API.

use std::time::Duration;

use e2e::{get, poll, ExampleApi, Stack};

const N_ROOT: usize = 12;
const USERS: [u32; 5] = [101, 102, 103, 104, 105];
const MAX_DELAY_MS: u64 = 40;
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn the_tutorial_end_to_end() {
    let stack = Stack::shared();
    let mut env = stack.statsd_env();
    env.extend([
        ("STATSD_PREFIX".to_owned(), "statstest".to_owned()),
        ("DEMO_MAX_DELAY_MS".to_owned(), MAX_DELAY_MS.to_string()),
        // Nothing leaves before shutdown: what Graphite shows was sent by the
        // shutdown flush, so graceful shutdown is tested too. One packet holds
        // it all, so the set cannot straddle two daemon flushes.
        ("STATSD_FLUSH_MS".to_owned(), "600000".to_owned()),
        ("STATSD_MAXUDPSIZE".to_owned(), "8192".to_owned()),
    ]);
    let api = ExampleApi::start(&env);
    let http = reqwest::blocking::Client::new();

    // The tutorial's root endpoint, with and without a message.
    for i in 0..N_ROOT {
        let (status, body) = if i % 2 == 0 {
            get(&http, &format!("{}/?msg=Hello+world", api.url))
        } else {
            get(&http, &format!("{}/", api.url))
        };
        assert_eq!(status, 200);
        let expected = if i % 2 == 0 {
            "Hello world"
        } else {
            "No message provided!"
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["message"],
            expected
        );
    }
    // K distinct users, each seen three times, and rejected ids that are not visits.
    for _ in 0..3 {
        for id in USERS {
            let (status, body) = get(&http, &format!("{}/user?id={id}", api.url));
            assert_eq!((status, body), (200, format!("{{\"id\":{id}}}")));
        }
    }
    for bad in ["abc", "1.5", "%0Aevil%7Cc"] {
        let (status, body) = get(&http, &format!("{}/user?id={bad}", api.url));
        assert_eq!(status, 400, "{bad}");
        assert!(body.contains("\"error\""), "a JSON error: {body}");
    }
    // The tutorial's other calls: +10, -1, an absolute gauge, a gauge delta.
    let (status, _) = get(&http, &format!("{}/tutorial", api.url));
    assert_eq!(status, 200);

    assert!(api.terminate(), "SIGTERM: graceful exit");

    let from = "-10min";
    let n = N_ROOT as f64;
    poll(
        "stats_counts.statstest.root.called sums to N",
        DEADLINE,
        || {
            let sum = stack.render_sum("stats_counts.statstest.root.called", from)?;
            (sum == n).then_some(()).ok_or(format!("sum {sum}"))
        },
    );
    // The rate: N events in one 1-second flush show as N per second.
    let rate = stack
        .render_sum("stats.statstest.root.called", from)
        .unwrap();
    assert_eq!(rate, n, "per-second rate with a 1 s flush");
    poll(
        "stats.timers.statstest.root.count sums to N",
        DEADLINE,
        || {
            let sum = stack.render_sum("stats.timers.statstest.root.count", from)?;
            (sum == n).then_some(()).ok_or(format!("sum {sum}"))
        },
    );
    let upper = stack
        .render("stats.timers.statstest.root.upper_90", from)
        .unwrap();
    assert!(!upper.is_empty());
    for (_, ms) in &upper {
        assert!(
            *ms > 0.0 && *ms <= MAX_DELAY_MS as f64 + 50.0,
            "upper_90 {ms} ms"
        );
    }
    poll(
        "stats.sets.statstest.user.count is K in its flush",
        DEADLINE,
        || {
            let points = stack.render("stats.sets.statstest.user.count", from)?;
            let max = points.iter().map(|(_, v)| *v).fold(0.0, f64::max);
            (max == USERS.len() as f64)
                .then_some(())
                .ok_or(format!("{points:?}"))
        },
    );
    poll("the +10 and -1 counters", DEADLINE, || {
        let batch = stack.render_sum("stats_counts.statstest.tutorial.batch", from)?;
        let stock = stack.render_sum("stats_counts.statstest.tutorial.stock", from)?;
        (batch == 10.0 && stock == -1.0)
            .then_some(())
            .ok_or(format!("{batch} {stock}"))
    });
    poll("the gauges", DEADLINE, || {
        let memory = stack.render("stats.gauges.statstest.resources.memory", from)?;
        let level = stack.render("stats.gauges.statstest.tutorial.level", from)?;
        let ok =
            memory.iter().any(|(_, v)| *v > 1_000_000.0) && level.iter().any(|(_, v)| *v == 5.0);
        ok.then_some(()).ok_or(format!("{memory:?} {level:?}"))
    });
    poll("status counters", DEADLINE, || {
        let ok = stack.render_sum("stats_counts.statstest.root.status.200", from)?;
        let bad = stack.render_sum("stats_counts.statstest.user.status.400", from)?;
        (ok == n && bad == 3.0)
            .then_some(())
            .ok_or(format!("{ok} {bad}"))
    });

    // The tree the tutorial shows.
    let timer_leaves = stack.find("stats.timers.statstest.root.*").unwrap();
    for leaf in [
        "mean_90",
        "upper_90",
        "median",
        "lower",
        "count",
        "std",
        "sum",
        "sum_squares",
    ] {
        let path = format!("stats.timers.statstest.root.{leaf}");
        assert!(timer_leaves.contains(&path), "{path} in {timer_leaves:?}");
    }
    assert!(stack
        .find("stats.sets.statstest.user.*")
        .unwrap()
        .contains(&"stats.sets.statstest.user.count".to_owned()));
    assert!(stack
        .find("stats.statstest.root.*")
        .unwrap()
        .contains(&"stats.statstest.root.called".to_owned()));

    // Nothing we sent was a bad line.
    poll("statsd.bad_lines_seen reported", DEADLINE, || {
        let points = stack.render("stats_counts.statsd.bad_lines_seen", from)?;
        (!points.is_empty())
            .then_some(points)
            .ok_or("no datapoints yet".to_owned())
    });
    let bad_lines = stack
        .render_sum("stats_counts.statsd.bad_lines_seen", from)
        .unwrap();
    assert_eq!(bad_lines, 0.0);

    // The timer graph renders as a real PNG.
    let (content_type, png) = stack
        .render_bytes(&[
            ("target", "stats.timers.statstest.root.median"),
            ("target", "stats.timers.statstest.root.upper_90"),
            ("from", from),
            ("format", "png"),
        ])
        .unwrap();
    assert_eq!(content_type, "image/png");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "{} bytes",
        png.len()
    );
}
