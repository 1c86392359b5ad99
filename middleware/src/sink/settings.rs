//! The delivery's settings, with their defaults and their rules, in one
//! place: both builders, [`StatsdBuilder`](crate::StatsdBuilder) and
//! [`AggregatingSinkBuilder`](super::AggregatingSinkBuilder), fill a
//! [`Requested`] and get the same [`Settings`] (or the same refusal) for the
//! same values; the server profile is resolved here, once.

use std::time::Duration;

use super::protocol::Protocol;
use super::sample::MIN_CAP;
use super::server::Mismatch;
use super::server::Server;

/// pystatsd's default `STATSD_MAXUDPSIZE`: the default largest packet, in
/// bytes, on every transport.
pub const DEFAULT_MAX_UDP_SIZE: usize = 512;
/// The smallest packet size accepted (`STATSD_MAXUDPSIZE`,
/// `max_packet_size`), on every transport: one metric line must fit.
pub const MIN_MAX_UDP_SIZE: usize = 64;
/// Default aggregation window; keep it at or below the daemon's flush interval.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default number of values kept per timer and window before sampling, for
/// a [`Server`] that reads sample rates on timers
/// (`metrics-exporter-dogstatsd`'s reservoir size; the measurement behind it
/// is in the repository's
/// [docs/delivery.md](https://github.com/tower-statsd/tower-statsd/blob/main/docs/delivery.md#timers-above-the-cap)).
/// Where the server misreads rates (collectd, netdata, the generic default)
/// every value is sent.
pub const DEFAULT_MAX_TIMER_SAMPLES: usize = 1_024;
/// Default number of handler values a window holds before it is sent early.
pub(crate) const DEFAULT_MAX_BUFFERED_VALUES: usize = 4_096;
/// The counter of dropped metrics, under the prefix if there is one.
pub(crate) const DROPPED_METRIC: &str = "tower_statsd.dropped";

/// What a builder was asked for, before any rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Requested {
    pub(crate) flush_interval: Duration,
    pub(crate) max_packet_size: usize,
    pub(crate) max_buffered_values: usize,
    /// `None`: the server's default.
    pub(crate) max_timer_samples: Option<usize>,
    /// `None`: the server's packing.
    pub(crate) protocol: Option<Protocol>,
    /// `None`: the one the packing names, else the generic default.
    pub(crate) server: Option<Server>,
}

impl Default for Requested {
    fn default() -> Self {
        Self {
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            max_packet_size: DEFAULT_MAX_UDP_SIZE,
            max_buffered_values: DEFAULT_MAX_BUFFERED_VALUES,
            max_timer_samples: None,
            protocol: None,
            server: None,
        }
    }
}

/// The validated delivery configuration the sink starts with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Settings {
    pub(crate) flush_interval: Duration,
    /// At least [`MIN_MAX_UDP_SIZE`].
    pub(crate) max_packet_size: usize,
    /// At least 1.
    pub(crate) max_buffered_values: usize,
    /// 0 (every value) or at least 64, and 0 for a server that misreads
    /// timer rates.
    pub(crate) timer_cap: usize,
    pub(crate) server: Server,
    pub(crate) protocol: Protocol,
}

/// A setting outside what it accepts; each builder words it for its users.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum Invalid {
    /// `max_packet_size` below [`MIN_MAX_UDP_SIZE`].
    #[error(
        "max packet size {0} is too small: use at least {MIN_MAX_UDP_SIZE} bytes (default 512)"
    )]
    PacketSizeTooSmall(usize),
    /// A zero flush interval would busy-loop.
    #[error("the flush interval must be above zero (default 1 s)")]
    ZeroFlushInterval,
    /// Between 1 and 63 timer samples: too few to stand for any count with
    /// rates that are powers of two.
    #[error("max timer samples {0} is too small: use 0 (keep every value) or at least 64")]
    TimerSamplesTooSmall(usize),
    /// A packing or a timer cap the server cannot read right.
    #[error(transparent)]
    Server(#[from] Mismatch),
}

impl Requested {
    /// The one rule per setting: refused, never clamped, except a window of
    /// 0 buffered values, which is 1.
    pub(crate) fn validate(&self) -> Result<Settings, Invalid> {
        if self.max_packet_size < MIN_MAX_UDP_SIZE {
            return Err(Invalid::PacketSizeTooSmall(self.max_packet_size));
        }
        if self.flush_interval.is_zero() {
            return Err(Invalid::ZeroFlushInterval);
        }
        if let Some(cap @ 1..MIN_CAP) = self.max_timer_samples {
            return Err(Invalid::TimerSamplesTooSmall(cap));
        }
        let (server, protocol) = Server::resolve(self.server, self.protocol)?;
        let timer_cap = server.timer_cap(self.max_timer_samples, DEFAULT_MAX_TIMER_SAMPLES)?;
        Ok(Settings {
            flush_interval: self.flush_interval,
            max_packet_size: self.max_packet_size,
            max_buffered_values: self.max_buffered_values.max(1),
            timer_cap,
            server,
            protocol,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_at_its_limit() {
        let ok = |r: Requested| r.validate();
        let defaults = ok(Requested::default()).unwrap();
        assert_eq!(
            defaults,
            Settings {
                flush_interval: Duration::from_secs(1),
                max_packet_size: 512,
                max_buffered_values: 4_096,
                timer_cap: 0,
                server: Server::Generic,
                protocol: Protocol::Plain,
            }
        );
        let at = |r: Requested| ok(r).map(|s| (s.max_packet_size, s.timer_cap));
        let asked = |size, cap| Requested {
            max_packet_size: size,
            max_timer_samples: cap,
            server: Some(Server::Etsy),
            ..Requested::default()
        };
        assert_eq!(at(asked(63, None)), Err(Invalid::PacketSizeTooSmall(63)));
        assert_eq!(at(asked(64, None)), Ok((64, 1_024)));
        assert_eq!(
            at(asked(64, Some(63))),
            Err(Invalid::TimerSamplesTooSmall(63))
        );
        assert_eq!(
            at(asked(64, Some(1))),
            Err(Invalid::TimerSamplesTooSmall(1))
        );
        assert_eq!(at(asked(64, Some(64))), Ok((64, 64)));
        assert_eq!(at(asked(64, Some(0))), Ok((64, 0)));
        let interval = |d| Requested {
            flush_interval: d,
            ..Requested::default()
        };
        assert_eq!(
            ok(interval(Duration::ZERO)),
            Err(Invalid::ZeroFlushInterval)
        );
        assert!(ok(interval(Duration::from_nanos(1))).is_ok());
        let buffered = |n| {
            ok(Requested {
                max_buffered_values: n,
                ..Requested::default()
            })
            .unwrap()
            .max_buffered_values
        };
        assert_eq!((buffered(0), buffered(1), buffered(7)), (1, 1, 7));
        let mismatch = Requested {
            server: Some(Server::Collectd),
            protocol: Some(Protocol::Etsy),
            ..Requested::default()
        };
        assert!(matches!(ok(mismatch), Err(Invalid::Server(_))));
        let sampled = Requested {
            max_timer_samples: Some(64),
            ..Requested::default()
        };
        assert!(matches!(ok(sampled), Err(Invalid::Server(_))));
    }
}
