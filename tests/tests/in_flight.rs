//! What the peers record, read back from Graphite: the built example API
//! reports the requests in flight per route (a gauge, above zero while slow
//! requests to `/` run, back to 0 after) and the response body bytes it sent
//! per route (counters equal to the sum of the bodies the client received).

use std::time::{Duration, Instant};

use e2e::{get, poll, ExampleApi, Stack};

const PREFIX: &str = "inflight";
/// Every `/` takes this long: long enough to span several client windows
/// and a daemon flush.
const SLOW_MS: u64 = 2500;
const SLOW_REQUESTS: usize = 3;
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn in_flight_requests_and_bytes_sent_reach_graphite() {
    let stack = Stack::shared();
    let mut env = stack.statsd_env();
    env.extend([
        ("STATSD_PREFIX".to_owned(), PREFIX.to_owned()),
        ("DEMO_MIN_DELAY_MS".to_owned(), SLOW_MS.to_string()),
        ("DEMO_MAX_DELAY_MS".to_owned(), SLOW_MS.to_string()),
        ("STATSD_FLUSH_MS".to_owned(), "200".to_owned()),
    ]);
    let api = ExampleApi::start(&env);

    // Slow requests to `/`, all at once, each on its own client.
    let started = Instant::now();
    let slow: Vec<_> = (0..SLOW_REQUESTS)
        .map(|i| {
            let url = format!("{}/?msg=slow+{i}", api.url);
            std::thread::spawn(move || get(&reqwest::blocking::Client::new(), &url))
        })
        .collect();
    // Meanwhile, fast `/user` requests, good and bad: bytes of both count.
    let http = reqwest::blocking::Client::new();
    let mut user_bytes = 0;
    for id in ["1", "22", "333", "abc"] {
        let (_, body) = get(&http, &format!("{}/user?id={id}", api.url));
        user_bytes += body.len();
    }
    let mut root_bytes = 0;
    for request in slow {
        let (status, body) = request.join().expect("a slow request");
        assert_eq!(status, 200, "{body}");
        root_bytes += body.len();
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(SLOW_MS), "slow: {took:?}");

    // The gauge: some point above zero while they ran, and 0 at the end.
    let gauge = format!("stats.gauges.{PREFIX}.root.in_flight");
    let points = poll("the in-flight gauge back at 0", DEADLINE, || {
        let points = stack.render(&gauge, "-10min")?;
        match points.last() {
            Some(&(_, last)) if last == 0.0 && points.iter().any(|&(_, v)| v > 0.0) => Ok(points),
            _ => Err(format!("{points:?}")),
        }
    });
    let highest = points.iter().map(|&(_, v)| v).fold(0.0, f64::max);
    assert!(
        (1.0..=SLOW_REQUESTS as f64).contains(&highest),
        "at most the {SLOW_REQUESTS} slow requests in flight: {points:?}"
    );

    // Bytes: what the client received, exactly, per route.
    for (route, want) in [("root", root_bytes), ("user", user_bytes)] {
        let target = format!("stats_counts.{PREFIX}.{route}.bytes_sent");
        poll(&format!("{target} = {want}"), DEADLINE, || {
            let got = stack.render_sum(&target, "-10min")?;
            (got == want as f64)
                .then_some(())
                .ok_or(format!("{got}, want {want}"))
        });
    }
    assert!(api.terminate(), "the example API stopped cleanly");
}

/// The gauge is each window's peak: eight concurrent slow requests that all
/// start and end inside one client window still show as 8 in Graphite.
#[test]
fn concurrent_requests_inside_one_window_show_their_peak() {
    const CONCURRENT: usize = 8;
    let stack = Stack::shared();
    let statsd = tower_statsd::Statsd::builder()
        .host("127.0.0.1")
        .port(stack.statsd_port)
        .prefix("inflightpeak")
        // Longer than the requests: they all begin and end in one window.
        .flush_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "slow"
            }),
        )
        .layer(statsd.layer());
    let (_server, url) = e2e::serve(app);
    let requests: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let url = format!("{url}/slow");
            std::thread::spawn(move || get(&reqwest::blocking::Client::new(), &url))
        })
        .collect();
    for request in requests {
        assert_eq!(request.join().expect("a slow request").0, 200);
    }
    // All ended; the window has not: its end (here, the flush) reports the
    // peak, where the number in flight now is 0.
    statsd.flush().unwrap();
    let gauge = "stats.gauges.inflightpeak.slow.in_flight";
    let points = poll("the peak in Graphite", DEADLINE, || {
        let points = stack.render(gauge, "-10min")?;
        if points.iter().any(|&(_, v)| v > 0.0) {
            Ok(points)
        } else {
            Err(format!("{points:?}"))
        }
    });
    let highest = points.iter().map(|&(_, v)| v).fold(0.0, f64::max);
    assert_eq!(highest, CONCURRENT as f64, "{points:?}");
}
