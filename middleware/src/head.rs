//! What the layer reads of a request before the inner service takes it.
//!
//! Taking a request apart into [`Parts`] and putting it back moves it twice
//! (240 bytes each time). The layer does that only when a closure of the
//! application is to read the head as `Parts` (a filter, a route namer,
//! request tags, [`UserKey::from_fn`](crate::UserKey::from_fn)); otherwise
//! it borrows what it reads from the request in place.

use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Request, Uri};

/// A request's head, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) extensions: &'a Extensions,
    /// The head as `Parts`, when the request was taken apart for a closure
    /// of the application.
    pub(crate) parts: Option<&'a Parts>,
}

impl<'a> Head<'a> {
    /// The head of a request left whole.
    pub(crate) fn of<B>(request: &'a Request<B>) -> Self {
        Head {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
            parts: None,
        }
    }

    /// The head of a request taken apart.
    pub(crate) fn of_parts(parts: &'a Parts) -> Self {
        Head {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            extensions: &parts.extensions,
            parts: Some(parts),
        }
    }
}
