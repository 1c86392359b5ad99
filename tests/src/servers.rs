//! The other StatsD servers of the compatibility matrix, and statsd's own
//! `proxy.js`: each started by a test on free loopback ports with a private
//! configuration in a temporary directory, read back through its own
//! output, and stopped on drop (or by a watcher if the test process dies).
//!
//! - [`Collectd`]: collectd 5.12's `statsd` plugin (Debian `collectd-core`),
//!   `collectd -f -C conf` with only the `logfile`, `statsd` and `csv`
//!   plugins; values are read from the CSV files it writes every second.
//! - [`Netdata`]: netdata 1.37's statsd server (Debian `netdata-core`),
//!   `netdata -D -c conf` with every other plugin off; values are read from
//!   its `/api/v1/data`.
//! - [`StatsdDaemon`] and [`StatsdProxy`]: a second Etsy StatsD 0.9.0 writing
//!   to a stack's carbon, and `proxy.js` hashing metric names over daemons.
//!
//! `scripts/servers install` installs collectd and netdata (as root) and
//! keeps them from running as system services.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::{free_port, poll, repo_root};

/// Runs `scripts/servers install` once per test process; panics if it fails.
pub fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let status = Command::new(repo_root().join("scripts/servers"))
            .arg("install")
            .status()
            .expect("run scripts/servers install");
        assert!(
            status.success(),
            "scripts/servers install failed ({status})"
        );
    });
}

/// What `scripts/servers versions` prints, one server a line.
pub fn versions() -> String {
    let out = Command::new(repo_root().join("scripts/servers"))
        .arg("versions")
        .output()
        .expect("run scripts/servers versions");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A fresh directory under the system's temporary directory.
fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tower-statsd-{what}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// Kills `child` when this test process is gone, however it ended.
fn watch(child: u32) {
    let watcher = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill -TERM {child} 2>/dev/null",
        parent = std::process::id(),
    );
    let _ = Command::new("setsid")
        .args(["sh", "-c", &watcher])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// A server process with its directory, stopped (TERM, then KILL) and
/// cleaned up on drop.
#[derive(Debug)]
struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Daemon {
    fn spawn(mut command: Command, dir: PathBuf, log: &Path) -> Daemon {
        let out = std::fs::File::create(log).expect("create the output log");
        let err = out.try_clone().expect("clone the log handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        watch(child.id());
        Daemon { child, dir }
    }

    fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("exited during start-up ({status})")),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- collectd

/// collectd with its `statsd` plugin on a free loopback UDP port, writing
/// every metric to CSV files once a second.
#[derive(Debug)]
pub struct Collectd {
    daemon: Daemon,
    /// The statsd plugin's UDP port (collectd has no TCP listener).
    pub port: u16,
}

impl Collectd {
    /// The exact configuration the tests run with.
    pub fn config(dir: &Path, port: u16) -> String {
        let dir = dir.display();
        format!(
            r#"# Private configuration of tests/src/servers.rs: logfile, statsd and csv only.
Hostname "matrix"
FQDNLookup false
Interval 1
BaseDir "{dir}"
PIDFile "{dir}/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "{dir}/collectd.log"
  Timestamp true
</Plugin>
LoadPlugin statsd
<Plugin statsd>
  Host "127.0.0.1"
  Port "{port}"
  TimerCount true
  TimerLower true
  TimerUpper true
  TimerSum true
  TimerPercentile 90
</Plugin>
LoadPlugin csv
<Plugin csv>
  DataDir "{dir}/csv"
  StoreRates false
</Plugin>
"#
        )
    }

    /// Installs (once) and starts collectd; waits until the plugin listens.
    pub fn start() -> Collectd {
        install();
        let dir = temp_dir("collectd");
        let port = free_port();
        let conf = dir.join("collectd.conf");
        std::fs::write(&conf, Self::config(&dir, port)).expect("write collectd.conf");
        let mut command = Command::new("collectd");
        command.arg("-f").arg("-C").arg(&conf);
        let mut collectd = Collectd {
            daemon: Daemon::spawn(command, dir.clone(), &dir.join("stdout.log")),
            port,
        };
        let listening = format!("Listening on [127.0.0.1]:{port}");
        poll(
            "collectd's statsd plugin listening",
            Duration::from_secs(20),
            || {
                collectd.daemon.alive()?;
                let log = collectd.log();
                log.contains(&listening).then_some(()).ok_or(log)
            },
        );
        collectd
    }

    /// What collectd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.daemon.dir.join("collectd.log")).unwrap_or_default()
    }

    /// The names of the CSV files collectd wrote, date suffixes included.
    pub fn csv_names(&self) -> Vec<String> {
        let dir = self.daemon.dir.join("csv/matrix/statsd");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// The values collectd wrote for `name` (a CSV file name without its
    /// date suffix, e.g. `derive-app.root.called`, `gauge-app.root-count`),
    /// in time order; `None` until the file exists.
    pub fn csv(&self, name: &str) -> Option<Vec<f64>> {
        let dir = self.daemon.dir.join("csv/matrix/statsd");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix(name))
                    .is_some_and(|date| date.len() == 11 && date.starts_with('-'))
            })
            .collect();
        if files.is_empty() {
            return None;
        }
        files.sort();
        let mut values = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            // A row is `epoch,value`; the last one may still be half written.
            for line in text.lines().skip(1) {
                if let Some((_, v)) = line.split_once(',') {
                    if let Ok(v) = v.parse::<f64>() {
                        values.push(v);
                    }
                }
            }
        }
        Some(values)
    }
}

