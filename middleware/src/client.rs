//! The handle an application keeps: builds the layer, and gives handlers the
//! same client the layer uses, so the tutorial's hand-written calls (`incr`,
//! `count`, `decr`, `gauge`, gauge deltas, `set`, timers) take the same
//! aggregated, non-blocking way to the daemon.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use cadence::{MetricSink, StatsdClient};
use pin_project_lite::pin_project;

use crate::config::{ConfigError, StatsdBuilder, Transport};
use crate::naming::{sanitize_dotted, NamingMode};
use crate::sink::settings::{Settings, DROPPED_METRIC};
use crate::sink::{AggregatingSink, FlushError, Metric, TcpSink, UdpSink, Value};

/// A StatsD client with client-side aggregation, and the factory of
/// [`StatsdLayer`](crate::layer::StatsdLayer)s ([`Statsd::layer`]).
///
/// Cheap to clone; every clone feeds the same background flusher. Dropping
/// the last clone sends what is left and **blocks** until it is written (at
/// most five seconds): drop it after `flush_async().await` in async code. It
/// dereferences to cadence's [`StatsdClient`], so all of cadence's metric
/// traits work on it:
///
/// ```
/// use tower_statsd::prelude::*;
/// use tower_statsd::Statsd;
///
/// let statsd = Statsd::builder().prefix("statstest").build()?;
/// statsd.incr("root.called").ok();             // statstest.root.called:1|c
/// statsd.count("root.called", 10).ok();        // incremented by ten
/// statsd.decr("root.called").ok();
/// statsd.gauge("resources.memory", 4128).ok(); // absolute
/// statsd.gauge_delta("resources.memory", -128.0);
/// statsd.set("user", 123).ok();
/// let answer = statsd.time_fn("work", || 6 * 7); // float ms, like @statsd.timer
/// assert_eq!(answer, 42);
/// # Ok::<(), tower_statsd::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Statsd {
    inner: Arc<Inner>,
}

struct Inner {
    client: StatsdClient,
    sink: AggregatingSink,
    prefix: String,
    naming: NamingMode,
    /// The constant tags, `env:prod,service:api` (empty without any).
    tags: Box<str>,
    /// The layers' default for status classes.
    status_classes: bool,
}

impl std::fmt::Debug for Statsd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statsd")
            .field("prefix", &self.inner.prefix)
            .field("naming", &self.inner.naming)
            .finish_non_exhaustive()
    }
}

impl Statsd {
    /// A builder with pystatsd's defaults.
    pub fn builder() -> StatsdBuilder {
        StatsdBuilder::new()
    }

    /// Built from the `STATSD_*` environment (see [`StatsdBuilder`]).
    ///
    /// A host that does not resolve yet is not an error: it is retried in
    /// the background, and metrics flow once it resolves.
    pub fn from_env() -> Result<Self, ConfigError> {
        StatsdBuilder::from_env()?.build()
    }

    /// The aggregating sink behind this client.
    pub fn sink(&self) -> &AggregatingSink {
        &self.inner.sink
    }

    /// The naming mode of the client's layers.
    pub(crate) fn naming(&self) -> NamingMode {
        self.inner.naming
    }

    /// The constant tags, `env:prod,service:api` (empty without any).
    pub(crate) fn tags(&self) -> &str {
        &self.inner.tags
    }

    /// The layers' default for status classes.
    pub(crate) fn status_classes(&self) -> bool {
        self.inner.status_classes
    }

