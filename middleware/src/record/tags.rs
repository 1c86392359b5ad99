//! A request's own tags (tagged mode): values taken from the request by
//! closures, each key with a cap on its distinct values.
//!
//! A value becomes a small id once, the first time it is seen: the request
//! carries ids (part of its [`Key`](super::Key), so a window counts each
//! combination apart), and the values are written only when the flusher
//! drains. Past the cap a new value is [`OVERFLOW_TAG_VALUE`], counted by
//! the self-metric `{prefix}.tower_statsd.tag_overflow` (tagged
//! `tag:{key}`) and warned about once, so no request can add a series past
//! the cap. Values go through the same sanitising as names.
//!
//! Each thread looks a value up in its shard's copy of the admitted
//! values, under a read lock only that shard's threads take; a value not
//! there yet (or one that needs sanitising, which is never copied, so that
//! hostile variety cannot grow the copies) takes the key's lock.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crossbeam_utils::CachePadded;
use http::request::Parts;

use super::shard::{shard_count, shard_of_this_thread};
use crate::naming::is_tag_char;
use crate::sink::{Metric, PacketWriter, Source, Value};

/// The most request tags a layer takes.
pub const MAX_REQUEST_TAGS: usize = 4;

/// Distinct values a request tag's key takes before new ones become
/// [`OVERFLOW_TAG_VALUE`], unless the layer says otherwise.
pub const DEFAULT_MAX_TAG_VALUES: usize = 100;

/// The value of a request tag past its key's cap on distinct values.
pub const OVERFLOW_TAG_VALUE: &str = "_other";

/// Longest value kept, in bytes; a longer one is cut (then counts as a
/// value of its own, within the cap).
const MAX_TAG_VALUE_LEN: usize = 64;

/// What the request has no value for: the tag is left out.
const ABSENT: u16 = 0;
/// A value past the cap.
const OVERFLOW: u16 = 1;

/// What a request tag's closure is: the value, borrowed from the request,
/// or `None` to leave the tag out.
pub(crate) type TagFn = dyn Fn(&Parts) -> Option<&str> + Send + Sync;

/// The layer's request tags as its builder collects them: sanitised keys
/// and their closures.
#[derive(Clone, Default)]
pub(crate) struct TagFns(pub(crate) Vec<(Box<str>, Arc<TagFn>)>);

impl fmt::Debug for TagFns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(key, _)| key))
            .finish()
    }
}

/// A request's tag values as ids, in the layer's order of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TagIds([u16; MAX_REQUEST_TAGS]);

impl TagIds {
    /// No request tags.
    pub(crate) const NONE: TagIds = TagIds([ABSENT; MAX_REQUEST_TAGS]);
}

/// One key's closure and the values it took.
struct TagKey {
    key: Box<str>,
    value_of: Arc<TagFn>,
    /// Per shard: clean values already admitted, to their ids.
    seen: Box<[CachePadded<RwLock<Seen>>]>,
    /// Every admitted value (id `i + 2` is `values[i]`), and the reverse.
    admitted: Mutex<Admitted>,
    /// Requests whose value went to [`OVERFLOW_TAG_VALUE`], this window.
    overflowed: AtomicU64,
    warned: AtomicBool,
}

/// Clean values to their ids, as one shard has looked them up.
type Seen = HashMap<Box<str>, u16>;

#[derive(Default)]
struct Admitted {
    values: Vec<Box<str>>,
    ids: HashMap<Box<str>, u16>,
}

/// The request tags of one layer (tagged mode only).
pub(crate) struct RequestTags {
    keys: Vec<TagKey>,
    cap: usize,
    /// `{prefix}.tower_statsd.tag_overflow`.
    overflow_metric: Box<str>,
    /// The constant tags after `tag:{key}`, `,env:prod`, or empty.
    constant_tags: Arc<str>,
}

