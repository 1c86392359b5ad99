//! The compatibility matrix, from real daemons: the example API under a fixed
//! load, sending in one wire dialect over one transport to one StatsD server,
//! and what that server then holds.
//!
//! The load: 50 `GET /?msg=hi` and 10 `GET /user?id=K` over 5 distinct ids
//! (each requested twice). The API aggregates for 60 s and is then stopped
//! with SIGTERM, so everything goes out in the one flush of its graceful
//! shutdown: each set member is sent exactly once, and a server's per-flush
//! distinct counts add up to the distinct users. The root handler sleeps
//! 2..20 ms, so its timer values carry fractions of a millisecond and are
//! all above 1 ms; `/user` answers in well under a millisecond.
//!
//! Servers (each started by the test on free loopback ports, private config):
//! Etsy StatsD 0.9.0 (the stack, read from Graphite and its admin port),
//! collectd 5.12's statsd plugin (read from its CSV files), netdata 1.37's
//! statsd (read from `/api/v1/data`). For every case, once the counters are
//! in, the server flushes twice more before anything is read, so a late or a
//! duplicated line would show.
//!
//! Each test prints its row of the README's table (a line starting with
//! `MATRIX |`); `scripts/matrix` runs this file and collects them.

use std::time::Duration;

use e2e::servers::{Collectd, Netdata};
use e2e::{free_port, get, poll, ExampleApi, Stack};

const ROOT_REQUESTS: u64 = 50;
const USER_REQUESTS: u64 = 10;
const DISTINCT_USERS: u64 = 5;

/// What one server holds after the load.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    root_called: f64,
    user_called: f64,
    root_timer_events: f64,
    user_timer_events: f64,
    users: f64,
    parse_errors: u64,
    /// Whether timer values keep fractions of a millisecond (`None`: no
    /// timer value arrived).
    fractional_ms: Option<bool>,
}

impl Outcome {
    fn counters_in(&self) -> bool {
        self.root_called == ROOT_REQUESTS as f64 && self.user_called == USER_REQUESTS as f64
    }

    /// Every counter, every timer value, every user, no parse error.
    fn everything_in(&self) -> bool {
        self.counters_in()
            && self.root_timer_events == ROOT_REQUESTS as f64
            && self.user_timer_events == USER_REQUESTS as f64
            && self.users == DISTINCT_USERS as f64
            && self.parse_errors == 0
    }

    fn row(&self, server: &str, dialect: &str, transport: &str) -> String {
        let of = |got: f64, want: u64| format!("{} of {want}", round(got));
        let precision = match self.fractional_ms {
            Some(true) => "kept (fractional ms)",
            Some(false) => "whole ms (truncated)",
            None => "no timer values",
        };
        format!(
            "MATRIX | {server} | `{dialect}` | {transport} | {} | {} | {} | {} | {} | {precision} | {} |",
            of(self.root_called, ROOT_REQUESTS),
            of(self.user_called, USER_REQUESTS),
            of(self.root_timer_events, ROOT_REQUESTS),
            of(self.user_timer_events, USER_REQUESTS),
            of(self.users, DISTINCT_USERS),
            self.parse_errors,
        )
    }
}

/// netdata spreads a value that arrived between two seconds over both; its
/// sums are whole numbers up to float noise.
fn round(v: f64) -> f64 {
    let r = v.round() + 0.0; // no "-0"
    if (v - r).abs() < 0.01 {
        r
    } else {
        v
    }
}

fn is_fractional(ms: f64) -> bool {
    (ms - ms.round()).abs() > 1e-6
}

