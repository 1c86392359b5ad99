//! Shared by the integration tests: read what the sink sent, line by line.

#![allow(dead_code, unreachable_pub)]

pub mod daemon;
mod logged;
pub mod spy;

#[allow(unused_imports)]
pub use logged::logged;

use std::collections::BTreeMap;
use std::time::Duration;

use spy::Packets;
use tower_statsd::Statsd;

/// A client whose packets land in a spy, and which only sends on `flush()`.
pub fn spy_statsd(prefix: &str) -> (Statsd, Packets) {
    let (rx, spy) = spy::spy();
    let statsd = Statsd::builder()
        .prefix(prefix)
        .flush_interval(Duration::from_secs(3600))
        .build_with(spy)
        .expect("build");
    (statsd, rx)
}

/// Flushes and returns every line sent since the last call.
pub fn flushed_lines(statsd: &Statsd, rx: &Packets) -> Vec<String> {
    statsd.flush().expect("flush timed out");
    rx.lines()
}

/// One field of a StatsD line: `value|type[|@rate]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub value: String,
    pub kind: String,
    pub rate: Option<f64>,
}

/// Parses a line strictly as the Etsy daemon would accept it, with our
/// stricter charset for names and set members; panics on anything else.
pub fn parse_line(line: &str) -> (String, Vec<Field>) {
    let mut parts = line.split(':');
    let name = parts.next().unwrap().to_owned();
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')),
        "bad name in {line:?}"
    );
    let mut fields = Vec::new();
    for field in parts {
        let bits: Vec<&str> = field.split('|').collect();
        assert!(
            (2..=3).contains(&bits.len()),
            "bad field {field:?} in {line:?}"
        );
        let kind = bits[1].to_owned();
        assert!(
            ["c", "ms", "g", "s"].contains(&kind.as_str()),
            "bad type in {line:?}"
        );
        let value = bits[0].to_owned();
        if kind == "s" {
            assert!(
                !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@')),
                "bad set member in {line:?}"
            );
        } else {
            let number = value.trim_start_matches('+');
            assert!(
                number.parse::<f64>().map(f64::is_finite).unwrap_or(false),
                "bad number in {line:?}"
            );
        }
        let rate = bits.get(2).map(|r| {
            r.strip_prefix('@')
                .and_then(|r| r.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("bad rate in {line:?}"))
        });
        fields.push(Field { value, kind, rate });
    }
    assert!(!fields.is_empty(), "no value in {line:?}");
    (name, fields)
}

/// What the lines mean, by name (lines without tags): counters summed and
/// timer values listed as the one interpreter, [`daemon::Daemon`], reads
/// them; and, as written before the daemon folds them, each gauge's value
/// (absolute or `+`/`-` delta) and each set member, in order.
#[derive(Debug, Default)]
pub struct Totals {
    pub counters: BTreeMap<String, f64>,
    pub timers: BTreeMap<String, Vec<f64>>,
    pub sets: BTreeMap<String, Vec<String>>,
    pub gauges: BTreeMap<String, Vec<String>>,
}

pub fn totals(lines: &[String]) -> Totals {
    fn by_name<V>(by_key: BTreeMap<String, V>) -> BTreeMap<String, V> {
        by_key
            .into_iter()
            .map(|(key, v)| {
                let name = key.strip_suffix("|#").expect("a line without tags");
                (name.to_owned(), v)
            })
            .collect()
    }
    let read = daemon::daemon(lines);
    let mut t = Totals {
        counters: by_name(read.counters),
        timers: by_name(read.timers),
        ..Totals::default()
    };
    for line in lines {
        let (name, fields) = parse_line(line);
        for f in fields {
            match f.kind.as_str() {
                "s" => t.sets.entry(name.clone()).or_default().push(f.value),
                "g" => t.gauges.entry(name.clone()).or_default().push(f.value),
                _ => {}
            }
        }
    }
    t
}
