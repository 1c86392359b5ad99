//! The request lifecycle, step by step: the request's metrics are reported
//! exactly once, at the end of the response body — whether it completes,
//! fails, or is dropped unread — and never when the future resolves, and
//! right after the last data frame, before the body is polled to its end.
//! Until then the request counts in the route's in-flight gauge, and every
//! ending takes it out again.
//!
//! On the way the layer passes through what it does not own: the response's
//! `Content-Length` through a real hyper server (`size_hint`), its
//! `is_end_stream`, and readiness (`poll_ready`). And the last handle's drop
//! sends the final window before it returns.

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::get;
use axum::Router;
use bytes_frame::ChannelBody;
use http::{Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use support::{flushed_lines, spy_statsd, totals};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_statsd::cadence::prelude::*;

/// What a window holds while one request of `/` (unmatched here) is in
/// flight, and the window's peak when it ended in the window.
const IN_FLIGHT: &str = "t.unmatched.in_flight:1|g";

/// A response body fed by the test, frame by frame.
mod bytes_frame {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body::{Body, Frame};
    use tokio::sync::mpsc;

    pub(crate) struct ChannelBody(pub(crate) mpsc::Receiver<Result<&'static str, &'static str>>);

    impl Body for ChannelBody {
        type Data = axum::body::Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            self.0.poll_recv(cx).map(|item| {
                item.map(|r| r.map(|s| Frame::data(axum::body::Bytes::from_static(s.as_bytes()))))
            })
        }
    }
}

type Sender = tokio::sync::mpsc::Sender<Result<&'static str, &'static str>>;

fn streaming_response() -> (Sender, Response<ChannelBody>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    (tx, Response::new(ChannelBody(rx)))
}

#[tokio::test]
async fn timer_fires_once_when_the_body_is_collected() {
    let (statsd, rx) = spy_statsd("t");
    let (tx, response) = streaming_response();
    let mut response = Some(response);
    let svc = statsd.layer().layer(service_fn(move |_req: Request<Body>| {
        let r = response.take().expect("one request");
        async move { Ok::<_, Infallible>(r) }
    }));

    let response = svc
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        flushed_lines(&statsd, &rx),
        [IN_FLIGHT],
        "nothing but the in-flight gauge when the future resolves"
    );

    tx.send(Ok("hello ")).await.unwrap();
    let mut body = response.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "hello ");
    assert_eq!(
        flushed_lines(&statsd, &rx),
        [IN_FLIGHT],
        "nothing but the in-flight gauge mid-body"
    );

    tx.send(Ok("world")).await.unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "world");

    let lines = flushed_lines(&statsd, &rx);
    assert!(
        lines.contains(&IN_FLIGHT.to_owned()),
        "the window's peak: {lines:?}"
    );
    let t = totals(&lines);
    assert_eq!(t.counters["t.unmatched.called"], 1.0);
    assert_eq!(t.counters["t.unmatched.status.200"], 1.0);
    assert_eq!(
        t.counters["t.unmatched.bytes_sent"],
        "hello world".len() as f64,
        "the bytes of the frames"
    );
    assert_eq!(t.timers["t.unmatched"].len(), 1, "exactly one timer value");
    assert!(
        flushed_lines(&statsd, &rx).is_empty(),
        "and nothing more later"
    );
}

#[tokio::test]
async fn timer_fires_once_when_the_body_is_dropped_unread() {
    let (statsd, rx) = spy_statsd("t");
    let (_tx, response) = streaming_response();
    let mut response = Some(response);
    let svc = statsd.layer().layer(service_fn(move |_req: Request<Body>| {
        let r = response.take().expect("one request");
        async move { Ok::<_, Infallible>(r) }
    }));
    let response = svc
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(flushed_lines(&statsd, &rx), [IN_FLIGHT]);

    // The client went away: the server drops the body without reading it.
    drop(response);
    let lines = flushed_lines(&statsd, &rx);
    assert!(
        lines.contains(&IN_FLIGHT.to_owned()),
        "the window's peak: {lines:?}"
    );
    let t = totals(&lines);
    assert_eq!(t.timers["t.unmatched"].len(), 1);
    assert_eq!(t.counters["t.unmatched.called"], 1.0);
    assert_eq!(t.counters["t.unmatched.status.200"], 1.0);
    assert!(flushed_lines(&statsd, &rx).is_empty());
}

#[tokio::test]
async fn timer_fires_once_when_the_body_fails() {
    let (statsd, rx) = spy_statsd("t");
    let (tx, response) = streaming_response();
    let mut response = Some(response);
    let svc = statsd.layer().layer(service_fn(move |_req: Request<Body>| {
        let r = response.take().expect("one request");
        async move { Ok::<_, Infallible>(r) }
    }));
    let response = svc
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(flushed_lines(&statsd, &rx), [IN_FLIGHT]);
    tx.send(Err("disk on fire")).await.unwrap();
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().is_err());
    let lines = flushed_lines(&statsd, &rx);
    assert!(
        lines.contains(&IN_FLIGHT.to_owned()),
        "the window's peak: {lines:?}"
    );
    let t = totals(&lines);
    assert_eq!(t.timers["t.unmatched"].len(), 1, "reported at the error");
    drop(body);
    assert!(
        flushed_lines(&statsd, &rx).is_empty(),
        "not again at the drop"
    );
}

