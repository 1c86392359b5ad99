//! Fuzzing the data path, as long-but-bounded property tests.
//!
//! Arbitrary bytes, arbitrary (mostly almost-valid) lines and arbitrary line
//! sequences are thrown at the line parser, the aggregator, the packet writer
//! and the whole [`AggregatingSink`]. The invariants:
//!
//! - nothing panics;
//! - every packet fits in `max_packet_size`, unless it holds one single entry
//!   that is longer on its own (one field, or a negative gauge's pair);
//! - every line that leaves parses back with our parser, and is plain for the
//!   Etsy daemon: known type, plain decimal numbers, valid sample rate;
//! - what statsd 0.9 would compute from the packets (emulated below, from
//!   `stats.js` and `lib/helpers.js`) equals what it would compute from the
//!   valid input lines sent one by one: counter sums, timer value multisets
//!   and counts, set members, gauge values; and invalid lines are counted in
//!   the dropped metric, never sent.
//!
//! Each property runs 2 000 cases by default; `PROPTEST_CASES` raises that
//! and `FUZZ_SECS` (default 120) bounds the time each property spends: cases
//! after the deadline pass without running. Failures are persisted by
//! proptest in `middleware/proptest-regressions/sink/fuzz.txt` and replayed
//! first on every run; [`NASTY`] is the hand-made seed corpus, run in full
//! every time and mixed into the generated lines.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::aggregate::Aggregator;
use super::handle::AggregatingSink;
use super::line::{parse, parse_each, write_field, write_metric, LineError};
use super::metric::{Metric, Value};
use super::protocol::Protocol;
use super::server::Server;
use super::testing::{dogstatsd_as_etsy, Daemon};
use super::testing::{pipe, spy};

/// Hand-made inputs that have broken (or could break) StatsD code somewhere.
const NASTY: &[&str] = &[
    "",
    ":",
    "|",
    "\n",
    "::",
    "a:",
    "a:|",
    "a::|c",
    "a:1|c\nb:2|c",
    "a:1|c\r",
    "a:1|c|@1e-5",
    "a:1|c|@0.00001",
    "a:1|c|@.5",
    "a:1|c|@1.",
    "a:1|c|@1.0",
    "a:1|c|@0.0000001",
    "a:1e308|c|@0.001",
    "a:1.7976931348623157e308|c",
    "a:-1.7976931348623157e308|c",
    "a:1.7976931348623157e308|g",
    "a:+1.7976931348623157e308|g",
    "a:4.9e-324|c",
    "a:4.9e-324|ms",
    "a:1e300|ms|@0.001",
    "a:99999999999999999999999|c",
    "a:1:2:3|ms|@0.5|#t:v",
    "a:1|ms:2|ms",
    "a:1:|ms",
    "a::1|ms",
    "a:x|s|#",
    "a:1|c|#",
    "a:1|c|#t|x",
    "a:1|c|#route:root|#x",
    "a:1|c|#tag;with=odd:chars,k:v",
    "a:1|c|#a\u{85}b",
    "a:1|c|#a\u{a0}b",
    "a:+1|g",
    "a:-0|g",
    "a:+0|g",
    "a:-0|c",
    "a:-0|ms",
    "a:0x10|c",
    "a:1_0|c",
    "a:.5|c",
    "a:5.|c",
    "a:+5|c",
    "a:+5|ms",
    "a:1e5|c",
    "a:1E5|c",
    "a:Infinity|c",
    "a:infinity|ms",
    "a:nan|g",
    "a:\u{0}|s",
    "a:é|s",
    "a:\u{2028}|s",
    "a:\u{feff}|s",
    "a:💥|s",
    "a:0|s",
    "a:-|s",
    "a:１|c",
    "é:1|c",
    "a\u{0}:1|c",
    "a.b-c_D.9:1|c",
    "a:1|c|@0.5|#t",
    "a:1|ms|@0.3",
    "a:1|ms|@0.1:2|ms",
    "a:1|h|@0.5",
    "a:1|d",
    "a:1|m",
    "a:1|ms|T12345",
    "a:1|c|c:1",
];

