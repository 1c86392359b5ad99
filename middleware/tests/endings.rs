//! Requests that end badly are still counted and timed exactly once: a
//! handler panic (caught by `CatchPanicLayer`, or not caught at all), a client
//! that disconnects mid-body on a real server, and a server-sent-event stream
//! that is timed to its end.

mod support;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use axum::Router;
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use support::{flushed_lines, spy_statsd, totals, Totals};
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_statsd::Statsd;

/// Long enough for the test to see the request in flight (it flushes
/// every 20 ms or so while it waits).
const HANDLER_DELAY: Duration = Duration::from_millis(300);

/// Flushes until `done(totals)` holds or 10 s pass; returns everything seen.
async fn flushed_until(
    statsd: &Statsd,
    rx: &support::spy::Packets,
    done: impl Fn(&Totals) -> bool,
) -> Totals {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    loop {
        let (s, r) = (statsd.clone(), rx.clone());
        lines.extend(
            tokio::task::spawn_blocking(move || flushed_lines(&s, &r))
                .await
                .unwrap(),
        );
        let t = totals(&lines);
        if done(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "not reported within 10 s: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (flushing, 10 s at most) until `route`'s in-flight gauge says 1.
async fn in_flight_while_running(statsd: &Statsd, rx: &support::spy::Packets, route: &str) {
    let gauge = format!("{route}.in_flight");
    flushed_until(statsd, rx, |t| {
        t.gauges
            .get(&gauge)
            .is_some_and(|v| v.iter().any(|g| g == "1"))
    })
    .await;
}

/// `/boom`: a handler that panics after [`HANDLER_DELAY`].
fn panicking_router() -> Router {
    Router::new().route(
        "/boom",
        get(|| async {
            tokio::time::sleep(HANDLER_DELAY).await;
            if HANDLER_DELAY > Duration::ZERO {
                panic!("handler bug (expected by the test)");
            }
            "unreachable"
        }),
    )
}

#[tokio::test]
async fn a_caught_handler_panic_is_a_timed_500() {
    let (statsd, rx) = spy_statsd("t");
    let app = panicking_router()
        // Our layer outside catch_panic: it sees the 500 catch_panic makes.
        .layer(CatchPanicLayer::new())
        .layer(statsd.layer());
    let request = tokio::spawn(app.oneshot(Request::get("/boom").body(Body::empty()).unwrap()));
    in_flight_while_running(&statsd, &rx, "t.boom").await;
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = response.into_body().collect().await.unwrap().to_bytes();

    let t = totals(&flushed_lines(&statsd, &rx));
    assert_eq!(
        t.gauges["t.boom.in_flight"],
        ["1", "0"],
        "the window's peak (in flight at its start), then 0: the route retired"
    );
    assert_eq!(t.counters["t.boom.called"], 1.0);
    assert_eq!(t.counters["t.boom.status.500"], 1.0);
    assert_eq!(t.counters["t.boom.bytes_sent"], body.len() as f64);
    assert_eq!(t.counters.len(), 3, "{:?}", t.counters);
    let timers = &t.timers["t.boom"];
    assert_eq!(timers.len(), 1);
    assert!(
        timers[0] >= HANDLER_DELAY.as_secs_f64() * 1000.0,
        "timed through the panic: {timers:?}"
    );
    assert!(flushed_lines(&statsd, &rx).is_empty(), "and only once");
}

#[tokio::test]
async fn an_uncaught_handler_panic_still_counts_and_times_without_a_status() {
    let (statsd, rx) = spy_statsd("t");
    let app = panicking_router().layer(statsd.layer());
    let task = tokio::spawn(app.oneshot(Request::get("/boom").body(Body::empty()).unwrap()));
    in_flight_while_running(&statsd, &rx, "t.boom").await;
    assert!(task.await.unwrap_err().is_panic());

    let t = totals(&flushed_lines(&statsd, &rx));
    assert_eq!(
        t.gauges["t.boom.in_flight"],
        ["1", "0"],
        "the window's peak, then 0: drained by the unwind"
    );
    assert_eq!(t.counters["t.boom.called"], 1.0);
    assert!(
        t.counters.keys().all(|k| !k.contains(".status.")),
        "no response, no status: {:?}",
        t.counters
    );
    let timers = &t.timers["t.boom"];
    assert_eq!(timers.len(), 1);
    assert!(
        timers[0] >= HANDLER_DELAY.as_secs_f64() * 1000.0,
        "{timers:?}"
    );
    assert!(flushed_lines(&statsd, &rx).is_empty());
}

/// A body that sends a chunk every 5 ms forever, and says when it is dropped.
struct Endless {
    tick: tokio::time::Interval,
    dropped: Arc<AtomicBool>,
}

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::ready!(self.tick.poll_tick(cx));
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"tick\n")))))
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// Serves `app` on 127.0.0.1:0 with hyper (through `axum::serve`).
async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_body_is_timed_once() {
    let (statsd, rx) = spy_statsd("t");
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let app = Router::new()
        .route(
            "/stream",
            get(move || {
                let dropped = flag.clone();
                async move {
                    let tick = tokio::time::interval(Duration::from_millis(5));
                    Body::new(Endless { tick, dropped })
                }
            }),
        )
        .layer(statsd.layer());
    let addr = serve(app).await;

    // A raw client: read the head and the first chunk, then hang up.
    let started = Instant::now();
    let (s, r) = (statsd.clone(), rx.clone());
    tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("tick") {
            let n = conn.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "the server closed first: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(
            seen.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{:?}",
            String::from_utf8_lossy(&seen)
        );
        let streaming = flushed_lines(&s, &r);
        assert!(
            streaming.contains(&"t.stream.in_flight:1|g".to_owned()),
            "in flight while it streams: {streaming:?}"
        );
        conn.shutdown(std::net::Shutdown::Both).unwrap();
    })
    .await
    .unwrap();
    let hung_up = started.elapsed();

    let t = flushed_until(&statsd, &rx, |t| t.timers.contains_key("t.stream")).await;
    assert_eq!(
        t.gauges["t.stream.in_flight"].last().map(String::as_str),
        Some("1"),
        "the window's peak"
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "the server dropped the endless body"
    );
    assert_eq!(t.counters["t.stream.called"], 1.0);
    assert_eq!(t.counters["t.stream.status.200"], 1.0);
    assert_eq!(t.timers["t.stream"].len(), 1, "exactly one timer value");
    let ms = t.timers["t.stream"][0];
    assert!(
        ms > 0.0 && ms < hung_up.as_secs_f64() * 1000.0 + 10_000.0,
        "{ms} ms"
    );
    // Nothing more arrives later (the server is still running).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, r) = (statsd.clone(), rx.clone());
    let later = tokio::task::spawn_blocking(move || flushed_lines(&s, &r))
        .await
        .unwrap();
    assert_eq!(
        later,
        ["t.stream.in_flight:0|g"],
        "drained by the disconnect, not reported again"
    );
}

