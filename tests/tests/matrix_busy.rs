//! The compatibility matrix above the timer cap and at saturation: what
//! each real server stores when a route is busy, against the truth.
//!
//! **Busy**: one route receives 400 requests in one window, more than five
//! times the smallest timer cap (64), which a profile that samples uses
//! here. Request `i` sleeps `2 + (i * 7919) % 19` ms, so the true latencies
//! are known: 2..=20 ms, spread evenly, mean and 90th percentile computed
//! below. The server must store the exact count and lower, upper, mean and
//! (where it keeps one) the 90th percentile between the designed latencies'
//! and the client's (a sleep wakes late), widened for a sampled timer by the
//! sampling error (docs/server-profiles.md states it: 0.63 ms, one standard
//! error of the mean of 64 of these 400 values; we allow four, 2.8 ms).
//!
//! **Saturation**: one route driven as fast as this process can for two
//! seconds, in windows of 1 s, over UDP with the default profile: the
//! server's counter must hold every request (counts leave ahead of timer
//! values, so a daemon that drops datagrams drops timer values, not counts).
//! The timer values stored are reported, not asserted: over UDP at this rate
//! Etsy StatsD drops some; collectd counts only values of 1 ms or more, and
//! these requests take microseconds. With its own profile (sampled, a few
//! packets a window), Etsy StatsD holds every timer value too, asserted.
//!
//! Each test prints its row (`BUSY |` or `SATURATION |`); `scripts/matrix`
//! collects them with the quiet matrix's rows (`tests/tests/matrix.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use e2e::servers::{Collectd, Netdata};
use e2e::{poll, Stack};
use tower::ServiceExt;
use tower_statsd::{Server, Statsd, Transport};

/// The smallest timer cap: five times it fits in a quick test.
const CAP: usize = 64;
const BUSY: usize = 400;
const CLIENTS: usize = 8;

/// Milliseconds request `i` sleeps.
fn delay(i: usize) -> f64 {
    (2 + (i * 7919) % 19) as f64
}

/// The statistics of the true latencies.
#[derive(Debug, Clone, Copy)]
struct Stats {
    count: f64,
    lower: f64,
    upper: f64,
    mean: f64,
    /// The 90th percentile, where the server keeps one.
    p90: Option<f64>,
}

/// The statistics of the designed latencies, a lower bound of the truth.
fn truth() -> Stats {
    stats((0..BUSY).map(delay).collect())
}

fn stats(mut values: Vec<f64>) -> Stats {
    values.sort_by(f64::total_cmp);
    Stats {
        count: BUSY as f64,
        lower: values[0],
        upper: values[BUSY - 1],
        mean: values.iter().sum::<f64>() / BUSY as f64,
        // Etsy StatsD's `upper_90`: the largest of the lowest 90%.
        p90: Some(values[(BUSY as f64 * 0.9).round() as usize - 1]),
    }
}

/// Whether `stored` is the truth. The layer's time for a request lies
/// between the time it was designed to sleep and the time the client saw
/// (a sleep wakes late, by up to several ms on a loaded 2-core machine), so
/// each statistic must lie between the designed latencies' and the client's
/// (`seen`), less one whole ms for a server that cuts fractions, widened by
/// four standard errors for a sample.
fn check(stored: &Stats, seen: &Stats, sampled: bool, whole_ms: bool) -> Result<(), String> {
    let truth = truth();
    let below = if whole_ms { 1.0 } else { 0.0 };
    let within = |what: &str, got: f64, low: f64, high: f64, error: f64| {
        (got >= low - below - error && got <= high + error)
            .then_some(())
            .ok_or(format!(
                "{what}: stored {got:.3}, true between {low:.3} and {high:.3}"
            ))
    };
    if stored.count != truth.count {
        return Err(format!(
            "count: stored {}, true {}",
            stored.count, truth.count
        ));
    }
    within("lower", stored.lower, truth.lower, seen.lower, 0.0)?;
    within("upper", stored.upper, truth.upper, seen.upper, 0.0)?;
    within(
        "mean",
        stored.mean,
        truth.mean,
        seen.mean,
        if sampled { 4.0 * 0.7 } else { 0.0 },
    )?;
    if let (Some(got), Some(low), Some(high)) = (stored.p90, truth.p90, seen.p90) {
        // A percentile of a sample of 64 moves by about a value's spacing
        // near the top (±1 ms here): four times that allowed; a server that
        // interpolates may land a value away.
        within("p90", got, low, high, if sampled { 4.0 } else { 1.0 })?;
    }
    Ok(())
}

