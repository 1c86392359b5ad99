//! Where a request's metrics are recorded: in place, into its route's
//! statistics for the current window.
//!
//! - [`Shared`]: what every service made by one layer reads — the routes'
//!   stats, the user key, and the sink it keeps alive;
//! - [`Recorder`]: the guard a request carries from the service, through its
//!   future, into its response body; it records exactly once when dropped;
//! - `routes`: route template → [`RouteStats`](stats::RouteStats), a
//!   [`Source`](crate::sink::Source) the sink's flusher drains each window;
//! - `stats`: one route's window, sharded per core, and how it is written.

mod routes;
mod stats;

use std::sync::Arc;

use http::StatusCode;
use quanta::Instant;

use crate::naming::MethodTag;
use crate::sink::AggregatingSink;
use crate::user::{UserKey, UserToken};

pub(crate) use routes::Routes;
pub(crate) use stats::{Key, RouteStats};

/// What every request of every service made by one layer reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) routes: Arc<Routes>,
    pub(crate) user: Option<UserKey>,
    /// Keeps the sink (and its flusher) alive as long as the layer lives.
    pub(crate) _sink: AggregatingSink,
}

/// Everything a request will report, waiting for its end. Records on drop,
/// so no path (error, panic, client gone) can skip or repeat it.
#[derive(Debug)]
pub(crate) struct Recorder {
    route: Arc<RouteStats>,
    start: Instant,
    key: Key,
    user: Option<UserToken>,
}

impl Recorder {
    pub(crate) fn new(
        route: Arc<RouteStats>,
        start: Instant,
        method: MethodTag,
        user: Option<UserToken>,
    ) -> Self {
        Recorder {
            route,
            start,
            key: Key {
                method,
                status: None,
            },
            user,
        }
    }

    pub(crate) fn set_status(&mut self, status: StatusCode) {
        self.key.status = Some(status);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.route
            .record(self.key, self.start.elapsed(), self.user.take());
    }
}