/// Cases per property: `PROPTEST_CASES`, or 2 000. A failure is shrunk for
/// at most 10 s: a case takes milliseconds, so that is thousands of steps,
/// and a bug that makes each case slow (a close that waits for its timeout)
/// still fails the run in seconds rather than minutes.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    Config {
        cases,
        max_shrink_time: 10_000,
        ..Config::default()
    }
}

/// Time each property may spend (`FUZZ_SECS`, default 120 s).
fn budget() -> Duration {
    let secs = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// Cases each property runs whatever its time budget.
const MIN_FUZZ_CASES: u64 = 64;

/// A deadline per property, fixed at its first case; says how many cases
/// ran when it passes.
struct Deadline {
    name: &'static str,
    at: std::sync::OnceLock<Instant>,
    cases: std::sync::atomic::AtomicU64,
}

impl Deadline {
    const fn new(name: &'static str) -> Self {
        Self {
            name,
            at: std::sync::OnceLock::new(),
            cases: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn passed(&self) -> bool {
        // The first cases always run: a budget of 0 (or a slow machine)
        // must not turn the property into one that checks nothing.
        let at = *self.at.get_or_init(|| Instant::now() + budget());
        if Instant::now() < at || self.cases.load(Relaxed) < MIN_FUZZ_CASES {
            self.cases.fetch_add(1, Relaxed);
            return false;
        }
        let ran = self.cases.swap(u64::MAX, Relaxed);
        if ran != u64::MAX {
            eprintln!("{}: time budget reached after {ran} cases", self.name);
        }
        true
    }
}

// ---------------------------------------------------------------------------
// What statsd 0.9 does with a packet, and what it should have seen.

/// What the daemon should end up with, computed from the valid input
/// metrics directly, plus the magnitudes that bound float rounding error.
#[derive(Debug, Default)]
struct Expected {
    daemon: Daemon,
    /// Per counter / timer-count / gauge key: the sum of the terms' magnitudes.
    scale: BTreeMap<String, f64>,
}

impl Expected {
    fn add(&mut self, metric: &Metric<'_>) {
        let key = format!("{}|#{}", metric.name, metric.tags);
        let scale = self.scale.entry(key.clone()).or_default();
        let d = &mut self.daemon;
        match metric.value {
            Value::Count { value, rate } => {
                *d.counters.entry(key).or_default() += value * (1.0 / rate);
                *scale += (value * (1.0 / rate)).abs();
            }
            Value::Timer { ms, rate } => {
                // The wire carries microseconds; compare what the daemon reads.
                let mut field = String::new();
                write_field(&mut field, &Value::Timer { ms, rate: 1.0 });
                let sent: f64 = field.trim_end_matches("|ms").parse().expect("a number");
                d.timers.entry(key.clone()).or_default().push(sent);
                *d.timer_counts.entry(key).or_default() += 1.0 / rate;
                *scale += 1.0 / rate;
            }
            Value::Gauge(value) => {
                d.gauges.insert(key, value);
                *scale = scale.max(value.abs());
            }
            Value::GaugeDelta(delta) => {
                *d.gauges.entry(key).or_insert(0.0) += delta;
                *scale += delta.abs();
            }
            Value::Set(member) => {
                d.sets.entry(key).or_default().insert(member.to_owned());
            }
            Value::Distribution { .. } => unreachable!("the parser makes no distributions"),
        }
    }

    /// Whether a run of the daemon over the packets agrees.
    fn check(&self, got: &Daemon) -> Result<(), String> {
        let want = &self.daemon;
        let close = |what: &str, a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let (x, y) = (a.get(key), b.get(key));
                let (Some(&x), Some(&y)) = (x, y) else {
                    return Err(format!("{what} {key}: got {x:?}, want {y:?}"));
                };
                let tolerance = 1e-9 * self.scale.get(key).copied().unwrap_or(0.0).max(1.0);
                // Terms past f64::MAX make the daemon itself compute inf or
                // NaN; what matters is that it computes the same thing.
                let same = x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= tolerance;
                if !same {
                    return Err(format!("{what} {key}: got {x}, want {y}"));
                }
            }
            Ok(())
        };
        close("counter", &got.counters, &want.counters)?;
        close("timer count", &got.timer_counts, &want.timer_counts)?;
        close("gauge", &got.gauges, &want.gauges)?;
        let sorted = |m: &BTreeMap<String, Vec<f64>>| -> BTreeMap<String, Vec<f64>> {
            m.iter()
                .map(|(k, v)| {
                    let mut v = v.clone();
                    v.sort_by(f64::total_cmp);
                    (k.clone(), v)
                })
                .collect()
        };
        if sorted(&got.timers) != sorted(&want.timers) {
            return Err(format!(
                "timer values: got {:?}, want {:?}",
                got.timers, want.timers
            ));
        }
        if got.sets != want.sets {
            return Err(format!("sets: got {:?}, want {:?}", got.sets, want.sets));
        }
        Ok(())
    }
}

/// Checks sizes and feeds every packet to the emulated daemon. Returns the
/// number of packets over the limit.
fn read_packets(
    packets: &[String],
    max: usize,
    protocol: Protocol,
    daemon: &mut Daemon,
) -> Result<u64, String> {
    let mut oversized = 0;
    for packet in packets {
        if packet.len() > max && protocol == Protocol::DogStatsd {
            // Alone in its packet, and a single value.
            let body = packet.split("|#").next().unwrap_or_default();
            let head = body.split('|').next().unwrap_or_default();
            if packet.contains('\n') && !packet.contains(":0|g") || head.matches(':').count() != 1 {
                return Err(format!(
                    "packet of {} > {max} bytes: {packet:?}",
                    packet.len()
                ));
            }
        }
        if protocol == Protocol::DogStatsd {
            // Read as the Etsy lines it stands for; sizes were checked above.
            oversized += u64::from(packet.len() > max);
            daemon.read(&dogstatsd_as_etsy(packet))?;
            continue;
        }
        if packet.len() > max {
            oversized += 1;
            let lines: Vec<&str> = packet.split('\n').collect();
            let single_field = |line: &str| {
                let body = line.split("|#").next().unwrap_or_default();
                body.matches(':').count() == 1
            };
            let gauge_pair = lines.len() == 2
                && (lines[0].ends_with(":0|g") || lines[0].contains(":0|g|#"))
                && lines[0].split(':').next() == lines[1].split(':').next();
            if !(lines.iter().all(|l| single_field(l)) && (lines.len() == 1 || gauge_pair)) {
                return Err(format!(
                    "packet of {} > {max} bytes: {packet:?}",
                    packet.len()
                ));
            }
        }
        daemon.read(packet)?;
        for line in packet.split('\n') {
            // Every field parses back with our own parser too, as the line
            // `name:field|#tags` (our parser takes packed timer values only
            // in cadence's `name:1:2|ms` form, not `name:1|ms:2|ms`).
            let (body, tags) = line.split_once("|#").unwrap_or((line, ""));
            let mut bits = body.split(':');
            let name = bits.next().unwrap_or_default();
            for field in bits {
                let single = if tags.is_empty() {
                    format!("{name}:{field}")
                } else {
                    format!("{name}:{field}|#{tags}")
                };
                parse(&single).map_err(|e| format!("{single:?} from {line:?}: {e}"))?;
            }
        }
    }
    Ok(oversized)
}

// ---------------------------------------------------------------------------
// Strategies.

fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (-1000i64..1000).prop_map(|v| v.to_string()),
        2 => (0.0f64..1e4).prop_map(|v| v.to_string()),
        2 => any::<f64>().prop_map(|v| v.to_string()),
        1 => any::<f64>().prop_map(|v| format!("{v:e}")),
        2 => prop::sample::select(vec![
            "0", "-0", "+0", "+3", "-2.5", "1e5", "1E-3", ".5", "5.", "0x10", "1_000", "inf",
            "-inf", "NaN", "Infinity", "1e308", "-1e308", "1.7976931348623157e308",
            "-1.7976931348623157e308", "4.9e-324", " 1", "1 ", "", "١",
        ])
        .prop_map(str::to_owned),
    ]
}

