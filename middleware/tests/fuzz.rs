//! Fuzzing the data path, as long-but-bounded property tests, through the
//! public [`AggregatingSink`] only.
//!
//! Arbitrary bytes, arbitrary (mostly almost-valid) lines and arbitrary line
//! sequences are emitted into a sink, as a cadence client would, with
//! flushes (the window's drains) at arbitrary points, in every packing. The
//! invariants:
//!
//! - nothing panics;
//! - every packet fits in `max_packet_size`, unless it holds one single entry
//!   that is longer on its own (one field, or a negative gauge's pair);
//! - every line that leaves parses back with our parser (emitted into
//!   another sink, it is accepted and means the same), and is plain for the
//!   Etsy daemon: known type, plain decimal numbers, valid sample rate;
//! - what statsd 0.9 would compute from the packets (`support/daemon.rs`,
//!   from `stats.js` and `lib/helpers.js`) equals what it would compute from
//!   the valid input lines sent one by one (each alone in a window of a
//!   reference sink, one value a line): counter sums, timer value multisets
//!   and counts, set members, gauge values; and invalid lines are counted in
//!   the dropped metric, never sent.
//!
//! Packets are at least 64 bytes on the public builder: a long prefix on
//! every name stands in for smaller packets, so single entries over the
//! limit and split lines are still common.
//!
//! Each property runs 2 000 cases by default; `PROPTEST_CASES` raises that
//! and `FUZZ_SECS` (default 120) bounds the time each property spends: cases
//! after the deadline pass without running. Failures are persisted by
//! proptest in `middleware/proptest-regressions/fuzz.txt` and replayed
//! first on every run; [`NASTY`] is the hand-made seed corpus and
//! [`REGRESSIONS`] the cases fuzzing found, run in full every time (and
//! `NASTY` mixed into the generated lines).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use cadence::MetricSink;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use tower_statsd::sink::{AggregatingSink, Protocol, Server};

mod support;
use support::daemon::{dogstatsd_as_etsy, etsy_one_value_a_line, Daemon};
use support::spy::spy;

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

/// Line sequences fuzzing once failed on, shrunk (with the packet sizes of
/// then, below today's minimum: the corpus runs them under long prefixes),
/// and the flushes between lines.
const REGRESSIONS: &[(&[&str], &[bool])] = &[
    (&["a:0:0|ms"], &[]),
    (&["a:@|s"], &[]),
    (
        &[
            "a:-1.7976931348623157e308|c",
            "a:-1.7976931348623157e308|c",
            "a:1e308|c|@0.001",
        ],
        &[],
    ),
    (
        &[
            "a:0|c",
            "a:-1.7976931348623157e308|c",
            "a:1e308|c|@0.001",
            "a:-1.7976931348623157e308|c",
        ],
        &[false, true],
    ),
];

/// Cases per property: `PROPTEST_CASES`, or 2 000. A failure is shrunk for
/// at most 10 s: a case takes milliseconds, so that is thousands of steps,
/// and a bug that makes each case slow (a close that waits for its timeout)
/// still fails the run in seconds rather than minutes. Failures persist in
/// one file named here: proptest's default looks for a `lib.rs` above the
/// test's source, which an integration test does not have (the path is the
/// package's, where cargo runs the test).
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    Config {
        cases,
        max_shrink_time: 10_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz.txt",
        ))),
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
// What statsd 0.9 should have seen, and what it makes of the packets.

/// The valid lines sent one by one: each alone in a window of a reference
/// sink that writes one value a line (what cadence would send without
/// aggregation), read by the daemon; plus the magnitudes that bound float
/// rounding error.
#[derive(Debug, Default)]
struct Expected {
    daemon: Daemon,
    /// Per key: the sum of the lines' magnitudes.
    scale: BTreeMap<String, f64>,
    invalid: u64,
}

/// A sink that sends only when flushed, to a spy, with every timer value
/// kept and the dropped count under `zz.dropped`.
fn sink_to_spy(
    max: usize,
    protocol: Protocol,
    max_values: usize,
) -> Result<(support::spy::Packets, AggregatingSink), String> {
    let (rx, transport) = spy();
    let sink = AggregatingSink::builder(transport)
        .flush_interval(Duration::from_secs(3600))
        .max_packet_size(max)
        .max_timer_samples(0)
        .max_buffered_values(max_values)
        .protocol(protocol)
        // Servers that read tags, as the daemon model does.
        .server(if protocol == Protocol::DogStatsd {
            Server::Datadog
        } else {
            Server::Etsy
        })
        .dropped_metric("zz.dropped")
        .build()
        .map_err(|e| e.to_string())?;
    Ok((rx, sink))
}

