//! Server profiles: what each StatsD server does with the bytes we send, in
//! one place.
//!
//! Servers read the same line differently. The one difference that changes
//! numbers without a word is `|@rate` on a timer value, which a sampled
//! timer needs: Etsy StatsD scales the count by it and keeps the value,
//! statsd_exporter, Telegraf, Vector, DogStatsD and gostatsd weigh the value
//! `1 / rate` times, but collectd divides the *value* by the rate and
//! netdata does not count it. A profile therefore decides, per server: how values
//! are packed ([`Protocol`]), whether a timer may be sampled (values sent
//! with a rate), and what the server keeps of tags, distributions, sets and
//! fractions of a millisecond. Every decision cites the server's parser or
//! docs and is pinned by a test (`middleware/tests/servers.rs`, and the
//! compatibility matrix against the real Etsy StatsD, collectd and netdata).

use std::fmt;
use std::str::FromStr;

use super::protocol::Protocol;

/// Which StatsD server the packets go to (`STATSD_SERVER`).
///
/// | server | packing | timers above the cap | tags | distributions | sets | fractions of a ms |
/// |---|---|---|---|---|---|---|
/// | [`Generic`](Server::Generic) (default) | plain | every value sent, no rate | no | no | yes | sent |
/// | [`Etsy`](Server::Etsy) (also graphite-statsd) | etsy | sampled, `\|@rate` | yes (0.9: as Graphite tags) | no | yes | kept |
/// | [`Collectd`](Server::Collectd) | plain | every value sent, no rate | no | no | yes | **cut to whole ms** |
/// | [`Netdata`](Server::Netdata) | plain | every value sent, no rate | no | no | yes | kept |
/// | [`Telegraf`](Server::Telegraf) | etsy | sampled, `\|@rate` | no (only with `datadog_extensions`) | no | yes | kept |
/// | [`StatsdExporter`](Server::StatsdExporter) | plain | sampled, `\|@rate` | yes | yes | **no sets** | kept |
/// | [`Datadog`](Server::Datadog) | dogstatsd | sampled, `\|@rate` | yes | yes | yes | kept |
/// | [`Vector`](Server::Vector) | plain | sampled, `\|@rate` | yes | yes | yes | kept |
/// | [`Gostatsd`](Server::Gostatsd) | plain | sampled, `\|@rate` | yes | no | yes | kept |
///
/// With [`Generic`](Server::Generic), the default, every server stores the
/// right count and the right latency statistics: no line carries a rate,
/// so no server can misread one. The price is one line per timer value: a
/// server that reads rates correctly (name it) lets a busy route send a
/// fixed-size sample instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Server {
    /// Any server: only what every server reads the same way.
    #[default]
    Generic,
    /// Etsy StatsD (`statsd` on npm), as in the graphite-statsd image.
    Etsy,
    /// collectd's `statsd` plugin.
    Collectd,
    /// netdata's built-in statsd.
    Netdata,
    /// Telegraf's `statsd` input.
    Telegraf,
    /// Prometheus' statsd_exporter.
    StatsdExporter,
    /// The Datadog agent's DogStatsD.
    Datadog,
    /// Vector's `statsd` source.
    Vector,
    /// Atlassian's gostatsd.
    Gostatsd,
}

/// Every server, in the order of the table above.
pub(crate) const SERVERS: [Server; 9] = [
    Server::Generic,
    Server::Etsy,
    Server::Collectd,
    Server::Netdata,
    Server::Telegraf,
    Server::StatsdExporter,
    Server::Datadog,
    Server::Vector,
    Server::Gostatsd,
];

