//! Delivery: the layer and the handlers' client hand metrics to a bounded
//! in-memory stage; one background thread aggregates them per flush window
//! and writes packets of at most `max_packet_size` bytes to a transport.
//!
//! The data path, one concern per module:
//!
//! - `worker`: [`AggregatingSink`] — `send`/[`emit`](cadence::MetricSink::emit)
//!   (one `try_send`, never blocks) → bounded channel → the `tower-statsd`
//!   thread, which flushes on a timer, on [`AggregatingSink::flush`], when a
//!   window grows too large, and when the last handle is dropped;
//! - `line`: parsing cadence's `name:value|type[|@rate][|#tags]` lines and
//!   formatting lines the Etsy daemon reads back exactly;
//! - `aggregate`: one flush window (counters summed, sets de-duplicated,
//!   timer values packed as `key:v1|ms:v2|ms`, gauges folded);
//! - `packet`: `\n`-joined lines in packets of at most `max_packet_size`
//!   bytes, a long multi-value line split under the same name;
//! - `transport`: [`UdpSink`] (lazy, retried DNS) and [`TcpSink`] (lazy,
//!   retried connection). Any cadence [`MetricSink`](cadence::MetricSink) is
//!   a transport too: cadence's [`UnixMetricSink`](cadence::UnixMetricSink)
//!   for a Unix datagram socket, [`SpyMetricSink`](cadence::SpyMetricSink) in
//!   tests. One `emit` call is one packet.
//!
//! # Examples
//!
//! Default delivery to a local daemon, used by a plain cadence client:
//!
//! ```
//! use cadence::{Counted, StatsdClient};
//! use tower_statsd::sink::{AggregatingSink, UdpSink};
//!
//! let sink = AggregatingSink::builder(UdpSink::new("localhost", 8125, false)?).build()?;
//! let statsd = StatsdClient::from_sink("app", sink.clone());
//! statsd.count("jobs", 3).ok();
//! statsd.count("jobs", 4).ok();
//! sink.flush(); // one packet: `app.jobs:7|c`
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Customised: packets captured in a test, no aggregation:
//!
//! ```
//! use cadence::{Counted, SpyMetricSink, StatsdClient};
//! use tower_statsd::sink::AggregatingSink;
//!
//! let (packets, spy) = SpyMetricSink::new();
//! let sink = AggregatingSink::builder(spy).aggregate(false).max_packet_size(1432).build()?;
//! let statsd = StatsdClient::from_sink("app", sink.clone());
//! statsd.count("jobs", 3).ok();
//! statsd.count("jobs", 4).ok();
//! assert!(sink.flush());
//! assert_eq!(packets.try_recv().unwrap(), b"app.jobs:3|c\napp.jobs:4|c");
//! # Ok::<(), std::io::Error>(())
//! ```

mod aggregate;
#[cfg(test)]
mod fuzz;
mod line;
mod packet;
mod requests;
#[cfg(test)]
mod testing;
mod transport;
mod worker;

pub use transport::{TcpSink, UdpSink};
pub use worker::{AggregatingSink, AggregatingSinkBuilder};

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
    /// Set member, already safe (no `\n`, `:`, `|`, `#`, whitespace).
    Set(&'a str),
}

/// What travels from the request path to the worker thread.
#[derive(Debug)]
pub(crate) enum Event {
    /// A finished request from the layer: folded into the per-route window on
    /// the worker, or expanded line by line when aggregation is off.
    Request(crate::record::RequestRecord),
    /// A line a cadence client formatted: `name:value|type[|@rate][|#tags]`.
    Line(String),
    /// Flush everything buffered now, then acknowledge.
    Flush(std::sync::mpsc::SyncSender<()>),
}

#[cfg(test)]
mod size {
    /// The queue is allocated (and touched) up front: its slots must stay small.
    #[test]
    fn events_are_small() {
        let size = std::mem::size_of::<super::Event>();
        println!("Event: {size} bytes");
        assert!(size <= 128, "Event grew to {size} bytes");
    }
}
