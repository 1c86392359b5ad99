//! CPU the layer adds to one request, in process: a tiny axum router driven
//! with `oneshot`, with and without the layer; the layer's client sends into
//! cadence's `NopMetricSink`, so no I/O is measured, but the background
//! thread still aggregates every request.
//!
//! `cargo bench -p tower-statsd --bench overhead` prints criterion's figures,
//! then a summary: nanoseconds added per request on the request path (the
//! difference of the medians) and on the `tower-statsd` thread (its CPU time
//! from `/proc/self/task/*/schedstat`, Linux only). Target: ≤ 300 ns on the
//! request path.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use cadence::NopMetricSink;
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use http_body_util::BodyExt;
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_statsd::{Statsd, UserKey};

const URIS: [(&str, &str); 2] = [("root", "/?msg=Hello+world"), ("user", "/user?id=12345")];

fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { "{\"message\":\"Hello world\"}" }))
        .route("/user", get(|| async { "{\"id\":12345}" }))
}

fn statsd() -> Statsd {
    // In process, requests come ~10x faster than any server answers them: a
    // deep queue keeps every event, so the figures are those of the full
    // path and not of the cheap path of a dropped event (printed below).
    Statsd::builder()
        .prefix("bench")
        .build_with(NopMetricSink)
        .expect("a client on a NopMetricSink")
}

fn with_layer(statsd: &Statsd) -> Router {
    routes()
        .layer(statsd.layer().user_key(UserKey::query("id"), "user"))
        .with_state(())
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
}

/// One request through `app`, body collected (the layer reports at its end).
async fn request(app: &Router, uri: &'static str) {
    let req = Request::get(uri).body(Body::empty()).expect("a request");
    let response = app.clone().oneshot(req).await.expect("infallible");
    let body = response.into_body().collect().await.expect("a body");
    black_box(body);
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let statsd = statsd();
    // `.with_state(())` as `axum::serve` does: routes become services once,
    // not on every `oneshot`.
    let bare = routes().with_state(());
    let layered = with_layer(&statsd);
    for (name, uri) in URIS {
        let mut group = c.benchmark_group(name);
        group.bench_function("bare", |b| b.iter(|| rt.block_on(request(&bare, uri))));
        group.bench_function("tower-statsd", |b| {
            b.iter(|| rt.block_on(request(&layered, uri)))
        });
        group.finish();
    }
    summary(&rt, &statsd, &bare, &layered);
}

/// Nanoseconds per request over `n` requests.
fn per_request(rt: &Runtime, app: &Router, uri: &'static str, n: u32) -> f64 {
    let start = Instant::now();
    rt.block_on(async {
        for _ in 0..n {
            request(app, uri).await;
        }
    });
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

/// CPU time of the `tower-statsd` threads of this process, in ns (Linux).
fn worker_cpu_ns() -> Option<u64> {
    let mut total = None;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.trim() == "tower-statsd" {
            let sched = std::fs::read_to_string(path.join("schedstat")).ok()?;
            let ns: u64 = sched.split_whitespace().next()?.parse().ok()?;
            *total.get_or_insert(0) += ns;
        }
    }
    total
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn summary(rt: &Runtime, statsd: &Statsd, bare: &Router, layered: &Router) {
    const N: u32 = 100_000;
    println!("\nper-request cost of the layer (median of 9 alternating runs of {N} requests):");
    for (name, uri) in URIS {
        let (mut b, mut l, mut w) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..9 {
            b.push(per_request(rt, bare, uri, N));
            let before = worker_cpu_ns();
            l.push(per_request(rt, layered, uri, N));
            statsd.flush();
            if let (Some(before), Some(after)) = (before, worker_cpu_ns()) {
                w.push((after - before) as f64 / f64::from(N));
            }
        }
        let (b, l) = (median(b), median(l));
        let worker = if w.is_empty() {
            "n/a".to_owned()
        } else {
            format!("{:.0} ns", median(w))
        };
        println!(
            "  {name:<5} bare {b:>6.0} ns, with layer {l:>6.0} ns: +{:.0} ns on the request path \
             (target <= 300), plus {worker} on the tower-statsd thread; events dropped: {}",
            l - b,
            statsd.sink().dropped()
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
