//! Metric names: from a route template to the names a request reports under.
//!
//! Names come from the route *template* (axum's `MatchedPath`), never from the
//! raw URI, so a scanner hitting random paths cannot create new series. Each
//! template's names are built once, on its first request, and kept with the
//! route's statistics (`record/routes.rs`).

use std::collections::HashMap;
use std::sync::Arc;

/// The route name used for requests that matched no route template
/// (fallback, 404, `nest_service`).
pub const UNMATCHED: &str = "unmatched";

/// How metric names are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NamingMode {
    /// Graphite-style paths, the default and what the tutorial shows:
    /// `{prefix}.{route}.called`, `{prefix}.{route}`, `{prefix}.{route}.status.{code}`.
    #[default]
    Hierarchical,
    /// A counter `{prefix}.http.requests` and a timer
    /// `{prefix}.http.request.duration` (in ms), with DogStatsD tags
    /// `|#route:{route},method:{method},status:{code}` (for DogStatsD,
    /// Telegraf, statsd_exporter, statsd ≥ 0.9 with Graphite tags). Each
    /// metric type has a name of its own.
    Tagged,
}

/// The names one route reports under, built once per route template.
#[derive(Debug)]
pub(crate) struct RouteNames {
    /// The route's own name, `users._id.posts`: the `route` tag in tagged mode.
    pub(crate) route: Box<str>,
    /// Counter incremented on every request.
    pub(crate) called: Box<str>,
    /// Timer recording the request's duration.
    pub(crate) timer: Box<str>,
    /// `{prefix}.{route}.status.`; the status code is appended when emitting.
    /// Empty in tagged mode, where the status is a tag.
    pub(crate) status_prefix: Box<str>,
    /// Gauge of the requests entered and not yet ended.
    pub(crate) in_flight: Box<str>,
    /// Counter of the response body bytes sent.
    pub(crate) bytes_sent: Box<str>,
    /// The unique-user set, `{prefix}.{set}`, when the layer has a user key.
    pub(crate) user_set: Option<Arc<str>>,
    /// The per-response size distribution (DogStatsD `|d`), when the layer
    /// sends one.
    pub(crate) response_size: Option<Box<str>>,
    /// How these names are laid out.
    pub(crate) mode: NamingMode,
    /// Statuses counted by class (`2xx`) rather than by code.
    pub(crate) status_classes: bool,
    /// The constant tags after a request's own, `,env:prod,service:api`
    /// (empty without any, and in hierarchical mode).
    pub(crate) constant_tags: Arc<str>,
    /// The in-flight gauge's tags: `route:{route}` and the constant tags
    /// (empty in hierarchical mode).
    pub(crate) in_flight_tags: Box<str>,
}

impl RouteNames {
    fn new(prefix: &str, route: &str, mode: NamingMode, user_set: Option<Arc<str>>) -> Self {
        match mode {
            NamingMode::Hierarchical => {
                let base = join(prefix, route);
                RouteNames {
                    route: route.into(),
                    called: format!("{base}.called").into(),
                    in_flight: format!("{base}.in_flight").into(),
                    bytes_sent: format!("{base}.bytes_sent").into(),
                    status_prefix: format!("{base}.status.").into(),
                    timer: base.into(),
                    user_set,
                    response_size: None,
                    mode,
                    status_classes: false,
                    constant_tags: "".into(),
                    in_flight_tags: "".into(),
                }
            }
            // DogStatsD and Prometheus conventions: a counter in the plural
            // (`http.requests`, like `http_requests_total`), the timer named
            // for what it measures (`http.request.duration`, like
            // `http_request_duration_seconds`, in ms here), and never one
            // name for two types.
            NamingMode::Tagged => RouteNames {
                route: route.into(),
                called: join(prefix, "http.requests").into(),
                in_flight: join(prefix, "http.in_flight").into(),
                bytes_sent: join(prefix, "http.bytes_sent").into(),
                timer: join(prefix, "http.request.duration").into(),
                status_prefix: "".into(),
                user_set,
                response_size: None,
                mode,
                status_classes: false,
                constant_tags: "".into(),
                in_flight_tags: "".into(),
            },
        }
    }
}

/// Turns route templates into [`RouteNames`].
#[derive(Debug)]
pub(crate) struct Naming {
    prefix: Box<str>,
    mode: NamingMode,
    overrides: HashMap<Box<str>, Box<str>>,
    user_set: Option<Arc<str>>,
    /// Whether routes have a response size distribution.
    sizes: bool,
    /// Whether statuses are counted by class.
    status_classes: bool,
    /// `,env:prod,service:api`, or empty.
    constant_tags: Arc<str>,
}

impl Naming {
    /// Gives every route a response size distribution:
    /// `{prefix}.{route}.response_size`, or `{prefix}.http.response.size`
    /// with tags.
    pub(crate) fn with_response_sizes(mut self, sizes: bool) -> Self {
        self.sizes = sizes;
        self
    }

