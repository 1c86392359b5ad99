//! The writer: a window's metrics become payloads for the server's dialect,
//! with no socket and no clock. The [`Forwarder`](super::forwarder::Forwarder)
//! takes the finished payloads and sends them.
//!
//! Lines are joined with `\n` (the daemon splits a packet on `\n`) into
//! payloads of at most `max_packet_size` bytes. A multi-value line that
//! would not fit is continued on a new line with the same name (the daemon
//! appends timer values and unions set members, so the split changes
//! nothing). A single field that is longer than the limit on its own is still
//! written, alone, and counted as oversized.
//!
//! The values of one name are packed as the [`Protocol`] says: one a line
//! ([`Protocol::Plain`]), Etsy's `name:f1|ms:f2|ms` or DogStatsD's
//! `name:v1:v2|ms|@rate`. Counters, gauges and set members (a line per name
//! and window, however busy) are written in payloads apart from timer values
//! (a line per value where the server misreads rates), in two lanes: the
//! forwarder sends the first lane first, so that when a busy window still
//! overflows the daemon's buffer, what is lost is timer values, never a
//! count.

use std::collections::VecDeque;

use super::line::{
    tags_len, write_field, write_metric, write_ms, write_number, write_rate, write_tags,
};
use super::metric::{Metric, Value};
use super::protocol::Protocol;

/// Which packets leave first (see the module's docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Counters, gauges, set members.
    First,
    /// Timer and distribution values.
    Bulk,
}

impl Lane {
    fn of(value: &Value<'_>) -> Lane {
        match value {
            Value::Timer { .. } | Value::Distribution { .. } => Lane::Bulk,
            Value::Count { .. } | Value::Gauge(_) | Value::GaugeDelta(_) | Value::Set(_) => {
                Lane::First
            }
        }
    }
}

/// Fills payloads with `\n`-separated lines, in two lanes; finished ones
/// wait for the forwarder ([`hand_over`](Self::hand_over)). Runs on the
/// flusher thread only.
pub(crate) struct PacketWriter {
    /// The packet being filled, of lane `lane`.
    buf: String,
    /// The packet being filled in the other lane.
    other: String,
    lane: Lane,
    /// Finished packets of [`Lane::First`]: they leave before `bulk`'s.
    first: Vec<String>,
    /// Finished packets of [`Lane::Bulk`].
    bulk: Vec<String>,
    /// Lines longer than a packet on their own, written since the last
    /// [`hand_over`](Self::hand_over).
    oversized: u64,
    /// Empty buffers for the next packets: the forwarder's, sent and
    /// cleared ([`reuse`](Self::reuse)), so a window's packets reuse the
    /// memory of the last window's.
    blank: Vec<String>,
    scratch: String,
    max_packet_size: usize,
    /// How the values of one name are packed.
    protocol: Protocol,
}

impl std::fmt::Debug for PacketWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketWriter")
            .field("buffered", &(self.buf.len() + self.other.len()))
            .field("max_packet_size", &self.max_packet_size)
            .finish_non_exhaustive()
    }
}

impl PacketWriter {
    /// A writer of packets of at most `max_packet_size` bytes (at least 1).
    pub(crate) fn new(max_packet_size: usize) -> Self {
        let max_packet_size = max_packet_size.max(1);
        Self {
            buf: String::with_capacity(max_packet_size),
            other: String::with_capacity(max_packet_size),
            lane: Lane::First,
            first: Vec::new(),
            bulk: Vec::new(),
            oversized: 0,
            blank: Vec::new(),
            scratch: String::new(),
            max_packet_size,
            protocol: Protocol::default(),
        }
    }

    /// How [`push_packed`](Self::push_packed) writes the values of one name.
    pub(crate) fn protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// Appends one metric as its own line (two lines for a negative absolute
    /// gauge, kept in the same packet).
    pub(crate) fn push_metric(&mut self, metric: &Metric<'_>) {
        self.switch(Lane::of(&metric.value));
        self.write_line(metric);
    }

    /// Fills packets of `lane` from now on.
    fn switch(&mut self, lane: Lane) {
        if self.lane != lane {
            std::mem::swap(&mut self.buf, &mut self.other);
            self.lane = lane;
        }
    }

    /// [`push_metric`](Self::push_metric) in the current lane.
    fn write_line(&mut self, metric: &Metric<'_>) {
        let mut entry = std::mem::take(&mut self.scratch);
        entry.clear();
        write_metric(&mut entry, metric);
        self.push_line(&entry);
        self.scratch = entry;
    }

