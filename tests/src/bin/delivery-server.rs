//! The server of `scripts/bench-delivery`: the tutorial's handlers under a
//! load that saturates them, reporting to StatsD in one of two ways.
//!
//! ```text
//! delivery-server <variant> [addr]
//!
//!   statsd   example_api::app: the tower-statsd layer and its aggregating
//!            sink (pystatsd's STATSD_* variables)
//!   cadence  example_api::routes under a small middleware that emits, per
//!            request, the same metrics with a plain cadence client over
//!            cadence's QueuingMetricSink (capacity 65 536, like our queue)
//!            and BufferedUdpMetricSink (512-byte packets, like our default):
//!            `<route>.called`, the `<route>` timer, `<route>.status.<code>`,
//!            and the `user` set (the `id` query parameter) on a 2xx `/user`
//! ```
//!
//! Both count the responses they served. On SIGTERM the server stops taking
//! requests, flushes its metrics, and prints one line for the benchmark:
//! `served root=<n> user=<n> user_ok=<n> other=<n> client_dropped=<n>
//! packets_failed=<n>`. The prefix is `STATSD_PREFIX` (default `statstest`);
//! the root handler's sleep follows `DEMO_MAX_DELAY_MS` (the benchmark sets
//! 0); tokio runs `BENCH_WORKERS` worker threads (default 1).

use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use example_api::Settings;
use tower_statsd::cadence::{BufferedUdpMetricSink, MetricSink, QueuingMetricSink, StatsdClient};
use tower_statsd::prelude::*;
use tower_statsd::StatsdBuilder;

/// Responses served, by route and status class.
struct Served {
    root: AtomicU64,
    user: AtomicU64,
    user_ok: AtomicU64,
    other: AtomicU64,
}

static SERVED: Served = Served {
    root: AtomicU64::new(0),
    user: AtomicU64::new(0),
    user_ok: AtomicU64::new(0),
    other: AtomicU64::new(0),
};

/// Metrics the cadence client could not queue.
static CADENCE_ERRORS: AtomicU64 = AtomicU64::new(0);

async fn count(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    match path.as_str() {
        "/" => SERVED.root.fetch_add(1, Relaxed),
        "/user" => {
            if response.status().is_success() {
                SERVED.user_ok.fetch_add(1, Relaxed);
            }
            SERVED.user.fetch_add(1, Relaxed)
        }
        _ => SERVED.other.fetch_add(1, Relaxed),
    };
    response
}

/// A cadence sink shared between the client and the shutdown code.
#[derive(Clone)]
struct Shared(Arc<QueuingMetricSink>);

impl MetricSink for Shared {
    fn emit(&self, metric: &str) -> std::io::Result<usize> {
        self.0.emit(metric)
    }

    fn flush(&self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The per-request metrics of the layer, by hand, through cadence.
async fn cadence_metrics(
    axum::extract::State(client): axum::extract::State<Arc<StatsdClient>>,
    request: Request,
    next: Next,
) -> Response {
    let route = match request.uri().path() {
        "/" => "root",
        "/user" => "user",
        _ => "not_found",
    };
    let id = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("id=")))
        .and_then(|id| id.parse::<i64>().ok());
    let start = Instant::now();
    let response = next.run(request).await;
    let elapsed = start.elapsed();
    client.incr(&format!("{route}.called")).ok();
    client.time(route, elapsed).ok();
    client
        .incr(&format!("{route}.status.{}", response.status().as_u16()))
        .ok();
    if let (true, Some(id)) = (route == "user" && response.status().is_success(), id) {
        client.set("user", id).ok();
    }
    response
}

fn main() {
    if let Err(e) = run() {
        eprintln!("delivery-server: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let (variant, addr, workers) = e2e::bench_args("usage: delivery-server statsd|cadence [addr]")?;
    let settings = Settings::from_env()?;
    let prefix = std::env::var("STATSD_PREFIX").unwrap_or_else(|_| "statstest".to_owned());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    let (app, finish): (Router, Box<dyn FnOnce() -> (u64, u64)>) = match variant.as_str() {
        "statsd" => {
            let statsd = StatsdBuilder::from_env()
                .map_err(|e| e.to_string())?
                .prefix(prefix)
                .build()
                .map_err(|e| e.to_string())?;
            let app = example_api::app(settings, &statsd);
            let finish = move || {
                if let Err(error) = statsd.flush() {
                    eprintln!("delivery-server: {error}");
                }
                (statsd.sink().dropped(), statsd.sink().failed_packets())
            };
            (app, Box::new(finish))
        }
        "cadence" => {
            let host = std::env::var("STATSD_HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
            let port = std::env::var("STATSD_PORT").unwrap_or_else(|_| "8125".to_owned());
            let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
            socket.set_nonblocking(true).map_err(|e| e.to_string())?;
            let udp = BufferedUdpMetricSink::from(format!("{host}:{port}"), socket)
                .map_err(|e| e.to_string())?;
            let queue = Shared(Arc::new(QueuingMetricSink::with_capacity(udp, 65_536)));
            let client = Arc::new(
                StatsdClient::builder(&prefix, queue.clone())
                    .with_error_handler(|_| {
                        CADENCE_ERRORS.fetch_add(1, Relaxed);
                    })
                    .build(),
            );
            let app = example_api::routes(settings).layer(axum::middleware::from_fn_with_state(
                client.clone(),
                cadence_metrics,
            ));
            let finish = move || {
                // Wait for cadence's worker to empty its queue, then send the
                // last partial packet.
                let end = Instant::now() + Duration::from_secs(5);
                while queue.0.queued() > 0 && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = queue.flush();
                let stats = queue.0.stats();
                drop(client);
                (CADENCE_ERRORS.load(Relaxed), stats.packets_dropped)
            };
            (app, Box::new(finish))
        }
        other => return Err(format!("unknown variant {other:?} (statsd or cadence)")),
    };
    let app = app.layer(axum::middleware::from_fn(count));

    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("a SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            })
            .await
            .map_err(|e| e.to_string())
    })?;
    let (dropped, failed) = finish();
    println!(
        "served root={} user={} user_ok={} other={} client_dropped={dropped} packets_failed={failed} cpu_ms={}",
        SERVED.root.load(Relaxed),
        SERVED.user.load(Relaxed),
        SERVED.user_ok.load(Relaxed),
        SERVED.other.load(Relaxed),
        e2e::bench::process_cpu_ms("self").unwrap_or(0),
    );
    Ok(())
}
