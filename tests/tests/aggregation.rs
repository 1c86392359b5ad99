//! Client-side aggregation changes nothing the daemon computes: the same
//! workload through a client packing values into multi-value lines and one
//! writing each value on its own line (two metric prefixes, one real StatsD
//! 0.9.0, the same daemon flush window) gives the same counter totals
//! (sample rates included), the same set counts, the same gauge and the same
//! timer statistics (count, sum, lower, upper, median, mean_90, upper_90,
//! sum_90, std).
//!
//! Above the timer cap the client sends a sample: the daemon's `count`,
//! `lower` and `upper` stay exact, and its median and `upper_90` stay within
//! a stated tolerance of the truth, on a known distribution of 100 000
//! values.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::{admin_value, poll, Stack};
use tower_statsd::cadence::MetricSink;
use tower_statsd::prelude::*;
use tower_statsd::{Protocol, Server, Statsd};

/// The daemon's flush interval here: long enough to send both workloads
/// inside one window, short enough to keep the test quick.
const FLUSH_MS: u64 = 4000;
const EVENTS: usize = 3000;
const DEADLINE: Duration = Duration::from_secs(60);
const PERCENTILE_LEAVES: [&str; 9] = [
    "count", "sum", "lower", "upper", "median", "mean_90", "upper_90", "sum_90", "std",
];

/// xorshift64*: the same numbers for both clients, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the daemon should compute from the workload.
#[derive(Debug, Default)]
struct Expected {
    hits: f64,
    timer_values: Vec<f64>,
    timer_count: f64,
    users: BTreeSet<u64>,
    level: f64,
}

/// A mix of every metric type, with sample rates on counters and timers,
/// duplicated set members, absolute gauges and deltas. Starts and ends with a
/// counter, so a complete counter total proves the whole workload reached the
/// daemon in one window.
fn workload(statsd: &Statsd) -> Expected {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut want = Expected::default();
    statsd.incr("hits").ok();
    want.hits += 1.0;
    for _ in 0..EVENTS {
        match rng.below(10) {
            0..=2 => {
                let value = rng.below(5) + 1;
                let rate = [1.0, 0.5, 0.25, 0.1][rng.below(4) as usize];
                statsd
                    .count_with_tags("hits", value as i64)
                    .with_sampling_rate(rate)
                    .send();
                want.hits += value as f64 * (1.0 / rate);
            }
            3..=4 => {
                // Float milliseconds, three decimals: exact on the wire.
                let ms = (rng.below(200_000) + 1) as f64 / 1000.0;
                statsd.timing_ms("lat", ms);
                want.timer_values.push(ms);
                want.timer_count += 1.0;
            }
            5 => {
                let ms = rng.below(300) + 1;
                statsd
                    .time_with_tags("lat", ms)
                    .with_sampling_rate(0.5)
                    .send();
                want.timer_values.push(ms as f64);
                want.timer_count += 2.0;
            }
            6..=7 => {
                let id = rng.below(400);
                statsd.set("users", id as i64).ok();
                want.users.insert(id);
            }
            8 => {
                let delta = rng.below(21) as f64 - 10.0;
                statsd.gauge_delta("level", delta);
                want.level += delta;
            }
            _ => {
                let value = rng.below(100);
                statsd.gauge("level", value).ok();
                want.level = value as f64;
            }
        }
    }
    statsd.incr("hits").ok();
    want.hits += 1.0;
    want
}

