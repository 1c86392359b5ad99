//! [`StatsdService`]: starts the clock and picks the route's names.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower_service::Service;

use crate::body::Recorder;
use crate::future::ResponseFuture;
use crate::layer::Shared;
use crate::naming::{method_tag, RouteNames};

/// The service made by [`StatsdLayer`](crate::StatsdLayer).
#[derive(Clone, Debug)]
pub struct StatsdService<S> {
    inner: S,
    shared: Arc<Shared>,
    /// The names of the route this service wraps. axum's `Router::layer`
    /// makes one service per route (clones share this), so the first
    /// request's template is almost always every request's template; a
    /// different one falls back to the layer's shared map.
    route: Arc<OnceLock<(Box<str>, Arc<RouteNames>)>>,
}

impl<S> StatsdService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        StatsdService {
            inner,
            shared,
            route: Arc::default(),
        }
    }

    fn route_names(&self, template: Option<&str>) -> Arc<RouteNames> {
        if let (Some(template), Some((cached, names))) = (template, self.route.get()) {
            if **cached == *template {
                return names.clone();
            }
        }
        let names = self.shared.naming.route(template);
        if let Some(template) = template {
            let _ = self.route.set((template.into(), names.clone()));
        }
        names
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
        let start = Instant::now();
        let (parts, body) = req.into_parts();
        let shared = &self.shared;
        let route = self.route_names(matched_path(&parts));
        let user = shared.user.as_ref().and_then(|key| key.token(&parts));
        let recorder = Recorder::new(shared, start, route, method_tag(&parts.method), user);
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
