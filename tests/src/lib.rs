//! Support for the end-to-end tests: the real StatsD + Graphite stack on
//! free loopback ports, the built example API, and polling Graphite's render
//! API with a deadline.
//!
//! The stack is the one `scripts/stack` runs for the demo, started here in a
//! temporary directory with 1 s flushes. It is stopped when the [`Stack`] is
//! dropped, and by a watcher if the test process dies first.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod bench;
pub mod demo;
pub mod servers;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A free port on 127.0.0.1, for TCP and UDP alike; never the same one
/// twice in a test process (the kernel may hand a just-released port out
/// again before its first taker binds it).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port)
        {
            return port;
        }
    }
}

/// Polls `check` every 200 ms until it returns `Some`, or panics with the
/// last state it saw once `deadline` has passed.
pub fn poll<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let end = Instant::now() + deadline;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= end => {
                panic!("{what}: not reached within {deadline:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A running StatsD + carbon + graphite-web, on free ports.
#[derive(Debug)]
pub struct Stack {
    dir: PathBuf,
    env: BTreeMap<&'static str, String>,
    /// StatsD's UDP port.
    pub statsd_port: u16,
    /// StatsD's admin (management) TCP port.
    pub admin_port: u16,
    /// graphite-web's HTTP port.
    pub graphite_port: u16,
    http: reqwest::blocking::Client,
}

impl Stack {
    /// Installs (once) and starts a stack flushing every `flush_ms`.
    pub fn start(flush_ms: u64) -> Stack {
        let dir = std::env::temp_dir().join(format!(
            "tower-statsd-e2e-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create the stack directory");
        let mut env = BTreeMap::new();
        env.insert("STACK_DIR", dir.display().to_string());
        env.insert("STACK_FLUSH_MS", flush_ms.to_string());
        // carbon-aggregator is the image's optional relay; the tests read carbon-cache.
        env.insert("STACK_AGGREGATOR", "0".to_owned());
        for name in [
            "STATSD_PORT",
            "STATSD_ADMIN_PORT",
            "CARBON_PORT",
            "CARBON_PICKLE_PORT",
            "CARBON_QUERY_PORT",
            "GRAPHITE_PORT",
        ] {
            env.insert(name, free_port().to_string());
        }
        let port = |name: &str| env[name].parse::<u16>().expect("a port");
        let stack = Stack {
            statsd_port: port("STATSD_PORT"),
            admin_port: port("STATSD_ADMIN_PORT"),
            graphite_port: port("GRAPHITE_PORT"),
            dir,
            env,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        };
        stack.watch_parent();
        stack.run("start");
        stack
    }

    /// The stack for this test binary, started on first use and shared by its
    /// tests (each uses its own metric prefix). The watcher stops it when the
    /// test process exits.
    pub fn shared() -> &'static Stack {
        static STACK: OnceLock<Stack> = OnceLock::new();
        STACK.get_or_init(|| Stack::start(1000))
    }

    /// Stops every daemon of this stack (`scripts/stack stop`); its
    /// directory, data and ports are kept for [`restart`](Self::restart).
    pub fn stop(&self) {
        self.run("stop");
    }

    /// Starts the daemons again with the same directory and ports
    /// (`scripts/stack start`), and waits until they answer.
    pub fn restart(&self) {
        self.run("start");
    }

    /// `scripts/stack <command>` for this instance; panics if it fails.
    fn run(&self, command: &str) {
        let status = self
            .script()
            .arg(command)
            .status()
            .unwrap_or_else(|e| panic!("run scripts/stack {command}: {e}"));
        assert!(
            status.success(),
            "scripts/stack {command} failed ({status}); see its output above"
        );
    }

    fn script(&self) -> Command {
        let mut cmd = Command::new(repo_root().join("scripts/stack"));
        cmd.envs(&self.env);
        cmd
    }

    /// Stops the stack when this process is gone, however it ended.
    fn watch_parent(&self) {
        let script = repo_root().join("scripts/stack");
        let watcher = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; '{script}' stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            script = script.display(),
            dir = self.dir.display(),
        );
        let _ = Command::new("setsid")
            .args(["sh", "-c", &watcher])
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// carbon-cache's plaintext line port (where StatsD flushes).
    pub fn carbon_port(&self) -> u16 {
        self.env["CARBON_PORT"].parse().expect("a port")
    }

    /// Environment for a program that should send to this stack.
    pub fn statsd_env(&self) -> Vec<(String, String)> {
        vec![
            ("STATSD_HOST".into(), "127.0.0.1".into()),
            ("STATSD_PORT".into(), self.statsd_port.to_string()),
            ("STATSD_ADMIN_PORT".into(), self.admin_port.to_string()),
        ]
    }

    /// Sends raw StatsD lines in one datagram.
    pub fn send_raw(&self, payload: &str) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .send_to(payload.as_bytes(), ("127.0.0.1", self.statsd_port))
            .expect("send");
    }

    /// A command on StatsD's admin port (`counters`, `timers`, `gauges`,
    /// `stats`, `health`), its answer up to `END`.
    pub fn admin(&self, command: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.admin_port)).expect("admin port");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(format!("{command}\n").as_bytes())
            .expect("write admin");
        let mut out = String::new();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if line.trim() == "END" || (command == "health" && !line.is_empty()) {
                out.push_str(&line);
                break;
            }
            out.push_str(&line);
            line.clear();
        }
        out
    }

    /// Fails unless the daemon has rejected no line since it started (its
    /// `statsd.bad_lines_seen` counter on the admin port).
    pub fn assert_no_bad_lines(&self) {
        let counters = self.admin("counters");
        assert_eq!(
            admin_value(&counters, "statsd.bad_lines_seen"),
            Some(0.0),
            "{counters}"
        );
    }

    /// Fails unless the daemon holds a timer named each of `keys` (its
    /// admin port's `timers`).
    pub fn assert_timers_held<K: AsRef<str>>(&self, keys: impl IntoIterator<Item = K>) {
        let timers = self.admin("timers");
        for key in keys {
            let key = key.as_ref();
            assert!(
                timers.contains(&format!("'{key}'")),
                "{key} not in {timers}"
            );
        }
    }

    /// What a daemon of this stack logged so far (`carbon-cache`, `statsd`,
    /// `graphite-web`; graphite-web logs every request it answers).
    pub fn log(&self, daemon: &str) -> String {
        std::fs::read_to_string(self.dir.join("log").join(format!("{daemon}.log")))
            .unwrap_or_default()
    }

    /// graphite-web's base URL.
    pub fn graphite_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.graphite_port)
    }

    /// Non-null datapoints of `target` over the last `from` (Graphite's
    /// `from`, e.g. `-5min`), as (timestamp, value).
    pub fn render(&self, target: &str, from: &str) -> Result<Vec<(i64, f64)>, String> {
        let url = format!("{}/render", self.graphite_url());
        let response = self
            .http
            .get(url)
            .query(&[("target", target), ("from", from), ("format", "json")])
            .send()
            .map_err(|e| e.to_string())?;
        let json: Value = response.json().map_err(|e| e.to_string())?;
        let mut points = Vec::new();
        for series in json.as_array().ok_or("render answered no array")? {
            for point in series["datapoints"].as_array().into_iter().flatten() {
                if let (Some(v), Some(t)) = (point[0].as_f64(), point[1].as_i64()) {
                    points.push((t, v));
                }
            }
        }
        Ok(points)
    }

    /// The sum of `target`'s datapoints over the last `from`.
    pub fn render_sum(&self, target: &str, from: &str) -> Result<f64, String> {
        Ok(self.render(target, from)?.iter().map(|(_, v)| v).sum())
    }

    /// Metric paths under `query` (`/metrics/find`), leaves and branches.
    pub fn find(&self, query: &str) -> Result<Vec<String>, String> {
        let url = format!("{}/metrics/find", self.graphite_url());
        let json: Value = self
            .http
            .get(url)
            .query(&[("query", query), ("format", "treejson")])
            .send()
            .and_then(|r| r.json())
            .map_err(|e| e.to_string())?;
        Ok(json
            .as_array()
            .ok_or("find answered no array")?
            .iter()
            .filter_map(|n| n["id"].as_str().map(str::to_owned))
            .collect())
    }

    /// Raw bytes of a render (for `format=png`).
    pub fn render_bytes(&self, query: &[(&str, &str)]) -> Result<(String, Vec<u8>), String> {
        let url = format!("{}/render", self.graphite_url());
        let response = self
            .http
            .get(url)
            .query(query)
            .send()
            .map_err(|e| e.to_string())?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().map_err(|e| e.to_string())?;
        Ok((content_type, bytes.to_vec()))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.script().arg("stop").status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The built `example-api` binary, running with the given environment, killed
/// on drop.
#[derive(Debug)]
pub struct ExampleApi {
    child: Child,
    /// Its base URL.
    pub url: String,
}

/// Builds `example-api` (a no-op when it is up to date) and returns its path.
pub fn example_api_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let output = Command::new(cargo)
                .current_dir(repo_root())
                .args([
                    "build",
                    "-p",
                    "example-api",
                    "--bin",
                    "example-api",
                    "--message-format=json",
                ])
                .stderr(Stdio::inherit())
                .output()
                .expect("run cargo build -p example-api");
            assert!(output.status.success(), "cargo build -p example-api failed");
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .expect("cargo reported the example-api executable")
        })
        .clone()
}