/// Returns right after the daemon's flush: a marker counter is seen in the
/// window, then seen reset to 0.
fn wait_for_daemon_flush(stack: &Stack) {
    stack.send_raw("aggregation.sync:1|c");
    poll("the marker counter in the window", DEADLINE, || {
        let value = admin_value(&stack.admin("counters"), "aggregation.sync");
        (value == Some(1.0))
            .then_some(())
            .ok_or(format!("{value:?}"))
    });
    let end = Instant::now() + DEADLINE;
    loop {
        if admin_value(&stack.admin("counters"), "aggregation.sync") == Some(0.0) {
            return;
        }
        assert!(Instant::now() < end, "no daemon flush within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn client(stack: &Stack, prefix: &str, protocol: Protocol) -> Statsd {
    Statsd::builder()
        .host("127.0.0.1")
        .port(stack.statsd_port)
        .prefix(prefix)
        // The stack's server, in either packing: the handler's own sample
        // rates go out as they came (the generic profile would repeat a
        // rated value `1/rate` times instead, and Etsy StatsD's `sum` would
        // differ).
        .server(Server::Etsy)
        .protocol(protocol)
        // Nothing leaves before the explicit flush.
        .flush_interval(Duration::from_secs(600))
        .build()
        .expect("a client")
}

/// The single flush of `target` that saw data (points not equal to zero).
fn one_point(stack: &Stack, target: &str) -> Result<f64, String> {
    let points: Vec<f64> = stack
        .render(target, "-10min")?
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| *v != 0.0)
        .collect();
    match points[..] {
        [value] => Ok(value),
        _ => Err(format!("{target}: non-zero points {points:?}")),
    }
}

#[test]
fn aggregated_and_unaggregated_streams_mean_the_same() {
    let stack = Stack::start(FLUSH_MS);
    let mut attempt = 0;
    let (on, off, want) = loop {
        attempt += 1;
        assert!(attempt <= 3, "no daemon window held both workloads");
        let (on, off) = (format!("agg{attempt}_on"), format!("agg{attempt}_off"));
        let aggregated = client(&stack, &on, Protocol::Etsy);
        let plain = client(&stack, &off, Protocol::Plain);
        wait_for_daemon_flush(&stack);
        let started = Instant::now();
        let want = workload(&aggregated);
        let again = workload(&plain);
        assert_eq!(want.hits, again.hits);
        aggregated.flush().expect("the aggregated client flushed");
        plain.flush().expect("the plain client flushed");
        assert_eq!(
            (aggregated.sink().dropped(), plain.sink().dropped()),
            (0, 0)
        );
        assert_eq!(
            (
                aggregated.sink().failed_packets(),
                plain.sink().failed_packets()
            ),
            (0, 0)
        );
        let packets = |s: &Statsd| MetricSink::stats(s.sink()).packets_sent;
        eprintln!(
            "attempt {attempt}: {} packets aggregated, {} unaggregated",
            packets(&aggregated),
            packets(&plain)
        );
        assert!(
            packets(&aggregated) < packets(&plain),
            "aggregation packs tighter"
        );
        // Both counter totals complete in the daemon's current window means
        // every packet of both clients landed in it (each workload starts and
        // ends with a counter, and UDP on loopback keeps the order).
        let got = poll("both counters in the window", DEADLINE, || {
            let dump = stack.admin("counters");
            let got = (
                admin_value(&dump, &format!("{on}.hits")),
                admin_value(&dump, &format!("{off}.hits")),
                admin_value(&dump, "statsd.bad_lines_seen"),
            );
            if got.0 == Some(want.hits) && got.1 == Some(want.hits) {
                return Ok(Some(got));
            }
            if started.elapsed() > Duration::from_millis(FLUSH_MS) {
                return Ok(None); // a daemon flush came in between: try again
            }
            Err(format!("{got:?}, want {}", want.hits))
        });
        let Some((_, _, bad_lines)) = got else {
            eprintln!("attempt {attempt}: the workloads straddled a daemon flush; again");
            continue;
        };
        assert_eq!(bad_lines, Some(0.0), "the daemon saw no bad line");
        break (on, off, want);
    };
    eprintln!(
        "hits {} (sampled), {} timer values (count {}), {} distinct users, level {}",
        want.hits,
        want.timer_values.len(),
        want.timer_count,
        want.users.len(),
        want.level
    );

    // What Graphite got from that one daemon flush, for both prefixes.
    let read = |leaf: &str| -> Result<(f64, f64), String> {
        Ok((
            one_point(&stack, &leaf.replace("{p}", &on))?,
            one_point(&stack, &leaf.replace("{p}", &off))?,
        ))
    };
    let equal = |what: &str, (a, b): (f64, f64), want: Option<f64>| -> Result<f64, String> {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
        if !close(a, b) {
            return Err(format!("{what}: aggregated {a}, unaggregated {b}"));
        }
        match want {
            Some(w) if !close(a, w) => Err(format!("{what}: both {a}, want {w}")),
            _ => Ok(a),
        }
    };
    poll("counters in Graphite", DEADLINE, || {
        equal(
            "stats_counts hits",
            read("stats_counts.{p}.hits")?,
            Some(want.hits),
        )
    });
    poll("sets in Graphite", DEADLINE, || {
        equal(
            "set count",
            read("stats.sets.{p}.users.count")?,
            Some(want.users.len() as f64),
        )
    });
    let mut sorted = want.timer_values.clone();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let n90 = (0.9 * n as f64).round() as usize;
    let expected_leaf = |leaf: &str| match leaf {
        "count" => Some(want.timer_count),
        "sum" => Some(sorted.iter().sum()),
        "lower" => Some(sorted[0]),
        "upper" => Some(sorted[n - 1]),
        "upper_90" => Some(sorted[n90 - 1]),
        "mean_90" => Some(sorted[..n90].iter().sum::<f64>() / n90 as f64),
        "sum_90" => Some(sorted[..n90].iter().sum()),
        _ => None, // median and std: compared between the two prefixes only
    };
    for leaf in PERCENTILE_LEAVES {
        let value = poll(&format!("timer {leaf} in Graphite"), DEADLINE, || {
            equal(
                leaf,
                read(&format!("stats.timers.{{p}}.lat.{leaf}"))?,
                expected_leaf(leaf),
            )
        });
        eprintln!("timer {leaf}: {value} for both");
    }
    poll("gauges in Graphite", DEADLINE, || {
        let last = |p: &str| -> Result<f64, String> {
            let points = stack.render(&format!("stats.gauges.{p}.level"), "-10min")?;
            points
                .last()
                .map(|(_, v)| *v)
                .ok_or(format!("{p}: no gauge yet"))
        };
        equal("gauge", (last(&on)?, last(&off)?), Some(want.level))
    });
}

/// 100 000 timer values through the default cap (1 024 per timer and
/// window): the daemon's count is exactly 100 000, `lower` and `upper` are
/// the true extremes, and the median and `upper_90` of the sample land within
/// 2.5% of the value range of the true ones (the sample is uniform: its
/// median's standard error is 1.6% of the range, and the sample is the same
/// on every run, its random source being seeded).
#[test]
fn sampled_timers_keep_exact_counts_and_extremes() {
    const VALUES: u64 = 100_000;
    let stack = Stack::start(FLUSH_MS);
    // The values 0.01, 0.02, ..., 1000 ms, shuffled: min and max arrive in
    // the middle of the stream.
    let mut order: Vec<u64> = (1..=VALUES).collect();
    let mut rng = Rng(0x005E_ED0F_7E57);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let ms = |v: u64| v as f64 / 100.0;
    let mut attempt = 0;
    let prefix = loop {
        attempt += 1;
        assert!(attempt <= 3, "no daemon window held the whole window");
        let prefix = format!("sampled{attempt}");
        let statsd = Statsd::builder()
            .host("127.0.0.1")
            .port(stack.statsd_port)
            .prefix(&prefix)
            // Etsy StatsD reads sample rates (the generic default sends
            // every value).
            .server(Server::Etsy)
            .flush_interval(Duration::from_secs(600))
            .build()
            .expect("a client");
        wait_for_daemon_flush(&stack);
        let started = Instant::now();
        for &v in &order {
            statsd.timing_ms("lat", ms(v));
        }
        statsd.incr("done").ok();
        statsd.flush().unwrap();
        let packets = MetricSink::stats(statsd.sink()).packets_sent;
        eprintln!("attempt {attempt}: {VALUES} values in {packets} packets");
        assert!(
            packets < 100,
            "a sample, not every value: {packets} packets"
        );
        let landed = poll("the window in the daemon", DEADLINE, || {
            let done = admin_value(&stack.admin("counters"), &format!("{prefix}.done"));
            if done == Some(1.0) {
                return Ok(true);
            }
            if started.elapsed() > Duration::from_millis(FLUSH_MS) {
                return Ok(false);
            }
            Err(format!("{done:?}"))
        });
        if landed {
            break prefix;
        }
        eprintln!("attempt {attempt}: straddled a daemon flush; again");
    };
    let leaf = |leaf: &str| {
        let target = format!("stats.timers.{prefix}.lat.{leaf}");
        poll(&target.clone(), DEADLINE, || one_point(&stack, &target))
    };
    assert_eq!(leaf("count"), VALUES as f64, "count exact");
    assert_eq!(leaf("lower"), ms(1), "lower exact");
    assert_eq!(leaf("upper"), ms(VALUES), "upper exact");
    let range = ms(VALUES) - ms(1);
    for (name, truth) in [("median", 500.0), ("upper_90", 900.0)] {
        let got = leaf(name);
        eprintln!(
            "{name}: {got} (truth {truth}, off by {:.2}% of the range)",
            100.0 * (got - truth).abs() / range
        );
        assert!(
            (got - truth).abs() <= 0.025 * range,
            "{name} {got} is more than 2.5% of the range from {truth}"
        );
    }
    stack.assert_no_bad_lines();
}
