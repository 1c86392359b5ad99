//! The forwarder: owns the transport and sends the writer's payloads,
//! paced over the window, counting what it sent.
//!
//! Finished payloads wait in an outbox, counters, gauges and set members
//! ahead of timer values (the writer's lanes). At the window's end they
//! leave paced over half a window ([`Forwarder::send_some`]) rather than in
//! one burst, because a burst of thousands of datagrams overflows the
//! daemon's socket receive buffer while it is still parsing the first ones;
//! a flush and an early drain send them at once, still [`BURST`] at a time
//! ([`Forwarder::send_all`]). Each payload is one [`MetricSink::emit`]
//! call, so a datagram transport sends exactly what was written.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cadence::MetricSink;

use super::writer::PacketWriter;

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

/// Bytes of packet buffers kept for reuse: the outbox of a busy window (a
/// server profile that sends every timer value fills 8 192 packets of 512
/// bytes with about 170 000 values), so a steady load allocates none. Only
/// what a window has needed is held.
const MAX_FREE_BYTES: usize = 4 << 20;
/// And at most this many, whatever their size.
const MAX_FREE_BUFFERS: usize = 16_384;

/// What the forwarder sent, shared with the [`AggregatingSink`](super::AggregatingSink)
/// handles so an application can read it.
#[derive(Debug, Default)]
pub(crate) struct PacketStats {
    /// Packets the transport accepted.
    pub(crate) packets_sent: AtomicU64,
    /// Bytes in the packets the transport accepted.
    pub(crate) bytes_sent: AtomicU64,
    /// Packets the transport returned an error for (lost).
    pub(crate) packets_failed: AtomicU64,
    /// Bytes in the packets the transport returned an error for.
    pub(crate) bytes_failed: AtomicU64,
    /// Lines longer than the packet size on their own, sent alone anyway.
    pub(crate) oversized: AtomicU64,
}

/// The transport, the outbox and the pacing. Runs on the flusher thread
/// only.
pub(crate) struct Forwarder {
    transport: Box<dyn MetricSink + Send>,
    /// Counters, gauges, set members: they leave before `bulk`'s.
    first: VecDeque<String>,
    /// Timer and distribution values.
    bulk: VecDeque<String>,
    /// Buffers of sent packets, cleared, for the writer's next ones.
    free: Vec<String>,
    /// How many buffers `free` may hold: [`MAX_FREE_BYTES`] of them.
    max_free: usize,
    /// Buffers larger than this (an oversized line's) are not kept.
    max_packet_size: usize,
    /// What waits at the window's end leaves within half of it.
    flush_interval: Duration,
    /// When the next packets leave (see [`Forwarder::send_some`]).
    next_send: Instant,
    stats: Arc<PacketStats>,
}

impl Forwarder {
    /// A forwarder of packets of at most `max_packet_size` bytes (the
    /// writer's) to `transport`, pacing them over half of `flush_interval`.
    pub(crate) fn new(
        transport: Box<dyn MetricSink + Send>,
        max_packet_size: usize,
        flush_interval: Duration,
        stats: Arc<PacketStats>,
    ) -> Self {
        let max_packet_size = max_packet_size.max(1);
        Self {
            transport,
            first: VecDeque::new(),
            bulk: VecDeque::new(),
            free: Vec::new(),
            max_free: (MAX_FREE_BYTES / max_packet_size).min(MAX_FREE_BUFFERS),
            max_packet_size,
            flush_interval,
            next_send: Instant::now(),
            stats,
        }
    }

    /// Takes the writer's finished packets into the outbox, and gives it
    /// the buffers of sent ones for its next packets.
    pub(crate) fn take(&mut self, writer: &mut PacketWriter) {
        let oversized = writer.hand_over(&mut self.first, &mut self.bulk);
        self.stats.oversized.fetch_add(oversized, Relaxed);
        writer.reuse(&mut self.free);
    }

    /// Packets waiting to be sent.
    pub(crate) fn pending(&self) -> usize {
        self.first.len() + self.bulk.len()
    }

    /// When the next paced packets leave, if any wait.
    pub(super) fn next_send(&self) -> Option<Instant> {
        (self.pending() > 0).then_some(self.next_send)
    }

    /// Takes the packets of a window that ended at `now`: they start
    /// leaving now, paced by [`send_due`](Self::send_due).
    pub(super) fn take_window(&mut self, writer: &mut PacketWriter, now: Instant) {
        self.take(writer);
        self.next_send = now;
    }

    /// Sends the next paced packets if their time has come.
    pub(super) fn send_due(&mut self, now: Instant) {
        if now >= self.next_send {
            self.send_some(now);
        }
    }

