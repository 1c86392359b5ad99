//! What one finished request reports, and its expansion into metrics.
//!
//! The request path only fills a [`RequestRecord`] (no formatting, no
//! allocation). On the worker, an aggregating sink folds it into its
//! per-route window (`sink/requests.rs`); with aggregation off, it is
//! expanded into one metric per line with [`RequestRecord::for_each_metric`].

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::naming::{NamingMode, RouteNames};
use crate::sink::{Metric, Value};
use crate::user::UserToken;

/// One request, from entering the layer to the end of its response body.
#[derive(Debug)]
pub(crate) struct RequestRecord {
    pub(crate) route: Arc<RouteNames>,
    pub(crate) mode: NamingMode,
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

    /// Calls `f` with every metric this request reports.
    pub(crate) fn for_each_metric(&self, f: &mut dyn FnMut(Metric<'_>)) {
        let once = Value::Count {
            value: 1.0,
            rate: 1.0,
        };
        let timer = Value::Timer {
            ms: self.millis(),
            rate: 1.0,
        };
        match self.mode {
            NamingMode::Hierarchical => {
                f(Metric {
                    name: &self.route.called,
                    tags: "",
                    value: once,
                });
                f(Metric {
                    name: &self.route.timer,
                    tags: "",
                    value: timer,
                });
                if let Some(status) = self.status {
                    let mut name = String::with_capacity(self.route.status_prefix.len() + 3);
                    name.push_str(&self.route.status_prefix);
                    name.push_str(status.as_str());
                    f(Metric {
                        name: &name,
                        tags: "",
                        value: once,
                    });
                }
            }
            NamingMode::Tagged => {
                let mut tags = String::with_capacity(self.route.route.len() + 32);
                let _ = write!(tags, "route:{},method:{}", self.route.route, self.method);
                match self.status {
                    Some(status) => {
                        let _ = write!(tags, ",status:{}", status.as_str());
                    }
                    None => tags.push_str(",status:error"),
                }
                f(Metric {
                    name: &self.route.called,
                    tags: &tags,
                    value: once,
                });
                f(Metric {
                    name: &self.route.timer,
                    tags: &tags,
                    value: timer,
                });
            }
        }
        // A rejected request (`/user?id=abc` → 400) is not a user visit.
        if let (Some(status), Some(member), Some(set)) =
            (self.status, &self.user, &self.route.user_set)
        {
            if status.as_u16() < 400 {
                f(Metric {
                    name: set,
                    tags: "",
                    value: Value::Set(member.as_str()),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::Naming;
    use crate::UserKey;

    fn collect(record: &RequestRecord) -> Vec<String> {
        let mut out = Vec::new();
        record.for_each_metric(&mut |m| out.push(format!("{} #{} {:?}", m.name, m.tags, m.value)));
        out
    }

    fn record(mode: NamingMode, status: Option<u16>, user: &str) -> RequestRecord {
        let naming = Naming::new("statstest", mode, &[], Some("user"));
        let parts = http::Request::get(format!("/user?id={user}"))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let token = UserKey::query("id").token(&parts).unwrap();
        RequestRecord {
            route: naming.route(Some("/user")),
            mode,
            method: "GET",
            status: status.map(|s| StatusCode::from_u16(s).unwrap()),
            elapsed: Duration::from_micros(300),
            user: Some(token),
        }
    }

    #[test]
    fn hierarchical_names_match_the_tutorial() {
        let lines = collect(&record(NamingMode::Hierarchical, Some(200), "123"));
        assert_eq!(
            lines,
            [
                "statstest.user.called # Count { value: 1.0, rate: 1.0 }",
                "statstest.user # Timer { ms: 0.3, rate: 1.0 }",
                "statstest.user.status.200 # Count { value: 1.0, rate: 1.0 }",
                "statstest.user # Set(\"123\")",
            ]
        );
    }

    #[test]
    fn rejected_or_failed_requests_are_not_user_visits() {
        for status in [Some(400), Some(422), Some(500), None] {
            let lines = collect(&record(NamingMode::Hierarchical, status, "123"));
            assert!(lines.iter().all(|l| !l.contains("Set(")), "{lines:?}");
        }
        let failed = collect(&record(NamingMode::Hierarchical, None, "1"));
        assert_eq!(failed.len(), 2, "called and timer, no status: {failed:?}");
    }

    #[test]
    fn tagged_names() {
        let lines = collect(&record(NamingMode::Tagged, Some(404), "1"));
        assert_eq!(
            lines[..2],
            [
                "statstest.http.request #route:user,method:GET,status:404 Count { value: 1.0, rate: 1.0 }",
                "statstest.http.request #route:user,method:GET,status:404 Timer { ms: 0.3, rate: 1.0 }",
            ]
        );
    }
}