    /// Appends a raw count line, already valid (tests write packets with it).
    #[cfg(test)]
    pub(crate) fn push_entry(&mut self, entry: &str) {
        self.switch(Lane::First);
        self.push_line(entry);
    }

    /// Appends a raw, already valid entry (one line, or lines that must stay
    /// in one packet) to the current lane's packet.
    fn push_line(&mut self, entry: &str) {
        if !self.fits(entry.len()) {
            self.finish_open();
        }
        if entry.len() > self.max_packet_size {
            self.push_alone(entry.to_owned());
            return;
        }
        if !self.buf.is_empty() {
            self.buf.push('\n');
        }
        self.buf.push_str(entry);
    }

    /// Writes the values of one name (timer values, set members) in the
    /// writer's dialect: one a line ([`Protocol::Plain`]), Etsy's
    /// `name:f1:f2|#tags` ([`Protocol::Etsy`]), or DogStatsD's
    /// `name:v1:v2|ms|@rate|#tags` ([`Protocol::DogStatsd`]); a line that
    /// does not fit the packet continues on a new line of the same name.
    pub(crate) fn push_packed<'v>(
        &mut self,
        name: &str,
        tags: &str,
        values: impl IntoIterator<Item = Value<'v>>,
    ) {
        // One name's values are of one kind: the first says the lane.
        let mut values = values.into_iter().peekable();
        if let Some(value) = values.peek() {
            self.switch(Lane::of(value));
        }
        match self.protocol {
            Protocol::Plain => {
                for value in values {
                    self.push_metric(&Metric { name, tags, value });
                }
            }
            Protocol::Etsy => self.push_etsy(name, tags, values),
            Protocol::DogStatsd => self.push_dogstatsd(name, tags, values),
        }
    }

    /// DogStatsD 1.1: timer (or distribution) values of one sample rate
    /// share a line (`name:1.5:2|ms|@0.5|#tags`); anything else is a line of
    /// its own.
    fn push_dogstatsd<'v>(
        &mut self,
        name: &str,
        tags: &str,
        values: impl IntoIterator<Item = Value<'v>>,
    ) {
        let mut field = std::mem::take(&mut self.scratch);
        let mut suffix = String::new();
        // The type and rate of the open line, while one is open in `buf`.
        let mut open: Option<(&str, f64)> = None;
        for value in values {
            field.clear();
            let (kind, rate) = match value {
                Value::Timer { ms, rate } => {
                    write_ms(&mut field, ms);
                    ("|ms", rate)
                }
                Value::Distribution { value, rate } => {
                    write_number(&mut field, value);
                    ("|d", rate)
                }
                _ => {
                    self.close_dogstatsd(&mut open, &suffix);
                    self.write_line(&Metric { name, tags, value });
                    continue;
                }
            };
            if open == Some((kind, rate))
                && self.buf.len() + 1 + field.len() + suffix.len() <= self.max_packet_size
            {
                self.buf.push(':');
                self.buf.push_str(&field);
                continue;
            }
            self.close_dogstatsd(&mut open, &suffix);
            suffix.clear();
            suffix.push_str(kind);
            write_rate(&mut suffix, rate);
            write_tags(&mut suffix, tags);
            let line = name.len() + 1 + field.len() + suffix.len();
            if !self.fits(line) {
                self.finish_open();
            }
            if line > self.max_packet_size {
                self.push_alone(format!("{name}:{field}{suffix}"));
                continue;
            }
            if !self.buf.is_empty() {
                self.buf.push('\n');
            }
            self.buf.push_str(name);
            self.buf.push(':');
            self.buf.push_str(&field);
            open = Some((kind, rate));
        }
        self.close_dogstatsd(&mut open, &suffix);
        self.scratch = field;
    }

    fn close_dogstatsd(&mut self, open: &mut Option<(&str, f64)>, suffix: &str) {
        if open.take().is_some() {
            self.buf.push_str(suffix);
        }
    }

    /// Etsy's multi-value lines: `name:f1:f2:...|#tags`, one field per value
    /// (each `value|type[|@rate]`).
    fn push_etsy<'v>(
        &mut self,
        name: &str,
        tags: &str,
        values: impl IntoIterator<Item = Value<'v>>,
    ) {
        let suffix = tags_len(tags);
        let mut field = std::mem::take(&mut self.scratch);
        // While a line is open, `buf.len() + suffix <= max_packet_size`.
        let mut open = false;
        for value in values {
            field.clear();
            write_field(&mut field, &value);
            if open {
                if self.buf.len() + 1 + field.len() + suffix <= self.max_packet_size {
                    self.buf.push(':');
                    self.buf.push_str(&field);
                    continue;
                }
                write_tags(&mut self.buf, tags);
                open = false;
            }
            let line = name.len() + 1 + field.len() + suffix;
            if !self.fits(line) {
                self.finish_open();
            }
            if line > self.max_packet_size {
                let mut alone = format!("{name}:{field}");
                write_tags(&mut alone, tags);
                self.push_alone(alone);
                continue;
            }
            if !self.buf.is_empty() {
                self.buf.push('\n');
            }
            self.buf.push_str(name);
            self.buf.push(':');
            self.buf.push_str(&field);
            open = true;
        }
        if open {
            write_tags(&mut self.buf, tags);
        }
        self.scratch = field;
    }

    /// Closes the (possibly short) packets being filled; they wait with
    /// the finished ones.
    pub(crate) fn seal(&mut self) {
        for lane in [Lane::Bulk, Lane::First] {
            self.switch(lane);
            self.finish_open();
        }
    }

    /// Moves the finished packets to the ends of `first` and `bulk` (the
    /// forwarder's outbox, one queue a lane) and returns how many of them
    /// are a line longer than a packet, alone.
    pub(super) fn hand_over(
        &mut self,
        first: &mut VecDeque<String>,
        bulk: &mut VecDeque<String>,
    ) -> u64 {
        first.extend(self.first.drain(..));
        bulk.extend(self.bulk.drain(..));
        std::mem::take(&mut self.oversized)
    }

    /// Takes the cleared buffers of sent packets for the next ones.
    pub(super) fn reuse(&mut self, buffers: &mut Vec<String>) {
        self.blank.append(buffers);
    }

    /// Empty buffers held for the next packets.
    #[cfg(test)]
    pub(crate) fn blanks(&self) -> usize {
        self.blank.len()
    }

    /// Bytes waiting for the next packet.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() + self.other.len()
    }

    /// A line longer than a packet on its own: a packet alone, and counted.
    fn push_alone(&mut self, line: String) {
        self.oversized += 1;
        self.queue(line);
    }

    /// With the finished packets of the packet's lane.
    fn queue(&mut self, packet: String) {
        match self.lane {
            Lane::First => self.first.push(packet),
            Lane::Bulk => self.bulk.push(packet),
        }
    }

    fn fits(&self, entry_len: usize) -> bool {
        self.buf.is_empty() || self.buf.len() + 1 + entry_len <= self.max_packet_size
    }

    /// Finishes the packet being filled, if it holds anything.
    fn finish_open(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let next = self
            .blank
            .pop()
            .unwrap_or_else(|| String::with_capacity(self.max_packet_size));
        let packet = std::mem::replace(&mut self.buf, next);
        self.queue(packet);
    }
}

