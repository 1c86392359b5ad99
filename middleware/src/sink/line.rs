//! The StatsD line format: parsing what a cadence client formatted, and
//! writing lines the Etsy daemon (statsd 0.9) reads back exactly.
//!
//! A cadence line is `name:value|type[|@rate][|#tags]`. Parsing borrows from
//! the line and rejects anything the daemon would misread, so a hostile or
//! broken line is counted as dropped instead of corrupting a packet.
//!
//! Numbers are always written in plain decimal (Rust's `Display` for `f64`
//! never uses an exponent): the daemon reads sample rates with
//! `/^@([\d\.]+)/`, which would turn `@1e-5` into `@1`.

use std::fmt::Write as _;

use super::metric::{Metric, Value};

/// Why a line was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LineError {
    /// No `:` between the name and the value.
    #[error("no `:` between the metric name and its value")]
    MissingValue,
    /// `:value` with nothing before it.
    #[error("the metric name is empty")]
    EmptyName,
    /// A name character outside `[A-Za-z0-9_.-]`.
    #[error("the metric name has a character outside [A-Za-z0-9_.-]")]
    InvalidName,
    /// No `|type` after the value.
    #[error("no `|type` after the value")]
    MissingType,
    /// A type other than `c`, `ms`, `h`, `d`, `m`, `g`, `s`.
    #[error("unknown metric type (expected c, ms, h, d, m, g or s)")]
    UnknownType,
    /// A value that is not a finite decimal number.
    #[error("the value is not a finite number")]
    InvalidNumber,
    /// A negative timer value (the daemon rejects it).
    #[error("a timer value is negative")]
    NegativeTimer,
    /// A sample rate outside `(0, 1]`.
    #[error("the sample rate is not a number in (0, 1]")]
    InvalidRate,
    /// An empty set member, or one with a reserved character or whitespace.
    #[error("the set member is empty or has a reserved character (\\n \\r : | # @ or whitespace)")]
    InvalidSetMember,
    /// Tags with whitespace or control characters.
    #[error("the tags have whitespace or control characters")]
    InvalidTags,
    /// Several `:`-separated values for a type that is not a timer.
    #[error("several values in one line are only accepted for timers (ms, h, d)")]
    PackedValues,
    /// Anything after the type that is not `|@rate` then `|#tags`.
    #[error("unexpected field after the type (only |@rate then |#tags are accepted)")]
    UnexpectedField,
}

/// The metric type of a parsed line, after mapping cadence's extra types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Count,
    Timer,
    Gauge,
    Set,
}

/// A validated line whose value field may hold several `:`-separated values
/// (cadence's `time_multi`, `histogram_multi`, `distribution_multi`).
#[derive(Debug, Clone, Copy)]
struct Parts<'a> {
    name: &'a str,
    values: &'a str,
    kind: Kind,
    rate: f64,
    tags: &'a str,
}

/// Parses one line holding exactly one value.
///
/// `h` and `d` are read as timers (the Etsy daemon would count them as
/// counters), `m` as a counter; a gauge value with a leading sign is a delta.
/// Sample rates on gauges and sets are accepted and ignored, as the daemon
/// does. The worker uses [`parse_each`], which also takes packed timer values.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn parse(line: &str) -> Result<Metric<'_>, LineError> {
    let parts = split(line)?;
    if parts.values.contains(':') {
        return Err(LineError::PackedValues);
    }
    value(&parts, parts.values).map(|value| Metric {
        name: parts.name,
        tags: parts.tags,
        value,
    })
}

