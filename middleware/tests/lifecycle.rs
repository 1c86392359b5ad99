//! The request lifecycle, step by step: the request's metrics are reported
//! exactly once, at the end of the response body — whether it completes,
//! fails, or is dropped unread — and never when the future resolves. Until
//! then the request counts in the route's in-flight gauge, and every ending
//! takes it out again.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use bytes_frame::ChannelBody;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use support::{flushed_lines, spy_statsd, totals};

/// What a window holds while one request of `/` (unmatched here) is in
/// flight, and the window's peak when it ended in the window.
const IN_FLIGHT: &str = "t.unmatched.in_flight:1|g";
use tower::{service_fn, Layer, ServiceExt};

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
