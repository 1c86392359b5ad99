//! The one background thread (`tower-statsd`): it sleeps until the window
//! ends, or until a flush, an early drain or shutdown is asked for. At the
//! window's end it drains every source into packets and sends them, paced
//! over half a window. An early drain takes only what filled up (a set of
//! users, a full handler window) and sends it at once, 32 packets a
//! millisecond. It never polls: with nothing to send it wakes once per
//! window.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::aggregate::Aggregator;
use super::packet::PacketWriter;
use super::{Metric, Source, Value};

/// At most this many packets leave at once (16 KB at the default 512 bytes,
/// far below a daemon's default 208 KB socket buffer); more are spread over
/// half a window, because a burst of thousands of datagrams overflows that
/// buffer while the daemon is still parsing the first ones.
const BURST: usize = 32;

/// The pause between bursts of a flush.
const FLUSH_GAP: Duration = Duration::from_millis(1);

/// Past this many waiting packets (32 MB at 512 bytes: a daemon far slower
/// than the application), the excess is sent at once rather than held.
const MAX_PENDING_PACKETS: usize = 65_536;

/// How the handles, the sources and the flusher thread talk: requests to
/// the thread, and the count of metrics dropped anywhere.
#[derive(Debug, Default)]
pub(crate) struct Control {
    state: Mutex<State>,
    changed: Condvar,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    flushes_asked: u64,
    flushes_done: u64,
    early: bool,
    closing: bool,
    exited: bool,
    /// Async flushes waiting, with the flush each waits for.
    waiting: Vec<(u64, Waker)>,
}

/// Why the flusher woke.
enum Wake {
    Close,
    Flush(u64),
    Early,
    Time,
}

impl Control {
    /// A window is full: asks the flusher to drain every source now. Never
    /// blocks for longer than a lock the flusher holds only to read a flag.
    pub(crate) fn drain_early(&self) {
        self.lock().early = true;
        self.changed.notify_all();
    }

    /// Counts metrics dropped; reported with the next window.
    pub(crate) fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Relaxed);
    }

    /// Metrics dropped since the start.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Asks for everything to be sent now and waits until it is, up to
    /// `timeout`. `false` on timeout or when the flusher is gone.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        if state.exited {
            return false;
        }
        state.flushes_asked += 1;
        let ticket = state.flushes_asked;
        self.changed.notify_all();
        while state.flushes_done < ticket && !state.exited {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.wait(state, left);
        }
        state.flushes_done >= ticket
    }

    /// Asks for everything to be sent now, without waiting: the ticket to
    /// poll with [`poll_flushed`](Self::poll_flushed), `None` when the
    /// flusher is gone.
    pub(crate) fn ask_flush(&self) -> Option<u64> {
        let mut state = self.lock();
        if state.exited {
            return None;
        }
        state.flushes_asked += 1;
        let ticket = state.flushes_asked;
        self.changed.notify_all();
        Some(ticket)
    }

    /// Whether flush `ticket` is done (`true`) or never will be (`false`);
    /// pending otherwise, and `cx` is woken when it is.
    pub(crate) fn poll_flushed(&self, ticket: u64, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.lock();
        if state.flushes_done >= ticket {
            return Poll::Ready(true);
        }
        if state.exited {
            return Poll::Ready(false);
        }
        match state.waiting.iter_mut().find(|(t, _)| *t == ticket) {
            Some((_, waker)) => waker.clone_from(cx.waker()),
            None => state.waiting.push((ticket, cx.waker().clone())),
        }
        Poll::Pending
    }

    /// Tells the flusher to send everything and exit; waits for it up to
    /// `timeout`.
    pub(crate) fn close(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        state.closing = true;
        self.changed.notify_all();
        while !state.exited {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = self.wait(state, left);
        }
    }

    /// Tells the flusher to exit without waiting (when dropped on the
    /// flusher thread itself, which cannot wait for itself).
    pub(crate) fn close_now(&self) {
        self.lock().closing = true;
        self.changed.notify_all();
    }

    /// Sleeps until something is asked of the flusher, or until `until`.
    fn next(&self, until: Instant) -> Wake {
        let mut state = self.lock();
        loop {
            if state.closing {
                return Wake::Close;
            }
            if state.flushes_asked > state.flushes_done {
                return Wake::Flush(state.flushes_asked);
            }
            if std::mem::take(&mut state.early) {
                return Wake::Early;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Wake::Time;
            }
            state = self.wait(state, left);
        }
    }

    fn flushed(&self, ticket: u64) {
        let mut state = self.lock();
        state.flushes_done = state.flushes_done.max(ticket);
        let done = state.flushes_done;
        let ready: Vec<Waker> = extract(&mut state.waiting, |(t, _)| *t <= done);
        self.changed.notify_all();
        drop(state);
        ready.into_iter().for_each(Waker::wake);
    }

    fn exited(&self) {
        let mut state = self.lock();
        state.exited = true;
        let all: Vec<Waker> = extract(&mut state.waiting, |_| true);
        self.changed.notify_all();
        drop(state);
        all.into_iter().for_each(Waker::wake);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>, left: Duration) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(state, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }
}

