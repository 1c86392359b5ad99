//! The one background thread (`tower-statsd`) and its wake loop: it sleeps
//! until the window ends, or until a flush, an early drain or shutdown is
//! asked for ([`Control::next`]). At the window's end it drains every
//! source into the [`PacketWriter`], retires the sources nobody holds any
//! more, and hands the payloads to the [`Forwarder`], which paces them over
//! half a window. An early drain takes only what filled up (a set of users,
//! a full handler window) and sends it at once. It never polls: with
//! nothing to send it wakes once per window.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::aggregate::Aggregator;
use super::control::{Control, Wake};
use super::forwarder::Forwarder;
use super::metric::{Metric, Value};
use super::writer::PacketWriter;

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

/// What the handles and the flusher share.
#[derive(Debug)]
pub(super) struct Core {
    pub(super) control: Arc<Control>,
    /// Handler metrics (cadence lines) of the current window.
    pub(super) lines: Mutex<Aggregator>,
    /// The layers' per-route statistics, and anything else recorded in place.
    pub(super) sources: Mutex<Vec<Arc<dyn Source>>>,
}

impl Core {
    pub(super) fn lines(&self) -> MutexGuard<'_, Aggregator> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sources(&self) -> MutexGuard<'_, Vec<Arc<dyn Source>>> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The thread's own state.
pub(super) struct Flusher {
    pub(super) core: Arc<Core>,
    /// Turns each window into packets.
    pub(super) writer: PacketWriter,
    /// Sends the packets, paced.
    pub(super) forwarder: Forwarder,
    /// The swap buffer for `core.lines`: a drained window, capacity kept.
    pub(super) spare: Aggregator,
    pub(super) flush_interval: Duration,
    /// The size past which the handlers' window is sent early.
    pub(super) max_buffered_values: usize,
    pub(super) dropped_metric: String,
    pub(super) reported_dropped: u64,
}

/// The flusher's nice value: under CPU contention (a saturated server on as
/// many cores as it has threads), request threads get about nine tenths of
/// the CPU and the flusher the rest, which is several times what it needs
/// even when a flood of new users makes it drain every few milliseconds.
#[cfg(target_os = "linux")]
const FLUSHER_NICE: i32 = 10;

/// Makes the flusher yield to request threads when they compete for a core.
/// Linux applies a nice value to the calling thread alone.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(None, FLUSHER_NICE) {
        tracing::debug!(%error, "could not lower the tower-statsd thread's priority");
    }
}

/// Tells the handles that the flusher is gone when it drops: at the end of
/// [`Flusher::run`], whether it returned or panicked, so that no flush or
/// close waits for a thread that will never answer.
struct Exited(Arc<Control>);

impl Drop for Exited {
    fn drop(&mut self) {
        self.0.exited();
    }
}

impl Flusher {
    pub(super) fn run(mut self) {
        let _exited = Exited(self.core.control.clone());
        lower_priority();
        let mut window_end = Instant::now() + self.flush_interval;
        loop {
            let wake_at = match self.forwarder.next_send() {
                Some(next_send) => next_send.min(window_end),
                None => window_end,
            };
            match self.core.control.next(wake_at) {
                Wake::Close => {
                    self.flush();
                    return;
                }
                Wake::Flush(ticket) => {
                    self.flush();
                    self.core.control.flushed(ticket);
                }
                Wake::Early => {
                    self.drain_full();
                    self.forwarder.take(&mut self.writer);
                    self.forwarder.send_all();
                }
                Wake::Time => {}
            }
            let now = Instant::now();
            if now >= window_end {
                self.drain();
                self.writer.seal();
                self.forwarder.take_window(&mut self.writer, now);
                window_end = now + self.flush_interval;
            }
            self.forwarder.send_due(now);
        }
    }

    /// Sends everything now: on a flush and at shutdown (still in bursts,
    /// see [`Forwarder::send_all`]).
    fn flush(&mut self) {
        self.drain();
        self.writer.seal();
        self.forwarder.take(&mut self.writer);
        self.forwarder.send_all();
        self.forwarder.flush_transport();
    }

    /// Writes what filled up before the window's end, and nothing else:
    /// the sources' full sets of users, and the handlers' window when it
    /// holds `max_buffered_values`. Counters and timer samples of the
    /// sources wait for the window's end.
    fn drain_full(&mut self) {
        let sources = self.core.sources().clone();
        for source in &sources {
            source.drain_full(&mut self.writer);
        }
        drop(sources);
        let mut lines = self.core.lines();
        if lines.len() >= self.max_buffered_values {
            std::mem::swap(&mut *lines, &mut self.spare);
            drop(lines);
            self.spare.drain(&mut self.writer);
        }
    }

