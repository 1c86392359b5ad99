//! [`AggregatingSink`]: the handle applications and the layer hold, and its
//! builder.
//!
//! It is a cadence [`MetricSink`]: a handler's `statsd.incr(...)` is parsed
//! and folded into the current window where it is called, under one short
//! lock, and leaves with the layer's own metrics. A window holding too many
//! values asks the flusher to send it early, so memory stays bounded and
//! nothing is dropped: the daemon sums, unions and appends within its own
//! window anyway.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::{fmt, io, thread};

use cadence::{MetricSink, SinkStats};

use super::aggregate::Aggregator;
use super::control::{Control, FlushError};
use super::flusher::Source;
use super::flusher::{Core, Flusher};
use super::forwarder::{Forwarder, PacketStats};
use super::line;
use super::metric::{Metric, Value};
use super::protocol::Protocol;
use super::server::Server;
use super::settings::{Requested, Settings, DROPPED_METRIC};
use super::writer::PacketWriter;

/// Most copies of one sampled handler timer value sent, unrated, to a
/// server that misreads rates (a rate below 1/1 000 counts as 1/1 000).
const MAX_UNRATED_COPIES: f64 = 1_000.0;

/// How many events a timer value sampled at `rate` (in `(0, 1]`) stands
/// for, as statsd_exporter and Telegraf count it: `1/rate`, here rounded.
fn unrated_copies(rate: f64) -> u32 {
    (1.0 / rate).round().clamp(1.0, MAX_UNRATED_COPIES) as u32
}

/// How long [`AggregatingSink::flush`] and dropping the last handle wait for
/// the flusher.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A window of handler metrics this many times over `max_buffered_values`
/// (the flusher far behind) drops further lines, and counts them.
const HARD_LIMIT_FACTOR: usize = 64;

/// A cadence [`MetricSink`] that never blocks on the network: metrics are
/// aggregated in memory per flush window, and one background thread sends
/// them as packets to a transport ([`UdpSink`](super::UdpSink),
/// [`TcpSink`](super::TcpSink) or any other [`MetricSink`]).
///
/// Cloning is cheap and every clone feeds the same thread. When the last
/// clone is dropped the thread sends what it holds and exits; the drop waits
/// for that, up to 5 seconds. Call [`flush`](AggregatingSink::flush) on
/// graceful shutdown to be sure everything left the process while other
/// clones are still alive.
///
/// # Examples
///
/// The defaults: a 1 second window, 512 byte packets (pystatsd's
/// `STATSD_MAXUDPSIZE`), at most 1 024 values per timer and window.
///
/// ```
/// use cadence::{CountedExt, StatsdClient};
/// use tower_statsd::sink::{AggregatingSink, UdpSink};
///
/// let sink = AggregatingSink::builder(UdpSink::new("localhost", 8125, false)?).build()?;
/// let statsd = StatsdClient::from_sink("myapp", sink.clone());
/// statsd.incr("jobs.done").ok();
/// sink.flush()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Customised: a 10 second window (statsd's own default flush interval),
/// jumbo packets over a private network, every timer value kept, and Etsy
/// StatsD's multi-value lines.
///
/// ```
/// use std::time::Duration;
/// use tower_statsd::sink::{AggregatingSink, Protocol, TcpSink};
///
/// let sink = AggregatingSink::builder(TcpSink::new("statsd", 8125))
///     .flush_interval(Duration::from_secs(10))
///     .max_packet_size(8_192)
///     .max_timer_samples(0)
///     .protocol(Protocol::Etsy)
///     .dropped_metric("myapp.tower_statsd.dropped")
///     .build()?;
/// assert_eq!(sink.dropped(), 0);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct AggregatingSink {
    handle: Arc<Handle>,
}

/// Owned by all clones; its drop is the last clone going away.
struct Handle {
    core: Arc<Core>,
    packets: Arc<PacketStats>,
    max_buffered_values: usize,
    timer_cap: usize,
    server: Server,
    flusher: thread::Thread,
}

