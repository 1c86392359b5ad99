//! One route's statistics for the current window, written in place by the
//! route's own requests.
//!
//! A request touches only its route's [`RouteStats`], and in it only the
//! shard of the thread it enters on: it holds that shard (an `Arc`, cloned
//! when it enters the layer and dropped when it ends: a relaxed add on that
//! core's own line, and the in-flight count is what those references add
//! up to), and at the end takes the shard's lock once, uncontended: a
//! counter bump (requests and bytes) in a short list, a timer value into a
//! bounded sample and, with a user key, one set insert. No channel, no
//! event, no allocation once the window's buffers have grown (the flusher
//! swaps a cleared spare in, so their capacity is reused), and no write to a
//! line another core writes unless the request moved to another core before
//! its end. Names are written only when the flusher drains the window.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::members::Members;
use super::shard::{shard_count, shard_of_this_thread};
use super::tags::{RequestTags, TagIds};
use crate::naming::{MethodTag, NamingMode, RouteNames, Status};
use crate::sink::{Control, Metric, PacketWriter, TimerSample, Value};
use crate::user::UserToken;

/// Distinct users a shard's window holds before it asks the flusher to
/// send it early; memory stays bounded and no member is dropped.
pub(super) const EARLY_FLUSH_MEMBERS: usize = 1_024;

/// Past this many members (the flusher far behind), further new members
/// of the window are dropped and counted rather than held.
const MAX_MEMBERS: usize = 64 * EARLY_FLUSH_MEMBERS;

/// What one request reports, by the time its response body has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) method: MethodTag,
    /// `None` when the inner service failed, or the future was dropped,
    /// before a response existed.
    pub(crate) status: Option<Status>,
    /// The request's own tags (tagged mode).
    pub(crate) tags: TagIds,
}

/// The timer series a request's time goes to: one per route in
/// hierarchical mode, one per (method, status) in tagged mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Series(Option<Key>);

/// Requests of one (method, status) in a window, and their body bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Count {
    requests: u64,
    bytes: u64,
}

/// One route's window in one shard.
#[derive(Debug, Default)]
struct Window {
    /// Per (method, status): a handful per route.
    counts: Vec<(Key, Count)>,
    /// One timer series per route (hierarchical) or per (method, status)
    /// (tagged). Emptied, not removed, by a drain: their buffers are reused.
    timers: Vec<(Series, TimerSample)>,
    /// Response sizes in bytes, per timer series, when the route sends
    /// their distribution.
    sizes: Vec<(Series, TimerSample)>,
    members: Members,
    /// Members refused because the window was far over its size.
    refused: u64,
}

impl Window {
    fn count(&mut self, key: Key, bytes: u64) {
        let one = Count { requests: 1, bytes };
        match self.counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, count)) => count.add(one),
            None => self.counts.push((key, one)),
        }
    }

    fn timer(&mut self, key: Series) -> &mut TimerSample {
        sample(&mut self.timers, key)
    }

    fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.members.is_empty() && self.refused == 0
    }
}

/// The sample of `key` in `samples`, added on its first value.
fn sample(samples: &mut Vec<(Series, TimerSample)>, key: Series) -> &mut TimerSample {
    let at = match samples.iter().position(|(k, _)| *k == key) {
        Some(at) => at,
        None => {
            samples.push((key, TimerSample::default()));
            samples.len() - 1
        }
    };
    &mut samples[at].1
}

impl Count {
    fn add(&mut self, other: Count) {
        self.requests += other.requests;
        self.bytes += other.bytes;
    }
}

/// One core's part of a route, held by every request in flight on it.
#[derive(Debug)]
pub(crate) struct Shard {
    window: Mutex<Window>,
    /// The flusher's swap buffer: a cleared window whose buffers have grown.
    /// One per shard, so that a window's buffers, allocated by this core's
    /// thread, stay with it (handed from shard to shard, two cores would
    /// write neighbouring heap lines); an early drain swaps only its set.
    spare: Mutex<Window>,
    /// What recording needs of the route, copied here so that a request
    /// reaches it through its shard alone.
    rules: Rules,
    /// The most requests in flight on this shard at once this window,
    /// written by the requests entering on this shard's core; the flusher
    /// starts each window from the number in flight then.
    peak: AtomicUsize,
}

