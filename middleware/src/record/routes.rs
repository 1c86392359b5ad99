//! Every route's [`RouteStats`], found by route template, built once per
//! template, and drained together by the sink's flusher.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use super::stats::{Merged, RouteStats};
use super::tags::RequestTags;
use crate::naming::Naming;
use crate::route::{Templates, DEFAULT_MAX_ROUTES, ROUTE_OVERFLOW};
use crate::sink::{Control, PacketWriter, Source};

/// The anchors of one service, one per shard (see `anchor.rs`), as the
/// routes keep them: only their reference counts are read here.
pub(crate) type Anchors = Box<[Arc<dyn Any + Send + Sync>]>;

/// Whether no service holds any of these anchors any more.
fn unused(anchors: &Anchors) -> bool {
    anchors.iter().all(|anchor| Arc::strong_count(anchor) == 1)
}

/// The routes of one layer. A [`Source`] of the sink: the flusher drains it
/// once per window, on `flush()` and at shutdown.
#[derive(Debug)]
pub(crate) struct Routes {
    naming: Naming,
    timer_cap: usize,
    control: Arc<Control>,
    /// The layer's request tags, given to every route's stats.
    request_tags: Option<Arc<RequestTags>>,
    unmatched: Arc<RouteStats>,
    /// Where the requests of templates past `max_routes` are recorded.
    overflow: Arc<RouteStats>,
    /// Whether the warning about the overflow has been logged.
    overflowed: AtomicBool,
    /// The templates recorded.
    templates: Templates,
    /// At most this many templates are in `by_template`.
    max_routes: usize,
    by_template: RwLock<HashMap<Box<str>, Arc<RouteStats>>>,
    /// The flusher's scratch, kept between windows.
    merged: Mutex<Merged>,
    /// The anchors of the services made by the layer, while any holds one,
    /// by the address of the service's state.
    services: Mutex<HashMap<usize, Anchors>>,
}

impl Routes {
    pub(crate) fn new(
        naming: Naming,
        timer_cap: usize,
        control: Arc<Control>,
        request_tags: Option<Arc<RequestTags>>,
    ) -> Self {
        let stats = |names| {
            Arc::new(RouteStats::new(
                names,
                timer_cap,
                control.clone(),
                request_tags.clone(),
            ))
        };
        let unmatched = stats(naming.names(None));
        let overflow = stats(naming.names_of_route(ROUTE_OVERFLOW));
        Routes {
            unmatched,
            overflow,
            overflowed: AtomicBool::new(false),
            templates: Templates::default(),
            max_routes: DEFAULT_MAX_ROUTES,
            naming,
            timer_cap,
            control,
            request_tags,
            by_template: RwLock::default(),
            merged: Mutex::default(),
            services: Mutex::default(),
        }
    }

    /// Records only the requests of these templates.
    pub(crate) fn with_templates(mut self, templates: Templates) -> Self {
        self.templates = templates;
        self
    }

    /// Keeps at most `max_routes` templates' names.
    pub(crate) fn with_max_routes(mut self, max_routes: usize) -> Self {
        self.max_routes = max_routes;
        self
    }

    /// The stats of `template`'s route (`None`: unmatched), or `None` if
    /// the layer does not record it.
    pub(crate) fn route(&self, template: Option<&str>) -> Option<Arc<RouteStats>> {
        self.templates.records(template).then(|| self.get(template))
    }

    /// Holds the anchors of a new service (its state at `key`) until no
    /// service holds any.
    pub(crate) fn keep(&self, key: usize, anchors: Anchors) {
        self.services().insert(key, anchors);
    }

    /// Takes out the anchors of the service at `key` if no service holds
    /// any, for the caller to drop once the lock is released. One lookup,
    /// however many services there are (axum makes a service per route and
    /// connection when the router is served without `with_state`).
    pub(crate) fn take_if_unused(&self, key: usize) -> Option<Anchors> {
        let mut services = self.services();
        if services.get(&key).is_some_and(unused) {
            services.remove(&key)
        } else {
            None
        }
    }

    /// Takes out every service's anchors that no service holds any more.
    pub(crate) fn take_unused(&self) -> Vec<Anchors> {
        let mut services = self.services();
        let unused: Vec<usize> = services
            .iter()
            .filter(|(_, anchors)| unused(anchors))
            .map(|(key, _)| *key)
            .collect();
        unused
            .iter()
            .filter_map(|key| services.remove(key))
            .collect()
    }

