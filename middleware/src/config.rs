//! Configuration: a builder, filled from code or from the environment with
//! pystatsd's `STATSD_*` names and defaults.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::naming::{is_tag_char, NamingMode};
use crate::sink::settings::{Invalid, Requested, Settings};
use crate::sink::{Protocol, Server};

pub use crate::sink::settings::{
    DEFAULT_FLUSH_INTERVAL, DEFAULT_MAX_TIMER_SAMPLES, DEFAULT_MAX_UDP_SIZE, MIN_MAX_UDP_SIZE,
};

/// How packets reach the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Transport {
    /// UDP to `host:port`, the StatsD default. The host is resolved lazily
    /// and again later, so a daemon that is not up yet does not stop the app.
    #[default]
    Udp,
    /// TCP to `host:port` (statsd's `tcp` server), reconnecting after errors.
    Tcp,
    /// A Unix datagram socket at this path.
    Unix(PathBuf),
}

/// What went wrong while building a [`Statsd`](crate::Statsd); each message
/// says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable could not be read.
    #[error("{0}; see the configuration table in the tower-statsd README")]
    Env(String),
    /// An environment variable has a value outside what it accepts.
    #[error("{name}={value:?} is not valid: expected {expected}")]
    InvalidValue {
        /// The variable, `STATSD_IPV6` say.
        name: &'static str,
        /// What it held.
        value: String,
        /// What it accepts.
        expected: &'static str,
    },
    /// No host to send to.
    #[error("the StatsD host is empty: set STATSD_HOST or call `.host(..)` (default: localhost)")]
    EmptyHost,
    /// Port 0 cannot be sent to.
    #[error("the StatsD port is 0: set STATSD_PORT or call `.port(..)` (default: 8125)")]
    ZeroPort,
    /// The packet size (`STATSD_MAXUDPSIZE`, `max_packet_size`, on every
    /// transport) cannot hold a metric line.
    #[error("max packet size {0} is too small: set STATSD_MAXUDPSIZE or call `.max_packet_size(..)` with at least {MIN_MAX_UDP_SIZE} bytes (default: 512; 1432 suits most LANs, 8932 jumbo frames)")]
    MaxUdpSizeTooSmall(usize),
    /// A zero flush interval would busy-loop.
    #[error("the flush interval must be above zero: set STATSD_FLUSH_MS or call `.flush_interval(..)` (default: 1000 ms)")]
    ZeroFlushInterval,
    /// A timer sample too small to stand for any count with powers of two.
    #[error("max timer samples {0} is too small: use 0 (keep every value) or at least 64 (default: 1024); set STATSD_MAX_TIMER_SAMPLES or call `.max_timer_samples(..)`")]
    MaxTimerSamplesTooSmall(usize),
    /// A packing or a timer cap the server cannot read right.
    #[error("{0}")]
    ServerCannotRead(String),
    /// A constant tag that cannot be sent as it is.
    #[error("the tag {tag:?} is not valid: {reason}; tags are key:value pairs of letters, digits, `_`, `-` and `.`, separated by commas (STATSD_TAGS=env:prod,service:api)")]
    InvalidTag {
        /// The tag, `key:value`.
        tag: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A Unix transport without a socket path.
    #[error("STATSD_TRANSPORT=unix needs STATSD_SOCKET, the path of the daemon's datagram socket")]
    MissingSocketPath,
    /// The local socket or the background thread could not be created.
    #[error("could not start the StatsD sender: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds a [`Statsd`](crate::Statsd). Defaults are pystatsd's.
///
/// | setter | env | default |
/// |---|---|---|
/// | [`host`](Self::host) | `STATSD_HOST` | `localhost` |
/// | [`port`](Self::port) | `STATSD_PORT` | `8125` |
/// | [`prefix`](Self::prefix) | `STATSD_PREFIX` | none |
/// | [`max_packet_size`](Self::max_packet_size) | `STATSD_MAXUDPSIZE` | `512` |
/// | [`ipv6`](Self::ipv6) | `STATSD_IPV6` | `0` |
/// | [`flush_interval`](Self::flush_interval) | `STATSD_FLUSH_MS` | `1000` |
/// | [`server`](Self::server) | `STATSD_SERVER` (`generic`, `etsy`, `collectd`, `netdata`, `telegraf`, `statsd_exporter`, `datadog`, `vector`, `gostatsd`) | `generic` |
/// | [`max_timer_samples`](Self::max_timer_samples) | `STATSD_MAX_TIMER_SAMPLES` | `1024` where the server reads rates, else every value |
/// | [`protocol`](Self::protocol) | `STATSD_PROTOCOL` (`plain`, `etsy`, `dogstatsd`) | the server's packing |
/// | [`transport`](Self::transport) | `STATSD_TRANSPORT` (`udp`, `tcp`, `unix`) + `STATSD_SOCKET` | `udp` |
/// | [`naming`](Self::naming) | `STATSD_NAMING` (`hierarchical`, `tagged`) | `hierarchical` |
/// | [`tag`](Self::tag) | `STATSD_TAGS` (`env:prod,service:api`) | none |
/// | [`status_classes`](Self::status_classes) | `STATSD_STATUS_CLASSES` | `0` |
///
/// ```
/// use std::time::Duration;
/// use tower_statsd::Statsd;
///
/// let statsd = Statsd::builder()
///     .host("127.0.0.1")
///     .port(8125)
///     .prefix("statstest")
///     .flush_interval(Duration::from_millis(500))
///     .build()?;
/// # Ok::<(), tower_statsd::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct StatsdBuilder {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) prefix: String,
    pub(crate) ipv6: bool,
    /// The delivery settings as asked for: the sink's own, with its
    /// defaults and rules ([`Requested`]).
    pub(crate) delivery: Requested,
    pub(crate) transport: Transport,
    pub(crate) naming: NamingMode,
    pub(crate) tags: Vec<(String, String)>,
    pub(crate) status_classes: bool,
}

