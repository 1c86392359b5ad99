//! Tagged mode against the real StatsD 0.9.0: DogStatsD tags arrive as
//! statsd's `name;tag=value` keys, one per route, method and status; the
//! counter (`http.requests`) and the timer (`http.request.duration`) have
//! names of their own.
//!
//! This stack flushes once a minute, so the daemon's admin dump still holds
//! everything the test sent when it is read.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use e2e::{admin_value, poll, Stack};
use tower_statsd::{NamingMode, Server, Statsd};

#[test]
fn tagged_metrics_reach_the_daemon_as_tagged_keys() {
    let stack = Stack::start(60_000);
    let statsd = Statsd::builder()
        .host("127.0.0.1")
        .port(stack.statsd_port)
        .prefix("tagtest")
        .server(Server::Etsy)
        .naming(NamingMode::Tagged)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "root" }))
        .route("/users/{id}", get(|| async { "user" }))
        .layer(statsd.layer());
    let (_server, url) = e2e::serve(app);

    let http = reqwest::blocking::Client::new();
    for _ in 0..3 {
        http.get(format!("{url}/")).send().unwrap().bytes().unwrap();
    }
    for id in [1, 2] {
        http.get(format!("{url}/users/{id}"))
            .send()
            .unwrap()
            .bytes()
            .unwrap();
    }
    http.get(format!("{url}/nope"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    http.delete(format!("{url}/"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    statsd.flush().unwrap();

    let expected = [
        ("route=root;method=GET;status=200", 3),
        ("route=users._id;method=GET;status=200", 2),
        ("route=unmatched;method=GET;status=404", 1),
        ("route=root;method=DELETE;status=405", 1),
    ];
    poll(
        "tagged counters at the daemon",
        Duration::from_secs(20),
        || {
            let counters = stack.admin("counters");
            for (tags, count) in expected {
                let key = format!("tagtest.http.requests;{tags}");
                let got = admin_value(&counters, &key);
                if got != Some(f64::from(count)) {
                    return Err(format!("{key}: {got:?}, want {count}, in {counters}"));
                }
            }
            Ok(())
        },
    );
    stack.assert_timers_held(
        expected
            .iter()
            .map(|(tags, _)| format!("tagtest.http.request.duration;{tags}")),
    );
    stack.assert_no_bad_lines();
}
