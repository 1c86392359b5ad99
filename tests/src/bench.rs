//! The statistics of the load benches (`scripts/bench-overhead`,
//! `scripts/bench-delivery`), in one place: a process's CPU time, wrk's
//! report, medians, and the tables the scripts print. The scripts run the
//! servers and wrk; `bench-report` (this module's command line) reads what
//! they measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// CPU time of a process so far, every thread (the finished ones too), in
/// ms: `utime + stime` of `/proc/<pid>/stat` over the kernel's clock ticks
/// per second. `pid` is a number or `self`. `None` when the process is gone.
pub fn process_cpu_ms(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_ms_of_stat(&stat, rustix::param::clock_ticks_per_second())
}

/// [`process_cpu_ms`] of one `/proc/<pid>/stat` line, with `hz` ticks a
/// second.
pub fn cpu_ms_of_stat(stat: &str, hz: u64) -> Option<u64> {
    // The fields after the command name, which is in parentheses and may
    // hold spaces and parentheses itself.
    let (_, after) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let total = ticks(11)? + ticks(12)?;
    Some(total * 1000 / hz.max(1))
}

/// The median; the mean of the two middle values for an even count. `None`
/// for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// What one wrk run reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wrk {
    /// `Requests/sec`.
    pub rps: f64,
    /// The 50th and 99th percentile latencies, µs (`--latency`).
    pub p50_us: f64,
    /// See `p50_us`.
    pub p99_us: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

