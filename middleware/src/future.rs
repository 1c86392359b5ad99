//! [`ResponseFuture`]: carries the recorder from the request to the body.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use crate::body::ResponseBody;
use crate::record::Recorder;

pin_project! {
    /// The future of [`StatsdService`](crate::StatsdService).
    ///
    /// On a response it notes the status and moves the recorder into the
    /// body, which reports when it ends. On an error, or if the future is
    /// dropped first, the recorder reports when it is dropped.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        recorder: Option<Recorder>,
    }
}

impl<F> ResponseFuture<F> {
    /// `recorder`: `None` for a request the layer does not record (the
    /// response passes through untouched).
    pub(crate) fn new(inner: F, recorder: Option<Recorder>) -> Self {
        ResponseFuture { inner, recorder }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let recorder = this.recorder.take();
        Poll::Ready(result.map(|response| {
            let recorder = recorder.map(|mut r| {
                r.set_status(response.status(), response.headers());
                r
            });
            response.map(|body| ResponseBody::new(body, recorder))
        }))
    }
}