/// Sends the busy load to `port` through a client for `server` (`None`:
/// the default profile) and flushes it as one window; the statistics of
/// the latencies the client saw.
fn drive_busy(prefix: &str, port: u16, transport: Transport, server: Option<Server>) -> Stats {
    let mut builder = Statsd::builder()
        .host("127.0.0.1")
        .port(port)
        .prefix(prefix)
        .transport(transport)
        .flush_interval(Duration::from_secs(60));
    if let Some(server) = server {
        builder = builder.server(server);
        if server.reads_timer_rates() {
            builder = builder.max_timer_samples(CAP);
        }
    }
    let statsd = builder.build().unwrap();
    let app = Router::new()
        .route(
            "/work",
            get(|Query(q): Query<HashMap<String, u64>>| async move {
                tokio::time::sleep(Duration::from_millis(q["ms"])).await;
                "ok"
            }),
        )
        .layer(statsd.layer());
    let (_server, url) = e2e::serve(app);
    let seen = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let url = &url;
                scope.spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    let mut seen = Vec::new();
                    for i in (client..BUSY).step_by(CLIENTS) {
                        let start = Instant::now();
                        let response = http
                            .get(format!("{url}/work?ms={}", delay(i)))
                            .send()
                            .unwrap();
                        assert_eq!(response.status(), 200);
                        response.bytes().unwrap();
                        seen.push(start.elapsed().as_secs_f64() * 1000.0);
                    }
                    seen
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    statsd.flush().expect("the window was not sent");
    stats(seen)
}

/// The row of the README's table: each statistic stored, and in brackets
/// the range the truth lies in (designed .. seen by the client).
fn row(server: &str, profile: Option<Server>, transport: &str, s: &Stats, seen: &Stats) -> String {
    let profile = profile.map_or("(default) generic".to_owned(), |p| p.to_string());
    let t = truth();
    let cell = |got: Option<f64>, low: Option<f64>, high: Option<f64>| match (got, low, high) {
        (Some(got), Some(low), Some(high)) => format!("{got:.2} ({low:.2}..{high:.2})"),
        _ => "not kept".to_owned(),
    };
    format!(
        "BUSY | {server} | `{profile}` | {transport} | {} of {} | {} | {} | {} | {} |",
        s.count,
        t.count,
        cell(Some(s.lower), Some(t.lower), Some(seen.lower)),
        cell(Some(s.upper), Some(t.upper), Some(seen.upper)),
        cell(Some(s.mean), Some(t.mean), Some(seen.mean)),
        cell(s.p90, t.p90, seen.p90),
    )
}

/// Points of one flush of `values`, as (count, lower, upper, mean, p90):
/// the statistics of all of them, weighted by their counts.
fn combine(points: &[(f64, f64, f64, f64, Option<f64>)]) -> Stats {
    let count: f64 = points.iter().map(|p| p.0).sum();
    Stats {
        count,
        lower: points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
        upper: points.iter().map(|p| p.2).fold(f64::NEG_INFINITY, f64::max),
        mean: points.iter().map(|p| p.0 * p.3).sum::<f64>() / count,
        // Percentiles do not add up; the flush that holds most values says.
        p90: points
            .iter()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .and_then(|p| p.4),
    }
}

// ---------------------------------------------------------------- Etsy StatsD

fn etsy(profile: Option<Server>, transport: Transport, name: &str) {
    let stack = Stack::shared();
    let prefix = format!("busy{}{name}", profile.map_or("default", Server::as_str));
    let seen = drive_busy(&prefix, stack.statsd_port, transport, profile);
    let series = |stat: &str| {
        stack
            .render(&format!("stats.timers.{prefix}.work.{stat}"), "-10min")
            .unwrap_or_default()
    };
    let stored = poll(
        "Etsy StatsD holds the timer",
        Duration::from_secs(60),
        || {
            let count = series("count");
            let total: f64 = count.iter().map(|p| p.1).sum();
            if total < BUSY as f64 {
                return Err(format!("count {total}"));
            }
            let (lower, upper, mean, p90) = (
                series("lower"),
                series("upper"),
                series("mean"),
                series("upper_90"),
            );
            let at = |s: &[(i64, f64)], t: i64| s.iter().find(|p| p.0 == t).map(|p| p.1);
            let points: Vec<_> = count
                .iter()
                .filter(|p| p.1 > 0.0)
                .map(|&(t, n)| {
                    Some((
                        n,
                        at(&lower, t)?,
                        at(&upper, t)?,
                        at(&mean, t)?,
                        at(&p90, t),
                    ))
                })
                .collect::<Option<_>>()
                .ok_or("statistics not all in yet")?;
            Ok(combine(&points))
        },
    );
    println!(
        "{}",
        row("Etsy StatsD 0.9.0", profile, name, &stored, &seen)
    );
    let sampled = profile.is_some_and(Server::reads_timer_rates);
    check(&stored, &seen, sampled, false).unwrap();
}

