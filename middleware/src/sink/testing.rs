//! Test helpers: the crate's one spy and one reading of packets as statsd
//! 0.9 reads them (both shared with the integration tests, whose
//! `tests/support` holds the files), a time limit, and a writer joined to a
//! forwarder.

use std::time::Duration;

#[path = "../../tests/support/spy.rs"]
mod spy;
pub(crate) use spy::{lines, spy, Packets};

#[path = "../../tests/support/daemon.rs"]
mod daemon;
pub(crate) use daemon::{daemon, dogstatsd_as_etsy, etsy_one_value_a_line, Daemon};

#[path = "../../tests/support/logged.rs"]
mod logged;
pub(crate) use logged::logged;

/// A client that sends nowhere and only on `flush()` (an hour-long window).
pub(crate) fn quiet_statsd() -> crate::Statsd {
    crate::Statsd::builder()
        .flush_interval(Duration::from_secs(3600))
        .build_with(cadence::NopMetricSink)
        .unwrap()
}

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
