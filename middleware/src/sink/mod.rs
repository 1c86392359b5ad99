//! Delivery: the layer and the handlers' client hand metrics to a bounded
//! in-memory stage; one background thread aggregates them per flush window
//! and writes packets of at most `max_udp_size` bytes to a transport.
//!
//! The data path: [`Pipeline::send`] (never blocks) → channel → worker thread
//! → [`Aggregator`] (counters summed, sets de-duplicated, timer values packed)
//! → packet writer → transport ([`UdpSink`], [`TcpSink`] or any cadence
//! [`MetricSink`](cadence::MetricSink)).

// Interface shared with the rest of the crate; the modules below implement it.

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
    /// Absolute gauge value.
    Gauge(f64),
    /// Relative gauge change.
    GaugeDelta(f64),
    /// Set member, already safe (no `\n`, `:`, `|`, `#`, `@`).
    Set(&'a str),
}

/// What travels from the request path to the worker thread.
#[derive(Debug)]
pub(crate) enum Event {
    /// A finished request from the layer, expanded into metrics on the worker
    /// with [`RequestRecord::for_each_metric`](crate::record::RequestRecord::for_each_metric).
    Request(crate::record::RequestRecord),
    /// A line a cadence client formatted: `name:value|type[|@rate][|#tags]`.
    Line(String),
    /// Flush everything buffered now, then acknowledge.
    Flush(std::sync::mpsc::SyncSender<()>),
}
