//! `scripts/demo` as a newcomer runs it, on free ports with a private
//! STACK_DIR, in a process group of its own (as a shell runs a foreground
//! job): started, read through its output, and killed with its stack on drop
//! if a check failed.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, poll, repo_root};

/// A running `scripts/demo` (or a wrapper around it).
pub struct Demo {
    /// The demo, or the wrapper that runs it.
    pub child: Child,
    /// The test's directory: the log and STACK_DIR.
    pub dir: PathBuf,
    /// The demo's stack instance.
    pub stack_dir: PathBuf,
    /// Everything the demo printed, stdout and stderr.
    pub log_path: PathBuf,
    /// The example API's `host:port`.
    pub api_addr: String,
    /// Every TCP port the demo may open, by name.
    pub tcp_ports: Vec<(&'static str, u16)>,
    /// StatsD's port (UDP, and TCP).
    pub statsd_port: u16,
    /// graphite-web's port.
    pub graphite_port: u16,
}

impl Demo {
    /// Starts `wrapper... scripts/demo` and waits until it printed its URLs.
    /// `squatted` is a port the demo must find taken (carbon-aggregator's
    /// pickle port).
    pub fn start(name: &str, wrapper: &[&str], squatted: Option<u16>) -> Demo {
        let dir =
            std::env::temp_dir().join(format!("tower-statsd-demo-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the demo's directory");
        let stack_dir = dir.join("run");
        let mut tcp_ports: Vec<(&'static str, u16)> = [
            "STATSD_ADMIN_PORT",
            "CARBON_PORT",
            "CARBON_PICKLE_PORT",
            "CARBON_QUERY_PORT",
            "CARBON_AGGREGATOR_PORT",
            "CARBON_AGGREGATOR_PICKLE_PORT",
            "GRAPHITE_PORT",
        ]
        .into_iter()
        .map(|name| (name, free_port()))
        .collect();
        if let Some(port) = squatted {
            tcp_ports.retain(|(n, _)| *n != "CARBON_AGGREGATOR_PICKLE_PORT");
            tcp_ports.push(("CARBON_AGGREGATOR_PICKLE_PORT", port));
        }
        let statsd_port = free_port();
        let api_port = free_port();
        let api_addr = format!("127.0.0.1:{api_port}");
        let graphite_port = tcp_ports
            .iter()
            .find(|(n, _)| *n == "GRAPHITE_PORT")
            .unwrap()
            .1;

        let log_path = dir.join("demo.log");
        let log = File::create(&log_path).expect("create demo.log");
        let demo_script = repo_root().join("scripts/demo");
        let mut cmd = match wrapper {
            [] => Command::new(&demo_script),
            [program, args @ ..] => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&demo_script);
                cmd
            }
        };
        cmd.envs(tcp_ports.iter().map(|(n, p)| (*n, p.to_string())))
            .env("STATSD_PORT", statsd_port.to_string())
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
        tcp_ports.push(("API_ADDR", api_port));
        tcp_ports.push(("STATSD_PORT (tcp)", statsd_port));
        let mut demo = Demo {
            child: cmd.spawn().expect("start scripts/demo"),
            dir,
            stack_dir,
            log_path,
            api_addr,
            tcp_ports,
            statsd_port,
            graphite_port,
        };
        // The stack, a release build of the API (minutes on a cold cache), traffic.
        poll(
            "the demo up and printing its URLs",
            Duration::from_secs(900),
            || {
                if let Ok(Some(status)) = demo.child.try_wait() {
                    panic!("scripts/demo exited early ({status}):\n{}", demo.log());
                }
                let log = demo.log();
                if log.contains("Traffic runs once a second") {
                    Ok(())
                } else {
                    Err(log.lines().last().unwrap_or("").to_owned())
                }
            },
        );
        demo
    }

    /// What the demo printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The links the demo printed for the user, in order: the URLs of the
    /// block of lines above its "Traffic runs once a second" line (not the
    /// stack's or the API's log lines).
    pub fn links(&self) -> Vec<String> {
        let log = self.log();
        let Some(end) = log.find("Traffic runs once a second") else {
            return Vec::new();
        };
        let above = log[..end].trim_end();
        let message = above.rfind("\n\n").map_or(above, |at| &above[at..]);
        message
            .split_whitespace()
            .filter(|word| word.starts_with("http://"))
            .map(str::to_owned)
            .collect()
    }

    /// Sends `signal` to the demo's process group.
    pub fn signal_group(&self, signal: &str) {
        signal_group(self.child.id(), signal);
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal_group(self.child.id(), "KILL");
            let _ = self.child.wait();
        }
        let _ = Command::new(repo_root().join("scripts/stack"))
            .arg("stop")
            .env("STACK_DIR", &self.stack_dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `signal` to the process group `pgid`.
pub fn signal_group(pgid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} -{pgid} failed");
}