impl Default for StatsdBuilder {
    fn default() -> Self {
        StatsdBuilder {
            host: "localhost".to_owned(),
            port: 8125,
            prefix: String::new(),
            ipv6: false,
            delivery: Requested::default(),
            transport: Transport::Udp,
            naming: NamingMode::Hierarchical,
            tags: Vec::new(),
            status_classes: false,
        }
    }
}

/// The variables, as `envy` reads them (`STATSD_` stripped, lower-cased).
#[derive(Deserialize)]
struct EnvVars {
    host: Option<String>,
    port: Option<u16>,
    prefix: Option<String>,
    maxudpsize: Option<usize>,
    ipv6: Option<String>,
    flush_ms: Option<u64>,
    max_timer_samples: Option<usize>,
    protocol: Option<String>,
    server: Option<String>,
    transport: Option<String>,
    socket: Option<PathBuf>,
    naming: Option<String>,
    tags: Option<String>,
    status_classes: Option<String>,
}

/// Tag keys the layer sets itself.
const RESERVED_TAGS: [&str; 3] = ["route", "method", "status"];

/// `STATSD_TAGS`: `key:value` pairs separated by commas, spaces around them
/// ignored; what each may hold is checked by `validate`.
fn parse_tags(value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .map(|tag| match tag.split_once(':') {
            Some((key, value)) => Ok((key.trim().to_owned(), value.trim().to_owned())),
            None => Err(ConfigError::InvalidValue {
                name: "STATSD_TAGS",
                value: value.to_owned(),
                expected: "key:value pairs separated by commas (env:prod,service:api)",
            }),
        })
        .collect()
}

fn flag(name: &'static str, value: String) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::InvalidValue {
            name,
            value,
            expected: "0 or 1",
        }),
    }
}

