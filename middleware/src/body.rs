//! [`ResponseBody`]: the inner body, carrying the request's [`Recorder`],
//! which records exactly once when the body ends, fails, or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::record::Recorder;

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
            Some(Ok(frame)) => {
                if let Some(recorder) = this.recorder.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        recorder.sent(data.remaining());
                    } else if let Some(trailers) = frame.trailers_ref() {
                        recorder.trailers(trailers);
                    }
                }
                inner.is_end_stream()
            }
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
