//! What the layer costs a request when several cores serve one router at
//! once: ONE router (`with_state(())`, static handlers) driven from 1 and
//! from 2 OS threads, each with its own current-thread runtime calling
//! `oneshot` on clones of the router, on one shared route and on separate
//! routes. Bare axum, a no-op `tower::layer::util::Identity` layer and
//! tower-statsd run the same load in alternating rounds.
//!
//! `cargo bench -p tower-statsd --bench cores` prints, per request, the CPU
//! time of **every thread** of the process (`/proc/self/task/*/schedstat`,
//! Linux; the worker threads live for the whole run, and the `tower-statsd`
//! flusher's work is counted: each round ends with a flush), the medians of
//! what tower-statsd adds over the no-op layer and over bare axum (paired
//! per round), and the ratio of what it adds with two threads to what it
//! adds with one.
//!
//! "cores busy" is CPU over wall time: about 2 when the two threads really
//! ran at once. On a machine busy with other work it is lower, and the
//! threads met on the route's cache lines only that part of the time.
//!
//! Target (issue 22): with two threads on one route the layer adds at most
//! 1.3 times what it adds with one thread, and at most 300 ns.
//!
//! Then the same for the layer alone, without axum around it (so its share
//! is not lost in axum's noise): one service made by the layer, over a
//! service that answers at once, cloned and called per request as axum's
//! `Route` does, from 1 and 2 threads, against the same service behind
//! `Identity`.
//!
//! Then a control: the layer alone again, but the two threads each on a
//! layer of its own client, so that nothing of tower-statsd is shared
//! between them. What two threads add there over one is what a second busy
//! core costs this machine with no shared line at all (caches, memory,
//! the hypervisor); each ratio line also prints how much dearer a request
//! of the app behind the no-op layer became with two threads, for the same
//! reason.
//!
//! Last, the peak in-flight gauge's two designs (issue 20), their request
//! path alone, from 1 and 2 threads on one route, in alternating rounds:
//! what a request does today (its shard's reference count up at entry,
//! down at the end, on its own core's line), plus either **per-shard
//! peaks** (read the count just written; raise this shard's peak when it
//! is higher: what the layer does) or a **global counter** (one count and
//! peak per route, shared by every core: add at entry, raise the peak,
//! subtract at the end).
//!
//! First of all it prints the wall time of the process's first request
//! through a new layer: tens of microseconds, because the layer calibrates
//! its clock (quanta's) when it is applied rather than in that request
//! (about 0.65 ms on this machine, measured with the calibration left to the
//! first request; up to 200 ms on a busy one).
//!
//! `CORES_ROUNDS` and `CORES_REQUESTS` (per thread and round) override the
//! defaults. `CORES_SERVER` names the client's server profile (as
//! `STATSD_SERVER` does; default `generic`, which writes a line per timer
//! value on the flusher thread): `CORES_SERVER=etsy` shows the request path
//! with a fixed-size timer sample instead.

#![allow(missing_docs)]

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use cadence::NopMetricSink;
use crossbeam_utils::CachePadded;
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_statsd::{Server, Statsd};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn routes() -> Router {
    Router::new()
        .route("/a", get(|| async { "hello" }))
        .route("/b", get(|| async { "hello" }))
}

/// One thread's share of a round: `requests` requests of `uri` to `app`.
struct Job {
    app: App,
    uri: &'static str,
    requests: usize,
}

/// What a round drives: a router, or one service without a router, or two
/// services that share nothing (each made by its own client), one a thread.
#[derive(Clone)]
enum App {
    Router(Router),
    Alone(Alone),
    Apart([Alone; 2]),
}

impl App {
    /// What worker `thread` drives.
    fn for_thread(&self, thread: usize) -> App {
        match self {
            App::Apart(services) => App::Alone(services[thread].clone()),
            app => app.clone(),
        }
    }
}

/// A service that answers at once, behind a layer: what axum's `Route`
/// holds for a route, cloned per request.
type Alone = tower::util::BoxCloneSyncService<Request<Body>, http::Response<Body>, Infallible>;

fn alone<L>(layer: L) -> Alone
where
    L: tower::Layer<
        tower::util::ServiceFn<
            fn(Request<Body>) -> std::future::Ready<Result<http::Response<Body>, Infallible>>,
        >,
    >,
    L::Service: tower::Service<Request<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    <L::Service as tower::Service<Request<Body>>>::Response: axum::response::IntoResponse,
    <L::Service as tower::Service<Request<Body>>>::Future: Send + 'static,
{
    fn answer(_: Request<Body>) -> std::future::Ready<Result<http::Response<Body>, Infallible>> {
        std::future::ready(Ok(http::Response::new(Body::from("hello"))))
    }
    let inner = tower::service_fn(answer as fn(_) -> _);
    Alone::new(
        layer
            .layer(inner)
            .map_response(axum::response::IntoResponse::into_response),
    )
}