/// Reads wrk's report (run with `--latency`). `None` without a
/// `Requests/sec` line.
pub fn parse_wrk(report: &str) -> Option<Wrk> {
    let mut rps = None;
    let (mut p50_us, mut p99_us, mut errors) = (0.0, 0.0, 0);
    for line in report.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Requests/sec:", value, ..] => rps = value.parse().ok(),
            ["50%", value, ..] => p50_us = micros(value)?,
            ["99%", value, ..] => p99_us = micros(value)?,
            _ => {}
        }
        if line.contains("Non-2xx or 3xx responses:") {
            errors += fields
                .last()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if line.contains("Socket errors:") {
            // `Socket errors: connect 0, read 1, write 0, timeout 3`
            errors += line
                .split([' ', ','])
                .filter_map(|f| f.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Some(Wrk {
        rps: rps?,
        p50_us,
        p99_us,
        errors,
    })
}

/// wrk's latency (`612.00us`, `1.23ms`, `2.00s`, `1.50m`) in µs.
fn micros(value: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = value.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = value.strip_suffix('m') {
        (n, 60e6)
    } else {
        (value, 1.0)
    };
    Some(number.parse::<f64>().ok()? * scale)
}

/// One row of `scripts/bench-overhead`'s results: one variant, one route,
/// one round (the columns of its tab-separated `results.tsv`).
#[derive(Debug, Clone, PartialEq)]
pub struct OverheadRow {
    /// `bare`, `statsd`, `prometheus`, ...
    pub variant: String,
    /// `root` or `user`.
    pub route: String,
    /// The round, from 1.
    pub round: u32,
    /// What wrk reported.
    pub wrk: Wrk,
    /// The server's peak RSS (VmHWM), KiB.
    pub rss_kib: f64,
    /// The server's CPU (every thread) per request served, ns.
    pub server_cpu_ns: f64,
    /// The daemon's CPU per second of load, ms.
    pub statsd_cpu_ms_per_s: f64,
}

impl OverheadRow {
    /// One tab-separated line: `variant route round rps p50_us p99_us
    /// errors rss_kib server_cpu_ns statsd_cpu_ms_per_s`.
    pub fn parse(line: &str) -> Option<OverheadRow> {
        let f: Vec<&str> = line.split('\t').collect();
        let [variant, route, round, rps, p50, p99, errors, rss, scpu, dcpu] = f.as_slice() else {
            return None;
        };
        Some(OverheadRow {
            variant: (*variant).to_owned(),
            route: (*route).to_owned(),
            round: round.parse().ok()?,
            wrk: Wrk {
                rps: rps.parse().ok()?,
                p50_us: p50.parse().ok()?,
                p99_us: p99.parse().ok()?,
                errors: errors.parse().ok()?,
            },
            rss_kib: rss.parse().ok()?,
            server_cpu_ns: scpu.parse().ok()?,
            statsd_cpu_ms_per_s: dcpu.parse().ok()?,
        })
    }
}

/// The server's CPU per request (ns) and the daemon's CPU per second of
/// load (ms), from CPU times in ms over `seconds` of load at `rps`.
pub fn per_request(server_ms: u64, statsd_ms: u64, rps: f64, seconds: f64) -> (f64, f64) {
    let requests = rps * seconds;
    let server = if requests > 0.0 {
        server_ms as f64 * 1e6 / requests
    } else {
        0.0
    };
    let statsd = if seconds > 0.0 {
        statsd_ms as f64 / seconds
    } else {
        0.0
    };
    (server, statsd)
}

/// What `scripts/bench-overhead` calls each variant in its table.
fn variant_name(variant: &str) -> &str {
    match variant {
        "bare" => "axum (bare)",
        "statsd" => "axum + tower-statsd",
        "statsd-layer" => "axum + tower-statsd layer only",
        "statsd-down" => "axum + tower-statsd, StatsD unresolvable",
        "prometheus" => "axum + axum-prometheus",
        "python" => "FastAPI + pystatsd",
        other => other,
    }
}

/// `12 µs`, or `12.3 ms` from 10 ms up.
fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// The table of `scripts/bench-overhead`: per route, per variant (in the
/// order of `variants`), medians over rounds and the ratios to bare axum,
/// paired round by round.
pub fn overhead_table(rows: &[OverheadRow], variants: &[&str]) -> String {
    let mut out = String::new();
    out.push_str(
        "| variant | route | req/s median (min–max) | vs bare, paired | vs bare, best | p50 | p99 \
         | p99 vs bare | peak RSS | server CPU / request | StatsD CPU / s | errors |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let of = |variant: &str, route: &str| -> Vec<&OverheadRow> {
        rows.iter()
            .filter(|r| r.variant == variant && r.route == route)
            .collect()
    };
    let values = |rows: &[&OverheadRow], f: fn(&OverheadRow) -> f64| -> Vec<f64> {
        rows.iter().map(|r| f(r)).collect()
    };
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    for (route, label) in [("root", "`/?msg=`"), ("user", "`/user?id=`")] {
        let bare = of("bare", route);
        let bare_by_round: BTreeMap<u32, f64> = bare.iter().map(|r| (r.round, r.wrk.rps)).collect();
        let bare_p99 = median(&values(&bare, |r| r.wrk.p99_us));
        let bare_best = (!bare.is_empty()).then(|| max(&values(&bare, |r| r.wrk.rps)));
        for variant in variants {
            let these = of(variant, route);
            if these.is_empty() {
                continue;
            }
            let rps = values(&these, |r| r.wrk.rps);
            let ratios: Vec<f64> = these
                .iter()
                .filter_map(|r| Some(r.wrk.rps / bare_by_round.get(&r.round)?))
                .collect();
            let paired = median(&ratios).map_or("–".to_owned(), |m| format!("{:.1}%", 100.0 * m));
            let best = bare_best.map_or("–".to_owned(), |b| {
                format!("{:.1}%", 100.0 * max(&rps) / b)
            });
            let p99 = median(&values(&these, |r| r.wrk.p99_us)).unwrap_or(0.0);
            let d99 = bare_p99.map_or("–".to_owned(), |b| format!("{:+.0} µs", p99 - b));
            let rss = median(&values(&of(variant, "root"), |r| r.rss_kib)).unwrap_or(0.0);
            let errors: u64 = these.iter().map(|r| r.wrk.errors).sum();
            let _ = writeln!(
                out,
                "| {} | {label} | {:.0} ({:.0}–{:.0}) | {paired} | {best} | {} | {} | {d99} | {:.1} MiB | {:.0} ns | {:.0} ms | {errors} |",
                variant_name(variant),
                median(&rps).unwrap_or(0.0),
                rps.iter().copied().fold(f64::INFINITY, f64::min),
                max(&rps),
                fmt_us(median(&values(&these, |r| r.wrk.p50_us)).unwrap_or(0.0)),
                fmt_us(p99),
                rss / 1024.0,
                median(&values(&these, |r| r.server_cpu_ns)).unwrap_or(0.0),
                median(&values(&these, |r| r.statsd_cpu_ms_per_s)).unwrap_or(0.0),
            );
        }
    }
    out
}

/// What `scripts/bench-delivery` measured of one variant: what the server
/// served and the client reports, and what Graphite holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    /// The variant's name.
    pub variant: String,
    /// Requests served (both routes).
    pub served: u64,
    /// `/user` requests answered below 400 (set members sent).
    pub user_ok: u64,
    /// Sums read back from Graphite: `called`, `status.200`, the timer's
    /// count, the set's count.
    pub called: u64,
    /// See `called`.
    pub status: u64,
    /// See `called`.
    pub timers: u64,
    /// See `called`.
    pub sets: u64,
    /// Metrics the client dropped.
    pub client_dropped: u64,
    /// Packets the client failed to send.
    pub packets_failed: u64,
    /// The kernel's `RcvbufErrors` over the run.
    pub rcvbuf_errors: u64,
    /// CPU of the server and of the daemon, ms.
    pub cpu_ms: u64,
    /// See `cpu_ms`.
    pub daemon_cpu_ms: u64,
}

impl Delivery {
    /// `variant=NAME served=N user_ok=N called=N ...`: the fields by name,
    /// in any order; a missing number is 0.
    pub fn parse(line: &str) -> Delivery {
        let mut d = Delivery::default();
        for (key, value) in line.split_whitespace().filter_map(|kv| kv.split_once('=')) {
            let n = || {
                value
                    .parse::<f64>()
                    .map_or(0, |v| v.round().max(0.0) as u64)
            };
            match key {
                "variant" => d.variant = value.to_owned(),
                "served" => d.served = n(),
                "user_ok" => d.user_ok = n(),
                "called" => d.called = n(),
                "status" => d.status = n(),
                "timers" => d.timers = n(),
                "sets" => d.sets = n(),
                "client_dropped" => d.client_dropped = n(),
                "packets_failed" => d.packets_failed = n(),
                "rcvbuf_errors" => d.rcvbuf_errors = n(),
                "cpu_ms" => d.cpu_ms = n(),
                "daemon_cpu_ms" => d.daemon_cpu_ms = n(),
                _ => {}
            }
        }
        d
    }
}

/// Percent of `want` not received.
fn loss(got: u64, want: u64) -> f64 {
    if want == 0 {
        0.0
    } else {
        100.0 * (want as f64 - got as f64) / want as f64
    }
}

/// The table of `scripts/bench-delivery`: what was sent, what arrived, the
/// worst loss.
pub fn delivery_table(rows: &[Delivery]) -> String {
    let mut out = String::from(
        "| variant | requests served | counter received | status counter received | timer count received \
         | set members sent / counted | client dropped | packets failed | kernel UDP RcvbufErrors \
         | worst loss | client CPU s | daemon CPU s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for d in rows {
        let losses = [
            loss(d.called, d.served),
            loss(d.status, d.served),
            loss(d.timers, d.served),
            loss(d.sets, d.user_ok),
        ];
        let worst = losses.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let _ = writeln!(
            out,
            "| {} | {} | {} ({:.3}% lost) | {} ({:.3}% lost) | {} ({:.3}% lost) | {} / {} ({:.3}% lost) \
             | {} | {} | {} | {worst:.3}% | {:.1} | {:.1} |",
            d.variant,
            d.served,
            d.called,
            losses[0],
            d.status,
            losses[1],
            d.timers,
            losses[2],
            d.user_ok,
            d.sets,
            losses[3],
            d.client_dropped,
            d.packets_failed,
            d.rcvbuf_errors,
            d.cpu_ms as f64 / 1000.0,
            d.daemon_cpu_ms as f64 / 1000.0,
        );
    }
    out
}

/// The sum of the non-null datapoints of a Graphite render answer
/// (`format=json`), rounded.
pub fn sum_datapoints(render: &serde_json::Value) -> u64 {
    let sum: f64 = render
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|series| series["datapoints"].as_array())
        .flatten()
        .filter_map(|point| point[0].as_f64())
        .sum();
    sum.round().max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_a_stat_line_with_spaces_in_the_name() {
        // pid (comm) state ppid ... utime=field 14, stime=field 15.
        let stat = "42 (my (odd) server) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(cpu_ms_of_stat(stat, 100), Some(3000));
        assert_eq!(cpu_ms_of_stat(stat, 1000), Some(300));
        assert_eq!(cpu_ms_of_stat("garbage", 100), None);
        // This process has used some CPU, and the two reads agree in order.
        let a = process_cpu_ms("self").unwrap();
        let b = process_cpu_ms("self").unwrap();
        assert!(b >= a);
        assert_eq!(process_cpu_ms("0"), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    const WRK: &str = "Running 10s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  300.00us   9.00ms   90.00%
  Latency Distribution
     50%  612.00us
     75%    1.00ms
     90%    1.50ms
     99%    2.25ms
  123456 requests in 10.00s, 20.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  12345.60
Transfer/sec:      2.00MB
";

    #[test]
    fn reads_wrk() {
        assert_eq!(
            parse_wrk(WRK),
            Some(Wrk {
                rps: 12345.6,
                p50_us: 612.0,
                p99_us: 2250.0,
                errors: 12,
            })
        );
        assert_eq!(parse_wrk("no report"), None);
        assert_eq!(micros("2.00s"), Some(2e6));
        assert_eq!(micros("1.5m"), Some(90e6));
        assert_eq!(micros("7"), Some(7.0));
    }

    fn row(variant: &str, route: &str, round: u32, rps: f64, p99: f64) -> OverheadRow {
        OverheadRow {
            variant: variant.into(),
            route: route.into(),
            round,
            wrk: Wrk {
                rps,
                p50_us: 500.0,
                p99_us: p99,
                errors: 1,
            },
            rss_kib: 10240.0,
            server_cpu_ns: 2000.0,
            statsd_cpu_ms_per_s: 10.0,
        }
    }

    #[test]
    fn the_overhead_table_pairs_rounds() {
        let line = "statsd\troot\t2\t1000\t500\t900\t1\t10240\t2000\t10";
        assert_eq!(
            OverheadRow::parse(line),
            Some(row("statsd", "root", 2, 1000.0, 900.0))
        );
        assert_eq!(OverheadRow::parse("statsd\troot"), None);
        let rows = [
            row("bare", "root", 1, 1000.0, 800.0),
            row("bare", "root", 2, 2000.0, 1000.0),
            row("statsd", "root", 1, 900.0, 900.0),
            row("statsd", "root", 2, 1900.0, 12_000.0),
        ];
        let table = overhead_table(&rows, &["bare", "statsd"]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert_eq!(
            lines[2],
            "| axum (bare) | `/?msg=` | 1500 (1000–2000) | 100.0% | 100.0% | 500 µs | 900 µs | +0 µs | 10.0 MiB | 2000 ns | 10 ms | 2 |"
        );
        // Paired: 0.9 and 0.95, median 92.5%; best 1900 / 2000.
        assert_eq!(
            lines[3],
            "| axum + tower-statsd | `/?msg=` | 1400 (900–1900) | 92.5% | 95.0% | 500 µs | 6450 µs | +5550 µs | 10.0 MiB | 2000 ns | 10 ms | 2 |"
        );
        // Without bare rows the ratios are dashes.
        let alone = overhead_table(&rows[2..], &["statsd"]);
        assert!(alone.contains("| – | – |"), "{alone}");
        assert!(alone.contains("| – | 10.0 MiB"), "{alone}");
    }

    #[test]
    fn per_request_costs() {
        assert_eq!(per_request(2000, 300, 1000.0, 10.0), (200_000.0, 30.0));
        assert_eq!(per_request(2000, 300, 0.0, 0.0), (0.0, 0.0));
    }

    #[test]
    fn the_delivery_table_names_the_worst_loss() {
        let d = Delivery {
            variant: "statsd".into(),
            served: 1000,
            user_ok: 400,
            called: 1000,
            status: 990,
            timers: 1000,
            sets: 398,
            client_dropped: 0,
            packets_failed: 2,
            rcvbuf_errors: 3,
            cpu_ms: 1500,
            daemon_cpu_ms: 2500,
        };
        let line = "variant=statsd served=1000 user_ok=400 called=1000 status=990.2 timers=1000 \
                    sets=398 client_dropped=0 packets_failed=2 rcvbuf_errors=3 cpu_ms=1500 \
                    daemon_cpu_ms=2500 other=9";
        assert_eq!(Delivery::parse(line), d);
        let table = delivery_table(&[d]);
        assert_eq!(
            table.lines().nth(2),
            Some(
                "| statsd | 1000 | 1000 (0.000% lost) | 990 (1.000% lost) | 1000 (0.000% lost) \
                 | 400 / 398 (0.500% lost) | 0 | 2 | 3 | 1.000% | 1.5 | 2.5 |"
            )
        );
        assert_eq!(loss(5, 0), 0.0);
    }

    #[test]
    fn sums_graphite_datapoints() {
        let render = serde_json::json!([
            {"target": "a", "datapoints": [[1.0, 10], [null, 20], [2.4, 30]]},
            {"target": "b", "datapoints": [[3.0, 10]]}
        ]);
        assert_eq!(sum_datapoints(&render), 6);
        assert_eq!(sum_datapoints(&serde_json::json!({})), 0);
    }
}