fn member_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["u1", "u2", "x", "-42", "a.b", "é", "0", "💥", "u1"])
            .prop_map(str::to_owned),
        2 => "[a-z0-9é_.@#: -]{0,4}",
        1 => "\\PC{0,3}",
    ]
}

fn rate_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "1", "0.5", "0.25", "0.1", "0.3", "0.001", "0", "1.5", "-0.5", "", "1e-3", "NaN",
            ".5", "1.0", "0.00001",
        ])
        .prop_map(str::to_owned),
        2 => (1e-6f64..=1.0).prop_map(|r| r.to_string()),
    ]
}

/// Mostly well-formed lines over a few names, so aggregation has work to do,
/// with every part sometimes broken.
fn line_text() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        6 => prop::sample::select(vec!["a", "b.c", "t", "s-1", "g_2", "A.B.C"]).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9_.-]{1,12}",
        1 => "[a-z:| .é#@]{0,4}",
    ];
    let kind = prop_oneof![
        8 => prop::sample::select(vec!["c", "ms", "g", "s", "h", "d", "m"]),
        1 => prop::sample::select(vec!["x", "", "C", "ms ", "g|", "c:"]),
    ];
    let value = prop_oneof![3 => number_text(), 1 => member_text()];
    let values = prop::collection::vec(value, 1..4).prop_map(|v| v.join(":"));
    let rate = prop::option::weighted(0.3, rate_text().prop_map(|r| format!("|@{r}")));
    let tags = prop::option::weighted(
        0.3,
        prop_oneof![
            4 => prop::sample::select(vec!["route:root", "k:v,x", "", "a:b:c"]).prop_map(str::to_owned),
            1 => "[a-z0-9:,=;#@| \t]{0,8}",
        ]
        .prop_map(|t| format!("|#{t}")),
    );
    let junk = prop::option::weighted(0.05, "\\|[a-z@#]{0,3}");
    let structured = (name, values, kind, rate, tags, junk).prop_map(
        |(name, values, kind, rate, tags, junk)| {
            format!(
                "{name}:{values}|{kind}{}{}{}",
                rate.unwrap_or_default(),
                tags.unwrap_or_default(),
                junk.unwrap_or_default()
            )
        },
    );
    prop_oneof![
        12 => structured,
        2 => prop::sample::select(NASTY).prop_map(str::to_owned),
        1 => "[a-z0-9.:|@#,+\\-eE_ ]{0,40}",
        1 => "\\PC{0,40}",
    ]
}

