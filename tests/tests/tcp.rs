//! The TCP transport against the real StatsD 0.9.0 (its `servers/tcp`
//! listener, which the stack opens at the UDP port number): with flow
//! control instead of a receive buffer, every metric arrives — the
//! counters, every timer value, and the set.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use e2e::{admin_value, poll, Stack};
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
    statsd.flush().unwrap();
    assert_eq!(statsd.sink().dropped(), 0);
    assert_eq!(statsd.sink().failed_packets(), 0);

    poll(
        "every request counted over TCP",
        Duration::from_secs(20),
        || {
            let counters = stack.admin("counters");
            let want = [
                ("tcptest.user.called", N as f64),
                ("tcptest.user.status.200", N as f64),
                ("tcptest.user.bytes_sent", (N * "user".len()) as f64),
            ];
            for (key, n) in want {
                let got = admin_value(&counters, key);
                if got != Some(n) {
                    return Err(format!("{key}: {got:?}, want {n}, in {counters}"));
                }
            }
            Ok(())
        },
    );
    // One timer value per request: the daemon holds them all until its flush.
    let timers = stack.admin("timers");
    assert_eq!(
        admin_array_len(&timers, "tcptest.user"),
        Some(N),
        "{timers}"
    );
    stack.assert_no_bad_lines();
    // The admin port does not list sets: the 50 distinct users reach
    // Graphite at the daemon's first flush (a minute after its start).
    poll("the user set in Graphite", Duration::from_secs(120), || {
        let users = stack.render_sum("stats.sets.tcptest.user.count", "-10min")?;
        (users == 50.0)
            .then_some(())
            .ok_or(format!("{users} users"))
    });
}

/// How many values the array `'key': [...]` of the admin dump holds,
/// counting Node's `... 400 more items` for long arrays.
fn admin_array_len(dump: &str, key: &str) -> Option<usize> {
    let start = dump.find(&format!("'{key}': ["))? + key.len() + 5;
    let end = start + dump[start..].find(']')?;
    let mut n = 0;
    for item in dump[start..end].split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        if let Some(more) = item.strip_prefix("... ") {
            n += more.split_whitespace().next()?.parse::<usize>().ok()?;
        } else {
            item.parse::<f64>().ok()?;
            n += 1;
        }
    }
    Some(n)
}
