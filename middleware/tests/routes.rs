//! Route naming through a real axum router, and what goes over a real UDP
//! socket: every line valid StatsD, every name one the docs list.

mod support;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::UdpSocket;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::{Extension, Router};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use support::{flushed_lines, parse_line, spy_statsd, totals};
use tower::{service_fn, ServiceExt};
use tower_statsd::{Statsd, UserKey};

fn app(statsd: &Statsd) -> Router {
    let api = Router::new().route("/items/{id}", get(|| async { "item" }));
    let files = service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("file")))
    });
    Router::new()
        .route("/", get(|| async { "root" }))
        .route("/user", get(|| async { "user" }))
        .route("/users/{id}/posts", get(|| async { "posts" }))
        .route("/files/{*rest}", get(|| async { "rest" }))
        .route("/renamed/{id}", get(|| async { "renamed" }))
        .route("/fail", get(|| async { StatusCode::BAD_REQUEST }))
        .nest("/api", api)
        .nest_service("/static", files)
        .fallback(|| async { (StatusCode::NOT_FOUND, "nothing here") })
        .layer(
            statsd
                .layer()
                .user_key(UserKey::query("id"), "user")
                .rename_route("/renamed/{id}", "custom.name"),
        )
        .layer(Extension(statsd.clone()))
}

async fn hit(app: &Router, method: &str, uri: &str) -> StatusCode {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn route_names_follow_templates() {
    let (statsd, rx) = spy_statsd("statstest");
    let app = app(&statsd);
    let cases = [
        ("/", "root", 200),
        ("/user?id=123", "user", 200),
        ("/users/42/posts", "users._id.posts", 200),
        ("/users/43/posts", "users._id.posts", 200),
        ("/files/a/b/c.txt", "files._rest", 200),
        ("/renamed/9", "custom.name", 200),
        ("/api/items/7", "api.items._id", 200),
        ("/static/app.js", "unmatched", 200),
        ("/no/such/page", "unmatched", 404),
        ("/fail?id=999", "fail", 400),
    ];
    for (uri, _, status) in cases {
        assert_eq!(hit(&app, "GET", uri).await.as_u16(), status, "{uri}");
    }
    let t = totals(&flushed_lines(&statsd, &rx));
    for (uri, route, status) in cases {
        let per_route = cases.iter().filter(|(_, r, _)| *r == route).count() as f64;
        assert_eq!(
            t.counters[&format!("statstest.{route}.called")],
            per_route,
            "{uri}"
        );
        assert!(
            t.counters
                .contains_key(&format!("statstest.{route}.status.{status}")),
            "{uri}"
        );
        assert_eq!(
            t.timers[&format!("statstest.{route}")].len() as f64,
            per_route,
            "{uri}"
        );
    }
    // Only the successful request with ?id= is a user visit; /fail?id=999 was a 400.
    assert_eq!(t.sets["statstest.user"], ["123"]);
}

#[tokio::test]
async fn unknown_paths_and_methods_add_no_names() {
    let (statsd, rx) = spy_statsd("statstest");
    let app = app(&statsd);
    for i in 0..200 {
        hit(&app, "GET", &format!("/scan/{i}/wp-admin.php?x={i}")).await;
        hit(&app, &format!("X-EVIL{i}"), "/").await;
    }
    let t = totals(&flushed_lines(&statsd, &rx));
    let names: BTreeSet<&str> = t
        .counters
        .keys()
        .chain(t.timers.keys())
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "statstest.unmatched.called",
        "statstest.unmatched.bytes_sent",
        "statstest.unmatched.status.404",
        "statstest.unmatched",
        "statstest.root.called",
        "statstest.root.status.405",
        "statstest.root",
    ]
    .into();
    assert_eq!(names, expected);
    assert_eq!(t.counters["statstest.unmatched.called"], 200.0);
}

#[tokio::test]
async fn a_real_udp_socket_receives_only_valid_lines() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let statsd = Statsd::builder()
        .host("127.0.0.1")
        .port(port)
        .prefix("statstest")
        .flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let app = app(&statsd);
    for uri in [
        "/",
        "/?msg=Hello+world",
        "/user?id=123",
        "/user?id=7",
        "/user?id=a%0Ab%3Ac%7Cd",
        "/nope",
    ] {
        hit(&app, "GET", uri).await;
    }
    hit(&app, "DELETE", "/user").await;
    statsd.flush().unwrap();

    let mut lines = Vec::new();
    let mut buf = [0u8; 65_536];
    while let Ok(n) = server.recv(&mut buf) {
        assert!(n <= 512, "packet of {n} bytes exceeds STATSD_MAXUDPSIZE");
        lines.extend(
            std::str::from_utf8(&buf[..n])
                .unwrap()
                .lines()
                .map(str::to_owned),
        );
    }
    assert!(!lines.is_empty());
    let documented = [
        "statstest.root.called",
        "statstest.root",
        "statstest.root.status.200",
        "statstest.root.bytes_sent",
        "statstest.root.in_flight",
        "statstest.user.called",
        "statstest.user",
        "statstest.user.status.200",
        "statstest.user.status.405",
        "statstest.user.bytes_sent",
        "statstest.user.in_flight",
        "statstest.unmatched.called",
        "statstest.unmatched",
        "statstest.unmatched.status.404",
        "statstest.unmatched.bytes_sent",
        "statstest.unmatched.in_flight",
    ];
    for line in &lines {
        let (name, _) = parse_line(line);
        assert!(
            documented.contains(&name.as_str()),
            "undocumented name {name:?} in {line:?}"
        );
    }
    let t = totals(&lines);
    assert_eq!(t.counters["statstest.root.called"], 2.0);
    assert_eq!(t.counters["statstest.user.called"], 4.0);
    let members: BTreeSet<&str> = t.sets["statstest.user"]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(members.len(), 3, "123, 7 and one hashed token: {members:?}");
    assert!(members.contains("123") && members.contains("7"));
}
