//! Tags in tagged mode: the client's constant tags on the layer's metrics
//! and the handlers' own, the request's tags from a closure with a cap on
//! distinct values, and what hierarchical mode does with them (nothing).

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::Request;
use support::spy::Packets;
use support::{flushed_lines, logged};
use tower::ServiceExt;
use tower_statsd::cadence::prelude::*;
use tower_statsd::{NamingMode, Server, Statsd, StatsdBuilder};

/// One line a value, so that lines compare exactly.
fn spy(builder: StatsdBuilder) -> (Statsd, Packets) {
    let (rx, spy) = support::spy::spy();
    let statsd = builder
        .prefix("p")
        .server(Server::StatsdExporter)
        .flush_interval(Duration::from_secs(3600))
        .build_with(spy)
        .expect("build");
    (statsd, rx)
}

async fn get_ok(app: &Router, uri: &str) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert!(response.status().is_success());
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
}

/// Sorted, each request duration's value (a measured time) written `T`.
fn sorted(lines: Vec<String>) -> Vec<String> {
    let mut lines: Vec<String> = lines
        .into_iter()
        .map(|line| match line.split_once(".duration:") {
            Some((name, rest)) => {
                let (_, after) = rest.split_once('|').expect("a value's type");
                format!("{name}.duration:T|{after}")
            }
            None => line,
        })
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn constant_tags_go_on_every_tagged_metric() {
    let (statsd, rx) = spy(Statsd::builder()
        .naming(NamingMode::Tagged)
        .tag("env", "prod")
        .tag("service", "api"));
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(statsd.layer());
    get_ok(&app, "/").await;
    statsd.incr("jobs").unwrap();
    statsd.gauge_delta("level", 2.0);
    statsd.timing_ms("work", 0.5);
    assert_eq!(
        sorted(flushed_lines(&statsd, &rx)),
        [
            "p.http.bytes_sent:2|c|#route:root,method:GET,status:200,env:prod,service:api",
            "p.http.in_flight:1|g|#route:root,env:prod,service:api",
            "p.http.request.duration:T|ms|#route:root,method:GET,status:200,env:prod,service:api",
            "p.http.requests:1|c|#route:root,method:GET,status:200,env:prod,service:api",
            "p.jobs:1|c|#env:prod,service:api",
            "p.level:+2|g|#env:prod,service:api",
            "p.work:0.5|ms|#env:prod,service:api",
        ]
    );
}

#[tokio::test]
async fn hierarchical_mode_sends_no_tags() {
    let (statsd, rx) = spy(Statsd::builder().tag("env", "prod"));
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(statsd.layer());
    get_ok(&app, "/").await;
    statsd.incr("jobs").unwrap();
    statsd.gauge_delta("level", 2.0);
    let lines = sorted(flushed_lines(&statsd, &rx));
    assert!(lines.iter().all(|l| !l.contains('#')), "{lines:?}");
    assert!(lines.contains(&"p.root.called:1|c".to_owned()), "{lines:?}");
    assert!(lines.contains(&"p.jobs:1|c".to_owned()), "{lines:?}");
    assert!(lines.contains(&"p.level:+2|g".to_owned()), "{lines:?}");

    // A layer set to tagged mode on this client takes the constant tags.
    let layer = statsd.layer().naming(NamingMode::Tagged);
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(layer);
    get_ok(&app, "/").await;
    let lines = sorted(flushed_lines(&statsd, &rx));
    assert!(
        lines
            .contains(&"p.http.requests:1|c|#route:root,method:GET,status:200,env:prod".to_owned()),
        "{lines:?}"
    );
}

fn tier(parts: &http::request::Parts) -> Option<&str> {
    parts.headers.get("x-tier").and_then(|v| v.to_str().ok())
}

async fn get_with_tier(app: &Router, tier: Option<&str>) {
    let mut request = Request::get("/");
    if let Some(tier) = tier {
        request = request.header("x-tier", tier);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
}

/// The request counters' lines, sorted.
fn requests(lines: Vec<String>) -> Vec<String> {
    sorted(lines)
        .into_iter()
        .filter(|l| l.starts_with("p.http.requests:") || l.contains("tag_overflow"))
        .collect()
}

#[tokio::test]
async fn request_tags_are_sanitised_and_capped() {
    let (statsd, rx) = spy(Statsd::builder()
        .naming(NamingMode::Tagged)
        .tag("env", "prod"));
    let layer = statsd
        .layer()
        .request_tag("tier", tier)
        .request_tag("api", |_| Some("v1"))
        .max_request_tag_values(2);
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(layer);
    for value in [
        Some("gold"),
        Some("gold"),
        None,
        Some("a|b#c"),
        Some("x"),
        Some("y"),
    ] {
        get_with_tier(&app, value).await;
    }
    assert_eq!(
        requests(flushed_lines(&statsd, &rx)),
        [
            "p.http.requests:1|c|#route:root,method:GET,status:200,api:v1,env:prod",
            "p.http.requests:1|c|#route:root,method:GET,status:200,tier:a_b_c,api:v1,env:prod",
            "p.http.requests:2|c|#route:root,method:GET,status:200,tier:_other,api:v1,env:prod",
            "p.http.requests:2|c|#route:root,method:GET,status:200,tier:gold,api:v1,env:prod",
            "p.tower_statsd.tag_overflow:2|c|#tag:tier,env:prod",
        ]
    );
}

#[tokio::test]
async fn a_key_that_is_empty_reserved_constant_repeated_or_one_too_many_is_ignored() {
    let (statsd, rx) = spy(Statsd::builder()
        .naming(NamingMode::Tagged)
        .tag("env", "prod")
        .tag("team", "web"));
    let mut layer = statsd.layer();
    let keys = [
        "", "route", "method", "status", "env", "team", "a", "a", "b", "c", "d|x", "e",
    ];
    for key in keys {
        layer = layer.request_tag(key, |_| Some("1"));
    }
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(layer);
    get_with_tier(&app, None).await;
    assert_eq!(
        requests(flushed_lines(&statsd, &rx)),
        ["p.http.requests:1|c|#route:root,method:GET,status:200,a:1,b:1,c:1,d_x:1,env:prod,team:web"]
    );
}

#[tokio::test]
async fn hierarchical_mode_never_calls_the_closure() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (statsd, rx) = spy(Statsd::builder());
    let called = Arc::new(AtomicBool::new(false));
    let seen = called.clone();
    let layer = statsd.layer().request_tag("tier", move |_| {
        seen.store(true, Ordering::Relaxed);
        Some("gold")
    });
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(layer);
    get_with_tier(&app, Some("gold")).await;
    let lines = sorted(flushed_lines(&statsd, &rx));
    assert!(lines.contains(&"p.root.called:1|c".to_owned()), "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains('#')), "{lines:?}");
    assert!(!called.load(Ordering::Relaxed));
}

#[test]
fn constant_tags_in_hierarchical_mode_are_a_warning_at_build() {
    let warning = "constant tags (STATSD_TAGS) go only on tagged metrics";
    let build = |builder: StatsdBuilder| logged(|| drop(spy(builder)));
    assert!(build(Statsd::builder().tag("env", "prod")).contains(warning));
    assert!(!build(Statsd::builder()).contains(warning));
    let tagged = Statsd::builder()
        .naming(NamingMode::Tagged)
        .tag("env", "prod");
    assert!(!build(tagged).contains(warning));
}

#[test]
fn a_layers_debug_names_its_request_tag_keys() {
    let (statsd, _rx) = spy(Statsd::builder().naming(NamingMode::Tagged));
    let layer = statsd.layer().request_tag("tier", tier);
    let debug = format!("{layer:?}");
    assert!(debug.contains("request_tags: [\"tier\"]"), "{debug}");
}

#[tokio::test]
async fn status_classes_from_the_client_are_the_layers_default() {
    let (statsd, rx) = spy(Statsd::builder()
        .env_vars([("STATSD_STATUS_CLASSES".to_owned(), "1".to_owned())])
        .unwrap());
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(statsd.layer());
    get_ok(&app, "/").await;
    let lines = sorted(flushed_lines(&statsd, &rx));
    assert!(
        lines.contains(&"p.root.status.2xx:1|c".to_owned()),
        "{lines:?}"
    );
    // A layer's own setting wins.
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(statsd.layer().status_classes(false));
    get_ok(&app, "/").await;
    let lines = sorted(flushed_lines(&statsd, &rx));
    assert!(
        lines.contains(&"p.root.status.200:1|c".to_owned()),
        "{lines:?}"
    );
}
