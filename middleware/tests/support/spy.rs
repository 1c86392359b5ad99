//! The one spy: cadence's `SpyMetricSink` and the packets it received, for
//! every test in the crate. The unit tests include this file
//! (`sink/testing.rs`), the integration tests reach it through
//! `tests/support`.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use cadence::SpyMetricSink;
use crossbeam_channel::{Receiver, TryRecvError};

/// The packets a [`SpyMetricSink`] received, one per `emit`.
#[derive(Clone)]
pub struct Packets(Receiver<Vec<u8>>);

/// A spy transport and what it receives.
pub fn spy() -> (Packets, SpyMetricSink) {
    let (rx, spy) = SpyMetricSink::new();
    (Packets(rx), spy)
}

fn text(packet: Vec<u8>) -> String {
    String::from_utf8(packet).expect("packets are UTF-8")
}

impl Packets {
    /// Every packet received so far.
    pub fn take(&self) -> Vec<String> {
        self.0.try_iter().map(text).collect()
    }

    /// Every line of every packet received so far.
    pub fn lines(&self) -> Vec<String> {
        lines(&self.take())
    }

    /// The next packet, waiting up to `timeout`.
    pub fn wait(&self, timeout: Duration) -> Option<String> {
        self.0.recv_timeout(timeout).ok().map(text)
    }

    /// Every packet until the sink is dropped; panics when 5 s pass
    /// without a packet and the sink is still there.
    pub fn until_closed(&self) -> Vec<String> {
        self.until_closed_within(Duration::from_secs(5))
            .expect("the sink was not closed within 5 s")
    }

    /// Every packet until the sink is dropped; `None` when `idle` passes
    /// without a packet and the sink is still there.
    pub fn until_closed_within(&self, idle: Duration) -> Option<Vec<String>> {
        let packets: Vec<String> = std::iter::from_fn(|| self.wait(idle)).collect();
        let closed = matches!(self.0.try_recv(), Err(TryRecvError::Disconnected));
        closed.then_some(packets)
    }
}

/// Every line of every packet.
pub fn lines(packets: &[String]) -> Vec<String> {
    packets
        .iter()
        .flat_map(|p| p.split('\n'))
        .map(str::to_owned)
        .collect()
}
