//! Transports: where finished packets go. Each is a cadence
//! [`MetricSink`], where one [`emit`](MetricSink::emit) call sends one packet.
//!
//! They run on the worker thread of an [`AggregatingSink`](super::AggregatingSink),
//! never on the request path, so a slow DNS lookup or a TCP connect timeout
//! delays metrics, not requests. Errors are returned to the caller (the
//! worker counts them) and never panic.
//!
//! For a Unix datagram socket use cadence's
//! [`UnixMetricSink`](cadence::UnixMetricSink) as the transport.

use std::fmt;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cadence::ext::SocketStats;
use cadence::{MetricSink, SinkStats};

/// Least time between two failed attempts to resolve or connect.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long a resolved address is trusted before it is looked up again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent at every await-free step, so a panic while
    // holding the lock leaves nothing half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn since(at: Option<Instant>, now: Instant) -> Duration {
    at.map_or(Duration::MAX, |at| now.saturating_duration_since(at))
}

/// Sends each packet as one UDP datagram to a host that is looked up lazily.
///
/// Creating it never fails because of the host: in a compose stack the app may
/// start before the StatsD container has a DNS name. Until the host resolves,
/// every packet is an error (counted by the caller) and the lookup is retried
/// at most once per second. Once resolved, the address is looked up again
/// every 30 seconds so a daemon that moved is followed; if that lookup fails
/// the last address is kept.
///
/// # Example
///
/// ```
/// use tower_statsd::sink::UdpSink;
///
/// // Succeeds even if `statsd` does not resolve yet.
/// let transport = UdpSink::new("statsd", 8125, false)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct UdpSink {
    socket: UdpSocket,
    host: String,
    port: u16,
    ipv6: bool,
    target: Mutex<Target>,
    stats: SocketStats,
}

#[derive(Debug, Default)]
struct Target {
    addr: Option<SocketAddr>,
    resolved_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

impl UdpSink {
    /// Binds a local UDP socket (`0.0.0.0:0`, or `[::]:0` when `ipv6`) for
    /// sending to `host:port`. Only the bind can fail; the host is resolved
    /// on the first packet, keeping only IPv6 addresses when `ipv6` and only
    /// IPv4 addresses otherwise.
    pub fn new(host: impl Into<String>, port: u16, ipv6: bool) -> io::Result<UdpSink> {
        let socket = if ipv6 {
            UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?
        } else {
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?
        };
        Ok(UdpSink {
            socket,
            host: host.into(),
            port,
            ipv6,
            target: Mutex::new(Target::default()),
            stats: SocketStats::default(),
        })
    }

    fn addr(&self) -> io::Result<SocketAddr> {
        let mut target = lock(&self.target);
        let now = Instant::now();
        let stale = target.addr.is_none() || since(target.resolved_at, now) >= RESOLVE_EVERY;
        if stale && since(target.attempted_at, now) >= RETRY_AFTER {
            target.attempted_at = Some(now);
            match resolve(&self.host, self.port, |a| a.is_ipv6() == self.ipv6) {
                Ok(addr) => {
                    target.addr = Some(addr);
                    target.resolved_at = Some(now);
                }
                Err(error) => {
                    tracing::debug!(%error, host = %self.host, "statsd host does not resolve");
                }
            }
        }
        target.addr.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "statsd host {}:{} does not resolve (yet); retrying at most once per second",
                    self.host, self.port
                ),
            )
        })
    }
}

fn resolve(host: &str, port: u16, wanted: impl Fn(&SocketAddr) -> bool) -> io::Result<SocketAddr> {
    (host, port).to_socket_addrs()?.find(wanted).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("statsd host {host} has no address of the configured IP family"),
        )
    })
}

impl MetricSink for UdpSink {
    fn emit(&self, packet: &str) -> io::Result<usize> {
        let sent = self
            .addr()
            .and_then(|addr| self.socket.send_to(packet.as_bytes(), addr));
        self.stats.update(sent, packet.len())
    }

    fn stats(&self) -> SinkStats {
        (&self.stats).into()
    }
}