fn packet_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => 1usize..64,
        2 => 64usize..600,
        1 => prop::sample::select(vec![512usize, 1432, 8192]),
    ]
}

// ---------------------------------------------------------------------------
// The properties.

/// One line through the parser: no panic, `parse` and `parse_each` agree,
/// and whatever parses is written back as lines that parse to the same
/// metric (timers to the microsecond).
fn check_line(text: &str) -> Result<(), String> {
    let single = parse(text);
    let mut each = Vec::new();
    let result = parse_each(text, &mut |m| {
        let mut out = String::new();
        write_metric(&mut out, &m);
        each.push((format!("{m:?}"), out));
    });
    if result.is_err() && !each.is_empty() {
        return Err(format!("parse_each handed out {each:?} then failed"));
    }
    match (&single, &result) {
        (Ok(m), Ok(())) if each.len() == 1 && each[0].0 == format!("{m:?}") => {}
        (Err(LineError::PackedValues), Ok(())) if each.len() >= 2 => {}
        (Err(LineError::PackedValues), Err(_)) => {}
        (Err(a), Err(b)) if a == b => {}
        _ => {
            return Err(format!(
                "parse {single:?} but parse_each {result:?}: {each:?}"
            ))
        }
    }
    for (_, written) in &each {
        Daemon::default()
            .read(written)
            .map_err(|e| format!("{text:?} written as {written:?}: {e}"))?;
        for line in written.split('\n') {
            parse(line).map_err(|e| format!("{text:?} written as {line:?}: {e}"))?;
        }
    }
    // Written back, a metric parses to itself (a timer to the microsecond,
    // a negative absolute gauge as its two lines).
    if let Ok(m) = single {
        let written = &each[0].1;
        let again = parse(written.rsplit('\n').next().unwrap_or_default())
            .map_err(|e| format!("{written:?}: {e}"))?;
        let same = match (m.value, again.value) {
            (Value::Timer { ms, rate }, Value::Timer { ms: b, rate: r }) => {
                rate == r && (ms - b).abs() <= 0.0005 + ms * 1e-12
            }
            (Value::Gauge(v), Value::GaugeDelta(d)) => v < 0.0 && v == d,
            (a, b) => a == b,
        };
        if !same || m.name != again.name || m.tags != again.tags {
            return Err(format!("{m:?} written as {written:?} reads {again:?}"));
        }
    }
    Ok(())
}

