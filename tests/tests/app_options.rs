//! The layer's options for real apps, against the real StatsD 0.9.0: status
//! classes, constant and request tags (tagged mode: statsd's
//! `name;tag=value` keys, as Graphite tags).
//!
//! This stack flushes once a minute, so the daemon's admin dump still holds
//! everything a test sent when it is read; each test has its own prefix.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use e2e::{admin_value, poll, Stack};
use tower_statsd::{NamingMode, Server, Statsd};

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| Stack::start(60_000))
}

/// Waits until each of `expected` (key, count) is in the daemon's counters.
fn counters_reach(stack: &Stack, expected: &[(String, f64)]) -> String {
    poll("counters at the daemon", Duration::from_secs(20), || {
        let counters = stack.admin("counters");
        for (key, count) in expected {
            let got = admin_value(&counters, key);
            if got != Some(*count) {
                return Err(format!("{key}: {got:?}, want {count}, in {counters}"));
            }
        }
        Ok(counters)
    })
}

fn app(statsd_layer: tower_statsd::StatsdLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "root" }))
        .route("/created", get(|| async { (StatusCode::CREATED, "new") }))
        .route("/teapot", get(|| async { StatusCode::IM_A_TEAPOT }))
        .route("/oops", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .layer(statsd_layer)
}

fn hit(url: &str, paths: &[&str]) {
    let http = reqwest::blocking::Client::new();
    for path in paths {
        http.get(format!("{url}{path}"))
            .send()
            .unwrap()
            .bytes()
            .unwrap();
    }
}

#[test]
fn status_classes_count_2xx_to_5xx() {
    let stack = stack();
    let statsd = Statsd::builder()
        .host("127.0.0.1")
        .port(stack.statsd_port)
        .prefix("classes")
        .build()
        .unwrap();
    let (_server, url) = e2e::serve(app(statsd.layer().status_classes(true)));
    hit(
        &url,
        &["/", "/", "/created", "/teapot", "/oops", "/oops", "/nope"],
    );
    statsd.flush().unwrap();

    let expected: Vec<(String, f64)> = [
        ("classes.root.status.2xx", 2.0),
        ("classes.created.status.2xx", 1.0),
        ("classes.teapot.status.4xx", 1.0),
        ("classes.oops.status.5xx", 2.0),
        ("classes.unmatched.status.4xx", 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let counters = counters_reach(stack, &expected);
    assert!(!counters.contains("classes.root.status.200"), "{counters}");
    assert!(!counters.contains("classes.oops.status.503"), "{counters}");
}

#[test]
fn constant_tags_and_status_classes_reach_the_daemon_as_graphite_tags() {
    let stack = stack();
    let statsd = Statsd::builder()
        .host("127.0.0.1")
        .port(stack.statsd_port)
        .prefix("consttags")
        .server(Server::Etsy)
        .naming(NamingMode::Tagged)
        .env_vars([("STATSD_TAGS".to_owned(), "env:prod,service:api".to_owned())])
        .unwrap()
        .build()
        .unwrap();
    let (_server, url) = e2e::serve(app(statsd.layer().status_classes(true)));
    hit(&url, &["/", "/created", "/oops"]);
    use tower_statsd::prelude::*;
    statsd.count("jobs", 3).unwrap();
    statsd.flush().unwrap();

    // statsd 0.9 turns `|#k:v` into `;k=v`, in the order sent.
    let expected: Vec<(String, f64)> = [
        ("route=root;method=GET;status=2xx", 1.0),
        ("route=created;method=GET;status=2xx", 1.0),
        ("route=oops;method=GET;status=5xx", 1.0),
    ]
    .into_iter()
    .map(|(tags, n)| {
        (
            format!("consttags.http.requests;{tags};env=prod;service=api"),
            n,
        )
    })
    .chain([("consttags.jobs;env=prod;service=api".to_owned(), 3.0)])
    .collect();
    counters_reach(stack, &expected);
    stack.assert_timers_held([
        "consttags.http.request.duration;route=root;method=GET;status=2xx;env=prod;service=api",
    ]);
    stack.assert_no_bad_lines();
}

#[test]
fn request_tags_reach_the_daemon_with_their_cap() {
    let stack = stack();
    let statsd = Statsd::builder()
        .host("127.0.0.1")
        .port(stack.statsd_port)
        .prefix("reqtags")
        .server(Server::Etsy)
        .naming(NamingMode::Tagged)
        .tag("env", "prod")
        .build()
        .unwrap();
    let layer = statsd
        .layer()
        .request_tag("tier", |request| {
            request.headers.get("x-tier").and_then(|v| v.to_str().ok())
        })
        .max_request_tag_values(2);
    let (_server, url) = e2e::serve(app(layer));
    let http = reqwest::blocking::Client::new();
    // Two values fit; every later one (hostile or not) is `_other`.
    for tier in ["gold", "gold", "silver", "bronze", "x;y=z|#w", "gold"] {
        http.get(format!("{url}/"))
            .header("x-tier", tier)
            .send()
            .unwrap()
            .bytes()
            .unwrap();
    }
    statsd.flush().unwrap();

    let key = |tier: &str| {
        format!("reqtags.http.requests;route=root;method=GET;status=200;tier={tier};env=prod")
    };
    let expected = vec![
        (key("gold"), 3.0),
        (key("silver"), 1.0),
        (key("_other"), 2.0),
        (
            "reqtags.tower_statsd.tag_overflow;tag=tier;env=prod".to_owned(),
            2.0,
        ),
    ];
    let counters = counters_reach(stack, &expected);
    let series = counters.matches("reqtags.http.requests;").count();
    assert_eq!(series, 3, "no series past the cap: {counters}");
    stack.assert_no_bad_lines();
}