/// Writes each packet to a TCP connection, one line per metric, as statsd's
/// TCP server reads them (it only handles text up to the last `\n`, so every
/// packet ends with one).
///
/// Connects on the first packet. After an error the connection is dropped and
/// re-opened on a later packet, at most once per second; packets in between
/// are errors. Connecting and writing each give up after the
/// [`timeout`](TcpSink::timeout) (1 second by default).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_statsd::sink::TcpSink;
///
/// let transport = TcpSink::new("statsd", 8125).timeout(Duration::from_millis(500));
/// ```
pub struct TcpSink {
    host: String,
    port: u16,
    timeout: Duration,
    state: Mutex<TcpState>,
    stats: SocketStats,
}

#[derive(Default)]
struct TcpState {
    stream: Option<TcpStream>,
    attempted_at: Option<Instant>,
    buf: Vec<u8>,
}

impl fmt::Debug for TcpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpSink")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TcpSink {
    /// A sink for `host:port`; nothing is resolved or connected yet.
    pub fn new(host: impl Into<String>, port: u16) -> TcpSink {
        TcpSink {
            host: host.into(),
            port,
            timeout: Duration::from_secs(1),
            state: Mutex::new(TcpState::default()),
            stats: SocketStats::default(),
        }
    }

    /// How long connecting and each write may take (default 1 second).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in (self.host.as_str(), self.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(stream) => {
                    stream.set_write_timeout(Some(self.timeout))?;
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("statsd host {} has no address", self.host),
            )
        }))
    }

    fn write(&self, packet: &str) -> io::Result<usize> {
        let mut state = lock(&self.state);
        let state = &mut *state;
        let stream = match &mut state.stream {
            Some(stream) => stream,
            None => {
                let now = Instant::now();
                if since(state.attempted_at, now) < RETRY_AFTER {
                    return Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "statsd TCP connection is down; reconnecting at most once per second",
                    ));
                }
                state.attempted_at = Some(now);
                state.stream.insert(self.connect()?)
            }
        };
        state.buf.clear();
        state.buf.extend_from_slice(packet.as_bytes());
        if !packet.ends_with('\n') {
            state.buf.push(b'\n');
        }
        match stream.write_all(&state.buf) {
            Ok(()) => Ok(state.buf.len()),
            Err(error) => {
                state.stream = None;
                Err(error)
            }
        }
    }
}

impl MetricSink for TcpSink {
    fn emit(&self, packet: &str) -> io::Result<usize> {
        let written = self.write(packet);
        self.stats.update(written, packet.len())
    }

