//! [`StatsdService`]: starts the clock and picks the route's names.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::naming::MethodTag;
use crate::record::{Held, Recorder, Shared, TagIds};

/// The service made by [`StatsdLayer`](crate::StatsdLayer).
///
/// Cloning it (axum does, per request) writes nothing another core writes:
/// see `record/anchor.rs`.
#[derive(Clone, Debug)]
pub struct StatsdService<S> {
    inner: S,
    state: Held,
}

impl<S> StatsdService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        StatsdService {
            inner,
            state: Held::new(shared),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for StatsdService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<crate::body::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // quanta reads the CPU's time stamp counter where it is invariant:
        // a third of the cost of `std::time::Instant` here.
        let start = quanta::Instant::now();
        let (parts, body) = req.into_parts();
        let state = self.state.state();
        let shared = &state.shared;
        let shard = match &shared.select {
            None => state.enter(matched_path(&parts)),
            Some(select) => match select.template(&parts, matched_path(&parts)) {
                Ok(template) => state.enter(template.as_deref()),
                Err(()) => None,
            },
        };
        let Some(shard) = shard else {
            // Not recorded: nothing entered, nothing to report.
            return ResponseFuture::unrecorded(self.inner.call(Request::from_parts(parts, body)));
        };
        let user = shared.user.as_ref().and_then(|key| key.token(&parts));
        let tags = match &shared.tags {
            Some(tags) => tags.ids(&parts),
            None => TagIds::NONE,
        };
        let method = MethodTag::of(&parts.method);
        let recorder = Recorder::new(shard, start, method, tags, user, shared.grpc);
        let future = self.inner.call(Request::from_parts(parts, body));
        ResponseFuture::new(future, recorder)
    }
}

#[cfg(feature = "axum")]
fn matched_path(parts: &http::request::Parts) -> Option<&str> {
    parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str())
}

#[cfg(not(feature = "axum"))]
fn matched_path(_parts: &http::request::Parts) -> Option<&str> {
    None
}