#[cfg(test)]
mod tests {
    use super::super::line::{parse, write_metric};
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;

    use super::super::testing::{
        dogstatsd_as_etsy, etsy_one_value_a_line, lines, pipe, spy, Packets, Pipe,
    };
    use super::super::PacketStats;
    use super::*;

    /// A writer of packets of at most `max` bytes, with a forwarder to a spy.
    fn writer(max: usize) -> (Packets, Pipe, Arc<PacketStats>) {
        let (rx, spy) = spy();
        let (pipe, stats) = pipe(spy, max);
        (rx, pipe, stats)
    }

    fn packets(rx: &Packets) -> Vec<String> {
        rx.take()
    }

    /// The order packets leave in: counts, gauges and set members first,
    /// then timer and distribution values, each in the order written.
    fn lanes(lines: &[String]) -> Vec<String> {
        let first = lines.iter().filter(|l| !is_bulk_line(l));
        first
            .chain(lines.iter().filter(|l| is_bulk_line(l)))
            .cloned()
            .collect()
    }

    /// A timer or distribution line.
    fn is_bulk_line(line: &str) -> bool {
        let body = line.split("|#").next().unwrap();
        body.contains("|ms") || body.contains("|d")
    }

    #[test]
    fn counts_leave_ahead_of_timer_values() {
        // 12 bytes: one 6-byte line a packet.
        let (rx, mut w, _) = writer(12);
        let timer = |ms| Metric {
            name: "t",
            tags: "",
            value: Value::Timer { ms, rate: 1.0 },
        };
        for _ in 0..3 {
            w.push_metric(&timer(1.0));
        }
        w.push_entry("a1:1|c");
        w.push_entry("a2:1|c");
        w.seal();
        assert_eq!(w.send_pending(1), 4);
        // A later count still overtakes the timer values left.
        w.push_metric(&timer(2.0));
        w.push_metric(&Metric {
            name: "b",
            tags: "",
            value: Value::Count {
                value: 2.0,
                rate: 1.0,
            },
        });
        w.push_packed("s", "", [Value::Set("x")]);
        w.seal();
        w.flush();
        assert_eq!(
            packets(&rx),
            [
                "a1:1|c",
                "a2:1|c",
                "b:2|c\ns:x|s",
                "t:1|ms",
                "t:1|ms",
                "t:1|ms",
                "t:2|ms"
            ]
        );
        assert_eq!(w.pending(), 0);
    }

