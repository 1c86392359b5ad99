//! A timer's values over one window: every value below a cap, a uniform
//! sample above it, with counts the daemon reads back exactly.
//!
//! Below the cap every value is kept and sent as it is. Above it, Algorithm R
//! keeps a uniform reservoir of `cap` values (as `metrics-exporter-dogstatsd`
//! does), and the window's true minimum and maximum are put into the sample,
//! so the daemon's `lower` and `upper` stay exact.
//!
//! Each sent value carries a sample rate `|@rate`, and statsd counts
//! `1 / rate` per value: the rates are chosen so that these add up to the
//! number of values seen. A rate is always `1 / 2^j`: its decimal form is
//! exact and the daemon's `1 / rate` is the integer `2^j`, so the count in
//! Graphite is an exact integer (a rate of `1/49` would not be: in floating
//! point `1 / (1 / 49)` is `49.00000000000001`). `sum` and `mean` are then
//! those of the sample; percentiles are estimates.

use super::metric::Value;

/// The smallest cap: any count up to `2^64` is a sum of at most 64 powers
/// of two, one per kept value.
pub(crate) const MIN_CAP: usize = 64;

/// A timer's values in one window. `cap` is passed in by the owner (the same
/// for every sample of a sink); 0 means no cap.
#[derive(Debug)]
pub(crate) struct TimerSample {
    values: Vec<f64>,
    seen: u64,
    min: f64,
    max: f64,
    rng: fastrand::Rng,
}

impl Default for TimerSample {
    fn default() -> Self {
        TimerSample {
            values: Vec::new(),
            seen: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            // Fixed: the sample needs to be uniform, not unpredictable.
            rng: fastrand::Rng::with_seed(0x7077_e125_7a75_d5a1),
        }
    }
}

impl TimerSample {
    /// Adds one value in milliseconds. Never allocates once the sample has
    /// held `cap` values in an earlier window.
    #[inline]
    pub(crate) fn add(&mut self, ms: f64, cap: usize) {
        self.seen += 1;
        self.min = self.min.min(ms);
        self.max = self.max.max(ms);
        if cap == 0 || self.values.len() < cap {
            self.values.push(ms);
        } else {
            let slot = self.rng.u64(..self.seen);
            if let Some(kept) = self.values.get_mut(slot as usize) {
                *kept = ms;
            }
        }
    }

    /// Values seen in this window.
    #[cfg(test)]
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }

    /// Values held.
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether every value seen is held (nothing sampled out).
    fn is_complete(&self) -> bool {
        self.seen == self.values.len() as u64
    }

    /// The values to send, each with the rate that makes the daemon's count
    /// exact, and a reset for the next window (capacity kept).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Value<'static>> + '_ {
        if !self.is_complete() {
            self.keep_extremes();
        }
        let weights = Weights::new(self.seen, self.values.len());
        self.seen = 0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        self.values
            .drain(..)
            .zip(weights)
            .map(|(ms, rate)| Value::Timer { ms, rate })
    }

    /// Puts the window's minimum and maximum into the sample, each in place
    /// of a random value (never in place of the other).
    fn keep_extremes(&mut self) {
        let len = self.values.len();
        if len < 2 {
            return;
        }
        let has = |values: &[f64], x: f64| values.iter().position(|&v| v == x);
        let min_at = match has(&self.values, self.min) {
            Some(at) => at,
            None => {
                let at = self.rng.usize(..len);
                self.values[at] = self.min;
                at
            }
        };
        if has(&self.values, self.max).is_none() {
            let mut at = self.rng.usize(..len - 1);
            if at >= min_at {
                at += 1;
            }
            self.values[at] = self.max;
        }
    }
}

/// The sample rates of `kept` values standing for `seen` ones: powers of
/// two `2^j` whose sum is `seen`, as even as possible, each written as the
/// rate `1 / 2^j` (1.0 when nothing was left out).
struct Weights {
    /// `counts[j]`: how many values stand for `2^j` values each.
    counts: [u64; 64],
    exponent: usize,
}