    pub(super) fn services(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Anchors>> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stats of the route matching `template`, or of the unmatched
    /// requests. Built on a template's first request; past `max_routes`
    /// templates, the overflow's.
    pub(crate) fn get(&self, template: Option<&str>) -> Arc<RouteStats> {
        let Some(template) = template else {
            return self.unmatched.clone();
        };
        // A poisoned lock only means another thread panicked mid-insert of a
        // complete value; the map is still consistent.
        let by_template = self.by_template.read().unwrap_or_else(|e| e.into_inner());
        if let Some(stats) = by_template.get(template) {
            return stats.clone();
        }
        // Past the cap nothing is built: a flood of new names costs a
        // lookup each, never a route's allocations.
        if self.full(&by_template) {
            drop(by_template);
            return self.overflow();
        }
        drop(by_template);
        let mut by_template = self.by_template.write().unwrap_or_else(|e| e.into_inner());
        // Another thread may have added it, or filled the map, meanwhile.
        if let Some(stats) = by_template.get(template) {
            return stats.clone();
        }
        if self.full(&by_template) {
            drop(by_template);
            return self.overflow();
        }
        // Built under the lock, once per route: a few names and a shard
        // per core, before the route's first request is recorded.
        let stats = Arc::new(RouteStats::new(
            self.naming.names(Some(template)),
            self.timer_cap,
            self.control.clone(),
            self.request_tags.clone(),
        ));
        by_template.insert(template.into(), stats.clone());
        stats
    }

    /// Whether `by_template` holds `max_routes` routes already.
    fn full(&self, by_template: &HashMap<Box<str>, Arc<RouteStats>>) -> bool {
        by_template.len() >= self.max_routes
    }

    /// The overflow's stats, with a warning the first time.
    fn overflow(&self) -> Arc<RouteStats> {
        if !self.overflowed.swap(true, Relaxed) {
            tracing::warn!(
                max_routes = self.max_routes,
                "more distinct route names than max_routes: the requests of new ones \
                 are recorded as {ROUTE_OVERFLOW}"
            );
        }
        self.overflow.clone()
    }

    fn all(&self) -> Vec<Arc<RouteStats>> {
        let by_template = self.by_template.read().unwrap_or_else(|e| e.into_inner());
        [&self.unmatched, &self.overflow]
            .into_iter()
            .chain(by_template.values())
            .cloned()
            .collect()
    }
}

impl Source for Routes {
    fn drain(&self, out: &mut PacketWriter) {
        let mut merged = self.merged.lock().unwrap_or_else(|e| e.into_inner());
        // The map's lock is not held while draining: a new route's first
        // request never waits for a flush.
        for stats in self.all() {
            stats.drain(out, &mut merged);
        }
    }

    fn retire(&self, out: &mut PacketWriter) {
        for stats in self.all() {
            stats.retire(out);
        }
    }

    fn drain_full(&self, out: &mut PacketWriter) {
        for stats in self.all() {
            stats.drain_full_sets(out);
        }
    }

    fn in_use(&self) -> bool {
        self.all().iter().any(|stats| stats.in_use())
    }

    fn release_unused(&self) {
        drop(self.take_unused());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::get;
    use axum::Router;
    use http::Request;
    use tower::ServiceExt;

    use crate::sink::testing::{lines, spy, Packets};
    use crate::{Statsd, UserKey};

    fn statsd() -> (Packets, Statsd) {
        let (rx, spy) = spy();
        let statsd = Statsd::builder()
            .prefix("p")
            .flush_interval(Duration::from_secs(3600))
            .build_with(spy)
            .unwrap();
        (rx, statsd)
    }

    async fn get_ok(app: &Router, uri: &str) {
        let request = Request::get(uri).body(axum::body::Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert!(response.status().is_success());
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_dropped_layer_is_drained_once_more_then_forgotten() {
        let (rx, statsd) = statsd();
        let app = Router::new()
            .route("/", get(|| async { "hi" }))
            .layer(statsd.layer());
        get_ok(&app, "/").await;
        assert_eq!(statsd.sink().sources(), 1);
        drop(app);
        statsd.flush().unwrap();
        let lines = lines(&rx.take());
        assert!(lines.contains(&"p.root.called:1|c".to_owned()), "{lines:?}");
        // The last window's peak, then the gauge back to 0 for good.
        let at = |line: &str| lines.iter().position(|l| l == line);
        let (peak, zero) = (at("p.root.in_flight:1|g"), at("p.root.in_flight:0|g"));
        assert!(peak.is_some() && zero > peak, "{lines:?}");
        assert_eq!(
            statsd.sink().sources(),
            0,
            "nobody records into it any more"
        );
    }

    #[tokio::test]
    async fn many_users_are_sent_early_not_dropped() {
        let (rx, statsd) = statsd();
        let app = Router::new()
            .route("/user", get(|| async { "hi" }))
            .layer(statsd.layer().user_key(UserKey::query("id"), "user"))
            .with_state(());
        for id in 0..super::super::stats::EARLY_FLUSH_MEMBERS * 2 {
            get_ok(&app, &format!("/user?id={id}")).await;
        }
        // No flush yet and an hour to the window's end: the full window left
        // by itself.
        let early = tokio::task::spawn_blocking(move || {
            let first = rx.wait(Duration::from_secs(5));
            (first, rx)
        })
        .await
        .unwrap();
        let (first, rx) = early;
        assert!(first.is_some(), "a full window is sent early");
        statsd.flush().unwrap();
        let mut packets = vec![first.unwrap()];
        packets.extend(rx.take());
        let lines = lines(&packets);
        // Only the sets left early: the counter covers the whole window.
        let called: Vec<&String> = lines.iter().filter(|l| l.contains(".called:")).collect();
        assert_eq!(
            called,
            [&format!(
                "p.user.called:{}|c",
                super::super::stats::EARLY_FLUSH_MEMBERS * 2
            )]
        );
        let mut members: Vec<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("p.user:"))
            .flat_map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
            // The route's timer has the set's name too (`p.user`).
            .filter(|field| field.ends_with("|s"))
            .collect();
        members.sort();
        members.dedup();
        assert_eq!(members.len(), super::super::stats::EARLY_FLUSH_MEMBERS * 2);
        assert_eq!(statsd.sink().dropped(), 0);
    }
}
