//! `scripts/demo` as a newcomer runs it, on free ports with a private
//! STACK_DIR:
//!
//! - with one of carbon-aggregator's ports taken it names that port and runs
//!   without the aggregator, and `scripts/stack status` describes what was
//!   started and exits 0;
//! - two Ctrl-C 50 ms apart (SIGINT to the demo's process group, as a
//!   terminal sends it) leave no port open and no process of the demo
//!   behind, with no curl error and no colour code in its output;
//! - so does `timeout -k 1`, which signals the demo's process group and
//!   SIGKILLs it 0.2 s later, in the middle of its clean-up.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::demo::Demo;
use e2e::{poll, repo_root};

/// What these tests ask of the demo beyond starting it.
trait DemoChecks {
    /// Polls until the demo has exited, no port of it is open and no process
    /// of it is left.
    fn wait_all_stopped(&mut self, squatted: Option<u16>);
    /// `scripts/stack status` for the demo's instance, with nothing from the
    /// environment but STACK_DIR: (exit success, stdout).
    fn stack_status(&self) -> (bool, String);
}

impl DemoChecks for Demo {
    fn wait_all_stopped(&mut self, squatted: Option<u16>) {
        poll(
            "everything of the demo stopped",
            Duration::from_secs(60),
            || {
                let mut left = Vec::new();
                if self.child.try_wait().map_or(true, |s| s.is_none()) {
                    left.push("scripts/demo still running".to_owned());
                }
                for (name, port) in &self.tcp_ports {
                    if Some(*port) == squatted {
                        continue; // the test's own listener
                    }
                    let addr = ([127, 0, 0, 1], *port).into();
                    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                        left.push(format!("{name} {port} still open"));
                    }
                }
                if UdpSocket::bind(("127.0.0.1", self.statsd_port)).is_err() {
                    left.push(format!("STATSD_PORT {}/udp still bound", self.statsd_port));
                }
                left.extend(leftover_processes(&self.stack_dir, &self.api_addr));
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{left:?}"))
                }
            },
        );
    }

    fn stack_status(&self) -> (bool, String) {
        let output = Command::new(repo_root().join("scripts/stack"))
            .arg("status")
            .env("STACK_DIR", &self.stack_dir)
            .env_remove("STACK_AGGREGATOR")
            .env_remove("GRAPHITE_PORT")
            .env_remove("STATSD_ADMIN_PORT")
            .output()
            .expect("run scripts/stack status");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }
}

/// Processes that still belong to the demo: its stack's daemons (they carry
/// STACK_INSTANCE=<dir>) and whatever the demo started with its API_ADDR
/// (the API, the traffic loop, its curls, the stack's stop).
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
        // A zombie has no environ left to read, so it never matches.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let mine = environ
            .split(|&b| b == 0)
            .any(|var| markers.iter().any(|m| var == m.as_bytes()));
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
    // Someone else holds carbon-aggregator's pickle port.
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind a squatter");
    let taken = squatter.local_addr().unwrap().port();
    let mut demo = Demo::start("sigint", &[], Some(taken));
    let out = demo.log();
    assert!(
        out.contains(&format!(
            "demo: port {taken} of carbon-aggregator is taken here; running without carbon-aggregator"
        )),
        "the demo must name exactly the taken port:\n{out}"
    );

    // The instance's own ports, no aggregator expected.
    let (ok, text) = demo.stack_status();
    assert!(ok, "stack status failed:\n{text}");
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
    assert!(
        text.contains(&format!(
            "answering on http://127.0.0.1:{}/",
            demo.graphite_port
        )),
        "{text}"
    );

    // Two Ctrl-C, 50 ms apart.
    demo.signal_group("INT");
    std::thread::sleep(Duration::from_millis(50));
    demo.signal_group("INT");
    demo.wait_all_stopped(Some(taken));
    drop(squatter);

    // The API logged to a file: no colour codes. The traffic loop stopped
    // without curl errors.
    let out = demo.log();
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
    let (ok, text) = demo.stack_status();
    assert!(!ok, "status must fail once stopped:\n{text}");
    println!("demo output:\n{out}");
}

#[test]
fn demo_under_timeout_leaves_nothing_running() {
    // `timeout -k 0.2 ...`, as a CI job might run it; SIGALRM makes timeout
    // act as if its time were up: SIGTERM to the demo's group, SIGKILL 0.2 s
    // later if the demo is still there.
    let mut demo = Demo::start("timeout", &["timeout", "-k", "0.2", "900"], None);
    assert!(demo.stack_status().0, "stack status failed while running");
    let timeout_pid = demo.child.id().to_string();
    let status = Command::new("kill")
        .args(["-ALRM", &timeout_pid])
        .status()
        .expect("run kill");
    assert!(status.success());
    demo.wait_all_stopped(None);
    // timeout exits 124 when the demo stopped in time; when its SIGKILL was
    // needed, it goes to the whole group, timeout included.
    let status = demo.child.wait().expect("timeout's status");
    println!("timeout ended with {status:?}\n{}", demo.log());
    assert!(
        status.code() == Some(124) || status.signal() == Some(9),
        "timeout did not time the demo out: {status:?}"
    );
    assert!(
        demo.log().contains("stack: stopped"),
        "the stack was not stopped by the demo:\n{}",
        demo.log()
    );
}
