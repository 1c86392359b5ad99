//! [`StatsdLayer`]: what the user adds to a router, and its options.

use std::sync::{Arc, OnceLock};

use tower_layer::Layer;

use crate::client::Statsd;
use crate::naming::{Naming, NamingMode};
use crate::record::{
    sanitize_tag_key, RequestTags, Routes, Shared, TagFns, DEFAULT_MAX_TAG_VALUES, MAX_REQUEST_TAGS,
};
use crate::route::{Predicate, RouteNamer, Select, Templates, DEFAULT_MAX_ROUTES};
use crate::service::StatsdService;
use crate::sink::AggregatingSink;
use crate::user::UserKey;

/// Records, for every request, a hit counter, a latency timer (float ms, to
/// the end of the response body) and a status counter per route, plus a
/// unique-user set when a [`UserKey`] is configured.
///
/// Made by [`StatsdLayer::new`] or [`Statsd::layer`].
/// Options are set at start-up; a per-route name is built once, on a route's
/// first request.
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
    /// The client's constant tags, `env:prod,service:api`.
    tags: Arc<str>,
    options: Options,
    /// The routes' statistics for these options: made on the first
    /// [`Layer::layer`] call, registered with the sink's flusher then, and
    /// shared by every clone made since the last option was set. Setting an
    /// option starts a new, empty cell, so a chain of builder calls
    /// registers one set of routes, not one per call.
    shared: Arc<OnceLock<Arc<Shared>>>,
}

/// What the layer's builder methods set.
#[derive(Clone, Debug)]
struct Options {
    mode: NamingMode,
    overrides: Vec<(String, String)>,
    user: Option<(UserKey, String)>,
    response_sizes: bool,
    status_classes: bool,
    request_tags: TagFns,
    max_tag_values: usize,
    templates: Templates,
    select: Select,
    grpc: bool,
    max_routes: usize,
}

impl StatsdLayer {
    /// A layer reporting through `statsd`, with the client's prefix, naming,
    /// constant tags and default for status classes: the same as
    /// [`statsd.layer()`](Statsd::layer), in tower-http's style.
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use tower_statsd::{Statsd, StatsdLayer};
    ///
    /// let statsd = Statsd::builder().prefix("statstest").build()?;
    /// let app: Router = Router::new()
    ///     .route("/", get(|| async { "hello" }))
    ///     .layer(StatsdLayer::new(&statsd).status_classes(true));
    /// # Ok::<(), tower_statsd::ConfigError>(())
    /// ```
    pub fn new(statsd: &Statsd) -> Self {
        let sink = statsd.sink().clone();
        let prefix = statsd.prefix();
        let mode = statsd.naming();
        let tags = statsd.tags();
        let status_classes = statsd.status_classes();
        let options = Options {
            mode,
            overrides: Vec::new(),
            user: None,
            response_sizes: false,
            status_classes,
            request_tags: TagFns::default(),
            max_tag_values: DEFAULT_MAX_TAG_VALUES,
            templates: Templates::default(),
            select: Select::default(),
            grpc: false,
            max_routes: DEFAULT_MAX_ROUTES,
        };
        let prefix: Arc<str> = prefix.into();
        let tags: Arc<str> = tags.into();
        StatsdLayer {
            shared: Arc::default(),
            sink,
            prefix,
            tags,
            options,
        }
    }

    /// Records each request's user key in the set `{prefix}.{set_name}`,
    /// for responses below 400 (a rejected request is not a visit).
    pub fn user_key(mut self, key: UserKey, set_name: impl Into<String>) -> Self {
        self.options.user = Some((key, set_name.into()));
        self.rebuild()
    }

    /// Names the route with this axum template `name` instead of the name
    /// derived from the template (`/users/{id}/posts` → `users._id.posts`).
    /// Dots in `name` make levels; other unsafe characters become `_`.
    pub fn rename_route(mut self, template: impl Into<String>, name: impl Into<String>) -> Self {
        self.options.overrides.push((template.into(), name.into()));
        self.rebuild()
    }

