//! Heap allocations the layer adds to one request on the request path.
//!
//! `allocation-counter` installs a counting global allocator in this test
//! binary only, and counts the allocations of the current thread. The
//! requests run on a current-thread runtime, so everything the request path
//! does (service, future, body, the hand-over to the stage) is counted; the
//! aggregation on the `tower-statsd` thread is not (it is off the request
//! path, and measured by `benches/overhead.rs`).

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use cadence::NopMetricSink;
use http::Request;
use http_body_util::BodyExt;
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_statsd::{Statsd, UserKey};

const REQUESTS: u64 = 1_000;
/// What the layer may add per request, over a layer that does nothing.
///
/// Any layer added with `Router::layer` costs two allocations per request
/// in axum itself (the route service is cloned out of its box and its future
/// is boxed); an `Identity` layer shows them, and the test prints them. The
/// layer's own share is what it adds on top: the response body, boxed again
/// by axum because its type changed, and nothing else on a plain query.
const BUDGET: f64 = 2.0;

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

/// Allocations per request of `uri` on this thread, after a warm-up that
/// fills the per-route name cache.
fn allocations_per_request(rt: &Runtime, app: &Router, uri: &str) -> f64 {
    rt.block_on(async {
        for _ in 0..100 {
            request(app, uri).await;
        }
    });
    let info = allocation_counter::measure(|| {
        rt.block_on(async {
            for _ in 0..REQUESTS {
                request(app, uri).await;
            }
        });
    });
    info.count_total as f64 / REQUESTS as f64
}

#[test]
fn the_layer_adds_at_most_two_allocations_per_request_over_a_noop_layer() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let statsd = Statsd::builder()
        .prefix("alloc")
        .build_with(NopMetricSink)
        .unwrap();
    // `.with_state(())` as `axum::serve` does: it turns the routes into
    // services once, instead of on every `oneshot`.
    let bare = routes().with_state(());
    // Any layer on an axum Router costs some boxing (the route service, its
    // future, the response body); a layer that does nothing shows how much.
    let identity = routes()
        .layer(tower::layer::util::Identity::new())
        .with_state(());
    let layered = routes()
        .layer(statsd.layer().user_key(UserKey::query("id"), "user"))
        .with_state(());

    let mut worst = 0.0_f64;
    for uri in ["/?msg=Hello+world", "/user?id=12345", "/users/7/posts"] {
        let without = allocations_per_request(&rt, &bare, uri);
        let noop = allocations_per_request(&rt, &identity, uri);
        let with = allocations_per_request(&rt, &layered, uri);
        println!(
            "{uri:<20} allocations per request: {without:.2} bare, {noop:.2} with a no-op layer, \
             {with:.2} with tower-statsd: +{:.2} over bare, +{:.2} over a no-op layer",
            with - without,
            with - noop,
        );
        worst = worst.max(with - noop);
    }
    statsd.flush();
    assert!(
        worst <= BUDGET,
        "the layer adds {worst:.2} allocations per request over a no-op layer (budget {BUDGET})"
    );
}