/// A sequence of lines through aggregator + packet writer, and unaggregated
/// through the packet writer; both must mean the same to the daemon as the
/// valid lines sent one by one.
fn check_pipeline(lines: &[String], max: usize, drains: &[bool]) -> Result<(), String> {
    let mut expected = Expected::default();
    let mut valid = Vec::new();
    for line in lines {
        // All or nothing: a line hands out its metrics only when all are valid.
        if parse_each(line, &mut |m| expected.add(&m)).is_ok() {
            valid.push(line.as_str());
        }
    }
    for (aggregate, protocol) in [
        (true, Protocol::Plain),
        (true, Protocol::Etsy),
        (true, Protocol::DogStatsd),
        (false, Protocol::Plain),
    ] {
        let (rx, sink) = spy();
        let (mut writer, stats) = pipe(sink, max);
        writer.protocol(protocol);
        let mut agg = Aggregator::new(0);
        for (i, line) in valid.iter().enumerate() {
            let _ = parse_each(line, &mut |m| {
                if aggregate {
                    agg.add(m);
                } else {
                    writer.push_metric(&m);
                }
            });
            if drains.get(i).copied().unwrap_or(false) {
                agg.drain(&mut writer);
            }
        }
        agg.drain(&mut writer);
        writer.flush();
        let packets = rx.take();
        let mut daemon = Daemon::default();
        let oversized = read_packets(&packets, max, protocol, &mut daemon).map_err(|e| {
            format!("aggregate {aggregate}, {protocol}: {e}; lines {valid:?}; drains {drains:?}")
        })?;
        if oversized != stats.oversized.load(Relaxed) {
            return Err(format!(
                "aggregate {aggregate}, {protocol}: {oversized} oversized packets, {} counted",
                stats.oversized.load(Relaxed)
            ));
        }
        expected
            .check(&daemon)
            .map_err(|e| {
                format!("aggregate {aggregate}, {protocol}, max {max}: {e}; packets {packets:?}; lines {valid:?}")
            })?;
    }
    Ok(())
}

/// The same through the real [`AggregatingSink`] (worker thread, queue,
/// early drains, dropped-line accounting), as a cadence client would feed it.
fn check_sink(
    lines: &[String],
    max: usize,
    protocol: Protocol,
    max_values: usize,
) -> Result<(), String> {
    use cadence::MetricSink;

    let mut expected = Expected::default();
    let mut invalid = 0u64;
    for line in lines {
        if parse_each(line, &mut |m| expected.add(&m)).is_err() {
            invalid += 1;
        }
    }
    let (rx, transport) = spy();
    let sink = AggregatingSink::builder(transport)
        .flush_interval(Duration::from_secs(3600))
        .tiny_packets(max)
        .max_timer_samples(0)
        .max_buffered_values(max_values)
        .protocol(protocol)
        // Servers that read tags, as the model does.
        .server(match protocol {
            Protocol::DogStatsd => Server::Datadog,
            Protocol::Plain | Protocol::Etsy => Server::Etsy,
        })
        .dropped_metric("zz.dropped")
        .build()
        .map_err(|e| e.to_string())?;
    for line in lines {
        let _ = sink.emit(line);
    }
    sink.flush().map_err(|e| e.to_string())?;
    if sink.dropped() != invalid {
        return Err(format!("dropped {} but {invalid} invalid", sink.dropped()));
    }
    // A dropped sink closes at once: the flusher has nothing left to send.
    let start = Instant::now();
    drop(sink);
    if start.elapsed() > Duration::from_secs(1) {
        return Err(format!("dropping the sink took {:?}", start.elapsed()));
    }
    // Everything left with the flush.
    let packets = rx
        .until_closed_within(Duration::from_secs(1))
        .ok_or("the dropped sink did not close: its flusher still runs")?;
    let mut daemon = Daemon::default();
    read_packets(&packets, max, protocol, &mut daemon)?;
    let reported = daemon.counters.remove("zz.dropped|#").unwrap_or(0.0);
    if reported != invalid as f64 {
        return Err(format!("reported {reported} dropped, {invalid} invalid"));
    }
    expected
        .check(&daemon)
        .map_err(|e| format!("{protocol}, max {max}: {e}; packets {packets:?}"))
}