impl fmt::Debug for AggregatingSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregatingSink")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl AggregatingSink {
    /// Starts configuring a sink that sends its packets to `transport`.
    pub fn builder<T>(transport: T) -> AggregatingSinkBuilder
    where
        T: MetricSink + Send + 'static,
    {
        AggregatingSinkBuilder {
            transport: Box::new(transport),
            requested: Requested::default(),
            dropped_metric: DROPPED_METRIC.to_owned(),
            tiny_packets: None,
        }
    }

    /// Starts the flusher thread (`tower-statsd`) with settings already
    /// validated: the one way both builders start a sink.
    pub(crate) fn start(
        transport: Box<dyn MetricSink + Send>,
        settings: Settings,
        dropped_metric: String,
    ) -> io::Result<AggregatingSink> {
        let Settings {
            flush_interval,
            max_packet_size,
            max_buffered_values,
            timer_cap,
            server,
            protocol,
        } = settings;
        tracing::info!(
            %server,
            %protocol,
            timer_cap,
            not_kept = %server.losses(timer_cap).join("; "),
            "tower-statsd sends to a StatsD server of this profile"
        );
        let packets = Arc::new(PacketStats::default());
        let core = Arc::new(Core {
            control: Arc::default(),
            lines: Mutex::new(Aggregator::new(timer_cap)),
            sources: Mutex::default(),
        });
        let mut writer = PacketWriter::new(max_packet_size);
        writer.protocol(protocol);
        let forwarder = Forwarder::new(transport, max_packet_size, flush_interval, packets.clone());
        let flusher = Flusher {
            core: core.clone(),
            writer,
            forwarder,
            spare: Aggregator::new(timer_cap),
            flush_interval,
            max_buffered_values,
            dropped_metric,
            reported_dropped: 0,
        };
        let thread = thread::Builder::new()
            .name("tower-statsd".to_owned())
            .spawn(move || flusher.run())?;
        Ok(AggregatingSink {
            handle: Arc::new(Handle {
                core,
                packets,
                max_buffered_values,
                timer_cap,
                server,
                flusher: thread.thread().clone(),
            }),
        })
    }

    /// Sends everything aggregated so far, and waits until the transport has
    /// been given every packet. Blocks for up to 5 seconds:
    /// [`FlushError::TimedOut`] if the flusher did not finish in time,
    /// [`FlushError::Closed`] if it is gone.
    pub fn flush(&self) -> Result<(), FlushError> {
        self.handle.core.control.flush(FLUSH_TIMEOUT)
    }

    /// Like [`flush`](Self::flush), without blocking: a future that is ready
    /// (`Ok`) once the transport has been given every packet aggregated
    /// before the call, or [`FlushError::Closed`] if the flusher is gone. It
    /// has no time limit of its own: wrap it in your runtime's timeout.
    ///
    /// ```
    /// # async fn shutdown(sink: tower_statsd::sink::AggregatingSink) {
    /// if let Err(error) = sink.flush_async().await {
    ///     eprintln!("metrics not sent: {error}");
    /// }
    /// # }
    /// ```
    pub fn flush_async(&self) -> FlushFuture {
        let control = self.handle.core.control.clone();
        let ticket = control.ask_flush();
        FlushFuture { control, ticket }
    }

    /// Metrics dropped since the start: a cadence client's line was
    /// invalid, or a window was far over its size while the flusher lagged.
    pub fn dropped(&self) -> u64 {
        self.handle.core.control.dropped()
    }

    /// Packets the transport returned an error for, since the start.
    pub fn failed_packets(&self) -> u64 {
        self.handle
            .packets
            .packets_failed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds a source the flusher drains every window.
    pub(crate) fn register(&self, source: Arc<dyn Source>) {
        self.handle
            .core
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(source);
    }

    /// What a source needs to ask for an early drain and count drops.
    pub(crate) fn control(&self) -> &Arc<Control> {
        &self.handle.core.control
    }

    /// Sources the flusher still drains.
    #[cfg(test)]
    pub(crate) fn sources(&self) -> usize {
        self.handle
            .core
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// The server profile packets are written for.
    pub(crate) fn server(&self) -> Server {
        self.handle.server
    }

    /// Values kept per timer and window before sampling; 0 = no cap.
    pub(crate) fn timer_cap(&self) -> usize {
        self.handle.timer_cap
    }
}

/// The future of [`AggregatingSink::flush_async`] (and
/// [`Statsd::flush_async`](crate::Statsd::flush_async)).
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct FlushFuture {
    control: Arc<Control>,
    /// `None`: the flusher was already gone.
    ticket: Option<u64>,
}

impl std::future::Future for FlushFuture {
    type Output = Result<(), FlushError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.ticket {
            Some(ticket) => self.control.poll_flushed(ticket, cx),
            None => std::task::Poll::Ready(Err(FlushError::Closed)),
        }
    }
}

impl AggregatingSink {
    /// Folds one metric this crate made (a handler's gauge delta or float
    /// timing) into the current window: no line formatted, none parsed.
    /// Never blocks on I/O; a window far over its size drops it, counted.
    pub(crate) fn record(&self, metric: Metric<'_>) {
        let _ = self.fold(|add| add(metric));
    }

