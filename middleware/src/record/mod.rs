//! Where a request's metrics are recorded: in place, into its route's
//! statistics for the current window.
//!
//! - [`Shared`]: what every service made by one layer reads — the routes'
//!   stats, the user key, and the sink it keeps alive;
//! - [`Recorder`]: the guard a request carries from the service, through its
//!   future, into its response body; it records exactly once when dropped;
//! - `anchor`: how a service reaches its state without a reference count
//!   that every core writes (axum clones the service per request);
//! - `routes`: route template → [`RouteStats`](stats::RouteStats), a
//!   [`Source`](crate::sink::Source) the sink's flusher drains each window;
//! - `stats`: one route's window, sharded per core, and how it is written.

mod anchor;
mod members;
mod routes;
mod stats;
mod tags;

use std::sync::Arc;

use http::StatusCode;
use quanta::Instant;

use crate::naming::MethodTag;
use crate::sink::AggregatingSink;
use crate::user::{UserKey, UserToken};

pub(crate) use anchor::Held;
pub(crate) use routes::Routes;
pub(crate) use stats::{Key, ShardRef};
pub(crate) use tags::{sanitize_tag_key, RequestTags, TagFns, TagIds};
pub use tags::{DEFAULT_MAX_TAG_VALUES, MAX_REQUEST_TAGS, OVERFLOW_TAG_VALUE};

/// What every request of every service made by one layer reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) routes: Arc<Routes>,
    pub(crate) user: Option<UserKey>,
    /// The request's own tags, in tagged mode.
    pub(crate) tags: Option<Arc<RequestTags>>,
    /// Keeps the sink (and its flusher) alive as long as the layer lives.
    pub(crate) _sink: AggregatingSink,
}

/// Everything a request will report, waiting for its end. Records on drop,
/// so no path (error, panic, client gone) can skip or repeat it.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// The shard the request entered on: it counts as in flight there
    /// until this is dropped.
    shard: ShardRef,
    start: Instant,
    key: Key,
    /// Response body bytes sent so far.
    bytes: u64,
    user: Option<UserToken>,
}

impl Recorder {
    pub(crate) fn new(
        shard: ShardRef,
        start: Instant,
        method: MethodTag,
        tags: TagIds,
        user: Option<UserToken>,
    ) -> Self {
        Recorder {
            shard,
            start,
            key: Key {
                method,
                status: None,
                tags,
            },
            bytes: 0,
            user,
        }
    }

    /// The body sent `bytes` more bytes.
    pub(crate) fn sent(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    pub(crate) fn set_status(&mut self, status: StatusCode) {
        self.key.status = Some(status);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shard
            .record(self.key, self.start.elapsed(), self.bytes, self.user.take());
    }
}
