//! Which requests are recorded, and under which route name: route filters,
//! a naming closure for any tower service (with a gRPC built-in), and the
//! cap on the number of route names.
//!
//! A route is found by its *template*: axum's `MatchedPath`, or what a
//! [`RouteNamer`] returns for the request. Filters by template and the cap
//! are decided once per template and kept with the route
//! (`record/routes.rs`); a predicate and a namer run on every request.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use http::HeaderMap;

/// How many distinct route names one layer keeps by default (see
/// [`StatsdLayer::max_routes`](crate::StatsdLayer::max_routes)).
pub const DEFAULT_MAX_ROUTES: usize = 1000;

/// The route name of requests past the cap on route names:
/// `{prefix}.tower_statsd.route_overflow.called` counts them.
pub const ROUTE_OVERFLOW: &str = "tower_statsd.route_overflow";

/// Names a request's route where axum's `MatchedPath` is absent (a plain
/// tower or hyper service, tonic), or instead of it.
///
/// The closure returns a *template*, sanitised exactly like an axum one by
/// [`route_name`](crate::route_name): `/users/{id}` → `users._id`,
/// `/pkg.Service/Method` → `pkg_Service.Method`; `None` counts the request
/// under [`UNMATCHED`](crate::UNMATCHED). Each distinct template's names are
/// built once, on its first request, and kept; at most
/// [`max_routes`](crate::StatsdLayer::max_routes) of them.
///
/// Return templates, never raw paths with ids in them: every distinct
/// template is a route of its own (up to the cap).
///
/// ```
/// use std::borrow::Cow;
/// use tower_statsd::RouteNamer;
///
/// // `/api/v1/orders/17` → `orders`, anything else unmatched.
/// let namer = RouteNamer::new(|parts| {
///     let rest = parts.uri.path().strip_prefix("/api/v1/")?;
///     Some(Cow::Borrowed(rest.split('/').next().unwrap_or(rest)))
/// });
/// # let _ = namer;
/// ```
#[derive(Clone)]
pub struct RouteNamer {
    name: Arc<NameFn>,
    over_matched_path: bool,
}

type NameFn = dyn for<'a> Fn(&'a Parts) -> Option<Cow<'a, str>> + Send + Sync;

impl RouteNamer {
    /// Names a request with no `MatchedPath` by `name`.
    pub fn new<F>(name: F) -> Self
    where
        F: for<'a> Fn(&'a Parts) -> Option<Cow<'a, str>> + Send + Sync + 'static,
    {
        RouteNamer {
            name: Arc::new(name),
            over_matched_path: false,
        }
    }

    /// gRPC: the path `/pkg.Service/Method` is the template, so the route is
    /// `pkg_Service.Method` (dots inside a segment become `_`, the slash a
    /// level); any other path is unmatched. Used before axum's `MatchedPath`
    /// (tonic routes with axum, by service). [`StatsdLayer::grpc`](crate::StatsdLayer::grpc)
    /// also counts the gRPC status.
    pub fn grpc() -> Self {
        RouteNamer {
            over_matched_path: true,
            ..RouteNamer::new(|parts| grpc_method(parts.uri.path()).map(Cow::Borrowed))
        }
    }

    /// Uses this namer before axum's `MatchedPath`: the template is the
    /// namer's, and `MatchedPath`'s only where the namer returns `None`.
    pub fn over_matched_path(mut self) -> Self {
        self.over_matched_path = true;
        self
    }

    /// The template of the request: the namer's and `matched`, in the
    /// namer's order.
    pub(crate) fn template<'a>(
        &self,
        parts: &'a Parts,
        matched: Option<&'a str>,
    ) -> Option<Cow<'a, str>> {
        if self.over_matched_path {
            (self.name)(parts).or(matched.map(Cow::Borrowed))
        } else {
            matched.map(Cow::Borrowed).or_else(|| (self.name)(parts))
        }
    }
}

impl fmt::Debug for RouteNamer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteNamer")
            .field("over_matched_path", &self.over_matched_path)
            .finish_non_exhaustive()
    }
}

/// `path` if it is a gRPC method's, `/{service}/{method}`, both non-empty.
fn grpc_method(path: &str) -> Option<&str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some(path)
}

/// The predicate of [`StatsdLayer::filter`](crate::StatsdLayer::filter).
#[derive(Clone)]
pub(crate) struct Predicate(Arc<dyn Fn(&Parts) -> bool + Send + Sync>);

impl Predicate {
    pub(crate) fn new(f: impl Fn(&Parts) -> bool + Send + Sync + 'static) -> Self {
        Predicate(Arc::new(f))
    }
}

impl fmt::Debug for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Predicate")
    }
}

/// What every request asks of the layer's options, when any is set: the
/// service skips this whole step (one branch) when none is.
#[derive(Clone, Debug, Default)]
pub(crate) struct Select {
    pub(crate) predicate: Option<Predicate>,
    pub(crate) namer: Option<RouteNamer>,
}

impl Select {
    /// Whether the request is recorded at all, and its template.
    /// `Err(())`: not recorded.
    pub(crate) fn template<'a>(
        &self,
        parts: &'a Parts,
        matched: Option<&'a str>,
    ) -> Result<Option<Cow<'a, str>>, ()> {
        if let Some(predicate) = &self.predicate {
            if !(predicate.0)(parts) {
                return Err(());
            }
        }
        Ok(match &self.namer {
            Some(namer) => namer.template(parts, matched),
            None => matched.map(Cow::Borrowed),
        })
    }
}

