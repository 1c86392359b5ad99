//! The layer's route options, through real services and the bytes the sink
//! sends: route filters, a route namer for any tower service, gRPC status,
//! and the cap on route names.

mod support;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use proptest::prelude::*;
use support::{flushed_lines, logged, parse_line, spy_statsd, totals};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_statsd::{RouteNamer, Statsd, StatsdLayer, UserKey, DEFAULT_MAX_ROUTES};

/// The distinct metric names in `lines`.
fn names(lines: &[String]) -> BTreeSet<String> {
    lines.iter().map(|line| parse_line(line).0).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn app(layer: StatsdLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "root" }))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(|| async { "# none" }))
        .route("/user", get(|| async { "user" }))
        .layer(layer)
}

async fn hit<S, B>(service: &mut S, uri: &str) -> StatusCode
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn excluded_routes_send_nothing_and_the_others_all() {
    let (statsd, rx) = spy_statsd("p");
    let mut app = app(statsd.layer().exclude_routes(["/health", "/metrics"]));
    for uri in ["/", "/health", "/metrics", "/health", "/nowhere"] {
        hit(&mut app, uri).await;
    }
    let lines = flushed_lines(&statsd, &rx);
    assert_eq!(
        names(&lines),
        set(&[
            "p.root",
            "p.root.bytes_sent",
            "p.root.called",
            "p.root.in_flight",
            "p.root.status.200",
            "p.unmatched",
            "p.unmatched.called",
            "p.unmatched.in_flight",
            "p.unmatched.status.404",
        ]),
        "{lines:?}"
    );
}

#[tokio::test]
async fn an_excluded_request_in_flight_is_not_in_flight() {
    let (statsd, rx) = spy_statsd("p");
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let wait = Arc::new(Mutex::new(Some(wait)));
    let mut app = Router::new()
        .route(
            "/health",
            get(move || async move {
                let wait = wait.lock().unwrap().take().unwrap();
                wait.await.unwrap();
                "ok"
            }),
        )
        .layer(statsd.layer().exclude_routes(["/health"]));
    let request = Request::get("/health").body(Body::empty()).unwrap();
    let pending = tokio::spawn(
        ServiceExt::<Request<Body>>::ready(&mut app)
            .await
            .unwrap()
            .call(request),
    );
    tokio::task::yield_now().await;
    // While it runs, and after: nothing at all.
    assert_eq!(flushed_lines(&statsd, &rx), Vec::<String>::new());
    release.send(()).unwrap();
    let response = pending.await.unwrap().unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok"
    );
    assert_eq!(flushed_lines(&statsd, &rx), Vec::<String>::new());
}

