//! Client-side aggregation over one flush window, keyed by (name, tags).
//!
//! What the daemon would compute from every single line is computed here
//! first, so far fewer packets carry the same totals:
//!
//! - counters: `value / rate` summed (the daemon's `value * (1 / rate)`),
//!   sent once with rate 1;
//! - sets: members de-duplicated, packed as `key:a|s:b|s`;
//! - timers: values recorded at rate 1 go into a bounded sample
//!   (`sample.rs`: every value below the cap, exact counts above it); values
//!   a client sampled itself are kept with their own rate. Packed as
//!   `key:1.5|ms:2|ms|@0.5` (the daemon counts `1 / rate` per value);
//! - gauges: the last absolute value plus the deltas after it, or only the
//!   summed deltas when no absolute value came in this window.
//!
//! A sum that would overflow `f64` is never sent as `inf` (the daemon
//! rejects it as a bad line): the terms that would overflow it are kept and
//! sent unsummed, each as its own line, as they came in.
//!
//! Tags go once at the end of a line: statsd 0.9 splits a line at `|#`
//! before splitting its fields at `:`, so `key:1|ms:2|ms|#t:v` gives both
//! values the tags `t:v`.

use std::collections::{HashMap, HashSet};

use super::metric::{Metric, Value};
use super::sample::TimerSample;
use super::writer::PacketWriter;

/// Per-name, per-tag-set state. Two levels so a lookup by borrowed `&str`s
/// finds an existing key without allocating.
#[derive(Debug)]
struct Table<V> {
    by_name: HashMap<String, HashMap<String, V>>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self {
            by_name: HashMap::new(),
        }
    }
}

impl<V: Default> Table<V> {
    /// The slot for `(name, tags)` and whether it was just created.
    fn slot(&mut self, name: &str, tags: &str) -> (&mut V, bool) {
        if !self.by_name.contains_key(name) {
            self.by_name.insert(name.to_owned(), HashMap::new());
        }
        let by_tags = self
            .by_name
            .get_mut(name)
            .expect("the name was inserted above");
        let created = !by_tags.contains_key(tags);
        if created {
            by_tags.insert(tags.to_owned(), V::default());
        }
        let slot = by_tags.get_mut(tags).expect("the tags were inserted above");
        (slot, created)
    }

