//! The bounded stage between the request path and the network, and the one
//! background thread that empties it.
//!
//! [`AggregatingSink`] is a cadence [`MetricSink`]: the layer's own metrics
//! and a handler's `statsd.incr(...)` share the same delivery. Handing a
//! metric over is one `try_send` on a bounded channel; when the channel is
//! full the metric is dropped and counted, and the count is reported as a
//! counter (`tower_statsd.dropped` by default) with the next flush.
//!
//! The worker thread (named `tower-statsd`) aggregates everything per flush
//! window (see the aggregation rules in `aggregate.rs`: counters summed, sets
//! de-duplicated, timer values packed), then writes packets of at most
//! `max_packet_size` bytes to the transport. It flushes early when the window
//! holds too many values, so memory stays bounded and nothing is dropped:
//! the daemon sums, unions and appends within its own window anyway.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use std::{fmt, io, thread};

use cadence::{MetricSink, SinkStats};

use super::aggregate::Aggregator;
use super::line;
use super::packet::{PacketStats, PacketWriter};
use super::requests::RequestWindow;
use super::{Event, Metric, Value};

/// How often the worker drains the queue. With the default capacity of
/// 8 192 events, that absorbs 800 000 requests per second.
const TICK: Duration = Duration::from_millis(10);

/// How often the worker drains the queue while events keep coming.
const BUSY_TICK: Duration = Duration::from_millis(1);

/// Packets sent per tick at least, however small the window's outbox: a
/// quiet application's metrics leave within one tick of the window's end.
const MIN_PACKETS_PER_TICK: usize = 4;

/// Past this many waiting packets, early drains of a huge window send their
/// excess at once instead of letting the outbox grow.
const MAX_PENDING_PACKETS: usize = 1_024;

/// How long [`AggregatingSink::flush`] and dropping the last handle wait for
/// the worker.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A cadence [`MetricSink`] that never blocks: metrics go to a bounded queue,
/// a background thread aggregates them per flush window and sends packets to
/// a transport ([`UdpSink`](super::UdpSink), [`TcpSink`](super::TcpSink) or
/// any other [`MetricSink`]).
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
/// `STATSD_MAXUDPSIZE`), up to 8 192 queued events.
///
/// ```
/// use cadence::{CountedExt, StatsdClient};
/// use tower_statsd::sink::{AggregatingSink, UdpSink};
///
/// let sink = AggregatingSink::builder(UdpSink::new("localhost", 8125, false)?).build()?;
/// let statsd = StatsdClient::from_sink("myapp", sink.clone());
/// statsd.incr("jobs.done").ok();
/// sink.flush();
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// Customised: a 10 second window (statsd's own default flush interval),
/// jumbo packets over a private network, and no aggregation.
///
/// ```
/// use std::time::Duration;
/// use tower_statsd::sink::{AggregatingSink, TcpSink};
///
/// let sink = AggregatingSink::builder(TcpSink::new("statsd", 8125))
///     .flush_interval(Duration::from_secs(10))
///     .max_packet_size(8_192)
///     .queue_capacity(16_384)
///     .aggregate(false)
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
    events: SyncSender<Event>,
    shared: Arc<Shared>,
    /// Signalled by the worker when it has sent everything and exits.
    exited: Mutex<Receiver<()>>,
    /// Woken for flushes and shutdown; senders never wake it (see `Worker::run`).
    worker: thread::Thread,
}

