//! StatsD metrics for tower and axum: one layer gives every route a hit
//! counter, a latency timer, status counters and, optionally, a unique-user
//! set — recorded in place per route, aggregated so counts stay exact under
//! load, and sent by one background flusher so a slow or missing daemon never
//! slows a request.
//!
//! | metric | type | when |
//! |---|---|---|
//! | `{prefix}.{route}.called` | counter | every request |
//! | `{prefix}.{route}` | timer, float ms | when the response body ends, fails or is dropped |
//! | `{prefix}.{route}.status.{code}` | counter | every response |
//! | `{prefix}.{route}.in_flight` | gauge | each window while requests are between entering the layer and the end of their body; `0` once when the route drains |
//! | `{prefix}.{route}.bytes_sent` | counter | response body bytes, counted from the frames |
//! | `{prefix}.{set}` | set | a response below 400 whose request carries a user key |
//! | `{prefix}.tower_statsd.dropped` | counter | metrics dropped: a handler's line was malformed, or a window grew far past its size while the flusher lagged |
//!
//! `{route}` comes from axum's route template: `/` → `root`,
//! `/users/{id}/posts` → `users._id.posts`, `/{*rest}` → `_rest`, and
//! [`UNMATCHED`] (`unmatched`) for the fallback, 404s and `nest_service`.
//!
//! # Default: configured from the environment
//!
//! pystatsd's variables (`STATSD_HOST`, `STATSD_PORT`, `STATSD_PREFIX`,
//! `STATSD_MAXUDPSIZE`, `STATSD_IPV6`), then one layer:
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
//! statsd.flush();
//! # Ok::<(), tower_statsd::ConfigError>(())
//! ```

mod body;
mod client;
mod config;
mod future;
mod layer;
mod naming;
pub mod prelude;
mod record;
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
pub use service::StatsdService;
pub use sink::{Protocol, Server, UnknownProtocol, UnknownServer};
pub use user::{UserKey, MAX_PLAIN_USER_KEY};

/// Re-exported for the rest of cadence; the metric traits handlers need come
/// with [`prelude`] (`use tower_statsd::prelude::*`).
pub use cadence;