/// A route's shard as a request holds it, from when it enters the layer to
/// when it is recorded. Its reference count lives on a cache line of its
/// own (the shard is aligned to 128 bytes, so `Arc`'s counts are alone in
/// the first 128), written by the requests entering on this core.
pub(crate) type ShardRef = Arc<CachePadded<Shard>>;

/// How a route records, the same in each of its shards.
#[derive(Debug, Clone)]
struct Rules {
    mode: NamingMode,
    user_set: bool,
    response_sizes: bool,
    status_classes: bool,
    timer_cap: usize,
    control: Arc<Control>,
}

impl Shard {
    /// Folds one finished request into the window: it entered with
    /// [`RouteStats::enter`], took `elapsed`, and its body sent `bytes`.
    pub(crate) fn record(
        &self,
        mut key: Key,
        elapsed: Duration,
        bytes: u64,
        user: Option<UserToken>,
    ) {
        let rules = &self.rules;
        if rules.status_classes {
            key.status = key.status.map(class_of);
        }
        let ms = elapsed.as_secs_f64() * 1000.0;
        let series = Series(match rules.mode {
            NamingMode::Hierarchical => None,
            NamingMode::Tagged => Some(key),
        });
        // A rejected request (`/user?id=abc` → 400) is not a user visit.
        let member = user.filter(|_| rules.user_set && key.status.is_some_and(|s| s.is_visit()));
        let mut window = lock(&self.window);
        window.count(key, bytes);
        window.timer(series).add(ms, rules.timer_cap);
        if rules.response_sizes {
            sample(&mut window.sizes, series).add(bytes as f64, rules.timer_cap);
        }
        if let Some(member) = member {
            let held = window.members.len();
            if held < MAX_MEMBERS {
                if window.members.insert(member.as_str()) && held + 1 == EARLY_FLUSH_MEMBERS {
                    drop(window);
                    rules.control.drain_early();
                }
            } else if !window.members.contains(member.as_str()) {
                window.refused += 1;
            }
        }
    }
}

/// The current window of one route, and the names it is written under.
#[derive(Debug)]
pub(crate) struct RouteStats {
    names: RouteNames,
    /// Each also held by the requests in flight on it: how many there are
    /// is each count minus this one.
    shards: Box<[ShardRef]>,
    /// The in-flight gauge last sent: a route that drained sends 0 once.
    in_flight_sent: AtomicUsize,
    control: Arc<Control>,
    /// The layer's request tags (tagged mode), written after the route's
    /// own tags when the window is drained.
    request_tags: Option<Arc<RequestTags>>,
}

impl RouteStats {
    pub(crate) fn new(
        names: RouteNames,
        timer_cap: usize,
        control: Arc<Control>,
        request_tags: Option<Arc<RequestTags>>,
    ) -> Self {
        let rules = Rules {
            mode: names.mode,
            user_set: names.user_set.is_some(),
            response_sizes: names.response_size.is_some(),
            status_classes: names.status_classes,
            timer_cap,
            control: control.clone(),
        };
        RouteStats {
            names,
            shards: (0..shard_count())
                .map(|_| {
                    Arc::new(CachePadded::new(Shard {
                        window: Mutex::default(),
                        spare: Mutex::default(),
                        rules: rules.clone(),
                        peak: AtomicUsize::new(0),
                    }))
                })
                .collect(),
            in_flight_sent: AtomicUsize::new(0),
            control,
            request_tags,
        }
    }

    /// A request entered the layer on this thread: it holds this thread's
    /// shard until [`Shard::record`], and counts as in flight meanwhile.
    /// The shard's peak goes up if this is the most in flight on it yet:
    /// a read of the count just written, on this core's own line, and a
    /// write only when the peak rises.
    pub(crate) fn enter(&self) -> ShardRef {
        let shard = self.shards[shard_of_this_thread()].clone();
        let now = Arc::strong_count(&shard) - 1;
        if now > shard.peak.load(Relaxed) {
            shard.peak.fetch_max(now, Relaxed);
        }
        shard
    }

