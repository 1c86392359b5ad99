//! Unique users: where the user key comes from, and how it is made safe.
//!
//! A user key that is short plain `[A-Za-z0-9_.@-]` is sent as it is; anything
//! else is hashed to a stable token (`h` + 32 hex digits), so a hostile value
//! can never break a StatsD line. With [`UserKey::keyed_hash`], every value is
//! hashed with a secret key and raw ids never reach the metrics system.

use std::borrow::Cow;
use std::fmt;
use std::hash::Hasher;
use std::sync::Arc;

use arrayvec::ArrayString;
use http::header::HeaderName;
use http::request::Parts;
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::head::Head;

/// Longest user key sent as it is; longer keys are hashed.
pub const MAX_PLAIN_USER_KEY: usize = 64;

/// A set member ready for the wire: plain `[A-Za-z0-9_.@-]`, at most
/// [`MAX_PLAIN_USER_KEY`] bytes, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct UserToken(ArrayString<MAX_PLAIN_USER_KEY>);

impl UserToken {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type Extract = dyn Fn(&Parts) -> Option<Cow<'_, str>> + Send + Sync;

/// Where a request's user key comes from, and how it is turned into a set
/// member.
///
/// ```
/// use tower_statsd::UserKey;
///
/// // The tutorial's `/user?id=123`.
/// let from_query = UserKey::query("id");
/// // A header set by a gateway, hashed with a secret so raw ids stay private.
/// let private = UserKey::header(http::HeaderName::from_static("x-user-id")).keyed_hash([7; 16]);
/// ```
#[derive(Clone)]
pub struct UserKey {
    source: Source,
    key: Option<(u64, u64)>,
}

#[derive(Clone)]
enum Source {
    Query(Box<str>),
    Header(HeaderName),
    Custom(Arc<Extract>),
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Query(name) => format!("query({name})"),
            Source::Header(name) => format!("header({name})"),
            Source::Custom(_) => "custom".to_owned(),
        };
        f.debug_struct("UserKey")
            .field("source", &source)
            .field("keyed_hash", &self.key.is_some())
            .finish()
    }
}

impl UserKey {
    /// The value of query parameter `name` (percent-decoded; the first one
    /// wins if it repeats).
    pub fn query(name: impl Into<String>) -> Self {
        Self::with_source(Source::Query(name.into().into_boxed_str()))
    }

    /// The value of header `name` (a [`HeaderName`]: a valid name by
    /// construction, `HeaderName::from_static("x-user-id")` for a constant).
    pub fn header(name: HeaderName) -> Self {
        Self::with_source(Source::Header(name))
    }

    /// A value of type `T` that an earlier layer (authentication, say) put
    /// into the request's extensions, turned into text with `Display`.
    ///
    /// ```
    /// use tower_statsd::UserKey;
    ///
    /// #[derive(Clone)]
    /// struct UserId(u64);
    /// impl std::fmt::Display for UserId {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         self.0.fmt(f)
    ///     }
    /// }
    /// let key = UserKey::extension::<UserId>();
    /// ```
    pub fn extension<T: fmt::Display + Send + Sync + 'static>() -> Self {
        Self::from_fn(|parts| {
            parts
                .extensions
                .get::<T>()
                .map(|v| Cow::Owned(v.to_string()))
        })
    }

    /// Any function of the request head.
    ///
    /// ```
    /// use std::borrow::Cow;
    /// use tower_statsd::UserKey;
    ///
    /// // The last path segment of `/accounts/{account}`.
    /// let key = UserKey::from_fn(|parts| parts.uri.path().rsplit('/').next().map(Cow::Borrowed));
    /// ```
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(&Parts) -> Option<Cow<'_, str>> + Send + Sync + 'static,
    {
        Self::with_source(Source::Custom(Arc::new(f)))
    }

    /// Hash every value with SipHash-1-3 under this secret key, so raw user
    /// ids never leave the application. The same id gives the same token as
    /// long as the key stays the same.
    pub fn keyed_hash(mut self, key: [u8; 16]) -> Self {
        let (k0, k1) = key.split_at(8);
        self.key = Some((
            u64::from_le_bytes(k0.try_into().expect("8 bytes")),
            u64::from_le_bytes(k1.try_into().expect("8 bytes")),
        ));
        self
    }

    fn with_source(source: Source) -> Self {
        UserKey { source, key: None }
    }

    /// Whether the key is read by a closure of the application, which is
    /// given the request's head as `Parts`.
    pub(crate) fn reads_parts(&self) -> bool {
        matches!(self.source, Source::Custom(_))
    }

    /// The request's set member, if it carries a non-empty user key. A
    /// [`from_fn`](Self::from_fn) key is read only from a head taken apart
    /// ([`reads_parts`](Self::reads_parts)).
    pub(crate) fn token(&self, head: &Head<'_>) -> Option<UserToken> {
        let raw: Cow<'_, [u8]> = match &self.source {
            Source::Query(name) => {
                // Only the matching value is decoded: other parameters
                // (`?msg=Hello+world`) cost no allocation.
                let query = head.uri.query()?;
                let value = query.split('&').find_map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (*form_decode(key) == *name.as_bytes()).then_some(value)
                })?;
                form_decode(value)
            }
            Source::Header(name) => Cow::Borrowed(head.headers.get(name)?.as_bytes()),
            Source::Custom(f) => match f(head.parts?)? {
                Cow::Borrowed(v) => Cow::Borrowed(v.as_bytes()),
                Cow::Owned(v) => Cow::Owned(v.into_bytes()),
            },
        };
        if raw.is_empty() {
            return None;
        }
        Some(self.tokenize(&raw))
    }

    fn tokenize(&self, raw: &[u8]) -> UserToken {
        if self.key.is_none() && is_plain(raw) {
            if let Ok(plain) = std::str::from_utf8(raw) {
                if let Ok(token) = ArrayString::from(plain) {
                    return UserToken(token);
                }
            }
        }
        let (k0, k1) = self.key.unwrap_or((0, 0));
        let mut hasher = SipHasher13::new_with_keys(k0, k1);
        hasher.write(raw);
        let mut token = ArrayString::new();
        // 'h' + 32 hex digits: 33 bytes, always fits.
        use fmt::Write;
        let _ = write!(token, "h{:032x}", hasher.finish128().as_u128());
        UserToken(token)
    }
}