impl Server {
    /// The name `STATSD_SERVER` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Server::Generic => "generic",
            Server::Etsy => "etsy",
            Server::Collectd => "collectd",
            Server::Netdata => "netdata",
            Server::Telegraf => "telegraf",
            Server::StatsdExporter => "statsd_exporter",
            Server::Datadog => "datadog",
            Server::Vector => "vector",
            Server::Gostatsd => "gostatsd",
        }
    }

    /// How values are packed when `STATSD_PROTOCOL` does not say: the
    /// fewest bytes the server reads.
    pub fn packing(self) -> Protocol {
        match self {
            // Etsy StatsD 0.9 splits a line's values on `:` after the name
            // (stats.js, `handlePacket`): `k:1|ms:2|ms`.
            Server::Etsy => Protocol::Etsy,
            // Telegraf's parser takes every `:`-separated bit after the
            // name (plugins/inputs/statsd/statsd.go, `parseStatsdLine`).
            Server::Telegraf => Protocol::Etsy,
            // DogStatsD 1.1 (agent 7.25+): `k:1:2|ms` with one type.
            Server::Datadog => Protocol::DogStatsd,
            // collectd (src/statsd.c, `statsd_handle_line`) and Vector
            // parse one value a line; netdata, statsd_exporter and gostatsd
            // do not document multi-value lines, or read them only
            // without tags: one a line is what they all read.
            Server::Generic
            | Server::Collectd
            | Server::Netdata
            | Server::StatsdExporter
            | Server::Vector
            | Server::Gostatsd => Protocol::Plain,
        }
    }

    /// Whether the server reads `protocol`'s packing.
    pub fn reads(self, protocol: Protocol) -> bool {
        match protocol {
            Protocol::Plain => true,
            // Multi-value lines: Etsy StatsD and Telegraf (above); collectd
            // answers "Unable to parse line", netdata "unknown metric
            // type" (both measured by the compatibility matrix).
            Protocol::Etsy => matches!(self, Server::Etsy | Server::Telegraf),
            // DogStatsD 1.1: the agent; statsd_exporter (timers,
            // histograms, distributions) and gostatsd from 41.0.0 (PR #762).
            Protocol::DogStatsd => matches!(
                self,
                Server::Datadog | Server::StatsdExporter | Server::Gostatsd
            ),
        }
    }

    /// Whether a sampled timer value may carry `|@rate`: the server counts
    /// `1 / rate` events for it and keeps its value. Where it may not, a
    /// timer is never sampled: every value is sent, with no rate.
    pub fn reads_timer_rates(self) -> bool {
        match self {
            // stats.js: `sampleRate` scales `counter_rates`/`timer_counters`
            // by `1 / rate`; the value goes into `timers` as it is.
            Server::Etsy => true,
            // statsd_exporter (pkg/line: the event is repeated
            // `int(1/rate)` times), Telegraf (statsd.go: "repeat the
            // value `int(1/samplerate)` times"), Vector (1/rate truncated
            // to u32), DogStatsD and gostatsd (PR #190) weigh a value by
            // `1 / rate`. Our rates are `1 / 2^j`, so `1 / rate` is exact.
            Server::Telegraf
            | Server::StatsdExporter
            | Server::Datadog
            | Server::Vector
            | Server::Gostatsd => true,
            // collectd divides the value by the rate and does not scale
            // the count (src/statsd.c; collectd issue #1935, "working as
            // intended"); netdata does not scale a timer's event count by
            // it (its older versions multiplied the value instead, netdata
            // issue #3630). Both pinned against the real daemons by
            // `tests/tests/matrix.rs`. An unknown server may be either.
            Server::Generic | Server::Collectd | Server::Netdata => false,
        }
    }

    /// Whether the server reads DogStatsD tags (`|#k:v,...`), which tagged
    /// naming ([`NamingMode::Tagged`](crate::NamingMode::Tagged)) needs.
    pub fn reads_tags(self) -> bool {
        match self {
            // collectd has no tags in its grammar (src/statsd.c); netdata
            // reads `|#` as its own chart options (units, family, name),
            // not as dimensions; older Etsy StatsD answered "Bad line"
            // (hot-shots issue #85), so an unknown server may too; Telegraf
            // reads them only with `datadog_extensions = true`, off by
            // default (without it the line is split on `:` and dropped).
            Server::Generic | Server::Collectd | Server::Netdata | Server::Telegraf => false,
            // Etsy StatsD 0.9 turns `|#k:v` into the Graphite tagged key
            // `name;k=v` (lib/helpers.js; tests/tests/tagged.rs reads them
            // back from the real daemon); statsd_exporter (DogStatsD,
            // InfluxDB and Librato tags), the agent, Vector, gostatsd.
            Server::Etsy
            | Server::StatsdExporter
            | Server::Datadog
            | Server::Vector
            | Server::Gostatsd => true,
        }
    }

    /// Whether the server keeps `|d` as a distribution (what
    /// `response_size_distribution` sends).
    pub fn reads_distributions(self) -> bool {
        match self {
            // The agent; statsd_exporter maps `d` to an observer; Vector
            // to a distribution.
            Server::Datadog | Server::StatsdExporter | Server::Vector => true,
            // Etsy StatsD sums `d` as a counter (stats.js), netdata's `d`
            // is a "dictionary", Telegraf needs `datadog_distributions`,
            // gostatsd's is experimental, collectd has none.
            Server::Generic
            | Server::Etsy
            | Server::Collectd
            | Server::Netdata
            | Server::Telegraf
            | Server::Gostatsd => false,
        }
    }

    /// Whether the server keeps sets (`|s`), which unique users need.
    pub fn keeps_sets(self) -> bool {
        // statsd_exporter has no set type: its line parser drops `|s`
        // (pkg/line, "no sets at all").
        self != Server::StatsdExporter
    }

    /// Whether a timer value keeps its fraction of a millisecond.
    pub fn keeps_fractional_ms(self) -> bool {
        // collectd keeps latencies as whole milliseconds: 12.7 ms arrives
        // as 12, and a value under 1 ms becomes 0, which its latency
        // counter skips (measured by the compatibility matrix).
        self != Server::Collectd
    }

    /// What the server will not keep, in words, for the log line at start
    /// (empty when it keeps everything we send).
    pub(crate) fn losses(self, timer_cap: usize) -> Vec<&'static str> {
        let mut losses = Vec::new();
        if !self.reads_timer_rates() {
            losses.push(
                "timers are never sampled (every value is a line): the server may misread `|@rate`",
            );
        } else if timer_cap > 0 {
            losses.push(
                "above the timer cap a sample is sent with `|@rate`: counts stay exact, statistics are the sample's",
            );
        }
        if !self.keeps_fractional_ms() {
            losses.push("timer values are kept as whole milliseconds (under 1 ms: 0, not counted)");
        }
        if !self.keeps_sets() {
            losses.push("sets (unique users) are not kept");
        }
        if !self.reads_tags() {
            losses.push(
                "tags are not read: a handler's tagged series of one name are sent merged, \
                 without tags (use hierarchical naming)",
            );
        }
        losses
    }

    /// The server and packing for what was asked: a packing alone picks
    /// the server that reads it (`etsy` → Etsy StatsD, `dogstatsd` → the
    /// Datadog agent, `plain` → generic); a server alone packs as it reads
    /// best; both must agree.
    pub(crate) fn resolve(
        server: Option<Server>,
        protocol: Option<Protocol>,
    ) -> Result<(Server, Protocol), Mismatch> {
        let server = server.unwrap_or(match protocol {
            Some(Protocol::Etsy) => Server::Etsy,
            Some(Protocol::DogStatsd) => Server::Datadog,
            Some(Protocol::Plain) | None => Server::Generic,
        });
        let protocol = protocol.unwrap_or(server.packing());
        if server.reads(protocol) {
            Ok((server, protocol))
        } else {
            Err(Mismatch::Packing(server, protocol))
        }
    }

    /// The timer cap for what was asked (`None`: `default` where the
    /// server reads rates, every value where it does not).
    pub(crate) fn timer_cap(self, asked: Option<usize>, default: usize) -> Result<usize, Mismatch> {
        match asked {
            None if self.reads_timer_rates() => Ok(default),
            None | Some(0) => Ok(0),
            Some(_) if !self.reads_timer_rates() => Err(Mismatch::Sampling(self)),
            Some(cap) => Ok(cap),
        }
    }
}