/// Counters readable from any clone.
#[derive(Debug, Default)]
struct Shared {
    dropped: AtomicU64,
    packets: Arc<PacketStats>,
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
            flush_interval: crate::DEFAULT_FLUSH_INTERVAL,
            max_packet_size: crate::DEFAULT_MAX_UDP_SIZE,
            queue_capacity: crate::DEFAULT_QUEUE_CAPACITY,
            max_buffered_values: 4_096,
            aggregate: true,
            dropped_metric: "tower_statsd.dropped".to_owned(),
        }
    }

    /// Hands `event` to the worker without blocking. `false` (and counted as
    /// dropped) when the queue is full or the worker is gone.
    pub(crate) fn send(&self, event: Event) -> bool {
        match self.handle.events.try_send(event) {
            Ok(()) => true,
            Err(_) => {
                self.handle.shared.dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Sends everything queued and aggregated so far, and waits until the
    /// transport has been given every packet. Blocks for up to 5 seconds;
    /// `false` if the worker did not finish in time (or is gone).
    pub fn flush(&self) -> bool {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        let (ack, acked) = mpsc::sync_channel(1);
        let mut event = Event::Flush(ack);
        loop {
            match self.handle.events.try_send(event) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    event = back;
                    thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        self.handle.worker.unpark();
        let left = deadline.saturating_duration_since(Instant::now());
        acked.recv_timeout(left).is_ok()
    }

    /// Events dropped since the start: the queue was full, or a line from a
    /// cadence client was invalid.
    pub fn dropped(&self) -> u64 {
        self.handle.shared.dropped.load(Relaxed)
    }

    /// Packets the transport returned an error for, since the start.
    pub fn failed_packets(&self) -> u64 {
        self.handle.shared.packets.packets_failed.load(Relaxed)
    }
}

impl MetricSink for AggregatingSink {
    /// Queues a line a cadence client formatted. Never blocks; when the queue
    /// is full the line is dropped, counted, and a `WouldBlock` error returned.
    fn emit(&self, metric: &str) -> io::Result<usize> {
        match self.handle.events.try_send(Event::Line(metric.to_owned())) {
            Ok(()) => Ok(metric.len()),
            Err(error) => {
                self.handle.shared.dropped.fetch_add(1, Relaxed);
                Err(match error {
                    TrySendError::Full(_) => io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "tower-statsd queue is full; metric dropped (raise queue_capacity?)",
                    ),
                    TrySendError::Disconnected(_) => {
                        io::Error::other("tower-statsd worker thread is gone; metric dropped")
                    }
                })
            }
        }
    }

    /// Same as [`AggregatingSink::flush`], as an `io::Result`.
    fn flush(&self) -> io::Result<()> {
        if AggregatingSink::flush(self) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "tower-statsd worker did not flush within 5 seconds",
            ))
        }
    }

    /// Packets and bytes handed to the transport; "dropped" counts packets the
    /// transport failed to send, not metrics dropped at the queue (see
    /// [`AggregatingSink::dropped`]).
    fn stats(&self) -> SinkStats {
        let packets = &self.handle.shared.packets;
        SinkStats {
            bytes_sent: packets.bytes_sent.load(Relaxed),
            packets_sent: packets.packets_sent.load(Relaxed),
            bytes_dropped: packets.bytes_failed.load(Relaxed),
            packets_dropped: packets.packets_failed.load(Relaxed),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Closing the channel (the sender is dropped right after this) is
        // what tells the worker to send everything and exit; wait for it so
        // metrics recorded just before shutdown are not lost.
        let (closed, _) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.events, closed));
        self.worker.unpark();
        if thread::current().id() == self.worker.id() {
            return; // dropped by the transport on the worker itself: it cannot wait for itself
        }
        let exited = self
            .exited
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let _ = exited.recv_timeout(FLUSH_TIMEOUT);
    }
}

/// Configures an [`AggregatingSink`]; from [`AggregatingSink::builder`].
pub struct AggregatingSinkBuilder {
    transport: Box<dyn MetricSink + Send>,
    flush_interval: Duration,
    max_packet_size: usize,
    queue_capacity: usize,
    max_buffered_values: usize,
    aggregate: bool,
    dropped_metric: String,
}

impl fmt::Debug for AggregatingSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregatingSinkBuilder")
            .field("flush_interval", &self.flush_interval)
            .field("max_packet_size", &self.max_packet_size)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_buffered_values", &self.max_buffered_values)
            .field("aggregate", &self.aggregate)
            .field("dropped_metric", &self.dropped_metric)
            .finish_non_exhaustive()
    }
}