#[test]
fn nasty_corpus() {
    let lines: Vec<String> = NASTY.iter().map(|s| (*s).to_owned()).collect();
    for line in &lines {
        check_line(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    }
    let long_name = format!("{}:1|c", "a".repeat(700));
    let long_member = format!("s:{}|s", "m".repeat(700));
    let many_values = format!("t:{}1|ms", "1.5:".repeat(400));
    let extra = [long_name, long_member, many_values];
    for line in &extra {
        check_line(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    }
    let all: Vec<String> = lines.iter().chain(&extra).cloned().collect();
    for max in [1, 7, 20, 64, 512, 1432] {
        check_pipeline(&all, max, &[]).unwrap_or_else(|e| panic!("{e}"));
        // Every line twice: sums and unions over repeated keys.
        let twice: Vec<String> = all.iter().chain(&all).cloned().collect();
        check_pipeline(&twice, max, &[]).unwrap_or_else(|e| panic!("{e}"));
        for protocol in [Protocol::Plain, Protocol::Etsy, Protocol::DogStatsd] {
            check_sink(&twice, max, protocol, 100_000).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

static LINE_DEADLINE: Deadline = Deadline::new("fuzz line");
static BYTES_DEADLINE: Deadline = Deadline::new("fuzz bytes");
static PIPELINE_DEADLINE: Deadline = Deadline::new("fuzz pipeline");
static SINK_DEADLINE: Deadline = Deadline::new("fuzz sink");

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes (as a cadence client could only send by mistake).
    #[test]
    fn fuzz_parser_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if !BYTES_DEADLINE.passed() {
            let text = String::from_utf8_lossy(&bytes);
            check_line(&text).map_err(TestCaseError::fail)?;
        }
    }

    /// Arbitrary, mostly almost-valid lines.
    #[test]
    fn fuzz_parser_lines(line in line_text()) {
        if !LINE_DEADLINE.passed() {
            check_line(&line).map_err(TestCaseError::fail)?;
        }
    }

    /// Line sequences through the aggregator and the packet writer.
    #[test]
    fn fuzz_aggregator_and_packets(
        lines in prop::collection::vec(line_text(), 0..60),
        max in packet_size(),
        drains in prop::collection::vec(prop::bool::weighted(0.1), 0..60),
    ) {
        if !PIPELINE_DEADLINE.passed() {
            check_pipeline(&lines, max, &drains).map_err(TestCaseError::fail)?;
        }
    }

    /// Line sequences through the whole sink.
    #[test]
    fn fuzz_sink(
        lines in prop::collection::vec(line_text(), 0..60),
        max in packet_size(),
        protocol in prop_oneof![
            Just(Protocol::Plain),
            Just(Protocol::Etsy),
            Just(Protocol::DogStatsd)
        ],
        max_values in prop_oneof![1usize..8, Just(100_000usize)],
    ) {
        if !SINK_DEADLINE.passed() {
            check_sink(&lines, max, protocol, max_values).map_err(TestCaseError::fail)?;
        }
    }
}