impl fmt::Debug for RequestTags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.keys.iter().map(|k| &*k.key).collect();
        f.debug_struct("RequestTags")
            .field("keys", &keys)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl RequestTags {
    /// Tags `keys` (sanitised, distinct, at most [`MAX_REQUEST_TAGS`]: the
    /// layer's builder sees to it), at most `cap` distinct values each.
    pub(crate) fn new(
        keys: &[(Box<str>, Arc<TagFn>)],
        cap: usize,
        overflow_metric: &str,
        constant_tags: Arc<str>,
    ) -> Self {
        RequestTags {
            keys: keys
                .iter()
                .map(|(key, value_of)| TagKey {
                    key: key.clone(),
                    value_of: value_of.clone(),
                    seen: (0..shard_count()).map(|_| CachePadded::default()).collect(),
                    admitted: Mutex::default(),
                    overflowed: AtomicU64::new(0),
                    warned: AtomicBool::new(false),
                })
                .collect(),
            cap,
            overflow_metric: overflow_metric.into(),
            constant_tags,
        }
    }

    /// The ids of the request's values.
    pub(crate) fn ids(&self, parts: &Parts) -> TagIds {
        let mut ids = TagIds::NONE;
        for (id, key) in ids.0.iter_mut().zip(&self.keys) {
            if let Some(value) = (key.value_of)(parts) {
                *id = key.id(value, self.cap);
            }
        }
        ids
    }

    /// Writes `,key:value` for each tag the request had.
    pub(crate) fn write(&self, ids: TagIds, out: &mut String) {
        for (&id, key) in ids.0.iter().zip(&self.keys) {
            if id == ABSENT {
                continue;
            }
            out.push(',');
            out.push_str(&key.key);
            out.push(':');
            if id == OVERFLOW {
                out.push_str(OVERFLOW_TAG_VALUE);
            } else {
                out.push_str(&key.admitted().values[usize::from(id - 2)]);
            }
        }
    }
}

impl TagKey {
    fn admitted(&self) -> std::sync::MutexGuard<'_, Admitted> {
        self.admitted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The id of `raw`: admitted before, admitted now, or past the cap.
    fn id(&self, raw: &str, cap: usize) -> u16 {
        let seen = &self.seen[shard_of_this_thread()];
        if let Some(&id) = seen.read().unwrap_or_else(PoisonError::into_inner).get(raw) {
            return id;
        }
        let value = sanitize_tag_value(raw);
        if value.is_empty() {
            return ABSENT;
        }
        let mut admitted = self.admitted();
        let id = match admitted.ids.get(value.as_str()) {
            Some(&id) => id,
            None if admitted.values.len() < cap => {
                let id = admitted.values.len() as u16 + 2;
                admitted.values.push(value.as_str().into());
                admitted.ids.insert(value.as_str().into(), id);
                id
            }
            None => {
                drop(admitted);
                self.overflowed.fetch_add(1, Relaxed);
                if !self.warned.swap(true, Relaxed) {
                    tracing::warn!(
                        key = %self.key,
                        cap,
                        "a request tag took more distinct values than its cap: new values \
                         are sent as {OVERFLOW_TAG_VALUE} (see the self-metric \
                         tower_statsd.tag_overflow)"
                    );
                }
                return OVERFLOW;
            }
        };
        drop(admitted);
        // Only a value that is its own clean form is kept per shard: the
        // copies hold at most `cap` values each.
        if value == raw {
            seen.write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(raw.into(), id);
        }
        id
    }
}

/// A request tag's value as it may be sent: characters outside
/// `[A-Za-z0-9_.-]` become `_`, and it is cut to 64 bytes.
fn sanitize_tag_value(raw: &str) -> String {
    raw.chars()
        .take(MAX_TAG_VALUE_LEN)
        .map(|c| if is_tag_char(c) { c } else { '_' })
        .collect()
}

/// A tag key as the layer takes it: sanitised like a value.
pub(crate) fn sanitize_tag_key(raw: &str) -> String {
    sanitize_tag_value(raw)
}

