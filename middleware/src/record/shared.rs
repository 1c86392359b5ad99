//! What the services made by one layer share: its routes, and the options
//! that decide what a request records.

use std::sync::Arc;

use super::routes::Routes;
use super::tags::RequestTags;
use crate::route::Select;
use crate::sink::AggregatingSink;
use crate::user::UserKey;

/// What every request of every service made by one layer reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) routes: Arc<Routes>,
    pub(crate) user: Option<UserKey>,
    /// The request's own tags, in tagged mode.
    pub(crate) tags: Option<Arc<RequestTags>>,
    /// The predicate and the route namer, if the layer has either.
    pub(crate) select: Option<Select>,
    /// Whether the status counted is the gRPC status.
    pub(crate) grpc: bool,
    /// Whether a closure of the application reads the request's head (as
    /// `Parts`): the request is then taken apart (see `head.rs`).
    pub(crate) reads_parts: bool,
    /// Keeps the sink (and its flusher) alive as long as the layer lives.
    pub(crate) _sink: AggregatingSink,
}
