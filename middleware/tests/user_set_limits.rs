//! A route's user set at its limits, through the layer: the window asks for an early send at exactly
//! 1 024 distinct users, and past 65 536 held (the flusher far behind) it
//! refuses new members and counts each one as dropped.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use crossbeam_channel::{Receiver, Sender};
use http::{Request, Response};
use http_body_util::BodyExt;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_statsd::cadence::MetricSink;
use tower_statsd::{ResponseBody, Statsd, UserKey};

/// Distinct users a window holds before it is sent early.
const EARLY: usize = 1_024;
/// Distinct users a window holds at most while the flusher lags.
const MAX_MEMBERS: usize = 64 * EARLY;

/// A transport that blocks while the test holds its gate, and says when the
/// flusher is waiting in it.
struct Gated {
    gate: Arc<Mutex<()>>,
    waiting: Arc<AtomicBool>,
    tx: Sender<String>,
}

impl MetricSink for Gated {
    fn emit(&self, metric: &str) -> std::io::Result<usize> {
        self.waiting.store(true, Ordering::SeqCst);
        let _open = self.gate.lock().unwrap();
        self.tx.send(metric.to_owned()).unwrap();
        Ok(metric.len())
    }
}

struct Rig {
    statsd: Statsd,
    rx: Receiver<String>,
    gate: Arc<Mutex<()>>,
    waiting: Arc<AtomicBool>,
}

fn rig() -> Rig {
    let (tx, rx) = crossbeam_channel::unbounded();
    let gate = Arc::new(Mutex::new(()));
    let waiting = Arc::new(AtomicBool::new(false));
    let statsd = Statsd::builder()
        .prefix("t")
        .flush_interval(Duration::from_secs(3600))
        .build_with(Gated {
            gate: gate.clone(),
            waiting: waiting.clone(),
            tx,
        })
        .unwrap();
    Rig {
        statsd,
        rx,
        gate,
        waiting,
    }
}

/// The layer with a user set, around a service that answers 200 at once.
fn service(
    statsd: &Statsd,
) -> impl Service<Request<Body>, Response = Response<ResponseBody<Body>>, Error = Infallible> {
    statsd
        .layer()
        .user_key(UserKey::query("id"), "user")
        .layer(service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }))
}

/// Sends one request per id through `svc`, on this thread (one shard).
async fn visit<S, B>(svc: &mut S, ids: impl Iterator<Item = usize>)
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    for id in ids {
        let request = Request::get(format!("/?id=u{id}"))
            .body(Body::empty())
            .unwrap();
        let response = svc.ready().await.unwrap().call(request).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
}

/// The set members in what the transport received so far.
fn members(rx: &Receiver<String>) -> Vec<String> {
    rx.try_iter()
        .flat_map(|packet| {
            packet
                .lines()
                .filter_map(|l| l.strip_prefix("t.user:")?.strip_suffix("|s"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn the_window_is_sent_early_at_exactly_1024_users() {
    let rig = rig();
    let mut svc = service(&rig.statsd);
    visit(&mut svc, 0..EARLY - 1).await;
    // Not one early: an hour-long window sends nothing by itself (the
    // flusher, had it been asked, would have started at once).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !rig.waiting.load(Ordering::SeqCst),
        "sent before the 1 024th user"
    );
    // The 1 024th user starts the send, without `flush()` (its packets are
    // then paced over the window).
    visit(&mut svc, EARLY - 1..EARLY).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rig.waiting.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "no early send at 1 024 users");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rig.statsd.flush().unwrap();
    let mut got = members(&rig.rx);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), EARLY);
}

// The gate blocks the flusher's OS thread, not a task: holding it across the
// awaits of this single-threaded test is the point.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn past_the_limit_new_users_are_refused_and_counted() {
    let rig = rig();
    let gate = rig.gate.lock().unwrap();
    let mut svc = service(&rig.statsd);
    visit(&mut svc, 0..EARLY).await;
    // The early send took the window and is stuck in the transport.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rig.waiting.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "no early send");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A new window fills to its limit; ten more new users are refused,
    // and users it already holds still count (no refusal for them).
    const REFUSED: usize = 10;
    visit(&mut svc, EARLY..EARLY + MAX_MEMBERS + REFUSED).await;
    visit(&mut svc, EARLY..EARLY + 5).await;
    drop(gate);
    rig.statsd.flush().unwrap();
    let mut got = members(&rig.rx);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), EARLY + MAX_MEMBERS, "every member held was sent");
    assert_eq!(rig.statsd.sink().dropped(), REFUSED as u64);
}