/// A thread with its own current-thread runtime, alive for the whole run,
/// so that every thread's CPU stays in `/proc/self/task`.
struct Worker {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<()>,
}

impl Worker {
    fn spawn(name: &str) -> Worker {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tx, done) = mpsc::channel();
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                for job in rx {
                    rt.block_on(async {
                        for _ in 0..job.requests {
                            match &job.app {
                                App::Router(app) => request(app, job.uri).await,
                                App::Alone(svc) => call(svc, job.uri).await,
                                App::Apart(_) => unreachable!("split by App::for_thread"),
                            }
                        }
                    });
                    drop(job);
                    tx.send(()).expect("the bench waits");
                }
            })
            .expect("a worker thread");
        Worker { jobs, done }
    }
}

/// One request, body collected (the layer records at its end).
async fn request(app: &Router, uri: &'static str) {
    let req = Request::get(uri).body(Body::empty()).expect("a request");
    let response = app.clone().oneshot(req).await.expect("infallible");
    let body = response.into_body().collect().await.expect("a body");
    black_box(body);
}

/// One call of a clone of `svc`, as axum's `Route` makes it, body collected.
async fn call(svc: &Alone, uri: &'static str) {
    let req = Request::get(uri).body(Body::empty()).expect("a request");
    let response = svc.clone().oneshot(req).await.expect("infallible");
    let body = response.into_body().collect().await.expect("a body");
    black_box(body);
}

/// CPU time of every thread of this process so far, in ns (Linux), and the
/// part of it spent on tower-statsd's flusher thread.
fn process_cpu_ns() -> (u64, u64) {
    let mut total = 0;
    let mut flusher = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("Linux /proc") {
        let task = task.expect("a task").path();
        // A thread that ended between the listing and the read: none of
        // ours end during the run.
        if let Ok(sched) = std::fs::read_to_string(task.join("schedstat")) {
            let ns = sched
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .expect("schedstat's first field");
            total += ns;
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if comm.trim_end() == "tower-statsd" {
                flusher += ns;
            }
        }
    }
    (total, flusher)
}

/// How a round's load is spread: the route each thread requests.
struct Scenario {
    name: &'static str,
    uris: &'static [&'static str],
}

/// The control's: each of the 2 threads on a layer of its own.
const APART: [Scenario; 2] = [
    Scenario {
        name: "1 thread",
        uris: &["/a"],
    },
    Scenario {
        name: "2 threads, two layers",
        uris: &["/a", "/a"],
    },
];

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "1 thread",
        uris: &["/a"],
    },
    Scenario {
        name: "2 threads, one route",
        uris: &["/a", "/a"],
    },
    Scenario {
        name: "2 threads, two routes",
        uris: &["/a", "/b"],
    },
];

/// Per request: CPU ns of all threads (of which the flusher's), wall ns of
/// the round.
#[derive(Clone, Copy)]
struct Cost {
    cpu: f64,
    flusher: f64,
    wall: f64,
}