    /// Hierarchical names (the default from the client's configuration) or
    /// one tagged metric. Tags need a [`Server`](crate::sink::Server) that reads
    /// them; for one that does not (the generic default, collectd, netdata,
    /// Telegraf) the names stay hierarchical and a warning is logged
    /// (`STATSD_NAMING=tagged` is refused by the client's builder there).
    pub fn naming(mut self, mode: NamingMode) -> Self {
        if mode == NamingMode::Tagged && !self.sink.server().reads_tags() {
            tracing::warn!(
                server = %self.sink.server(),
                "tagged naming needs a server that reads tags (STATSD_SERVER=etsy, \
                 statsd_exporter, datadog, vector or gostatsd); names stay hierarchical"
            );
            return self;
        }
        self.options.mode = mode;
        self.rebuild()
    }

    /// Also sends each response's body size as a DogStatsD distribution
    /// (`|d`): `{prefix}.{route}.response_size`, or `{prefix}.http.response.size`
    /// with the request's tags (default off). Only for a
    /// [`Server`](crate::sink::Server) that keeps distributions (`datadog`,
    /// `statsd_exporter`, `vector`): Etsy StatsD has no distribution type
    /// (it would count the line as a counter), so elsewhere this option does
    /// nothing but log a warning, and `bytes_sent` (a counter) is the honest
    /// measure there. Sizes are sampled like timers
    /// (`STATSD_MAX_TIMER_SAMPLES`), with exact counts.
    pub fn response_size_distribution(mut self, on: bool) -> Self {
        if on && !self.sink.server().reads_distributions() {
            tracing::warn!(
                server = %self.sink.server(),
                "response_size_distribution needs a server that keeps distributions \
                 (STATSD_SERVER=datadog, statsd_exporter or vector); not sent"
            );
        }
        self.options.response_sizes = on;
        self.rebuild()
    }

    /// Counts responses by status class (default off): `{prefix}.{route}.status.2xx`
    /// … `status.5xx` instead of `status.200`, `status.204`, …; in tagged
    /// mode the `status` tag becomes `2xx`. Fewer series, for dashboards
    /// that only ask "how many failed".
    pub fn status_classes(mut self, on: bool) -> Self {
        self.options.status_classes = on;
        self.rebuild()
    }