/// Runs the example API against `port`, sends the fixed load, and stops it
/// gracefully (which flushes everything it aggregated).
fn drive(prefix: &str, port: u16, admin_port: Option<u16>, protocol: &str, transport: &str) {
    let env: Vec<(String, String)> = [
        ("STATSD_HOST", "127.0.0.1".to_owned()),
        ("STATSD_PORT", port.to_string()),
        // Only Etsy StatsD has an admin port; elsewhere the API's start-up
        // check finds a closed port, warns and goes on.
        (
            "STATSD_ADMIN_PORT",
            admin_port.unwrap_or_else(free_port).to_string(),
        ),
        ("STATSD_PREFIX", prefix.to_owned()),
        ("STATSD_PROTOCOL", protocol.to_owned()),
        ("STATSD_TRANSPORT", transport.to_owned()),
        ("STATSD_FLUSH_MS", "60000".to_owned()),
        ("DEMO_MIN_DELAY_MS", "2".to_owned()),
        ("DEMO_MAX_DELAY_MS", "20".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let api = ExampleApi::start(&env);
    let http = reqwest::blocking::Client::new();
    for _ in 0..ROOT_REQUESTS {
        let (status, body) = get(&http, &format!("{}/?msg=hi", api.url));
        assert_eq!((status, body.as_str()), (200, r#"{"message":"hi"}"#));
    }
    for i in 0..USER_REQUESTS {
        let id = 100 + i % DISTINCT_USERS;
        let (status, _) = get(&http, &format!("{}/user?id={id}", api.url));
        assert_eq!(status, 200);
    }
    assert!(api.terminate(), "the example API did not stop cleanly");
}

/// Polls until the counters are in, lets the server flush twice more, then
/// measures once.
fn settle(
    what: &str,
    mut measure: impl FnMut() -> Outcome,
    mut flushes: impl FnMut() -> usize,
) -> Outcome {
    poll(what, Duration::from_secs(60), || {
        let outcome = measure();
        outcome
            .counters_in()
            .then_some(())
            .ok_or(format!("{outcome:?}"))
    });
    let seen = flushes();
    poll("two more flushes", Duration::from_secs(30), || {
        let now = flushes();
        (now >= seen + 2)
            .then_some(())
            .ok_or(format!("{now} flushes"))
    });
    measure()
}

// ---------------------------------------------------------------- Etsy StatsD

fn etsy_statsd(protocol: &str, transport: &str) {
    let stack = Stack::shared();
    let prefix = format!("matrix{protocol}{transport}");
    drive(
        &prefix,
        stack.statsd_port,
        Some(stack.admin_port),
        protocol,
        transport,
    );

    let sum = |target: String| stack.render_sum(&target, "-10min").unwrap_or(-1.0);
    let measure = || {
        let upper = stack
            .render(&format!("stats.timers.{prefix}.root.upper"), "-10min")
            .unwrap_or_default();
        let stats = stack.admin("stats");
        let bad_lines: u64 = stats
            .lines()
            .find_map(|l| l.strip_prefix("messages.bad_lines_seen: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(u64::MAX);
        Outcome {
            root_called: sum(format!("stats_counts.{prefix}.root.called")),
            user_called: sum(format!("stats_counts.{prefix}.user.called")),
            root_timer_events: sum(format!("stats.timers.{prefix}.root.count")),
            user_timer_events: sum(format!("stats.timers.{prefix}.user.count")),
            users: sum(format!("stats.sets.{prefix}.user.count")),
            // Its own count, or its log's "Bad line"s if that says more.
            parse_errors: bad_lines.max(stack.log("statsd").matches("Bad line").count() as u64),
            fractional_ms: upper
                .iter()
                .any(|(_, v)| *v > 0.0)
                .then(|| upper.iter().any(|(_, v)| is_fractional(*v))),
        }
    };
    // One point a flush: the counter is sent every flush once known (0 when idle).
    let flushes = || {
        stack
            .render(&format!("stats_counts.{prefix}.root.called"), "-10min")
            .map(|p| p.len())
            .unwrap_or(0)
    };
    let outcome = settle("Etsy StatsD holds the counters", measure, flushes);
    println!("{}", outcome.row("Etsy StatsD 0.9.0", protocol, transport));
    assert!(outcome.everything_in(), "{outcome:?}");
    assert_eq!(outcome.fractional_ms, Some(true), "{outcome:?}");
}

#[test]
fn etsy_statsd_reads_plain_over_udp() {
    etsy_statsd("plain", "udp");
}

#[test]
fn etsy_statsd_reads_plain_over_tcp() {
    etsy_statsd("plain", "tcp");
}

#[test]
fn etsy_statsd_reads_etsy_over_udp() {
    etsy_statsd("etsy", "udp");
}

#[test]
fn etsy_statsd_reads_etsy_over_tcp() {
    etsy_statsd("etsy", "tcp");
}

// ---------------------------------------------------------------- collectd

fn collectd(protocol: &str) -> Outcome {
    collectd_with_names(protocol).0
}

/// The outcome, and the names of every CSV file collectd wrote.
fn collectd_with_names(protocol: &str) -> (Outcome, Vec<String>) {
    let collectd = Collectd::start();
    let prefix = format!("matrix{protocol}");
    drive(&prefix, collectd.port, None, protocol, "udp");

    let measure = || {
        let last = |name: String| {
            collectd
                .csv(&name)
                .and_then(|v| v.last().copied())
                .unwrap_or(0.0)
        };
        let total = |name: String| collectd.csv(&name).unwrap_or_default().iter().sum::<f64>();
        // Latencies are written in seconds.
        let latencies: Vec<f64> = ["lower", "upper", "sum"]
            .iter()
            .flat_map(|s| {
                collectd
                    .csv(&format!("latency-{prefix}.root-{s}"))
                    .unwrap_or_default()
            })
            .filter(|v| v.is_finite() && *v > 0.0)
            .map(|s| s * 1000.0)
            .collect();
        let log = collectd.log();
        Outcome {
            // `derive`: the running total since collectd started.
            root_called: last(format!("derive-{prefix}.root.called")),
            user_called: last(format!("derive-{prefix}.user.called")),
            // `TimerCount true`: the values received in each interval.
            root_timer_events: total(format!("gauge-{prefix}.root-count")),
            user_timer_events: total(format!("gauge-{prefix}.user-count")),
            // `objects`: the distinct members of each interval.
            users: total(format!("objects-{prefix}.user")),
            // Every word of the plugin but its greeting ("Unable to parse line").
            parse_errors: log
                .matches("statsd plugin:")
                .count()
                .saturating_sub(log.matches("statsd plugin: Listening on").count())
                as u64,
            fractional_ms: (!latencies.is_empty())
                .then(|| latencies.iter().any(|ms| is_fractional(*ms))),
        }
    };
    let flushes = || {
        collectd
            .csv(&format!("derive-{prefix}.root.called"))
            .map(|v| v.len())
            .unwrap_or(0)
    };
    let outcome = settle("collectd holds the counters", measure, flushes);
    println!(
        "{}",
        outcome.row("collectd 5.12 (statsd plugin)", protocol, "udp")
    );
    (outcome, collectd.csv_names())
}

#[test]
fn collectd_reads_plain() {
    let outcome = collectd("plain");
    // collectd keeps latencies as whole milliseconds (12.7 ms arrives as
    // 12), and a value below 1 ms becomes 0, which its latency counter
    // skips: the root timer (2..20 ms) is counted exactly, `/user`'s
    // sub-millisecond values (nearly) all go missing from the count.
    let whole_ms = Outcome {
        user_timer_events: USER_REQUESTS as f64,
        ..outcome.clone()
    };
    assert!(whole_ms.everything_in(), "{outcome:?}");
    assert!(
        outcome.user_timer_events < USER_REQUESTS as f64,
        "{outcome:?}"
    );
    assert_eq!(outcome.fractional_ms, Some(false), "{outcome:?}");
}

#[test]
fn collectd_rejects_etsy() {
    let outcome = collectd("etsy");
    assert!(outcome.counters_in(), "{outcome:?}");
    // "Unable to parse line" for every multi-value timer and set line.
    assert!(outcome.parse_errors > 0, "{outcome:?}");
    assert!(
        outcome.root_timer_events < ROOT_REQUESTS as f64,
        "{outcome:?}"
    );
    assert!(outcome.users < DISTINCT_USERS as f64, "{outcome:?}");
}

// ---------------------------------------------------------------- netdata

fn netdata(protocol: &str, transport: &str) -> Outcome {
    let netdata = Netdata::start();
    let prefix = format!("matrix{protocol}{transport}");
    drive(&prefix, netdata.port, None, protocol, transport);

    let dim = |chart: String, dimension: &str| {
        netdata
            .chart_sums(&chart)
            .and_then(|(_, sums)| sums.get(dimension).copied())
            .unwrap_or(0.0)
    };
    let measure = || {
        let max = netdata.chart_values(&format!("statsd_{prefix}.root_timer"), "max");
        let log = netdata.log();
        let events = netdata
            .chart_sums("netdata.statsd_events")
            .map(|(_, s)| s)
            .unwrap_or_default();
        let rejected = events.get("unknown").copied().unwrap_or(0.0)
            + events.get("errors").copied().unwrap_or(0.0);
        Outcome {
            root_called: round(dim(
                format!("statsd_{prefix}.root.called_counter"),
                "counter",
            )),
            user_called: round(dim(
                format!("statsd_{prefix}.user.called_counter"),
                "counter",
            )),
            // `add dimension for number of events received`: values received.
            root_timer_events: round(dim(format!("statsd_{prefix}.root_timer"), "events")),
            user_timer_events: round(dim(format!("statsd_{prefix}.user_timer"), "events")),
            // The set chart: the distinct members of each flush.
            users: round(dim(format!("statsd_{prefix}.user_set"), "unique")),
            // Its own count of unknown and bad lines, or its log's
            // complaints ("unknown metric type") if those say more.
            parse_errors: (rejected.round() as u64).max(
                log.lines()
                    .filter(|l| l.contains("ERROR : STATSD_COLLECTOR"))
                    .count() as u64,
            ),
            fractional_ms: (!max.is_empty()).then(|| max.iter().any(|ms| is_fractional(*ms))),
        }
    };
    let flushes = || {
        netdata
            .chart_sums(&format!("statsd_{prefix}.root.called_counter"))
            .map(|(points, _)| points)
            .unwrap_or(0)
    };
    let outcome = settle("netdata holds the counters", measure, flushes);
    println!(
        "{}",
        outcome.row("netdata 1.37 (statsd)", protocol, transport)
    );
    outcome
}

#[test]
fn netdata_reads_plain_over_udp() {
    let outcome = netdata("plain", "udp");
    assert!(outcome.everything_in(), "{outcome:?}");
    assert_eq!(outcome.fractional_ms, Some(true), "{outcome:?}");
}

#[test]
fn netdata_reads_plain_over_tcp() {
    let outcome = netdata("plain", "tcp");
    assert!(outcome.everything_in(), "{outcome:?}");
    assert_eq!(outcome.fractional_ms, Some(true), "{outcome:?}");
}

#[test]
fn netdata_rejects_etsy() {
    let outcome = netdata("etsy", "udp");
    assert!(outcome.counters_in(), "{outcome:?}");
    // "unknown metric type 'ms:4.1'" for every multi-value line.
    assert!(outcome.parse_errors > 0, "{outcome:?}");
    assert!(
        outcome.root_timer_events < ROOT_REQUESTS as f64,
        "{outcome:?}"
    );
    assert!(outcome.users < DISTINCT_USERS as f64, "{outcome:?}");
}

// ---------------------------------------------------------------- DogStatsD 1.1 elsewhere

#[test]
fn collectd_misnames_dogstatsd_timers() {
    let (outcome, names) = collectd_with_names("dogstatsd");
    assert!(outcome.counters_in(), "{outcome:?}");
    assert_eq!(outcome.users, DISTINCT_USERS as f64, "{outcome:?}");
    // collectd splits `k:1.5:2.5|ms` at its last colon: a timer named
    // `k:1.5` with the value 2.5, and no word in its log.
    assert_eq!(outcome.root_timer_events, 0.0, "{outcome:?}");
    assert_eq!(outcome.parse_errors, 0, "{outcome:?}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("gauge-matrixdogstatsd.root:")),
        "{names:?}"
    );
}

#[test]
fn netdata_rejects_dogstatsd_timers() {
    let outcome = netdata("dogstatsd", "udp");
    assert!(outcome.counters_in(), "{outcome:?}");
    assert_eq!(outcome.users, DISTINCT_USERS as f64, "{outcome:?}");
    assert!(outcome.parse_errors > 0, "{outcome:?}");
    assert!(
        outcome.root_timer_events < ROOT_REQUESTS as f64,
        "{outcome:?}"
    );
}

// ---------------------------------------------------------------- decrements on netdata

/// What a user of `decr` sees on netdata 1.37: two decrements of one
/// counter in two windows (the client sums one window's decrements into one
/// line, `k:-1|c` here each time), sent two of netdata's 1 s collections
/// apart. Netdata's chart holds only the first: its total stays at -1,
/// measured over two more collections. The docs say so: count down with a
/// gauge delta there.
#[test]
fn netdata_keeps_only_the_first_decrement_of_a_counter() {
    use tower_statsd::prelude::*;
    let netdata = Netdata::start();
    let statsd = tower_statsd::Statsd::builder()
        .host("127.0.0.1")
        .port(netdata.port)
        .prefix("decr")
        .flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let chart = "statsd_decr.k_counter";
    let total = || {
        netdata
            .chart_sums(chart)
            .and_then(|(_, sums)| sums.get("counter").copied())
            .map(round)
    };
    let points = || netdata.chart_sums(chart).map_or(0, |(points, _)| points);
    let two_more_collections = |what: &str| {
        let seen = points();
        poll(what, Duration::from_secs(30), || {
            let now = points();
            (now >= seen + 2)
                .then_some(())
                .ok_or(format!("{now} points"))
        });
    };
    statsd.decr("k").unwrap();
    statsd.flush().unwrap();
    poll(
        "netdata holds the first decrement",
        Duration::from_secs(30),
        || {
            let got = total();
            (got == Some(-1.0)).then_some(()).ok_or(format!("{got:?}"))
        },
    );
    two_more_collections("two collections after the first");
    statsd.decr("k").unwrap();
    statsd.flush().unwrap();
    two_more_collections("two collections after the second");
    let got = total();
    println!("netdata 1.37, `k:-1|c` in two windows 2 s apart: chart total {got:?}");
    assert_eq!(got, Some(-1.0));
}

// ---------------------------------------------------------------- `|@rate` on a timer

/// Why the default profile never puts a rate on a timer: collectd divides
/// the value by it and counts one event; netdata counts one event. Pinned
/// on the real daemons with one raw line, `rate.k:12|ms|@0.25`: Etsy StatsD
/// (and statsd_exporter, Telegraf, Vector, DogStatsD) would count 4 events
/// of 12 ms.
#[test]
fn collectd_and_netdata_misread_a_rate_on_a_timer() {
    let send = |port: u16| {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .send_to(b"rate.k:12|ms|@0.25", ("127.0.0.1", port))
            .unwrap();
    };

    let collectd = Collectd::start();
    send(collectd.port);
    let (count, average_ms) = poll("collectd holds the timer", Duration::from_secs(30), || {
        let sum = |name: &str| -> f64 {
            let values = collectd.csv(name).unwrap_or_default();
            values.iter().filter(|v| v.is_finite()).sum()
        };
        let count = sum("gauge-rate.k-count");
        // Seconds, in the one interval that holds the value.
        let average = sum("latency-rate.k-average") * 1000.0;
        (count > 0.0 && average > 0.0)
            .then_some((count, average))
            .ok_or(format!("count {count}, average {average}"))
    });
    println!("collectd, `rate.k:12|ms|@0.25`: count {count}, average {average_ms} ms");
    assert_eq!((count, average_ms.round()), (1.0, 48.0));

    let netdata = Netdata::start();
    send(netdata.port);
    let chart = "statsd_rate.k_timer";
    let (events, average) = poll("netdata holds the timer", Duration::from_secs(30), || {
        let events = netdata
            .chart_sums(chart)
            .and_then(|(_, sums)| sums.get("events").copied())
            .map_or(0.0, round);
        let average = netdata
            .chart_values(chart, "average")
            .into_iter()
            .reduce(f64::max)
            .unwrap_or(0.0);
        (events > 0.0 && average > 0.0)
            .then_some((events, average))
            .ok_or(format!("events {events}, average {average}"))
    });
    println!("netdata, `rate.k:12|ms|@0.25`: events {events}, average {average} ms");
    assert_eq!((events, average), (1.0, 12.0));
}
