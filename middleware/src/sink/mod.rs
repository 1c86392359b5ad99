//! Delivery: what was recorded in a window becomes packets of at most
//! `max_packet_size` bytes on a transport. Nothing here knows of HTTP: the
//! layer's per-route statistics are one more source of lines the flusher
//! drains, like the handlers' metrics.
//!
//! The data path runs one way: sources (the layer's per-route statistics,
//! the handlers' window) → writer (a window into payloads for the server's
//! dialect; no socket, no clock) → forwarder (the transport, the outbox,
//! pacing, send statistics). One concern per module:
//!
//! - `handle`: [`AggregatingSink`], the cadence [`MetricSink`](cadence::MetricSink)
//!   that handlers' metrics go through ([`emit`](cadence::MetricSink::emit)
//!   parses the line and folds it into the window in place), and its builder;
//! - `control`: how the handles, the sources and the flusher thread talk:
//!   flush tickets and wakers, early drains, close, the dropped count;
//! - `flusher`: the one `tower-statsd` thread and its wake loop; it sleeps
//!   until the window ends (or a flush, an early drain or shutdown is asked
//!   for), drains every source into the writer, retires the sources nobody
//!   holds, and hands the payloads to the forwarder;
//! - `line`: parsing cadence's `name:value|type[|@rate][|#tags]` lines and
//!   formatting lines the Etsy daemon reads back exactly;
//! - `aggregate`: one window of handler metrics (counters summed, sets
//!   de-duplicated, timers sampled, gauges folded);
//! - `sample`: a timer's bounded sample with exact counts;
//! - `protocol`: the wire dialects ([`Protocol`]);
//! - `server`: the server profiles ([`Server`]): which packing, whether a
//!   timer may be sampled, what the server keeps;
//! - `writer`: `\n`-joined lines in payloads of at most `max_packet_size`
//!   bytes, the values of one name packed as the dialect says, a long
//!   multi-value line split under the same name, counts in a lane ahead of
//!   timer values;
//! - `forwarder`: the outbox and its buffer pool, pacing over half a
//!   window, one [`emit`](cadence::MetricSink::emit) per payload, and the
//!   send statistics;
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
//! sink.flush()?; // one packet: `app.jobs:7|c`
//! # Ok::<(), Box<dyn std::error::Error>>(())
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
//! sink.flush()?;
//! let packets: Vec<Vec<u8>> = packets.try_iter().collect();
//! assert_eq!(packets, [&b"app.jobs:7|c"[..], b"app.db:3|ms\napp.db:4|ms"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod aggregate;
mod control;
mod flusher;
mod forwarder;
mod handle;
mod line;
mod metric;
mod protocol;
mod sample;
mod server;
pub(crate) mod settings;
#[cfg(test)]
pub(crate) mod testing;
mod transport;
mod writer;

pub(crate) use control::Control;
pub use control::FlushError;
pub(crate) use flusher::Source;
#[cfg(test)]
pub(crate) use forwarder::PacketStats;
pub use handle::{AggregatingSink, AggregatingSinkBuilder, FlushFuture};
pub(crate) use metric::{Metric, Value};
pub use protocol::{Protocol, UnknownProtocol};
pub(crate) use sample::TimerSample;
pub use server::{Server, UnknownServer};
pub use transport::{TcpSink, UdpSink};
pub(crate) use writer::PacketWriter;