#[tokio::test]
async fn a_failed_service_or_a_dropped_future_still_counts_and_times() {
    let (statsd, rx) = spy_statsd("t");
    let svc = statsd
        .layer()
        .layer(service_fn(|_req: Request<Body>| async {
            Err::<Response<Body>, _>("inner service failed")
        }));
    let err = svc
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err, "inner service failed");
    let t = totals(&flushed_lines(&statsd, &rx));
    assert_eq!(t.counters["t.unmatched.called"], 1.0);
    assert_eq!(t.timers["t.unmatched"].len(), 1);
    assert!(
        t.counters.keys().all(|k| !k.contains(".status.")),
        "no status without a response"
    );

    // A handler that never answers, abandoned by a timeout.
    let svc = statsd
        .layer()
        .layer(service_fn(|_req: Request<Body>| async {
            std::future::pending::<Result<Response<Body>, Infallible>>().await
        }));
    let mut slow = Box::pin(svc.oneshot(Request::get("/").body(Body::empty()).unwrap()));
    // The first poll calls the service, which starts the request's clock.
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(slow.as_mut(), cx))
    })
    .await;
    assert!(first.is_pending());
    let called = std::time::Instant::now();
    assert!(tokio::time::timeout(Duration::from_millis(20), &mut slow)
        .await
        .is_err());
    assert_eq!(flushed_lines(&statsd, &rx), [IN_FLIGHT]);
    let dropped = std::time::Instant::now();
    drop(slow);
    let lines = flushed_lines(&statsd, &rx);
    assert!(
        lines.contains(&IN_FLIGHT.to_owned()),
        "the window's peak: {lines:?}"
    );
    let t = totals(&lines);
    assert_eq!(t.counters["t.unmatched.called"], 1.0);
    let ms = t.timers["t.unmatched"][0];
    // The clock ran from before `called` to after `dropped`, at least; 50 µs
    // for the two clocks' (TSC and monotonic) disagreement.
    let at_least = dropped.duration_since(called).as_secs_f64() * 1000.0;
    assert!(at_least >= 19.0, "{at_least} ms");
    assert!(
        ms >= at_least - 0.05,
        "timed until it was dropped: {ms} ms, at least {at_least} ms"
    );
}

#[tokio::test]
async fn sub_millisecond_requests_keep_their_precision() {
    let (statsd, rx) = spy_statsd("t");
    let svc = statsd
        .layer()
        .layer(service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }));
    let response = svc
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();
    let t = totals(&flushed_lines(&statsd, &rx));
    let ms = t.timers["t.unmatched"][0];
    assert!(
        ms > 0.0 && ms < 5.0,
        "a fast request is a fraction of a millisecond, not 0: {ms}"
    );
}

// ------------------------------------------------------------ what passes through

/// One raw HTTP/1.1 request to `addr`; the whole response as text.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the server answers within 10 s")
        .unwrap();
    String::from_utf8(response).unwrap()
}