    /// The prefix, sanitized, without a trailing dot.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Sends everything buffered now and **blocks** until it is written (at
    /// most five seconds). Call it on graceful shutdown, after the server has
    /// stopped taking requests; in async code prefer
    /// [`flush_async`](Self::flush_async). Fails with
    /// [`FlushError::TimedOut`] after five seconds (the flusher is still
    /// sending), or [`FlushError::Closed`] if the flusher is gone.
    ///
    /// It shadows cadence's `StatsdClient::flush`, which `Deref` would reach
    /// otherwise (and [`client`](Self::client) still does): that one asks a
    /// sink to write out its buffer, and reports this sink's wait only as an
    /// `io::Error` inside a `MetricError`. This one waits for the window to
    /// be sent, and says which way it failed.
    ///
    /// ```
    /// use cadence::SpyMetricSink;
    /// use tower_statsd::Statsd;
    ///
    /// let (packets, spy) = SpyMetricSink::new();
    /// let statsd = Statsd::builder().prefix("app").build_with(spy)?;
    /// statsd.timing_ms("work", 0.3);
    /// statsd.flush()?;
    /// assert_eq!(packets.try_recv()?, b"app.work:0.3|ms");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush(&self) -> Result<(), FlushError> {
        self.inner.sink.flush()
    }

    /// Sends everything buffered now; the future is ready (`Ok`) when it is
    /// written, without blocking the executor, or [`FlushError::Closed`] if
    /// the flusher is gone. No time limit of its own: wrap it in your
    /// runtime's timeout.
    ///
    /// ```
    /// # async fn shutdown(statsd: tower_statsd::Statsd) {
    /// if let Err(error) = statsd.flush_async().await {
    ///     eprintln!("metrics not sent: {error}");
    /// }
    /// # }
    /// ```
    pub fn flush_async(&self) -> crate::sink::FlushFuture {
        self.inner.sink.flush_async()
    }

    /// The cadence client behind this handle (also reachable through
    /// `Deref`, so `statsd.count(..)` works with cadence's traits in scope).
    pub fn client(&self) -> &StatsdClient {
        &self.inner.client
    }

    /// Changes a gauge by `delta` (`key:+3|g`) instead of setting it.
    ///
    /// A lost packet makes a delta gauge drift; prefer absolute values.
    pub fn gauge_delta(&self, key: &str, delta: f64) {
        if delta.is_finite() {
            self.record(key, Value::GaugeDelta(delta));
        }
    }

    /// Records a timing in float milliseconds (`key:0.312|ms`), unlike
    /// cadence's `Duration` timer, which truncates to whole milliseconds.
    pub fn timing_ms(&self, key: &str, ms: f64) {
        if ms.is_finite() && ms >= 0.0 {
            self.record(key, Value::Timer { ms, rate: 1.0 });
        }
    }

    /// Times `f` under `key`, in float milliseconds: the role of the
    /// tutorial's `@statsd.timer` decorator. The time is recorded also when
    /// `f` returns an error or panics. (Named so that cadence's
    /// `Timed::time(key, ms)` stays reachable through `Deref`.)
    pub fn time_fn<T>(&self, key: &str, f: impl FnOnce() -> T) -> T {
        let _timer = self.start_timer(key);
        f()
    }

    /// Times a future from its first poll to its completion (or to its drop,
    /// if it never completes), in float milliseconds.
    ///
    /// ```
    /// # async fn demo(statsd: tower_statsd::Statsd) {
    /// let rows = statsd.time_future("db.query", async { 3 }).await;
    /// # }
    /// ```
    pub fn time_future<F: Future>(&self, key: &str, future: F) -> TimedFuture<F> {
        TimedFuture {
            inner: future,
            statsd: self.clone(),
            key: key.into(),
            timer: None,
        }
    }

    /// A guard that records the time from now to its drop under `key`.
    pub fn start_timer(&self, key: &str) -> TimerGuard {
        TimerGuard {
            statsd: self.clone(),
            key: key.into(),
            start: Instant::now(),
        }
    }

    /// Hands `value` to the sink under the prefixed, sanitized `key`, as a
    /// typed metric: nothing formatted here, nothing parsed there.
    fn record(&self, key: &str, value: Value<'_>) {
        let key = sanitize_dotted(key);
        if key.is_empty() {
            // No name left to send under (`"..."`, `""`): dropped and
            // counted, like an invalid line, never sent as `prefix.`.
            self.inner.sink.control().count_dropped(1);
            return;
        }
        let name = if self.inner.prefix.is_empty() {
            key
        } else {
            format!("{}.{key}", self.inner.prefix)
        };
        // Constant tags go on every tagged metric: the handlers' too.
        let tags = match self.inner.naming {
            NamingMode::Tagged => &*self.inner.tags,
            NamingMode::Hierarchical => "",
        };
        self.inner.sink.record(Metric {
            name: &name,
            tags,
            value,
        });
    }
}

impl Deref for Statsd {
    type Target = StatsdClient;

    fn deref(&self) -> &StatsdClient {
        &self.inner.client
    }
}