/// Parses one line and hands each of its values to `f`; a timer line may
/// carry several values (`name:1:2:3|ms`). Nothing is handed over unless the
/// whole line is valid.
pub(crate) fn parse_each(line: &str, f: &mut dyn FnMut(Metric<'_>)) -> Result<(), LineError> {
    let parts = split(line)?;
    if !parts.values.contains(':') {
        let value = value(&parts, parts.values)?;
        f(Metric {
            name: parts.name,
            tags: parts.tags,
            value,
        });
        return Ok(());
    }
    if parts.kind != Kind::Timer {
        return Err(LineError::PackedValues);
    }
    for text in parts.values.split(':') {
        value(&parts, text)?;
    }
    for text in parts.values.split(':') {
        f(Metric {
            name: parts.name,
            tags: parts.tags,
            value: value(&parts, text)?,
        });
    }
    Ok(())
}

fn split(line: &str) -> Result<Parts<'_>, LineError> {
    let (name, rest) = line.split_once(':').ok_or(LineError::MissingValue)?;
    if name.is_empty() {
        return Err(LineError::EmptyName);
    }
    if !name.bytes().all(is_name_byte) {
        return Err(LineError::InvalidName);
    }
    let mut fields = rest.split('|');
    let values = fields.next().unwrap_or_default();
    let kind = match fields.next().ok_or(LineError::MissingType)? {
        "c" | "m" => Kind::Count,
        "ms" | "h" | "d" => Kind::Timer,
        "g" => Kind::Gauge,
        "s" => Kind::Set,
        _ => return Err(LineError::UnknownType),
    };
    let mut next = fields.next();
    let mut rate = 1.0;
    if let Some(text) = next.and_then(|field| field.strip_prefix('@')) {
        rate = text.parse().map_err(|_| LineError::InvalidRate)?;
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(LineError::InvalidRate);
        }
        next = fields.next();
    }
    let mut tags = "";
    if let Some(text) = next.and_then(|field| field.strip_prefix('#')) {
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(LineError::InvalidTags);
        }
        tags = text;
        next = fields.next();
    }
    if next.is_some() {
        return Err(LineError::UnexpectedField);
    }
    Ok(Parts {
        name,
        values,
        kind,
        rate,
        tags,
    })
}

fn value<'a>(parts: &Parts<'a>, text: &'a str) -> Result<Value<'a>, LineError> {
    let rate = parts.rate;
    Ok(match parts.kind {
        Kind::Count => Value::Count {
            value: number(text)?,
            rate,
        },
        Kind::Timer => {
            let ms = number(text)?;
            if ms < 0.0 {
                return Err(LineError::NegativeTimer);
            }
            Value::Timer { ms, rate }
        }
        Kind::Gauge if text.starts_with(['+', '-']) => Value::GaugeDelta(number(text)?),
        Kind::Gauge => Value::Gauge(number(text)?),
        Kind::Set => {
            if text.is_empty() || !text.chars().all(is_set_char) {
                return Err(LineError::InvalidSetMember);
            }
            Value::Set(text)
        }
    })
}

fn number(text: &str) -> Result<f64, LineError> {
    // `f64::from_str` also takes "inf" and "NaN"; the daemon must never see those.
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value),
        _ => Err(LineError::InvalidNumber),
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn is_set_char(c: char) -> bool {
    // `@` is safe inside a value: a sample rate is its own `|@rate` field.
    !(c.is_whitespace() || c.is_control() || matches!(c, ':' | '|' | '#'))
}

/// Writes `metric` as a complete line (no trailing newline).
///
/// A negative absolute gauge becomes two lines, `name:0|g` then
/// `name:-5|g`: on the wire a leading sign means "change by", so the gauge is
/// reset first. Keep both lines in one packet so they cannot be reordered.
pub(crate) fn write_metric(out: &mut String, metric: &Metric<'_>) {
    if let Value::Gauge(value) = metric.value {
        if value < 0.0 {
            write_line(out, metric.name, metric.tags, &Value::Gauge(0.0));
            out.push('\n');
            write_line(out, metric.name, metric.tags, &Value::GaugeDelta(value));
            return;
        }
    }
    write_line(out, metric.name, metric.tags, &metric.value);
}

fn write_line(out: &mut String, name: &str, tags: &str, value: &Value<'_>) {
    out.push_str(name);
    out.push(':');
    write_field(out, value);
    write_tags(out, tags);
}