impl Expected {
    fn of(lines: &[String]) -> Result<Self, String> {
        let (rx, sink) = sink_to_spy(8192, Protocol::Plain, 100_000)?;
        let mut expected = Self::default();
        for line in lines {
            let valid = sink.emit(line).is_ok();
            sink.flush().map_err(|e| e.to_string())?;
            let packets = rx.take();
            if !valid {
                // Counted, and nothing of it sent.
                expected.invalid += 1;
                if packets != ["zz.dropped:1|c"] {
                    return Err(format!("invalid {line:?} sent {packets:?}"));
                }
                continue;
            }
            let mut alone = Daemon::default();
            for packet in &packets {
                alone
                    .read(packet)
                    .map_err(|e| format!("{line:?} sent alone: {e}"))?;
                expected.daemon.read(packet)?;
            }
            let magnitudes = [&alone.counters, &alone.timer_counts, &alone.gauges];
            for (key, value) in magnitudes.into_iter().flatten() {
                *expected.scale.entry(key.clone()).or_default() += value.abs();
            }
        }
        Ok(expected)
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

/// Checks sizes and feeds every packet to the daemon. Returns every field
/// sent as a line of its own, `name:field|#tags`, in Etsy's spelling.
fn read_packets(
    packets: &[String],
    max: usize,
    protocol: Protocol,
    daemon: &mut Daemon,
) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    for packet in packets {
        if packet.len() > max {
            check_alone(packet, max, protocol)?;
        }
        let etsy = if protocol == Protocol::DogStatsd {
            dogstatsd_as_etsy(packet)
        } else {
            packet.clone()
        };
        daemon.read(&etsy)?;
        fields.extend(etsy_one_value_a_line(&etsy));
    }
    Ok(fields)
}

/// A packet over `max` bytes must hold one single entry longer on its own.
fn check_alone(packet: &str, max: usize, protocol: Protocol) -> Result<(), String> {
    let too_big = || {
        Err(format!(
            "packet of {} > {max} bytes: {packet:?}",
            packet.len()
        ))
    };
    if protocol == Protocol::DogStatsd {
        // Alone in its packet, and a single value.
        let body = packet.split("|#").next().unwrap_or_default();
        let head = body.split('|').next().unwrap_or_default();
        if packet.contains('\n') && !packet.contains(":0|g") || head.matches(':').count() != 1 {
            return too_big();
        }
        return Ok(());
    }
    let lines: Vec<&str> = packet.split('\n').collect();
    let single_field = |line: &str| {
        let body = line.split("|#").next().unwrap_or_default();
        body.matches(':').count() == 1
    };
    let gauge_pair = lines.len() == 2
        && (lines[0].ends_with(":0|g") || lines[0].contains(":0|g|#"))
        && lines[0].split(':').next() == lines[1].split(':').next();
    if !(lines.iter().all(|l| single_field(l)) && (lines.len() == 1 || gauge_pair)) {
        return too_big();
    }
    Ok(())
}

/// Every field the sink sent, emitted one a line into a fresh sink: each is
/// accepted (it parses back with our parser), and together they mean to
/// the daemon what they meant when first sent.
fn check_reread(fields: &[String], expected: &Expected) -> Result<(), String> {
    let (rx, sink) = sink_to_spy(8192, Protocol::Plain, 100_000)?;
    for field in fields {
        sink.emit(field)
            .map_err(|e| format!("{field:?} does not parse back: {e}"))?;
    }
    sink.flush().map_err(|e| e.to_string())?;
    let mut daemon = Daemon::default();
    for packet in rx.take() {
        daemon.read(&packet)?;
    }
    // The first sink's dropped count, read back as a counter.
    let reported = daemon.counters.remove("zz.dropped|#").unwrap_or(0.0);
    if reported != expected.invalid as f64 {
        return Err(format!("read back {reported} dropped"));
    }
    expected
        .check(&daemon)
        .map_err(|e| format!("read back: {e}; fields {fields:?}"))
}

/// One run of `lines` through a sink: packets of at most `max` bytes, an
/// early drain past `max_values` values, a flush after each line whose
/// `flushes` entry is true and one at the end; then the sink is dropped.
fn check_sink(
    lines: &[String],
    max: usize,
    protocol: Protocol,
    max_values: usize,
    flushes: &[bool],
) -> Result<(), String> {
    let expected = Expected::of(lines)?;
    let (rx, sink) = sink_to_spy(max, protocol, max_values)?;
    for (i, line) in lines.iter().enumerate() {
        let _ = sink.emit(line);
        if flushes.get(i).copied().unwrap_or(false) {
            sink.flush().map_err(|e| e.to_string())?;
        }
    }
    sink.flush().map_err(|e| e.to_string())?;
    if sink.dropped() != expected.invalid {
        return Err(format!(
            "dropped {} but {} invalid",
            sink.dropped(),
            expected.invalid
        ));
    }
    // A dropped sink closes at once: the flusher has nothing left to send.
    let start = Instant::now();
    drop(sink);
    if start.elapsed() > Duration::from_secs(1) {
        return Err(format!("dropping the sink took {:?}", start.elapsed()));
    }
    // Everything left with the flushes.
    let packets = rx
        .until_closed_within(Duration::from_secs(1))
        .ok_or("the dropped sink did not close: its flusher still runs")?;
    let mut daemon = Daemon::default();
    let fields = read_packets(&packets, max, protocol, &mut daemon)
        .map_err(|e| format!("{protocol}, max {max}: {e}; lines {lines:?}"))?;
    let reported = daemon.counters.remove("zz.dropped|#").unwrap_or(0.0);
    if reported != expected.invalid as f64 {
        return Err(format!(
            "reported {reported} dropped, {} invalid",
            expected.invalid
        ));
    }
    expected.check(&daemon).map_err(|e| {
        format!(
            "{protocol}, max {max}: {e}; packets {packets:?}; lines {lines:?}; flushes {flushes:?}"
        )
    })?;
    check_reread(&fields, &expected)
}

/// `lines` with `prefix` before each, as a client's prefix puts it.
fn prefixed(prefix: &str, lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| format!("{prefix}{l}")).collect()
}