#[tokio::test]
async fn only_listed_routes_are_recorded() {
    let (statsd, rx) = spy_statsd("p");
    let layer = statsd
        .layer()
        .only_routes(["/", "/health"])
        .exclude_routes(["/health"]);
    let mut app = app(layer);
    for uri in ["/", "/health", "/metrics", "/user", "/nowhere"] {
        hit(&mut app, uri).await;
    }
    let lines = flushed_lines(&statsd, &rx);
    assert_eq!(
        names(&lines),
        set(&[
            "p.root",
            "p.root.bytes_sent",
            "p.root.called",
            "p.root.in_flight",
            "p.root.status.200"
        ]),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_predicate_turns_requests_down_by_their_head() {
    let (statsd, rx) = spy_statsd("p");
    let layer = statsd
        .layer()
        .filter(|parts| !parts.headers.contains_key("x-probe"));
    let mut app = app(layer);
    for probe in [false, true, true] {
        let mut request = Request::get("/").body(Body::empty()).unwrap();
        if probe {
            request
                .headers_mut()
                .insert("x-probe", "1".parse().unwrap());
        }
        let response = ServiceExt::<Request<Body>>::ready(&mut app)
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap();
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "root"
        );
    }
    let lines = flushed_lines(&statsd, &rx);
    assert!(lines.contains(&"p.root.called:1|c".to_owned()), "{lines:?}");
    assert!(
        lines.contains(&"p.root.status.200:1|c".to_owned()),
        "{lines:?}"
    );
}

/// A plain tower service: no axum, no `MatchedPath`.
fn plain(
    layer: StatsdLayer,
) -> impl Service<
    Request<Body>,
    Response = Response<tower_statsd::ResponseBody<String>>,
    Error = Infallible,
> + Clone {
    layer.layer(service_fn(|request: Request<Body>| async move {
        let status = match request.uri().path() {
            "/missing" => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        };
        let mut response = Response::new(String::from("hi"));
        *response.status_mut() = status;
        Ok::<_, Infallible>(response)
    }))
}

#[tokio::test]
async fn a_route_namer_names_any_tower_service_sanitised_like_templates() {
    let (statsd, rx) = spy_statsd("p");
    let namer = RouteNamer::new(|parts| {
        let path = parts.uri.path();
        // `/orders/17` → the template `/orders/{id}`.
        if path.starts_with("/orders/") {
            return Some(Cow::Borrowed("/orders/{id}"));
        }
        (path != "/unnamed").then_some(Cow::Borrowed(path))
    });
    let layer = statsd
        .layer()
        .route_namer(namer)
        .rename_route("/renamed", "custom.name")
        .exclude_routes(["/health"]);
    let mut service = plain(layer);
    for uri in [
        "/orders/17",
        "/orders/18",
        "/a.b/c:d~e",
        "/renamed",
        "/unnamed",
        "/health",
        "/missing",
    ] {
        hit(&mut service, uri).await;
    }
    let lines = flushed_lines(&statsd, &rx);
    let called: BTreeSet<String> = lines
        .iter()
        .filter(|line| line.contains(".called:"))
        .cloned()
        .collect();
    assert_eq!(
        called,
        set(&[
            "p.a_b.c_d_e.called:1|c",
            "p.custom.name.called:1|c",
            "p.missing.called:1|c",
            "p.orders._id.called:2|c",
            "p.unmatched.called:1|c",
        ]),
        "{lines:?}"
    );
    assert!(lines.contains(&"p.missing.status.404:1|c".to_owned()));
}

#[tokio::test]
async fn without_matched_path_and_namer_every_request_is_unmatched() {
    let (statsd, rx) = spy_statsd("p");
    let mut service = plain(statsd.layer().max_routes(DEFAULT_MAX_ROUTES));
    hit(&mut service, "/a").await;
    hit(&mut service, "/b").await;
    let lines = flushed_lines(&statsd, &rx);
    assert!(
        lines.contains(&"p.unmatched.called:2|c".to_owned()),
        "{lines:?}"
    );
}

#[tokio::test]
async fn axum_templates_come_first_unless_the_namer_is_over_them() {
    let (statsd, rx) = spy_statsd("p");
    let namer = || RouteNamer::new(|_| Some(Cow::Borrowed("named")));
    let mut under = app(statsd.layer().route_namer(namer()));
    let mut over = app(statsd.layer().route_namer(namer().over_matched_path()));
    hit(&mut under, "/user").await;
    hit(&mut under, "/nowhere").await;
    hit(&mut over, "/user").await;
    let lines = flushed_lines(&statsd, &rx);
    let counters = totals(&lines).counters;
    assert_eq!(counters["p.user.called"], 1.0, "{lines:?}");
    assert_eq!(counters["p.named.called"], 2.0, "{lines:?}");
}

/// A gRPC-like service: `/pkg.Svc/Ok` answers with trailers
/// `grpc-status: 0`, `/pkg.Svc/Missing` with the header `grpc-status: 5`
/// and no body, `/pkg.Svc/Cut` ends its body without trailers.
fn grpc_like(
    layer: StatsdLayer,
) -> impl Service<
    Request<Body>,
    Response = Response<impl http_body::Body<Error = Infallible>>,
    Error = Infallible,
> + Clone {
    layer.layer(service_fn(|request: Request<Body>| async move {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let mut frames: Vec<Result<Frame<Bytes>, Infallible>> =
            vec![Ok(Frame::data(Bytes::from_static(b"msg")))];
        let mut response = Response::builder();
        match request.uri().path() {
            "/pkg.Svc/Ok" => frames.push(Ok(Frame::trailers(trailers))),
            "/pkg.Svc/Missing" => {
                frames.clear();
                response = response.header("grpc-status", "5");
            }
            _ => {}
        }
        let body = StreamBody::new(futures_util::stream::iter(frames));
        Ok::<_, Infallible>(response.body(body).unwrap())
    }))
}

#[tokio::test]
async fn grpc_routes_count_the_grpc_status_from_trailers_or_headers() {
    let (statsd, rx) = spy_statsd("p");
    let mut service = grpc_like(statsd.layer().grpc().user_key(UserKey::query("id"), "user"));
    for uri in [
        "/pkg.Svc/Ok?id=1",
        "/pkg.Svc/Ok?id=2",
        "/pkg.Svc/Missing?id=3",
        "/pkg.Svc/Cut",
        "/not-grpc",
    ] {
        hit(&mut service, uri).await;
    }
    let lines = flushed_lines(&statsd, &rx);
    let statuses: BTreeSet<String> = lines
        .iter()
        .filter(|line| line.contains(".status."))
        .cloned()
        .collect();
    assert_eq!(
        statuses,
        set(&[
            "p.pkg_Svc.Cut.status.200:1|c",
            "p.pkg_Svc.Missing.status.5:1|c",
            "p.pkg_Svc.Ok.status.0:2|c",
            "p.unmatched.status.200:1|c",
        ]),
        "{lines:?}"
    );
    // Visits: gRPC's OK only.
    let mut members: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("p.user:"))
        .flat_map(|l| l.split(':'))
        .filter_map(|field| field.strip_suffix("|s"))
        .collect();
    members.sort();
    assert_eq!(members, ["1", "2"], "{lines:?}");
}