// ---------------------------------------------------------------- netdata

/// netdata with only its statsd server, on free loopback ports (UDP and TCP
/// for statsd, HTTP for the API).
#[derive(Debug)]
pub struct Netdata {
    daemon: Daemon,
    /// The statsd server's port, UDP and TCP.
    pub port: u16,
    /// The web API's port.
    pub web_port: u16,
    http: reqwest::blocking::Client,
}

impl Netdata {
    /// The exact configuration the tests run with.
    pub fn config(dir: &Path, port: u16, web_port: u16) -> String {
        let dir = dir.display();
        format!(
            r#"# Private configuration of tests/src/servers.rs: the statsd server alone.
[global]
	run as user = root
	hostname = matrix
	update every = 1
	memory mode = ram
[directories]
	config = {dir}
	stock config = /usr/lib/netdata/conf.d
	cache = {dir}/cache
	lib = {dir}/lib
	log = {dir}/log
	lock = {dir}/lib
	home = {dir}
	web = {dir}/web
[logs]
	debug log = none
	error = {dir}/log/error.log
	access = none
	health log = none
[web]
	mode = static-threaded
	bind to = 127.0.0.1:{web_port}
[plugins]
	enable running new plugins = no
	proc = no
	diskspace = no
	cgroups = no
	tc = no
	idlejitter = no
	checks = no
	apps = no
	python.d = no
	charts.d = no
	go.d = no
	ebpf = no
	timex = no
	statsd = yes
[health]
	enabled = no
[ml]
	enabled = no
[registry]
	enabled = no
[statsd]
	enabled = yes
	update every (flushInterval) = 1
	bind to = udp:127.0.0.1:{port} tcp:127.0.0.1:{port}
	decimal detail = 1000
	add dimension for number of events received = yes
"#
        )
    }

    /// Installs (once) and starts netdata; waits until its API answers and
    /// its statsd server listens.
    pub fn start() -> Netdata {
        install();
        let dir = temp_dir("netdata");
        for sub in ["cache", "lib", "log", "web", "statsd.d"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create netdata's directories");
        }
        let port = free_port();
        let web_port = free_port();
        let conf = dir.join("netdata.conf");
        std::fs::write(&conf, Self::config(&dir, port, web_port)).expect("write netdata.conf");
        let mut command = Command::new("netdata");
        command
            .arg("-D")
            .arg("-c")
            .arg(&conf)
            .env("DO_NOT_TRACK", "1");
        let mut netdata = Netdata {
            daemon: Daemon::spawn(command, dir.clone(), &dir.join("stdout.log")),
            port,
            web_port,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        };
        let listening = format!("listening on 'udp:127.0.0.1:{port}'");
        poll(
            "netdata's statsd and API up",
            Duration::from_secs(30),
            || {
                netdata.daemon.alive()?;
                let log = netdata.log();
                if !log.contains(&listening) {
                    return Err(log);
                }
                netdata.get("/api/v1/info", &[]).map(|_| ())
            },
        );
        netdata
    }

    /// What netdata logged so far (its error log, where statsd complains).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.daemon.dir.join("log/error.log")).unwrap_or_default()
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.web_port);
        let response = self
            .http
            .get(url)
            .query(query)
            .send()
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{path}: HTTP {}", response.status()));
        }
        response.json().map_err(|e| e.to_string())
    }

    /// The number of collected points and the sum of each dimension of
    /// `chart` (e.g. `statsd_app.root.called_counter`) over the last ten
    /// minutes; `None` while the chart does not exist. netdata stores one
    /// point a second; a value that arrived between two seconds is spread
    /// over both, so the sums are exact to rounding.
    pub fn chart_sums(&self, chart: &str) -> Option<(usize, BTreeMap<String, f64>)> {
        let json = self
            .get(
                "/api/v1/data",
                &[("chart", chart), ("after", "-600"), ("format", "json")],
            )
            .ok()?;
        let labels: Vec<String> = json["labels"]
            .as_array()?
            .iter()
            .map(|l| l.as_str().unwrap_or_default().to_owned())
            .collect();
        let mut sums: BTreeMap<String, f64> =
            labels.iter().skip(1).map(|l| (l.clone(), 0.0)).collect();
        let mut points = 0;
        for row in json["data"].as_array()? {
            let row = row.as_array()?;
            if row.get(1).is_some_and(|v| !v.is_null()) {
                points += 1;
            }
            for (label, value) in labels.iter().zip(row.iter()).skip(1) {
                if let Some(v) = value.as_f64() {
                    *sums.get_mut(label)? += v;
                }
            }
        }
        Some((points, sums))
    }

    /// Every value of one dimension of `chart` over the last ten minutes.
    pub fn chart_values(&self, chart: &str, dimension: &str) -> Vec<f64> {
        let Ok(json) = self.get(
            "/api/v1/data",
            &[
                ("chart", chart),
                ("after", "-600"),
                ("format", "json"),
                ("dimensions", dimension),
                ("options", "nonzero"),
            ],
        ) else {
            return Vec::new();
        };
        json["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| row.get(1).and_then(Value::as_f64))
            .collect()
    }
}

