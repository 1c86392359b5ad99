//! The layer's requests, aggregated per route before any name is formatted.
//!
//! A request is three or four metrics, all named after its route. Looking
//! each of them up by name would cost more than the request itself, so the
//! window keeps one slot per route (found by the address of the route's
//! shared [`RouteNames`]) and, inside it, one cell per (method, status).
//! Names are written only when the window is drained.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::StatusCode;
use rustc_hash::FxBuildHasher;

use super::packet::PacketWriter;
use super::{Metric, Value};
use crate::naming::{NamingMode, RouteNames};
use crate::record::RequestRecord;
use crate::user::UserToken;

/// What one route saw in the window.
#[derive(Debug)]
struct RouteWindow {
    names: Arc<RouteNames>,
    cells: Vec<Cell>,
    members: HashSet<UserToken, FxBuildHasher>,
}

/// Requests of one route with the same method and status.
#[derive(Debug)]
struct Cell {
    method: &'static str,
    status: Option<StatusCode>,
    count: u64,
    timers: Vec<f64>,
}

/// The requests of one flush window.
#[derive(Debug, Default)]
pub(crate) struct RequestWindow {
    /// Keyed by the address of the route's `RouteNames`, kept alive by the slot.
    routes: HashMap<usize, RouteWindow, FxBuildHasher>,
    values: usize,
}

impl RequestWindow {
    /// Folds one finished request into the window.
    pub(crate) fn add(&mut self, record: RequestRecord) {
        let millis = record.millis();
        let route = self
            .routes
            .entry(Arc::as_ptr(&record.route) as usize)
            .or_insert_with(|| RouteWindow {
                names: record.route.clone(),
                cells: Vec::new(),
                members: HashSet::default(),
            });
        let index = match route
            .cells
            .iter()
            .position(|c| c.status == record.status && c.method == record.method)
        {
            Some(index) => index,
            None => {
                route.cells.push(Cell {
                    method: record.method,
                    status: record.status,
                    count: 0,
                    timers: Vec::new(),
                });
                self.values += 1;
                route.cells.len() - 1
            }
        };
        let cell = &mut route.cells[index];
        cell.count += 1;
        cell.timers.push(millis);
        self.values += 1;
        if let (Some(status), Some(member)) = (record.status, record.user) {
            // A rejected request (`/user?id=abc` → 400) is not a user visit.
            if status.as_u16() < 400
                && route.names.user_set.is_some()
                && route.members.insert(member)
            {
                self.values += 1;
            }
        }
    }

    /// Values held: one per timer value, per distinct member, per cell.
    pub(crate) fn len(&self) -> usize {
        self.values
    }

    /// Writes the window to `out` and starts a new one.
    pub(crate) fn drain(&mut self, out: &mut PacketWriter) {
        for (_, route) in self.routes.drain() {
            match route.names.mode {
                NamingMode::Hierarchical => drain_hierarchical(&route, out),
                NamingMode::Tagged => drain_tagged(&route, out),
            }
            if let Some(set) = &route.names.user_set {
                out.push_packed(
                    set,
                    "",
                    route.members.iter().map(|m| Value::Set(m.as_str())),
                );
            }
        }
        self.values = 0;
    }
}

fn count(value: u64) -> Value<'static> {
    Value::Count {
        value: value as f64,
        rate: 1.0,
    }
}

fn timers(cells: &[Cell]) -> impl Iterator<Item = Value<'static>> + '_ {
    cells
        .iter()
        .flat_map(|c| c.timers.iter().map(|&ms| Value::Timer { ms, rate: 1.0 }))
}

fn drain_hierarchical(route: &RouteWindow, out: &mut PacketWriter) {
    let names = &route.names;
    let called: u64 = route.cells.iter().map(|c| c.count).sum();
    out.push_metric(&Metric {
        name: &names.called,
        tags: "",
        value: count(called),
    });
    let mut statuses: Vec<(StatusCode, u64)> = Vec::new();
    for cell in &route.cells {
        let Some(status) = cell.status else { continue };
        match statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += cell.count,
            None => statuses.push((status, cell.count)),
        }
    }
    let mut name = String::new();
    for (status, n) in statuses {
        name.clear();
        name.push_str(&names.status_prefix);
        name.push_str(status.as_str());
        out.push_metric(&Metric {
            name: &name,
            tags: "",
            value: count(n),
        });
    }
    out.push_packed(&names.timer, "", timers(&route.cells));
}