/// A server asked to read what it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Mismatch {
    /// A packing the server does not read.
    #[error("STATSD_SERVER={0} does not read STATSD_PROTOCOL={1}: leave STATSD_PROTOCOL unset (the server's packing) or use plain")]
    Packing(Server, Protocol),
    /// A timer cap for a server that misreads sampled timers.
    #[error("STATSD_SERVER={0} misreads sampled timers (`|@rate`), so every timer value is sent: leave STATSD_MAX_TIMER_SAMPLES unset or 0, or name a server that reads rates (etsy, telegraf, statsd_exporter, datadog, vector, gostatsd)")]
    Sampling(Server),
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server name `STATSD_SERVER` does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown StatsD server {0:?}: expected generic, etsy, collectd, netdata, telegraf, statsd_exporter, datadog, vector or gostatsd")]
pub struct UnknownServer(pub String);

impl FromStr for Server {
    type Err = UnknownServer;

    /// A name from the table, in any case, around spaces; `-` for `_`.
    /// `graphite-statsd` and `statsd` name Etsy StatsD, `dogstatsd` the
    /// Datadog agent.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let name = text.trim().to_ascii_lowercase().replace('-', "_");
        match name.as_str() {
            "graphite_statsd" | "statsd" => return Ok(Server::Etsy),
            "dogstatsd" => return Ok(Server::Datadog),
            _ => {}
        }
        SERVERS
            .into_iter()
            .find(|server| server.as_str() == name)
            .ok_or_else(|| UnknownServer(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every decision of every profile, one row a server: a change to any
    /// of them fails here first.
    #[test]
    fn every_profile_decision() {
        // (server, packing, rates, tags, distributions, sets, fractions)
        #[rustfmt::skip]
        let table = [
            (Server::Generic, Protocol::Plain, false, false, false, true, true),
            (Server::Etsy, Protocol::Etsy, true, true, false, true, true),
            (Server::Collectd, Protocol::Plain, false, false, false, true, false),
            (Server::Netdata, Protocol::Plain, false, false, false, true, true),
            (Server::Telegraf, Protocol::Etsy, true, false, false, true, true),
            (Server::StatsdExporter, Protocol::Plain, true, true, true, false, true),
            (Server::Datadog, Protocol::DogStatsd, true, true, true, true, true),
            (Server::Vector, Protocol::Plain, true, true, true, true, true),
            (Server::Gostatsd, Protocol::Plain, true, true, false, true, true),
        ];
        assert_eq!(table.map(|row| row.0), SERVERS);
        for (server, packing, rates, tags, dists, sets, fractions) in table {
            let got = (
                server.packing(),
                server.reads_timer_rates(),
                server.reads_tags(),
                server.reads_distributions(),
                server.keeps_sets(),
                server.keeps_fractional_ms(),
            );
            assert_eq!(
                got,
                (packing, rates, tags, dists, sets, fractions),
                "{server}"
            );
            assert!(server.reads(packing), "{server} reads its own packing");
        }
    }

    #[test]
    fn who_reads_which_packing() {
        let readers = |protocol| {
            SERVERS
                .into_iter()
                .filter(|s| s.reads(protocol))
                .collect::<Vec<_>>()
        };
        assert_eq!(readers(Protocol::Plain), SERVERS);
        assert_eq!(readers(Protocol::Etsy), [Server::Etsy, Server::Telegraf]);
        assert_eq!(
            readers(Protocol::DogStatsd),
            [Server::StatsdExporter, Server::Datadog, Server::Gostatsd]
        );
    }

    #[test]
    fn names_round_trip_and_aliases() {
        for server in SERVERS {
            assert_eq!(server.as_str().parse(), Ok(server));
            assert_eq!(server.to_string(), server.as_str());
            assert_eq!(
                format!(" {} ", server.as_str().to_uppercase()).parse(),
                Ok(server)
            );
        }
        assert_eq!("graphite-statsd".parse(), Ok(Server::Etsy));
        assert_eq!("statsd".parse(), Ok(Server::Etsy));
        assert_eq!("DogStatsD".parse(), Ok(Server::Datadog));
        assert_eq!("statsd-exporter".parse(), Ok(Server::StatsdExporter));
        let unknown = "brubeck".parse::<Server>().unwrap_err();
        assert_eq!(unknown, UnknownServer("brubeck".to_owned()));
        assert!(unknown.to_string().contains("statsd_exporter"), "{unknown}");
        assert_eq!(Server::default(), Server::Generic);
    }

    #[test]
    fn a_packing_alone_picks_its_server_and_both_must_agree() {
        let ok = |s, p| Server::resolve(s, p).unwrap();
        assert_eq!(ok(None, None), (Server::Generic, Protocol::Plain));
        assert_eq!(
            ok(None, Some(Protocol::Plain)),
            (Server::Generic, Protocol::Plain)
        );
        assert_eq!(
            ok(None, Some(Protocol::Etsy)),
            (Server::Etsy, Protocol::Etsy)
        );
        assert_eq!(
            ok(None, Some(Protocol::DogStatsd)),
            (Server::Datadog, Protocol::DogStatsd)
        );
        for server in SERVERS {
            assert_eq!(ok(Some(server), None), (server, server.packing()));
            assert_eq!(
                ok(Some(server), Some(Protocol::Plain)),
                (server, Protocol::Plain)
            );
        }
        assert_eq!(
            Server::resolve(Some(Server::Collectd), Some(Protocol::Etsy)),
            Err(Mismatch::Packing(Server::Collectd, Protocol::Etsy))
        );
        let message = Mismatch::Packing(Server::Netdata, Protocol::DogStatsd).to_string();
        assert!(
            message.starts_with("STATSD_SERVER=netdata does not read STATSD_PROTOCOL=dogstatsd"),
            "{message}"
        );
    }

    #[test]
    fn a_timer_cap_only_where_rates_are_read() {
        assert_eq!(Server::Etsy.timer_cap(None, 1_024), Ok(1_024));
        assert_eq!(Server::Etsy.timer_cap(Some(0), 1_024), Ok(0));
        assert_eq!(Server::Etsy.timer_cap(Some(64), 1_024), Ok(64));
        for server in [Server::Generic, Server::Collectd, Server::Netdata] {
            assert_eq!(server.timer_cap(None, 1_024), Ok(0), "{server}");
            assert_eq!(server.timer_cap(Some(0), 1_024), Ok(0), "{server}");
            assert_eq!(
                server.timer_cap(Some(64), 1_024),
                Err(Mismatch::Sampling(server))
            );
        }
        let message = Mismatch::Sampling(Server::Collectd).to_string();
        assert!(
            message.starts_with("STATSD_SERVER=collectd misreads sampled timers"),
            "{message}"
        );
    }

    #[test]
    fn the_start_line_names_what_each_server_loses() {
        let rates =
            "timers are never sampled (every value is a line): the server may misread `|@rate`";
        let sample = "above the timer cap a sample is sent with `|@rate`: counts stay exact, statistics are the sample's";
        let whole = "timer values are kept as whole milliseconds (under 1 ms: 0, not counted)";
        let sets = "sets (unique users) are not kept";
        let tags = "tags are not read: a handler's tagged series of one name are sent merged, without tags (use hierarchical naming)";
        assert_eq!(Server::Generic.losses(0), [rates, tags]);
        assert_eq!(Server::Collectd.losses(0), [rates, whole, tags]);
        assert_eq!(Server::Etsy.losses(1_024), [sample]);
        assert!(Server::Etsy.losses(0).is_empty());
        assert_eq!(Server::Netdata.losses(0), [rates, tags]);
        assert_eq!(Server::StatsdExporter.losses(64), [sample, sets]);
        assert!(Server::Datadog.losses(0).is_empty());
    }
}