    /// Sends every waiting packet now, `BURST` at a time, a millisecond
    /// apart: on a flush, at shutdown and after an early drain. A flush of
    /// a big window is a burst the daemon's socket buffer would not hold
    /// otherwise (the whole of 10 000 packets leaves in a third of a
    /// second). Full sets of an early drain come at the rate requests bring
    /// new users, already spread in time, so holding them for half a window
    /// would only hold memory (half a second of a flood of new users is
    /// megabytes of lines).
    pub(super) fn send_all(&mut self) {
        // As many bursts as the outbox needs now, a gap before each but the
        // first: a count fixed up front, so the loop ends whatever
        // `send_pending` reports.
        let mut bursts = 0..self.pending().div_ceil(BURST);
        if bursts.next().is_some() {
            self.send_pending(BURST);
        }
        for _ in bursts {
            std::thread::sleep(FLUSH_GAP);
            self.send_pending(BURST);
        }
    }

    /// Asks the transport to send what it buffers itself (a buffered sink
    /// of the application's).
    pub(super) fn flush_transport(&mut self) {
        if let Err(error) = self.transport.flush() {
            tracing::debug!(%error, "statsd transport flush failed");
        }
    }

    /// Sends `BURST` packets and sets the time of the next ones, so that
    /// what waits leaves within half a window: the more waits, the shorter
    /// the gap. The sending rate follows the rate packets are made at (it
    /// is the outbox divided by half a window), and no burst is larger than
    /// `BURST` unless the outbox passes `MAX_PENDING_PACKETS`.
    fn send_some(&mut self, now: Instant) {
        let pending = self.pending();
        if pending > MAX_PENDING_PACKETS {
            self.send_pending(pending - MAX_PENDING_PACKETS);
        }
        let left = self.send_pending(BURST);
        let gap = if left == 0 {
            Duration::ZERO
        } else {
            (self.flush_interval / 2).mul_f64(BURST as f64 / left.max(BURST) as f64)
        };
        self.next_send = now + gap;
    }

    /// Sends at most `max` packets, counts before timer values; returns how
    /// many remain.
    pub(crate) fn send_pending(&mut self, max: usize) -> usize {
        for _ in 0..max {
            let Some(mut packet) = self.first.pop_front().or_else(|| self.bulk.pop_front()) else {
                break;
            };
            self.emit(&packet);
            if self.free.len() < self.max_free && packet.capacity() <= self.max_packet_size {
                packet.clear();
                self.free.push(packet);
            }
        }
        self.pending()
    }

