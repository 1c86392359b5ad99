//! `scripts/demo` as a newcomer runs it, on free ports with a private
//! STACK_DIR: with one of carbon-aggregator's ports taken it names that port
//! and runs without the aggregator, `scripts/stack status` describes what was
//! started and exits 0, and two Ctrl-C 50 ms apart (SIGINT to the demo's
//! process group, as a terminal sends it) leave no port open and no process
//! of the demo behind, with no curl error and no colour code in its output.

use std::fs::File;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::{free_port, poll, repo_root};

/// The demo's process group, killed on drop if a check failed.
struct Demo {
    child: Child,
    dir: PathBuf,
    stack_dir: PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal_group(self.child.id(), "TERM");
            let _ = self.child.wait();
        }
        let _ = Command::new(repo_root().join("scripts/stack"))
            .arg("stop")
            .env("STACK_DIR", &self.stack_dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal_group(pgid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} -{pgid} failed");
}

/// Processes that still belong to the demo: its stack's daemons (they carry
/// STACK_INSTANCE=<dir>) and whatever the demo started with its API_ADDR
/// (the API, the traffic loop, its curls).
fn leftover_processes(dir: &Path, api_addr: &str) -> Vec<String> {
    let markers = [
        format!("STACK_INSTANCE={}", dir.display()),
        format!("API_ADDR={api_addr}"),
    ];
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let mine = environ
            .split(|&b| b == 0)
            .any(|var| markers.iter().any(|m| var == m.as_bytes()));
        // A zombie has no environ left to read, so it never matches.
        if mine {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

#[test]
fn demo_reports_its_stack_and_stops_everything_on_two_sigints() {
    let dir = std::env::temp_dir().join(format!("tower-statsd-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the demo's STACK_DIR");
    let stack_dir = dir.join("run");
    let tcp_ports: Vec<(&str, u16)> = [
        "STATSD_ADMIN_PORT",
        "CARBON_PORT",
        "CARBON_PICKLE_PORT",
        "CARBON_QUERY_PORT",
        "CARBON_AGGREGATOR_PORT",
        "GRAPHITE_PORT",
    ]
    .into_iter()
    .map(|name| (name, free_port()))
    .collect();
    let statsd_port = free_port();
    let api_port = free_port();
    let api_addr = format!("127.0.0.1:{api_port}");
    // Someone else holds carbon-aggregator's pickle port.
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind a squatter");
    let taken = squatter.local_addr().unwrap().port();

    let log_path = dir.join("demo.log");
    let log = File::create(&log_path).expect("create demo.log");
    let mut cmd = Command::new(repo_root().join("scripts/demo"));
    cmd.envs(tcp_ports.iter().map(|(n, p)| (*n, p.to_string())))
        .env("STATSD_PORT", statsd_port.to_string())
        .env("CARBON_AGGREGATOR_PICKLE_PORT", taken.to_string())
        .env("API_ADDR", &api_addr)
        .env("STACK_DIR", &stack_dir)
        .env("RUST_LOG", "info")
        .env_remove("STACK_AGGREGATOR")
        .env_remove("STACK_RETENTIONS")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        // Its own process group, as a shell gives a foreground job.
        .process_group(0);
    let child = cmd.spawn().expect("start scripts/demo");
    let mut demo = Demo {
        child,
        dir: dir.clone(),
        stack_dir: stack_dir.clone(),
    };
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Up: the stack, a release build of the API (minutes on a cold cache), traffic.
    poll(
        "the demo up and printing its URLs",
        Duration::from_secs(900),
        || {
            if let Ok(Some(status)) = demo.child.try_wait() {
                panic!("scripts/demo exited early ({status}):\n{}", read_log());
            }
            if read_log().contains("Traffic runs once a second") {
                Ok(())
            } else {
                Err(read_log().lines().last().unwrap_or("").to_owned())
            }
        },
    );
    let out = read_log();
    assert!(
        out.contains(&format!(
            "demo: port {taken} of carbon-aggregator is taken here; running without carbon-aggregator"
        )),
        "the demo must name exactly the taken port:\n{out}"
    );

    // `scripts/stack status` with nothing but STACK_DIR: the instance's own
    // ports, no aggregator expected.
    let status = Command::new(repo_root().join("scripts/stack"))
        .arg("status")
        .env("STACK_DIR", &stack_dir)
        .env_remove("STACK_AGGREGATOR")
        .env_remove("GRAPHITE_PORT")
        .env_remove("STATSD_ADMIN_PORT")
        .output()
        .expect("run scripts/stack status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "stack status failed:\n{text}");
    assert!(
        text.contains("carbon-aggregator  not started (STACK_AGGREGATOR=0)"),
        "{text}"
    );
    for daemon in ["carbon-cache", "statsd", "graphite-web"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(daemon) && l.contains("running")),
            "{daemon} not reported running:\n{text}"
        );
    }
    let graphite_port = tcp_ports
        .iter()
        .find(|(n, _)| *n == "GRAPHITE_PORT")
        .unwrap()
        .1;
    assert!(
        text.contains(&format!("answering on http://127.0.0.1:{graphite_port}/")),
        "{text}"
    );

    // Two Ctrl-C, 50 ms apart.
    let pgid = demo.child.id();
    signal_group(pgid, "INT");
    std::thread::sleep(Duration::from_millis(50));
    signal_group(pgid, "INT");

    let mut open_ports: Vec<(&str, u16)> = tcp_ports.clone();
    open_ports.push(("API_ADDR", api_port));
    open_ports.push(("STATSD_PORT (tcp)", statsd_port));
    poll(
        "everything of the demo stopped",
        Duration::from_secs(60),
        || {
            let mut left = Vec::new();
            if demo.child.try_wait().map_or(true, |s| s.is_none()) {
                left.push("scripts/demo still running".to_owned());
            }
            for (name, port) in &open_ports {
                if TcpStream::connect_timeout(
                    &([127, 0, 0, 1], *port).into(),
                    Duration::from_secs(1),
                )
                .is_ok()
                {
                    left.push(format!("{name} {port} still open"));
                }
            }
            if UdpSocket::bind(("127.0.0.1", statsd_port)).is_err() {
                left.push(format!("STATSD_PORT {statsd_port}/udp still bound"));
            }
            left.extend(leftover_processes(&stack_dir, &api_addr));
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    drop(squatter);

    // The API logged to a file: no colour codes. The traffic loop stopped
    // without curl errors.
    let out = read_log();
    assert!(
        out.contains("listening on http://"),
        "no API log lines:\n{out}"
    );
    assert!(
        !out.contains('\x1b'),
        "ANSI escape codes in the demo's log:\n{out}"
    );
    assert!(
        !out.contains("curl:"),
        "curl errors in the demo's output:\n{out}"
    );

    // And the stack says so.
    let status = Command::new(repo_root().join("scripts/stack"))
        .arg("status")
        .env("STACK_DIR", &stack_dir)
        .output()
        .expect("run scripts/stack status");
    assert!(!status.status.success(), "status must fail once stopped");
    println!("demo output:\n{}", read_log());
    drop(demo);
}
