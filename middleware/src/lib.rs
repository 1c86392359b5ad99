//! StatsD metrics for tower and axum: one layer gives every route a hit
//! counter, a latency timer, status counters and, optionally, a unique-user
//! set — recorded in place per route, aggregated so counts stay exact under
//! load, and sent by one background flusher so a slow or missing daemon never
//! slows a request.
//!
//! ```toml
//! [dependencies]
//! tower-statsd = "0.1"
//! ```
//!
//! Until the crate is on crates.io, take it from its repository:
//! `tower-statsd = { git = "https://github.com/tower-statsd/tower-statsd" }`.
//!
//! **Features.** `axum` (default): route names from axum 0.8's
//! `MatchedPath`. Without it (`default-features = false`) the layer wraps any
//! tower service just the same, without the axum dependency; see
//! [Without axum](#without-axum).
//!
//! | metric | type | when |
//! |---|---|---|
//! | `{prefix}.{route}.called` | counter | every request |
//! | `{prefix}.{route}` | timer, float ms | when the response body ends, fails or is dropped |
//! | `{prefix}.{route}.status.{code}` | counter | every response |
//! | `{prefix}.{route}.in_flight` | gauge | the window's peak of requests between entering the layer and the end of their body, each window the route had one; `0` once when the route drains |
//! | `{prefix}.{route}.bytes_sent` | counter | response body bytes, counted from the frames |
//! | `{prefix}.{set}` | set | a response below 400 whose request carries a user key |
//! | `{prefix}.tower_statsd.dropped` | counter | metrics dropped: a handler's line was malformed, or a window grew far past its size while the flusher lagged |
//! | `{prefix}.tower_statsd.tag_overflow` | counter, tagged `tag:{key}` | tagged mode: requests whose [request tag](StatsdLayer::request_tag) took a value past its cap |
//! | `{prefix}.tower_statsd.route_overflow.called` | counter | requests of routes first seen past [`max_routes`](StatsdLayer::max_routes) |
//!
//! `{route}` comes from axum's route template: `/` → `root`,
//! `/users/{id}/posts` → `users._id.posts`, `/{*rest}` → `_rest`, and
//! [`UNMATCHED`] (`unmatched`) for the fallback, 404s and `nest_service`.
//!
//! # Configuration
//!
//! [`Statsd::from_env`] reads pystatsd's variables and a few more, each with
//! a [`Statsd::builder`] method of the same meaning; a bad value is a
//! [`ConfigError`] naming the variable and what it accepts. The
//! [configuration table of the README][config] says more about each.
//!
//! | variable | default | builder method |
//! |---|---|---|
//! | `STATSD_HOST` | `localhost` (retried and re-resolved, so a daemon that is not up yet does not stop the app) | [`host`](StatsdBuilder::host) |
//! | `STATSD_PORT` | `8125` | [`port`](StatsdBuilder::port) |
//! | `STATSD_PREFIX` | none | [`prefix`](StatsdBuilder::prefix) |
//! | `STATSD_MAXUDPSIZE` | `512` bytes a packet | [`max_packet_size`](StatsdBuilder::max_packet_size) |
//! | `STATSD_IPV6` | `0` | [`ipv6`](StatsdBuilder::ipv6) |
//! | `STATSD_FLUSH_MS` | `1000`, the aggregation window | [`flush_interval`](StatsdBuilder::flush_interval) |
//! | `STATSD_SERVER` | `generic`, right on every server; or `etsy`, `collectd`, `netdata`, `telegraf`, `statsd_exporter`, `datadog`, `vector`, `gostatsd` ([`Server`]: packing, timer sampling, what is kept) | [`server`](StatsdBuilder::server) |
//! | `STATSD_MAX_TIMER_SAMPLES` | `1024` values per timer and window where the server reads sample rates, then a sample with exact counts; every value elsewhere | [`max_timer_samples`](StatsdBuilder::max_timer_samples) |
//! | `STATSD_PROTOCOL` | the server's packing; or `plain`, `etsy`, `dogstatsd` ([`Protocol`]) | [`protocol`](StatsdBuilder::protocol) |
//! | `STATSD_TRANSPORT` | `udp`; or `tcp`, `unix` ([`Transport`]) | [`transport`](StatsdBuilder::transport) |
//! | `STATSD_SOCKET` | the socket path for `unix` | [`transport`](StatsdBuilder::transport) |
//! | `STATSD_NAMING` | `hierarchical`; or `tagged` ([`NamingMode`]) | [`naming`](StatsdBuilder::naming) |
//! | `STATSD_TAGS` | none; constant tags on every tagged metric, `env:prod,service:api` (not sent in hierarchical mode) | [`tag`](StatsdBuilder::tag) |
//! | `STATSD_STATUS_CLASSES` | `0`; `1` counts `status.2xx` … `status.5xx` instead of each code | [`status_classes`](StatsdBuilder::status_classes) |
//!
//! # Default: configured from the environment
//!
//! The variables above, then one layer:
//!
//! ```
//! use axum::{routing::get, Extension, Router};
//! use tower_statsd::Statsd;
//!
//! let statsd = Statsd::from_env()?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(statsd.layer())
//!     .layer(Extension(statsd.clone()));
//! # Ok::<(), tower_statsd::ConfigError>(())
//! ```
//!
//! # Customised: the tutorial's API
//!
//! A prefix, unique users from `?id=`, a named route, and a handler that
//! records its own metrics through the same client:
//!
//! ```
//! use std::time::Duration;
//! use axum::{extract::Query, routing::get, Extension, Json, Router};
//! use tower_statsd::prelude::*;
//! use tower_statsd::{Statsd, UserKey};
//!
//! #[derive(serde::Deserialize)]
//! struct User { id: u64 }
//!
//! async fn user(Extension(statsd): Extension<Statsd>, Query(u): Query<User>) -> Json<u64> {
//!     statsd.count("user.lookups", 10).ok();
//!     let id = statsd.time_fn("user.db", || u.id);
//!     Json(id)
//! }
//!
//! let statsd = Statsd::builder()
//!     .host("127.0.0.1")
//!     .prefix("statstest")
//!     .flush_interval(Duration::from_millis(500))
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/user", get(user))
//!     .route("/users/{id}/posts", get(|| async { "[]" }))
//!     .layer(
//!         statsd
//!             .layer()
//!             .user_key(UserKey::query("id"), "user")
//!             .rename_route("/users/{id}/posts", "posts"),
//!     )
//!     .layer(Extension(statsd.clone()));
//! // On shutdown, after the server has stopped:
//! statsd.flush()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Without axum
//!
//! [`StatsdLayer`] wraps any `tower::Service<http::Request<B>>` that answers
//! `http::Response<_>`: a hyper or tonic server, a tower-http stack. Outside
//! an axum router there is no `MatchedPath`: a [`RouteNamer`] names the
//! route from the request's head, returning a template sanitised like
//! axum's (`/items/{id}` → `items._id`); without one, or where it returns
//! `None`, a request is counted and timed under [`UNMATCHED`] (`unmatched`).
//! Each distinct template's names are built once; at most
//! [`max_routes`](StatsdLayer::max_routes) ([`DEFAULT_MAX_ROUTES`]) of them,
//! then [`ROUTE_OVERFLOW`].
//!
//! ```
//! use std::borrow::Cow;
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_statsd::{RouteNamer, Statsd};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let statsd = Statsd::builder().prefix("svc").build()?;
//! let namer = RouteNamer::new(|parts| {
//!     let path = parts.uri.path();
//!     path.starts_with("/items/").then_some(Cow::Borrowed("/items/{id}"))
//! });
//! let service = statsd
//!     .layer()
//!     .route_namer(namer)
//!     .exclude_routes(["/health"])
//!     .layer(service_fn(|_: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hello")))
//!     }));
//! let request = Request::get("/items/7").body(String::new())?;
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! // Recorded as svc.items._id.called, svc.items._id, svc.items._id.status.200
//! // once the body ends or is dropped; any other path as svc.unmatched.
//! # Ok(())
//! # }
//! ```
//!
//! For a tonic server, [`StatsdLayer::grpc`] names each route by its method
//! (`/pkg.Service/Method` → `pkg_Service.Method`) and counts the gRPC status
//! (`status.0` for OK, `status.5` for NOT_FOUND) from the `grpc-status`
//! trailer: `Server::builder().layer(statsd.layer().grpc())`. The example
//! `examples/hyper.rs` in the repository is a whole hyper server.
//!
//! # In your app: tags, status classes
//!
//! In tagged mode, constant tags go on every metric and a closure adds the
//! request's own, each key capped at
//! [`max_request_tag_values`](StatsdLayer::max_request_tag_values) distinct
//! values (past it, [`OVERFLOW_TAG_VALUE`]); status classes count `2xx` …
//! `5xx` instead of each code. Hierarchical mode ignores tags.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_statsd::{NamingMode, Server, Statsd};
//!
//! let statsd = Statsd::builder()
//!     .server(Server::Etsy)
//!     .naming(NamingMode::Tagged)
//!     .tag("env", "prod") // or STATSD_TAGS=env:prod
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(
//!         statsd
//!             .layer()
//!             .request_tag("tier", |request| {
//!                 request.headers.get("x-tier").and_then(|v| v.to_str().ok())
//!             })
//!             .status_classes(true),
//!     );
//! // {prefix}.http.requests:1|c|#route:root,method:GET,status:2xx,tier:gold,env:prod
//! # Ok::<(), tower_statsd::ConfigError>(())
//! ```
//!
//! # More in the repository
//!
//! The [README] walks through the [demo] (StatsD and Graphite on your
//! machine), the [tutorial in Rust][tutorial], the [metrics] and the
//! [configuration][config]; the deep material is in `docs/`:
//! [delivery], [performance], [compatibility] with StatsD servers and wire
//! dialects, [bad input and failures][hostile], [testing].
//!
//! [README]: https://github.com/tower-statsd/tower-statsd#readme
//! [demo]: https://github.com/tower-statsd/tower-statsd#the-demo
//! [tutorial]: https://github.com/tower-statsd/tower-statsd#the-tutorial-in-rust
//! [metrics]: https://github.com/tower-statsd/tower-statsd#metrics
//! [config]: https://github.com/tower-statsd/tower-statsd#configuration
//! [delivery]: https://github.com/tower-statsd/tower-statsd/blob/main/docs/delivery.md
//! [performance]: https://github.com/tower-statsd/tower-statsd/blob/main/docs/performance.md
//! [compatibility]: https://github.com/tower-statsd/tower-statsd/blob/main/docs/compatibility.md
//! [hostile]: https://github.com/tower-statsd/tower-statsd/blob/main/docs/hostile-input.md
//! [testing]: https://github.com/tower-statsd/tower-statsd/blob/main/docs/testing.md

mod body;
mod client;
mod config;
mod future;
mod head;
mod layer;
mod naming;
pub mod prelude;
mod record;
mod route;
mod service;
pub mod sink;
mod user;

pub use body::ResponseBody;
pub use client::{Statsd, TimedFuture, TimerGuard};
pub use config::{
    ConfigError, StatsdBuilder, Transport, DEFAULT_FLUSH_INTERVAL, DEFAULT_MAX_TIMER_SAMPLES,
    DEFAULT_MAX_UDP_SIZE, MIN_MAX_UDP_SIZE,
};
pub use future::ResponseFuture;
pub use layer::StatsdLayer;
pub use naming::{route_name, NamingMode, UNMATCHED};
pub use record::{DEFAULT_MAX_TAG_VALUES, MAX_REQUEST_TAGS, OVERFLOW_TAG_VALUE};
pub use route::{RouteNamer, DEFAULT_MAX_ROUTES, ROUTE_OVERFLOW};
pub use service::StatsdService;
pub use sink::{FlushError, Protocol, Server, UnknownProtocol, UnknownServer};
pub use user::{UserKey, MAX_PLAIN_USER_KEY};

/// Re-exported for the rest of cadence; the metric traits handlers need come
/// with [`prelude`] (`use tower_statsd::prelude::*`).
pub use cadence;