    /// Counts statuses by class: `status.2xx`, or the tag `status:2xx`.
    pub(crate) fn with_status_classes(mut self, classes: bool) -> Self {
        self.status_classes = classes;
        self
    }

    /// Puts `tags` (`env:prod,service:api`, checked by the client's
    /// builder) on every tagged metric of every route, after the request's
    /// own; hierarchical names do not change.
    pub(crate) fn with_constant_tags(mut self, tags: &str) -> Self {
        if !tags.is_empty() {
            self.constant_tags = format!(",{tags}").into();
        }
        self
    }

    /// The constant tags, `,env:prod`, or empty.
    pub(crate) fn constant_tags(&self) -> &Arc<str> {
        &self.constant_tags
    }

    /// `user_set` is the unique-user set's name without the prefix, when the
    /// layer records users.
    pub(crate) fn new(
        prefix: &str,
        mode: NamingMode,
        overrides: &[(String, String)],
        user_set: Option<&str>,
    ) -> Self {
        let prefix: Box<str> = sanitize_dotted(prefix).into();
        // A set name that sanitizes to nothing falls back to the tutorial's `user`.
        let user_set: Option<Arc<str>> = user_set.map(|set| match sanitize_dotted(set) {
            set if set.is_empty() => join(&prefix, "user").into(),
            set => join(&prefix, &set).into(),
        });
        Naming {
            user_set,
            overrides: overrides
                .iter()
                .map(|(template, name)| {
                    let name = sanitize_dotted(name);
                    let name = if name.is_empty() {
                        route_name(template)
                    } else {
                        name
                    };
                    (template.as_str().into(), name.into())
                })
                .collect(),
            prefix,
            mode,
            sizes: false,
            status_classes: false,
            constant_tags: "".into(),
        }
    }

    /// The names for a request that matched `template`, or [`UNMATCHED`]'s.
    pub(crate) fn names(&self, template: Option<&str>) -> RouteNames {
        let route = match template {
            None => UNMATCHED.to_owned(),
            Some(template) => match self.overrides.get(template) {
                Some(name) => name.to_string(),
                None => route_name(template),
            },
        };
        self.names_of_route(&route)
    }

    /// The names of the route named `route`, as it is (no template).
    pub(crate) fn names_of_route(&self, route: &str) -> RouteNames {
        let mut names = RouteNames::new(&self.prefix, route, self.mode, self.user_set.clone());
        names.status_classes = self.status_classes;
        if self.mode == NamingMode::Tagged {
            names.in_flight_tags = format!("route:{route}{}", self.constant_tags).into();
            names.constant_tags = self.constant_tags.clone();
        }
        if self.sizes {
            names.response_size = Some(match self.mode {
                NamingMode::Hierarchical => format!("{}.response_size", names.timer).into(),
                NamingMode::Tagged => join(&self.prefix, "http.response.size").into(),
            });
        }
        names
    }
}

/// The route name for an axum route template.
///
/// `/` → `root`, `/user` → `user`, `/users/{id}/posts` → `users._id.posts`,
/// `/{*rest}` → `_rest`; any character outside `[A-Za-z0-9_-]` inside a
/// segment becomes `_`.
///
/// ```
/// use tower_statsd::route_name;
///
/// assert_eq!(route_name("/"), "root");
/// assert_eq!(route_name("/users/{id}/posts"), "users._id.posts");
/// assert_eq!(route_name("/files/{*path}"), "files._path");
/// assert_eq!(route_name("/v1.0/ping"), "v1_0.ping");
/// ```
pub fn route_name(template: &str) -> String {
    let mut out = String::with_capacity(template.len() + 1);
    for segment in template.split('/').filter(|s| !s.is_empty()) {
        if !out.is_empty() {
            out.push('.');
        }
        let param = segment
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .map(|s| s.trim_start_matches('*'));
        match param {
            Some(name) => {
                out.push('_');
                push_sanitized(&mut out, name);
            }
            None => push_sanitized(&mut out, segment),
        }
    }
    if out.is_empty() {
        out.push_str("root");
    }
    out
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether `c` may be in a tag's key or value as it is: a name's
/// characters and the dot (`version:1.2.3`).
pub(crate) fn is_tag_char(c: char) -> bool {
    is_name_char(c) || c == '.'
}

fn push_sanitized(out: &mut String, segment: &str) {
    out.extend(
        segment
            .chars()
            .map(|c| if is_name_char(c) { c } else { '_' }),
    );
}

/// Sanitizes a dotted name (prefix, override, set name): each dot-separated
/// part is sanitized like a route segment; empty parts are dropped.
pub(crate) fn sanitize_dotted(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for part in name.split('.').filter(|s| !s.is_empty()) {
        if !out.is_empty() {
            out.push('.');
        }
        push_sanitized(&mut out, part);
    }
    out
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A response's status as the status counter counts it: the HTTP status,
/// or, for gRPC ([`StatsdLayer::grpc`](crate::StatsdLayer::grpc)), the
/// `grpc-status` code (0 to 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Http(http::StatusCode),
    Grpc(u8),
}

const GRPC_CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

impl Status {
    /// As it appears in a name or tag: `200`, or the gRPC code, `5`.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Status::Http(status) => status.as_str(),
            Status::Grpc(code) => GRPC_CODES[usize::from(*code)],
        }
    }

    /// Whether the request counts as a user's visit: below 400, or gRPC's OK.
    pub(crate) fn is_visit(&self) -> bool {
        match self {
            Status::Http(status) => status.as_u16() < 400,
            Status::Grpc(code) => *code == 0,
        }
    }
}

