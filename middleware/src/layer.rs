//! [`StatsdLayer`]: what the user adds to a router, and its options.

use std::sync::Arc;

use tower_layer::Layer;

use crate::naming::{Naming, NamingMode};
use crate::record::{Routes, Shared};
use crate::service::StatsdService;
use crate::sink::AggregatingSink;
use crate::user::UserKey;

/// Records, for every request, a hit counter, a latency timer (float ms, to
/// the end of the response body) and a status counter per route, plus a
/// unique-user set when a [`UserKey`] is configured.
///
/// Made by [`Statsd::layer`](crate::Statsd::layer). Options are set at start-up; a per-route name
/// is built once, on a route's first request.
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_statsd::{Statsd, UserKey};
///
/// let statsd = Statsd::builder().prefix("statstest").build()?;
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .route("/users/{id}/posts", get(|| async { "posts" }))
///     .layer(
///         statsd
///             .layer()
///             .user_key(UserKey::query("id"), "user")
///             .rename_route("/users/{id}/posts", "posts_by_user"),
///     );
/// # Ok::<(), tower_statsd::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct StatsdLayer {
    sink: AggregatingSink,
    prefix: Arc<str>,
    shared: Arc<Shared>,
    mode: NamingMode,
    overrides: Vec<(String, String)>,
    user: Option<(UserKey, String)>,
}

impl StatsdLayer {
    /// A layer recording into `sink`'s windows, names under `prefix`.
    pub(crate) fn new(sink: AggregatingSink, prefix: &str, mode: NamingMode) -> Self {
        let prefix: Arc<str> = prefix.into();
        let shared = Self::shared(&sink, &prefix, mode, &[], None);
        StatsdLayer {
            sink,
            prefix,
            shared,
            mode,
            overrides: Vec::new(),
            user: None,
        }
    }

    /// Records each request's user key in the set `{prefix}.{set_name}`,
    /// for responses below 400 (a rejected request is not a visit).
    pub fn user_key(mut self, key: UserKey, set_name: impl Into<String>) -> Self {
        self.user = Some((key, set_name.into()));
        self.rebuild();
        self
    }

    /// Names the route with this axum template `name` instead of the name
    /// derived from the template (`/users/{id}/posts` → `users._id.posts`).
    /// Dots in `name` make levels; other unsafe characters become `_`.
    pub fn rename_route(mut self, template: impl Into<String>, name: impl Into<String>) -> Self {
        self.overrides.push((template.into(), name.into()));
        self.rebuild();
        self
    }

    /// Hierarchical names (the default from the client's configuration) or
    /// one tagged metric.
    pub fn naming(mut self, mode: NamingMode) -> Self {
        self.mode = mode;
        self.rebuild();
        self
    }

    fn rebuild(&mut self) {
        self.shared = Self::shared(
            &self.sink,
            &self.prefix,
            self.mode,
            &self.overrides,
            self.user.as_ref(),
        );
    }

    /// The routes' statistics for these options, drained by the sink's
    /// flusher from now on.
    fn shared(
        sink: &AggregatingSink,
        prefix: &str,
        mode: NamingMode,
        overrides: &[(String, String)],
        user: Option<&(UserKey, String)>,
    ) -> Arc<Shared> {
        let set = user.map(|(_, set)| set.as_str());
        let naming = Naming::new(prefix, mode, overrides, set);
        let routes = Arc::new(Routes::new(
            naming,
            sink.timer_cap(),
            sink.control().clone(),
        ));
        sink.register(routes.clone());
        Arc::new(Shared {
            routes,
            user: user.map(|(key, _)| key.clone()),
            _sink: sink.clone(),
        })
    }
}

impl<S> Layer<S> for StatsdLayer {
    type Service = StatsdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatsdService::new(inner, self.shared.clone())
    }
}