impl Source for RequestTags {
    /// The overflow self-metric of each key, for the window.
    fn drain(&self, out: &mut PacketWriter) {
        let mut tags = String::new();
        for key in &self.keys {
            let n = key.overflowed.swap(0, Relaxed);
            if n == 0 {
                continue;
            }
            tags.clear();
            tags.push_str("tag:");
            tags.push_str(&key.key);
            tags.push_str(&self.constant_tags);
            out.push_metric(&Metric {
                name: &self.overflow_metric,
                tags: &tags,
                value: Value::Count {
                    value: n as f64,
                    rate: 1.0,
                },
            });
        }
    }

    fn drain_full(&self, _out: &mut PacketWriter) {}

    fn in_use(&self) -> bool {
        false
    }

    fn release_unused(&self) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sink::testing::{lines, logged, pipe, spy};

    fn header(parts: &Parts) -> Option<&str> {
        parts.headers.get("x-tier").and_then(|v| v.to_str().ok())
    }

    fn tags(cap: usize) -> RequestTags {
        let keys: [(Box<str>, Arc<TagFn>); 2] = [
            ("tier".into(), Arc::new(header)),
            ("fixed".into(), Arc::new(|_: &Parts| Some("v1"))),
        ];
        RequestTags::new(
            &keys,
            cap,
            "p.tower_statsd.tag_overflow",
            ",env:prod".into(),
        )
    }

    fn request(tier: Option<&str>) -> Parts {
        let mut request = http::Request::get("/");
        if let Some(tier) = tier {
            request = request.header("x-tier", tier);
        }
        request.body(()).unwrap().into_parts().0
    }

    /// The tags a request with `tier` is written with.
    fn written(tags: &RequestTags, tier: Option<&str>) -> String {
        let mut out = String::new();
        tags.write(tags.ids(&request(tier)), &mut out);
        out
    }

    fn drained(tags: &RequestTags) -> Vec<String> {
        let (rx, spy) = spy();
        let (mut out, _) = pipe(spy, 512);
        tags.drain(&mut out);
        out.flush();
        lines(&rx.take())
    }

    fn seen(tags: &RequestTags) -> usize {
        tags.keys[0]
            .seen
            .iter()
            .map(|seen| seen.read().unwrap().len())
            .sum()
    }

    #[test]
    fn values_are_written_sanitised_and_absent_ones_left_out() {
        let tags = tags(10);
        assert_eq!(written(&tags, Some("gold")), ",tier:gold,fixed:v1");
        assert_eq!(written(&tags, Some("gold")), ",tier:gold,fixed:v1");
        assert_eq!(written(&tags, None), ",fixed:v1");
        assert_eq!(written(&tags, Some("")), ",fixed:v1", "empty: left out");
        assert_eq!(
            written(&tags, Some("a|b,c:d#e")),
            ",tier:a_b_c_d_e,fixed:v1"
        );
        assert_eq!(written(&tags, Some("v1.2-x_y")), ",tier:v1.2-x_y,fixed:v1");
        let long = "x".repeat(100);
        assert_eq!(
            written(&tags, Some(&long)),
            format!(",tier:{},fixed:v1", "x".repeat(64))
        );
        assert_eq!(TagIds::NONE, TagIds::default());
        let mut none = String::new();
        tags.write(TagIds::NONE, &mut none);
        assert_eq!(none, "");
        assert!(drained(&tags).is_empty(), "nothing past the cap");
    }

