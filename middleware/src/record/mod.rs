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
mod shard;
mod shared;
mod stats;
mod tags;

use http::{HeaderMap, StatusCode};
use quanta::Instant;

use crate::naming::{MethodTag, Status};
use crate::route::grpc_status;
use crate::user::UserToken;

pub(crate) use anchor::{Held, ServiceState};
pub(crate) use routes::Routes;
pub(crate) use shared::Shared;
pub(crate) use stats::{Key, ShardRef};
pub(crate) use tags::{sanitize_tag_key, RequestTags, TagFns, TagIds};
pub use tags::{DEFAULT_MAX_TAG_VALUES, MAX_REQUEST_TAGS, OVERFLOW_TAG_VALUE};

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
    /// Whether the status counted is the gRPC status.
    grpc: bool,
}

impl Recorder {
    pub(crate) fn new(
        shard: ShardRef,
        start: Instant,
        method: MethodTag,
        tags: TagIds,
        user: Option<UserToken>,
        grpc: bool,
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
            grpc,
        }
    }

    /// The body sent `bytes` more bytes.
    pub(crate) fn sent(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// The response's head arrived: its status counts, or for gRPC the
    /// `grpc-status` header of a response without a body (an error).
    pub(crate) fn set_status(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.key.status = Some(Status::Http(status));
        self.trailers(headers);
    }

    /// For gRPC, the `grpc-status` in the response's trailers (or headers)
    /// is the status counted. Without one (a stream cut short, or no gRPC
    /// response), the HTTP status stays.
    pub(crate) fn trailers(&mut self, trailers: &HeaderMap) {
        if self.grpc {
            if let Some(code) = grpc_status(trailers) {
                self.key.status = Some(Status::Grpc(code));
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shard
            .record(self.key, self.start.elapsed(), self.bytes, self.user.take());
    }
}