// ---------------------------------------------------------------- statsd, proxy.js

fn statsd_package() -> PathBuf {
    repo_root().join(".stack/node/node_modules/statsd")
}

fn node() -> String {
    std::env::var("NODE").unwrap_or_else(|_| "node".to_owned())
}

fn admin_health(port: u16) -> Result<(), String> {
    let answer = crate::admin_command(port, "health")?;
    answer.starts_with("health: up").then_some(()).ok_or(answer)
}

/// One more Etsy StatsD 0.9.0 daemon (the stack's `stats.js`, the same
/// graphite backend settings as `scripts/stack`), flushing to a given
/// carbon line port.
#[derive(Debug)]
pub struct StatsdDaemon {
    daemon: Daemon,
    /// Its UDP port.
    pub port: u16,
    /// Its admin port.
    pub admin_port: u16,
}

impl StatsdDaemon {
    /// Starts a daemon flushing every `flush_ms` to carbon's line receiver
    /// at `carbon_port`; the stack must be installed (`scripts/stack
    /// install`, which [`Stack::start`](crate::Stack::start) runs).
    pub fn start(carbon_port: u16, flush_ms: u64) -> StatsdDaemon {
        let dir = temp_dir("statsd");
        let port = free_port();
        let admin_port = free_port();
        let conf = dir.join("statsd.js");
        std::fs::write(
            &conf,
            format!(
                r#"{{
  graphiteHost: "127.0.0.1",
  graphitePort: {carbon_port},
  port: {port},
  address: "127.0.0.1",
  mgmt_address: "127.0.0.1",
  mgmt_port: {admin_port},
  flushInterval: {flush_ms},
  backends: ["./backends/graphite"],
  graphite: {{ legacyNamespace: true }}
}}
"#
            ),
        )
        .expect("write statsd.js");
        let mut command = Command::new(node());
        command
            .arg(statsd_package().join("stats.js"))
            .arg(&conf)
            .current_dir(statsd_package());
        let mut statsd = StatsdDaemon {
            daemon: Daemon::spawn(command, dir.clone(), &dir.join("statsd.log")),
            port,
            admin_port,
        };
        poll("second statsd healthy", Duration::from_secs(20), || {
            statsd.daemon.alive()?;
            admin_health(admin_port)
        });
        statsd
    }

    /// A command on its admin port, the answer up to `END`.
    pub fn admin(&self, command: &str) -> String {
        crate::admin_command(self.admin_port, command).unwrap_or_else(|e| panic!("{e}"))
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.daemon.dir.join("statsd.log")).unwrap_or_default()
    }
}

/// statsd's `proxy.js`: one UDP port in front of several daemons, each
/// metric name always sent to the same one (consistent hashing, md5).
#[derive(Debug)]
pub struct StatsdProxy {
    daemon: Daemon,
    /// Its UDP port, where clients send.
    pub port: u16,
    /// Its admin port (`health`, `status`).
    pub admin_port: u16,
}

impl StatsdProxy {
    /// The proxy's configuration for `nodes` (UDP port, admin port).
    pub fn config(port: u16, admin_port: u16, nodes: &[(u16, u16)]) -> String {
        let nodes: Vec<String> = nodes
            .iter()
            .map(|(p, a)| format!("    {{ host: \"127.0.0.1\", port: {p}, adminport: {a} }}"))
            .collect();
        format!(
            r#"{{
  nodes: [
{}
  ],
  server: "./servers/udp",
  address: "127.0.0.1",
  host: "127.0.0.1",
  port: {port},
  mgmt_address: "127.0.0.1",
  mgmt_port: {admin_port},
  forkCount: 0,
  checkInterval: 1000,
  cacheSize: 10000
}}
"#,
            nodes.join(",\n")
        )
    }

    /// Starts `node proxy.js` in front of `nodes` (UDP port, admin port).
    pub fn start(nodes: &[(u16, u16)]) -> StatsdProxy {
        let dir = temp_dir("proxy");
        let port = free_port();
        let admin_port = free_port();
        let conf = dir.join("proxy.js");
        std::fs::write(&conf, Self::config(port, admin_port, nodes)).expect("write proxy.js");
        let mut command = Command::new(node());
        command
            .arg(statsd_package().join("proxy.js"))
            .arg(&conf)
            .current_dir(statsd_package());
        let mut proxy = StatsdProxy {
            daemon: Daemon::spawn(command, dir.clone(), &dir.join("proxy.log")),
            port,
            admin_port,
        };
        poll("proxy.js healthy", Duration::from_secs(20), || {
            proxy.daemon.alive()?;
            admin_health(admin_port)
        });
        proxy
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.daemon.dir.join("proxy.log")).unwrap_or_default()
    }
}