    /// Writes every source, the handlers' window and the dropped count into
    /// packets, without sending the last short one.
    fn drain(&mut self) {
        let sources = self.core.sources().clone();
        // Decided before draining: a source that nobody else holds and that
        // no request is writing to cannot change after this point.
        let finished: Vec<bool> = sources
            .iter()
            .map(|source| {
                source.release_unused();
                Arc::strong_count(source) == 2 && !source.in_use()
            })
            .collect();
        for (source, &finished) in sources.iter().zip(&finished) {
            source.drain(&mut self.writer);
            if finished {
                source.retire(&mut self.writer);
            }
        }
        if finished.contains(&true) {
            let mut finished = finished.into_iter();
            self.core
                .sources()
                .retain(|_| !finished.next().unwrap_or(false));
        }
        drop(sources);

        std::mem::swap(&mut *self.core.lines(), &mut self.spare);
        self.spare.drain(&mut self.writer);

        let dropped = self.core.control.dropped();
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
    use super::super::control::FlushError;
    use super::super::forwarder::PacketStats;
    use super::super::testing::{spy, within_5s, Packets};
    use super::*;

    /// A flusher whose thread is not started: its steps are called by the
    /// test. Packets of at most 5 bytes, so each `a:1|c` is a packet.
    fn flusher(flush_interval: Duration, max_buffered_values: usize) -> (Packets, Flusher) {
        let (rx, spy) = spy();
        let core = Arc::new(Core {
            control: Arc::default(),
            lines: Mutex::new(Aggregator::new(0)),
            sources: Mutex::default(),
        });
        let stats = Arc::new(PacketStats::default());
        let forwarder = Forwarder::new(Box::new(spy), 5, flush_interval, stats);
        let flusher = Flusher {
            core,
            writer: PacketWriter::new(5),
            forwarder,
            spare: Aggregator::new(0),
            flush_interval,
            max_buffered_values,
            dropped_metric: "dropped".to_owned(),
            reported_dropped: 0,
        };
        (rx, flusher)
    }

    /// What leaves after `step` (a drain) and a flush of the writer, the
    /// last short packet included.
    fn sent_by(rx: &Packets, flusher: &mut Flusher, step: fn(&mut Flusher)) -> Vec<String> {
        step(flusher);
        flusher.writer.seal();
        flusher.forwarder.take(&mut flusher.writer);
        flusher.forwarder.send_pending(usize::MAX);
        rx.take()
    }

    /// `n` packets waiting in the outbox.
    fn outbox(flusher: &mut Flusher, n: usize) {
        for _ in 0..n {
            flusher.writer.push_entry("a:1|c");
        }
        flusher.writer.seal();
        flusher.forwarder.take(&mut flusher.writer);
        assert_eq!(flusher.forwarder.pending(), n);
    }

    #[test]
    fn an_early_drain_takes_the_handlers_window_only_when_full() {
        let (rx, mut flusher) = flusher(Duration::from_secs(3600), 3);
        let count = |name| Metric {
            name,
            tags: "",
            value: Value::Count {
                value: 1.0,
                rate: 1.0,
            },
        };
        flusher.core.lines().add(count("a"));
        flusher.core.lines().add(count("b"));
        let sent = sent_by(&rx, &mut flusher, Flusher::drain_full);
        assert!(sent.is_empty(), "2 of 3 values: not full");
        assert_eq!(flusher.core.lines().len(), 2);
        flusher.core.lines().add(count("c"));
        let mut lines = sent_by(&rx, &mut flusher, Flusher::drain_full);
        lines.sort();
        assert_eq!(lines, ["a:1|c", "b:1|c", "c:1|c"]);
        assert_eq!(flusher.core.lines().len(), 0);
    }

    #[test]
    fn dropped_metrics_are_reported_once_each() {
        let (rx, mut flusher) = flusher(Duration::from_secs(3600), 100);
        let control = flusher.core.control.clone();
        let mut drained = || sent_by(&rx, &mut flusher, Flusher::drain);
        assert!(drained().is_empty(), "nothing dropped, nothing sent");
        control.count_dropped(2);
        assert_eq!(drained(), ["dropped:2|c"]);
        assert!(drained().is_empty(), "already reported");
        control.count_dropped(3);
        assert_eq!(drained(), ["dropped:3|c"]);
    }

    #[test]
    fn a_handlers_window_asks_for_an_early_drain_once_when_it_fills_up() {
        use cadence::MetricSink;
        // A transport that says when the flusher is in it and holds it there
        // until released: the early drains asked meanwhile stay asked.
        struct Gate {
            entered: Mutex<std::sync::mpsc::Sender<()>>,
            release: Mutex<std::sync::mpsc::Receiver<()>>,
            spy: cadence::SpyMetricSink,
        }
        impl MetricSink for Gate {
            fn emit(&self, packet: &str) -> std::io::Result<usize> {
                let _ = self.entered.lock().unwrap().send(());
                let _ = self.release.lock().unwrap().recv();
                self.spy.emit(packet)
            }
        }
        let (entered, in_transport) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel();
        let (rx, spy) = spy();
        let gate = Gate {
            entered: Mutex::new(entered),
            release: Mutex::new(released),
            spy,
        };
        let sink = super::super::AggregatingSink::builder(gate)
            .flush_interval(Duration::from_secs(3600))
            .max_buffered_values(3)
            .tiny_packets(5)
            .build()
            .unwrap();
        let early = || sink.control().early_asked();
        for line in ["a:1|c", "b:1|c", "c:1|c"] {
            sink.emit(line).unwrap();
        }
        // The flusher took that full window and is sending it (a line a
        // packet: the last one waits for more).
        in_transport.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(!early(), "taken");
        sink.emit("d:1|c").unwrap();
        sink.emit("e:1|c").unwrap();
        assert!(!early(), "2 of 3 values: not full");
        sink.emit("f:1|c").unwrap();
        assert!(early(), "full");
        assert!(
            matches!(sink.control().next(Instant::now()), Wake::Early),
            "taken"
        );
        sink.emit("g:1|c").unwrap();
        assert!(!early(), "asked once, when it filled up");
        drop(release);
        sink.flush().unwrap();
        let mut lines = super::super::testing::lines(&rx.take());
        lines.sort();
        let want = ["a", "b", "c", "d", "e", "f", "g"].map(|n| format!("{n}:1|c"));
        assert_eq!(lines, want);
    }

    #[test]
    fn the_first_window_ends_one_interval_after_the_start() {
        let (rx, flusher) = flusher(Duration::from_secs(3600), 100);
        let core = flusher.core.clone();
        core.lines().add(Metric {
            name: "a",
            tags: "",
            value: Value::Count {
                value: 1.0,
                rate: 1.0,
            },
        });
        let thread = std::thread::spawn(move || flusher.run());
        // An hour's window: nothing leaves before it ends, or a flush.
        assert_eq!(rx.wait(Duration::from_millis(300)), None);
        within_5s(move || {
            core.control.close(Duration::from_secs(5));
            thread.join().unwrap();
        });
        assert_eq!(rx.take(), ["a:1|c"]);
    }

    #[test]
    fn the_flusher_thread_paces_what_waits() {
        let (rx, mut flusher) = flusher(Duration::from_secs(2), 100);
        outbox(&mut flusher, 33);
        let core = flusher.core.clone();
        let start = Instant::now();

        let thread = std::thread::spawn(move || flusher.run());
        // A burst at once, long before the window's end...
        for _ in 0..32 {
            assert!(rx.wait(Duration::from_millis(1500)).is_some());
        }
        assert!(start.elapsed() < Duration::from_millis(1500));
        // ...and the last one half a window after it.
        assert!(rx.wait(Duration::from_secs(5)).is_some());
        assert!(start.elapsed() >= Duration::from_secs(1));
        within_5s(move || {
            core.control.close(Duration::from_secs(5));
            thread.join().unwrap();
        });
        assert!(rx.take().is_empty());
    }

    #[test]
    fn a_flusher_that_panics_ends_every_wait_for_it() {
        use cadence::MetricSink;
        // A transport with a bug: the flusher thread panics in it, and is
        // gone. (Its panic message is printed by the test run: expected.)
        struct Panics;
        impl MetricSink for Panics {
            fn emit(&self, _: &str) -> std::io::Result<usize> {
                panic!("a transport that panics")
            }
        }
        within_5s(|| {
            let sink = super::super::AggregatingSink::builder(Panics)
                .flush_interval(Duration::from_secs(3600))
                .build()
                .unwrap();
            sink.emit("a:1|c").unwrap();
            let asked_before = sink.flush_async();
            // Nothing was sent. Every wait below returns at once: one that
            // lasted its 5 s timeout would fail `within_5s`.
            assert_eq!(sink.flush(), Err(FlushError::Closed));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            assert_eq!(
                runtime.block_on(asked_before),
                Err(FlushError::Closed),
                "woken, and told it was not sent"
            );
            assert_eq!(
                runtime.block_on(sink.flush_async()),
                Err(FlushError::Closed),
                "asked after: ready at once"
            );
            drop(sink);
        });
    }
}
