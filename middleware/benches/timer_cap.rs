//! What the timer cap (`STATSD_MAX_TIMER_SAMPLES`) trades: the error of the
//! percentiles StatsD computes from the sample, against the values (and so
//! the daemon's parsing work) a window sends.
//!
//! `cargo bench -p tower-statsd --bench timer_cap` sends one window of
//! 100 000 timer values from two known distributions through a client with
//! each cap, reads the packets back as statsd 0.9 would (percentiles over
//! the values received, unweighted; count as the sum of `1/rate`), and prints
//! the error of the median, `upper_90` and `upper_99` as a share of the true
//! value, the exactness of count / lower / upper, and the bytes sent. The
//! daemon's CPU grows with the values it parses: bytes are its proxy here,
//! `scripts/bench-delivery` measures it for real.

#![allow(missing_docs)]

use std::time::Duration;

use tower_statsd::{Protocol, Server, Statsd};

// The tests' spy and their reading of packets as statsd 0.9 does.
#[path = "../tests/support/daemon.rs"]
mod daemon;
#[path = "../tests/support/spy.rs"]
mod spy;

const VALUES: usize = 100_000;
const CAPS: [usize; 6] = [64, 256, 1_024, 4_096, 16_384, 0];
/// Repetitions with different value orders; the error printed is the worst.
const RUNS: u64 = 5;

/// xorshift64*: known, repeatable numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Uniform 0–500 ms (the tutorial's random sleep), and a long-tailed one
/// (most requests fast, a few very slow: exponential with mean 20 ms).
fn distribution(name: &str, seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed | 1);
    (0..VALUES)
        .map(|_| {
            let u = rng.next_f64();
            let ms = match name {
                "uniform" => u * 500.0,
                _ => -20.0 * (1.0 - u).ln(),
            };
            (ms * 1000.0).round() / 1000.0
        })
        .collect()
}

/// statsd 0.9's percentile: the value at `ceil(pct/100 * n) - 1` of the
/// sorted values (its `numInThreshold` rounding).
fn upper(sorted: &[f64], pct: f64) -> f64 {
    let n = ((pct / 100.0) * sorted.len() as f64).round() as usize;
    sorted[n.clamp(1, sorted.len()) - 1]
}

fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

struct Seen {
    values: Vec<f64>,
    count: f64,
    bytes: usize,
}

fn through_client(cap: usize, values: &[f64]) -> Seen {
    let (rx, spy) = spy::spy();
    // Etsy StatsD reads sample rates (the generic default sends every
    // value: the cap 0 row below).
    let statsd = Statsd::builder()
        .server(Server::Etsy)
        .protocol(Protocol::Plain)
        .max_timer_samples(cap)
        .flush_interval(Duration::from_secs(3600))
        .build_with(spy)
        .expect("a client");
    for &ms in values {
        statsd.timing_ms("t", ms);
    }
    statsd.flush().unwrap();
    let packets = rx.take();
    let mut daemon = daemon::daemon(&packets);
    Seen {
        values: daemon.timers.remove("t|#").unwrap_or_default(),
        count: daemon.timer_counts.remove("t|#").unwrap_or_default(),
        bytes: packets.iter().map(String::len).sum(),
    }
}

fn main() {
    println!(
        "timer cap: error of statsd's percentiles over a {VALUES}-value window, worst of {RUNS} \
         orders (% of the true value); count, lower, upper exact?; bytes sent"
    );
    println!(
        "| distribution | cap | median | upper_90 | upper_99 | count, lower, upper | values sent | bytes |"
    );
    println!("|---|---:|---:|---:|---:|---|---:|---:|");
    for name in ["uniform", "long-tailed"] {
        for cap in CAPS {
            let mut worst = [0.0f64; 3];
            let mut exact = true;
            let mut sent = (0, 0);
            for run in 0..RUNS {
                let values = distribution(name, 0x9E37_79B9 + run);
                let mut truth = values.clone();
                truth.sort_by(f64::total_cmp);
                let seen = through_client(cap, &values);
                let mut got = seen.values.clone();
                got.sort_by(f64::total_cmp);
                let pairs = [
                    (median(&got), median(&truth)),
                    (upper(&got, 90.0), upper(&truth, 90.0)),
                    (upper(&got, 99.0), upper(&truth, 99.0)),
                ];
                for (i, (g, t)) in pairs.into_iter().enumerate() {
                    worst[i] = worst[i].max(100.0 * (g - t).abs() / t);
                }
                exact &= seen.count == VALUES as f64
                    && got.first() == truth.first()
                    && got.last() == truth.last();
                sent = (got.len(), seen.bytes);
            }
            let cap = if cap == 0 {
                "none".to_owned()
            } else {
                cap.to_string()
            };
            println!(
                "| {name} | {cap} | {:.2}% | {:.2}% | {:.2}% | {} | {} | {} |",
                worst[0],
                worst[1],
                worst[2],
                if exact { "exact" } else { "NOT exact" },
                sent.0,
                sent.1
            );
        }
    }
}