    /// Gives `write` the way into the handlers' window and returns what it
    /// returns, or drops everything, counted, when the window is far over
    /// its size. What the server cannot read is made into what it can: no
    /// tags (the metric is merged with its untagged twin) rather than a
    /// line it rejects, and a timer value the handler sampled itself
    /// repeated `1/rate` times, unrated, rather than a rate it misreads. A
    /// window that fills up asks for an early drain.
    fn fold<R>(&self, write: impl FnOnce(&mut dyn FnMut(Metric<'_>)) -> R) -> io::Result<R> {
        let handle = &*self.handle;
        let mut lines = handle.core.lines();
        let held = lines.len();
        if held >= handle.max_buffered_values * HARD_LIMIT_FACTOR {
            drop(lines);
            handle.core.control.count_dropped(1);
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "tower-statsd window is full and the flusher is behind; metric dropped",
            ));
        }
        let (keep_tags, keep_rates) = (
            handle.server.reads_tags(),
            handle.server.reads_timer_rates(),
        );
        let written = write(&mut |m| {
            let m = if keep_tags {
                m
            } else {
                Metric { tags: "", ..m }
            };
            match m.value {
                Value::Timer { ms, rate } if !keep_rates && rate != 1.0 => {
                    for _ in 0..unrated_copies(rate) {
                        lines.add(Metric {
                            value: Value::Timer { ms, rate: 1.0 },
                            ..m
                        });
                    }
                }
                _ => lines.add(m),
            }
        });
        let full = lines.len() >= handle.max_buffered_values && held < handle.max_buffered_values;
        drop(lines);
        if full {
            handle.core.control.drain_early();
        }
        Ok(written)
    }
}

impl MetricSink for AggregatingSink {
    /// Folds a line a cadence client formatted into the current window.
    /// Never blocks on I/O. An invalid line is dropped, counted, and an
    /// `InvalidInput` error returned.
    fn emit(&self, metric: &str) -> io::Result<usize> {
        match self.fold(|add| line::parse_each(metric, add))? {
            Ok(()) => Ok(metric.len()),
            Err(error) => {
                self.handle.core.control.count_dropped(1);
                tracing::debug!(%error, line = %metric, "invalid statsd line dropped");
                Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    error.to_string(),
                ))
            }
        }
    }

    /// Same as [`AggregatingSink::flush`], as an `io::Result`: the
    /// [`FlushError`] inside an `io::Error` of kind `TimedOut` or
    /// `BrokenPipe` (the flusher is gone).
    fn flush(&self) -> io::Result<()> {
        AggregatingSink::flush(self).map_err(io_error)
    }

    /// Packets and bytes handed to the transport; "dropped" counts packets the
    /// transport failed to send, not metrics dropped before (see
    /// [`AggregatingSink::dropped`]).
    fn stats(&self) -> SinkStats {
        use std::sync::atomic::Ordering::Relaxed;
        let packets = &self.handle.packets;
        SinkStats {
            bytes_sent: packets.bytes_sent.load(Relaxed),
            packets_sent: packets.packets_sent.load(Relaxed),
            bytes_dropped: packets.bytes_failed.load(Relaxed),
            packets_dropped: packets.packets_failed.load(Relaxed),
        }
    }
}

/// A [`FlushError`] as the `io::Error` cadence's [`MetricSink::flush`]
/// returns, of the kind that says which.
fn io_error(error: FlushError) -> io::Error {
    let kind = match error {
        FlushError::TimedOut(_) => io::ErrorKind::TimedOut,
        FlushError::Closed => io::ErrorKind::BrokenPipe,
    };
    io::Error::new(kind, error)
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Metrics recorded just before shutdown must not be lost: the flusher
        // sends everything, then exits; wait for it.
        if thread::current().id() == self.flusher.id() {
            // Dropped by the transport on the flusher itself: it cannot wait
            // for itself.
            self.core.control.close_now();
            return;
        }
        self.core.control.close(FLUSH_TIMEOUT);
    }
}

/// Configures an [`AggregatingSink`]; from [`AggregatingSink::builder`].
///
/// Each setting follows the same rule as in [`StatsdBuilder`](crate::StatsdBuilder):
/// a value outside what it accepts makes [`build`](Self::build) fail
/// (`InvalidInput`); it is never silently raised.
pub struct AggregatingSinkBuilder {
    transport: Box<dyn MetricSink + Send>,
    requested: Requested,
    dropped_metric: String,
    /// Any packet size, even one no line fits in (tests of the packing).
    tiny_packets: Option<usize>,
}

impl fmt::Debug for AggregatingSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.requested;
        f.debug_struct("AggregatingSinkBuilder")
            .field("flush_interval", &r.flush_interval)
            .field("max_packet_size", &r.max_packet_size)
            .field("max_buffered_values", &r.max_buffered_values)
            .field("max_timer_samples", &r.max_timer_samples)
            .field("protocol", &r.protocol)
            .field("server", &r.server)
            .field("dropped_metric", &self.dropped_metric)
            .finish_non_exhaustive()
    }
}

