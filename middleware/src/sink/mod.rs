//! Delivery: what was recorded in a window becomes packets of at most
//! `max_packet_size` bytes on a transport. Nothing here knows of HTTP: the
//! layer's per-route statistics are one more source of lines the flusher
//! drains, like the handlers' metrics.
//!
//! The data path, one concern per module:
//!
//! - `handle`: [`AggregatingSink`], the cadence [`MetricSink`](cadence::MetricSink)
//!   that handlers' metrics go through ([`emit`](cadence::MetricSink::emit)
//!   parses the line and folds it into the window in place), and its builder;
//! - `flusher`: the one `tower-statsd` thread; it sleeps until the window
//!   ends (or a flush, an early drain or shutdown is asked for), drains every
//!   source, and paces the packets over half a window;
//! - `line`: parsing cadence's `name:value|type[|@rate][|#tags]` lines and
//!   formatting lines the Etsy daemon reads back exactly;
//! - `aggregate`: one window of handler metrics (counters summed, sets
//!   de-duplicated, timers sampled, gauges folded);
//! - `sample`: a timer's bounded sample with exact counts;
//! - `protocol`: the wire dialects ([`Protocol`]): how a name's values are packed;
//! - `server`: the server profiles ([`Server`]): which packing, whether a
//!   timer may be sampled, what the server keeps;
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
//! Customised: packets captured in a test, one value per line; counts leave
//! in packets ahead of timer values:
//!
//! ```
//! use cadence::{Counted, SpyMetricSink, StatsdClient, Timed};
//! use tower_statsd::sink::{AggregatingSink, Protocol};
//!
//! let (packets, spy) = SpyMetricSink::new();
//! let sink = AggregatingSink::builder(spy).protocol(Protocol::Plain).max_packet_size(1432).build()?;
//! let statsd = StatsdClient::from_sink("app", sink.clone());
//! statsd.count("jobs", 3).ok();
//! statsd.count("jobs", 4).ok();
//! statsd.time("db", 3).ok();
//! statsd.time("db", 4).ok();
//! assert!(sink.flush());
//! let packets: Vec<Vec<u8>> = packets.try_iter().collect();
//! assert_eq!(packets, [&b"app.jobs:7|c"[..], b"app.db:3|ms\napp.db:4|ms"]);
//! # Ok::<(), std::io::Error>(())
//! ```

mod aggregate;
mod flusher;
#[cfg(test)]
mod fuzz;
mod handle;
mod line;
mod packet;
mod protocol;
mod sample;
mod server;
#[cfg(test)]
pub(crate) mod testing;
mod transport;

pub(crate) use flusher::Control;
pub use handle::{AggregatingSink, AggregatingSinkBuilder, FlushFuture};
#[cfg(test)]
pub(crate) use packet::PacketStats;
pub(crate) use packet::PacketWriter;
pub use protocol::{Protocol, UnknownProtocol};
pub(crate) use sample::{TimerSample, MIN_CAP as MIN_TIMER_SAMPLES};
pub(crate) use server::Mismatch;
pub use server::{Server, UnknownServer};
pub use transport::{TcpSink, UdpSink};

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

/// Something that records metrics in place and writes them when the
/// flusher asks: the layer's per-route statistics.
pub(crate) trait Source: Send + Sync + std::fmt::Debug {
    /// Writes what was recorded since the last call to `out`, and starts a
    /// new window.
    fn drain(&self, out: &mut PacketWriter);

    /// Writes what must follow the last [`drain`](Self::drain) of a source
    /// nobody uses any more (a gauge back to 0), right after it.
    fn retire(&self, _out: &mut PacketWriter) {}

    /// Writes only what filled up before the window's end (a route's set of
    /// users past its early-drain size) and leaves the rest of the window
    /// to its end: counters and timer samples keep their whole window.
    fn drain_full(&self, out: &mut PacketWriter);

    /// Whether something may still record into this source besides the
    /// sink's own reference (a request in flight). A source nobody else
    /// holds and that is not in use is drained one last time and dropped.
    fn in_use(&self) -> bool;

    /// Lets go of what the source holds for its users and they no longer
    /// use (the anchors of dropped services, which hold the source in a
    /// cycle): called before each drain, so a source whose users are all
    /// gone is retired.
    fn release_unused(&self);
}