    fn stats(&self) -> SinkStats {
        (&self.stats).into()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    use super::*;

    /// The next connection to `listener`, failing the test when none comes
    /// within 5 seconds (a sink that reports a write without connecting must
    /// fail the test, not hang it).
    fn accept(listener: &TcpListener) -> BufReader<TcpStream> {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match listener.accept() {
                Ok((conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    return BufReader::new(conn);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no connection within 5 s");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => panic!("accept: {error}"),
            }
        }
    }

    fn read_line(reader: &mut BufReader<TcpStream>) -> String {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line
    }

    fn udp_server() -> UdpSocket {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        server
    }

    fn recv(server: &UdpSocket) -> String {
        let mut buf = [0; 512];
        let n = server.recv(&mut buf).expect("a datagram within 5 s");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn udp_sends_one_datagram_per_packet() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let port = server.local_addr().unwrap().port();
        let sink = UdpSink::new("127.0.0.1", port, false).unwrap();
        assert_eq!(sink.emit("a:1|c\nb:2|c").unwrap(), 11);
        sink.emit("c:3|ms").unwrap();
        let mut buf = [0; 512];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a:1|c\nb:2|c");
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"c:3|ms");
        assert_eq!(sink.stats().packets_sent, 2);
    }

    #[test]
    fn udp_resolves_localhost_by_name() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let sink = UdpSink::new("localhost", server.local_addr().unwrap().port(), false).unwrap();
        sink.emit("a:1|c").unwrap();
        let mut buf = [0; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a:1|c");
    }

    #[test]
    fn udp_to_an_unresolvable_host_builds_and_errors() {
        let sink = UdpSink::new("no-such-host.invalid", 8125, false).unwrap();
        let error = sink.emit("a:1|c").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        // The second attempt within a second does not look the host up again.
        let started = Instant::now();
        assert!(sink.emit("a:1|c").is_err());
        assert!(started.elapsed() < Duration::from_millis(100));
        let stats = sink.stats();
        assert_eq!((stats.packets_sent, stats.packets_dropped), (0, 2));
    }

    #[test]
    fn udp_ipv6_keeps_only_ipv6_addresses() {
        // Not skipped when the machine has no IPv6: a test that did not run
        // must not pass.
        let sink = UdpSink::new("127.0.0.1", 8125, true)
            .expect("an IPv6 UDP socket (this test needs IPv6 on the machine)");
        assert!(
            sink.emit("a:1|c").is_err(),
            "an IPv4 address is not used by an IPv6 sink"
        );
    }

    #[test]
    fn tcp_writes_lines_and_reconnects() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sink = TcpSink::new("127.0.0.1", port);
        // The bytes written, the added newline included.
        assert_eq!(sink.emit("a:1|c\nb:2|c").unwrap(), 12);
        assert_eq!(sink.emit("c:3|c\n").unwrap(), 6);
        let stats = sink.stats();
        assert_eq!((stats.packets_sent, stats.bytes_sent), (2, 18));
        let mut reader = accept(&listener);
        let lines: Vec<String> = (0..3).map(|_| read_line(&mut reader)).collect();
        assert_eq!(lines, ["a:1|c\n", "b:2|c\n", "c:3|c\n"]);

        // The server goes away: writes fail (perhaps not the very first one),
        // the sink drops the connection and later reconnects.
        drop(reader);
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.emit("lost:1|c").is_ok() {
            assert!(
                Instant::now() < deadline,
                "writes to a closed peer never failed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            sink.emit("x:1|c").unwrap_err().kind(),
            io::ErrorKind::NotConnected,
            "no reconnect within a second of the last attempt"
        );
        std::thread::sleep(RETRY_AFTER);
        assert_eq!(sink.emit("d:4|c").unwrap(), 6);
        assert_eq!(read_line(&mut accept(&listener)), "d:4|c\n");
    }

    #[test]
    fn tcp_debug_names_the_target_and_timeout() {
        let sink = TcpSink::new("statsd", 8125).timeout(Duration::from_millis(500));
        assert_eq!(
            format!("{sink:?}"),
            r#"TcpSink { host: "statsd", port: 8125, timeout: 500ms, .. }"#
        );
    }

    #[test]
    fn udp_keeps_a_resolved_address_30_seconds_then_looks_it_up_again() {
        // The sink is for `new`; an address it resolved earlier (`old`) is
        // planted with its times, so that which server receives the next
        // datagram shows whether the host was looked up again.
        let old = udp_server();
        let new = udp_server();
        let sink = UdpSink::new("127.0.0.1", new.local_addr().unwrap().port(), false).unwrap();
        let ago = |secs| {
            Instant::now()
                .checked_sub(Duration::from_secs(secs))
                .expect("a monotonic clock that started over a minute ago")
        };
        let plant = |resolved: u64, attempted: u64| {
            let mut target = lock(&sink.target);
            target.addr = Some(old.local_addr().unwrap());
            target.resolved_at = Some(ago(resolved));
            target.attempted_at = Some(ago(attempted));
        };

        // Resolved 29 s ago (the last attempt 2 s ago): still trusted.
        plant(29, 2);
        sink.emit("kept:1|c").unwrap();
        assert_eq!(recv(&old), "kept:1|c");
        // Resolved 31 s ago, but looked up less than a second ago (that
        // lookup failed): the last address is kept until a second has passed.
        plant(31, 0);
        sink.emit("waiting:1|c").unwrap();
        assert_eq!(recv(&old), "waiting:1|c");
        // Resolved 31 s ago, last attempt 31 s ago: looked up again.
        plant(31, 31);
        sink.emit("moved:1|c").unwrap();
        assert_eq!(recv(&new), "moved:1|c", "the first datagram `new` receives");
        let target = lock(&sink.target);
        assert_eq!(target.addr, Some(new.local_addr().unwrap()));
        assert!(since(target.resolved_at, Instant::now()) < RESOLVE_EVERY);
    }

    #[test]
    fn tcp_without_a_server_errors_quickly() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sink = TcpSink::new("127.0.0.1", port).timeout(Duration::from_millis(200));
        let started = Instant::now();
        assert!(sink.emit("a:1|c").is_err());
        assert!(sink.emit("a:1|c").is_err());
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(sink.stats().packets_dropped, 2);
    }
}