impl AggregatingSinkBuilder {
    /// How often the window is sent (default 1 second; zero makes
    /// [`build`](Self::build) fail). Keep it at or below the daemon's own
    /// flush interval (statsd: 10 seconds).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.requested.flush_interval = interval;
        self
    }

    /// Largest packet in bytes on any transport (default 512, pystatsd's
    /// `STATSD_MAXUDPSIZE`, safe on any network; at least
    /// [`MIN_MAX_UDP_SIZE`](crate::MIN_MAX_UDP_SIZE), or
    /// [`build`](Self::build) fails). A single line longer than this is
    /// still sent, alone.
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.requested.max_packet_size = bytes;
        self
    }

    /// Any packet size, even one no line fits in: for tests of the packing.
    #[cfg(test)]
    pub(crate) fn tiny_packets(mut self, bytes: usize) -> Self {
        self.tiny_packets = Some(bytes.max(1));
        self
    }

    /// How many handler values a window may hold before it is sent early
    /// (default 4 096; 0 counts as 1): distinct set members, counter and
    /// gauge keys, timer values.
    pub fn max_buffered_values(mut self, values: usize) -> Self {
        self.requested.max_buffered_values = values;
        self
    }

    /// Values kept per timer and window (default: 1 024 for a
    /// [`Server`] that reads sample rates on timers, every value for one
    /// that does not; 0 keeps every value, otherwise at least 64, or
    /// [`build`](Self::build) fails). Beyond it a uniform sample is sent
    /// with sample rates that keep the daemon's `count` exact, and the
    /// window's minimum and maximum are always in it. A cap for a server
    /// that misreads rates (collectd, netdata, the generic default) makes
    /// [`build`](Self::build) fail.
    pub fn max_timer_samples(mut self, values: usize) -> Self {
        self.requested.max_timer_samples = Some(values);
        self
    }

    /// How the values of one name are packed (default: the [`Server`]'s
    /// packing; [`Protocol::Plain`], one a line, for the generic default).
    /// Without a server, a packing picks the server that reads it
    /// ([`Protocol::Etsy`]: Etsy StatsD, [`Protocol::DogStatsd`]: the
    /// Datadog agent). Counters are summed and set members de-duplicated
    /// per window in every dialect.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.requested.protocol = Some(protocol);
        self
    }

    /// Which StatsD server the packets go to (default [`Server::Generic`],
    /// read right by every server): decides the packing, whether timers are
    /// sampled, and what is logged at start as not kept.
    pub fn server(mut self, server: Server) -> Self {
        self.requested.server = Some(server);
        self
    }

    /// Full name, prefix included, of the counter reporting dropped metrics
    /// (default `tower_statsd.dropped`).
    pub fn dropped_metric(mut self, name: impl Into<String>) -> Self {
        self.dropped_metric = name.into();
        self
    }

    /// Starts the flusher thread (`tower-statsd`). Fails (`InvalidInput`,
    /// saying what to change) on a setting outside what it accepts: a
    /// packet size below [`MIN_MAX_UDP_SIZE`](crate::MIN_MAX_UDP_SIZE), a
    /// zero flush interval, 1 to 63 timer samples, a packing or a timer cap
    /// the server cannot read; or when the thread cannot be spawned.
    pub fn build(self) -> io::Result<AggregatingSink> {
        let mut requested = self.requested;
        if self.tiny_packets.is_some() {
            requested.max_packet_size = super::settings::MIN_MAX_UDP_SIZE;
        }
        let mut settings = requested
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        if let Some(bytes) = self.tiny_packets {
            settings.max_packet_size = bytes;
        }
        AggregatingSink::start(self.transport, settings, self.dropped_metric)
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::sync::mpsc;
    use std::time::Instant;

    use std::future::Future;

    use cadence::prelude::*;
    use cadence::StatsdClient;

    use super::super::sample::MIN_CAP;
    use super::super::settings::MIN_MAX_UDP_SIZE;
    use super::super::testing::{daemon, lines, spy, Daemon, Packets};
    use super::super::UdpSink;
    use super::*;

    fn spy_sink(
        configure: impl FnOnce(AggregatingSinkBuilder) -> AggregatingSinkBuilder,
    ) -> (Packets, AggregatingSink) {
        let (rx, spy) = spy();
        let builder = AggregatingSink::builder(spy)
            .flush_interval(Duration::from_secs(3600))
            .protocol(Protocol::Etsy);
        (rx, configure(builder).build().unwrap())
    }

    /// A transport that holds each packet (and so the flusher) until the
    /// test sends on, or drops, the returned sender.
    struct Gate(Mutex<mpsc::Receiver<()>>, cadence::SpyMetricSink);

    impl MetricSink for Gate {
        fn emit(&self, packet: &str) -> io::Result<usize> {
            let _ = self.0.lock().unwrap().recv();
            self.1.emit(packet)
        }
    }

    fn gate() -> (mpsc::Sender<()>, Packets, Gate) {
        let (release, held) = mpsc::channel();
        let (rx, spy) = spy();
        (release, rx, Gate(Mutex::new(held), spy))
    }

    fn received(rx: &Packets) -> Vec<String> {
        rx.take()
    }

    /// The same workload, with and without aggregation, as cadence would send
    /// it one line per metric straight to the daemon.
    fn workload(statsd: &StatsdClient) {
        for i in 0..50 {
            statsd.incr("hits").unwrap();
            statsd.count("bytes", 10).unwrap();
            statsd
                .count_with_tags("tagged", 1)
                .with_tag("route", "root")
                .send();
            statsd
                .count_with_tags("tagged", 1)
                .with_tag("route", "user")
                .send();
            statsd
                .incr_with_tags("sampled")
                .with_sampling_rate(0.5)
                .send();
            statsd.time("latency", i).unwrap();
            statsd
                .time_with_tags("latency", Duration::from_millis(7))
                .with_tag("route", "root")
                .send();
            statsd.set("users", (i % 7) as i64).unwrap();
            statsd.gauge("temp", i).unwrap();
        }
        statsd.decr("hits").unwrap();
        statsd.time("multi", vec![1u64, 2, 3]).unwrap();
        statsd.histogram("hist", 4u64).unwrap();
        statsd.meter("meter", 2).unwrap();
    }

    fn expected() -> Daemon {
        let (rx, spy) = spy();
        let statsd = StatsdClient::from_sink("p", spy);
        workload(&statsd);
        // cadence's packed `p.multi:1:2:3|ms` is DogStatsD, not Etsy syntax:
        // spell it out the way the daemon would need it.
        let packets: Vec<String> = received(&rx)
            .into_iter()
            .map(|line| {
                if line == "p.multi:1:2:3|ms" {
                    "p.multi:1|ms:2|ms:3|ms".to_owned()
                } else {
                    line
                }
            })
            .map(|line| {
                if line == "p.hist:4|h" {
                    "p.hist:4|ms".to_owned()
                } else {
                    line
                }
            })
            // A meter is a counter to the Etsy daemon.
            .map(|line| match line.strip_suffix("|m") {
                Some(meter) => format!("{meter}|c"),
                None => line,
            })
            .collect();
        let mut want = daemon(&packets);
        want.lines = 0;
        want
    }

    #[test]
    fn cadence_client_totals_survive_aggregation() {
        let (rx, sink) = spy_sink(|b| b);
        let statsd = StatsdClient::from_sink("p", sink.clone());
        workload(&statsd);
        sink.flush().unwrap();
        let packets = received(&rx);
        let mut got = daemon(&packets);
        assert!(got.lines < 20, "aggregated into a few lines: {packets:?}");
        got.lines = 0;
        assert_eq!(got, expected());
        assert_eq!(got.counters["p.sampled|#"], 100.0);
        assert_eq!(got.counters["p.hits|#"], 49.0);
        assert_eq!(got.timers["p.latency|#"].len(), 50);
        assert_eq!(got.sets["p.users|#"].len(), 7);
        assert_eq!(got.gauges["p.temp|#"], 49.0);
        for packet in &packets {
            assert!(packet.len() <= 512, "{packet}");
        }
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn without_packing_every_value_is_its_own_line() {
        let (rx, sink) = spy_sink(|b| b.server(Server::Etsy).protocol(Protocol::Plain));
        let statsd = StatsdClient::from_sink("p", sink.clone());
        workload(&statsd);
        sink.flush().unwrap();
        let packets = received(&rx);
        for line in lines(&packets) {
            let (_, fields) = line.split_once(':').unwrap();
            let fields = fields.split_once("|#").map_or(fields, |(f, _)| f);
            assert!(!fields.contains(':'), "one value a line: {line}");
        }
        let mut got = daemon(&packets);
        // Counters summed and members de-duplicated; one line per timer value.
        // 6 counters, 104 timer values, 7 members, 1 gauge.
        assert_eq!(got.lines, 6 + 104 + 7 + 1);
        assert!(packets.len() < got.lines / 5, "still many lines per packet");
        got.lines = 0;
        assert_eq!(got, expected());
        assert!(packets.iter().all(|p| p.len() <= 512));
    }

    #[test]
    fn a_window_far_over_its_size_drops_counts_and_reports() {
        // The flusher blocks in the transport until released, so the window
        // cannot be sent.
        let (release, rx, gate) = gate();
        let sink = AggregatingSink::builder(gate)
            .flush_interval(Duration::from_secs(3600))
            .max_buffered_values(1)
            .tiny_packets(1)
            .build()
            .unwrap();
        // The flusher drains this window early and blocks sending it.
        sink.emit("first:1|c").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sink.handle.core.lines().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the flusher took the first window"
            );
            thread::yield_now();
        }
        for i in 0..HARD_LIMIT_FACTOR {
            sink.emit(&format!("held{i}:1|c")).unwrap();
        }
        let error = sink.emit("lost:1|c").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(sink.dropped(), 1);
        // Release the flusher for good and flush.
        drop(release);
        sink.flush().unwrap();
        let packets = received(&rx);
        assert_eq!(packets[0], "first:1|c");
        assert_eq!(packets.len(), 1 + HARD_LIMIT_FACTOR + 1, "{packets:?}");
        assert!(packets.contains(&"tower_statsd.dropped:1|c".to_owned()));
        assert!(!packets.iter().any(|p| p.starts_with("lost")));
        // Reported once: the next flush carries no new report.
        sink.flush().unwrap();
        assert!(received(&rx).is_empty());
    }

    #[test]
    fn an_async_flush_waits_without_blocking() {
        let (rx, sink) = spy_sink(|b| b);
        sink.emit("a:1|c").unwrap();
        let flush = sink.flush_async();
        // Driven by a runtime that has nothing else: the flusher wakes it.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let sent =
            runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), flush).await });
        assert_eq!(sent, Ok(Ok(())));
        assert_eq!(received(&rx), ["a:1|c"]);
    }

    #[test]
    fn a_packet_size_no_line_fits_in_is_refused() {
        let error = AggregatingSink::builder(cadence::NopMetricSink)
            .max_packet_size(10)
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("at least 64"), "{error}");
    }

    #[test]
    fn invalid_lines_are_counted_as_dropped() {
        let (rx, sink) = spy_sink(|b| b.dropped_metric("p.tower_statsd.dropped"));
        assert!(sink.emit("bad line").is_err());
        sink.emit("ok:1|c").unwrap();
        assert!(sink.emit("nan:NaN|ms").is_err());
        sink.flush().unwrap();
        assert_eq!(sink.dropped(), 2);
        let mut lines = lines(&received(&rx));
        lines.sort();
        assert_eq!(lines, ["ok:1|c", "p.tower_statsd.dropped:2|c"]);
    }

    #[test]
    fn the_window_is_sent_on_the_timer() {
        let (rx, spy) = spy();
        let sink = AggregatingSink::builder(spy)
            .flush_interval(Duration::from_millis(20))
            .build()
            .unwrap();
        sink.emit("a:1|c").unwrap();
        sink.emit("a:1|c").unwrap();
        let packet = rx.wait(Duration::from_secs(5)).unwrap();
        assert_eq!(packet, "a:2|c");
    }

    #[test]
    fn a_full_window_is_sent_early() {
        let (rx, sink) = spy_sink(|b| b.max_buffered_values(10).tiny_packets(40));
        for i in 0..25 {
            sink.emit(&format!("t:{i}|ms")).unwrap();
        }
        // No timer and no flush yet: the first full windows went out anyway
        // (only the last, short packet of a drain waits for the next one).
        let mut packets = vec![rx.wait(Duration::from_secs(5)).expect("an early packet")];
        sink.flush().unwrap();
        packets.extend(received(&rx));
        let got = daemon(&packets);
        let want: Vec<f64> = (0..25).map(f64::from).collect();
        assert_eq!(got.timers["t|#"], want);
        assert!(packets.iter().all(|p| p.len() <= 40), "{packets:?}");
    }

    #[test]
    fn dropping_the_last_clone_sends_everything() {
        let (rx, sink) = spy_sink(|b| b);
        let clone = sink.clone();
        sink.emit("a:1|c").unwrap();
        drop(sink);
        clone.emit("a:1|c").unwrap();
        drop(clone);
        // The flusher has exited: the spy's sender is gone.
        assert_eq!(rx.until_closed(), ["a:2|c"]);
    }

    #[test]
    fn end_to_end_over_real_udp() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let port = server.local_addr().unwrap().port();
        let sink = AggregatingSink::builder(UdpSink::new("127.0.0.1", port, false).unwrap())
            .server(Server::Etsy)
            .protocol(Protocol::Plain)
            .flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        let statsd = StatsdClient::from_sink("p", sink.clone());
        workload(&statsd);
        sink.flush().unwrap();
        let mut packets = Vec::new();
        let mut buf = [0; 2048];
        while let Ok(n) = server.recv(&mut buf) {
            assert!(n <= 512);
            packets.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        let mut got = daemon(&packets);
        got.lines = 0;
        assert_eq!(got, expected());
        assert_eq!(sink.failed_packets(), 0);
    }

    #[test]
    fn debug_shows_the_settings_and_the_dropped_count() {
        let builder = AggregatingSink::builder(cadence::NopMetricSink)
            .flush_interval(Duration::from_millis(250))
            .max_packet_size(1432)
            .max_buffered_values(100)
            .max_timer_samples(200)
            .protocol(Protocol::DogStatsd)
            .dropped_metric("p.dropped");
        assert_eq!(
            format!("{builder:?}"),
            "AggregatingSinkBuilder { flush_interval: 250ms, max_packet_size: 1432, \
             max_buffered_values: 100, max_timer_samples: Some(200), protocol: Some(DogStatsd), \
             server: None, dropped_metric: \"p.dropped\", .. }"
        );
        let sink = builder.build().unwrap();
        assert_eq!(sink.server(), Server::Datadog);
        assert_eq!(sink.timer_cap(), 200);
        assert_eq!(format!("{sink:?}"), "AggregatingSink { dropped: 0, .. }");
        assert!(sink.emit("bad line").is_err());
        assert_eq!(format!("{sink:?}"), "AggregatingSink { dropped: 1, .. }");
    }

    #[test]
    fn the_defaults_and_the_bounds_of_each_setting() {
        let builder = AggregatingSink::builder(cadence::NopMetricSink);
        assert_eq!(
            format!("{builder:?}"),
            "AggregatingSinkBuilder { flush_interval: 1s, max_packet_size: 512, \
             max_buffered_values: 4096, max_timer_samples: None, protocol: None, \
             server: None, dropped_metric: \"tower_statsd.dropped\", .. }"
        );
        // The generic server misreads no rate: every timer value is sent.
        let sink = builder.build().unwrap();
        assert_eq!((sink.server(), sink.timer_cap()), (Server::Generic, 0));
        let sink = AggregatingSink::builder(cadence::NopMetricSink)
            .server(Server::Etsy)
            .build()
            .unwrap();
        assert_eq!((sink.server(), sink.timer_cap()), (Server::Etsy, 1024));
        // The same rules as `StatsdBuilder`'s: a zero interval and 1 to 63
        // timer values are refused, not raised; 0 values buffered is 1; a
        // timer cap of 0 is "no cap".
        for (builder, why) in [
            (
                AggregatingSink::builder(cadence::NopMetricSink).flush_interval(Duration::ZERO),
                "the flush interval must be above zero",
            ),
            (
                AggregatingSink::builder(cadence::NopMetricSink)
                    .server(Server::Telegraf)
                    .max_timer_samples(MIN_CAP - 1),
                "max timer samples 63 is too small",
            ),
        ] {
            let error = builder.build().unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
            assert!(error.to_string().starts_with(why), "{error}");
        }
        let sink = AggregatingSink::builder(cadence::NopMetricSink)
            .max_buffered_values(0)
            .build()
            .unwrap();
        assert_eq!(sink.handle.max_buffered_values, 1);
        for (asked, cap) in [(0, 0), (MIN_CAP, MIN_CAP), (MIN_CAP + 1, MIN_CAP + 1)] {
            let sink = AggregatingSink::builder(cadence::NopMetricSink)
                .server(Server::Telegraf)
                .max_timer_samples(asked)
                .build()
                .unwrap();
            assert_eq!(sink.timer_cap(), cap, "asked {asked}");
        }
        // The smallest packet size allowed is allowed; one byte less is not.
        assert!(AggregatingSink::builder(cadence::NopMetricSink)
            .max_packet_size(MIN_MAX_UDP_SIZE)
            .build()
            .is_ok());
        let error = AggregatingSink::builder(cadence::NopMetricSink)
            .max_packet_size(MIN_MAX_UDP_SIZE - 1)
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        // What a server cannot read right is refused, saying why.
        for builder in [
            AggregatingSink::builder(cadence::NopMetricSink).max_timer_samples(64),
            AggregatingSink::builder(cadence::NopMetricSink)
                .server(Server::Collectd)
                .protocol(Protocol::Etsy),
        ] {
            let error = builder.build().unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
            assert!(error.to_string().starts_with("STATSD_SERVER="), "{error}");
        }
    }

    #[test]
    fn emit_returns_the_bytes_taken_and_stats_count_what_left() {
        let (rx, sink) = spy_sink(|b| b);
        assert_eq!(sink.emit("a:1|c").unwrap(), 5);
        assert_eq!(sink.emit("t:1:2:3|ms").unwrap(), 10);
        sink.flush().unwrap();
        let packets = received(&rx);
        // The count leaves first, in a packet of its own.
        assert_eq!(packets, ["a:1|c", "t:1|ms:2|ms:3|ms"]);
        let stats = MetricSink::stats(&sink);
        assert_eq!(stats.packets_sent, 2);
        assert_eq!(stats.bytes_sent, 5 + 16);
        assert_eq!((stats.packets_dropped, stats.bytes_dropped), (0, 0));
        assert!(MetricSink::flush(&sink).is_ok());
    }

    #[test]
    fn dropping_the_last_clone_waits_until_everything_left() {
        // A slow transport: a drop that did not wait would return first.
        struct Slow(cadence::SpyMetricSink);
        impl MetricSink for Slow {
            fn emit(&self, packet: &str) -> io::Result<usize> {
                thread::sleep(Duration::from_millis(200));
                self.0.emit(packet)
            }
        }
        let (rx, spy) = spy();
        let sink = AggregatingSink::builder(Slow(spy))
            .flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        sink.emit("a:1|c").unwrap();
        drop(sink);
        // Not waited for: the drop returned once the flusher had sent it.
        assert_eq!(received(&rx), ["a:1|c"]);
    }

    #[test]
    fn the_last_clone_dropped_on_the_flusher_thread_stops_it() {
        // A transport that holds a clone of the sink and drops it on its
        // first packet: by then the test's own clone is gone, so the flusher
        // drops the last one itself, and cannot wait for itself to exit.
        struct DropsSink(Arc<Mutex<Option<AggregatingSink>>>, cadence::SpyMetricSink);
        impl MetricSink for DropsSink {
            fn emit(&self, packet: &str) -> io::Result<usize> {
                let last = self.0.lock().unwrap().take();
                drop(last);
                self.1.emit(packet)
            }
        }
        let slot = Arc::new(Mutex::new(None));
        let (rx, spy) = spy();
        let sink = AggregatingSink::builder(DropsSink(slot.clone(), spy))
            .flush_interval(Duration::from_millis(20))
            .build()
            .unwrap();
        *slot.lock().unwrap() = Some(sink.clone());
        sink.emit("a:1|c").unwrap();
        drop(sink);
        // The window ends, the packet leaves, the flusher exits and drops
        // the transport (the spy's sender) within moments.
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut packets = Vec::new();
        while let Some(packet) = rx.wait(deadline.saturating_duration_since(Instant::now())) {
            packets.push(packet);
        }
        assert!(Instant::now() < deadline, "the flusher is still running");
        assert_eq!(packets, ["a:1|c"]);
    }

    #[test]
    fn once_the_flusher_is_gone_every_flush_says_so() {
        let (rx, sink) = spy_sink(|b| b);
        sink.emit("a:1|c").unwrap();
        sink.handle.core.control.close(FLUSH_TIMEOUT);
        assert_eq!(received(&rx), ["a:1|c"], "sent before it exited");
        assert_eq!(sink.flush(), Err(FlushError::Closed));
        let error = MetricSink::flush(&sink).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(
            error.get_ref().unwrap().downcast_ref(),
            Some(&FlushError::Closed)
        );
        let mut flush = sink.flush_async();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert_eq!(
            std::pin::Pin::new(&mut flush).poll(&mut cx),
            std::task::Poll::Ready(Err(FlushError::Closed))
        );
    }

    #[test]
    fn a_flush_error_is_the_io_error_of_its_kind() {
        let limit = FlushError::TimedOut(FLUSH_TIMEOUT);
        for (error, kind) in [
            (limit, io::ErrorKind::TimedOut),
            (FlushError::Closed, io::ErrorKind::BrokenPipe),
        ] {
            let io = io_error(error);
            assert_eq!(io.kind(), kind);
            assert_eq!(io.to_string(), error.to_string());
            assert_eq!(io.get_ref().unwrap().downcast_ref(), Some(&error));
        }
    }

    #[test]
    fn an_async_flush_is_pending_until_its_packets_left() {
        let (release, rx, gate) = gate();
        let sink = AggregatingSink::builder(gate)
            .flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        sink.emit("a:1|c").unwrap();
        let mut flush = sink.flush_async();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // The flusher is held in the transport (or not yet there): pending.
        assert!(std::pin::Pin::new(&mut flush).poll(&mut cx).is_pending());
        assert!(rx.take().is_empty());
        release.send(()).unwrap();
        assert_eq!(rx.wait(Duration::from_secs(5)).as_deref(), Some("a:1|c"));
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        loop {
            match std::pin::Pin::new(&mut flush).poll(&mut cx) {
                std::task::Poll::Ready(sent) => break assert_eq!(sent, Ok(())),
                std::task::Poll::Pending => {
                    assert!(Instant::now() < deadline, "the flush ends");
                    thread::yield_now();
                }
            }
        }
        drop(release);
    }

    #[test]
    fn unresolvable_host_loses_packets_without_failing_the_caller() {
        let sink =
            AggregatingSink::builder(UdpSink::new("no-such-host.invalid", 8125, false).unwrap())
                .build()
                .unwrap();
        let statsd = StatsdClient::from_sink("p", sink.clone());
        statsd.incr("hits").unwrap();
        sink.flush().unwrap();
        assert_eq!(sink.failed_packets(), 1);
        assert_eq!(sink.dropped(), 0);
    }
}