impl AggregatingSinkBuilder {
    /// How often the window is sent (default 1 second). Keep it at or below
    /// the daemon's own flush interval (statsd: 10 seconds).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Largest packet in bytes (default 512, pystatsd's `STATSD_MAXUDPSIZE`,
    /// safe on any network). A single line longer than this is still sent,
    /// alone.
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.max_packet_size = bytes.max(1);
        self
    }

    /// How many events may wait for the worker (default 8 192). Beyond that
    /// they are dropped and counted. The queue's slots are allocated up front.
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events.max(1);
        self
    }

    /// How many values a window may hold before it is sent early (default
    /// 4 096): timer values, distinct set members, counter and gauge keys.
    pub fn max_buffered_values(mut self, values: usize) -> Self {
        self.max_buffered_values = values.max(1);
        self
    }

    /// Whether to aggregate per window (default `true`). With `false` every
    /// metric is its own line (no summing, no multi-value lines), still
    /// packed many lines per packet.
    pub fn aggregate(mut self, aggregate: bool) -> Self {
        self.aggregate = aggregate;
        self
    }

    /// Full name, prefix included, of the counter reporting dropped events
    /// (default `tower_statsd.dropped`).
    pub fn dropped_metric(mut self, name: impl Into<String>) -> Self {
        self.dropped_metric = name.into();
        self
    }

    /// Starts the worker thread (`tower-statsd`). Fails only if the thread
    /// cannot be spawned.
    pub fn build(self) -> io::Result<AggregatingSink> {
        let (events, queue) = mpsc::sync_channel(self.queue_capacity);
        let (exit_tx, exited) = mpsc::sync_channel(1);
        let shared = Arc::new(Shared::default());
        let worker = Worker {
            queue,
            writer: PacketWriter::new(self.transport, self.max_packet_size, shared.packets.clone()),
            aggregator: self.aggregate.then(Aggregator::new),
            requests: RequestWindow::default(),
            max_buffered_values: self.max_buffered_values,
            flush_interval: self.flush_interval,
            dropped_metric: self.dropped_metric,
            reported_dropped: 0,
            pace_rate: 0.0,
            last_send: Instant::now(),
            shared: shared.clone(),
        };
        let thread = thread::Builder::new()
            .name("tower-statsd".to_owned())
            .spawn(move || {
                lower_priority();
                worker.run();
                let _ = exit_tx.send(());
            })?;
        Ok(AggregatingSink {
            handle: Arc::new(Handle {
                events,
                shared,
                exited: Mutex::new(exited),
                worker: thread.thread().clone(),
            }),
        })
    }
}

/// The worker's nice value: under CPU contention (a saturated server on as
/// many cores as it has threads), request threads get about nine tenths of
/// the CPU and the worker the rest, which is several times what it needs.
#[cfg(target_os = "linux")]
const WORKER_NICE: i32 = 10;

/// Makes the worker yield to request threads when they compete for a core.
/// Linux applies a nice value to the calling thread alone.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(None, WORKER_NICE) {
        tracing::debug!(%error, "could not lower the tower-statsd thread's priority");
    }
}

struct Worker {
    queue: Receiver<Event>,
    writer: PacketWriter,
    /// `None` when aggregation is off.
    aggregator: Option<Aggregator>,
    /// The layer's requests, aggregated per route (when aggregation is on).
    requests: RequestWindow,
    max_buffered_values: usize,
    flush_interval: Duration,
    dropped_metric: String,
    reported_dropped: u64,
    /// Packets per second while the outbox empties (see [`Worker::pace`]).
    pace_rate: f64,
    /// When packets were last sent.
    last_send: Instant,
    shared: Arc<Shared>,
}