impl ExampleApi {
    /// Starts the API on a free port and waits until it answers.
    pub fn start(env: &[(String, String)]) -> ExampleApi {
        let port = free_port();
        let child = Command::new(example_api_binary())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("API_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start example-api");
        let url = format!("http://127.0.0.1:{port}");
        let api = ExampleApi { child, url };
        poll("example-api listening", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())
        });
        api
    }

    /// Sends SIGTERM and waits for a graceful exit; returns whether it
    /// exited successfully.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for ExampleApi {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A command on a StatsD admin port (`health`, `counters`, `timers`,
/// `stats`, ...), its answer up to `END` (or its first line for `health`).
pub fn admin_command(port: u16, command: &str) -> Result<String, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("admin port {port}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line).map_err(|e| e.to_string())? > 0 {
        out.push_str(&line);
        if line.trim() == "END" || command == "health" {
            return Ok(out);
        }
        line.clear();
    }
    Err(format!("admin port {port}: closed before END: {out:?}"))
}

/// GET `url`, returning the status and the body text.
pub fn get(client: &reqwest::blocking::Client, url: &str) -> (u16, String) {
    let response = client
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let mut body = String::new();
    let _ = response.take(1 << 20).read_to_string(&mut body);
    (status, body)
}

/// The number after `'key': ` in one of the admin port's dumps (Node's
/// `util.inspect` of an object: `'key': value,`), read to its end, so `500`
/// is never taken for `5000`.
pub fn admin_value(dump: &str, key: &str) -> Option<f64> {
    let start = dump.find(&format!("'{key}': "))? + key.len() + 4;
    let rest = &dump[start..];
    let end = rest.find([',', '\n', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// What the bench servers (`src/bin/*`) take: the variant (first argument),
/// the listen address (second argument, `BENCH_ADDR`, or 127.0.0.1:8000) and
/// the number of tokio workers (`BENCH_WORKERS`, default 1).
pub fn bench_args(usage: &str) -> Result<(String, String, usize), String> {
    let mut args = std::env::args().skip(1);
    let variant = args.next().ok_or_else(|| usage.to_owned())?;
    let addr = args
        .next()
        .or_else(|| std::env::var("BENCH_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:8000".to_owned());
    let workers = match std::env::var("BENCH_WORKERS") {
        Ok(v) => v
            .parse::<usize>()
            .map_err(|_| format!("BENCH_WORKERS={v:?} is not a number"))?,
        Err(_) => 1,
    };
    Ok((variant, addr, workers.max(1)))
}

/// Serves `app` on a free loopback port from a runtime of its own, for tests
/// that drive it with a blocking client. Keep the runtime alive as long as
/// the server is needed; the URL has no trailing slash.
pub fn serve(app: axum::Router) -> (tokio::runtime::Runtime, String) {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    runtime.spawn(async move { axum::serve(listener, app).await });
    (runtime, url)
}

/// The README's Rust snippets, compiled by `cargo test` as doctests of this
/// crate (`cargo test -p e2e --doc`), so none of them stops compiling unseen.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