const PROTOCOLS: [Protocol; 3] = [Protocol::Plain, Protocol::Etsy, Protocol::DogStatsd];

#[test]
fn nasty_corpus() {
    let long_name = format!("{}:1|c", "a".repeat(700));
    let long_member = format!("s:{}|s", "m".repeat(700));
    let many_values = format!("t:{}1|ms", "1.5:".repeat(400));
    let all: Vec<String> = NASTY
        .iter()
        .map(|s| (*s).to_owned())
        .chain([long_name, long_member, many_values])
        .collect();
    // Every line twice: sums and unions over repeated keys.
    let twice: Vec<String> = all.iter().chain(&all).cloned().collect();
    let every_7th: Vec<bool> = (0..twice.len()).map(|i| i % 7 == 6).collect();
    for protocol in PROTOCOLS {
        for line in &all {
            check_sink(std::slice::from_ref(line), 64, protocol, 100_000, &[])
                .unwrap_or_else(|e| panic!("{line:?}: {e}"));
        }
        // Long prefixes stand in for packets smaller than the minimum.
        for prefix in ["", &"p".repeat(40), &"p".repeat(70)] {
            for max in [64, 100, 512, 1432] {
                for (lines, flushes) in REGRESSIONS {
                    let lines: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
                    check_sink(&prefixed(prefix, &lines), max, protocol, 100_000, flushes)
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                let lines = prefixed(prefix, &twice);
                check_sink(&lines, max, protocol, 100_000, &[]).unwrap_or_else(|e| panic!("{e}"));
                check_sink(&lines, max, protocol, 5, &every_7th).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
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
        2 => 64usize..128,
        2 => 128usize..600,
        1 => prop::sample::select(vec![512usize, 1432, 8192]),
    ]
}

/// No prefix, or one long enough that entries outgrow small packets.
fn prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        1 => "[a-z]{1,20}\\.",
        1 => "[a-z]{40,90}\\.",
    ]
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop::sample::select(PROTOCOLS.to_vec())
}

static LINE_DEADLINE: Deadline = Deadline::new("fuzz line");
static BYTES_DEADLINE: Deadline = Deadline::new("fuzz bytes");
static SINK_DEADLINE: Deadline = Deadline::new("fuzz sink");

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes (as a cadence client could only send by mistake),
    /// alone in a window.
    #[test]
    fn fuzz_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200), protocol in protocol()) {
        if !BYTES_DEADLINE.passed() {
            let line = String::from_utf8_lossy(&bytes).into_owned();
            check_sink(&[line], 64, protocol, 100_000, &[]).map_err(TestCaseError::fail)?;
        }
    }

    /// An arbitrary, mostly almost-valid line, alone in a window.
    #[test]
    fn fuzz_line(line in line_text(), prefix in prefix(), protocol in protocol()) {
        if !LINE_DEADLINE.passed() {
            check_sink(&[format!("{prefix}{line}")], 64, protocol, 100_000, &[])
                .map_err(TestCaseError::fail)?;
        }
    }

    /// Line sequences, with flushes between them and early drains.
    #[test]
    fn fuzz_sink(
        lines in prop::collection::vec(line_text(), 0..60),
        prefix in prefix(),
        max in packet_size(),
        protocol in protocol(),
        max_values in prop_oneof![1usize..8, Just(100_000usize)],
        flushes in prop::collection::vec(prop::bool::weighted(0.1), 0..60),
    ) {
        if !SINK_DEADLINE.passed() {
            check_sink(&prefixed(&prefix, &lines), max, protocol, max_values, &flushes)
                .map_err(TestCaseError::fail)?;
        }
    }
}