    fn drain(&mut self, mut f: impl FnMut(&str, &str, V)) {
        for (name, by_tags) in self.by_name.drain() {
            for (tags, value) in by_tags {
                f(&name, &tags, value);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Gauge {
    absolute: Option<f64>,
    delta: f64,
    /// Deltas that would have made the folded value overflow, in order.
    unfolded: Vec<f64>,
}

/// A counter's sum, and the terms (`value`, `rate`) from the first one that
/// would have made it overflow on.
#[derive(Debug, Default)]
struct Counter {
    sum: f64,
    unsummed: Vec<(f64, f64)>,
}

/// A timer's values: a bounded sample of those at rate 1, and the ones a
/// client sampled itself (`|@0.1`), each with its rate.
#[derive(Debug, Default)]
struct Timer {
    sample: TimerSample,
    rated: Vec<(f64, f64)>,
}

/// The state of one flush window.
#[derive(Debug, Default)]
pub(crate) struct Aggregator {
    counters: Table<Counter>,
    timers: Table<Timer>,
    gauges: Table<Gauge>,
    sets: Table<HashSet<String>>,
    values: usize,
    /// Values kept per timer before sampling; 0 = no cap.
    timer_cap: usize,
}

impl Aggregator {
    /// An empty window, keeping at most `timer_cap` values per timer (0 = all).
    pub(crate) fn new(timer_cap: usize) -> Self {
        Aggregator {
            timer_cap,
            ..Self::default()
        }
    }

    /// Whether nothing was added since the last drain.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.values == 0
    }

    /// Folds one metric into the window.
    pub(crate) fn add(&mut self, metric: Metric<'_>) {
        let Metric { name, tags, value } = metric;
        match value {
            Value::Count { value, rate } => {
                let (counter, created) = self.counters.slot(name, tags);
                let sum = counter.sum + value * (1.0 / rate);
                // After the first term that overflows, every later one stays
                // unsummed too, in order: the daemon then adds exactly what
                // it would have added line by line.
                if counter.unsummed.is_empty() && sum.is_finite() {
                    counter.sum = sum;
                    self.values += usize::from(created);
                } else {
                    counter.unsummed.push((value, rate));
                    self.values += 1;
                }
            }
            // Handler lines never carry one (`|d` parses as a timer).
            Value::Distribution { value, rate } => self.add(Metric {
                name,
                tags,
                value: Value::Timer { ms: value, rate },
            }),
            Value::Timer { ms, rate } => {
                let timer = self.timers.slot(name, tags).0;
                let held = timer.sample.len();
                if rate == 1.0 {
                    timer.sample.add(ms, self.timer_cap);
                } else {
                    timer.rated.push((ms, rate));
                }
                // A sampled timer holds no more values: it counts no more.
                self.values += usize::from(timer.sample.len() > held || rate != 1.0);
            }
            Value::Gauge(value) => {
                let (gauge, created) = self.gauges.slot(name, tags);
                *gauge = Gauge {
                    absolute: Some(value),
                    ..Gauge::default()
                };
                self.values += usize::from(created);
            }
            Value::GaugeDelta(delta) => {
                let (gauge, created) = self.gauges.slot(name, tags);
                let folded = gauge.absolute.unwrap_or(0.0) + (gauge.delta + delta);
                if gauge.unfolded.is_empty()
                    && folded.is_finite()
                    && (gauge.delta + delta).is_finite()
                {
                    gauge.delta += delta;
                    self.values += usize::from(created);
                } else {
                    gauge.unfolded.push(delta);
                    self.values += 1;
                }
            }
            Value::Set(member) => {
                let (members, _) = self.sets.slot(name, tags);
                if !members.contains(member) {
                    members.insert(member.to_owned());
                    self.values += 1;
                }
            }
        }
    }

    /// How many values the window holds: one per counter and gauge key, one
    /// per distinct set member, one per timer value. The worker flushes early
    /// past a threshold, which keeps memory bounded without losing anything.
    pub(crate) fn len(&self) -> usize {
        self.values
    }

    /// Writes the whole window to `out` and starts a new one. Packets still
    /// being filled stay in `out` until its next flush.
    pub(crate) fn drain(&mut self, out: &mut PacketWriter) {
        self.counters.drain(|name, tags, counter| {
            let sum = Value::Count {
                value: counter.sum,
                rate: 1.0,
            };
            let unsummed = counter
                .unsummed
                .into_iter()
                .map(|(value, rate)| Value::Count { value, rate });
            for value in std::iter::once(sum).chain(unsummed) {
                out.push_metric(&Metric { name, tags, value });
            }
        });
        self.gauges.drain(|name, tags, gauge| {
            let value = match gauge.absolute {
                Some(absolute) => Value::Gauge(absolute + gauge.delta),
                None => Value::GaugeDelta(gauge.delta),
            };
            out.push_metric(&Metric { name, tags, value });
            for delta in gauge.unfolded {
                let value = Value::GaugeDelta(delta);
                out.push_metric(&Metric { name, tags, value });
            }
        });
        self.timers.drain(|name, tags, mut timer| {
            let rated = timer
                .rated
                .into_iter()
                .map(|(ms, rate)| Value::Timer { ms, rate });
            out.push_packed(name, tags, timer.sample.drain().chain(rated));
        });
        self.sets.drain(|name, tags, members| {
            out.push_packed(name, tags, members.iter().map(|m| Value::Set(m)));
        });
        self.values = 0;
    }
}

#[cfg(test)]
mod tests {

    use super::super::line::parse;
    use super::super::protocol::Protocol;
    use super::super::testing::{lines, spy};
    use super::*;

    fn count(value: f64, rate: f64) -> Value<'static> {
        Value::Count { value, rate }
    }

    fn timer(ms: f64, rate: f64) -> Value<'static> {
        Value::Timer { ms, rate }
    }

    fn add(agg: &mut Aggregator, name: &'static str, tags: &'static str, value: Value<'static>) {
        agg.add(Metric { name, tags, value });
    }

    /// Drains into packets and returns the lines, sorted (key order is a hash order).
    fn drain(agg: &mut Aggregator) -> Vec<String> {
        let (rx, spy) = spy();
        let (mut out, _) = super::super::testing::pipe(spy, 512);
        out.protocol(Protocol::Etsy);
        agg.drain(&mut out);
        out.flush();
        let mut lines = lines(&rx.take());
        lines.sort();
        lines
    }

    #[test]
    fn counters_are_summed_with_their_sample_rates() {
        let mut agg = Aggregator::new(0);
        for _ in 0..10 {
            add(&mut agg, "a", "", count(1.0, 0.5));
        }
        add(&mut agg, "b", "", count(1.0, 1.0));
        add(&mut agg, "b", "", count(-3.0, 1.0));
        add(&mut agg, "c", "", count(0.5, 1.0));
        add(&mut agg, "c", "", count(1.0, 0.25));
        assert_eq!(agg.len(), 3);
        assert_eq!(drain(&mut agg), ["a:20|c", "b:-2|c", "c:4.5|c"]);
        assert_eq!(agg.len(), 0);
        assert!(drain(&mut agg).is_empty(), "the window was reset");
    }

    #[test]
    fn sets_are_deduplicated() {
        let mut agg = Aggregator::new(0);
        for member in ["u1", "u2", "u1", "u3", "u2"] {
            add(&mut agg, "users", "", Value::Set(member));
        }
        assert_eq!(agg.len(), 3);
        let lines = drain(&mut agg);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let mut members: Vec<&str> = lines[0]
            .strip_prefix("users:")
            .unwrap()
            .split(':')
            .map(|f| f.strip_suffix("|s").unwrap())
            .collect();
        members.sort_unstable();
        assert_eq!(members, ["u1", "u2", "u3"]);
    }

    #[test]
    fn timers_are_packed_with_their_rates() {
        let mut agg = Aggregator::new(0);
        add(&mut agg, "t", "", timer(0.3, 1.0));
        add(&mut agg, "t", "", timer(12.5, 0.5));
        add(&mut agg, "t", "", timer(7.0, 1.0));
        add(&mut agg, "t", "", timer(12.5, 1.0));
        assert_eq!(agg.len(), 4);
        // Unsampled values first, in order; then those a client sampled.
        assert_eq!(drain(&mut agg), ["t:0.3|ms:7|ms:12.5|ms:12.5|ms|@0.5"]);
    }

    #[test]
    fn gauges_keep_the_last_value_plus_later_deltas() {
        let mut agg = Aggregator::new(0);
        add(&mut agg, "abs", "", Value::Gauge(3.0));
        add(&mut agg, "abs", "", Value::GaugeDelta(100.0));
        add(&mut agg, "abs", "", Value::Gauge(10.0));
        add(&mut agg, "abs", "", Value::GaugeDelta(2.0));
        add(&mut agg, "abs", "", Value::GaugeDelta(-0.5));
        add(&mut agg, "delta", "", Value::GaugeDelta(2.0));
        add(&mut agg, "delta", "", Value::GaugeDelta(-5.0));
        add(&mut agg, "zero", "", Value::GaugeDelta(1.0));
        add(&mut agg, "zero", "", Value::GaugeDelta(-1.0));
        assert_eq!(agg.len(), 3);
        assert_eq!(drain(&mut agg), ["abs:11.5|g", "delta:-3|g", "zero:+0|g"]);
    }

    #[test]
    fn negative_absolute_gauge_is_sent_as_zero_then_delta() {
        let mut agg = Aggregator::new(0);
        add(&mut agg, "g", "", Value::Gauge(1.0));
        add(&mut agg, "g", "", Value::GaugeDelta(-6.0));
        let (rx, spy) = spy();
        let (mut out, _) = super::super::testing::pipe(spy, 512);
        out.protocol(Protocol::Etsy);
        agg.drain(&mut out);
        out.flush();
        assert_eq!(rx.take(), ["g:0|g\ng:-5|g"]);
    }

    #[test]
    fn tag_sets_are_kept_apart() {
        let mut agg = Aggregator::new(0);
        add(&mut agg, "req", "route:root", count(1.0, 1.0));
        add(&mut agg, "req", "route:user", count(1.0, 1.0));
        add(&mut agg, "req", "route:root", count(1.0, 1.0));
        add(&mut agg, "req", "", count(1.0, 1.0));
        add(&mut agg, "req", "route:root", timer(1.5, 1.0));
        add(&mut agg, "req", "route:root", timer(2.5, 1.0));
        add(&mut agg, "req", "route:user", timer(3.5, 1.0));
        add(&mut agg, "u", "route:root", Value::Set("x"));
        add(&mut agg, "u", "route:user", Value::Set("x"));
        assert_eq!(
            drain(&mut agg),
            [
                "req:1.5|ms:2.5|ms|#route:root",
                "req:1|c",
                "req:2|c|#route:root",
                "req:3.5|ms|#route:user",
                "req:1|c|#route:user",
                "u:x|s|#route:root",
                "u:x|s|#route:user",
            ]
            .map(str::to_owned)
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
    }

    /// Found by the fuzz target: a sum past `f64::MAX` used to go out as
    /// `a:inf|c`, a bad line to the daemon. The overflowing terms now go
    /// unsummed, so the daemon sees what it would have seen without aggregation.
    #[test]
    fn sums_that_would_overflow_are_sent_unsummed() {
        let mut agg = Aggregator::new(0);
        add(&mut agg, "a", "", count(f64::MAX, 1.0));
        add(&mut agg, "a", "", count(f64::MAX, 1.0));
        add(&mut agg, "b", "", count(1e308, 0.001));
        add(&mut agg, "g", "", Value::Gauge(f64::MAX));
        add(&mut agg, "g", "", Value::GaugeDelta(f64::MAX));
        add(&mut agg, "g", "", Value::GaugeDelta(-1.0));
        let lines = drain(&mut agg);
        let max = f64::MAX.to_string();
        let mut want = vec![
            format!("a:{max}|c"),
            format!("a:{max}|c"),
            "b:0|c".to_owned(),
            format!("b:1{}|c|@0.001", "0".repeat(308)),
            format!("g:{max}|g"),
            format!("g:+{max}|g"),
            "g:-1|g".to_owned(),
        ];
        want.sort();
        assert_eq!(lines, want);
        for line in lines {
            assert!(parse(&line).is_ok(), "{line}");
        }
    }

    #[test]
    fn drained_lines_parse_back() {
        let mut agg = Aggregator::new(0);
        add(&mut agg, "c", "k:v", count(2.0, 0.1));
        add(&mut agg, "g", "k:v", Value::Gauge(-2.5));
        add(&mut agg, "s", "k:v", Value::Set("m"));
        add(&mut agg, "t", "k:v", timer(0.001, 0.5));
        let lines = drain(&mut agg);
        assert_eq!(lines.len(), 5, "{lines:?}");
        for line in lines {
            assert!(parse(&line).is_ok(), "{line}");
        }
    }

    /// `len` counts what the window holds: a timer past its cap holds no
    /// more; each term kept unsummed and each delta kept unfolded is one more.
    #[test]
    fn len_counts_held_values_and_every_term_kept_apart() {
        let mut agg = Aggregator::new(64);
        for i in 0..100 {
            add(&mut agg, "t", "", timer(f64::from(i), 1.0));
        }
        assert_eq!(agg.len(), 64, "a full sample holds no more values");
        add(&mut agg, "t", "", timer(1.0, 0.5));
        assert_eq!(agg.len(), 65, "a value a client sampled is held");
        add(&mut agg, "a", "", count(f64::MAX, 1.0));
        add(&mut agg, "a", "", count(f64::MAX, 1.0));
        assert_eq!(agg.len(), 67, "the overflowing term is kept apart");
        add(&mut agg, "a", "", count(1.0, 1.0));
        assert_eq!(agg.len(), 68, "and every later term of that counter");
        add(&mut agg, "g", "", Value::Gauge(f64::MAX));
        add(&mut agg, "g", "", Value::GaugeDelta(f64::MAX));
        assert_eq!(agg.len(), 70, "the overflowing delta is kept apart");
        add(&mut agg, "g", "", Value::GaugeDelta(-1.0));
        assert_eq!(agg.len(), 71, "and every later delta of that gauge");
        let lines = drain(&mut agg);
        let max = f64::MAX.to_string();
        let kept_apart: Vec<&String> = lines.iter().filter(|l| !l.starts_with("t:")).collect();
        let mut want = [
            "a:1|c".to_owned(),
            format!("a:{max}|c"),
            format!("a:{max}|c"),
            format!("g:{max}|g"),
            format!("g:+{max}|g"),
            "g:-1|g".to_owned(),
        ];
        want.sort();
        assert_eq!(kept_apart, want.iter().collect::<Vec<_>>());
        assert_eq!(agg.len(), 0);
    }

    /// A gauge's deltas are folded while the value and the summed deltas
    /// stay finite, and only then.
    #[test]
    fn gauge_deltas_fold_while_the_value_stays_finite() {
        let mut agg = Aggregator::new(0);
        // 1e160 + 1e160 is finite (their product would not be).
        add(&mut agg, "big", "", Value::Gauge(1e160));
        add(&mut agg, "big", "", Value::GaugeDelta(1e160));
        // 1e308 - 1e308 is 0 (their difference, 2e308, would overflow).
        add(&mut agg, "back", "", Value::GaugeDelta(1e308));
        add(&mut agg, "back", "", Value::GaugeDelta(-1e308));
        assert_eq!(agg.len(), 2);
        assert_eq!(
            drain(&mut agg),
            ["back:+0|g".to_owned(), format!("big:{}|g", 2e160)]
        );
    }
}
