//! What statsd 0.9 computes from a packet, strictly: the one interpreter of
//! what the sink sends, shared by the crate's unit tests (`sink/testing.rs`
//! includes this file) and its integration tests (`tests/support`).

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};

/// The state statsd 0.9 keeps for one flush window, keyed by `name|#tags`:
/// the one interpreter of what the sink sends, for every test in the crate.
#[derive(Debug, Default, PartialEq)]
pub struct Daemon {
    pub counters: BTreeMap<String, f64>,
    pub timers: BTreeMap<String, Vec<f64>>,
    pub timer_counts: BTreeMap<String, f64>,
    pub gauges: BTreeMap<String, f64>,
    pub sets: BTreeMap<String, BTreeSet<String>>,
    /// Lines read.
    pub lines: usize,
}

/// A plain decimal: what both JavaScript's `Number` and Rust's `f64::from_str`
/// read the same way.
pub fn plain_decimal(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

impl Daemon {
    /// Reads one packet as `handlePacket` in statsd 0.9's `stats.js` does,
    /// and fails on anything it would count as a bad line or misread.
    pub fn read(&mut self, packet: &str) -> Result<(), String> {
        for line in packet.split('\n') {
            self.lines += 1;
            if line.is_empty() {
                return Err(format!("empty line in {packet:?}"));
            }
            let mut halves = line.split("|#");
            let body = halves.next().unwrap_or_default();
            let tags = halves.next().unwrap_or_default();
            if halves.next().is_some() {
                return Err(format!("`|#` twice in {line:?}"));
            }
            if tags.chars().any(char::is_whitespace) {
                return Err(format!("whitespace in the tags of {line:?}"));
            }
            let mut bits = body.split(':');
            let name = bits.next().unwrap_or_default();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            {
                return Err(format!("name the daemon would rewrite: {line:?}"));
            }
            let key = format!("{name}|#{tags}");
            let mut any = false;
            for bit in bits {
                any = true;
                self.field(&key, bit)
                    .map_err(|e| format!("{e} in {line:?}"))?;
            }
            if !any {
                return Err(format!("no value in {line:?} (the daemon counts 1)"));
            }
        }
        Ok(())
    }

    fn field(&mut self, key: &str, bit: &str) -> Result<(), String> {
        let fields: Vec<&str> = bit.split('|').collect();
        let (value, kind) = match fields[..] {
            [value, kind] | [value, kind, _] => (value, kind),
            _ => return Err(format!("field {bit:?} is not value|type[|@rate]")),
        };
        let mut rate = 1.0;
        if let Some(&text) = fields.get(2) {
            let number = text
                .strip_prefix('@')
                .filter(|n| plain_decimal(n) && !n.starts_with(['-', '+']))
                .ok_or_else(|| format!("bad sample rate {text:?}"))?;
            rate = number.parse::<f64>().map_err(|e| e.to_string())?;
            if !(rate > 0.0 && rate < 1.0) {
                return Err(format!("sample rate {text:?} outside (0, 1)"));
            }
        }
        if kind == "s" {
            if value.is_empty() || value.contains('#') {
                return Err(format!("set member {value:?}"));
            }
            if rate != 1.0 {
                return Err("a rate on a set".into());
            }
            self.sets
                .entry(key.to_owned())
                .or_default()
                .insert(value.to_owned());
            return Ok(());
        }
        if !plain_decimal(value) {
            return Err(format!("value {value:?} is not a plain decimal"));
        }
        let number: f64 = value.parse().map_err(|e| format!("{value:?}: {e}"))?;
        if !number.is_finite() {
            return Err(format!("value {value:?} overflows"));
        }
        match kind {
            "c" => *self.counters.entry(key.to_owned()).or_default() += number * (1.0 / rate),
            "ms" => {
                if number < 0.0 || value.starts_with('-') {
                    return Err(format!("negative timer {value:?}"));
                }
                self.timers.entry(key.to_owned()).or_default().push(number);
                *self.timer_counts.entry(key.to_owned()).or_default() += 1.0 / rate;
            }
            "g" => {
                if rate != 1.0 {
                    return Err("a rate on a gauge".into());
                }
                let gauge = self.gauges.entry(key.to_owned()).or_insert(0.0);
                if value.starts_with(['-', '+']) {
                    *gauge += number;
                } else {
                    *gauge = number;
                }
            }
            _ => return Err(format!("type {kind:?}")),
        }
        Ok(())
    }
}

/// What the daemon makes of `packets`; panics on anything it would count as
/// a bad line or misread.
pub fn daemon(packets: &[String]) -> Daemon {
    let mut daemon = Daemon::default();
    for packet in packets {
        daemon
            .read(packet)
            .unwrap_or_else(|e| panic!("{e}; packets {packets:?}"));
    }
    daemon
}

/// A DogStatsD 1.1 packet in Etsy's spelling, for [`Daemon::read`]: each
/// value of `name:v1:v2|type|@rate|#tags` on a line of its own,
/// `name:v1|type|@rate|#tags`.
pub fn dogstatsd_as_etsy(packet: &str) -> String {
    packet
        .split('\n')
        .map(|line| {
            let (head, rest) = line.split_once('|').unwrap_or((line, ""));
            let Some((name, values)) = head.split_once(':') else {
                return line.to_owned();
            };
            values
                .split(':')
                .map(|value| format!("{name}:{value}|{rest}"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each value of an Etsy-packed packet on a line of its own, as the daemon
/// splits `name:v1|ms:v2|ms|#tags`: `name:v1|ms|#tags`, `name:v2|ms|#tags`.
pub fn etsy_one_value_a_line(packet: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in packet.split('\n') {
        let (body, tags) = match line.split_once("|#") {
            Some((body, tags)) => (body, format!("|#{tags}")),
            None => (line, String::new()),
        };
        let mut fields = body.split(':');
        let name = fields.next().unwrap_or_default();
        out.extend(fields.map(|field| format!("{name}:{field}{tags}")));
    }
    out
}
