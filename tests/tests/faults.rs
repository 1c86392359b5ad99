//! The backend failing: StatsD not running, a host that does not resolve,
//! the daemon starting late and restarting mid-run — requests keep
//! succeeding, never wait for metrics, and metrics flow again once the
//! daemon is back. And a graceful shutdown under load: every request the
//! server answered is counted at the daemon.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use e2e::{free_port, poll, ExampleApi, Stack};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_statsd::{FlushError, Statsd, UserKey};

const DEADLINE: Duration = Duration::from_secs(60);

fn app(statsd: &Statsd) -> Router {
    Router::new()
        .route("/", get(|| async { "root" }))
        .route("/user", get(|| async { "user" }))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(statsd.layer().user_key(UserKey::query("id"), "user"))
}

fn client(host: &str, port: u16, prefix: &str) -> Statsd {
    Statsd::builder()
        .host(host)
        .port(port)
        .prefix(prefix)
        // Short windows: the sender talks to the missing daemon all the time.
        .flush_interval(Duration::from_millis(20))
        .build()
        .expect("building never depends on the daemon")
}

async fn hit(app: &Router, uri: &str) -> StatusCode {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .expect("infallible");
    let status = response.status();
    response.into_body().collect().await.expect("the body");
    status
}

/// The median latency of `n` requests, each of which must succeed.
async fn median_latency(app: &Router, n: usize) -> Duration {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let uri = if i % 2 == 0 {
            "/".to_owned()
        } else {
            format!("/user?id={i}")
        };
        let started = Instant::now();
        assert_eq!(hit(app, &uri).await, StatusCode::OK, "{uri}");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies[n / 2]
}

async fn flush(statsd: &Statsd) -> Result<(), FlushError> {
    let statsd = statsd.clone();
    tokio::task::spawn_blocking(move || statsd.flush())
        .await
        .unwrap()
}

