//! Test helpers: cadence's `SpyMetricSink` behind a receiver type that can be
//! named without depending on crossbeam, and a strict reading of packets as
//! statsd 0.9 reads them.

use std::time::Duration;

use cadence::SpyMetricSink;

/// The packets a [`SpyMetricSink`] received, one per `emit`.
pub(crate) struct Packets {
    next: Box<dyn Fn(Option<Duration>) -> Option<String> + Send>,
    /// Whether the sink side is gone (the spy dropped) and nothing waits.
    closed: Box<dyn Fn() -> bool + Send>,
}

impl Packets {
    /// Every packet received so far.
    pub(crate) fn take(&self) -> Vec<String> {
        std::iter::from_fn(|| (self.next)(None)).collect()
    }

    /// The next packet, waiting up to `timeout`.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<String> {
        (self.next)(Some(timeout))
    }

    /// Every packet until the sink is dropped; panics when 5 s pass
    /// without a packet and the sink is still there.
    pub(crate) fn until_closed(&self) -> Vec<String> {
        self.until_closed_within(Duration::from_secs(5))
            .expect("the sink was not closed within 5 s")
    }

    /// Every packet until the sink is dropped; `None` when `idle` passes
    /// without a packet and the sink is still there.
    pub(crate) fn until_closed_within(&self, idle: Duration) -> Option<Vec<String>> {
        let packets: Vec<String> = std::iter::from_fn(|| self.wait(idle)).collect();
        (self.closed)().then_some(packets)
    }
}

/// A spy transport and what it receives.
pub(crate) fn spy() -> (Packets, SpyMetricSink) {
    let (rx, spy) = SpyMetricSink::new();
    let probe = rx.clone();
    let closed = move || matches!(probe.try_recv(), Err(e) if e.is_disconnected());
    let next = move |wait: Option<Duration>| {
        let packet = match wait {
            None => rx.try_recv().ok(),
            Some(timeout) => rx.recv_timeout(timeout).ok(),
        };
        packet.map(|p| String::from_utf8(p).expect("packets are UTF-8"))
    };
    (
        Packets {
            next: Box::new(next),
            closed: Box::new(closed),
        },
        spy,
    )
}

/// Every line of every packet.
pub(crate) fn lines(packets: &[String]) -> Vec<String> {
    packets
        .iter()
        .flat_map(|p| p.split('\n'))
        .map(str::to_owned)
        .collect()
}

#[path = "../../tests/support/daemon.rs"]
mod daemon;
pub(crate) use daemon::{daemon, dogstatsd_as_etsy, Daemon};

/// Runs `f` on a thread of its own and fails if it has not returned
/// within 5 seconds: a mutant that loops for ever fails the test rather
/// than hanging it.
pub(crate) fn within_5s(f: impl FnOnce() + Send + 'static) {
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

/// A writer and a forwarder to a transport, joined as the flusher joins
/// them, for tests of what leaves: it is the writer, and it sends.
pub(crate) struct Pipe {
    writer: super::PacketWriter,
    pub(crate) forwarder: super::forwarder::Forwarder,
}

/// A [`Pipe`] of packets of at most `max` bytes to `transport`, and what
/// its forwarder counts.
pub(crate) fn pipe(
    transport: impl cadence::MetricSink + Send + 'static,
    max: usize,
) -> (Pipe, std::sync::Arc<super::PacketStats>) {
    let stats = std::sync::Arc::new(super::PacketStats::default());
    let forwarder = super::forwarder::Forwarder::new(
        Box::new(transport),
        max,
        Duration::from_secs(1),
        stats.clone(),
    );
    let writer = super::PacketWriter::new(max);
    (Pipe { writer, forwarder }, stats)
}

impl Pipe {
    /// Sends everything written, the open packets too, at once.
    pub(crate) fn flush(&mut self) {
        self.writer.seal();
        self.forwarder.take(&mut self.writer);
        self.forwarder.send_pending(usize::MAX);
        self.forwarder.flush_transport();
    }

    /// Sends at most `max` finished packets; returns how many remain.
    pub(crate) fn send_pending(&mut self, max: usize) -> usize {
        self.forwarder.take(&mut self.writer);
        self.forwarder.send_pending(max)
    }

    /// Finished packets not sent yet.
    pub(crate) fn pending(&mut self) -> usize {
        self.forwarder.take(&mut self.writer);
        self.forwarder.pending()
    }
}

impl std::ops::Deref for Pipe {
    type Target = super::PacketWriter;

    fn deref(&self) -> &super::PacketWriter {
        &self.writer
    }
}

impl std::ops::DerefMut for Pipe {
    fn deref_mut(&mut self) -> &mut super::PacketWriter {
        &mut self.writer
    }
}
