//! tower-statsd without axum: a hyper server whose service is a
//! `tower::service_fn`, wrapped in the layer, with route names from a
//! closure (there is no `MatchedPath` outside an axum router) and the
//! health check left out of the metrics.

use std::borrow::Cow;
use std::convert::Infallible;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower::{service_fn, Layer};
use tower_statsd::{RouteNamer, Statsd};

async fn handle(request: Request<Incoming>) -> Result<Response<String>, Infallible> {
    let (status, body) = match request.uri().path() {
        "/" => (StatusCode::OK, "Hello, world!"),
        "/health" => (StatusCode::OK, "ok"),
        path if path.starts_with("/items/") => (StatusCode::OK, "an item"),
        _ => (StatusCode::NOT_FOUND, "not found"),
    };
    let mut response = Response::new(body.to_owned());
    *response.status_mut() = status;
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // STATSD_HOST, STATSD_PORT, STATSD_PREFIX, ...: see "Configuration" in
    // tower-statsd's README.
    let statsd = Statsd::from_env()?;
    // A template per route, never the raw path: `/items/17` and `/items/18`
    // are one route, `items._id`. Anything else is `unmatched`.
    let namer = RouteNamer::new(|parts| match parts.uri.path() {
        "/" => Some(Cow::Borrowed("/")),
        "/health" => Some(Cow::Borrowed("/health")),
        path if path.starts_with("/items/") => Some(Cow::Borrowed("/items/{id}")),
        _ => None,
    });
    let service = statsd
        .layer()
        .route_namer(namer)
        .exclude_routes(["/health"])
        .layer(service_fn(handle));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => break,
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                eprintln!("connection: {error}");
            }
        });
    }
    // Send what is still buffered.
    statsd.flush_async().await?;
    Ok(())
}