fn round(workers: &[Worker], app: &App, clients: &[Statsd], s: &Scenario, n: usize) -> Cost {
    let (cpu, flusher) = process_cpu_ns();
    let start = Instant::now();
    for (thread, (worker, uri)) in workers.iter().zip(s.uris).enumerate() {
        worker
            .jobs
            .send(Job {
                app: app.for_thread(thread),
                uri,
                requests: n,
            })
            .expect("a worker");
    }
    for worker in &workers[..s.uris.len()] {
        worker.done.recv().expect("a worker");
    }
    // The flushers' work for these requests belongs to them.
    for statsd in clients {
        statsd.flush().unwrap();
    }
    let requests = (n * s.uris.len()) as f64;
    let (cpu_end, flusher_end) = process_cpu_ns();
    Cost {
        cpu: (cpu_end - cpu) as f64 / requests,
        flusher: (flusher_end - flusher) as f64 / requests,
        wall: start.elapsed().as_nanos() as f64 / requests,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds = env_or("CORES_ROUNDS", 21);
    let n = env_or("CORES_REQUESTS", 50_000);
    let server: Server = std::env::var("CORES_SERVER").map_or(Server::default(), |name| {
        name.parse()
            .expect("CORES_SERVER: a server profile, e.g. etsy")
    });
    let client = || {
        Statsd::builder()
            .prefix("bench")
            .server(server)
            .build_with(NopMetricSink)
            .expect("a client on a NopMetricSink")
    };
    // The second client serves only the control with nothing shared.
    let clients = [client(), client()];
    let statsd = &clients[0];
    first_request(statsd);
    let workers = [Worker::spawn("bench-1"), Worker::spawn("bench-2")];
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "one router from 1 and 2 OS threads ({cores} cores): medians of {rounds} alternating \
         rounds of {n} requests per thread; CPU of every thread of the process (the flusher's \
         included) per request; server profile {server}"
    );
    let routers = [
        ("bare", App::Router(routes().with_state(()))),
        (
            "identity",
            App::Router(
                routes()
                    .layer(tower::layer::util::Identity::new())
                    .with_state(()),
            ),
        ),
        (
            "tower-statsd",
            App::Router(routes().layer(statsd.layer()).with_state(())),
        ),
    ];
    measure(&workers, &clients, &routers, &SCENARIOS, rounds, n);

    println!(
        "the layer alone: one service over a service that answers at once, cloned and called \
         per request, from 1 and 2 threads (same rounds)"
    );
    let one_service = [
        (
            "identity",
            App::Alone(alone(tower::layer::util::Identity::new())),
        ),
        ("tower-statsd", App::Alone(alone(statsd.layer()))),
    ];
    measure(&workers, &clients, &one_service, &SCENARIOS[..2], rounds, n);

    println!(
        "the control: the same, but the 2 threads on two layers of two clients (nothing of \
         tower-statsd shared between the threads); the 2-thread row here is what two cores cost \
         this machine with no line shared"
    );
    let apart = [
        (
            "identity",
            App::Apart([(); 2].map(|()| alone(tower::layer::util::Identity::new()))),
        ),
        (
            "tower-statsd",
            App::Apart([&clients[0], &clients[1]].map(|statsd| alone(statsd.layer()))),
        ),
    ];
    measure(&workers, &clients, &apart, &APART, rounds, n);
    println!(
        "  metrics dropped by tower-statsd: {}",
        statsd.sink().dropped() + clients[1].sink().dropped()
    );
    peak_designs(rounds, n * 200);
}

/// The wall time of the first request through a new router with the layer,
/// the first of the process: the layer calibrates its clock when it is
/// applied, so that this request does not pay for it (about a millisecond
/// on this machine, more on a busy one).
fn first_request(statsd: &Statsd) {
    let app = routes().layer(statsd.layer()).with_state(());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let start = Instant::now();
    rt.block_on(request(&app, "/a"));
    println!(
        "the first request through a new layer: {:.0} us wall",
        start.elapsed().as_secs_f64() * 1e6
    );
}

/// A route's counts as one of the peak designs keeps them.
#[derive(Default)]
struct Counts {
    /// Per shard (thread here): the `Arc`'s reference count, and its peak.
    shards: [CachePadded<(AtomicUsize, AtomicUsize)>; 2],
    /// The global design's count and peak, shared by every thread.
    global: CachePadded<(AtomicUsize, AtomicUsize)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Design {
    /// No peak: the shard's reference count only.
    None,
    PerShard,
    Global,
}

/// `n` requests' entries and ends on thread `t`'s shard, as `design` does them.
fn requests(counts: &Counts, t: usize, design: Design, n: usize) {
    let (count, peak) = &*counts.shards[t];
    let (global, global_peak) = &*counts.global;
    for _ in 0..n {
        let now = count.fetch_add(1, Relaxed) + 1;
        match design {
            Design::None => {}
            Design::PerShard => {
                let now = black_box(count.load(Relaxed));
                if now > peak.load(Relaxed) {
                    peak.fetch_max(now, Relaxed);
                }
            }
            Design::Global => {
                let now = global.fetch_add(1, Relaxed) + 1;
                if now > global_peak.load(Relaxed) {
                    global_peak.fetch_max(now, Relaxed);
                }
            }
        }
        black_box(now);
        if design == Design::Global {
            global.fetch_sub(1, Relaxed);
        }
        count.fetch_sub(1, Relaxed);
    }
}

/// CPU time of the calling thread so far, in ns (Linux).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("Linux /proc")
        .split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .expect("schedstat's first field")
}