    /// The most requests in flight this window: the sum of the shards'
    /// peaks, each restarted from its number in flight now. A request that
    /// entered on one shard holds it to its end, so the sum is never below
    /// the true peak; shards that peaked at different moments make it
    /// higher (equal when one core serves the route).
    fn peak_in_flight(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let now = Arc::strong_count(shard) - 1;
                shard.peak.swap(now, Relaxed).max(now)
            })
            .sum()
    }

    /// Requests that entered and are not recorded yet. The shards are read
    /// one after the other while requests come and go, so the sum can be
    /// one off for a moment; a request holds one shard from its start to
    /// its end, so it is never below zero.
    fn in_flight(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| Arc::strong_count(shard) - 1)
            .sum()
    }

    /// Whether a request is still in flight (and so will record).
    pub(crate) fn in_use(&self) -> bool {
        self.in_flight() > 0
    }

    /// Writes the sets of users that filled up (at least
    /// [`EARLY_FLUSH_MEMBERS`]) and starts them afresh; the rest of the
    /// window (counters, timer samples, smaller sets) waits for its end, so
    /// a flood of new users does not cut the window, and the timer sample,
    /// short. The flusher's answer to [`Control::drain_early`].
    pub(crate) fn drain_full_sets(&self, out: &mut PacketWriter) {
        let Some(set) = &self.names.user_set else {
            return;
        };
        for shard in self.shards.iter() {
            let mut spare = lock(&shard.spare);
            let mut window = lock(&shard.window);
            if window.members.len() < EARLY_FLUSH_MEMBERS {
                continue;
            }
            std::mem::swap(&mut window.members, &mut spare.members);
            drop(window);
            out.push_packed(set, "", spare.members.iter().map(Value::Set));
            spare.members.clear();
        }
    }

    /// Writes the window to `out` and starts a new one.
    pub(crate) fn drain(&self, out: &mut PacketWriter, merged: &mut Merged) {
        merged.clear();
        let in_flight = self.peak_in_flight();
        // The busy shards' windows, held until their timer values are
        // written straight from their samples: counts are merged (a few
        // per window), values are not copied (one per request).
        let mut busy = Vec::new();
        for shard in self.shards.iter() {
            let mut spare = lock(&shard.spare);
            let mut window = lock(&shard.window);
            // An idle shard keeps its buffers: only a busy one swaps, and
            // gets back the grown buffers of its own previous window.
            if window.is_empty() {
                continue;
            }
            std::mem::swap(&mut *window, &mut *spare);
            drop(window);
            if let Some(set) = &self.names.user_set {
                // Each shard's members as they are, without a union first: a
                // user seen on two cores is sent twice, and the daemon's set
                // counts it once.
                out.push_packed(set, "", spare.members.iter().map(Value::Set));
            }
            spare.members.clear();
            merged.add(&mut spare);
            busy.push(spare);
        }
        self.write_in_flight(out, in_flight);
        match self.names.mode {
            NamingMode::Hierarchical => self.write_hierarchical(out, merged, &mut busy),
            NamingMode::Tagged => self.write_tagged(out, merged, &mut busy),
        }
        if merged.refused > 0 {
            self.control.count_dropped(merged.refused);
        }
    }

    /// Sets the gauge back to 0 after the route's last drain, if it was
    /// sent above 0: nothing records into the route any more, and the
    /// daemon would otherwise keep the last window's peak.
    pub(crate) fn retire(&self, out: &mut PacketWriter) {
        self.write_in_flight(out, 0);
    }

    /// The in-flight gauge (the window's peak), every window while it is
    /// or was non-zero.
    fn write_in_flight(&self, out: &mut PacketWriter, in_flight: usize) {
        if in_flight == 0 && self.in_flight_sent.load(Relaxed) == 0 {
            return;
        }
        self.in_flight_sent.store(in_flight, Relaxed);
        out.push_metric(&Metric {
            name: &self.names.in_flight,
            tags: &self.names.in_flight_tags,
            value: Value::Gauge(in_flight as f64),
        });
    }

    fn write_hierarchical(
        &self,
        out: &mut PacketWriter,
        merged: &Merged,
        busy: &mut [Drained<'_>],
    ) {
        let names = &self.names;
        if merged.counts.is_empty() {
            return;
        }
        let mut total = Count::default();
        for (_, count) in &merged.counts {
            total.add(*count);
        }
        out.push_metric(&Metric {
            name: &names.called,
            tags: "",
            value: counter(total.requests),
        });
        if total.bytes > 0 {
            out.push_metric(&Metric {
                name: &names.bytes_sent,
                tags: "",
                value: counter(total.bytes),
            });
        }
        let mut statuses: Vec<(Status, u64)> = Vec::new();
        for &(key, count) in &merged.counts {
            let Some(status) = key.status else { continue };
            match statuses.iter_mut().find(|(s, _)| *s == status) {
                Some((_, total)) => *total += count.requests,
                None => statuses.push((status, count.requests)),
            }
        }
        let mut name = String::new();
        for (status, n) in statuses {
            name.clear();
            name.push_str(&names.status_prefix);
            name.push_str(status_text(&status, names.status_classes));
            out.push_metric(&Metric {
                name: &name,
                tags: "",
                value: counter(n),
            });
        }
        let series = Series(None);
        write_series(out, &names.timer, "", busy, timers, series, timer_value);
        if let Some(name) = &names.response_size {
            write_series(out, name, "", busy, sizes, series, size_value);
        }
    }

    fn write_tagged(&self, out: &mut PacketWriter, merged: &Merged, busy: &mut [Drained<'_>]) {
        let names = &self.names;
        let mut tags = String::new();
        for &(key, count) in &merged.counts {
            tags.clear();
            tags.push_str("route:");
            tags.push_str(&names.route);
            tags.push_str(",method:");
            tags.push_str(key.method.as_str());
            tags.push_str(",status:");
            tags.push_str(
                key.status
                    .as_ref()
                    .map_or("error", |status| status_text(status, names.status_classes)),
            );
            if let Some(request_tags) = &self.request_tags {
                request_tags.write(key.tags, &mut tags);
            }
            tags.push_str(&names.constant_tags);
            out.push_metric(&Metric {
                name: &names.called,
                tags: &tags,
                value: counter(count.requests),
            });
            if count.bytes > 0 {
                out.push_metric(&Metric {
                    name: &names.bytes_sent,
                    tags: &tags,
                    value: counter(count.bytes),
                });
            }
            let series = Series(Some(key));
            write_series(out, &names.timer, &tags, busy, timers, series, timer_value);
            if let Some(name) = &names.response_size {
                write_series(out, name, &tags, busy, sizes, series, size_value);
            }
        }
    }
}

/// A busy shard's window while its route is drained.
type Drained<'a> = MutexGuard<'a, Window>;

/// One route's counts read from all its shards; the flusher's scratch.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    counts: Vec<(Key, Count)>,
    refused: u64,
}

