//! What one finished request reports.
//!
//! The request path only fills a [`RequestRecord`] (no formatting, no
//! allocation); on the worker, `sink/requests.rs` folds it into the
//! window of its route and writes the names.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::naming::RouteNames;
use crate::user::UserToken;

/// One request, from entering the layer to the end of its response body.
#[derive(Debug)]
pub(crate) struct RequestRecord {
    pub(crate) route: Arc<RouteNames>,
    pub(crate) method: &'static str,
    /// `None` when the inner service failed or the future was dropped
    /// before a response existed.
    pub(crate) status: Option<StatusCode>,
    pub(crate) elapsed: Duration,
    /// The unique-user set's member, when the request carried a key.
    pub(crate) user: Option<UserToken>,
}

impl RequestRecord {
    /// Float milliseconds with the duration's full precision; never whole-ms
    /// truncation.
    pub(crate) fn millis(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1000.0
    }
}
