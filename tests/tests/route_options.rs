//! The layer's route options against the real StatsD 0.9.0 and Graphite: an
//! excluded `/health` sends nothing while the other routes arrive; a plain
//! tower service (no axum routing) gets its route names from a
//! `RouteNamer`, and routes past `max_routes` share the overflow name.

use std::borrow::Cow;
use std::convert::Infallible;
use std::time::Duration;

use axum::http::{Request, Response};
use axum::routing::get;
use axum::Router;
use e2e::{admin_value, poll, Stack};
use tower::{service_fn, Layer};
use tower_statsd::{RouteNamer, Server, Statsd};

const DEADLINE: Duration = Duration::from_secs(60);

fn statsd(stack: &Stack, prefix: &str) -> Statsd {
    Statsd::builder()
        .host("127.0.0.1")
        .port(stack.statsd_port)
        .prefix(prefix)
        .server(Server::Etsy)
        .flush_interval(Duration::from_millis(200))
        .build()
        .unwrap()
}

/// Waits until Graphite's sum of `target` is `want`.
fn expect_sum(stack: &Stack, target: &str, want: f64) {
    poll(&format!("{target} = {want}"), DEADLINE, || {
        let got = stack.render_sum(target, "-10min")?;
        (got == want)
            .then_some(())
            .ok_or(format!("{got}, want {want}"))
    });
}

#[test]
fn an_excluded_health_route_sends_nothing_and_the_others_arrive() {
    const PREFIX: &str = "filtertest";
    let stack = Stack::shared();
    let statsd = statsd(stack, PREFIX);
    let app = Router::new()
        .route("/", get(|| async { "root" }))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(|| async { "# none" }))
        .layer(statsd.layer().exclude_routes(["/health", "/metrics"]));
    let (_server, url) = e2e::serve(app);
    let http = reqwest::blocking::Client::new();
    for path in ["/", "/health", "/metrics", "/health", "/", "/nowhere"] {
        http.get(format!("{url}{path}"))
            .send()
            .unwrap()
            .bytes()
            .unwrap();
    }
    statsd.flush().unwrap();

    expect_sum(stack, &format!("stats_counts.{PREFIX}.root.called"), 2.0);
    expect_sum(
        stack,
        &format!("stats_counts.{PREFIX}.root.status.200"),
        2.0,
    );
    expect_sum(stack, &format!("stats.timers.{PREFIX}.root.count"), 2.0);
    expect_sum(
        stack,
        &format!("stats_counts.{PREFIX}.unmatched.status.404"),
        1.0,
    );
    // Everything under the prefix, in Graphite and at the daemon: no
    // health or metrics route, no in-flight gauge for them.
    let mut found = stack.find(&format!("stats_counts.{PREFIX}.*")).unwrap();
    found.sort();
    assert_eq!(
        found,
        [
            format!("stats_counts.{PREFIX}.root"),
            format!("stats_counts.{PREFIX}.unmatched"),
        ]
    );
    for dump in ["counters", "timers", "gauges"] {
        let dump = stack.admin(dump);
        for route in ["health", "metrics"] {
            assert!(
                !dump.contains(&format!("{PREFIX}.{route}")),
                "{route} in {dump}"
            );
        }
    }
}

#[test]
fn a_route_namer_names_a_plain_service_and_the_cap_holds() {
    const PREFIX: &str = "namertest";
    let stack = Stack::shared();
    let statsd = statsd(stack, PREFIX);
    // `/orders/{n}` → `orders._id`; the first route name is the only one
    // allowed, so `/other/...` goes to the overflow.
    let namer = RouteNamer::new(|parts| {
        let path = parts.uri.path();
        Some(if path.starts_with("/orders/") {
            Cow::Borrowed("/orders/{id}")
        } else {
            Cow::Borrowed(path)
        })
    });
    let plain = service_fn(|_: Request<axum::body::Body>| async {
        Ok::<_, Infallible>(Response::new(axum::body::Body::from("plain")))
    });
    let service = statsd.layer().route_namer(namer).max_routes(1).layer(plain);
    // Served as axum's fallback: no `MatchedPath`, like any tower service.
    let (_server, url) = e2e::serve(Router::new().fallback_service(service));
    let http = reqwest::blocking::Client::new();
    for path in [
        "/orders/1",
        "/orders/2",
        "/orders/3",
        "/other/a",
        "/other/b",
    ] {
        let body = http
            .get(format!("{url}{path}"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert_eq!(body, "plain");
    }
    statsd.flush().unwrap();

    expect_sum(
        stack,
        &format!("stats_counts.{PREFIX}.orders._id.called"),
        3.0,
    );
    expect_sum(
        stack,
        &format!("stats.timers.{PREFIX}.orders._id.count"),
        3.0,
    );
    expect_sum(
        stack,
        &format!("stats_counts.{PREFIX}.tower_statsd.route_overflow.called"),
        2.0,
    );
    let counters = stack.admin("counters");
    assert_eq!(
        admin_value(&counters, &format!("{PREFIX}.other.a.called")),
        None,
        "{counters}"
    );
}