impl Weights {
    fn new(seen: u64, kept: usize) -> Self {
        let kept = kept as u64;
        let mut counts = [0u64; 64];
        if kept == 0 || seen <= kept {
            counts[0] = kept;
            return Weights {
                counts,
                exponent: 0,
            };
        }
        // `seen` in binary is `popcount` powers of two; splitting the largest
        // 2^j into two 2^(j-1) adds one term, until there is one per value.
        let mut terms = 0;
        for (j, count) in counts.iter_mut().enumerate() {
            *count = (seen >> j) & 1;
            terms += *count;
        }
        let mut j = 63;
        while terms < kept && j > 0 {
            let split = counts[j].min(kept - terms);
            counts[j] -= split;
            counts[j - 1] += 2 * split;
            terms += split;
            if counts[j] == 0 {
                j -= 1;
            }
        }
        Weights {
            counts,
            exponent: 63,
        }
    }
}

impl Iterator for Weights {
    type Item = f64;

    /// The largest weight left first. A bounded scan (at most 64 exponents,
    /// from the current one down), so a drain always ends.
    fn next(&mut self) -> Option<f64> {
        match (0..=self.exponent).rev().find(|&e| self.counts[e] > 0) {
            Some(e) => {
                self.exponent = e;
                self.counts[e] -= 1;
                Some(1.0 / (1u64 << e) as f64)
            }
            None => {
                // More values than weights cannot happen (see `new`); a
                // value without a weight counts once.
                self.exponent = 0;
                Some(1.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(sample: &mut TimerSample) -> Vec<(f64, f64)> {
        sample
            .drain()
            .map(|v| match v {
                Value::Timer { ms, rate } => (ms, rate),
                other => panic!("not a timer: {other:?}"),
            })
            .collect()
    }

    /// What statsd 0.9 computes as the count: `1 / rate` per value, summed in
    /// floating point, in arrival order.
    fn daemon_count(values: &[(f64, f64)]) -> f64 {
        values.iter().map(|&(_, rate)| 1.0 / rate).sum()
    }

    #[test]
    fn below_the_cap_every_value_is_sent_unsampled() {
        let mut sample = TimerSample::default();
        for i in 0..100 {
            sample.add(f64::from(i), 100);
        }
        let values = drained(&mut sample);
        assert_eq!(values.len(), 100);
        assert!(values.iter().all(|&(_, rate)| rate == 1.0));
        let ms: Vec<f64> = values.iter().map(|&(ms, _)| ms).collect();
        assert_eq!(ms, (0..100).map(f64::from).collect::<Vec<_>>());
        assert_eq!(sample.seen(), 0);
        assert!(drained(&mut sample).is_empty(), "a drained sample is empty");
    }

    #[test]
    fn no_cap_keeps_everything() {
        let mut sample = TimerSample::default();
        for i in 0..10_000 {
            sample.add(f64::from(i), 0);
        }
        assert_eq!(sample.len(), 10_000);
        assert!(drained(&mut sample).iter().all(|&(_, r)| r == 1.0));
    }

    #[test]
    fn above_the_cap_counts_are_exact_integers_and_extremes_kept() {
        for (seen, cap) in [
            (65, 64),
            (1_025, 1_024),
            (3_000, 1_024),
            (49 * 1_024, 1_024),
            (100_000, 1_024),
            (123_457, 64),
            (1 << 20, 100),
        ] {
            let mut sample = TimerSample::default();
            // A shuffled ramp: min and max arrive somewhere in the middle.
            let mut order: Vec<u64> = (0..seen).collect();
            fastrand::Rng::with_seed(seen).shuffle(&mut order);
            for &i in &order {
                sample.add(i as f64, cap);
            }
            let values = drained(&mut sample);
            assert_eq!(values.len(), cap, "{seen} values, cap {cap}");
            assert_eq!(
                daemon_count(&values),
                seen as f64,
                "{seen} values, cap {cap}"
            );
            for &(_, rate) in &values {
                assert_eq!((1.0 / rate).fract(), 0.0, "an integer weight: {rate}");
                assert_eq!((1.0 / rate).log2().fract(), 0.0, "a power of two");
            }
            let lowest = values.iter().map(|v| v.0).fold(f64::INFINITY, f64::min);
            let highest = values.iter().map(|v| v.0).fold(0.0, f64::max);
            assert_eq!((lowest, highest), (0.0, (seen - 1) as f64));
        }
    }

    #[test]
    fn the_sample_is_uniform() {
        // 100 000 values 0..100 000 through a 1 024 cap: the sample's median
        // and 90th percentile land within 5% of the range of the truth.
        let mut sample = TimerSample::default();
        for i in 0..100_000 {
            sample.add(f64::from(i), 1_024);
        }
        let mut ms: Vec<f64> = drained(&mut sample).iter().map(|v| v.0).collect();
        ms.sort_by(f64::total_cmp);
        let median = ms[ms.len() / 2];
        let p90 = ms[ms.len() * 9 / 10];
        assert!((median - 50_000.0).abs() < 5_000.0, "median {median}");
        assert!((p90 - 90_000.0).abs() < 5_000.0, "p90 {p90}");
    }

    #[test]
    fn rates_are_written_exactly() {
        let mut line = String::new();
        for j in 0..64 {
            line.clear();
            let rate = 1.0 / (1u64 << j) as f64;
            super::super::line::write_field(&mut line, &Value::Timer { ms: 1.0, rate });
            if j == 0 {
                assert_eq!(line, "1|ms");
                continue;
            }
            let written = line.strip_prefix("1|ms|@").unwrap();
            assert!(
                written.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
                "statsd reads rates matching [0-9.]+: {written}"
            );
            let back: f64 = written.parse().unwrap();
            assert_eq!(1.0 / back, (1u64 << j) as f64);
        }
    }

    /// With two slots, the minimum and the maximum are exactly what is sent,
    /// however many values arrive and in whatever order: each replaces a
    /// random value, never the other one.
    #[test]
    fn two_slots_hold_the_minimum_and_the_maximum() {
        for seen in 3..100 {
            let mut order: Vec<u32> = (0..seen).collect();
            fastrand::Rng::with_seed(seen.into()).shuffle(&mut order);
            let mut sample = TimerSample::default();
            for &i in &order {
                sample.add(f64::from(i), 2);
            }
            assert_eq!((sample.seen(), sample.len()), (seen.into(), 2));
            let mut values = drained(&mut sample);
            values.sort_by(|a, b| a.0.total_cmp(&b.0));
            let ms: Vec<f64> = values.iter().map(|v| v.0).collect();
            assert_eq!(ms, [0.0, f64::from(seen - 1)], "{seen} values");
            if seen.count_ones() == 2 {
                // 48 = 32 + 16, say: two values stand for it exactly.
                assert_eq!(daemon_count(&values), f64::from(seen), "{seen} values");
            }
        }
    }

    /// Draining a sampled timer runs on the flusher thread: it must end, with
    /// the exact count. `Weights::next` is a bounded scan, so it does; should
    /// a change ever make a drain run on, this test aborts the test process
    /// after 10 s rather than leave every test that drains one to time out.
    #[test]
    fn draining_a_sampled_timer_finishes() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sample = TimerSample::default();
            for i in 0..1_000 {
                sample.add(f64::from(i), 64);
            }
            let values = drained(&mut sample);
            let _ = tx.send((values.len(), daemon_count(&values)));
        });
        match rx.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(drained) => assert_eq!(drained, (64, 1_000.0)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("draining a sampled timer panicked")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "draining a sampled timer did not finish within 10 s; \
                     aborting (every test that drains one hangs too)"
                );
                std::process::abort();
            }
        }
    }
}
