//! Heap allocations the layer adds to one request, counted on every thread
//! of the process.
//!
//! `stats_alloc` wraps the system allocator of this test binary and counts
//! every allocation, whichever thread makes it: the request path (service,
//! future, body, recording into the route's window) and the `tower-statsd`
//! flusher alike. The flusher works once per window, whatever the number of
//! requests in it: its allocations are counted per window, around a flush
//! of the requests just measured.

use std::alloc::System;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use cadence::NopMetricSink;
use http::Request;
use http_body_util::BodyExt;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_statsd::{Statsd, UserKey};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const REQUESTS: u64 = 10_000;

/// What the layer may add per request, over a layer that does nothing.
///
/// Any layer added with `Router::layer` costs allocations in axum itself
/// (the route service is cloned out of its box and its future is boxed); an
/// `Identity` layer shows them, and the test prints them. The layer's own
/// share is what it adds on top: the response body, boxed again by axum
/// because its type changed, and nothing else.
const BUDGET: f64 = 1.0;

fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { "{\"message\":\"Hello world\"}" }))
        .route("/user", get(|| async { "{\"id\":12345}" }))
        .route("/users/{id}/posts", get(|| async { "[]" }))
}

async fn request(app: &Router, uri: &str) {
    let req = Request::get(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    assert!(
        response.status().is_success(),
        "{uri}: {}",
        response.status()
    );
    response.into_body().collect().await.unwrap();
}

/// The flusher's work for one window may allocate this much, however many
/// requests the window holds (names of status counters, the list of
/// routes, packets).
const WINDOW_BUDGET: usize = 16;

/// Allocations per request of `uri` on all threads, after a warm-up that
/// builds the route's stats and grows its windows' buffers; and those of
/// the flush that sends them.
fn allocations(rt: &Runtime, app: &Router, statsd: &Statsd, uri: &str) -> (f64, usize) {
    let run = || {
        rt.block_on(async {
            for _ in 0..REQUESTS {
                request(app, uri).await;
            }
        })
    };
    // Two windows: the flusher swaps a spare window in, so both have grown.
    for _ in 0..2 {
        run();
        statsd.flush().unwrap();
    }
    let requests = Region::new(GLOBAL);
    run();
    let per_request = requests.change().allocations as f64 / REQUESTS as f64;
    let window = Region::new(GLOBAL);
    statsd.flush().unwrap();
    (per_request, window.change().allocations)
}

#[test]
fn the_layer_adds_at_most_one_allocation_per_request_over_a_noop_layer_on_all_threads() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Windows end only on `flush()`, so each is measured whole.
    let statsd = Statsd::builder()
        .prefix("alloc")
        .flush_interval(std::time::Duration::from_secs(3600))
        .build_with(NopMetricSink)
        .unwrap();
    // `.with_state(())` as `axum::serve` does: it turns the routes into
    // services once, instead of on every `oneshot`.
    let bare = routes().with_state(());
    let identity = routes()
        .layer(tower::layer::util::Identity::new())
        .with_state(());
    let layered = routes()
        .layer(statsd.layer().user_key(UserKey::query("id"), "user"))
        .with_state(());

    let mut worst = 0.0_f64;
    let mut worst_window = 0;
    for uri in ["/?msg=Hello+world", "/user?id=12345", "/users/7/posts"] {
        let (without, _) = allocations(&rt, &bare, &statsd, uri);
        let (noop, _) = allocations(&rt, &identity, &statsd, uri);
        let (with, window) = allocations(&rt, &layered, &statsd, uri);
        println!(
            "{uri:<20} allocations per request, all threads: {without:.4} bare, {noop:.4} with a \
             no-op layer, {with:.4} with tower-statsd: +{:.4} over bare, +{:.4} over a no-op \
             layer; plus {window} per window on the flusher",
            with - without,
            with - noop,
        );
        worst = worst.max(with - noop);
        worst_window = worst_window.max(window);
    }
    assert!(
        worst <= BUDGET,
        "the layer adds {worst:.3} allocations per request over a no-op layer (budget {BUDGET})"
    );
    assert!(
        worst_window <= WINDOW_BUDGET,
        "a window's flush made {worst_window} allocations (budget {WINDOW_BUDGET})"
    );
}
