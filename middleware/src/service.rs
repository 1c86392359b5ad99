//! [`StatsdService`]: starts the clock and picks the route's names.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::head::Head;
use crate::naming::MethodTag;
use crate::record::{Held, Recorder, ServiceState, Shared, TagIds};

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
        let state = self.state.state();
        if !state.shared.reads_parts {
            let recorder = recorder(state, &Head::of(&req), start);
            return ResponseFuture::new(self.inner.call(req), recorder);
        }
        let (parts, body) = req.into_parts();
        let recorder = recorder(state, &Head::of_parts(&parts), start);
        ResponseFuture::new(self.inner.call(Request::from_parts(parts, body)), recorder)
    }
}

/// What records the request: `None` when it is not recorded (filtered out,
/// or past the route cap without an overflow route).
fn recorder(state: &ServiceState, head: &Head<'_>, start: quanta::Instant) -> Option<Recorder> {
    let shared = &state.shared;
    let matched = matched_path(head.extensions);
    let shard = match (&shared.select, head.parts) {
        (None, _) => state.enter(matched),
        // A filter or a route namer: `reads_parts`, so the head is
        // `Parts`.
        (Some(select), Some(parts)) => match select.template(parts, matched) {
            Ok(template) => state.enter(template.as_deref()),
            Err(()) => None,
        },
        (Some(_), None) => None,
    }?;
    let user = shared.user.as_ref().and_then(|key| key.token(head));
    let tags = match (&shared.tags, head.parts) {
        (Some(tags), Some(parts)) => tags.ids(parts),
        _ => TagIds::NONE,
    };
    let method = MethodTag::of(head.method);
    Some(Recorder::new(shard, start, method, tags, user, shared.grpc))
}

#[cfg(feature = "axum")]
fn matched_path(extensions: &http::Extensions) -> Option<&str> {
    extensions
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str())
}

#[cfg(not(feature = "axum"))]
fn matched_path(_extensions: &http::Extensions) -> Option<&str> {
    None
}