#[test]
fn etsy_statsd_busy_default_udp() {
    etsy(None, Transport::Udp, "udp");
}

#[test]
fn etsy_statsd_busy_default_tcp() {
    etsy(None, Transport::Tcp, "tcp");
}

#[test]
fn etsy_statsd_busy_etsy_udp() {
    etsy(Some(Server::Etsy), Transport::Udp, "udp");
}

#[test]
fn etsy_statsd_busy_etsy_tcp() {
    etsy(Some(Server::Etsy), Transport::Tcp, "tcp");
}

// ---------------------------------------------------------------- collectd

fn collectd(profile: Option<Server>) {
    let collectd = Collectd::start();
    let prefix = format!("busy{}", profile.map_or("default", Server::as_str));
    let seen = drive_busy(&prefix, collectd.port, Transport::Udp, profile);
    let stored = poll("collectd holds the timer", Duration::from_secs(60), || {
        let csv = |name: &str| collectd.csv(name).unwrap_or_default();
        let counts = csv(&format!("gauge-{prefix}.work-count"));
        let total: f64 = counts.iter().filter(|v| v.is_finite()).sum();
        if total < BUSY as f64 {
            return Err(format!("count {total}"));
        }
        // Latencies in seconds, one row per interval; NaN when idle.
        let ms = |stat: &str| -> Vec<f64> {
            csv(&format!("latency-{prefix}.work-{stat}"))
                .iter()
                .map(|s| s * 1000.0)
                .collect()
        };
        let (lower, upper, average, p90) =
            (ms("lower"), ms("upper"), ms("average"), ms("percentile-90"));
        let points: Vec<_> = counts
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_finite() && **n > 0.0)
            .map(|(i, &n)| {
                Some((
                    n,
                    *lower.get(i)?,
                    *upper.get(i)?,
                    *average.get(i)?,
                    p90.get(i).copied(),
                ))
            })
            .collect::<Option<_>>()
            .ok_or("statistics not all in yet")?;
        Ok(combine(&points))
    });
    println!(
        "{}",
        row(
            "collectd 5.12 (statsd plugin)",
            profile,
            "udp",
            &stored,
            &seen
        )
    );
    check(&stored, &seen, false, true).unwrap();
}

#[test]
fn collectd_busy_default() {
    collectd(None);
}

#[test]
fn collectd_busy_collectd() {
    collectd(Some(Server::Collectd));
}

// ---------------------------------------------------------------- netdata

fn netdata(profile: Option<Server>, transport: Transport, name: &str) {
    let netdata = Netdata::start();
    let prefix = format!("busy{}{name}", profile.map_or("default", Server::as_str));
    let seen = drive_busy(&prefix, netdata.port, transport, profile);
    let chart = format!("statsd_{prefix}.work_timer");
    let stored = poll("netdata holds the timer", Duration::from_secs(60), || {
        let events = netdata
            .chart_sums(&chart)
            .and_then(|(_, sums)| sums.get("events").copied())
            .unwrap_or(0.0)
            .round();
        if events < BUSY as f64 {
            return Err(format!("events {events}"));
        }
        let values = |d: &str| netdata.chart_values(&chart, d);
        let one = |d: &str, fold: fn(f64, f64) -> f64| values(d).into_iter().reduce(fold);
        Ok(Stats {
            count: events,
            lower: one("min", f64::min).ok_or("no min")?,
            upper: one("max", f64::max).ok_or("no max")?,
            mean: one("average", f64::max).ok_or("no average")?,
            p90: None,
        })
    });
    println!(
        "{}",
        row("netdata 1.37 (statsd)", profile, name, &stored, &seen)
    );
    check(&stored, &seen, false, false).unwrap();
}

#[test]
fn netdata_busy_default_udp() {
    netdata(None, Transport::Udp, "udp");
}

#[test]
fn netdata_busy_default_tcp() {
    netdata(None, Transport::Tcp, "tcp");
}

#[test]
fn netdata_busy_netdata_udp() {
    netdata(Some(Server::Netdata), Transport::Udp, "udp");
}

// ---------------------------------------------------------------- saturation