    /// Every field of every line, as the daemon would split it: `(name, tags, field)`.
    fn fields(packets: &[String]) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for single in packets.iter().flat_map(|p| etsy_one_value_a_line(p)) {
            // Each field must parse back on its own with our parser.
            parse(&single).unwrap_or_else(|e| panic!("{single:?}: {e}"));
            let (body, tags) = single.split_once("|#").unwrap_or((&single, ""));
            let (name, field) = body.split_once(':').unwrap();
            out.push((name.to_owned(), tags.to_owned(), field.to_owned()));
        }
        out
    }

    #[test]
    fn joins_lines_until_the_packet_is_full() {
        let (rx, mut w, stats) = writer(20);
        for _ in 0..5 {
            w.push_entry("abc:1|c"); // 7 bytes: two per packet (7 + 1 + 7 = 15)
        }
        assert_eq!(w.buffered(), 7);
        w.flush();
        assert_eq!(
            packets(&rx),
            ["abc:1|c\nabc:1|c", "abc:1|c\nabc:1|c", "abc:1|c"]
        );
        assert_eq!(stats.packets_sent.load(Relaxed), 3);
        assert_eq!(stats.bytes_sent.load(Relaxed), 15 + 15 + 7);
        w.flush();
        assert!(packets(&rx).is_empty(), "an empty buffer sends nothing");
    }

    #[test]
    fn oversized_entry_goes_alone() {
        let (rx, mut w, stats) = writer(10);
        w.push_entry("a:1|c");
        w.push_entry("long.name:1|c");
        w.push_entry("b:1|c");
        w.flush();
        assert_eq!(packets(&rx), ["a:1|c", "long.name:1|c", "b:1|c"]);
        assert_eq!(stats.oversized.load(Relaxed), 1);
    }

    #[test]
    fn negative_gauge_lines_stay_together() {
        let (rx, mut w, _) = writer(20);
        w.push_entry("x:1|c");
        w.push_metric(&Metric {
            name: "g",
            tags: "",
            value: Value::Gauge(-5.0),
        });
        w.flush();
        assert_eq!(packets(&rx), ["x:1|c\ng:0|g\ng:-5|g"]);
    }

    #[test]
    fn splits_a_long_timer_line_under_the_same_name() {
        let (rx, mut w, _) = writer(40);
        let values = (1..=12).map(|i| Value::Timer {
            ms: f64::from(i) + 0.5,
            rate: 1.0,
        });
        w.push_packed("t", "r:a", values);
        w.flush();
        let sent = packets(&rx);
        assert!(sent.len() > 1, "{sent:?}");
        for packet in &sent {
            assert!(packet.len() <= 40, "{packet:?}");
            for line in packet.split('\n') {
                assert!(
                    line.starts_with("t:") && line.ends_with("|#r:a"),
                    "{line:?}"
                );
            }
        }
        let got: Vec<String> = fields(&sent).into_iter().map(|(_, _, f)| f).collect();
        let want: Vec<String> = (1..=12).map(|i| format!("{i}.5|ms")).collect();
        assert_eq!(got, want);
    }

    /// For many packet sizes and mixes: no packet over the limit unless it is a
    /// single oversized field, every field parses back, and the values sent
    /// are exactly the values pushed, in order.
    #[test]
    fn packets_never_exceed_the_limit() {
        let names = [
            "t",
            "route.users._id.posts",
            "a-much-longer.metric.name.for_splitting",
        ];
        let tag_sets = ["", "route:root,method:GET"];
        for max in (1..=80).chain([100, 255, 512, 1432]) {
            for (n, name) in names.iter().enumerate() {
                for tags in tag_sets {
                    let (rx, mut w, stats) = writer(max);
                    let mut want = Vec::new();
                    for round in 0..3 {
                        let values: Vec<f64> = (0..(n * 7 + round * 5 + 1))
                            .map(|i| (i * 37 % 1000) as f64 / 7.0)
                            .collect();
                        let rate = if round == 1 { 0.5 } else { 1.0 };
                        w.push_packed(
                            name,
                            tags,
                            values.iter().map(|&ms| Value::Timer { ms, rate }),
                        );
                        w.push_packed(name, tags, ["u1", "u2"].map(Value::Set));
                        w.push_metric(&Metric {
                            name,
                            tags,
                            value: Value::Count {
                                value: 3.0,
                                rate: 1.0,
                            },
                        });
                        for ms in values {
                            let mut f = String::new();
                            write_field(&mut f, &Value::Timer { ms, rate });
                            want.push(f);
                        }
                        want.extend(["u1|s".to_owned(), "u2|s".to_owned(), "3|c".to_owned()]);
                    }
                    w.flush();
                    let sent = packets(&rx);
                    let mut oversized = 0;
                    for packet in &sent {
                        if packet.len() > max {
                            oversized += 1;
                            assert!(
                                !packet.contains('\n'),
                                "max {max}: oversized packet holds one line: {packet:?}"
                            );
                            assert_eq!(
                                packet.matches(':').count() - tags.matches(':').count(),
                                1,
                                "{packet:?}"
                            );
                        }
                    }
                    assert_eq!(stats.oversized.load(Relaxed), oversized, "max {max}");
                    let got: Vec<String> = fields(&sent)
                        .into_iter()
                        .map(|(got_name, got_tags, field)| {
                            assert_eq!((got_name.as_str(), got_tags.as_str()), (*name, tags));
                            field
                        })
                        .collect();
                    assert_eq!(got, lanes(&want), "max {max}, name {name}, tags {tags:?}");
                }
            }
        }
    }

    /// One value a line, as [`write_metric`] writes it: what every line of a
    /// packet expands to, whatever the dialect packed together.
    fn expand(protocol: Protocol, packets: &[String]) -> Vec<String> {
        packets
            .iter()
            .flat_map(|packet| match protocol {
                Protocol::Etsy => etsy_one_value_a_line(packet),
                _ => lines(&[dogstatsd_as_etsy(packet)]),
            })
            .collect()
    }

    /// The part of `line` a packet would have needed room for to take it:
    /// its name with its first value.
    fn first_value(protocol: Protocol, line: &str) -> String {
        expand(protocol, &[line.to_owned()]).swap_remove(0)
    }

    /// `(name, suffix after the values)` of a multi-value line: two lines
    /// with the same key are one line split in two.
    fn line_key(protocol: Protocol, line: &str) -> Option<(String, String)> {
        let (body, tags) = line.split_once("|#").unwrap_or((line, ""));
        let (name, rest) = body.split_once(':').unwrap();
        match protocol {
            Protocol::Plain => None,
            Protocol::Etsy => Some((name.to_owned(), tags.to_owned())),
            Protocol::DogStatsd => {
                let kind = &rest[rest.find('|').unwrap()..];
                (kind.starts_with("|ms") || kind.starts_with("|d"))
                    .then(|| (name.to_owned(), format!("{kind}|#{tags}")))
            }
        }
    }

    /// Every packet is as full as it can be: the next packet of its lane's
    /// first value (on the same line, or on a new one) would not have fitted
    /// in it. A packet holds lines of one lane only.
    fn assert_tight(protocol: Protocol, max: usize, packets: &[String]) {
        let is_bulk = |packet: &String| {
            let lines: Vec<String> = packet.split('\n').map(str::to_owned).collect();
            let bulk = lines.iter().filter(|l| is_bulk_line(l)).count();
            assert!(
                bulk == 0 || bulk == lines.len(),
                "one lane a packet: {packet:?}"
            );
            bulk > 0
        };
        let (bulk, first): (Vec<String>, Vec<String>) = packets.iter().cloned().partition(is_bulk);
        assert_eq!(
            [&first[..], &bulk[..]].concat(),
            packets,
            "counts leave first"
        );
        for pair in first.windows(2).chain(bulk.windows(2)) {
            let (this, next) = (&pair[0], &pair[1]);
            let last = this.rsplit('\n').next().unwrap();
            let first = next.split('\n').next().unwrap();
            let unit = first_value(protocol, first);
            let room = match line_key(protocol, last) {
                Some(key) if line_key(protocol, first).as_ref() == Some(&key) => {
                    // Continued: one `:` and the first value's own field.
                    let (_, rest) = unit.split_once(':').unwrap();
                    let field = match protocol {
                        Protocol::Etsy => rest.split("|#").next().unwrap(),
                        _ => rest.split('|').next().unwrap(),
                    };
                    1 + field.len()
                }
                _ => 1 + unit.len(),
            };
            assert!(
                this.len() + room > max,
                "{protocol:?}, max {max}: {first:?} would have fitted after {this:?}"
            );
        }
    }

    /// Every dialect, every packet size up to 80 and a few larger, short and
    /// long names, with and without tags, runs of timer values whose rate
    /// changes, distributions, set members and counters: the values arrive
    /// exactly as pushed and in order; no packet is over the limit unless it
    /// is one line too long on its own (each such line counted); and no
    /// packet is sent before it is full.
    #[test]
    fn every_dialect_packs_full_packets_and_keeps_every_value() {
        let bases = ["t", "route.users._id.posts", "a-much-longer.metric.name.x"];
        for protocol in [Protocol::Plain, Protocol::Etsy, Protocol::DogStatsd] {
            for max in (1..=80).chain([100, 255, 512]) {
                for base in bases {
                    for tags in ["", "route:root,method:GET"] {
                        let (rx, mut w, stats) = writer(max);
                        w.protocol(protocol);
                        let mut want = Vec::new();
                        let push = |w: &mut PacketWriter,
                                    want: &mut Vec<String>,
                                    name: &str,
                                    values: Vec<Value>| {
                            for value in &values {
                                let mut line = String::new();
                                write_metric(
                                    &mut line,
                                    &Metric {
                                        name,
                                        tags,
                                        value: *value,
                                    },
                                );
                                want.push(line);
                            }
                            w.push_packed(name, tags, values);
                        };
                        for round in 0..3usize {
                            let timers = (0..round * 6 + 9)
                                .map(|i| {
                                    let ms = (i * 37 % 1000) as f64 / 8.0;
                                    let rate = if i % 7 < 5 { 1.0 } else { 0.25 };
                                    if i % 11 == 10 {
                                        Value::Distribution { value: ms, rate }
                                    } else {
                                        Value::Timer { ms, rate }
                                    }
                                })
                                .collect();
                            push(&mut w, &mut want, &format!("{base}.t{round}"), timers);
                            let members = ["u1", "user-two", "u3"].map(Value::Set).to_vec();
                            push(&mut w, &mut want, &format!("{base}.s{round}"), members);
                            let count = Value::Count {
                                value: round as f64 + 1.0,
                                rate: 1.0,
                            };
                            let name = format!("{base}.c{round}");
                            w.push_metric(&Metric {
                                name: &name,
                                tags,
                                value: count,
                            });
                            let mut line = String::new();
                            write_metric(
                                &mut line,
                                &Metric {
                                    name: &name,
                                    tags,
                                    value: count,
                                },
                            );
                            want.push(line);
                        }
                        w.flush();
                        let sent = packets(&rx);
                        let over: Vec<&String> = sent.iter().filter(|p| p.len() > max).collect();
                        for packet in &over {
                            assert!(
                                !packet.contains('\n'),
                                "{protocol:?}, max {max}: {packet:?}"
                            );
                            assert_eq!(
                                expand(protocol, &[(*packet).clone()]).len(),
                                1,
                                "{packet:?}"
                            );
                        }
                        assert_eq!(
                            stats.oversized.load(Relaxed),
                            over.len() as u64,
                            "{protocol:?}, max {max}"
                        );
                        assert_eq!(stats.packets_sent.load(Relaxed), sent.len() as u64);
                        assert_eq!(
                            stats.bytes_sent.load(Relaxed),
                            sent.iter().map(|p| p.len() as u64).sum::<u64>()
                        );
                        assert_eq!(
                            expand(protocol, &sent),
                            lanes(&want),
                            "{protocol:?}, max {max}, {base}, {tags:?}"
                        );
                        assert_tight(protocol, max, &sent);
                    }
                }
            }
        }
    }

    /// The exact packets of one dialect at sizes where a value fits with no
    /// byte to spare, and where it misses by one.
    #[test]
    fn a_value_that_fits_exactly_joins_the_line() {
        let timers = || {
            (1..=4).map(|i| Value::Timer {
                ms: f64::from(i),
                rate: 1.0,
            })
        };
        // One value a line, when two do not fit.
        let single = vec!["t:1|ms|#a:b", "t:2|ms|#a:b", "t:3|ms|#a:b", "t:4|ms|#a:b"];
        for (protocol, max, want) in [
            // Etsy: `t:1|ms:2|ms|#a:b` is 16 bytes.
            (
                Protocol::Etsy,
                16,
                vec!["t:1|ms:2|ms|#a:b", "t:3|ms:4|ms|#a:b"],
            ),
            (Protocol::Etsy, 15, single.clone()),
            // DogStatsD: `t:1:2|ms|#a:b` is 13 bytes.
            (
                Protocol::DogStatsd,
                13,
                vec!["t:1:2|ms|#a:b", "t:3:4|ms|#a:b"],
            ),
            (Protocol::DogStatsd, 12, single.clone()),
        ] {
            let (rx, mut w, stats) = writer(max);
            w.protocol(protocol);
            w.push_packed("t", "a:b", timers());
            w.flush();
            assert_eq!(packets(&rx), want, "{protocol}, max {max}");
            assert_eq!(stats.oversized.load(Relaxed), 0);
        }
        // A line of exactly the packet size is not oversized; one byte more is.
        for protocol in [Protocol::Plain, Protocol::Etsy, Protocol::DogStatsd] {
            for (max, oversized) in [(11, 0), (10, 1)] {
                let (rx, mut w, stats) = writer(max);
                w.protocol(protocol);
                w.push_packed("t", "a:b", [Value::Timer { ms: 1.0, rate: 1.0 }]);
                w.push_entry("c:1|c");
                w.flush();
                assert_eq!(
                    packets(&rx),
                    ["c:1|c", "t:1|ms|#a:b"],
                    "{protocol:?}, max {max}"
                );
                assert_eq!(
                    stats.oversized.load(Relaxed),
                    oversized,
                    "{protocol:?}, max {max}"
                );
            }
        }
    }

    #[test]
    fn debug_shows_what_is_buffered() {
        let (_rx, mut w, _) = writer(20);
        w.push_entry("a:1|c");
        assert_eq!(
            format!("{:?}", *w),
            "PacketWriter { buffered: 5, max_packet_size: 20, .. }"
        );
        // Both lanes' open packets.
        w.push_metric(&Metric {
            name: "t",
            tags: "",
            value: Value::Timer { ms: 1.0, rate: 1.0 },
        });
        assert_eq!(
            format!("{:?}", *w),
            "PacketWriter { buffered: 11, max_packet_size: 20, .. }"
        );
    }

    proptest::proptest! {
        /// Random names, tags, values, rates and packet sizes: no packet over
        /// the limit unless it is one oversized field, and the timer values
        /// that arrive are exactly the values pushed, in order.
        #[test]
        fn split_timer_lines_keep_every_value(
            max in 1usize..600,
            name in "[a-z._-]{1,40}",
            tags in "([a-z]{1,8}:[a-z0-9]{1,8}(,[a-z]{1,8}:[a-z0-9]{1,8}){0,3})?",
            values in proptest::collection::vec(
                (0.0f64..1e6, proptest::prop_oneof![proptest::strategy::Just(1.0), 0.001f64..1.0]),
                0..200,
            ),
        ) {
            let (rx, mut w, _) = writer(max);
            w.push_packed(&name, &tags, values.iter().map(|&(ms, rate)| Value::Timer { ms, rate }));
            w.flush();
            let sent = packets(&rx);
            for packet in &sent {
                proptest::prop_assert!(packet.len() <= max || !packet.contains('\n'), "{packet:?}");
            }
            let mut got = Vec::new();
            for (got_name, got_tags, field) in fields(&sent) {
                proptest::prop_assert_eq!((&got_name, &got_tags), (&name, &tags));
                got.push(field);
            }
            let want: Vec<String> = values
                .iter()
                .map(|&(ms, rate)| {
                    let mut f = String::new();
                    write_field(&mut f, &Value::Timer { ms, rate });
                    f
                })
                .collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