impl Merged {
    fn clear(&mut self) {
        self.counts.clear();
        self.refused = 0;
    }

    /// Adds a shard's counts in, leaving them cleared for reuse.
    fn add(&mut self, window: &mut Window) {
        for (key, count) in window.counts.drain(..) {
            match self.counts.iter_mut().find(|(k, _)| *k == key) {
                Some((_, total)) => total.add(count),
                None => self.counts.push((key, count)),
            }
        }
        self.refused += std::mem::take(&mut window.refused);
    }
}

/// Writes one series' values from every busy shard as one run, as a merged
/// window would hold them (one packed line where the dialect packs; each
/// value with the rate of its own shard's sample), without copying them
/// first; the samples are left empty for reuse.
fn write_series(
    out: &mut PacketWriter,
    name: &str,
    tags: &str,
    busy: &mut [Drained<'_>],
    samples: fn(&mut Window) -> &mut Vec<(Series, TimerSample)>,
    series: Series,
    as_value: fn(Value<'static>) -> Value<'static>,
) {
    let values = busy
        .iter_mut()
        .filter_map(|window| {
            samples(window)
                .iter_mut()
                .find(|(s, _)| *s == series)
                .map(|(_, sample)| sample)
        })
        .flat_map(TimerSample::drain)
        .map(as_value);
    out.push_packed(name, tags, values);
}

/// A window's timer samples.
fn timers(window: &mut Window) -> &mut Vec<(Series, TimerSample)> {
    &mut window.timers
}

/// A window's response-size samples.
fn sizes(window: &mut Window) -> &mut Vec<(Series, TimerSample)> {
    &mut window.sizes
}

/// A timer value as it is sent.
fn timer_value(value: Value<'static>) -> Value<'static> {
    value
}

/// A response size as it is sent: a distribution.
fn size_value(value: Value<'static>) -> Value<'static> {
    match value {
        Value::Timer { ms, rate } => Value::Distribution { value: ms, rate },
        other => other,
    }
}

/// The code that stands for `status`'s class, so that a window counts a
/// class once: 204 → 200.
fn class_of(status: Status) -> Status {
    match status {
        Status::Http(code) => {
            Status::Http(http::StatusCode::from_u16(code.as_u16() / 100 * 100).unwrap_or(code))
        }
        // gRPC codes have no classes: each is its own.
        grpc => grpc,
    }
}

/// A status as it is written: its code, or its class (`2xx`).
fn status_text(status: &Status, classes: bool) -> &str {
    const CLASSES: [&str; 10] = [
        "0xx", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "7xx", "8xx", "9xx",
    ];
    match status {
        Status::Http(code) if classes => CLASSES[usize::from(code.as_u16() / 100)],
        _ => status.as_str(),
    }
}

fn counter(value: u64) -> Value<'static> {
    Value::Count {
        value: value as f64,
        rate: 1.0,
    }
}

/// A poisoned lock only means a thread panicked while holding it; every
/// update leaves the window consistent, so the data is still good.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::head::Head;
    use crate::naming::Naming;
    use crate::sink::testing::{daemon, lines, pipe, spy, within_5s};
    use crate::sink::Protocol;
    use crate::UserKey;

    fn stats(mode: NamingMode, template: &str, cap: usize) -> RouteStats {
        let naming = Naming::new("p", mode, &[], Some("user"));
        RouteStats::new(naming.names(Some(template)), cap, Arc::default(), None)
    }

    fn user(id: &str) -> Option<UserToken> {
        let parts = http::Request::get(format!("/?id={id}"))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        UserKey::query("id").token(&Head::of_parts(&parts))
    }

    fn key(method: &'static str, status: u16) -> Key {
        Key {
            method: MethodTag::of(&method.parse().unwrap()),
            status: Some(Status::Http(http::StatusCode::from_u16(status).unwrap())),
            tags: TagIds::NONE,
        }
    }

    const MS_1_5: Duration = Duration::from_micros(1500);

    impl RouteStats {
        /// A request that enters and ends at once, on this thread.
        fn record(&self, key: Key, elapsed: Duration, bytes: u64, user: Option<UserToken>) {
            self.enter().record(key, elapsed, bytes, user);
        }
    }

    /// Runs `f` on two threads alive at once, each holding what `f` returns
    /// until both have run it; fails within 5 s rather than hanging if one
    /// panics (a mutant's shard index out of range, say).
    fn on_two_threads_at_once(route: &Arc<RouteStats>, f: fn(&RouteStats) -> Vec<ShardRef>) {
        let route = route.clone();
        within_5s(move || {
            let both = std::sync::Barrier::new(2);
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        both.wait();
                        let held = f(&route);
                        both.wait();
                        drop(held);
                    });
                }
            });
        });
    }

    /// The lines a route's window drains to, sorted.
    fn drained(stats: &RouteStats) -> Vec<String> {
        let (rx, spy) = spy();
        let (mut out, _) = pipe(spy, 512);
        // Etsy's packing: a timer's values on one line, easy to compare.
        out.protocol(Protocol::Etsy);
        stats.drain(&mut out, &mut Merged::default());
        out.flush();
        let mut lines = lines(&rx.take());
        lines.sort();
        lines
    }

    #[test]
    fn hierarchical_window() {
        let root = stats(NamingMode::Hierarchical, "/", 0);
        root.record(key("GET", 200), MS_1_5, 10, user("1"));
        root.record(key("GET", 200), MS_1_5, 20, user("1"));
        root.record(key("POST", 200), MS_1_5, 0, user("2"));
        root.record(key("GET", 404), MS_1_5, 5, user("3"));
        let mut lines = drained(&root);
        let members = lines.iter().position(|l| l.starts_with("p.user:")).unwrap();
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
                "p.root.bytes_sent:35|c",
                "p.root.called:4|c",
                // One at a time: the window's peak.
                "p.root.in_flight:1|g",
                "p.root.status.200:3|c",
                "p.root.status.404:1|c",
                "p.root:1.5|ms:1.5|ms:1.5|ms:1.5|ms",
            ]
        );
        assert_eq!(
            drained(&root),
            ["p.root.in_flight:0|g"],
            "a drained window starts empty, the gauge at 0 once"
        );
        assert!(drained(&root).is_empty());
    }

    #[test]
    fn failed_requests_have_no_status_and_are_no_visits() {
        let root = stats(NamingMode::Hierarchical, "/", 0);
        let failed = Key {
            method: MethodTag::of(&http::Method::GET),
            status: None,
            tags: TagIds::NONE,
        };
        root.record(failed, MS_1_5, 0, user("1"));
        assert_eq!(
            drained(&root),
            ["p.root.called:1|c", "p.root.in_flight:1|g", "p.root:1.5|ms"]
        );
    }

    #[test]
    fn tagged_window() {
        let root = stats(NamingMode::Tagged, "/", 0);
        root.record(key("GET", 200), MS_1_5, 7, None);
        root.record(key("GET", 200), MS_1_5, 7, None);
        root.record(key("DELETE", 405), MS_1_5, 0, None);
        assert_eq!(
            drained(&root),
            [
                "p.http.bytes_sent:14|c|#route:root,method:GET,status:200",
                "p.http.in_flight:1|g|#route:root",
                "p.http.request.duration:1.5|ms:1.5|ms|#route:root,method:GET,status:200",
                "p.http.request.duration:1.5|ms|#route:root,method:DELETE,status:405",
                "p.http.requests:1|c|#route:root,method:DELETE,status:405",
                "p.http.requests:2|c|#route:root,method:GET,status:200",
            ]
        );
    }

    #[test]
    fn status_classes_count_each_class_once() {
        let classes = |mode| {
            let naming = Naming::new("p", mode, &[], None).with_status_classes(true);
            RouteStats::new(naming.names(Some("/")), 0, Arc::default(), None)
        };
        let root = classes(NamingMode::Hierarchical);
        for status in [200, 204, 299, 301, 404, 418, 500, 503, 101] {
            root.record(key("GET", status), MS_1_5, 0, None);
        }
        let lines = drained(&root);
        let statuses: Vec<&String> = lines.iter().filter(|l| l.contains(".status.")).collect();
        assert_eq!(
            statuses,
            [
                "p.root.status.1xx:1|c",
                "p.root.status.2xx:3|c",
                "p.root.status.3xx:1|c",
                "p.root.status.4xx:2|c",
                "p.root.status.5xx:2|c",
            ]
        );

        let tagged = classes(NamingMode::Tagged);
        tagged.record(key("GET", 200), MS_1_5, 0, None);
        tagged.record(key("GET", 201), MS_1_5, 0, None);
        tagged.record(key("GET", 502), MS_1_5, 0, None);
        assert_eq!(
            drained(&tagged),
            [
                "p.http.in_flight:1|g|#route:root",
                "p.http.request.duration:1.5|ms:1.5|ms|#route:root,method:GET,status:2xx",
                "p.http.request.duration:1.5|ms|#route:root,method:GET,status:5xx",
                "p.http.requests:1|c|#route:root,method:GET,status:5xx",
                "p.http.requests:2|c|#route:root,method:GET,status:2xx",
            ]
        );
    }

    #[test]
    fn an_early_drain_takes_the_full_set_alone() {
        let root = stats(NamingMode::Hierarchical, "/", 0);
        let visit = |id: &str| root.record(key("GET", 200), MS_1_5, 1, user(id));
        for id in 0..EARLY_FLUSH_MEMBERS - 1 {
            visit(&id.to_string());
        }
        let full_sets = |stats: &RouteStats| {
            let (rx, spy) = spy();
            let (mut out, _) = pipe(spy, 512);
            stats.drain_full_sets(&mut out);
            out.flush();
            lines(&rx.take())
        };
        assert_eq!(full_sets(&root), Vec::<String>::new(), "not full yet");
        visit("last");
        let early = full_sets(&root);
        assert_eq!(early.len(), EARLY_FLUSH_MEMBERS, "{early:?}");
        assert!(early
            .iter()
            .all(|l| l.starts_with("p.user:") && l.ends_with("|s")));
        assert!(early.contains(&"p.user:last|s".to_owned()));
        // The window goes on: one more user, and the end of the window has
        // every request's counter and timer, and only the new member.
        visit("new");
        let window = drained(&root);
        assert!(window.contains(&format!("p.root.called:{}|c", EARLY_FLUSH_MEMBERS + 1)));
        assert!(window.contains(&"p.user:new|s".to_owned()), "{window:?}");
        let timer_values: usize = window
            .iter()
            .filter(|l| l.starts_with("p.root:"))
            .map(|l| l.matches("|ms").count())
            .sum();
        assert_eq!(timer_values, EARLY_FLUSH_MEMBERS + 1);
    }

    #[test]
    fn in_flight_is_sent_while_it_is_or_was_above_zero() {
        let root = stats(NamingMode::Hierarchical, "/", 0);
        assert!(drained(&root).is_empty(), "an idle route sends nothing");
        let first = root.enter();
        let second = root.enter();
        assert_eq!(drained(&root), ["p.root.in_flight:2|g"]);
        assert_eq!(drained(&root), ["p.root.in_flight:2|g"], "every window");
        first.record(key("GET", 200), MS_1_5, 0, None);
        drop(first);
        assert!(
            drained(&root).contains(&"p.root.in_flight:2|g".to_owned()),
            "two at the window's start"
        );
        assert_eq!(drained(&root), ["p.root.in_flight:1|g"], "then one");
        // Ends on another thread: it leaves the shard it entered on.
        std::thread::scope(|scope| {
            scope.spawn(move || {
                second.record(key("GET", 200), MS_1_5, 0, None);
                drop(second);
            });
        });
        assert!(drained(&root).contains(&"p.root.in_flight:1|g".to_owned()));
        assert_eq!(drained(&root), ["p.root.in_flight:0|g"], "once 0");
        assert!(drained(&root).is_empty(), "then nothing");
        assert!(!root.in_use());

        let tagged = stats(NamingMode::Tagged, "/users/{id}", 0);
        let _in_flight = tagged.enter();
        assert!(tagged.in_use());
        assert_eq!(drained(&tagged), ["p.http.in_flight:1|g|#route:users._id"]);
    }

    #[test]
    fn in_flight_is_the_windows_peak_even_when_all_ended_inside_it() {
        let root = stats(NamingMode::Hierarchical, "/", 0);
        let requests: Vec<ShardRef> = (0..3).map(|_| root.enter()).collect();
        for request in requests {
            request.record(key("GET", 200), MS_1_5, 0, None);
        }
        let lines = drained(&root);
        assert!(
            lines.contains(&"p.root.in_flight:3|g".to_owned()),
            "three at once, none at the end: {lines:?}"
        );
        // The next window starts from the number in flight then (none).
        let one = root.enter();
        assert_eq!(drained(&root), ["p.root.in_flight:1|g"]);
        drop(one);
        // Two threads, each holding two at once: on one shard or on two
        // (then each shard's peak is 2), the window's peak is 4.
        let root = Arc::new(root);
        on_two_threads_at_once(&root, |route| vec![route.enter(), route.enter()]);
        assert_eq!(drained(&root), ["p.root.in_flight:4|g"]);
    }

    #[test]
    fn threads_on_other_shards_add_up_exactly() {
        let root = Arc::new(stats(NamingMode::Hierarchical, "/", 0));
        std::thread::scope(|scope| {
            for t in 0..8 {
                let root = &root;
                scope.spawn(move || {
                    for i in 0..1_000 {
                        let id = format!("{}", (t * 1_000 + i) % 1_500);
                        root.record(key("GET", 200), MS_1_5, 0, user(&id));
                    }
                });
            }
        });
        let lines = drained(&root);
        assert!(
            lines.contains(&"p.root.called:8000|c".to_owned()),
            "{lines:?}"
        );
        assert!(lines.contains(&"p.root.status.200:8000|c".to_owned()));
        let timer_values: usize = lines
            .iter()
            .filter(|l| l.starts_with("p.root:"))
            .map(|l| l.matches("|ms").count())
            .sum();
        assert_eq!(timer_values, 8_000);
        let mut members: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with("p.user:"))
            .flat_map(|l| l["p.user:".len()..].split(':'))
            .collect();
        members.sort();
        members.dedup();
        assert_eq!(members.len(), 1_500, "each member once, across shards");
    }

    #[test]
    fn a_series_busy_on_two_shards_is_one_packed_line() {
        // Both threads alive at once: on two shards wherever there are two.
        let root = Arc::new(stats(NamingMode::Hierarchical, "/", 0));
        on_two_threads_at_once(&root, |route| {
            route.record(key("GET", 200), MS_1_5, 0, None);
            Vec::new()
        });
        let lines = drained(&root);
        let timer: Vec<&String> = lines.iter().filter(|l| l.starts_with("p.root:")).collect();
        // As one merged window: a server that cannot read packed values
        // (collectd) misreads all of them alike, never some.
        assert_eq!(timer, ["p.root:1.5|ms:1.5|ms"], "{lines:?}");
    }

    #[test]
    fn tagged_series_on_other_shards_each_send_every_value_once() {
        let route = stats(NamingMode::Tagged, "/", 0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        route.record(key("GET", 200), MS_1_5, 0, None);
                        route.record(key("POST", 500), MS_1_5, 0, None);
                    }
                });
            }
        });
        let lines = drained(&route);
        let values = |tags: &str| -> usize {
            lines
                .iter()
                .filter(|l| l.starts_with("p.http.request.duration:") && l.ends_with(tags))
                .map(|l| l.matches("|ms").count())
                .sum()
        };
        assert_eq!(
            values("|#route:root,method:GET,status:200"),
            400,
            "{lines:?}"
        );
        assert_eq!(
            values("|#route:root,method:POST,status:500"),
            400,
            "{lines:?}"
        );
        assert!(
            lines.contains(&"p.http.requests:400|c|#route:root,method:GET,status:200".to_owned())
        );
        assert!(
            drained(&route).iter().all(|l| l.contains("in_flight")),
            "every shard's samples left empty"
        );
    }

    #[test]
    fn above_the_cap_the_timer_is_sampled_with_exact_count_and_extremes() {
        let root = stats(NamingMode::Hierarchical, "/", 64);
        for i in 1..=5_000u64 {
            root.record(key("GET", 200), Duration::from_micros(i), 0, None);
        }
        let lines = drained(&root);
        let daemon = daemon(&lines);
        let values = &daemon.timers["p.root|#"];
        assert_eq!(values.len(), 64);
        assert_eq!(daemon.timer_counts["p.root|#"], 5_000.0);
        let lowest = values.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = values.iter().copied().fold(0.0, f64::max);
        assert_eq!((lowest, highest), (0.001, 5.0));
        assert!(lines.contains(&"p.root.called:5000|c".to_owned()));
    }
}