impl Worker {
    /// Drains the queue every [`TICK`] (or when woken for a flush or
    /// shutdown) instead of blocking on it: a blocked receiver would make
    /// every `send` on the request path pay for waking this thread.
    fn run(mut self) {
        let mut deadline = Instant::now() + self.flush_interval;
        loop {
            let mut busy = false;
            loop {
                match self.queue.try_recv() {
                    Ok(event) => {
                        busy = true;
                        self.handle(event);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.flush();
                        return;
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                self.close_window();
                deadline = now + self.flush_interval;
            }
            let since = now.saturating_duration_since(self.last_send).as_secs_f64();
            self.last_send = now;
            let budget = (self.pace_rate * since).ceil() as usize;
            self.writer.send_pending(budget.max(MIN_PACKETS_PER_TICK));
            // Busy: wake often, so each wake is short and a request thread
            // sharing the core never waits long. Idle: wake rarely.
            let tick = if busy { BUSY_TICK } else { TICK };
            thread::park_timeout(tick.min(deadline.saturating_duration_since(now)));
        }
    }

    fn handle(&mut self, event: Event) {
        let Worker {
            writer,
            aggregator,
            requests,
            ..
        } = self;
        let aggregating = aggregator.is_some();
        let mut add = |metric: Metric<'_>| match aggregator {
            Some(aggregator) => aggregator.add(metric),
            None => writer.push_metric(&metric),
        };
        match event {
            Event::Request(record) if aggregating => requests.add(record),
            Event::Request(record) => {
                // Aggregation off: a window of one request, written at once.
                let mut one = RequestWindow::default();
                one.add(record);
                one.drain(writer);
            }
            Event::Line(text) => {
                if let Err(error) = line::parse_each(&text, &mut add) {
                    self.shared.dropped.fetch_add(1, Relaxed);
                    tracing::debug!(%error, line = %text, "invalid statsd line dropped");
                }
            }
            Event::Flush(ack) => {
                self.flush();
                let _ = ack.try_send(());
            }
        }
        if self.aggregator.as_ref().is_some_and(|aggregator| {
            aggregator.len() + self.requests.len() >= self.max_buffered_values
        }) {
            self.drain();
            self.pace();
        }
        let pending = self.writer.pending();
        if pending > MAX_PENDING_PACKETS {
            self.writer.send_pending(pending - MAX_PENDING_PACKETS);
        }
    }

    /// Writes the window into packets, without sending the last short one.
    fn drain(&mut self) {
        if let Some(aggregator) = &mut self.aggregator {
            self.requests.drain(&mut self.writer);
            aggregator.drain(&mut self.writer);
        }
    }

    /// Ends the window on the timer: its packets go out paced over half a
    /// window, so that thousands of them do not reach the daemon in one burst.
    fn close_window(&mut self) {
        self.write_window();
        self.writer.seal();
        self.pace();
    }

    /// Spreads the waiting packets over half a window from now.
    fn pace(&mut self) {
        let half_window = self.flush_interval.as_secs_f64() / 2.0;
        self.pace_rate = self.writer.pending() as f64 / half_window;
    }

    /// Sends everything now: on [`AggregatingSink::flush`] and at shutdown.
    fn flush(&mut self) {
        self.write_window();
        self.writer.flush();
    }

    /// Writes the window and the dropped count since the last report.
    fn write_window(&mut self) {
        self.drain();
        let dropped = self.shared.dropped.load(Relaxed);
        let new = dropped - self.reported_dropped;
        if new > 0 {
            self.reported_dropped = dropped;
            self.writer.push_metric(&Metric {
                name: &self.dropped_metric,
                tags: "",
                value: Value::Count {
                    value: new as f64,
                    rate: 1.0,
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::UdpSocket;

    use cadence::prelude::*;
    use cadence::StatsdClient;

    use super::super::testing::{lines, spy, Packets};
    use super::super::UdpSink;
    use super::*;

    /// What the daemon would make of the packets: counter totals, set members,
    /// timer values (with the daemon's count, `sum of 1 / rate`), gauges.
    #[derive(Debug, Default, PartialEq)]
    struct Daemon {
        counters: BTreeMap<String, f64>,
        timers: BTreeMap<String, Vec<String>>,
        timer_counts: BTreeMap<String, f64>,
        sets: BTreeMap<String, BTreeSet<String>>,
        gauges: BTreeMap<String, f64>,
        lines: usize,
    }

    impl Daemon {
        /// statsd 0.9's `handlePacket`, reduced to what these tests need.
        fn read(&mut self, packet: &str) {
            for line in packet.split('\n').filter(|l| !l.is_empty()) {
                self.lines += 1;
                let (body, tags) = line.split_once("|#").unwrap_or((line, ""));
                let mut bits = body.split(':');
                let mut key = bits.next().unwrap().to_owned();
                if !tags.is_empty() {
                    key = format!("{key};{tags}");
                }
                for field in bits {
                    let f: Vec<&str> = field.split('|').collect();
                    let rate: f64 = f.get(2).map_or(1.0, |r| r[1..].parse().unwrap());
                    match f[1] {
                        "ms" => {
                            self.timers
                                .entry(key.clone())
                                .or_default()
                                .push(f[0].to_owned());
                            *self.timer_counts.entry(key.clone()).or_default() += 1.0 / rate;
                        }
                        "g" => {
                            let value: f64 = f[0].parse().unwrap();
                            let gauge = self.gauges.entry(key.clone()).or_default();
                            if *gauge != 0.0 && f[0].starts_with(['+', '-']) {
                                *gauge += value;
                            } else {
                                *gauge = value;
                            }
                        }
                        "s" => {
                            self.sets
                                .entry(key.clone())
                                .or_default()
                                .insert(f[0].to_owned());
                        }
                        _ => {
                            let value: f64 = f[0].parse().unwrap();
                            *self.counters.entry(key.clone()).or_default() += value * (1.0 / rate);
                        }
                    }
                }
            }
        }
    }

    fn spy_sink(
        configure: impl FnOnce(AggregatingSinkBuilder) -> AggregatingSinkBuilder,
    ) -> (Packets, AggregatingSink) {
        let (rx, spy) = spy();
        let builder = AggregatingSink::builder(spy).flush_interval(Duration::from_secs(3600));
        (rx, configure(builder).build().unwrap())
    }

    fn received(rx: &Packets) -> Vec<String> {
        rx.take()
    }

    fn daemon(packets: &[String]) -> Daemon {
        let mut daemon = Daemon::default();
        for packet in packets {
            daemon.read(packet);
        }
        daemon
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
        assert!(sink.flush());
        let packets = received(&rx);
        let mut got = daemon(&packets);
        assert!(got.lines < 20, "aggregated into a few lines: {packets:?}");
        got.lines = 0;
        assert_eq!(got, expected());
        assert_eq!(got.counters["p.sampled"], 100.0);
        assert_eq!(got.counters["p.hits"], 49.0);
        assert_eq!(got.timers["p.latency"].len(), 50);
        assert_eq!(got.sets["p.users"].len(), 7);
        assert_eq!(got.gauges["p.temp"], 49.0);
        for packet in &packets {
            assert!(packet.len() <= 512, "{packet}");
        }
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn without_aggregation_every_metric_is_its_own_line() {
        let (rx, sink) = spy_sink(|b| b.aggregate(false));
        let statsd = StatsdClient::from_sink("p", sink.clone());
        workload(&statsd);
        assert!(sink.flush());
        let packets = received(&rx);
        let mut got = daemon(&packets);
        assert_eq!(got.lines, 50 * 9 + 1 + 3 + 1 + 1);
        assert!(packets.len() < got.lines / 5, "still many lines per packet");
        got.lines = 0;
        assert_eq!(got, expected());
        assert!(packets.iter().all(|p| p.len() <= 512));
    }

    fn request(micros: u64) -> Event {
        use crate::naming::{Naming, NamingMode};
        let naming = Naming::new("p", NamingMode::Hierarchical, &[], None);
        Event::Request(crate::record::RequestRecord {
            route: naming.route(Some("/")),
            method: "GET",
            status: Some(http::StatusCode::OK),
            elapsed: Duration::from_micros(micros),
            user: None,
        })
    }

    #[test]
    fn request_records_are_expanded_on_the_worker() {
        let (rx, sink) = spy_sink(|b| b);
        assert!(sink.send(request(1_500)));
        assert!(sink.send(request(300)));
        assert!(sink.flush());
        let got = daemon(&received(&rx));
        assert_eq!(got.counters["p.root.called"], 2.0);
        assert_eq!(got.counters["p.root.status.200"], 2.0);
        let mut timers = got.timers["p.root"].clone();
        timers.sort();
        assert_eq!(timers, ["0.3", "1.5"]);
    }

    #[test]
    fn a_full_queue_drops_counts_and_reports() {
        // A transport that blocks the worker until released, so the queue fills.
        struct Gate(Mutex<Receiver<()>>, cadence::SpyMetricSink);
        impl MetricSink for Gate {
            fn emit(&self, packet: &str) -> io::Result<usize> {
                let _ = self.0.lock().unwrap().recv();
                self.1.emit(packet)
            }
        }
        let (release, gate) = mpsc::channel();
        let (rx, spy) = spy();
        let sink = AggregatingSink::builder(Gate(Mutex::new(gate), spy))
            .queue_capacity(1)
            .flush_interval(Duration::from_secs(3600))
            .aggregate(false)
            .max_packet_size(1)
            .build()
            .unwrap();
        // The worker takes this line and blocks sending it.
        sink.emit("first:1|c").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.emit("queued:1|c").is_err() {
            assert!(Instant::now() < deadline);
            thread::sleep(Duration::from_millis(1));
        }
        let before = sink.dropped();
        let error = sink.emit("lost:1|c").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        assert!(!sink.send(request(1_000)));
        assert_eq!(sink.dropped(), before + 2);
        // Release the worker for good and flush.
        drop(release);
        assert!(sink.flush());
        let packets = received(&rx);
        assert_eq!(&packets[..2], ["first:1|c", "queued:1|c"]);
        let want = format!("tower_statsd.dropped:{}|c", sink.dropped());
        assert!(packets.contains(&want), "{packets:?}");
        assert!(!packets.iter().any(|p| p.starts_with("lost")));
        // Reported once: the next flush carries no new report.
        assert!(sink.flush());
        assert!(received(&rx).is_empty());
    }

    #[test]
    fn invalid_lines_are_counted_as_dropped() {
        let (rx, sink) = spy_sink(|b| b.dropped_metric("p.tower_statsd.dropped"));
        sink.emit("bad line").unwrap();
        sink.emit("ok:1|c").unwrap();
        sink.emit("nan:NaN|ms").unwrap();
        assert!(sink.flush());
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
        let (rx, sink) = spy_sink(|b| b.max_buffered_values(10).max_packet_size(40));
        for i in 0..25 {
            sink.emit(&format!("t:{i}|ms")).unwrap();
        }
        // No timer and no flush yet: the first full windows went out anyway
        // (only the last, short packet of a drain waits for the next one).
        let mut packets = vec![rx.wait(Duration::from_secs(5)).expect("an early packet")];
        assert!(sink.flush());
        packets.extend(received(&rx));
        let got = daemon(&packets);
        let want: Vec<String> = (0..25).map(|i| i.to_string()).collect();
        assert_eq!(got.timers["t"], want);
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
        // The worker has exited: the spy's sender is gone.
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
            .flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        let statsd = StatsdClient::from_sink("p", sink.clone());
        workload(&statsd);
        assert!(sink.flush());
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
    fn unresolvable_host_loses_packets_without_failing_the_caller() {
        let sink =
            AggregatingSink::builder(UdpSink::new("no-such-host.invalid", 8125, false).unwrap())
                .build()
                .unwrap();
        let statsd = StatsdClient::from_sink("p", sink.clone());
        statsd.incr("hits").unwrap();
        assert!(sink.flush());
        assert_eq!(sink.failed_packets(), 1);
        assert_eq!(sink.dropped(), 0);
    }
}