impl StatsdBuilder {
    /// A builder with pystatsd's defaults, ignoring the environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder with every `STATSD_*` variable that is set applied on top
    /// of the defaults. Fails with a message naming the variable when one
    /// holds a value it cannot take.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::new().env_vars(std::env::vars())
    }

    /// Applies `STATSD_*` variables from `vars` (what [`from_env`](Self::from_env)
    /// does with the process environment).
    pub fn env_vars<I>(mut self, vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let env: EnvVars = envy::prefixed("STATSD_").from_iter(vars).map_err(|e| {
            // envy names the variable without its prefix.
            let message = e.to_string().replace("provided by ", "provided by STATSD_");
            ConfigError::Env(message)
        })?;
        if let Some(host) = env.host {
            self.host = host;
        }
        if let Some(port) = env.port {
            self.port = port;
        }
        if let Some(prefix) = env.prefix {
            self.prefix = prefix;
        }
        if let Some(size) = env.maxudpsize {
            self.delivery.max_packet_size = size;
        }
        if let Some(v) = env.ipv6 {
            self.ipv6 = flag("STATSD_IPV6", v)?;
        }
        if let Some(ms) = env.flush_ms {
            self.delivery.flush_interval = Duration::from_millis(ms);
        }
        if let Some(n) = env.max_timer_samples {
            self.delivery.max_timer_samples = Some(n);
        }
        if let Some(v) = env.protocol {
            self.delivery.protocol = Some(v.parse().map_err(|_| ConfigError::InvalidValue {
                name: "STATSD_PROTOCOL",
                value: v,
                expected: "plain (every server), etsy (Etsy StatsD, Telegraf) or dogstatsd",
            })?);
        }
        if let Some(v) = env.server {
            self.delivery.server = Some(v.parse().map_err(|_| ConfigError::InvalidValue {
                name: "STATSD_SERVER",
                value: v,
                expected: "generic, etsy, collectd, netdata, telegraf, statsd_exporter, datadog, vector or gostatsd",
            })?);
        }
        if let Some(v) = env.transport {
            self.transport = match v.trim().to_ascii_lowercase().as_str() {
                "udp" | "" => Transport::Udp,
                "tcp" => Transport::Tcp,
                "unix" => Transport::Unix(env.socket.ok_or(ConfigError::MissingSocketPath)?),
                _ => {
                    return Err(ConfigError::InvalidValue {
                        name: "STATSD_TRANSPORT",
                        value: v,
                        expected: "udp, tcp or unix",
                    })
                }
            };
        }
        if let Some(v) = env.naming {
            self.naming = match v.trim().to_ascii_lowercase().as_str() {
                "hierarchical" | "" => NamingMode::Hierarchical,
                "tagged" => NamingMode::Tagged,
                _ => {
                    return Err(ConfigError::InvalidValue {
                        name: "STATSD_NAMING",
                        value: v,
                        expected: "hierarchical or tagged",
                    })
                }
            };
        }
        if let Some(v) = env.tags {
            self.tags = parse_tags(&v)?;
        }
        if let Some(v) = env.status_classes {
            self.status_classes = flag("STATSD_STATUS_CLASSES", v)?;
        }
        Ok(self)
    }

    /// The daemon's host name or address (default `localhost`).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// The daemon's port (default `8125`).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Prepended to every name with a dot (default none; the tutorial uses
    /// `statstest`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Largest packet sent, in bytes (default 512, pystatsd's
    /// `STATSD_MAXUDPSIZE`; at least [`MIN_MAX_UDP_SIZE`], or `build` fails
    /// with [`ConfigError::MaxUdpSizeTooSmall`]).
    pub fn max_packet_size(mut self, size: usize) -> Self {
        self.delivery.max_packet_size = size;
        self
    }

    /// Resolve the host to an IPv6 address (default `false`).
    pub fn ipv6(mut self, ipv6: bool) -> Self {
        self.ipv6 = ipv6;
        self
    }

    /// How long metrics are aggregated before they are sent (default 1 s).
    /// Keep it at or below the daemon's own flush interval.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.delivery.flush_interval = interval;
        self
    }

    /// Values kept per timer and window (default 1 024 where the
    /// [`server`](Self::server) reads sample rates on timers; every value
    /// where it does not, the generic default included). 0 keeps every
    /// value, otherwise at least 64. Beyond it a uniform sample is sent,
    /// with sample rates that keep the daemon's `count` exact and with the
    /// window's minimum and maximum always in it; the daemon's `sum` and
    /// `mean` are then the sample's. A cap for a server that misreads rates
    /// is an error ([`ConfigError::ServerCannotRead`]).
    pub fn max_timer_samples(mut self, values: usize) -> Self {
        self.delivery.max_timer_samples = Some(values);
        self
    }

    /// How the values of one name are packed on the wire (default: the
    /// [`server`](Self::server)'s packing). A lower-level override: on its
    /// own it also names the server ([`Protocol::Etsy`]: Etsy StatsD,
    /// [`Protocol::DogStatsd`]: the Datadog agent, [`Protocol::Plain`]:
    /// generic); with a server it must be one that server reads. Counters
    /// are summed and set members de-duplicated per window in every dialect.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.delivery.protocol = Some(protocol);
        self
    }

    /// Which StatsD server the packets go to (default [`Server::Generic`]:
    /// only what every server reads the same way, so every timer value is
    /// sent). Naming it lets the client pack and sample for it; see
    /// [`Server`] for what each profile decides.
    pub fn server(mut self, server: Server) -> Self {
        self.delivery.server = Some(server);
        self
    }

    /// UDP (default), TCP or a Unix datagram socket.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Hierarchical names (default) or one tagged metric.
    pub fn naming(mut self, naming: NamingMode) -> Self {
        self.naming = naming;
        self
    }

    /// Adds a constant tag, `key:value`, to every metric sent with tags
    /// (tagged naming; hierarchical names never change, so there it is not
    /// sent). Keys and values take letters, digits, `_`, `-` and `.`; the
    /// keys `route`, `method` and `status` are the layer's own. `STATSD_TAGS`
    /// (`env:prod,service:api`) replaces the tags set before it is read.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Counts responses by status class (`status.2xx`) in the layers this
    /// client makes (default off); a layer's own
    /// [`status_classes`](crate::StatsdLayer::status_classes) overrides it.
    pub fn status_classes(mut self, on: bool) -> Self {
        self.status_classes = on;
        self
    }

    /// The delivery settings, validated by the sink's rules (the same for
    /// both builders), and the checks of this builder's own settings.
    pub(crate) fn settings(&self) -> Result<Settings, ConfigError> {
        if !matches!(self.transport, Transport::Unix(_)) {
            if self.host.trim().is_empty() {
                return Err(ConfigError::EmptyHost);
            }
            if self.port == 0 {
                return Err(ConfigError::ZeroPort);
            }
        }
        let settings = self.delivery.clone().validate()?;
        if self.naming == NamingMode::Tagged && !settings.server.reads_tags() {
            return Err(ConfigError::ServerCannotRead(format!(
                "STATSD_SERVER={} does not read tags: use STATSD_NAMING=hierarchical, \
                 or name a server that reads them (etsy, statsd_exporter, datadog, vector, \
                 gostatsd)",
                settings.server
            )));
        }
        for (at, (key, value)) in self.tags.iter().enumerate() {
            let invalid = |reason| ConfigError::InvalidTag {
                tag: format!("{key}:{value}"),
                reason,
            };
            if key.is_empty() || value.is_empty() {
                return Err(invalid("a key and a value are needed"));
            }
            if !key.chars().chain(value.chars()).all(is_tag_char) {
                return Err(invalid("it has a character outside those"));
            }
            if RESERVED_TAGS.contains(&key.as_str()) {
                return Err(invalid("route, method and status are the layer's own tags"));
            }
            if self.tags[..at].iter().any(|(k, _)| k == key) {
                return Err(invalid("its key is given twice"));
            }
        }
        Ok(settings)
    }

    #[cfg(test)]
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.settings().map(drop)
    }

    /// The server, its packing and the timer cap, as resolved from what was
    /// set ([`Server`]'s rules).
    #[cfg(test)]
    pub(crate) fn profile(&self) -> Result<(Server, Protocol, usize), ConfigError> {
        let s = self.settings()?;
        Ok((s.server, s.protocol, s.timer_cap))
    }
}