impl StatsdBuilder {
    /// Starts the background sender on the configured transport and returns
    /// the client.
    ///
    /// Fails only on a configuration that cannot work or when no local socket
    /// can be opened; an unreachable or unresolvable daemon is not an error.
    pub fn build(self) -> Result<Statsd, ConfigError> {
        let settings = self.settings()?;
        match &self.transport {
            Transport::Udp => {
                let udp = UdpSink::new(self.host.clone(), self.port, self.ipv6)?;
                self.start(udp, settings)
            }
            Transport::Tcp => {
                let tcp = TcpSink::new(self.host.clone(), self.port);
                self.start(tcp, settings)
            }
            #[cfg(unix)]
            Transport::Unix(path) => {
                let socket = std::os::unix::net::UnixDatagram::unbound()?;
                let unix = cadence::UnixMetricSink::from(path, socket);
                self.start(unix, settings)
            }
            #[cfg(not(unix))]
            Transport::Unix(_) => Err(ConfigError::Io(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "Unix datagram sockets exist only on Unix",
            ))),
        }
    }

    /// Like [`build`](Self::build), but packets go to `transport`, any cadence
    /// [`MetricSink`] (one `emit` per packet); host, port and transport
    /// settings are ignored.
    ///
    /// ```
    /// use cadence::SpyMetricSink;
    /// use tower_statsd::Statsd;
    ///
    /// let (packets, spy) = SpyMetricSink::new();
    /// let statsd = Statsd::builder().prefix("app").build_with(spy)?;
    /// statsd.timing_ms("work", 0.3);
    /// statsd.flush()?;
    /// assert_eq!(packets.try_recv()?, b"app.work:0.3|ms");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build_with<T>(self, transport: T) -> Result<Statsd, ConfigError>
    where
        T: MetricSink + Send + Sync + 'static,
    {
        let settings = self.settings()?;
        self.start(transport, settings)
    }

    /// Starts the sink with settings validated once, and the client on it.
    fn start<T>(self, transport: T, settings: Settings) -> Result<Statsd, ConfigError>
    where
        T: MetricSink + Send + Sync + 'static,
    {
        let prefix = sanitize_dotted(&self.prefix);
        let dropped = if prefix.is_empty() {
            DROPPED_METRIC.to_owned()
        } else {
            format!("{prefix}.{DROPPED_METRIC}")
        };
        let sink = AggregatingSink::start(Box::new(transport), settings, dropped)?;
        let mut client = StatsdClient::builder(&prefix, sink.clone())
            .with_error_handler(|e| tracing::trace!(error = %e, "metric not recorded"));
        // Constant tags go on every tagged metric: the handlers' too.
        if self.naming == NamingMode::Tagged {
            for (key, value) in &self.tags {
                client = client.with_tag(key, value);
            }
        } else if !self.tags.is_empty() {
            tracing::warn!(
                "constant tags (STATSD_TAGS) go only on tagged metrics: hierarchical names \
                 stay as they are, and only a layer set to NamingMode::Tagged sends them"
            );
        }
        let client = client.build();
        let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        Ok(Statsd {
            inner: Arc::new(Inner {
                client,
                sink,
                prefix,
                naming: self.naming,
                tags: tags.join(",").into(),
                status_classes: self.status_classes,
            }),
        })
    }
}

/// Records the time from its creation to its drop, in float milliseconds;
/// made by [`Statsd::start_timer`]. Dropping it during a panic records too.
#[derive(Debug)]
#[must_use = "the time is recorded when the guard is dropped"]
pub struct TimerGuard {
    statsd: Statsd,
    key: Box<str>,
    start: Instant,
}

impl Drop for TimerGuard {
    fn drop(&mut self) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        self.statsd.timing_ms(&self.key, ms);
    }
}

pin_project! {
    /// A future timed by [`Statsd::time_future`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct TimedFuture<F> {
        #[pin]
        inner: F,
        statsd: Statsd,
        key: Box<str>,
        timer: Option<TimerGuard>,
    }
}

impl<F: Future> Future for TimedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if this.timer.is_none() {
            *this.timer = Some(this.statsd.start_timer(this.key));
        }
        let output = std::task::ready!(this.inner.poll(cx));
        // Recorded here, on completion; a future dropped unfinished records
        // when the guard is dropped with it.
        this.timer.take();
        Poll::Ready(output)
    }
}