/// `application/x-www-form-urlencoded` decoding of one key or value: `+` is
/// a space, `%XX` a byte. Borrowed when there is nothing to decode.
fn form_decode(raw: &str) -> Cow<'_, [u8]> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(raw.as_bytes());
    }
    let spaced = raw.replace('+', " ");
    Cow::Owned(percent_encoding::percent_decode_str(&spaced).collect())
}

/// Short, and made only of `[A-Za-z0-9_.@-]`: safe on the StatsD wire as is.
fn is_plain(raw: &[u8]) -> bool {
    raw.len() <= MAX_PLAIN_USER_KEY
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> Parts {
        http::Request::get(uri)
            .header("x-user", "bob|c:9#x")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn plain_values_pass_hostile_values_are_hashed() {
        let key = UserKey::query("id");
        assert_eq!(
            key.token(&Head::of_parts(&parts("/user?id=123")))
                .unwrap()
                .as_str(),
            "123"
        );
        assert_eq!(
            key.token(&Head::of_parts(&parts("/user?x=1&id=a.b%40c")))
                .unwrap()
                .as_str(),
            "a.b@c"
        );
        assert_eq!(key.token(&Head::of_parts(&parts("/user?id="))), None);
        assert_eq!(key.token(&Head::of_parts(&parts("/user"))), None);
        let evil = key
            .token(&Head::of_parts(&parts(
                "/user?id=x%0Astatstest.root.called%3A999%7Cc",
            )))
            .unwrap();
        // Decoded first, then hashed: the known answer for the decoded bytes.
        assert_eq!(evil.as_str(), "he34a0abafc485f51dd5884599853ff5f");
        let long = format!("/user?id={}", "a".repeat(65));
        assert_eq!(
            key.token(&Head::of_parts(&parts(&long)))
                .unwrap()
                .as_str()
                .len(),
            33
        );
    }

    #[test]
    fn header_and_keyed_hash() {
        let header = UserKey::header(HeaderName::from_static("x-user"));
        let token = header.token(&Head::of_parts(&parts("/"))).unwrap();
        assert_eq!(token.as_str(), "h727e006b30f48e68984c9931a7a5dba7");
        let keyed = UserKey::query("id").keyed_hash([1; 16]);
        let a = keyed.token(&Head::of_parts(&parts("/?id=123"))).unwrap();
        assert_ne!(a.as_str(), "123");
        let other = UserKey::query("id").keyed_hash([2; 16]);
        assert_ne!(a, other.token(&Head::of_parts(&parts("/?id=123"))).unwrap());
    }

    /// The token the docs promise, computed independently of `tokenize`:
    /// the raw bytes when plain and short, otherwise `h` + the 32 hex digits
    /// of SipHash-1-3 (128-bit) under the key (all zeros without one).
    fn reference(raw: &[u8], key: Option<[u8; 16]>) -> String {
        let plain = raw.len() <= 64
            && raw
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(b));
        if key.is_none() && plain {
            return String::from_utf8(raw.to_vec()).unwrap();
        }
        let hash = SipHasher13::new_with_key(&key.unwrap_or([0; 16])).hash(raw);
        format!("h{:032x}", hash.as_u128())
    }

    /// Known answers, written out (SipHash-1-3, 128-bit): under no key, and
    /// under the key `00 01 02 … 0f`. A hash that ignores its input, its
    /// key, or part of its output fails here.
    const VECTORS: [(&[u8], &str, &str); 4] = [
        (
            b"bob|c:9#x",
            "h727e006b30f48e68984c9931a7a5dba7",
            "ha9661f2d78ba01df7a43cf8c2375a5f1",
        ),
        (
            b"x\nstatstest.root.called:999|c",
            "he34a0abafc485f51dd5884599853ff5f",
            "h7b459ad07b59481e5c13fa094036d5f7",
        ),
        (
            &[b'a'; 65],
            "h0874e8bc0122fa270669d8aa74030ca2",
            "h7a17803f5dd3020b93e33d867ebce401",
        ),
        (b"123", "123", "h2b59a26271d5ab8cbbe2727e56a52b93"),
    ];

    fn counting_key() -> [u8; 16] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn known_answer_vectors() {
        let plain = UserKey::query("id");
        let keyed = UserKey::query("id").keyed_hash(counting_key());
        for (raw, unkeyed, with_key) in VECTORS {
            assert_eq!(plain.tokenize(raw).as_str(), unkeyed, "{raw:?}");
            assert_eq!(keyed.tokenize(raw).as_str(), with_key, "{raw:?}");
            // The written-out answers are SipHash-1-3's, not ours.
            assert_eq!(reference(raw, None), unkeyed);
            assert_eq!(reference(raw, Some(counting_key())), with_key);
        }
    }

    #[test]
    fn known_answers_plain_and_hashed() {
        let key = UserKey::query("id");
        let hashed = [
            b"bob|c:9#x".as_slice(),
            b"x\nstatstest.root.called:999|c",
            &[b'a'; 65],
            &[b'a'; 64],
            "\u{e9}t\u{e9}".as_bytes(),
            b" ",
        ];
        for raw in hashed {
            assert_eq!(key.tokenize(raw).as_str(), reference(raw, None), "{raw:?}");
        }
        // 64 plain bytes are sent as they are; 65 are hashed.
        assert_eq!(key.tokenize(&[b'a'; 64]).as_str(), "a".repeat(64));
        assert_eq!(key.tokenize(&[b'a'; 65]).as_str().len(), 33);
        for plain in ["0", "a.b@c", "A-Z_z", "user@example.com"] {
            assert_eq!(key.tokenize(plain.as_bytes()).as_str(), plain);
        }
        // Every byte outside the plain set is hashed.
        for b in 0..=255u8 {
            let raw = [b'x', b];
            assert_eq!(key.tokenize(&raw).as_str(), reference(&raw, None), "{b}");
        }
    }

    #[test]
    fn known_answers_keyed() {
        let secret = [0xa5; 16];
        let keyed = UserKey::query("id").keyed_hash(secret);
        for raw in [b"123".as_slice(), b"bob|c:9#x", b"", &[b'a'; 65]] {
            assert_eq!(
                keyed.tokenize(raw).as_str(),
                reference(raw, Some(secret)),
                "{raw:?}"
            );
        }
        assert_eq!(
            keyed
                .token(&Head::of_parts(&parts("/?id=123")))
                .unwrap()
                .as_str(),
            reference(b"123", Some(secret))
        );
    }

    #[test]
    fn debug_shows_the_token_and_the_source_not_the_key() {
        let key = UserKey::query("id");
        assert_eq!(format!("{:?}", key.tokenize(b"a.b@c")), "a.b@c");
        assert_eq!(
            format!("{key:?}"),
            r#"UserKey { source: "query(id)", keyed_hash: false }"#
        );
        assert_eq!(
            format!(
                "{:?}",
                UserKey::header(HeaderName::from_static("x-user")).keyed_hash([9; 16])
            ),
            r#"UserKey { source: "header(x-user)", keyed_hash: true }"#
        );
        assert_eq!(
            format!("{:?}", UserKey::from_fn(|_| None)),
            r#"UserKey { source: "custom", keyed_hash: false }"#
        );
    }

    #[test]
    fn a_request_left_whole_gives_the_token_its_parts_give_and_only_closures_need_parts() {
        let request = || {
            http::Request::get("/user?id=123")
                .header("x-user", "bob")
                .body(())
                .unwrap()
        };
        let whole = request();
        let (head, ()) = request().into_parts();
        for key in [
            UserKey::query("id"),
            UserKey::header(HeaderName::from_static("x-user")),
        ] {
            assert!(!key.reads_parts(), "{key:?}");
            let token = key.token(&Head::of(&whole));
            assert!(token.is_some(), "{key:?}");
            assert_eq!(token, key.token(&Head::of_parts(&head)), "{key:?}");
        }
        let custom = UserKey::from_fn(|parts| {
            let user = parts.headers.get("x-user")?.to_str().ok()?;
            Some(Cow::Borrowed(user))
        });
        assert!(custom.reads_parts());
        assert_eq!(
            custom.token(&Head::of_parts(&head)).unwrap().as_str(),
            "bob"
        );
        assert_eq!(
            custom.token(&Head::of(&whole)),
            None,
            "read only from parts"
        );
    }

    #[test]
    fn extension_source() {
        let mut p = parts("/");
        p.extensions.insert(42_u32);
        assert_eq!(
            UserKey::extension::<u32>()
                .token(&Head::of_parts(&p))
                .unwrap()
                .as_str(),
            "42"
        );
    }
}