/// Route filters by template, decided once per template.
#[derive(Clone, Debug, Default)]
pub(crate) struct Templates {
    excluded: HashSet<Box<str>>,
    /// `Some`: only these (and never an unmatched request).
    only: Option<HashSet<Box<str>>>,
}

impl Templates {
    pub(crate) fn exclude(&mut self, templates: impl IntoIterator<Item = String>) {
        self.excluded
            .extend(templates.into_iter().map(String::into_boxed_str));
    }

    pub(crate) fn only(&mut self, templates: impl IntoIterator<Item = String>) {
        self.only
            .get_or_insert_with(HashSet::new)
            .extend(templates.into_iter().map(String::into_boxed_str));
    }

    /// Whether requests of `template` (`None`: unmatched) are recorded.
    pub(crate) fn records(&self, template: Option<&str>) -> bool {
        match template {
            None => self.only.is_none(),
            Some(template) => {
                !self.excluded.contains(template)
                    && self
                        .only
                        .as_ref()
                        .is_none_or(|only| only.contains(template))
            }
        }
    }
}

/// The gRPC status in `headers` (`grpc-status`): a code of 0 to 16, and
/// anything else `2` (UNKNOWN), as gRPC clients read it.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<u8> {
    let value = headers.get("grpc-status")?.as_bytes();
    let code = match value {
        [d] if d.is_ascii_digit() => d - b'0',
        [b'1', d] if d.is_ascii_digit() && *d <= b'6' => 10 + (d - b'0'),
        _ => UNKNOWN,
    };
    Some(code)
}

/// gRPC's UNKNOWN.
const UNKNOWN: u8 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str) -> Parts {
        http::Request::get(path).body(()).unwrap().into_parts().0
    }

    #[test]
    fn grpc_paths_are_templates_and_others_unmatched() {
        let namer = RouteNamer::grpc();
        let name = |path: &str| {
            namer
                .template(&parts(path), Some("/matched"))
                .map(|t| t.into_owned())
        };
        assert_eq!(
            name("/grpc.health.v1.Health/Check").as_deref(),
            Some("/grpc.health.v1.Health/Check")
        );
        // Not a gRPC method: axum's template, if any.
        for path in ["/", "/x", "//Check", "/pkg.S/", "/a/b/c"] {
            assert_eq!(name(path).as_deref(), Some("/matched"), "{path}");
        }
        assert_eq!(namer.template(&parts("/x"), None), None);
    }

    #[test]
    fn a_namer_comes_after_matched_path_unless_told_otherwise() {
        let namer = RouteNamer::new(|_| Some(Cow::Borrowed("named")));
        let p = parts("/");
        assert_eq!(namer.template(&p, Some("/m")).as_deref(), Some("/m"));
        assert_eq!(namer.template(&p, None).as_deref(), Some("named"));
        let first = namer.over_matched_path();
        assert_eq!(first.template(&p, Some("/m")).as_deref(), Some("named"));
        let none = RouteNamer::new(|_| None).over_matched_path();
        assert_eq!(none.template(&p, Some("/m")).as_deref(), Some("/m"));
        assert_eq!(
            format!("{first:?}"),
            "RouteNamer { over_matched_path: true, .. }"
        );
    }

    #[test]
    fn templates_excluded_or_only_listed() {
        let mut t = Templates::default();
        assert!(t.records(Some("/health")) && t.records(None));
        t.exclude(["/health".to_owned()]);
        assert!(!t.records(Some("/health")));
        assert!(t.records(Some("/")) && t.records(None));
        t.only(["/".to_owned(), "/health".to_owned()]);
        assert!(t.records(Some("/")));
        assert!(!t.records(Some("/health")), "excluded wins");
        assert!(!t.records(Some("/other")) && !t.records(None));
    }

    #[test]
    fn select_runs_the_predicate_then_names() {
        let p = parts("/a");
        let all = Select::default();
        assert_eq!(all.template(&p, Some("/m")), Ok(Some(Cow::Borrowed("/m"))));
        assert_eq!(all.template(&p, None), Ok(None));
        let select = Select {
            predicate: Some(Predicate::new(|parts| parts.uri.path() != "/a")),
            namer: Some(RouteNamer::new(|_| Some(Cow::Borrowed("n")))),
        };
        assert_eq!(select.template(&p, None), Err(()));
        assert_eq!(
            select.template(&parts("/b"), None),
            Ok(Some(Cow::Borrowed("n")))
        );
        assert_eq!(format!("{:?}", select.predicate.unwrap()), "Predicate");
    }

    #[test]
    fn grpc_status_codes() {
        let status = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-status", value.parse().unwrap());
            grpc_status(&headers)
        };
        assert_eq!(grpc_status(&HeaderMap::new()), None);
        for code in 0..=16u8 {
            assert_eq!(status(code.to_string().leak()), Some(code));
        }
        for odd in [
            "17", "19", "20", "-1", "", "1a", "1/", "a", "00", "100", "5 ",
        ] {
            assert_eq!(status(odd), Some(UNKNOWN), "{odd:?}");
        }
    }
}