/// A loose sanity check only; the latency proof is the benchmark.
fn assert_not_slower(what: &str, down: Duration, up: Duration) {
    assert!(
        down < up * 5 + Duration::from_millis(1),
        "{what}: median {down:?} against {up:?} with the daemon up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_succeed_without_waiting_when_statsd_is_down_or_unresolvable() {
    const N: usize = 400;
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();

    let up = client("127.0.0.1", stack.statsd_port, "faults_up");
    let up_median = median_latency(&app(&up), N).await;
    flush(&up).await.unwrap();

    // Nothing listens on this port: every datagram is refused.
    let closed = client("127.0.0.1", free_port(), "faults_closed");
    let closed_median = median_latency(&app(&closed), N).await;
    flush(&closed)
        .await
        .expect("the sender keeps working against a closed port");
    assert_eq!(
        closed.sink().dropped(),
        0,
        "nothing was dropped from the stage"
    );

    // `.invalid` never resolves (RFC 6761): every packet is an error.
    let nowhere = client("no-such-host.invalid", 8125, "faults_nowhere");
    let nowhere_median = median_latency(&app(&nowhere), N).await;
    flush(&nowhere)
        .await
        .expect("the sender keeps working without an address");
    assert!(
        nowhere.sink().failed_packets() > 0,
        "the packets failed, and were counted"
    );

    assert_not_slower("StatsD port closed", closed_median, up_median);
    assert_not_slower("StatsD host unresolvable", nowhere_median, up_median);
}

/// Sends requests in the background until stopped; counts answers by status.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    other: Arc<Mutex<Vec<StatusCode>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(app: Router) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let other = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, ok, other) = (stop.clone(), ok.clone(), other.clone());
            async move {
                let started = Instant::now();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(300) {
                    i += 1;
                    let uri = if i.is_multiple_of(2) {
                        "/".to_owned()
                    } else {
                        format!("/user?id={}", i % 50)
                    };
                    match hit(&app, &uri).await {
                        StatusCode::OK => ok.fetch_add(1, Ordering::SeqCst),
                        status => {
                            other.lock().unwrap().push(status);
                            0
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        Load {
            stop,
            ok,
            other,
            task,
        }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("no panic while the daemon was away");
        assert_eq!(
            *self.other.lock().unwrap(),
            Vec::<StatusCode>::new(),
            "every request succeeded"
        );
        self.ok.load(Ordering::SeqCst)
    }
}

/// Whether the daemon's admin port lists `key` among its counters; an
/// error while the daemon is down.
fn daemon_has_counter(stack: &Stack, key: &str) -> Result<(), String> {
    use std::io::{BufRead, BufReader, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", stack.admin_port))
        .map_err(|e| format!("admin port: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    conn.write_all(b"counters\n").map_err(|e| e.to_string())?;
    let mut dump = String::new();
    for line in BufReader::new(conn).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim() == "END" {
            break;
        }
        dump.push_str(&line);
    }
    dump.contains(&format!("'{key}'"))
        .then_some(())
        .ok_or_else(|| format!("no {key} yet"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_flow_once_the_daemon_starts_and_again_after_it_restarts() {
    const PREFIX: &str = "faults_restart";
    let key = format!("{PREFIX}.root.called");
    // Our own stack, so stopping it disturbs no other test.
    let stack: &'static Stack = Box::leak(Box::new(
        tokio::task::spawn_blocking(|| Stack::start(1000))
            .await
            .unwrap(),
    ));
    tokio::task::spawn_blocking(|| stack.stop()).await.unwrap();

    // The app starts while the daemon is down; `localhost` is resolved lazily.
    let statsd = client("localhost", stack.statsd_port, PREFIX);
    let app = app(&statsd);
    let load = Load::start(app.clone());
    poll_async("requests while the daemon is down", || {
        load.ok.load(Ordering::SeqCst) >= 100
    })
    .await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", stack.admin_port)).is_err(),
        "the daemon is down"
    );

    // The daemon comes up: metrics flow without a restart of the app.
    tokio::task::spawn_blocking(|| stack.restart())
        .await
        .unwrap();
    let k = key.clone();
    tokio::task::spawn_blocking(move || {
        poll("metrics reach the daemon once it is up", DEADLINE, || {
            daemon_has_counter(stack, &k)
        })
    })
    .await
    .unwrap();
    tokio::task::spawn_blocking(move || {
        poll("and Graphite", DEADLINE, || {
            let sum = stack.render_sum(&format!("stats_counts.{PREFIX}.root.called"), "-10min")?;
            (sum > 0.0).then_some(()).ok_or(format!("sum {sum}"))
        })
    })
    .await
    .unwrap();

    // Restarted mid-run, under load.
    tokio::task::spawn_blocking(|| stack.stop()).await.unwrap();
    let during = load.ok.load(Ordering::SeqCst);
    poll_async("requests while the daemon is down again", || {
        load.ok.load(Ordering::SeqCst) >= during + 100
    })
    .await;
    tokio::task::spawn_blocking(|| stack.restart())
        .await
        .unwrap();
    let restarted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let k = key.clone();
    tokio::task::spawn_blocking(move || {
        // A fresh daemon holds no keys: seeing ours means metrics flow again.
        poll("metrics reach the restarted daemon", DEADLINE, || {
            daemon_has_counter(stack, &k)
        });
        poll("and Graphite, after the restart", DEADLINE, || {
            let points = stack.render(&format!("stats_counts.{PREFIX}.root.called"), "-10min")?;
            points
                .iter()
                .any(|(t, v)| *t >= restarted_at && *v > 0.0)
                .then_some(())
                .ok_or(format!("{points:?}"))
        });
    })
    .await
    .unwrap();
    let answered = load.finish().await;
    assert!(answered >= 200, "{answered}");
    flush(&statsd).await.unwrap();
    tokio::task::spawn_blocking(|| stack.stop()).await.unwrap();
}

/// Polls `check` every 10 ms for up to 60 s without blocking the runtime.
async fn poll_async(what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !check() {
        assert!(
            Instant::now() < end,
            "{what}: not reached within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn graceful_shutdown_under_load_counts_every_answered_request() {
    const PREFIX: &str = "faults_shutdown";
    const THREADS: usize = 4;
    let stack = Stack::shared();
    let mut env = stack.statsd_env();
    env.extend([
        ("STATSD_PREFIX".to_owned(), PREFIX.to_owned()),
        ("DEMO_MAX_DELAY_MS".to_owned(), "20".to_owned()),
        ("STATSD_FLUSH_MS".to_owned(), "200".to_owned()),
    ]);
    let api = ExampleApi::start(&env);
    let stop = Arc::new(AtomicBool::new(false));
    // (route, status) -> requests the client got an answer to.
    let answered: Arc<Mutex<BTreeMap<(&'static str, u16), u64>>> = Arc::default();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stop, answered, url) = (stop.clone(), answered.clone(), api.url.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let started = Instant::now();
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                    i += 1;
                    let (route, path) = match (i + t) % 3 {
                        0 => ("root", "/?msg=hi".to_owned()),
                        1 => ("user", format!("/user?id={i}")),
                        _ => ("user", "/user?id=abc".to_owned()),
                    };
                    match http.get(format!("{url}{path}")).send().and_then(|r| {
                        let status = r.status().as_u16();
                        r.bytes().map(|_| status)
                    }) {
                        Ok(status) => {
                            *answered.lock().unwrap().entry((route, status)).or_default() += 1
                        }
                        // Refused or reset once the server is going away: not answered.
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        })
        .collect();
    // Load for about two seconds, then SIGTERM while requests are in flight.
    let started = Instant::now();
    poll("load for two seconds", Duration::from_secs(30), || {
        (started.elapsed() >= Duration::from_secs(2))
            .then_some(())
            .ok_or(String::new())
    });
    let before_term: u64 = answered.lock().unwrap().values().sum();
    assert!(before_term > 50, "some load: {before_term}");
    assert!(api.terminate(), "SIGTERM: graceful exit");
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().expect("a load thread");
    }
    let answered = answered.lock().unwrap().clone();
    eprintln!("answered before SIGTERM: {before_term}; in all: {answered:?}");
    let per_route = |route: &str| -> u64 {
        answered
            .iter()
            .filter(|((r, _), _)| *r == route)
            .map(|(_, n)| n)
            .sum()
    };

    for route in ["root", "user"] {
        let expected = per_route(route) as f64;
        poll(
            &format!("{PREFIX}.{route}.called equals the client's answered count"),
            DEADLINE,
            || {
                let sum =
                    stack.render_sum(&format!("stats_counts.{PREFIX}.{route}.called"), "-10min")?;
                (sum == expected)
                    .then_some(())
                    .ok_or(format!("daemon {sum}, client {expected}"))
            },
        );
        poll(&format!("{PREFIX}.{route} timer count"), DEADLINE, || {
            let sum =
                stack.render_sum(&format!("stats.timers.{PREFIX}.{route}.count"), "-10min")?;
            (sum == expected)
                .then_some(())
                .ok_or(format!("daemon {sum}, client {expected}"))
        });
    }
    for ((route, status), n) in &answered {
        let target = format!("stats_counts.{PREFIX}.{route}.status.{status}");
        poll(&target, DEADLINE, || {
            let sum = stack.render_sum(&target, "-10min")?;
            (sum == *n as f64)
                .then_some(())
                .ok_or(format!("daemon {sum}, client {n}"))
        });
    }
    assert!(
        answered.contains_key(&("user", 400)) && answered.contains_key(&("root", 200)),
        "{answered:?}"
    );
}
