//! Scale-out through statsd's own `proxy.js` (npm `statsd` 0.9.0): two
//! example-API processes send through one proxy, which hashes every metric
//! name onto one of two Etsy StatsD daemons; both daemons flush to the same
//! carbon. Every counter, timer count and set member must arrive in Graphite
//! exactly once, and each name must live on exactly one daemon.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::servers::{StatsdDaemon, StatsdProxy};
use e2e::{get, poll, ExampleApi, Stack};

const PREFIX: &str = "scaleout";
const APIS: u64 = 2;
const ROOT_REQUESTS: u64 = 50;
const USER_REQUESTS: u64 = 10;
const DISTINCT_USERS: u64 = 5;
/// Extra counter names sent straight to the proxy, to see the spread.
const SPREAD: u64 = 200;

/// Names of `PREFIX` in a daemon's admin dump (`counters`, `timers`): they
/// stay listed after a flush, with 0 or `[]`.
fn names(dump: &str) -> BTreeSet<String> {
    dump.split('\'')
        .filter(|s| s.starts_with(&format!("{PREFIX}.")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn proxy_puts_each_name_on_one_daemon_and_everything_arrives_once() {
    // Daemon A is the stack's own StatsD; daemon B a second one on the same carbon.
    let stack = Stack::start(1000);
    let daemon_b = StatsdDaemon::start(stack.carbon_port(), 1000);
    let proxy = StatsdProxy::start(&[
        (stack.statsd_port, stack.admin_port),
        (daemon_b.port, daemon_b.admin_port),
    ]);

    // Both APIs use the same prefix, as replicas of one service do; each
    // has its own 5 users. A 60 s window and a graceful stop: everything an
    // API aggregated leaves in one flush, so each set member is sent once.
    let loads: Vec<_> = (0..APIS)
        .map(|n| {
            let env: Vec<(String, String)> = [
                ("STATSD_HOST", "127.0.0.1".to_owned()),
                ("STATSD_PORT", proxy.port.to_string()),
                ("STATSD_ADMIN_PORT", proxy.admin_port.to_string()),
                ("STATSD_PREFIX", PREFIX.to_owned()),
                ("STATSD_FLUSH_MS", "60000".to_owned()),
                ("DEMO_MAX_DELAY_MS", "5".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            std::thread::spawn(move || {
                let api = ExampleApi::start(&env);
                let http = reqwest::blocking::Client::new();
                for _ in 0..ROOT_REQUESTS {
                    assert_eq!(get(&http, &format!("{}/?msg=hi", api.url)).0, 200);
                }
                for i in 0..USER_REQUESTS {
                    let id = 1000 * (n + 1) + i % DISTINCT_USERS;
                    assert_eq!(get(&http, &format!("{}/user?id={id}", api.url)).0, 200);
                }
                assert!(api.terminate(), "an example API did not stop cleanly");
            })
        })
        .collect();
    for load in loads {
        load.join().expect("a load thread panicked");
    }
    // The ring's points depend on the daemons' (free, so random) ports: the
    // API's eight names may all hash onto one daemon. Many more names show
    // the spread: each is sent once, in packets of 20 lines.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for chunk in (0..SPREAD).collect::<Vec<_>>().chunks(20) {
        let lines: String = chunk
            .iter()
            .map(|i| format!("{PREFIX}.spread.n{i}:1|c\n"))
            .collect();
        socket
            .send_to(lines.as_bytes(), ("127.0.0.1", proxy.port))
            .expect("send to the proxy");
    }

    let expected = [
        (
            format!("stats_counts.{PREFIX}.root.called"),
            APIS * ROOT_REQUESTS,
        ),
        (
            format!("stats_counts.{PREFIX}.user.called"),
            APIS * USER_REQUESTS,
        ),
        (
            format!("stats_counts.{PREFIX}.root.status.200"),
            APIS * ROOT_REQUESTS,
        ),
        (
            format!("stats_counts.{PREFIX}.user.status.200"),
            APIS * USER_REQUESTS,
        ),
        (
            format!("stats.timers.{PREFIX}.root.count"),
            APIS * ROOT_REQUESTS,
        ),
        (
            format!("stats.timers.{PREFIX}.user.count"),
            APIS * USER_REQUESTS,
        ),
        (
            format!("stats.sets.{PREFIX}.user.count"),
            APIS * DISTINCT_USERS,
        ),
        (format!("sumSeries(stats_counts.{PREFIX}.spread.*)"), SPREAD),
    ];
    let totals = || -> Vec<(String, f64)> {
        expected
            .iter()
            .map(|(target, _)| {
                (
                    target.clone(),
                    stack.render_sum(target, "-10min").unwrap_or(-1.0),
                )
            })
            .collect()
    };
    let all_in = |seen: &[(String, f64)]| {
        seen.iter()
            .zip(&expected)
            .all(|((_, got), (_, want))| *got == *want as f64)
    };
    poll(
        "every metric in Graphite through the proxy",
        Duration::from_secs(60),
        || {
            let seen = totals();
            all_in(&seen).then_some(()).ok_or(format!("{seen:?}"))
        },
    );
    // Exactly once: two more flushes of both daemons add nothing.
    let points = || {
        stack
            .render(&format!("stats_counts.{PREFIX}.root.called"), "-10min")
            .map(|p| p.len())
            .unwrap_or(0)
    };
    let before = points();
    poll("two more flushes", Duration::from_secs(30), || {
        let now = points();
        (now >= before + 2).then_some(()).ok_or(format!("{now}"))
    });
    let seen = totals();
    assert!(all_in(&seen), "after two more flushes: {seen:?}");

    // The proxy kept both daemons in its ring all along.
    let proxy_log = proxy.log();
    assert!(
        !proxy_log.contains("No backend statsd nodes available")
            && !proxy_log.contains("Removing node"),
        "{proxy_log}"
    );

    // Each name on exactly one daemon, and both daemons in use.
    let on_a: BTreeSet<String> = names(&stack.admin("counters"))
        .union(&names(&stack.admin("timers")))
        .cloned()
        .collect();
    let on_b: BTreeSet<String> = names(&daemon_b.admin("counters"))
        .union(&names(&daemon_b.admin("timers")))
        .cloned()
        .collect();
    let both: Vec<_> = on_a.intersection(&on_b).collect();
    assert!(both.is_empty(), "names on both daemons: {both:?}");
    let spread = |names: &BTreeSet<String>| {
        names
            .iter()
            .filter(|n| n.starts_with(&format!("{PREFIX}.spread.")))
            .count() as u64
    };
    let (spread_a, spread_b) = (spread(&on_a), spread(&on_b));
    assert_eq!(spread_a + spread_b, SPREAD, "A {on_a:?}, B {on_b:?}");
    assert!(
        spread_a > 0 && spread_b > 0,
        "one daemon got nothing: A {on_a:?}, B {on_b:?}"
    );
    for name in [
        "root.called",
        "user.called",
        "root.status.200",
        "user.status.200",
        "root",
        "user",
    ] {
        let name = format!("{PREFIX}.{name}");
        assert!(
            on_a.contains(&name) ^ on_b.contains(&name),
            "{name} not on exactly one daemon: A {on_a:?}, B {on_b:?}"
        );
    }
    println!(
        "daemon A ({}): {spread_a} spread names, {:?}",
        stack.statsd_port,
        on_a.iter()
            .filter(|n| !n.contains(".spread."))
            .collect::<Vec<_>>()
    );
    println!(
        "daemon B ({}): {spread_b} spread names, {:?}",
        daemon_b.port,
        on_b.iter()
            .filter(|n| !n.contains(".spread."))
            .collect::<Vec<_>>()
    );

    // Nothing was malformed on the way: neither daemon saw a bad line.
    for (daemon, stats, log) in [
        ("A", stack.admin("stats"), stack.log("statsd")),
        ("B", daemon_b.admin("stats"), daemon_b.log()),
    ] {
        assert!(
            stats.contains("messages.bad_lines_seen: 0"),
            "daemon {daemon}: {stats}"
        );
        assert!(!log.contains("Bad line"), "daemon {daemon}: {log}");
    }
}