/// Writes one field, `value|type[|@rate]`, as it appears after `name:` or
/// between the `:`s of a multi-value line. The daemon reads each field's
/// sample rate on its own. A negative [`Value::Gauge`] is written as a delta;
/// [`write_metric`] avoids that.
pub(crate) fn write_field(out: &mut String, value: &Value<'_>) {
    match *value {
        Value::Count { value, rate } => {
            write_number(out, value);
            out.push_str("|c");
            write_rate(out, rate);
        }
        Value::Timer { ms, rate } => {
            write_ms(out, ms);
            out.push_str("|ms");
            write_rate(out, rate);
        }
        Value::Distribution { value, rate } => {
            write_number(out, value);
            out.push_str("|d");
            write_rate(out, rate);
        }
        Value::Gauge(value) => {
            write_number(out, value);
            out.push_str("|g");
        }
        Value::GaugeDelta(delta) => {
            if delta >= 0.0 {
                out.push('+');
            }
            write_number(out, delta);
            out.push_str("|g");
        }
        Value::Set(member) => {
            out.push_str(member);
            out.push_str("|s");
        }
    }
}

/// Writes `|#tags` when there are tags. The daemon splits a line at `|#`
/// before anything else, so tags go once, at the very end of the line, even
/// after several fields.
pub(crate) fn write_tags(out: &mut String, tags: &str) {
    if !tags.is_empty() {
        out.push_str("|#");
        out.push_str(tags);
    }
}

/// Bytes [`write_tags`] adds.
pub(crate) fn tags_len(tags: &str) -> usize {
    if tags.is_empty() {
        0
    } else {
        2 + tags.len()
    }
}

/// Writes `|@rate` when the rate is below 1.
pub(crate) fn write_rate(out: &mut String, rate: f64) {
    if rate < 1.0 {
        out.push_str("|@");
        write_number(out, rate);
    }
}

/// Integral values print without a fraction (`20`), others in their shortest
/// exact decimal form; never an exponent, never `-0`.
pub(crate) fn write_number(out: &mut String, value: f64) {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        // Exact: |value| < 2^53. Integers (counts, byte sizes) are most
        // values, and `itoa` writes them without `core::fmt`'s machinery.
        out.push_str(itoa::Buffer::new().format(value as i64));
        return;
    }
    let _ = write!(out, "{value}");
}