fn drain_tagged(route: &RouteWindow, out: &mut PacketWriter) {
    let names = &route.names;
    let mut tags = String::new();
    for cell in &route.cells {
        tags.clear();
        tags.push_str("route:");
        tags.push_str(&names.route);
        tags.push_str(",method:");
        tags.push_str(cell.method);
        tags.push_str(",status:");
        tags.push_str(cell.status.as_ref().map_or("error", StatusCode::as_str));
        out.push_metric(&Metric {
            name: &names.called,
            tags: &tags,
            value: count(cell.count),
        });
        out.push_packed(&names.timer, &tags, timers(std::slice::from_ref(cell)));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::packet::PacketStats;
    use super::super::testing::{lines, spy};
    use super::*;
    use crate::naming::Naming;
    use crate::UserKey;

    fn record(
        naming: &Naming,
        template: &str,
        method: &'static str,
        status: u16,
        user: &str,
    ) -> RequestRecord {
        let parts = http::Request::get(format!("/?id={user}"))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        RequestRecord {
            route: naming.route(Some(template)),
            method,
            status: Some(StatusCode::from_u16(status).unwrap()),
            elapsed: Duration::from_micros(1500),
            user: UserKey::query("id").token(&parts),
        }
    }

    /// The lines a window drains to, sorted.
    fn drained(window: &mut RequestWindow) -> Vec<String> {
        let (rx, spy) = spy();
        let mut out = PacketWriter::new(Box::new(spy), 512, Arc::new(PacketStats::default()));
        window.drain(&mut out);
        out.flush();
        let mut lines = lines(&rx.take());
        lines.sort();
        lines
    }

    #[test]
    fn hierarchical_window() {
        let naming = Naming::new("p", NamingMode::Hierarchical, &[], Some("user"));
        let mut window = RequestWindow::default();
        window.add(record(&naming, "/", "GET", 200, "1"));
        window.add(record(&naming, "/", "GET", 200, "1"));
        window.add(record(&naming, "/", "POST", 200, "2"));
        window.add(record(&naming, "/", "GET", 404, "3"));
        window.add(record(&naming, "/user", "GET", 400, "4"));
        let mut lines = drained(&mut window);
        let members = lines
            .iter()
            .position(|l| l.starts_with("p.user:") && l.ends_with("|s"))
            .unwrap();
        let members = lines.remove(members);
        let mut members: Vec<&str> = members["p.user:".len()..].split(':').collect();
        members.sort();
        assert_eq!(
            members,
            ["1|s", "2|s"],
            "visits below 400 only, de-duplicated"
        );
        assert_eq!(
            lines,
            [
                "p.root.called:4|c",
                "p.root.status.200:3|c",
                "p.root.status.404:1|c",
                "p.root:1.5|ms:1.5|ms:1.5|ms:1.5|ms",
                "p.user.called:1|c",
                "p.user.status.400:1|c",
                "p.user:1.5|ms",
            ]
        );
        assert_eq!(window.len(), 0);
        assert!(
            drained(&mut window).is_empty(),
            "a drained window starts empty"
        );
    }

    #[test]
    fn failed_requests_have_no_status_and_are_no_visits() {
        let naming = Naming::new("p", NamingMode::Hierarchical, &[], Some("user"));
        let mut window = RequestWindow::default();
        let mut failed = record(&naming, "/", "GET", 200, "1");
        failed.status = None;
        window.add(failed);
        assert_eq!(drained(&mut window), ["p.root.called:1|c", "p.root:1.5|ms"]);
    }

    #[test]
    fn tagged_window() {
        let naming = Naming::new("p", NamingMode::Tagged, &[], None);
        let mut window = RequestWindow::default();
        window.add(record(&naming, "/", "GET", 200, "1"));
        window.add(record(&naming, "/", "GET", 200, "1"));
        window.add(record(&naming, "/", "DELETE", 405, "1"));
        assert_eq!(
            drained(&mut window),
            [
                "p.http.request:1.5|ms:1.5|ms|#route:root,method:GET,status:200",
                "p.http.request:1.5|ms|#route:root,method:DELETE,status:405",
                "p.http.request:1|c|#route:root,method:DELETE,status:405",
                "p.http.request:2|c|#route:root,method:GET,status:200",
            ]
        );
    }
}