/// A request's method as it may appear in a tag: a standard method, or
/// `other`. A non-standard method never reaches a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MethodTag(u8);

const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "other",
];

impl MethodTag {
    pub(crate) fn of(method: &http::Method) -> Self {
        use http::Method;
        MethodTag(match *method {
            Method::GET => 0,
            Method::POST => 1,
            Method::PUT => 2,
            Method::DELETE => 3,
            Method::PATCH => 4,
            Method::HEAD => 5,
            Method::OPTIONS => 6,
            Method::CONNECT => 7,
            Method::TRACE => 8,
            _ => 9,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        METHODS[usize::from(self.0)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_standard_method_is_its_own_tag_and_the_rest_other() {
        for name in [
            "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
        ] {
            let method = http::Method::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(MethodTag::of(&method).as_str(), name);
        }
        for name in ["PROPFIND", "get", "X|EVIL"] {
            let method = http::Method::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(MethodTag::of(&method).as_str(), "other", "{name}");
        }
    }

    #[test]
    fn tutorial_routes() {
        assert_eq!(route_name("/"), "root");
        assert_eq!(route_name(""), "root");
        assert_eq!(route_name("/user"), "user");
        assert_eq!(route_name("/users/{id}/posts"), "users._id.posts");
        assert_eq!(route_name("/{*rest}"), "_rest");
        assert_eq!(route_name("/api/users/"), "api.users");
        assert_eq!(route_name("/a b/ü:x|y#z"), "a_b.__x_y_z");
    }

    #[test]
    fn names_per_mode() {
        let naming = Naming::new("statstest", NamingMode::Hierarchical, &[], Some("user"));
        let root = naming.names(Some("/"));
        assert_eq!(&*root.called, "statstest.root.called");
        assert_eq!(&*root.timer, "statstest.root");
        assert_eq!(&*root.status_prefix, "statstest.root.status.");
        assert_eq!(&*root.in_flight, "statstest.root.in_flight");
        assert_eq!(&*root.bytes_sent, "statstest.root.bytes_sent");
        assert_eq!(&*naming.names(None).called, "statstest.unmatched.called");
        assert_eq!(root.user_set.as_deref(), Some("statstest.user"));

        let tagged = Naming::new("", NamingMode::Tagged, &[], None);
        let users = tagged.names(Some("/users/{id}"));
        assert_eq!(&*users.called, "http.requests");
        assert_eq!(&*users.timer, "http.request.duration");
        assert_eq!(&*users.route, "users._id");
        assert_eq!(&*users.in_flight, "http.in_flight");
        assert_eq!(&*users.bytes_sent, "http.bytes_sent");
    }

    #[test]
    fn overrides_are_sanitized() {
        let overrides = [
            ("/users/{id}/posts".to_owned(), "posts.by|user".to_owned()),
            ("/x".to_owned(), "...".to_owned()),
        ];
        let naming = Naming::new("p..q", NamingMode::Hierarchical, &overrides, None);
        assert_eq!(
            &*naming.names(Some("/users/{id}/posts")).timer,
            "p.q.posts.by_user"
        );
        assert_eq!(&*naming.names(Some("/x")).timer, "p.q.x");
    }

    #[test]
    fn statuses_as_counted() {
        let http = |code| Status::Http(http::StatusCode::from_u16(code).unwrap());
        assert_eq!(http(200).as_str(), "200");
        assert!(http(399).is_visit() && !http(400).is_visit());
        for code in 0..=16u8 {
            assert_eq!(Status::Grpc(code).as_str(), code.to_string());
            assert_eq!(Status::Grpc(code).is_visit(), code == 0);
        }
    }

    #[test]
    fn methods() {
        assert_eq!(MethodTag::of(&http::Method::GET).as_str(), "GET");
        assert_eq!(MethodTag::of(&http::Method::TRACE).as_str(), "TRACE");
        let odd = http::Method::from_bytes(b"X-EVIL").unwrap();
        assert_eq!(MethodTag::of(&odd).as_str(), "other");
    }
}
