//! The server of `scripts/bench-overhead`: the tutorial's handlers
//! (`example_api::routes`) served by axum, with or without metrics.
//!
//! ```text
//! bench-server <variant> [addr]
//!
//!   bare        example_api::routes, nothing else (the baseline)
//!   statsd      example_api::app: the tower-statsd layer (unique users from
//!               ?id=) plus the client as an Extension, sending over UDP to
//!               STATSD_HOST:STATSD_PORT (pystatsd's variables; prefix
//!               statstest unless STATSD_PREFIX is set)
//!   statsd-layer  the tower-statsd layer alone, without the Extension
//!   prometheus  axum-prometheus' PrometheusMetricLayer::pair() and /metrics
//! ```
//!
//! `addr` defaults to `BENCH_ADDR`, then `127.0.0.1:8000`. The root handler's
//! sleep follows `DEMO_MAX_DELAY_MS`, which the benchmark sets to 0. Tokio
//! runs `BENCH_WORKERS` worker threads (default 1: the benchmark pins the
//! server to one core). Stops on SIGTERM or Ctrl-C, flushing StatsD.

use axum::routing::get;
use axum::Router;
use axum_prometheus::PrometheusMetricLayer;
use example_api::Settings;
use tower_statsd::{StatsdBuilder, UserKey};

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-server: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let (variant, addr, workers) =
        e2e::bench_args("usage: bench-server bare|statsd|statsd-layer|prometheus [addr]")?;
    let settings = Settings::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // axum-prometheus spawns its upkeep task while building the layer.
    let _entered = runtime.enter();

    let statsd_client = || {
        let mut builder = StatsdBuilder::from_env().map_err(|e| e.to_string())?;
        if std::env::var_os("STATSD_PREFIX").is_none() {
            builder = builder.prefix("statstest");
        }
        builder.build().map_err(|e| e.to_string())
    };
    let mut statsd = None;
    let app: Router = match variant.as_str() {
        "bare" => example_api::routes(settings),
        "statsd" => {
            let client = statsd_client()?;
            let app = example_api::app(settings, &client);
            statsd = Some(client);
            app
        }
        "statsd-layer" => {
            let client = statsd_client()?;
            let app = example_api::routes(settings)
                .layer(client.layer().user_key(UserKey::query("id"), "user"));
            statsd = Some(client);
            app
        }
        "prometheus" => {
            let (layer, handle) = PrometheusMetricLayer::pair();
            example_api::routes(settings)
                .route("/metrics", get(move || async move { handle.render() }))
                .layer(layer)
        }
        other => {
            return Err(format!(
                "unknown variant {other:?}: bare, statsd, statsd-layer or prometheus"
            ))
        }
    };

    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        eprintln!(
            "bench-server: {variant} on http://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|e| e.to_string())
    })?;
    if let Some(statsd) = statsd {
        // Best effort: the run is over and measured; say so if metrics were
        // left unsent, without failing it.
        if let Err(error) = statsd.flush() {
            eprintln!("bench-server: {error}");
        }
    }
    Ok(())
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}