/// Each refusal of the sink's rules, in this builder's words.
impl From<Invalid> for ConfigError {
    fn from(invalid: Invalid) -> Self {
        match invalid {
            Invalid::PacketSizeTooSmall(size) => ConfigError::MaxUdpSizeTooSmall(size),
            Invalid::ZeroFlushInterval => ConfigError::ZeroFlushInterval,
            Invalid::TimerSamplesTooSmall(cap) => ConfigError::MaxTimerSamplesTooSmall(cap),
            Invalid::Server(mismatch) => ConfigError::ServerCannotRead(mismatch.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<StatsdBuilder, ConfigError> {
        StatsdBuilder::new().env_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn pystatsd_names_and_defaults() {
        let b = env(&[]).unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.delivery.max_packet_size, b.ipv6),
            ("localhost", 8125, 512, false)
        );
        let b = env(&[
            ("STATSD_HOST", "graphite"),
            ("STATSD_PORT", "9125"),
            ("STATSD_PREFIX", "statstest"),
            ("STATSD_MAXUDPSIZE", "1432"),
            ("STATSD_IPV6", "1"),
            ("STATSD_FLUSH_MS", "250"),
            ("STATSD_NAMING", "tagged"),
            ("STATSD_MAX_TIMER_SAMPLES", "0"),
            ("STATSD_PROTOCOL", " Etsy "),
            ("UNRELATED", "x"),
        ])
        .unwrap();
        assert_eq!(b.host, "graphite");
        assert_eq!(b.port, 9125);
        assert_eq!(b.prefix, "statstest");
        assert_eq!(b.delivery.max_packet_size, 1432);
        assert!(b.ipv6);
        assert_eq!(b.delivery.flush_interval, Duration::from_millis(250));
        assert_eq!(b.naming, NamingMode::Tagged);
        assert_eq!(b.delivery.max_timer_samples, Some(0));
        assert_eq!(b.delivery.protocol, Some(Protocol::Etsy));
        // Unset: the server decides (the generic one: plain, every value).
        let b = env(&[]).unwrap();
        assert_eq!(
            (
                b.delivery.server,
                b.delivery.protocol,
                b.delivery.max_timer_samples
            ),
            (None, None, None)
        );
        assert_eq!(b.profile().unwrap(), (Server::Generic, Protocol::Plain, 0));
        let b = env(&[("STATSD_SERVER", " Graphite-StatsD ")]).unwrap();
        assert_eq!(b.profile().unwrap(), (Server::Etsy, Protocol::Etsy, 1024));
    }

    #[test]
    fn bad_values_say_what_to_fix() {
        let e = env(&[("STATSD_PORT", "eighty")]).unwrap_err().to_string();
        assert!(e.contains("STATSD_PORT") || e.contains("port"), "{e}");
        let e = env(&[("STATSD_IPV6", "maybe")]).unwrap_err().to_string();
        assert!(e.contains("STATSD_IPV6") && e.contains("0 or 1"), "{e}");
        let e = env(&[("STATSD_PROTOCOL", "graphite")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("STATSD_PROTOCOL") && e.contains("dogstatsd"),
            "{e}"
        );
        let e = env(&[("STATSD_TRANSPORT", "unix")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("STATSD_SOCKET"), "{e}");
        let e = env(&[("STATSD_SERVER", "brubeck")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "STATSD_SERVER=\"brubeck\" is not valid: expected generic, etsy, collectd, netdata, \
             telegraf, statsd_exporter, datadog, vector or gostatsd"
        );
        let e = StatsdBuilder::new()
            .max_packet_size(10)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 64"), "{e}");
        let e = StatsdBuilder::new()
            .max_timer_samples(10)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("STATSD_MAX_TIMER_SAMPLES") && e.contains("at least 64"),
            "{e}"
        );
        assert!(matches!(
            StatsdBuilder::new().host(" ").validate(),
            Err(ConfigError::EmptyHost)
        ));
    }

    /// Every field of a builder, to compare whole builders.
    fn fields(b: &StatsdBuilder) -> String {
        format!("{b:?}")
    }

    #[test]
    fn each_setter_sets_its_field_and_only_it() {
        let b = StatsdBuilder::new()
            .host("graphite")
            .port(9125)
            .prefix("statstest")
            .max_packet_size(1432)
            .ipv6(true)
            .flush_interval(Duration::from_millis(250))
            .max_timer_samples(64)
            .protocol(Protocol::DogStatsd)
            .server(Server::StatsdExporter)
            .transport(Transport::Tcp)
            .naming(NamingMode::Tagged)
            .tag("env", "prod")
            .status_classes(true);
        assert_eq!(
            fields(&b),
            "StatsdBuilder { host: \"graphite\", port: 9125, prefix: \"statstest\", ipv6: true, \
             delivery: Requested { flush_interval: 250ms, max_packet_size: 1432, \
             max_buffered_values: 4096, max_timer_samples: Some(64), protocol: Some(DogStatsd), \
             server: Some(StatsdExporter) }, transport: Tcp, naming: Tagged, \
             tags: [(\"env\", \"prod\")], status_classes: true }"
        );
        // The same values read from the environment make the same builder.
        let from_env = env(&[
            ("STATSD_HOST", "graphite"),
            ("STATSD_PORT", "9125"),
            ("STATSD_PREFIX", "statstest"),
            ("STATSD_MAXUDPSIZE", "1432"),
            ("STATSD_IPV6", "1"),
            ("STATSD_FLUSH_MS", "250"),
            ("STATSD_MAX_TIMER_SAMPLES", "64"),
            ("STATSD_PROTOCOL", "dogstatsd"),
            ("STATSD_SERVER", "statsd_exporter"),
            ("STATSD_TRANSPORT", "tcp"),
            ("STATSD_NAMING", "tagged"),
            ("STATSD_TAGS", "env:prod"),
            ("STATSD_STATUS_CLASSES", "1"),
        ])
        .unwrap();
        assert_eq!(fields(&from_env), fields(&b));
        assert_eq!(
            fields(&StatsdBuilder::new()),
            "StatsdBuilder { host: \"localhost\", port: 8125, prefix: \"\", ipv6: false, \
             delivery: Requested { flush_interval: 1s, max_packet_size: 512, \
             max_buffered_values: 4096, max_timer_samples: None, protocol: None, server: None }, \
             transport: Udp, naming: Hierarchical, tags: [], status_classes: false }"
        );
    }

    #[test]
    fn every_spelling_of_a_flag() {
        let classes = |v: &str| {
            StatsdBuilder::new()
                .env_vars([("STATSD_STATUS_CLASSES".to_owned(), v.to_owned())])
                .map(|b| b.status_classes)
        };
        assert!(classes("1").unwrap());
        assert!(
            !StatsdBuilder::new()
                .status_classes(true)
                .env_vars([("STATSD_STATUS_CLASSES".to_owned(), "0".to_owned())])
                .unwrap()
                .status_classes
        );
        let e = classes("2xx").unwrap_err().to_string();
        assert_eq!(
            e,
            "STATSD_STATUS_CLASSES=\"2xx\" is not valid: expected 0 or 1"
        );
        for on in ["1", "true", "YES", " on "] {
            let b = StatsdBuilder::new().env_vars([("STATSD_IPV6".to_owned(), on.to_owned())]);
            assert!(b.unwrap().ipv6, "{on:?}");
        }
        for off in ["0", "false", "No", "off", ""] {
            // Over a builder set to IPv6: the variable turns it off.
            let b = StatsdBuilder::new()
                .ipv6(true)
                .env_vars([("STATSD_IPV6".to_owned(), off.to_owned())]);
            assert!(!b.unwrap().ipv6, "{off:?}");
        }
    }

    #[test]
    fn every_transport_and_naming_from_the_environment() {
        // Each over a builder set otherwise, so that the variable is what
        // sets it.
        let tcp = || StatsdBuilder::new().transport(Transport::Tcp);
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        for udp in ["udp", " UDP ", ""] {
            let b = tcp().env_vars(vars(&[("STATSD_TRANSPORT", udp)])).unwrap();
            assert_eq!(b.transport, Transport::Udp, "{udp:?}");
        }
        let b = env(&[("STATSD_TRANSPORT", "Tcp")]).unwrap();
        assert_eq!(b.transport, Transport::Tcp);
        let b = tcp()
            .env_vars(vars(&[
                ("STATSD_TRANSPORT", "unix"),
                ("STATSD_SOCKET", "/run/statsd.sock"),
            ]))
            .unwrap();
        assert_eq!(b.transport, Transport::Unix("/run/statsd.sock".into()));
        let e = env(&[("STATSD_TRANSPORT", "pigeon")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "STATSD_TRANSPORT=\"pigeon\" is not valid: expected udp, tcp or unix"
        );

        let tagged = || StatsdBuilder::new().naming(NamingMode::Tagged);
        for hierarchical in ["hierarchical", "Hierarchical", ""] {
            let b = tagged()
                .env_vars(vars(&[("STATSD_NAMING", hierarchical)]))
                .unwrap();
            assert_eq!(b.naming, NamingMode::Hierarchical, "{hierarchical:?}");
        }
        let b = env(&[("STATSD_NAMING", " TAGGED ")]).unwrap();
        assert_eq!(b.naming, NamingMode::Tagged);
        let e = env(&[("STATSD_NAMING", "flat")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "STATSD_NAMING=\"flat\" is not valid: expected hierarchical or tagged"
        );
    }

    #[test]
    fn an_unreadable_variable_is_named_with_its_prefix() {
        let e = env(&[("STATSD_PORT", "eighty")]).unwrap_err();
        assert!(matches!(e, ConfigError::Env(_)), "{e:?}");
        let message = e.to_string();
        assert!(message.contains("provided by STATSD_PORT"), "{message}");
        assert!(
            message.ends_with("; see the configuration table in the tower-statsd README"),
            "{message}"
        );
    }

    #[test]
    fn validate_accepts_the_limits_and_refuses_beyond_them() {
        let ok = |b: StatsdBuilder| b.validate().map_err(|e| e.to_string());
        assert_eq!(ok(StatsdBuilder::new()), Ok(()));
        assert!(matches!(
            StatsdBuilder::new().host("").validate(),
            Err(ConfigError::EmptyHost)
        ));
        assert!(matches!(
            StatsdBuilder::new().port(0).validate(),
            Err(ConfigError::ZeroPort)
        ));
        assert_eq!(ok(StatsdBuilder::new().port(1)), Ok(()));
        // A Unix socket needs neither host nor port.
        let unix = StatsdBuilder::new()
            .host("")
            .port(0)
            .transport(Transport::Unix("/run/statsd.sock".into()));
        assert_eq!(ok(unix), Ok(()));
        assert!(matches!(
            StatsdBuilder::new()
                .transport(Transport::Tcp)
                .port(0)
                .validate(),
            Err(ConfigError::ZeroPort)
        ));

        assert!(matches!(
            StatsdBuilder::new().max_packet_size(63).validate(),
            Err(ConfigError::MaxUdpSizeTooSmall(63))
        ));
        assert_eq!(ok(StatsdBuilder::new().max_packet_size(64)), Ok(()));
        assert_eq!(ok(StatsdBuilder::new().max_packet_size(65_535)), Ok(()));

        assert!(matches!(
            StatsdBuilder::new()
                .flush_interval(Duration::ZERO)
                .validate(),
            Err(ConfigError::ZeroFlushInterval)
        ));
        assert_eq!(
            ok(StatsdBuilder::new().flush_interval(Duration::from_nanos(1))),
            Ok(())
        );

        for too_small in [1, 63] {
            assert!(matches!(
                StatsdBuilder::new().max_timer_samples(too_small).validate(),
                Err(ConfigError::MaxTimerSamplesTooSmall(n)) if n == too_small
            ));
        }
        for fine in [0, 64] {
            let etsy = StatsdBuilder::new().server(Server::Etsy);
            assert_eq!(ok(etsy.max_timer_samples(fine)), Ok(()));
        }
        assert_eq!(ok(StatsdBuilder::new().max_timer_samples(0)), Ok(()));
    }

    #[test]
    fn what_the_server_cannot_read_is_refused_saying_why() {
        let refused = |b: StatsdBuilder| match b.validate() {
            Err(ConfigError::ServerCannotRead(why)) => why,
            other => panic!("{other:?}"),
        };
        // A cap means sampled timers with `|@rate`: not for the generic
        // default, collectd or netdata.
        for server in [None, Some(Server::Collectd), Some(Server::Netdata)] {
            let mut b = StatsdBuilder::new().max_timer_samples(64);
            b.delivery.server = server;
            let why = refused(b);
            assert!(why.contains("misreads sampled timers"), "{why}");
        }
        let why = refused(
            StatsdBuilder::new()
                .server(Server::Collectd)
                .protocol(Protocol::Etsy),
        );
        assert!(
            why.starts_with("STATSD_SERVER=collectd does not read STATSD_PROTOCOL=etsy"),
            "{why}"
        );
        let why = refused(
            StatsdBuilder::new()
                .server(Server::Collectd)
                .naming(NamingMode::Tagged),
        );
        assert!(
            why.starts_with(
                "STATSD_SERVER=collectd does not read tags: use STATSD_NAMING=hierarchical"
            ),
            "{why}"
        );
        // Tags for the generic default are refused too: not every server
        // reads them. A server that reads them takes them.
        let why = refused(StatsdBuilder::new().naming(NamingMode::Tagged));
        assert!(
            why.starts_with("STATSD_SERVER=generic does not read tags"),
            "{why}"
        );
        let ok = |b: StatsdBuilder| b.validate().map_err(|e| e.to_string());
        for server in [Server::Datadog, Server::Etsy] {
            let tagged = StatsdBuilder::new()
                .server(server)
                .naming(NamingMode::Tagged);
            assert_eq!(ok(tagged), Ok(()), "{server}");
        }
        // A packing alone names its server, which may sample.
        let etsy = StatsdBuilder::new()
            .protocol(Protocol::Etsy)
            .max_timer_samples(64);
        assert_eq!(etsy.profile().unwrap(), (Server::Etsy, Protocol::Etsy, 64));
    }

    #[test]
    fn constant_tags_from_the_environment_and_the_builder() {
        let b = env(&[("STATSD_TAGS", " env:prod , service:api,,version:1.2.3 ")]).unwrap();
        assert_eq!(
            b.tags,
            [("env", "prod"), ("service", "api"), ("version", "1.2.3")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(b.validate().map_err(|e| e.to_string()), Ok(()));
        // The variable replaces what the builder had; empty, it clears.
        let tagged = || StatsdBuilder::new().tag("team", "web");
        let b = tagged()
            .env_vars([("STATSD_TAGS".to_owned(), "env:prod".to_owned())])
            .unwrap();
        assert_eq!(b.tags, [("env".to_owned(), "prod".to_owned())]);
        let b = tagged()
            .env_vars([("STATSD_TAGS".to_owned(), String::new())])
            .unwrap();
        assert!(b.tags.is_empty());

        let e = env(&[("STATSD_TAGS", "env:prod,oops")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "STATSD_TAGS=\"env:prod,oops\" is not valid: expected key:value pairs separated \
             by commas (env:prod,service:api)"
        );
        let refused = |tags: &str| {
            let b = env(&[("STATSD_TAGS", tags)]).unwrap();
            match b.validate() {
                Err(e @ ConfigError::InvalidTag { .. }) => e.to_string(),
                other => panic!("{tags}: {other:?}"),
            }
        };
        assert_eq!(
            refused("env:prod|x"),
            "the tag \"env:prod|x\" is not valid: it has a character outside those; tags are \
             key:value pairs of letters, digits, `_`, `-` and `.`, separated by commas \
             (STATSD_TAGS=env:prod,service:api)"
        );
        assert!(refused("e|nv:prod").contains("a character outside"));
        assert!(refused("env:").contains("a key and a value are needed"));
        assert!(refused(":prod").contains("a key and a value are needed"));
        assert!(refused("env:a:b").contains("a character outside"));
        for reserved in ["route:x", "method:x", "status:x"] {
            assert!(refused(reserved).contains("the layer's own"), "{reserved}");
        }
        assert!(refused("env:a,env:b").contains("given twice"));
        assert!(refused("env:a,x:y,env:b").contains("given twice"));
        assert_eq!(
            StatsdBuilder::new()
                .tag("a", "1")
                .tag("b", "2")
                .validate()
                .map_err(|e| e.to_string()),
            Ok(())
        );
    }
}
