//! What a handler needs, in one import: the client, the user-key
//! extractors, and cadence's metric traits, so that `statsd.count(..)`,
//! `statsd.incr(..)`, `statsd.gauge(..)` or `statsd.time(..)` work on a
//! [`Statsd`] without a direct cadence dependency.
//!
//! ```
//! use tower_statsd::prelude::*;
//!
//! async fn handler(axum::Extension(statsd): axum::Extension<Statsd>) -> &'static str {
//!     statsd.count("batch", 10).ok(); // Counted
//!     statsd.decr("stock").ok(); // CountedExt
//!     statsd.gauge("level", 5).ok(); // Gauged
//!     statsd.time("lookup", 12).ok(); // cadence's Timed
//!     statsd.set("visitor", 42).ok(); // Setted
//!     "ok"
//! }
//! # let _ = handler;
//! ```
//!
//! cadence's `Timed` trait comes in unnamed (`as _`): its methods are in
//! scope, and the name stays free for the application's own use. (Our timed
//! future is [`TimedFuture`](crate::TimedFuture).)

pub use crate::{Statsd, StatsdLayer, UserKey};

pub use cadence::{
    Counted, CountedExt, Distributed, Gauged, Histogrammed, Metered, MetricClient, Setted,
};

pub use cadence::Timed as _;