/// CPU ns per request of `design` from `threads` threads at once (each
/// thread's own CPU, read by itself: the threads end with the round), and
/// the cores busy (CPU over wall time: 2 when two threads ran at once).
fn peak_round(counts: &Counts, design: Design, threads: usize, n: usize) -> Cost {
    let both = std::sync::Barrier::new(threads);
    let start = Instant::now();
    let cpu: u64 = thread::scope(|scope| {
        let spawned: Vec<_> = (0..threads)
            .map(|t| {
                let both = &both;
                scope.spawn(move || {
                    both.wait();
                    let cpu = thread_cpu_ns();
                    requests(counts, t, design, n);
                    thread_cpu_ns() - cpu
                })
            })
            .collect();
        spawned
            .into_iter()
            .map(|t| t.join().expect("a thread"))
            .sum()
    });
    let requests = (n * threads) as f64;
    Cost {
        cpu: cpu as f64 / requests,
        flusher: 0.0,
        wall: start.elapsed().as_nanos() as f64 / requests,
    }
}

fn peak_designs(rounds: usize, n: usize) {
    println!(
        "the peak in-flight gauge's designs, their request path alone (atomics of one route): \
         medians of {rounds} alternating rounds of {n} requests per thread, paired with no peak"
    );
    let counts = Counts::default();
    let designs = [
        ("no peak", Design::None),
        ("per-shard peaks", Design::PerShard),
        ("global counter", Design::Global),
    ];
    for threads in [1, 2] {
        let mut costs = vec![Vec::new(); designs.len()];
        for _ in 0..rounds {
            for (i, (_, design)) in designs.iter().enumerate() {
                costs[i].push(peak_round(&counts, *design, threads, n));
            }
        }
        for (i, (name, _)) in designs.iter().enumerate() {
            let added = median(
                costs[i]
                    .iter()
                    .zip(&costs[0])
                    .map(|(with, without)| with.cpu - without.cpu)
                    .collect(),
            );
            println!(
                "  {threads} thread(s)  {name:<16} cpu {:>6.1} ns   adds {added:+.1} ns a request   \
                 cores busy {:.2}",
                median(costs[i].iter().map(|c| c.cpu).collect()),
                median(costs[i].iter().map(|c| c.cpu / c.wall).collect()),
            );
        }
    }
}

/// Runs every scenario with every app in alternating rounds; the last app
/// is tower-statsd, the one before it the no-op layer.
fn measure(
    workers: &[Worker],
    clients: &[Statsd],
    apps: &[(&str, App)],
    scenarios: &[Scenario],
    rounds: usize,
    n: usize,
) {
    // Warm-up: route stats built, window buffers grown, threads' shards taken.
    for s in scenarios {
        for (_, app) in apps {
            round(workers, app, clients, s, n / 10);
        }
    }
    // costs[scenario][app][round]
    let mut costs = vec![vec![Vec::new(); apps.len()]; scenarios.len()];
    for _ in 0..rounds {
        for (si, s) in scenarios.iter().enumerate() {
            for (ai, (_, app)) in apps.iter().enumerate() {
                costs[si][ai].push(round(workers, app, clients, s, n));
            }
        }
    }
    let layer = apps.len() - 1;
    // Paired per round: the median of the differences.
    let added = |si: usize, base: usize| {
        median(
            costs[si][layer]
                .iter()
                .zip(&costs[si][base])
                .map(|(with, without)| with.cpu - without.cpu)
                .collect(),
        )
    };
    let mut over_identity = Vec::new();
    for (si, s) in scenarios.iter().enumerate() {
        for (ai, (name, _)) in apps.iter().enumerate() {
            println!(
                "  {:<22} {name:<13} cpu {:>6.0} ns   wall {:>6.0} ns   cores busy {:.2}",
                s.name,
                median(costs[si][ai].iter().map(|c| c.cpu).collect()),
                median(costs[si][ai].iter().map(|c| c.wall).collect()),
                median(costs[si][ai].iter().map(|c| c.cpu / c.wall).collect()),
            );
        }
        over_identity.push(added(si, layer - 1));
        let over_bare = if layer >= 2 {
            format!(", {:+.0} ns over bare", added(si, 0))
        } else {
            String::new()
        };
        println!(
            "  {:<22} tower-statsd adds {:+.0} ns cpu over the no-op layer{over_bare}; \
             {:.0} ns of it on the flusher thread",
            s.name,
            added(si, layer - 1),
            median(costs[si][layer].iter().map(|c| c.flusher).collect()),
        );
    }
    let one = over_identity[0];
    // The same app behind the no-op layer: what a second busy core does to
    // every request on this machine, with no line of the layer in it.
    let identity = |si: usize| median(costs[si][layer - 1].iter().map(|c| c.cpu).collect());
    for (si, s) in scenarios.iter().enumerate().skip(1) {
        println!(
            "  {:<22} adds {:.2}x what 1 thread adds (target <= 1.3x and <= 300 ns: {:+.0} ns); \
             the no-op layer's app costs {:.2}x a request",
            s.name,
            over_identity[si] / one,
            over_identity[si],
            identity(si) / identity(0),
        );
    }
}
