//! The compose file is a deliverable even where no Docker engine runs:
//! `docker-compose config -q` validates it, and its ports stay in step with
//! the no-Docker stack.

use std::process::Command;

use e2e::repo_root;

#[test]
fn compose_file_is_valid() {
    let status = Command::new(repo_root().join("scripts/check-compose"))
        .status()
        .expect("run scripts/check-compose");
    assert!(
        status.success(),
        "docker-compose config -q rejected docker-compose.yml"
    );
}

#[test]
fn compose_ports_match_the_tutorial_and_the_stack() {
    let compose = std::fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap();
    for mapping in [
        "80:80",
        "2003-2004:2003-2004",
        "2023-2024:2023-2024",
        "8125:8125/udp",
        "8125:8125/tcp",
        "8126:8126",
        "8000:8000",
    ] {
        assert!(compose.contains(mapping), "port mapping {mapping} missing");
    }
    for env in [
        "STATSD_HOST",
        "STATSD_PORT",
        "STATSD_PREFIX",
        "STATSD_TRANSPORT",
        "API_ADDR",
        "DEMO_MAX_DELAY_MS",
    ] {
        assert!(compose.contains(env), "{env} missing from the api service");
    }
    // The image's StatsD listens on udp.js or tcp.js, chosen by STATSD_INTERFACE;
    // one variable switches it and the API's client together.
    assert!(
        compose.contains("STATSD_INTERFACE: ${STATSD_TRANSPORT:-udp}"),
        "the graphite service must take STATSD_INTERFACE from STATSD_TRANSPORT"
    );
    let stack = std::fs::read_to_string(repo_root().join("scripts/stack")).unwrap();
    for default in ["8125", "8126", "2003", "2004"] {
        assert!(
            stack.contains(default),
            "scripts/stack lacks the tutorial's port {default}"
        );
    }
}
