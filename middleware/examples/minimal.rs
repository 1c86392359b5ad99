//! A complete app with tower-statsd: one route, per-route metrics from the
//! layer, a handler's own counter, graceful shutdown and a final flush.

use axum::{routing::get, Extension, Router};
use tower_statsd::prelude::*;

async fn root(Extension(statsd): Extension<Statsd>) -> &'static str {
    statsd.incr("greetings").ok(); // a metric of your own, beside the layer's
    "Hello, world!"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // STATSD_HOST, STATSD_PORT, STATSD_PREFIX, ...: see "Configuration" in
    // tower-statsd's README.
    let statsd = Statsd::from_env()?;
    let app = Router::new()
        .route("/", get(root))
        .layer(statsd.layer().user_key(UserKey::query("id"), "user"))
        .layer(Extension(statsd.clone()));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;

    // Every answered request is counted: send what is still buffered.
    statsd.flush_async().await?;
    Ok(())
}
