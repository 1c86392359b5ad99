//! The tutorial's API. Configuration: `API_ADDR` (default 127.0.0.1:8000),
//! `DEMO_MAX_DELAY_MS` (default 500), pystatsd's `STATSD_*` variables, and
//! `STATSD_PREFIX` defaulting to `statstest` as in the tutorial.

use std::io::IsTerminal;
use std::time::Duration;

use example_api::{app, resident_memory_bytes, statsd_health, Settings};
use tower_statsd::prelude::*;
use tower_statsd::StatsdBuilder;

#[tokio::main]
async fn main() {
    // Colours only on a terminal: not in log files, pipes or `docker logs`.
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Err(e) = run().await {
        eprintln!("example-api: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), String> {
    let settings = Settings::from_env()?;
    let mut builder = StatsdBuilder::from_env().map_err(|e| e.to_string())?;
    if std::env::var_os("STATSD_PREFIX").is_none() {
        builder = builder.prefix("statstest");
    }
    let statsd = builder.build().map_err(|e| e.to_string())?;

    let host = std::env::var("STATSD_HOST").unwrap_or_else(|_| "localhost".to_owned());
    let admin_port = match std::env::var("STATSD_ADMIN_PORT") {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("STATSD_ADMIN_PORT={v:?} is not a port"))?,
        Err(_) => 8126,
    };
    match statsd_health(&host, admin_port).await {
        Ok(answer) => tracing::info!("StatsD at {host}:{admin_port} answers `{answer}`"),
        Err(e) => tracing::warn!(
            "StatsD admin port {host}:{admin_port} did not answer ({e}); requests are \
             served anyway and metrics flow once it is up. Start the stack with `scripts/stack start`."
        ),
    }

    // The tutorial's absolute gauge, kept fresh in the background.
    let gauge = statsd.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(10));
        loop {
            every.tick().await;
            if let Some(bytes) = resident_memory_bytes() {
                gauge.gauge("resources.memory", bytes).ok();
            }
        }
    });

    let addr = std::env::var("API_ADDR").unwrap_or_else(|_| "127.0.0.1:8000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (API_ADDR): {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("listening on http://{local} (try http://{local}/?msg=Hello+world)");

    axum::serve(listener, app(settings, &statsd))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;

    // Every request the server answered is counted: send what is buffered.
    match tokio::task::spawn_blocking(move || statsd.flush()).await {
        Ok(Ok(())) => tracing::info!(flushed = true, "stopped"),
        Ok(Err(error)) => tracing::warn!(%error, "stopped; metrics not all sent"),
        Err(error) => tracing::warn!(%error, "stopped; the flush panicked"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests, then flushing metrics");
}
