//! The TCP transport against the real StatsD 0.9.0 (its `servers/tcp`
//! listener, which the stack opens at the UDP port number): with flow
//! control instead of a receive buffer, every metric arrives.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use e2e::{poll, Stack};
use tower_statsd::{Statsd, Transport, UserKey};

#[test]
fn every_request_arrives_over_tcp() {
    // A long daemon flush: the admin dump still holds everything when read.
    let stack = Stack::start(60_000);
    let statsd = Statsd::builder()
        .host("127.0.0.1")
        .port(stack.statsd_port)
        .prefix("tcptest")
        .transport(Transport::Tcp)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/user", get(|| async { "user" }))
        .layer(statsd.layer().user_key(UserKey::query("id"), "user"));
    let (_server, url) = e2e::serve(app);

    const N: usize = 500;
    let http = reqwest::blocking::Client::new();
    for i in 0..N {
        let response = http
            .get(format!("{url}/user?id={}", i % 50))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(statsd.flush());
    assert_eq!(statsd.sink().dropped(), 0);
    assert_eq!(statsd.sink().failed_packets(), 0);

    poll(
        "every request counted over TCP",
        Duration::from_secs(20),
        || {
            let counters = stack.admin("counters");
            let called = format!("'tcptest.user.called': {N}");
            let status = format!("'tcptest.user.status.200': {N}");
            (counters.contains(&called) && counters.contains(&status))
                .then_some(())
                .ok_or(counters)
        },
    );
    let counters = stack.admin("counters");
    assert!(
        counters.contains("'statsd.bad_lines_seen': 0"),
        "{counters}"
    );
}