/// Drives one route in process as fast as one thread can for two seconds,
/// in 1 s windows over UDP with `server`'s profile (`None`: the default);
/// the requests made.
fn saturate(prefix: &str, port: u16, server: Option<Server>) -> u64 {
    let mut builder = Statsd::builder()
        .host("127.0.0.1")
        .port(port)
        .prefix(prefix);
    if let Some(server) = server {
        builder = builder.server(server);
    }
    let statsd = builder.build().unwrap();
    let app = Router::new()
        .route("/sat", get(|| async { "ok" }))
        .layer(statsd.layer())
        .with_state(());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut requests = 0;
    let start = Instant::now();
    rt.block_on(async {
        while start.elapsed() < Duration::from_secs(2) {
            let req = axum::http::Request::get("/sat")
                .body(axum::body::Body::empty())
                .unwrap();
            let response = app.clone().oneshot(req).await.unwrap();
            axum::body::to_bytes(response.into_body(), 64)
                .await
                .unwrap();
            requests += 1;
        }
    });
    statsd.flush().unwrap();
    requests
}

fn saturation_row(
    server: &str,
    profile: Option<Server>,
    requests: u64,
    called: f64,
    timer_values: f64,
) -> String {
    let profile = profile.map_or("(default) generic".to_owned(), |p| p.to_string());
    format!(
        "SATURATION | {server} | `{profile}` | udp | {requests} in 2 s ({:.0}/s) | {called} of {requests} | {timer_values} of {requests} |",
        requests as f64 / 2.0
    )
}

/// The timer's count once it holds every request, or what it holds after
/// ten seconds: a server that drops datagrams at this rate never gets there
/// (reported, not asserted, where the profile sends every value).
fn timer_count(mut count: impl FnMut() -> f64, requests: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = count();
        if got >= requests as f64 || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn etsy_saturated(profile: Option<Server>) -> (u64, f64) {
    let stack = Stack::shared();
    let prefix = format!("sat{}", profile.map_or("default", Server::as_str));
    let requests = saturate(&prefix, stack.statsd_port, profile);
    let sum = |t: &str| stack.render_sum(t, "-10min").unwrap_or(-1.0);
    let called = poll(
        "Etsy StatsD holds the count",
        Duration::from_secs(60),
        || {
            let called = sum(&format!("stats_counts.{prefix}.sat.called"));
            (called == requests as f64)
                .then_some(called)
                .ok_or(format!("{called} of {requests}"))
        },
    );
    let timers = timer_count(
        || sum(&format!("stats.timers.{prefix}.sat.count")),
        requests,
    );
    println!(
        "{}",
        saturation_row("Etsy StatsD 0.9.0", profile, requests, called, timers)
    );
    (requests, timers)
}

#[test]
fn etsy_statsd_counts_every_request_at_saturation() {
    etsy_saturated(None);
}

#[test]
fn etsy_statsd_counts_every_request_and_timer_value_at_saturation_with_its_profile() {
    // Sampled: a few hundred lines a window, whatever the rate.
    let (requests, timers) = etsy_saturated(Some(Server::Etsy));
    assert_eq!(timers, requests as f64);
}

#[test]
fn collectd_counts_every_request_at_saturation() {
    let collectd = Collectd::start();
    let requests = saturate("satdefault", collectd.port, None);
    let called = poll("collectd holds the count", Duration::from_secs(60), || {
        let called = collectd
            .csv("derive-satdefault.sat.called")
            .and_then(|v| v.last().copied())
            .unwrap_or(0.0);
        (called == requests as f64)
            .then_some(called)
            .ok_or(format!("{called} of {requests}"))
    });
    let timers = timer_count(
        || {
            let counts = collectd
                .csv("gauge-satdefault.sat-count")
                .unwrap_or_default();
            counts.iter().filter(|v| v.is_finite()).sum()
        },
        requests,
    );
    let server = "collectd 5.12 (statsd plugin)";
    println!("{}", saturation_row(server, None, requests, called, timers));
}

#[test]
fn netdata_counts_every_request_at_saturation() {
    let netdata = Netdata::start();
    let requests = saturate("satdefault", netdata.port, None);
    let dim = |chart: &str, d: &str| {
        netdata
            .chart_sums(chart)
            .and_then(|(_, sums)| sums.get(d).copied())
            .unwrap_or(0.0)
            .round()
    };
    let called = poll("netdata holds the count", Duration::from_secs(60), || {
        let called = dim("statsd_satdefault.sat.called_counter", "counter");
        (called == requests as f64)
            .then_some(called)
            .ok_or(format!("{called} of {requests}"))
    });
    let timers = timer_count(|| dim("statsd_satdefault.sat_timer", "events"), requests);
    let server = "netdata 1.37 (statsd)";
    println!("{}", saturation_row(server, None, requests, called, timers));
}
