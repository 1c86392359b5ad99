//! [`ResponseBody`] and the [`Recorder`] it carries: the request's metrics
//! are reported exactly once, when the body ends, fails, or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::layer::Shared;
use crate::naming::RouteNames;
use crate::record::RequestRecord;
use crate::sink::Event;
use crate::user::UserToken;

/// Everything a request will report, waiting for its end. Reports on drop,
/// so no path (error, panic, client gone) can skip or repeat it.
#[derive(Debug)]
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    start: Instant,
    route: Arc<RouteNames>,
    method: &'static str,
    status: Option<StatusCode>,
    user: Option<UserToken>,
}

impl Recorder {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        start: Instant,
        route: Arc<RouteNames>,
        method: &'static str,
        user: Option<UserToken>,
    ) -> Self {
        Recorder {
            shared: shared.clone(),
            start,
            route,
            method,
            status: None,
            user,
        }
    }

    pub(crate) fn set_status(&mut self, status: StatusCode) {
        self.status = Some(status);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let record = RequestRecord {
            elapsed: self.start.elapsed(),
            route: self.route.clone(),
            method: self.method,
            status: self.status,
            user: self.user.take(),
        };
        // Never blocks; a full stage counts the drop and reports it later.
        self.shared.statsd.sink().send(Event::Request(record));
    }
}

pin_project! {
    /// The response body of [`StatsdService`](crate::StatsdService): the
    /// inner body, plus the recorder that reports when it ends.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        recorder: Option<Recorder>,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, recorder: Option<Recorder>) -> Self {
        ResponseBody { inner, recorder }
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = std::task::ready!(inner.as_mut().poll_frame(cx));
        // Report at the end, on an error, or right after the last data frame:
        // a client that has what it asked for may never poll again.
        let ended = match &frame {
            None | Some(Err(_)) => true,
            Some(Ok(_)) => inner.is_end_stream(),
        };
        if ended {
            this.recorder.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