/// The head of a raw response, header names lower-cased.
fn head(response: &str) -> Vec<String> {
    let (head, _) = response.split_once("\r\n\r\n").expect("a complete head");
    head.lines()
        .map(|l| match l.split_once(':') {
            Some((name, value)) => format!("{}:{}", name.to_ascii_lowercase(), value),
            None => l.to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn a_real_server_keeps_content_length_through_the_layer() {
    let (statsd, rx) = spy_statsd("t");
    let app = Router::new()
        .route("/", get(|| async { "hello world" }))
        .route("/empty", get(|| async { StatusCode::NO_CONTENT }))
        .layer(statsd.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let response = raw_get(addr, "/").await;
    let head = head(&response);
    assert_eq!(head[0], "HTTP/1.1 200 OK", "{response:?}");
    assert!(
        head.contains(&"content-length: 11".to_owned()),
        "the length of a known body survives the layer: {response:?}"
    );
    assert!(
        !head.iter().any(|h| h.starts_with("transfer-encoding")),
        "not chunked: {response:?}"
    );
    assert!(response.ends_with("\r\n\r\nhello world"), "{response:?}");

    let response = raw_get(addr, "/empty").await;
    assert!(response.starts_with("HTTP/1.1 204"), "{response:?}");
    assert!(
        !self::head(&response)
            .iter()
            .any(|h| h.starts_with("transfer-encoding")),
        "{response:?}"
    );
    server.abort();

    // The requests were still counted; the server's connection tasks end
    // on their own, so poll for the second one with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut lines = Vec::new();
    loop {
        lines.extend(flushed_lines(&statsd, &rx));
        let t = totals(&lines);
        if t.counters.get("t.empty.status.204") == Some(&1.0) {
            assert_eq!(t.counters["t.root.status.200"], 1.0);
            assert_eq!(t.counters["t.root.bytes_sent"], 11.0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn size_hint_and_end_of_stream_are_the_inner_bodys() {
    let (statsd, _rx) = spy_statsd("t");
    let svc = statsd
        .layer()
        .layer(service_fn(|req: Request<Body>| async move {
            let body = match req.uri().path() {
                "/full" => Full::new(Bytes::from_static(b"12345")),
                _ => Full::new(Bytes::new()),
            };
            Ok::<_, Infallible>(Response::new(body))
        }));

    let response = svc
        .clone()
        .oneshot(Request::get("/full").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    assert_eq!(body.size_hint().exact(), Some(5));
    assert!(!body.is_end_stream(), "five bytes still to send");
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "12345");
    assert!(body.is_end_stream(), "Full is done after its one frame");
    assert_eq!(body.size_hint().exact(), Some(0));

    let response = svc
        .oneshot(Request::get("/none").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = response.into_body();
    assert!(body.is_end_stream(), "an empty body is at its end at once");
    assert_eq!(body.size_hint().exact(), Some(0));
}

// ------------------------------------------------------------ poll_ready

/// A service that is not ready until the test says so, then fails once it
/// is told to.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<AtomicBool>,
    broken: Arc<AtomicBool>,
}

impl Service<Request<Body>> for Gate {
    type Response = Response<Body>;
    type Error = &'static str;
    type Future = std::future::Ready<Result<Response<Body>, &'static str>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.broken.load(Ordering::SeqCst) {
            return Poll::Ready(Err("broken"));
        }
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn call(&mut self, _req: Request<Body>) -> Self::Future {
        std::future::ready(Ok(Response::new(Body::from("ok"))))
    }
}

#[test]
fn poll_ready_is_the_inner_services() {
    let (statsd, _rx) = spy_statsd("t");
    let gate = Gate::default();
    let mut svc = statsd.layer().layer(gate.clone());
    let mut cx = Context::from_waker(Waker::noop());

    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "not ready while the inner service is not"
    );
    gate.open.store(true, Ordering::SeqCst);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    gate.broken.store(true, Ordering::SeqCst);
    assert!(
        matches!(svc.poll_ready(&mut cx), Poll::Ready(Err("broken"))),
        "the inner service's error comes through"
    );
}

// ------------------------------------------------------------ early report

/// One data frame, after which `is_end_stream` is true; polling it again
/// would give `None`, but the client in the test never does.
struct OneFrame(Option<Bytes>);

impl http_body::Body for OneFrame {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[tokio::test]
async fn the_request_reports_right_after_its_last_data_frame() {
    let (statsd, rx) = spy_statsd("t");
    let svc = statsd
        .layer()
        .layer(service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(OneFrame(Some(Bytes::from_static(b"done")))))
        }));
    let response = svc
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    // Poll exactly one frame by hand, as a client that stops there would.
    let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
        .await
        .expect("one frame")
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), "done");

    // The body is alive and was never polled to `None`: still reported.
    let lines = flushed_lines(&statsd, &rx);
    let t = totals(&lines);
    assert_eq!(
        t.counters.get("t.unmatched.called"),
        Some(&1.0),
        "{lines:?}"
    );
    assert_eq!(t.counters.get("t.unmatched.status.200"), Some(&1.0));
    assert_eq!(t.counters.get("t.unmatched.bytes_sent"), Some(&4.0));
    assert_eq!(t.timers.get("t.unmatched").map(Vec::len), Some(1));

    // Dropping it later reports nothing more.
    drop(body);
    let later = flushed_lines(&statsd, &rx);
    assert!(
        !later
            .iter()
            .any(|l| l.contains(".called") || l.contains("|ms")),
        "{later:?}"
    );
}

// ------------------------------------------------------------ last handle

#[test]
fn dropping_the_last_handle_sends_the_final_window_before_it_returns() {
    let (statsd, rx) = spy_statsd("t");
    statsd.incr("jobs").unwrap();
    statsd.timing_ms("took", 1.5);
    drop(statsd);
    // No waiting here: the drop itself waited for the flusher.
    let mut lines = rx.lines();
    lines.sort();
    assert_eq!(lines, ["t.jobs:1|c", "t.took:1.5|ms"]);
}

#[tokio::test]
async fn dropping_the_last_layer_and_handle_sends_the_requests_window() {
    let (statsd, rx) = spy_statsd("t");
    let svc = statsd
        .layer()
        .layer(service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::from("hi")))
        }));
    let response = svc
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();
    drop(statsd);
    let lines = rx.lines();
    let t = totals(&lines);
    assert_eq!(
        t.counters.get("t.unmatched.called"),
        Some(&1.0),
        "{lines:?}"
    );
    assert_eq!(t.counters.get("t.unmatched.bytes_sent"), Some(&2.0));
    assert_eq!(t.timers.get("t.unmatched").map(Vec::len), Some(1));
}
