//! [`StatsdService`]: starts the clock and picks the route's names.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::naming::MethodTag;
use crate::record::{Recorder, RouteStats, Shared};

/// The service made by [`StatsdLayer`](crate::StatsdLayer).
#[derive(Clone, Debug)]
pub struct StatsdService<S> {
    inner: S,
    /// One `Arc`, so that cloning the service per request (as axum does)
    /// touches one reference count.
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    shared: Arc<Shared>,
    /// The stats of the route this service wraps. axum's `Router::layer`
    /// makes one service per route (clones share this), so the first
    /// request's template is almost always every request's template; a
    /// different one falls back to the layer's map.
    route: OnceLock<(Box<str>, Arc<RouteStats>)>,
}

impl<S> StatsdService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        StatsdService {
            inner,
            state: Arc::new(State {
                shared,
                route: OnceLock::new(),
            }),
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

    fn route(&self, template: Option<&str>) -> Arc<RouteStats> {
        let state = &*self.state;
        if let (Some(template), Some((cached, stats))) = (template, state.route.get()) {
            if **cached == *template {
                return stats.clone();
            }
        }
        let stats = state.shared.routes.get(template);
        if let Some(template) = template {
            let _ = state.route.set((template.into(), stats.clone()));
        }
        stats
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
        let route = self.route(matched_path(&parts));
        let user = self
            .state
            .shared
            .user
            .as_ref()
            .and_then(|key| key.token(&parts));
        let recorder = Recorder::new(route, start, MethodTag::of(&parts.method), user);
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