/// When a stream was created, and when it ended.
type Span = (Instant, Option<Instant>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sent_event_stream_is_timed_to_its_end() {
    const EVENTS: u32 = 5;
    const GAP: Duration = Duration::from_millis(30);
    let (statsd, rx) = spy_statsd("t");
    // When the stream was created and when it ended, seen from the server.
    let span: Arc<Mutex<Option<Span>>> = Arc::default();
    let record = span.clone();
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let record = record.clone();
                async move {
                    *record.lock().unwrap() = Some((Instant::now(), None));
                    let stream = futures_util::stream::unfold(0, move |n| {
                        let record = record.clone();
                        async move {
                            if n == EVENTS {
                                if let Some((_, end)) = record.lock().unwrap().as_mut() {
                                    *end = Some(Instant::now());
                                }
                                return None;
                            }
                            tokio::time::sleep(GAP).await;
                            Some((
                                Ok::<_, Infallible>(Event::default().data(format!("event {n}"))),
                                n + 1,
                            ))
                        }
                    });
                    Sse::new(stream)
                }
            }),
        )
        .layer(statsd.layer());
    let addr = serve(app).await;

    let body = tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        conn.read_to_string(&mut body).unwrap();
        body
    })
    .await
    .unwrap();
    assert!(body.contains("text/event-stream"), "{body}");
    assert!(
        body.contains(&format!("data: event {}", EVENTS - 1)),
        "all events arrived: {body}"
    );

    let t = flushed_until(&statsd, &rx, |t| t.timers.contains_key("t.events")).await;
    let (created, ended) = span.lock().unwrap().expect("the handler ran");
    let stream_ms = (ended.expect("the stream ended") - created).as_secs_f64() * 1000.0;
    assert!(stream_ms >= (GAP * EVENTS).as_secs_f64() * 1000.0);
    assert_eq!(t.counters["t.events.called"], 1.0);
    assert_eq!(t.counters["t.events.status.200"], 1.0);
    let timers = &t.timers["t.events"];
    assert_eq!(timers.len(), 1, "exactly once");
    assert!(
        timers[0] >= stream_ms,
        "timed to the stream's end: timer {} ms < stream {stream_ms} ms",
        timers[0]
    );
}