#[tokio::test]
async fn without_grpc_a_grpc_status_is_not_the_status() {
    let (statsd, rx) = spy_statsd("p");
    let namer = RouteNamer::grpc();
    let mut service = grpc_like(statsd.layer().route_namer(namer));
    hit(&mut service, "/pkg.Svc/Ok").await;
    hit(&mut service, "/pkg.Svc/Missing").await;
    let lines = flushed_lines(&statsd, &rx);
    assert!(
        lines.contains(&"p.pkg_Svc.Ok.status.200:1|c".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"p.pkg_Svc.Missing.status.200:1|c".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"p.pkg_Svc.Ok.bytes_sent:3|c".to_owned()),
        "{lines:?}"
    );
}

#[tokio::test]
async fn tagged_grpc_status_is_the_status_tag() {
    let (rx, spy) = support::spy::spy();
    let statsd = Statsd::builder()
        .prefix("p")
        .server(tower_statsd::Server::Datadog)
        .flush_interval(std::time::Duration::from_secs(3600))
        .build_with(spy)
        .unwrap();
    let layer = statsd
        .layer()
        .naming(tower_statsd::NamingMode::Tagged)
        .grpc();
    let mut service = grpc_like(layer);
    hit(&mut service, "/pkg.Svc/Missing").await;
    let lines = flushed_lines(&statsd, &rx);
    assert!(
        lines
            .contains(&"p.http.requests:1|c|#route:pkg_Svc.Missing,method:GET,status:5".to_owned()),
        "{lines:?}"
    );
}

/// The cap: routes past it share the overflow name, and one warning says so.
#[test]
fn past_max_routes_requests_go_to_the_overflow_and_one_warning() {
    let (statsd, rx) = spy_statsd("p");
    let logs = logged(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let namer = RouteNamer::new(|parts| Some(Cow::Borrowed(parts.uri.path())));
            let mut service = plain(statsd.layer().route_namer(namer).max_routes(2));
            for uri in ["/a", "/b", "/c", "/d", "/a", "/c"] {
                hit(&mut service, uri).await;
            }
        });
    });
    let lines = flushed_lines(&statsd, &rx);
    let called: BTreeSet<String> = lines
        .iter()
        .filter(|line| line.contains(".called:"))
        .cloned()
        .collect();
    assert_eq!(
        called,
        set(&[
            "p.a.called:2|c",
            "p.b.called:1|c",
            "p.tower_statsd.route_overflow.called:3|c",
        ]),
        "{lines:?}"
    );
    let warnings = logs.matches(" WARN ").count();
    assert_eq!(warnings, 1, "{logs}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever names a client makes the namer return, no more than the
    /// cap's route names (plus the overflow and `unmatched`) are sent, every
    /// request is counted once, and every name is a sanitised one.
    #[test]
    fn the_cap_on_route_names_holds(
        paths in prop::collection::vec("(/[a-z.{}|: ]{0,4}){0,3}", 1..40),
        cap in 0usize..8,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (statsd, rx) = spy_statsd("p");
        let namer = RouteNamer::new(|parts| {
            let path = parts.uri.path();
            (path != "/").then_some(Cow::Borrowed(path))
        });
        let mut service = plain(statsd.layer().route_namer(namer).max_routes(cap));
        runtime.block_on(async {
            for path in &paths {
                let uri = path.replace(' ', "%20").replace('{', "%7B").replace('}', "%7D").replace('|', "%7C");
                hit(&mut service, if uri.is_empty() { "/" } else { &uri }).await;
            }
        });
        let lines = flushed_lines(&statsd, &rx);
        let routes: BTreeSet<String> = lines
            .iter()
            .filter_map(|line| parse_line(line).0.strip_suffix(".called").map(str::to_owned))
            .collect();
        let named = routes
            .iter()
            .filter(|r| *r != "p.unmatched" && *r != "p.tower_statsd.route_overflow")
            .count();
        prop_assert!(named <= cap, "{} > {}: {:?}", named, cap, routes);
        let total: f64 = lines
            .iter()
            .filter(|line| parse_line(line).0.ends_with(".called"))
            .map(|line| line.split(':').nth(1).unwrap().trim_end_matches("|c").parse::<f64>().unwrap())
            .sum();
        prop_assert_eq!(total, paths.len() as f64);
        for route in &routes {
            let route = route.strip_prefix("p.").unwrap();
            prop_assert!(
                route.split('.').all(|part| !part.is_empty()
                    && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')),
                "{}", route
            );
        }
    }
}