/// Milliseconds with microsecond precision: `0.3`, `12.5`, `7.001`, `5`.
///
/// Whole microseconds are written with integer arithmetic and no
/// `core::fmt`: this runs once per timer value on the flusher, which the
/// default profile sends every one of (about 35 ns a value here, against 80
/// with `write!`).
pub(crate) fn write_ms(out: &mut String, ms: f64) {
    let micros = (ms * 1000.0).round();
    if micros.abs() < 1e15 {
        // Exact: |micros| < 2^53, so the cast and the split lose nothing.
        let micros = micros as i64;
        if micros < 0 {
            out.push('-');
        }
        let micros = micros.unsigned_abs();
        out.push_str(itoa::Buffer::new().format(micros / 1000));
        let frac = (micros % 1000) as u32;
        if frac != 0 {
            // `.ddd` without its trailing zeros.
            let digits = [
                b'.',
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ];
            let len = if frac % 100 == 0 {
                2
            } else if frac % 10 == 0 {
                3
            } else {
                4
            };
            out.push_str(std::str::from_utf8(&digits[..len]).expect("ASCII digits"));
        }
        return;
    }
    let start = out.len();
    let _ = write!(out, "{ms:.3}");
    let trimmed = out[start..]
        .trim_end_matches('0')
        .trim_end_matches('.')
        .len();
    out.truncate(start + trimmed);
    if &out[start..] == "-0" {
        out.truncate(start);
        out.push('0');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(metric: &Metric<'_>) -> String {
        let mut out = String::new();
        write_metric(&mut out, metric);
        out
    }

    fn field(value: Value<'_>) -> String {
        let mut out = String::new();
        write_field(&mut out, &value);
        out
    }

    #[test]
    fn parses_every_cadence_type() {
        let cases = [
            (
                "a.b:1|c",
                Value::Count {
                    value: 1.0,
                    rate: 1.0,
                },
            ),
            (
                "a.b:-3|c",
                Value::Count {
                    value: -3.0,
                    rate: 1.0,
                },
            ),
            (
                "a.b:2.5|c|@0.5",
                Value::Count {
                    value: 2.5,
                    rate: 0.5,
                },
            ),
            (
                "a.b:8|m",
                Value::Count {
                    value: 8.0,
                    rate: 1.0,
                },
            ),
            (
                "a.b:12|ms",
                Value::Timer {
                    ms: 12.0,
                    rate: 1.0,
                },
            ),
            ("a.b:0.3|ms|@0.1", Value::Timer { ms: 0.3, rate: 0.1 }),
            ("a.b:4|h", Value::Timer { ms: 4.0, rate: 1.0 }),
            ("a.b:4.5|d", Value::Timer { ms: 4.5, rate: 1.0 }),
            ("a.b:5|g", Value::Gauge(5.0)),
            ("a.b:+5|g", Value::GaugeDelta(5.0)),
            ("a.b:-5.5|g", Value::GaugeDelta(-5.5)),
            ("a.b:5|g|@0.5", Value::Gauge(5.0)),
            ("a.b:-42|s", Value::Set("-42")),
            ("a.b:x_y.z|s", Value::Set("x_y.z")),
        ];
        for (text, value) in cases {
            let metric = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                metric,
                Metric {
                    name: "a.b",
                    tags: "",
                    value
                },
                "{text}"
            );
        }
    }

    #[test]
    fn parses_tags_after_the_rate() {
        let metric = parse("p.http-req_1:7|c|@0.25|#route:root,method:GET").unwrap();
        assert_eq!(metric.name, "p.http-req_1");
        assert_eq!(metric.tags, "route:root,method:GET");
        assert_eq!(
            metric.value,
            Value::Count {
                value: 7.0,
                rate: 0.25
            }
        );
        assert_eq!(parse("a:1|ms|#t").unwrap().tags, "t");
    }

    #[test]
    fn rejects_malformed_lines() {
        let cases = [
            ("", LineError::MissingValue),
            ("a.b", LineError::MissingValue),
            (":1|c", LineError::EmptyName),
            ("a b:1|c", LineError::InvalidName),
            ("a/b:1|c", LineError::InvalidName),
            ("a;b=c:1|c", LineError::InvalidName),
            ("é:1|c", LineError::InvalidName),
            ("a:1", LineError::MissingType),
            ("a:1|", LineError::UnknownType),
            ("a:1|x", LineError::UnknownType),
            ("a:1|C", LineError::UnknownType),
            ("a:1| c", LineError::UnknownType),
            ("a:|c", LineError::InvalidNumber),
            ("a:abc|c", LineError::InvalidNumber),
            ("a:inf|c", LineError::InvalidNumber),
            ("a:NaN|ms", LineError::InvalidNumber),
            ("a:-inf|g", LineError::InvalidNumber),
            ("a:1e999|g", LineError::InvalidNumber),
            ("a: 1|c", LineError::InvalidNumber),
            ("a:-1|ms", LineError::NegativeTimer),
            ("a:1|c|@0", LineError::InvalidRate),
            ("a:1|c|@1.5", LineError::InvalidRate),
            ("a:1|c|@-0.5", LineError::InvalidRate),
            ("a:1|c|@", LineError::InvalidRate),
            ("a:1|c|@x", LineError::InvalidRate),
            ("a:1|c|@NaN", LineError::InvalidRate),
            ("a:|s", LineError::InvalidSetMember),
            ("a:x#y|s", LineError::InvalidSetMember),
            ("a:x y|s", LineError::InvalidSetMember),
            ("a:x\ty|s", LineError::InvalidSetMember),
            ("a:x\ry|s", LineError::InvalidSetMember),
            ("a:x\ny|s", LineError::InvalidSetMember),
            ("a:1|c|#a b", LineError::InvalidTags),
            ("a:1|c|#a\nb:1|c", LineError::InvalidTags),
            ("a:1|c:2|c", LineError::UnknownType),
            ("a:1:2|g", LineError::PackedValues),
            ("a:x:y|s", LineError::PackedValues),
            ("a:1|c|x", LineError::UnexpectedField),
            ("a:1|c|#t|@0.5", LineError::UnexpectedField),
            ("a:1|c|@0.5|@0.5", LineError::UnexpectedField),
            ("a:1|c|#t|#u", LineError::UnexpectedField),
            ("a:1|c|T1656581400", LineError::UnexpectedField),
            ("a:1|c|c:abc", LineError::UnexpectedField),
            ("a:1|c|", LineError::UnexpectedField),
        ];
        for (text, error) in cases {
            assert_eq!(parse(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn packed_timer_values_are_all_or_nothing() {
        let mut seen = Vec::new();
        let text = "a:1:2.5:3|ms|@0.5|#t:1";
        parse_each(text, &mut |m| {
            seen.push(format!("{} {} {:?}", m.name, m.tags, m.value))
        })
        .unwrap();
        let timer = |ms| format!("a t:1 {:?}", Value::Timer { ms, rate: 0.5 });
        assert_eq!(seen, [timer(1.0), timer(2.5), timer(3.0)]);

        let mut count = 0;
        assert_eq!(
            parse_each("a:1:x|ms", &mut |_| count += 1),
            Err(LineError::InvalidNumber)
        );
        assert_eq!(
            parse_each("a:1:-2|h", &mut |_| count += 1),
            Err(LineError::NegativeTimer)
        );
        assert_eq!(
            parse_each("a:1:2|c", &mut |_| count += 1),
            Err(LineError::PackedValues)
        );
        assert_eq!(count, 0);
        assert_eq!(parse("a:1:2|ms"), Err(LineError::PackedValues));
    }

    #[test]
    fn formats_timers_with_microsecond_precision() {
        let ms = |ms| field(Value::Timer { ms, rate: 1.0 });
        assert_eq!(ms(0.3), "0.3|ms");
        assert_eq!(ms(12.5), "12.5|ms");
        assert_eq!(ms(7.001), "7.001|ms");
        assert_eq!(ms(7.0014), "7.001|ms");
        assert_eq!(ms(7.0016), "7.002|ms");
        assert_eq!(ms(0.0004), "0|ms");
        assert_eq!(ms(0.0), "0|ms");
        assert_eq!(ms(-0.0), "0|ms");
        assert_eq!(ms(5.0), "5|ms");
        assert_eq!(ms(120.0), "120|ms");
        assert_eq!(ms(1e12), "1000000000000|ms");
        assert_eq!(ms(7.1), "7.1|ms");
        assert_eq!(ms(7.01), "7.01|ms");
        assert_eq!(ms(7.011), "7.011|ms");
        assert_eq!(ms(987.654), "987.654|ms");
        assert_eq!(ms(-2.5), "-2.5|ms");
        assert_eq!(ms(-0.0004), "0|ms");
        assert_eq!(
            field(Value::Timer {
                ms: 0.25,
                rate: 0.1
            }),
            "0.25|ms|@0.1"
        );
    }

    #[test]
    fn formats_counters_gauges_and_sets() {
        let count = |value, rate| field(Value::Count { value, rate });
        assert_eq!(count(20.0, 1.0), "20|c");
        assert_eq!(count(-1.0, 1.0), "-1|c");
        assert_eq!(count(2.5, 1.0), "2.5|c");
        assert_eq!(count(1e21, 1.0), "1000000000000000000000|c");
        assert_eq!(count(999_999_999_999_999.0, 1.0), "999999999999999|c");
        assert_eq!(count(-1e15, 1.0), "-1000000000000000|c");
        assert_eq!(count(-0.0, 1.0), "0|c");
        assert_eq!(count(3.0, 0.5), "3|c|@0.5");
        assert_eq!(count(3.0, 0.00001), "3|c|@0.00001");
        assert_eq!(field(Value::Gauge(4.5)), "4.5|g");
        assert_eq!(field(Value::Gauge(-0.0)), "0|g");
        assert_eq!(field(Value::GaugeDelta(3.0)), "+3|g");
        assert_eq!(field(Value::GaugeDelta(0.0)), "+0|g");
        assert_eq!(field(Value::GaugeDelta(-0.0)), "+0|g");
        assert_eq!(field(Value::GaugeDelta(-2.5)), "-2.5|g");
        assert_eq!(field(Value::Set("u1")), "u1|s");
    }

    #[test]
    fn negative_absolute_gauge_resets_to_zero_first() {
        let metric = Metric {
            name: "g",
            tags: "k:v",
            value: Value::Gauge(-5.0),
        };
        assert_eq!(line(&metric), "g:0|g|#k:v\ng:-5|g|#k:v");
    }

    #[test]
    fn lines_round_trip() {
        let metrics = [
            Metric {
                name: "a",
                tags: "",
                value: Value::Count {
                    value: 3.0,
                    rate: 1.0,
                },
            },
            Metric {
                name: "a.b-c_d",
                tags: "x:y,z",
                value: Value::Count {
                    value: 0.5,
                    rate: 0.125,
                },
            },
            Metric {
                name: "t",
                tags: "",
                value: Value::Timer { ms: 0.3, rate: 1.0 },
            },
            Metric {
                name: "t",
                tags: "route:root",
                value: Value::Timer {
                    ms: 1234.567,
                    rate: 0.5,
                },
            },
            Metric {
                name: "g",
                tags: "",
                value: Value::Gauge(42.0),
            },
            Metric {
                name: "g",
                tags: "",
                value: Value::GaugeDelta(-1.5),
            },
            Metric {
                name: "g",
                tags: "",
                value: Value::GaugeDelta(2.0),
            },
            Metric {
                name: "s",
                tags: "a:b",
                value: Value::Set("user-1.x_Y"),
            },
        ];
        for metric in metrics {
            let text = line(&metric);
            assert_eq!(parse(&text), Ok(metric), "{text}");
        }
    }

    #[test]
    fn zero_is_a_timer_value_and_an_absolute_gauge() {
        assert_eq!(
            parse("t:0|ms").unwrap().value,
            Value::Timer { ms: 0.0, rate: 1.0 }
        );
        let gauge = |value| Metric {
            name: "g",
            tags: "",
            value: Value::Gauge(value),
        };
        // Only a negative gauge is reset first; 0 and -0 are plain `0`.
        assert_eq!(line(&gauge(0.0)), "g:0|g");
        assert_eq!(line(&gauge(-0.0)), "g:0|g");
        assert_eq!(line(&gauge(3.0)), "g:3|g");
    }

    #[test]
    fn tags_len_is_what_write_tags_adds() {
        for (tags, len) in [("", 0), ("k:v", 5), ("route:root,method:GET", 23)] {
            let mut out = String::from("a:1|c");
            write_tags(&mut out, tags);
            assert_eq!(out.len() - "a:1|c".len(), len, "{tags:?}");
            assert_eq!(tags_len(tags), len, "{tags:?}");
        }
    }

    #[test]
    fn milliseconds_round_to_the_microsecond_from_ms_times_1000() {
        let ms = |ms| {
            let mut out = String::from("t:");
            write_ms(&mut out, ms);
            out
        };
        // `(ms * 1000).round()`: 1.2345 * 1000 is 1234.5 and rounds up
        // (formatting 1.2345 with 3 decimals would give 1.234: its binary
        // value is just below); the same for 1.0005.
        assert_eq!(ms(1.2345), "t:1.235");
        assert_eq!(ms(1.0005), "t:1.001");
        assert_eq!(ms(12.3455), "t:12.346");
        assert_eq!(ms(-2.5), "t:-2.5");
        assert_eq!(ms(-0.0004), "t:0");
        // Past 10^15 microseconds the float form, trimmed: still exact, no
        // exponent, no fraction.
        assert_eq!(ms(1e13), "t:10000000000000");
        assert_eq!(ms(1e20), "t:100000000000000000000");
        assert_eq!(ms(-1e20), "t:-100000000000000000000");
        assert_eq!(ms(2f64.powi(70)), "t:1180591620717411303424");
    }
}