/// Takes the wakers of the entries that `done` selects out of `waiting`.
fn extract(waiting: &mut Vec<(u64, Waker)>, done: impl Fn(&(u64, Waker)) -> bool) -> Vec<Waker> {
    let mut ready = Vec::new();
    let mut i = 0;
    while i < waiting.len() {
        if done(&waiting[i]) {
            ready.push(waiting.swap_remove(i).1);
        } else {
            i += 1;
        }
    }
    ready
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
    pub(super) writer: PacketWriter,
    /// The swap buffer for `core.lines`: a drained window, capacity kept.
    pub(super) spare: Aggregator,
    pub(super) flush_interval: Duration,
    /// The size past which the handlers' window is sent early.
    pub(super) max_buffered_values: usize,
    pub(super) dropped_metric: String,
    pub(super) reported_dropped: u64,
    /// When the next packets leave (see [`Flusher::send_some`]).
    pub(super) next_send: Instant,
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
            let wake_at = if self.writer.pending() > 0 {
                self.next_send.min(window_end)
            } else {
                window_end
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
                    self.send_all();
                }
                Wake::Time => {}
            }
            let now = Instant::now();
            if now >= window_end {
                self.drain();
                self.writer.seal();
                window_end = now + self.flush_interval;
                self.next_send = now;
            }
            if now >= self.next_send {
                self.send_some(now);
            }
        }
    }

    /// Sends everything now: on a flush and at shutdown. Still `BURST`
    /// packets at a time, a millisecond apart: a flush of a big window is a
    /// burst the daemon's socket buffer would not hold otherwise (the whole
    /// of 10 000 packets leaves in a third of a second).
    fn flush(&mut self) {
        self.drain();
        self.writer.seal();
        self.send_all();
        self.writer.flush();
    }

    /// Sends every waiting packet now, `BURST` at a time, a millisecond
    /// apart. Also after an early drain: full sets come at the rate requests
    /// bring new users, already spread in time, so holding them for half a
    /// window would only hold memory (half a second of a flood of new users
    /// is megabytes of lines).
    fn send_all(&mut self) {
        // As many bursts as the outbox needs now, a gap before each but the
        // first: a count fixed up front, so the loop ends whatever
        // `send_pending` reports.
        let mut bursts = 0..self.writer.pending().div_ceil(BURST);
        if bursts.next().is_some() {
            self.writer.send_pending(BURST);
        }
        for _ in bursts {
            std::thread::sleep(FLUSH_GAP);
            self.writer.send_pending(BURST);
        }
    }

    /// Sends `BURST` packets and sets the time of the next ones, so that
    /// what waits leaves within half a window: the more waits, the shorter
    /// the gap. The sending rate follows the rate packets are made at (it
    /// is the outbox divided by half a window), and no burst is larger than
    /// `BURST` unless the outbox passes `MAX_PENDING_PACKETS`.
    fn send_some(&mut self, now: Instant) {
        let pending = self.writer.pending();
        if pending > MAX_PENDING_PACKETS {
            self.writer.send_pending(pending - MAX_PENDING_PACKETS);
        }
        let left = self.writer.send_pending(BURST);
        let gap = if left == 0 {
            Duration::ZERO
        } else {
            (self.flush_interval / 2).mul_f64(BURST as f64 / left.max(BURST) as f64)
        };
        self.next_send = now + gap;
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
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use super::super::packet::PacketStats;
    use super::super::testing::{spy, Packets};
    use super::*;

    /// Runs `f` on a thread of its own and fails if it has not returned
    /// within 5 seconds: a mutant that loops for ever fails the test rather
    /// than hanging it.
    fn within_5s(f: impl FnOnce() + Send + 'static) {
        let (done, finished) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            f();
            let _ = done.send(());
        });
        match finished.recv_timeout(Duration::from_secs(5)) {
            Ok(()) => worker.join().unwrap(),
            // `f` panicked: its own message says why.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::panic::resume_unwind(worker.join().unwrap_err())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("did not return in 5 s"),
        }
    }

    /// A flusher whose thread is not started: its steps are called by the
    /// test. Packets of at most 5 bytes, so each `a:1|c` is a packet.
    fn flusher(flush_interval: Duration, max_buffered_values: usize) -> (Packets, Flusher) {
        let (rx, spy) = spy();
        let core = Arc::new(Core {
            control: Arc::default(),
            lines: Mutex::new(Aggregator::new(0)),
            sources: Mutex::default(),
        });
        let writer = PacketWriter::new(Box::new(spy), 5, Arc::new(PacketStats::default()));
        let flusher = Flusher {
            core,
            writer,
            spare: Aggregator::new(0),
            flush_interval,
            max_buffered_values,
            dropped_metric: "dropped".to_owned(),
            reported_dropped: 0,
            next_send: Instant::now(),
        };
        (rx, flusher)
    }

    /// What leaves after `step` (a drain) and a flush of the writer, the
    /// last short packet included.
    fn sent_by(rx: &Packets, flusher: &mut Flusher, step: fn(&mut Flusher)) -> Vec<String> {
        step(flusher);
        flusher.writer.flush();
        rx.take()
    }

    /// `n` packets waiting in the outbox.
    fn outbox(flusher: &mut Flusher, n: usize) {
        for _ in 0..n {
            flusher.writer.push_entry("a:1|c");
        }
        flusher.writer.seal();
        assert_eq!(flusher.writer.pending(), n);
    }

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn extract_takes_the_done_entries_and_keeps_the_rest() {
        within_5s(|| {
            let counts: Vec<(Arc<Count>, Waker)> = (0..5).map(|_| waker()).collect();
            let mut waiting: Vec<(u64, Waker)> = [3, 1, 4, 2, 5]
                .into_iter()
                .zip(&counts)
                .map(|(ticket, (_, waker))| (ticket, waker.clone()))
                .collect();
            let ready = extract(&mut waiting, |(ticket, _)| *ticket <= 2);
            assert_eq!(ready.len(), 2);
            ready.into_iter().for_each(Waker::wake);
            let woken: Vec<usize> = counts.iter().map(|(c, _)| c.0.load(SeqCst)).collect();
            assert_eq!(woken, [0, 1, 0, 1, 0]);
            let mut left: Vec<u64> = waiting.iter().map(|(t, _)| *t).collect();
            left.sort_unstable();
            assert_eq!(left, [3, 4, 5]);
            assert!(extract(&mut waiting, |_| false).is_empty());
            assert_eq!(extract(&mut waiting, |_| true).len(), 3);
            assert!(waiting.is_empty());
        });
    }

    #[test]
    fn tickets_count_up_and_each_waiter_is_woken_when_its_flush_is_done() {
        within_5s(|| {
            let control = Control::default();
            assert_eq!(control.ask_flush(), Some(1));
            assert_eq!(control.ask_flush(), Some(2));
            assert_eq!(control.ask_flush(), Some(3));
            let (one, waker_one) = waker();
            let (two, waker_two) = waker();
            let (three, waker_three) = waker();
            let cx = |waker| Context::from_waker(waker);
            assert!(control.poll_flushed(1, &mut cx(&waker_one)).is_pending());
            assert!(control.poll_flushed(2, &mut cx(&waker_two)).is_pending());
            assert!(control.poll_flushed(3, &mut cx(&waker_three)).is_pending());
            // Polled again with a new waker: that one replaces the old one.
            let (two_again, waker_two_again) = waker();
            assert!(control
                .poll_flushed(2, &mut cx(&waker_two_again))
                .is_pending());
            assert_eq!(control.lock().waiting.len(), 3);
            // Flushes 1 and 2 done: their waiters are woken, 3 still waits.
            control.flushed(2);
            assert_eq!(one.0.load(SeqCst), 1);
            assert_eq!(two.0.load(SeqCst), 0, "replaced");
            assert_eq!(two_again.0.load(SeqCst), 1);
            assert_eq!(three.0.load(SeqCst), 0);
            assert_eq!(
                control.poll_flushed(2, &mut cx(&waker_two)),
                Poll::Ready(true)
            );
            assert!(control.poll_flushed(3, &mut cx(&waker_three)).is_pending());
            // The flusher exits: 3 will never be done, and says so.
            control.exited();
            assert_eq!(three.0.load(SeqCst), 1);
            assert_eq!(
                control.poll_flushed(3, &mut cx(&waker_three)),
                Poll::Ready(false)
            );
            assert_eq!(
                control.poll_flushed(1, &mut cx(&waker_one)),
                Poll::Ready(true)
            );
            assert_eq!(control.ask_flush(), None);
            assert!(!control.flush(Duration::from_secs(5)));
        });
    }

    /// A stand-in for the flusher thread: answers flushes until closed.
    fn answer_flushes(control: Arc<Control>) -> std::thread::JoinHandle<u64> {
        std::thread::spawn(move || {
            let mut flushes = 0;
            loop {
                let until = Instant::now() + Duration::from_secs(3600);
                match control.next(until) {
                    Wake::Flush(ticket) => {
                        flushes += 1;
                        control.flushed(ticket);
                    }
                    Wake::Close => {
                        control.exited();
                        return flushes;
                    }
                    Wake::Early | Wake::Time => {}
                }
            }
        })
    }

    #[test]
    fn a_flush_returns_as_soon_as_the_flusher_has_done_it() {
        within_5s(|| {
            let control = Arc::new(Control::default());
            let thread = answer_flushes(control.clone());
            for _ in 0..3 {
                // Far longer than the test may take: it returns when done.
                assert!(control.flush(Duration::from_secs(3600)));
            }
            control.close(Duration::from_secs(3600));
            assert_eq!(thread.join().unwrap(), 3);
            assert!(!control.flush(Duration::from_secs(3600)));
        });
    }

    #[test]
    fn a_flush_nobody_answers_waits_for_its_timeout() {
        let control = Control::default();
        let start = Instant::now();
        assert!(!control.flush(Duration::from_millis(200)));
        assert!(start.elapsed() >= Duration::from_millis(200));
        // Asked, still not done.
        assert!(matches!(control.next(Instant::now()), Wake::Flush(1)));
    }

    #[test]
    fn the_flusher_is_woken_for_what_was_asked_and_otherwise_sleeps() {
        within_5s(|| {
            let control = Control::default();
            let soon = Instant::now() + Duration::from_millis(100);
            assert!(matches!(control.next(soon), Wake::Time));
            assert!(Instant::now() >= soon);
            control.drain_early();
            assert!(matches!(control.next(soon), Wake::Early));
            assert!(
                matches!(control.next(Instant::now()), Wake::Time),
                "taken once"
            );
            assert_eq!(control.ask_flush(), Some(1));
            assert!(matches!(control.next(soon), Wake::Flush(1)));
            control.flushed(1);
            assert!(matches!(control.next(Instant::now()), Wake::Time));
            control.close_now();
            assert!(matches!(control.next(soon), Wake::Close));
            control.count_dropped(2);
            control.count_dropped(3);
            assert_eq!(control.dropped(), 5);
        });
    }

    #[test]
    fn send_some_paces_what_waits_over_half_a_window() {
        let (rx, mut flusher) = flusher(Duration::from_secs(1), 100);
        let now = Instant::now();
        outbox(&mut flusher, 100);
        flusher.send_some(now);
        assert_eq!(rx.take().len(), BURST);
        assert_eq!(flusher.writer.pending(), 68);
        let gap = flusher.next_send - now;
        let want = Duration::from_millis(500).mul_f64(32.0 / 68.0);
        assert_eq!(gap, want, "{gap:?}");
        // Fewer than a burst left: the next burst half a window later.
        let (rx, mut flusher) = super::tests::flusher(Duration::from_secs(1), 100);
        outbox(&mut flusher, BURST + 1);
        flusher.send_some(now);
        assert_eq!(rx.take().len(), BURST);
        assert_eq!(flusher.next_send - now, Duration::from_millis(500));
        // The last one: nothing left, no gap.
        flusher.send_some(now);
        assert_eq!(rx.take().len(), 1);
        assert_eq!(flusher.next_send, now);
    }

    #[test]
    fn send_some_sends_the_excess_over_the_outbox_limit_at_once() {
        let (rx, mut flusher) = flusher(Duration::from_secs(1), 100);
        let now = Instant::now();
        outbox(&mut flusher, MAX_PENDING_PACKETS + 10);
        flusher.send_some(now);
        assert_eq!(rx.take().len(), 10 + BURST);
        assert_eq!(flusher.writer.pending(), MAX_PENDING_PACKETS - BURST);
        // At the limit itself nothing extra goes.
        flusher.send_some(now);
        assert_eq!(rx.take().len(), BURST);
    }

    #[test]
    fn send_all_sends_every_packet_in_bursts() {
        within_5s(|| {
            let (rx, mut flusher) = flusher(Duration::from_secs(3600), 100);
            outbox(&mut flusher, 3 * BURST + 5);
            let start = Instant::now();
            flusher.send_all();
            assert_eq!(rx.take().len(), 3 * BURST + 5);
            assert_eq!(flusher.writer.pending(), 0);
            // Three gaps of a millisecond between the four bursts.
            assert!(start.elapsed() >= 3 * FLUSH_GAP);
        });
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
        let early = || sink.control().lock().early;
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
        sink.control().lock().early = false;
        sink.emit("g:1|c").unwrap();
        assert!(!early(), "asked once, when it filled up");
        drop(release);
        assert!(sink.flush());
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
        outbox(&mut flusher, BURST + 1);
        let core = flusher.core.clone();
        let start = Instant::now();
        flusher.next_send = start;
        let thread = std::thread::spawn(move || flusher.run());
        // A burst at once, long before the window's end...
        for _ in 0..BURST {
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
            assert!(!sink.flush());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            assert!(
                !runtime.block_on(asked_before),
                "woken, and told it was not sent"
            );
            assert!(
                !runtime.block_on(sink.flush_async()),
                "asked after: ready at once"
            );
            drop(sink);
        });
    }
}
