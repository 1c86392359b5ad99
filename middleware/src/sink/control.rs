//! How the handles, the sources and the flusher thread talk: flush tickets
//! and the wakers of async flushes, early drains, close, and the count of
//! metrics dropped anywhere. The flusher thread asks [`Control::next`] what
//! to do; everything else only asks and counts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Why a flush did not end with everything sent: from
/// [`Statsd::flush`](crate::Statsd::flush),
/// [`AggregatingSink::flush`](super::AggregatingSink::flush) and their
/// `flush_async` futures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The flusher did not send the window within this limit (5 seconds
    /// for a blocking flush); it is still running, and sends it later.
    /// `flush_async` has no limit of its own, so never returns this.
    #[error("the tower-statsd flusher did not send the window within {0:?}; it is still sending")]
    TimedOut(Duration),
    /// The flusher thread is gone (the sink was closed, or its transport
    /// panicked): what was not sent before never will be.
    #[error("the tower-statsd flusher is gone (closed, or its transport panicked); nothing more is sent")]
    Closed,
}

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
pub(super) enum Wake {
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
    /// `timeout`.
    pub(super) fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        if state.exited {
            return Err(FlushError::Closed);
        }
        state.flushes_asked += 1;
        let ticket = state.flushes_asked;
        self.changed.notify_all();
        while state.flushes_done < ticket && !state.exited {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FlushError::TimedOut(timeout));
            }
            state = self.wait(state, left);
        }
        if state.flushes_done >= ticket {
            Ok(())
        } else {
            Err(FlushError::Closed)
        }
    }

    /// Asks for everything to be sent now, without waiting: the ticket to
    /// poll with [`poll_flushed`](Self::poll_flushed), `None` when the
    /// flusher is gone.
    pub(super) fn ask_flush(&self) -> Option<u64> {
        let mut state = self.lock();
        if state.exited {
            return None;
        }
        state.flushes_asked += 1;
        let ticket = state.flushes_asked;
        self.changed.notify_all();
        Some(ticket)
    }

    /// Whether flush `ticket` is done (`Ok`) or never will be
    /// ([`FlushError::Closed`]); pending otherwise, and `cx` is woken when it
    /// is.
    pub(super) fn poll_flushed(
        &self,
        ticket: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), FlushError>> {
        let mut state = self.lock();
        if state.flushes_done >= ticket {
            return Poll::Ready(Ok(()));
        }
        if state.exited {
            return Poll::Ready(Err(FlushError::Closed));
        }
        match state.waiting.iter_mut().find(|(t, _)| *t == ticket) {
            Some((_, waker)) => waker.clone_from(cx.waker()),
            None => state.waiting.push((ticket, cx.waker().clone())),
        }
        Poll::Pending
    }

    /// Tells the flusher to send everything and exit; waits for it up to
    /// `timeout`.
    pub(super) fn close(&self, timeout: Duration) {
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
    pub(super) fn close_now(&self) {
        self.lock().closing = true;
        self.changed.notify_all();
    }

    /// Sleeps until something is asked of the flusher, or until `until`.
    pub(super) fn next(&self, until: Instant) -> Wake {
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

    pub(super) fn flushed(&self, ticket: u64) {
        let mut state = self.lock();
        state.flushes_done = state.flushes_done.max(ticket);
        let done = state.flushes_done;
        let ready: Vec<Waker> = extract(&mut state.waiting, |(t, _)| *t <= done);
        self.changed.notify_all();
        drop(state);
        ready.into_iter().for_each(Waker::wake);
    }

    pub(super) fn exited(&self) {
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

#[cfg(test)]
impl Control {
    /// Whether an early drain is asked and not yet taken.
    pub(super) fn early_asked(&self) -> bool {
        self.lock().early
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    use super::super::testing::within_5s;
    use super::*;

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
                Poll::Ready(Ok(()))
            );
            assert!(control.poll_flushed(3, &mut cx(&waker_three)).is_pending());
            // The flusher exits: 3 will never be done, and says so.
            control.exited();
            assert_eq!(three.0.load(SeqCst), 1);
            assert_eq!(
                control.poll_flushed(3, &mut cx(&waker_three)),
                Poll::Ready(Err(FlushError::Closed))
            );
            assert_eq!(
                control.poll_flushed(1, &mut cx(&waker_one)),
                Poll::Ready(Ok(()))
            );
            assert_eq!(control.ask_flush(), None);
            assert_eq!(
                control.flush(Duration::from_secs(5)),
                Err(FlushError::Closed)
            );
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
                assert_eq!(control.flush(Duration::from_secs(3600)), Ok(()));
            }
            control.close(Duration::from_secs(3600));
            assert_eq!(thread.join().unwrap(), 3);
            assert_eq!(
                control.flush(Duration::from_secs(3600)),
                Err(FlushError::Closed)
            );
        });
    }

    #[test]
    fn a_flush_nobody_answers_waits_for_its_timeout() {
        let control = Control::default();
        let start = Instant::now();
        let limit = Duration::from_millis(200);
        assert_eq!(control.flush(limit), Err(FlushError::TimedOut(limit)));
        assert!(start.elapsed() >= limit);
        // Asked, still not done.
        assert!(matches!(control.next(Instant::now()), Wake::Flush(1)));
    }

    #[test]
    fn a_flusher_that_exits_during_a_flush_ends_it_as_closed() {
        within_5s(|| {
            let control = Arc::new(Control::default());
            let flusher = control.clone();
            // Takes the flush, then exits without doing it (as a flusher
            // that panics does).
            let thread = std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(3600);
                assert!(matches!(flusher.next(until), Wake::Flush(1)));
                flusher.exited();
            });
            assert_eq!(
                control.flush(Duration::from_secs(3600)),
                Err(FlushError::Closed)
            );
            thread.join().unwrap();
        });
    }

    #[test]
    fn each_flush_error_says_what_happened() {
        assert_eq!(
            FlushError::TimedOut(Duration::from_secs(5)).to_string(),
            "the tower-statsd flusher did not send the window within 5s; it is still sending"
        );
        assert_eq!(
            FlushError::Closed.to_string(),
            "the tower-statsd flusher is gone (closed, or its transport panicked); \
             nothing more is sent"
        );
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
}
