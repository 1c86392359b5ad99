//! How aggregated values are packed on the wire: the StatsD dialects.
//!
//! Counters are summed and set members de-duplicated in every dialect; only
//! the packing of a name's several values differs.

use std::fmt;
use std::str::FromStr;

/// The wire dialect: how the values of one name in one window are written.
///
/// | dialect | timers | sets | read by |
/// |---|---|---|---|
/// | [`Plain`](Protocol::Plain) (default) | `k:1.5\|ms` a line | `k:a\|s` a line | every StatsD server: Etsy StatsD, collectd, netdata, DogStatsD, statsd_exporter, gostatsd, Telegraf |
/// | [`Etsy`](Protocol::Etsy) | `k:1.5\|ms:2.5\|ms` | `k:a\|s:b\|s` | Etsy StatsD, Telegraf |
/// | [`DogStatsd`](Protocol::DogStatsd) | `k:1.5:2.5\|ms\|#t:v` (protocol 1.1) | `k:a\|s` a line | the Datadog agent |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// One value per line: the only form every server reads.
    #[default]
    Plain,
    /// Etsy StatsD's multi-value lines, `key:v1|ms:v2|ms`: the fewest bytes
    /// for Etsy StatsD (and Telegraf), which the others reject.
    Etsy,
    /// DogStatsD protocol 1.1: the values of a timer that share a sample
    /// rate on one line, `key:v1:v2|ms|@rate|#tags`; one set member a line.
    DogStatsd,
}

impl Protocol {
    /// The name `STATSD_PROTOCOL` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Plain => "plain",
            Protocol::Etsy => "etsy",
            Protocol::DogStatsd => "dogstatsd",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dialect name that is none of `plain`, `etsy`, `dogstatsd`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown StatsD protocol {0:?}: expected plain, etsy or dogstatsd")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    /// `plain`, `etsy` or `dogstatsd`, in any case, around spaces.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "plain" => Ok(Protocol::Plain),
            "etsy" => Ok(Protocol::Etsy),
            "dogstatsd" => Ok(Protocol::DogStatsd),
            _ => Err(UnknownProtocol(text.to_owned())),
        }
    }
}
