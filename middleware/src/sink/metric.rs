//! One metric operation as every part of delivery hands it on: the layer's
//! records, a parsed cadence line, a handler's typed call.

/// One metric operation, borrowed from wherever it was produced (a request
/// record or a parsed cadence line). Only the four types the Etsy daemon
/// understands exist here: `c`, `ms`, `g`, `s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Metric<'a> {
    /// Full metric name, prefix included, already safe (`[A-Za-z0-9_.-]`).
    pub(crate) name: &'a str,
    /// DogStatsD tags without the leading `#` (`route:root,method:GET`), or `""`.
    pub(crate) tags: &'a str,
    /// What happened.
    pub(crate) value: Value<'a>,
}

/// The value of a [`Metric`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value<'a> {
    /// Counter increment; `rate` is the sample rate (1.0 = every event).
    Count { value: f64, rate: f64 },
    /// One timer observation in float milliseconds, with its sample rate.
    Timer { ms: f64, rate: f64 },
    /// One value of a DogStatsD distribution (`|d`), with its sample rate;
    /// written only in the DogStatsD dialect (Etsy StatsD would count it).
    Distribution { value: f64, rate: f64 },
    /// Absolute gauge value.
    Gauge(f64),
    /// Relative gauge change.
    GaugeDelta(f64),
    /// Set member, already safe (no `\n`, `:`, `|`, `#`, whitespace).
    Set(&'a str),
}