    fn emit(&self, packet: &str) {
        let len = packet.len() as u64;
        match self.transport.emit(packet) {
            Ok(_) => {
                self.stats.packets_sent.fetch_add(1, Relaxed);
                self.stats.bytes_sent.fetch_add(len, Relaxed);
            }
            Err(error) => {
                self.stats.packets_failed.fetch_add(1, Relaxed);
                self.stats.bytes_failed.fetch_add(len, Relaxed);
                tracing::debug!(%error, bytes = len, "statsd packet lost");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::super::testing::{pipe, spy, within_5s, Packets, Pipe};
    use super::*;

    /// A forwarder to a spy, pacing over half of `flush_interval`.
    fn forwarder(flush_interval: Duration) -> (Packets, Forwarder) {
        let (rx, spy) = spy();
        let stats = Arc::new(PacketStats::default());
        (rx, Forwarder::new(Box::new(spy), 5, flush_interval, stats))
    }

    /// `n` packets waiting in the outbox.
    fn outbox(fwd: &mut Forwarder, n: usize) {
        let mut writer = PacketWriter::new(5);
        for _ in 0..n {
            writer.push_entry("a:1|c");
        }
        writer.seal();
        fwd.take(&mut writer);
        assert_eq!(fwd.pending(), n);
    }

    #[test]
    fn send_some_paces_what_waits_over_half_a_window() {
        let (rx, mut fwd) = forwarder(Duration::from_secs(1));
        let now = Instant::now();
        outbox(&mut fwd, 100);
        fwd.send_some(now);
        assert_eq!(rx.take().len(), BURST);
        assert_eq!(fwd.pending(), 68);
        let gap = fwd.next_send - now;
        let want = Duration::from_millis(500).mul_f64(32.0 / 68.0);
        assert_eq!(gap, want, "{gap:?}");
        // Fewer than a burst left: the next burst half a window later.
        let (rx, mut fwd) = forwarder(Duration::from_secs(1));
        outbox(&mut fwd, BURST + 1);
        fwd.send_some(now);
        assert_eq!(rx.take().len(), BURST);
        assert_eq!(fwd.next_send - now, Duration::from_millis(500));
        // The last one: nothing left, no gap.
        fwd.send_some(now);
        assert_eq!(rx.take().len(), 1);
        assert_eq!(fwd.next_send, now);
    }

    #[test]
    fn send_some_sends_the_excess_over_the_outbox_limit_at_once() {
        let (rx, mut fwd) = forwarder(Duration::from_secs(1));
        let now = Instant::now();
        outbox(&mut fwd, MAX_PENDING_PACKETS + 10);
        fwd.send_some(now);
        assert_eq!(rx.take().len(), 10 + BURST);
        assert_eq!(fwd.pending(), MAX_PENDING_PACKETS - BURST);
        // At the limit itself nothing extra goes.
        fwd.send_some(now);
        assert_eq!(rx.take().len(), BURST);
    }

    #[test]
    fn send_all_sends_every_packet_in_bursts() {
        within_5s(|| {
            let (rx, mut fwd) = forwarder(Duration::from_secs(3600));
            outbox(&mut fwd, 3 * BURST + 5);
            let start = Instant::now();
            fwd.send_all();
            assert_eq!(rx.take().len(), 3 * BURST + 5);
            assert_eq!(fwd.pending(), 0);
            // Three gaps of a millisecond between the four bursts.
            assert!(start.elapsed() >= 3 * FLUSH_GAP);
        });
    }

    #[test]
    fn a_window_taken_starts_leaving_at_its_end() {
        let (rx, mut fwd) = forwarder(Duration::from_secs(1));
        let mut writer = PacketWriter::new(5);
        writer.push_entry("a:1|c");
        writer.seal();
        let later = Instant::now() + Duration::from_secs(3600);
        fwd.take_window(&mut writer, later);
        assert_eq!(fwd.next_send(), Some(later));
        fwd.send_due(later - Duration::from_millis(1));
        assert!(rx.take().is_empty(), "not yet");
        fwd.send_due(later);
        assert_eq!(rx.take(), ["a:1|c"]);
        assert_eq!(fwd.next_send(), None, "nothing waits");
    }

    #[test]
    fn the_outbox_sends_a_few_at_a_time_and_reuses_its_buffers() {
        let (rx, spy) = spy();
        let (mut w, _) = pipe(spy, 8);
        let kept = |w: &Pipe| w.blanks() + w.forwarder.free.len();
        for _ in 0..5 {
            w.push_entry("a:1|c");
        }
        assert_eq!(w.buffered(), 5);
        assert_eq!(w.pending(), 4, "four full packets wait; the fifth is open");
        w.seal();
        assert_eq!((w.buffered(), w.pending()), (0, 5));
        assert_eq!(w.send_pending(2), 3);
        assert_eq!(rx.take(), ["a:1|c", "a:1|c"]);
        assert_eq!(w.pending(), 3);
        assert_eq!(w.send_pending(10), 0);
        assert_eq!(rx.take().len(), 3);
        assert_eq!(w.send_pending(10), 0, "nothing left");
        // Every packet buffer came back for reuse; the writer takes them
        // with the next packets it hands over, and new packets use them.
        assert_eq!(kept(&w), 5);
        assert_eq!(w.blanks(), 5);
        w.push_entry("b:1|c");
        w.push_entry("b:1|c");
        assert_eq!(w.blanks(), 4);
        // An oversized line's buffer is not kept: it is larger than a packet.
        // (The open buffer is finished, and the next one taken, before it.)
        w.push_entry("oversized:1|c");
        assert_eq!(w.blanks(), 3);
        w.flush();
        assert_eq!(rx.take(), ["b:1|c", "b:1|c", "oversized:1|c"]);
        assert_eq!(kept(&w), 5);
        // At most `MAX_FREE_BYTES` of them are kept.
        let max_free = w.forwarder.max_free;
        assert_eq!(max_free, 16_384, "(4 << 20) / 8 buffers of 8 bytes, capped");
        assert_eq!(pipe(spy_sink(), 512).0.forwarder.max_free, (4 << 20) / 512);
        for _ in 0..max_free + 10 {
            w.push_entry("c:1|c");
        }
        w.flush();
        assert_eq!(rx.take().len(), max_free + 10);
        assert_eq!(w.forwarder.free.len(), max_free);
    }

    fn spy_sink() -> cadence::SpyMetricSink {
        spy().1
    }

    #[test]
    fn transport_errors_are_counted_not_raised() {
        struct Failing;
        impl MetricSink for Failing {
            fn emit(&self, _: &str) -> std::io::Result<usize> {
                Err(std::io::Error::other("down"))
            }
        }
        let (mut w, stats) = pipe(Failing, 512);
        w.push_entry("a:1|c");
        w.flush();
        assert_eq!(stats.packets_failed.load(Relaxed), 1);
        assert_eq!(stats.bytes_failed.load(Relaxed), 5);
        assert_eq!(stats.packets_sent.load(Relaxed), 0);
    }

    #[test]
    fn a_flush_reaches_the_transport() {
        #[derive(Clone, Default)]
        struct Flushes(Arc<AtomicUsize>);
        impl MetricSink for Flushes {
            fn emit(&self, packet: &str) -> std::io::Result<usize> {
                Ok(packet.len())
            }
            fn flush(&self) -> std::io::Result<()> {
                self.0.fetch_add(1, Relaxed);
                Ok(())
            }
        }
        let flushes = Flushes::default();
        let stats = Arc::new(PacketStats::default());
        let mut fwd = Forwarder::new(
            Box::new(flushes.clone()),
            512,
            Duration::from_secs(1),
            stats,
        );
        fwd.flush_transport();
        assert_eq!(flushes.0.load(Relaxed), 1);
    }
}