    /// Tags each request with `key:{value}`, the value taken from the
    /// request by `value` (`None` leaves the tag out), in tagged mode only:
    /// hierarchical names never change, and there `value` is never called.
    ///
    /// Cardinality stays bounded: a key takes at most
    /// [`max_request_tag_values`](Self::max_request_tag_values) distinct
    /// values (default [`DEFAULT_MAX_TAG_VALUES`]); later new values are
    /// sent as [`OVERFLOW_TAG_VALUE`](crate::record::OVERFLOW_TAG_VALUE), counted
    /// by the self-metric `{prefix}.tower_statsd.tag_overflow` (tagged
    /// `tag:{key}`), and one warning is logged. Keys and values are
    /// sanitised like names (outside `[A-Za-z0-9_.-]` becomes `_`; values
    /// are cut to 64 bytes). At most [`MAX_REQUEST_TAGS`] keys; a key that
    /// is empty, repeated, a constant tag's, or one of the layer's own
    /// (`route`, `method`, `status`) is ignored with a warning.
    ///
    /// Each distinct value is one more series per route, method and
    /// status: keep to values of a small, known set (a tenant tier, an API
    /// version, a region), never ids.
    pub fn request_tag<F>(mut self, key: &str, value: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<&str> + Send + Sync + 'static,
    {
        let key = sanitize_tag_key(key);
        let tags = &mut self.options.request_tags.0;
        if key.is_empty()
            || ["route", "method", "status"].contains(&key.as_str())
            || tags.iter().any(|(k, _)| **k == *key)
            || self
                .tags
                .split(',')
                .any(|tag| tag.split(':').next() == Some(&key))
            || tags.len() == MAX_REQUEST_TAGS
        {
            tracing::warn!(
                key,
                "request tag ignored: its key is empty, the layer's own (route, method, \
                 status), given twice, a constant tag's, or one past the most \
                 ({MAX_REQUEST_TAGS})"
            );
            return self;
        }
        tags.push((key.into(), Arc::new(value)));
        self.rebuild()
    }

    /// The most distinct values each request tag's key takes (default
    /// [`DEFAULT_MAX_TAG_VALUES`], at most 65 000); see
    /// [`request_tag`](Self::request_tag).
    pub fn max_request_tag_values(mut self, values: usize) -> Self {
        self.options.max_tag_values = values.min(65_000);
        self.rebuild()
    }

    /// Records nothing for requests of these route templates (`/health`,
    /// `/metrics`): no counter, timer, set member or in-flight count. A
    /// template is axum's (`/users/{id}`), or what the
    /// [`route_namer`](Self::route_namer) returns. Decided once per route:
    /// an excluded request costs a branch.
    pub fn exclude_routes<I>(mut self, templates: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.options
            .templates
            .exclude(templates.into_iter().map(Into::into));
        self.rebuild()
    }

    /// Records only the requests of these route templates (and of no
    /// unmatched request); [`exclude_routes`](Self::exclude_routes) still
    /// excludes. Called again, it adds to the list.
    pub fn only_routes<I>(mut self, templates: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.options
            .templates
            .only(templates.into_iter().map(Into::into));
        self.rebuild()
    }

    /// Records a request only if `records` returns `true` for its head
    /// (method, URI, headers, extensions; any body type). Called on every
    /// request, before the route is named; a request it turns down costs
    /// the call and sends nothing.
    ///
    /// ```
    /// use tower_statsd::Statsd;
    ///
    /// let statsd = Statsd::builder().build()?;
    /// // Not the load balancer's probes.
    /// let layer = statsd
    ///     .layer()
    ///     .filter(|parts| !parts.headers.contains_key("x-health-probe"));
    /// # let _ = layer;
    /// # Ok::<(), tower_statsd::ConfigError>(())
    /// ```
    pub fn filter<F>(mut self, records: F) -> Self
    where
        F: Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    {
        self.options.select.predicate = Some(Predicate::new(records));
        self.rebuild()
    }

    /// Names the routes of requests without axum's `MatchedPath` (a plain
    /// tower or hyper service, a fallback), or of every request (see
    /// [`RouteNamer::over_matched_path`]).
    pub fn route_namer(mut self, namer: RouteNamer) -> Self {
        self.options.select.namer = Some(namer);
        self.rebuild()
    }

    /// For a gRPC server (tonic): routes named by [`RouteNamer::grpc`]
    /// (`/pkg.Service/Method` → `pkg_Service.Method`), and the status
    /// counted is the gRPC status, read from the `grpc-status` trailer (or
    /// header): `{prefix}.{route}.status.0` for OK, `status.5` for
    /// NOT_FOUND, and so on (the `status` tag in tagged mode). A response
    /// without one keeps its HTTP status (`status.200`: a stream cut short).
    pub fn grpc(mut self) -> Self {
        self.options.select.namer = Some(RouteNamer::grpc());
        self.options.grpc = true;
        self.rebuild()
    }

    /// Keeps at most `max_routes` distinct route names (default
    /// [`DEFAULT_MAX_ROUTES`], not counting `unmatched`): the requests of a
    /// route first seen past it are recorded under
    /// [`ROUTE_OVERFLOW`](crate::route::ROUTE_OVERFLOW)
    /// (`{prefix}.tower_statsd.route_overflow.called` counts them), and a
    /// warning is logged once. Bounds what a [`RouteNamer`] fed by clients
    /// can create.
    pub fn max_routes(mut self, max_routes: usize) -> Self {
        self.options.max_routes = max_routes;
        self.rebuild()
    }

    fn rebuild(mut self) -> Self {
        self.shared = Arc::default();
        self
    }

    /// The routes' statistics for these options, drained by the sink's
    /// flusher from now on.
    fn shared(sink: &AggregatingSink, prefix: &str, tags: &str, options: &Options) -> Arc<Shared> {
        // quanta calibrates the time stamp counter against the system clock
        // on its first reading (about a millisecond here, up to 200 ms on a
        // busy machine): done now, as the layer is applied, not in the
        // first request.
        quanta::Instant::now();
        let set = options.user.as_ref().map(|(_, set)| set.as_str());
        let sizes = options.response_sizes && sink.server().reads_distributions();
        let naming = Naming::new(prefix, options.mode, &options.overrides, set)
            .with_response_sizes(sizes)
            .with_status_classes(options.status_classes)
            .with_constant_tags(tags);
        let request_tags =
            (options.mode == NamingMode::Tagged && !options.request_tags.0.is_empty()).then(|| {
                let overflow = if prefix.is_empty() {
                    "tower_statsd.tag_overflow".to_owned()
                } else {
                    format!("{prefix}.tower_statsd.tag_overflow")
                };
                let tags = Arc::new(RequestTags::new(
                    &options.request_tags.0,
                    options.max_tag_values,
                    &overflow,
                    naming.constant_tags().clone(),
                ));
                sink.register(tags.clone());
                tags
            });
        let routes = Arc::new(
            Routes::new(
                naming,
                sink.timer_cap(),
                sink.control().clone(),
                request_tags.clone(),
            )
            .with_templates(options.templates.clone())
            .with_max_routes(options.max_routes),
        );
        sink.register(routes.clone());
        let select = &options.select;
        let select = (select.predicate.is_some() || select.namer.is_some()).then(|| select.clone());
        let user = options.user.as_ref().map(|(key, _)| key.clone());
        Arc::new(Shared {
            reads_parts: select.is_some()
                || request_tags.is_some()
                || user.as_ref().is_some_and(UserKey::reads_parts),
            routes,
            user,
            tags: request_tags,
            select,
            grpc: options.grpc,
            _sink: sink.clone(),
        })
    }
}

impl Statsd {
    /// A new [`StatsdLayer`] reporting through this client: the same as
    /// [`StatsdLayer::new`].
    pub fn layer(&self) -> StatsdLayer {
        StatsdLayer::new(self)
    }
}

impl<S> Layer<S> for StatsdLayer {
    type Service = StatsdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let shared = self
            .shared
            .get_or_init(|| Self::shared(&self.sink, &self.prefix, &self.tags, &self.options));
        StatsdService::new(inner, shared.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::get;
    use axum::Router;

    use crate::naming::NamingMode;
    use crate::{Statsd, UserKey};

    use crate::sink::testing::quiet_statsd as statsd;

    #[test]
    fn a_chain_of_options_registers_one_set_of_routes_when_first_applied() {
        let statsd = statsd();
        let layer = statsd
            .layer()
            .user_key(UserKey::query("id"), "user")
            .rename_route("/a", "first")
            .response_size_distribution(false)
            .naming(NamingMode::Hierarchical);
        assert_eq!(statsd.sink().sources(), 0, "nothing until it is applied");
        // axum clones the layer for every route, then applies each clone.
        let early_clone = layer.clone();
        let app: Router = Router::new()
            .route("/a", get(|| async { "a" }))
            .route("/b", get(|| async { "b" }))
            .layer(layer.clone());
        let other: Router = Router::new()
            .route("/c", get(|| async { "c" }))
            .layer(early_clone);
        assert_eq!(statsd.sink().sources(), 1, "every clone shares them");
        // An option set on a clone makes its own.
        let renamed: Router = Router::new()
            .route("/d", get(|| async { "d" }))
            .layer(layer.rename_route("/d", "fourth"));
        assert_eq!(statsd.sink().sources(), 2);
        drop((app, other, renamed));
    }

    #[tokio::test]
    async fn new_makes_the_clients_layer() {
        use tower::ServiceExt;

        let (rx, spy) = crate::sink::testing::spy();
        let statsd = Statsd::builder()
            .prefix("p")
            .server(crate::sink::Server::Etsy)
            .naming(NamingMode::Tagged)
            .tag("env", "prod")
            .status_classes(true)
            .flush_interval(Duration::from_secs(3600))
            .build_with(spy)
            .unwrap();
        let layer = super::StatsdLayer::new(&statsd);
        // The client's prefix, naming, tags and status classes, as
        // `statsd.layer()` has them.
        assert_eq!(format!("{layer:?}"), format!("{:?}", statsd.layer()));
        let app: Router = Router::new()
            .route("/", get(|| async { "hello" }))
            .layer(layer);
        let response = app
            .oneshot(http::Request::new(axum::body::Body::empty()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        drop(response);
        statsd.flush().unwrap();
        let lines = rx.lines();
        assert!(
            lines
                .iter()
                .any(|l| l == "p.http.requests:1|c|#route:root,method:GET,status:2xx,env:prod"),
            "{lines:?}"
        );
    }
}