    #[test]
    fn past_the_cap_new_values_are_one_overflow_value_counted_per_window() {
        let tags = tags(2);
        assert_eq!(written(&tags, Some("a")), ",tier:a,fixed:v1");
        assert_eq!(written(&tags, Some("b")), ",tier:b,fixed:v1");
        let warnings = logged(|| {
            for value in ["c", "d", "e|vil"] {
                assert_eq!(written(&tags, Some(value)), ",tier:_other,fixed:v1");
            }
        });
        assert_eq!(
            warnings
                .matches("a request tag took more distinct values")
                .count(),
            1,
            "warned once: {warnings}"
        );
        assert_eq!(written(&tags, Some("a")), ",tier:a,fixed:v1", "admitted");
        assert_eq!(
            drained(&tags),
            ["p.tower_statsd.tag_overflow:3|c|#tag:tier,env:prod"]
        );
        assert!(drained(&tags).is_empty(), "counted per window");
        // Hostile variety never admits more.
        for i in 0..1_000 {
            written(&tags, Some(&format!("x{i}")));
        }
        assert_eq!(tags.keys[0].admitted().values.len(), 2);
        assert_eq!(
            drained(&tags),
            ["p.tower_statsd.tag_overflow:1000|c|#tag:tier,env:prod"]
        );
    }

    #[test]
    fn only_clean_admitted_values_are_copied_per_shard() {
        let tags = tags(10);
        written(&tags, Some("gold"));
        written(&tags, Some("gold"));
        assert_eq!(seen(&tags), 1, "a clean value");
        for hostile in ["a|b", "a#b", "a b"] {
            assert_eq!(written(&tags, Some(hostile)), ",tier:a_b,fixed:v1");
        }
        assert_eq!(seen(&tags), 1, "values that need sanitising are not copied");
        let tags = self::tags(0);
        assert_eq!(written(&tags, Some("gold")), ",tier:_other,fixed:_other");
        assert_eq!(seen(&tags), 0, "nor overflowing ones");
        assert!(!tags.in_use());
        let debug = format!("{tags:?}");
        assert_eq!(
            debug,
            "RequestTags { keys: [\"tier\", \"fixed\"], cap: 0, .. }"
        );
    }

    #[tokio::test]
    async fn a_dropped_layers_tags_are_drained_once_more_then_forgotten() {
        use axum::{routing::get, Router};
        use tower::ServiceExt;

        let (rx, spy) = spy();
        let statsd = crate::Statsd::builder()
            .prefix("p")
            .server(crate::Server::StatsdExporter)
            .naming(crate::NamingMode::Tagged)
            .flush_interval(std::time::Duration::from_secs(3600))
            .build_with(spy)
            .unwrap();
        let layer = statsd
            .layer()
            .request_tag("tier", |_| Some("gold"))
            .max_request_tag_values(0);
        let app = Router::new()
            .route("/", get(|| async { "hi" }))
            .layer(layer);
        let request = http::Request::get("/")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        drop(response);
        // The layer's routes and its tags, registered once when applied.
        assert_eq!(statsd.sink().sources(), 2);
        statsd.flush().unwrap();
        let lines = lines(&rx.take());
        assert!(
            lines.contains(&"p.tower_statsd.tag_overflow:1|c|#tag:tier".to_owned()),
            "{lines:?}"
        );
        // The routes retired at that flush; their names held the tags until
        // then, so the tags retire at the next one.
        assert_eq!(statsd.sink().sources(), 1);
        statsd.flush().unwrap();
        assert_eq!(statsd.sink().sources(), 0, "nobody records into them");
    }

    #[test]
    fn a_tagged_layer_without_request_tags_has_no_tags_source() {
        let statsd = crate::Statsd::builder()
            .server(crate::Server::StatsdExporter)
            .naming(crate::NamingMode::Tagged)
            .flush_interval(std::time::Duration::from_secs(3600))
            .build_with(cadence::NopMetricSink)
            .unwrap();
        assert_eq!(statsd.sink().sources(), 0, "nothing before it is applied");
        let _app: axum::Router = axum::Router::new()
            .route("/", axum::routing::get(|| async { "hi" }))
            .layer(statsd.layer());
        assert_eq!(statsd.sink().sources(), 1, "its routes only");
    }
}
