//! Hostile input never injects a line and never creates a name: whatever a
//! client puts in the method, path, query, headers or user id — newlines,
//! `:`, `|`, `#`, `@`, `;`, `=`, spaces, unicode, empty or 10 kB values —
//! every line the layer emits parses strictly and every name is one the docs
//! list for the router (`{prefix}.{route}.called`, `{prefix}.{route}`,
//! `{prefix}.{route}.status.{code}`, `{prefix}.{route}.bytes_sent`,
//! `{prefix}.{route}.in_flight`, `{prefix}.{set}`,
//! `{prefix}.tower_statsd.dropped`).

mod support;

use std::collections::BTreeSet;
use std::time::Instant;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use siphasher::sip128::SipHasher13;
use support::{flushed_lines, parse_line, spy_statsd, totals};
use tower::ServiceExt;
use tower_statsd::cadence::prelude::*;
use tower_statsd::{route_name, NamingMode, Statsd, UserKey, MAX_PLAIN_USER_KEY, UNMATCHED};

/// The route names of [`app`], and the set it records users in.
const ROUTES: [&str; 5] = ["root", "user", "users._id.posts", "files._rest", UNMATCHED];
const SET: &str = "user";

fn app(statsd: &Statsd, key: UserKey) -> Router {
    Router::new()
        .route("/", get(|| async { "root" }))
        .route(
            "/user",
            get(|| async { "user" }).post(|| async { StatusCode::CREATED }),
        )
        .route("/users/{id}/posts", get(|| async { "posts" }))
        .route("/files/{*rest}", get(|| async { "rest" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "nothing here") })
        .layer(statsd.layer().user_key(key, SET))
}

/// Whether `name` is one the docs list for a router with `routes` and `sets`
/// under `prefix` (already sanitized, may be empty).
fn documented(name: &str, prefix: &str, routes: &[&str], sets: &[&str]) -> bool {
    let rest = if prefix.is_empty() {
        name
    } else {
        match name.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
            Some(rest) => rest,
            None => return false,
        }
    };
    if rest == "tower_statsd.dropped" || sets.contains(&rest) {
        return true;
    }
    routes.iter().any(|route| {
        rest == *route
            || rest.strip_prefix(route).is_some_and(|tail| {
                [".called", ".bytes_sent", ".in_flight"].contains(&tail)
                    || tail.strip_prefix(".status.").is_some_and(|code| {
                        code.len() == 3
                            && code.bytes().all(|b| b.is_ascii_digit())
                            && StatusCode::from_bytes(code.as_bytes()).is_ok()
                    })
            })
    })
}

/// The docs' rule for a dotted name (prefix, override, set): each non-empty
/// dot-separated part with every character outside `[A-Za-z0-9_-]` turned
/// into `_`. Written out here as an independent oracle.
fn sanitized(name: &str) -> String {
    name.split('.')
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The docs' rule for a route template, written out here as an independent
/// oracle: one level per non-empty `/` segment, `{id}` and `{*rest}` become
/// `_id` and `_rest`, every other character outside `[A-Za-z0-9_-]` becomes
/// `_`, and no segment at all is `root`.
fn route_oracle(template: &str) -> String {
    let levels: Vec<String> = template
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (mark, text) = match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(param) => ("_", param.trim_start_matches('*')),
                None => ("", segment),
            };
            let text: String = text
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{mark}{text}")
        })
        .collect();
    if levels.is_empty() {
        "root".to_owned()
    } else {
        levels.join(".")
    }
}

#[test]
fn route_oracle_matches_the_docs_examples() {
    for (template, name) in [
        ("/", "root"),
        ("/user", "user"),
        ("/users/{id}/posts", "users._id.posts"),
        ("/{*rest}", "_rest"),
        ("/a.b/c d", "a_b.c_d"),
    ] {
        assert_eq!(route_oracle(template), name);
        assert_eq!(route_name(template), name);
    }
}

/// A StatsD name that Graphite stores as intended: non-empty levels of
/// `[A-Za-z0-9_-]`.
fn is_graphite_path(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|level| {
            !level.is_empty()
                && level
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// What a user key `raw` must become, computed here independently: itself
/// when short and plain (and no key), otherwise `h` + the 32 hex digits of
/// SipHash-1-3 (128-bit) under `key` (all zeros without one).
fn token_of(raw: &[u8], key: Option<[u8; 16]>) -> String {
    let plain = raw.len() <= MAX_PLAIN_USER_KEY
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'));
    if key.is_none() && plain {
        return String::from_utf8(raw.to_vec()).expect("plain is ASCII");
    }
    let hash = SipHasher13::new_with_key(&key.unwrap_or([0; 16])).hash(raw);
    format!("h{:032x}", hash.as_u128())
}

/// Is `member` exactly what a user key `raw` must become (no key).
fn is_token_of(member: &str, raw: &[u8]) -> bool {
    member == token_of(raw, None)
}

/// The set members that the successful requests carrying a user id must
/// have produced, under `key`.
fn expected_members(
    requests: &[Hostile],
    statuses: &[StatusCode],
    key: Option<[u8; 16]>,
) -> BTreeSet<String> {
    requests
        .iter()
        .zip(statuses)
        .filter(|(_, s)| s.as_u16() < 400)
        .filter_map(|(h, _)| h.user.as_deref().filter(|u| !u.is_empty()))
        .map(|raw| token_of(raw, key))
        .collect()
}

// ----------------------------------------------------------------- strategies

/// Characters that break or extend a StatsD line, or a Graphite path.
const NASTY: &[char] = &[
    '\n', '\r', ':', '|', '#', '@', ';', '=', ' ', '\t', '\0', '.', '/', '%', '+', '&', '?', '{',
    '}', '*', 'é', '日', '🦀', '\u{2028}', '\u{7f}',
];

/// Short strings mixing plain characters, the nasty ones and any unicode;
/// one in ten is repeated to at least 10 kB, and some are empty.
fn hostile_string() -> impl Strategy<Value = String> {
    (small_hostile_string(), proptest::bool::weighted(0.1)).prop_map(|(s, big)| {
        if big && !s.is_empty() {
            s.repeat(10_240 / s.len() + 1)
        } else {
            s
        }
    })
}

/// Like [`hostile_string`], never long (so that many fit in one URI).
fn small_hostile_string() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        4 => proptest::sample::select(NASTY),
        4 => proptest::char::range('a', 'z'),
        2 => proptest::char::range('0', '9'),
        1 => any::<char>(),
    ];
    (
        proptest::collection::vec(ch, 0..24),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(chars, big)| {
            let s: String = chars.into_iter().collect();
            if big && !s.is_empty() {
                s.repeat(10_240 / s.len() + 1)
            } else {
                s
            }
        })
}

/// Header-value bytes: everything `HeaderValue` accepts (visible ASCII,
/// space, tab, obs-text), including `: | # @ ; =`; some are 10 kB.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => proptest::sample::select(b":|#@;= \t.-_%".to_vec()),
        4 => 0x20u8..0x7f,
        1 => 0x80u8..=0xff,
    ];
    (
        proptest::collection::vec(byte, 0..24),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(b, big)| {
            if big && !b.is_empty() {
                b.repeat(10_240 / b.len() + 1)
            } else {
                b
            }
        })
}

/// Standard methods and arbitrary tokens (`|`, `#`, `'` are token characters).
fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        proptest::sample::select(vec![
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
            Method::PATCH
        ]),
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}"
            .prop_map(|m| Method::from_bytes(m.as_bytes()).expect("a token")),
    ]
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// One hostile request and the user id the layer should read from it.
#[derive(Clone)]
struct Hostile {
    method: Method,
    uri: String,
    /// What the user-key source holds, decoded; `None` if absent.
    user: Option<Vec<u8>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Failures print the start of long values only.
impl std::fmt::Debug for Hostile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn short(bytes: &[u8]) -> String {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
            if bytes.len() > 120 {
                format!("{text:?}... ({} bytes)", bytes.len())
            } else {
                format!("{text:?}")
            }
        }
        f.debug_struct("Hostile")
            .field("method", &self.method)
            .field("uri", &format_args!("{}", short(self.uri.as_bytes())))
            .field(
                "user",
                &format_args!("{}", self.user.as_deref().map_or("None".to_owned(), short)),
            )
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", short(v.as_bytes())))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A path: one of the router's templates filled with hostile segments, or a
/// hostile path of its own; each segment either percent-encoded or raw when
/// the raw form is a valid URI.
fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/".to_owned()),
        Just("/user".to_owned()),
        segment().prop_map(|s| format!("/users/{s}/posts")),
        proptest::collection::vec(segment(), 0..4).prop_map(|s| format!("/files/{}", s.join("/"))),
        proptest::collection::vec(segment(), 0..5).prop_map(|s| format!("/{}", s.join("/"))),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    (small_hostile_string(), any::<bool>()).prop_map(|(s, raw)| {
        let raw_ok = raw
            && http::uri::PathAndQuery::try_from(format!("/{s}")).is_ok()
            && !s.contains(['?', '#', '/']);
        if raw_ok {
            s
        } else {
            encode(&s)
        }
    })
}

/// Query-key requests: `?id=` carries the hostile user id, among hostile
/// parameters (the first `id` wins).
fn query_request() -> impl Strategy<Value = Hostile> {
    let params = proptest::collection::vec((small_hostile_string(), small_hostile_string()), 0..3);
    let headers = proptest::collection::vec(("[a-z][a-z0-9-]{0,15}", header_bytes()), 0..3);
    (
        method(),
        path(),
        proptest::option::of(hostile_string()),
        params,
        headers,
    )
        .prop_map(|(method, path, id, params, headers)| {
            let mut pairs: Vec<String> = params
                .iter()
                .filter(|(k, _)| k != "id")
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect();
            if let Some(id) = &id {
                pairs.insert(pairs.len() / 2, format!("id={}", encode(id)));
            }
            let uri = if pairs.is_empty() {
                path
            } else {
                format!("{path}?{}", pairs.join("&"))
            };
            Hostile {
                method,
                uri,
                user: id.map(String::into_bytes),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            HeaderName::try_from(k).expect("a header name"),
                            HeaderValue::from_bytes(&v).expect("a value"),
                        )
                    })
                    .collect(),
            }
        })
        // A percent-encoded 10 kB value of multi-byte characters can pass
        // the 64 kB limit of `http::Uri`: no server would see that request.
        .prop_filter("the URI fits in http::Uri", |h| h.uri.len() < 65_000)
}

/// Header-key requests: `x-user-id` carries the hostile user id.
fn header_request() -> impl Strategy<Value = Hostile> {
    (
        method(),
        path(),
        proptest::option::of(header_bytes()),
        hostile_string(),
    )
        .prop_map(|(method, path, id, query)| {
            let uri = format!("{path}?q={}", encode(&query));
            let headers = id
                .iter()
                .map(|v| {
                    (
                        HeaderName::from_static("x-user-id"),
                        HeaderValue::from_bytes(v).expect("a value"),
                    )
                })
                .collect();
            Hostile {
                method,
                uri,
                user: id,
                headers,
            }
        })
        .prop_filter("the URI fits in http::Uri", |h| h.uri.len() < 65_000)
}

// ----------------------------------------------------------------- harness

/// Sends `requests` through `app`, returns the statuses and the lines flushed.
fn drive(rt: &tokio::runtime::Runtime, app: &Router, requests: &[Hostile]) -> Vec<StatusCode> {
    let requests: Vec<Request<Body>> = requests
        .iter()
        .map(|h| {
            let mut request = Request::builder().method(h.method.clone()).uri(&h.uri);
            for (name, value) in &h.headers {
                request = request.header(name, value);
            }
            request.body(Body::empty()).expect("a request")
        })
        .collect();
    rt.block_on(async {
        let mut statuses = Vec::new();
        for request in requests {
            let response = app.clone().oneshot(request).await.expect("infallible");
            statuses.push(response.status());
            response.into_body().collect().await.expect("the body");
        }
        statuses
    })
}

/// Every line parses strictly, every name is documented, and the set holds
/// exactly the tokens of the successful requests that carried a user id.
fn check(lines: &[String], prefix: &str, requests: &[Hostile], statuses: &[StatusCode]) {
    for line in lines {
        let (name, _) = parse_line(line);
        assert!(
            is_graphite_path(&name),
            "empty level in {name:?} ({line:?})"
        );
        assert!(
            documented(&name, prefix, &ROUTES, &[SET]),
            "undocumented name {name:?} in {line:?}"
        );
    }
    let t = totals(lines);
    let called: f64 = t
        .counters
        .iter()
        .filter(|(k, _)| k.ends_with(".called"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        called,
        requests.len() as f64,
        "one hit per request: {lines:?}"
    );
    let visits: Vec<&Hostile> = requests
        .iter()
        .zip(statuses)
        .filter(|(h, s)| s.as_u16() < 400 && h.user.as_ref().is_some_and(|u| !u.is_empty()))
        .map(|(h, _)| h)
        .collect();
    let members = t
        .sets
        .get(&format!("{prefix}.{SET}"))
        .cloned()
        .unwrap_or_default();
    let exact: BTreeSet<String> = members.iter().cloned().collect();
    assert_eq!(
        exact.len(),
        members.len(),
        "each member once a window: {members:?}"
    );
    assert_eq!(
        exact,
        expected_members(requests, statuses, None),
        "the set holds exactly the visits' tokens"
    );
    for h in &visits {
        let raw = h.user.as_deref().expect("a visit has a user");
        assert!(
            members.iter().any(|m| is_token_of(m, raw)),
            "no member for {raw:?} in {members:?}"
        );
    }
    for m in &members {
        assert!(
            visits
                .iter()
                .any(|h| is_token_of(m, h.user.as_deref().unwrap())),
            "stray member {m:?}"
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

// ----------------------------------------------------------------- naming

#[test]
fn route_name_of_any_template_is_a_graphite_path() {
    runner(2048)
        .run(
            &prop_oneof![hostile_string(), any::<String>()],
            |template| {
                let name = route_name(&template);
                prop_assert!(is_graphite_path(&name), "{template:?} -> {name:?}");
                prop_assert_eq!(&name, &route_oracle(&template));
                // One level per non-empty path segment: `/` is the only separator.
                let segments = template.split('/').filter(|s| !s.is_empty()).count();
                prop_assert_eq!(
                    name.split('.').count(),
                    segments.max(1),
                    "{:?} -> {:?}",
                    template,
                    name
                );
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn prefixes_overrides_and_set_names_stay_inside_their_names() {
    let rt = runtime();
    let inputs = (
        hostile_string(),
        hostile_string(),
        hostile_string(),
        hostile_string(),
    );
    runner(256)
        .run(&inputs, |(prefix, name, set, id)| {
            let (statsd, rx) = spy_statsd(&prefix);
            // An empty set name is the caller's mistake; a set needs a name.
            let set = if sanitized(&set).is_empty() {
                format!("{set}x")
            } else {
                set
            };
            let app = Router::new()
                .route("/", get(|| async { "root" }))
                .route("/named/{id}", get(|| async { "named" }))
                .layer(
                    statsd
                        .layer()
                        .user_key(UserKey::query("id"), set.clone())
                        .rename_route("/named/{id}", name.clone()),
                );
            let requests = [
                "/".to_owned(),
                format!("/named/x?id={}", encode(&id)),
                "/nowhere".to_owned(),
            ];
            rt.block_on(async {
                for uri in &requests {
                    let response = app
                        .clone()
                        .oneshot(Request::get(uri.as_str()).body(Body::empty()).unwrap())
                        .await
                        .unwrap();
                    response.into_body().collect().await.unwrap();
                }
            });
            let lines = flushed_lines(&statsd, &rx);
            let prefix = sanitized(&prefix);
            prop_assert_eq!(statsd.prefix(), prefix.as_str());
            let named = match sanitized(&name) {
                empty if empty.is_empty() => "named._id".to_owned(),
                named => named,
            };
            let set = sanitized(&set);
            for line in &lines {
                let (metric, _) = parse_line(line);
                prop_assert!(is_graphite_path(&metric), "{:?}", line);
                prop_assert!(
                    documented(&metric, &prefix, &["root", &named, UNMATCHED], &[&set]),
                    "undocumented {:?} (prefix {:?}, route {:?}, set {:?})",
                    metric,
                    prefix,
                    named,
                    set
                );
            }
            let t = totals(&lines);
            let base = |name: &str| {
                if prefix.is_empty() {
                    name.to_owned()
                } else {
                    format!("{prefix}.{name}")
                }
            };
            prop_assert_eq!(
                t.counters.get(&base(&format!("{named}.called"))),
                Some(&1.0)
            );
            prop_assert_eq!(t.counters.get(&base("root.called")), Some(&1.0));
            prop_assert_eq!(t.counters.get(&base("unmatched.called")), Some(&1.0));
            if !id.is_empty() {
                let members = &t.sets[&base(&set)];
                prop_assert!(
                    members.len() == 1 && is_token_of(&members[0], id.as_bytes()),
                    "{:?}",
                    members
                );
            }
            Ok(())
        })
        .unwrap();
}

/// A set whose name sanitizes to nothing must still have a name: the line
/// `:123|s` (empty prefix) is not StatsD, and `prefix.:123|s` is a Graphite
/// path with an empty level. It falls back to `user`.
#[test]
fn a_set_name_that_sanitizes_to_nothing_is_never_emitted_as_an_empty_name() {
    for (prefix, set) in [("", ""), ("p", ""), ("p", "..."), ("", "..")] {
        let (statsd, rx) = spy_statsd(prefix);
        let app = Router::new()
            .route("/", get(|| async { "root" }))
            .layer(statsd.layer().user_key(UserKey::query("id"), set));
        runtime().block_on(async {
            let response = app
                .oneshot(Request::get("/?id=123").body(Body::empty()).unwrap())
                .await
                .unwrap();
            response.into_body().collect().await.unwrap();
        });
        let lines = flushed_lines(&statsd, &rx);
        for line in &lines {
            let (name, _) = parse_line(line);
            assert!(
                is_graphite_path(&name),
                "prefix {prefix:?}, set {set:?}: {line:?}"
            );
        }
        // It falls back to the tutorial's set name, `user`.
        let expected = if prefix.is_empty() {
            "user".to_owned()
        } else {
            format!("{prefix}.user")
        };
        assert_eq!(
            totals(&lines).sets.get(&expected).map(Vec::as_slice),
            Some(&["123".to_owned()][..]),
            "{lines:?}"
        );
    }
}

// ----------------------------------------------------------------- requests

/// Batches of hostile requests through the layer with `key`: every line
/// parses strictly and every name is documented (see `check`).
fn only_documented_lines(key: UserKey, requests: impl Strategy<Value = Hostile>) {
    let rt = runtime();
    let (statsd, rx) = spy_statsd("statstest");
    let app = app(&statsd, key);
    runner(256)
        .run(&proptest::collection::vec(requests, 1..8), |requests| {
            let statuses = drive(&rt, &app, &requests);
            check(
                &flushed_lines(&statsd, &rx),
                "statstest",
                &requests,
                &statuses,
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn hostile_requests_with_a_query_user_key_emit_only_documented_lines() {
    only_documented_lines(UserKey::query("id"), query_request());
}

#[test]
fn hostile_requests_with_a_header_user_key_emit_only_documented_lines() {
    only_documented_lines(
        UserKey::header(http::HeaderName::from_static("x-user-id")),
        header_request(),
    );
}

#[test]
fn keyed_hashing_sends_no_raw_user_id_at_all() {
    const SECRET: [u8; 16] = *b"0123456789abcdef";
    let rt = runtime();
    let (statsd, rx) = spy_statsd("statstest");
    let app = app(&statsd, UserKey::query("id").keyed_hash(SECRET));
    // A plain id that would be sent raw without the key, in every batch, so
    // every case must produce a set line.
    let known = Hostile {
        method: Method::GET,
        uri: "/user?id=123".to_owned(),
        user: Some(b"123".to_vec()),
        headers: Vec::new(),
    };
    runner(128)
        .run(
            &proptest::collection::vec(query_request(), 1..6),
            |mut requests| {
                requests.push(known.clone());
                let statuses = drive(&rt, &app, &requests);
                let lines = flushed_lines(&statsd, &rx);
                let sets = totals(&lines).sets;
                prop_assert_eq!(
                    sets.keys().collect::<Vec<_>>(),
                    ["statstest.user"],
                    "one set, and it is there: {:?}",
                    lines
                );
                let members: BTreeSet<String> = sets["statstest.user"].iter().cloned().collect();
                prop_assert!(members.contains(&token_of(b"123", Some(SECRET))));
                prop_assert!(!members.contains("123"), "a raw id left the process");
                prop_assert_eq!(
                    members,
                    expected_members(&requests, &statuses, Some(SECRET))
                );
                Ok(())
            },
        )
        .unwrap();
}

/// Tagged mode puts the route, method and status into tags: a hostile method
/// becomes `other`, and the tags hold nothing a client wrote.
#[test]
fn tagged_mode_tags_carry_nothing_a_client_wrote() {
    let rt = runtime();
    // A server that reads tags (for one that does not, names stay
    // hierarchical).
    let (rx, spy) = support::spy::spy();
    let statsd = tower_statsd::Statsd::builder()
        .prefix("statstest")
        .server(tower_statsd::Server::Etsy)
        .protocol(tower_statsd::Protocol::Plain)
        .flush_interval(std::time::Duration::from_secs(3600))
        .build_with(spy)
        .expect("build");
    let app = Router::new()
        .route("/", get(|| async { "root" }))
        .route("/users/{id}/posts", get(|| async { "posts" }))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(
            statsd
                .layer()
                .naming(NamingMode::Tagged)
                .user_key(UserKey::query("id"), SET),
        );
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "other",
    ];
    runner(256)
        .run(
            &proptest::collection::vec(query_request(), 1..6),
            |requests| {
                drive(&rt, &app, &requests);
                for line in flushed_lines(&statsd, &rx) {
                    let (head, tags) = line.split_once("|#").unwrap_or((&line, ""));
                    let (name, _) = parse_line(head);
                    prop_assert!(
                        [
                            "statstest.http.requests",
                            "statstest.http.request.duration",
                            "statstest.http.bytes_sent",
                            "statstest.http.in_flight",
                            "statstest.user",
                            "statstest.tower_statsd.dropped"
                        ]
                        .contains(&name.as_str()),
                        "{:?}",
                        line
                    );
                    let parts: Vec<&str> = if tags.is_empty() {
                        Vec::new()
                    } else {
                        tags.split(',').collect()
                    };
                    let tags: Vec<(&str, &str)> =
                        parts.iter().filter_map(|t| t.split_once(':')).collect();
                    prop_assert_eq!(
                        tags.len(),
                        parts.len(),
                        "every tag is name:value: {:?}",
                        line
                    );
                    if name == "statstest.http.in_flight" {
                        prop_assert_eq!(tags.len(), 1, "{:?}", line);
                        prop_assert!(
                            tags[0].0 == "route"
                                && ["root", "users._id.posts", UNMATCHED].contains(&tags[0].1),
                            "{:?}",
                            line
                        );
                        continue;
                    }
                    if !name.starts_with("statstest.http.") {
                        prop_assert!(tags.is_empty(), "{:?}", line);
                        continue;
                    }
                    prop_assert_eq!(tags.len(), 3, "{:?}", line);
                    prop_assert!(
                        tags[0].0 == "route"
                            && ["root", "users._id.posts", UNMATCHED].contains(&tags[0].1),
                        "{:?}",
                        line
                    );
                    prop_assert!(
                        tags[1].0 == "method" && methods.contains(&tags[1].1),
                        "{:?}",
                        line
                    );
                    let status = tags[2].1;
                    prop_assert!(
                        tags[2].0 == "status"
                            && (status == "error"
                                || (status.len() == 3
                                    && status.bytes().all(|b| b.is_ascii_digit()))),
                        "{:?}",
                        line
                    );
                }
                Ok(())
            },
        )
        .unwrap();
}

/// A handler's own metrics with names and set members built from client
/// input: what the sink lets through is always one well-formed line; what
/// it cannot send safely it drops and counts.
#[test]
fn handler_metrics_named_from_client_input_never_break_a_line() {
    let (statsd, rx) = spy_statsd("statstest");
    runner(512)
        .run(&(hostile_string(), hostile_string()), |(key, member)| {
            statsd.count(&key, 1).ok();
            statsd.gauge(&key, 3).ok();
            statsd.gauge_delta(&key, -2.0);
            statsd.timing_ms(&key, 0.25);
            statsd.time_fn(&key, || ());
            statsd.set(&key, 42).ok();
            statsd.incr(&format!("visitors.{member}")).ok();
            for line in flushed_lines(&statsd, &rx) {
                // Names strictly; set members as the daemon needs them.
                let (name, rest) = line.split_once(':').expect("name:value");
                // Exactly a name the handler used: the sink checks the
                // charset, it does not rename (an empty level, `a..b`, is
                // the handler's to avoid).
                let sent = [
                    format!("statstest.{key}"),
                    // `gauge_delta`, `timing_ms` and `time_fn` sanitize.
                    format!("statstest.{}", sanitized(&key)),
                    format!("statstest.visitors.{member}"),
                    "statstest.tower_statsd.dropped".to_owned(),
                ];
                prop_assert!(sent.iter().any(|s| s == name), "{:?}", line);
                prop_assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')),
                    "{:?}",
                    line
                );
                for field in rest.split(':') {
                    let bits: Vec<&str> = field.split('|').collect();
                    prop_assert!((2..=3).contains(&bits.len()), "{:?}", line);
                    prop_assert!(["c", "ms", "g", "s"].contains(&bits[1]), "{:?}", line);
                    if bits[1] == "s" {
                        prop_assert!(
                            !bits[0].is_empty()
                                && !bits[0]
                                    .contains(|c: char| c.is_whitespace() || "\n\r:|#".contains(c)),
                            "{:?}",
                            line
                        );
                    } else {
                        let n = bits[0].trim_start_matches('+').parse::<f64>();
                        prop_assert!(n.is_ok_and(f64::is_finite), "{:?}", line);
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

// ----------------------------------------------------------------- cardinality

/// 100 000 requests to random unknown paths with random methods (and random
/// methods on known paths) add one route name, `unmatched`, and nothing else.
#[test]
fn a_hundred_thousand_unknown_paths_and_methods_add_only_unmatched() {
    const N: usize = 100_000;
    const BATCH: usize = 5_000;
    let rt = runtime();
    let (statsd, rx) = spy_statsd("statstest");
    let app = app(&statsd, UserKey::query("id"));
    rt.block_on(async {
        for uri in ["/", "/user?id=1", "/users/1/posts", "/files/a/b"] {
            let r = app
                .clone()
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            r.into_body().collect().await.unwrap();
        }
    });
    let before = totals(&flushed_lines(&statsd, &rx));
    let routes_of = |t: &support::Totals| -> BTreeSet<String> {
        t.counters
            .keys()
            .filter_map(|k| k.strip_suffix(".called"))
            .map(|k| k.trim_start_matches("statstest.").to_owned())
            .collect()
    };
    assert_eq!(
        routes_of(&before),
        ["files._rest", "root", "user", "users._id.posts"]
            .map(str::to_owned)
            .into()
    );

    // A fixed-seed generator: the run is random-looking but reproducible.
    let mut rng = proptest::test_runner::TestRng::deterministic_rng(
        proptest::test_runner::RngAlgorithm::ChaCha,
    );
    let token: Vec<u8> =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+.^_`|~-".to_vec();
    let mut next = move |n: u64| rng.next_u64() % n;
    let started = Instant::now();
    let mut names = BTreeSet::new();
    let (mut unmatched, mut root) = (0.0, 0.0);
    let (mut unmatched_seen, mut root_seen) = (0.0, 0.0);
    let mut sent = 0;
    while sent < N {
        let batch: Vec<(Method, String)> = (0..BATCH)
            .map(|_| {
                let len = 1 + next(20);
                let method: Vec<u8> = (0..len)
                    .map(|_| token[next(token.len() as u64) as usize])
                    .collect();
                let method = Method::from_bytes(&method).expect("a token");
                let uri = if next(10) == 0 {
                    "/".to_owned()
                } else {
                    let segments = 1 + next(4);
                    let path: Vec<String> = (0..segments)
                        .map(|_| format!("{:x}", next(u64::MAX)))
                        .collect();
                    format!("/scan-{}/{}", next(1_000_000), path.join("/"))
                };
                (method, uri)
            })
            .collect();
        rt.block_on(async {
            for (method, uri) in &batch {
                let request = Request::builder()
                    .method(method.clone())
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                response.into_body().collect().await.unwrap();
            }
        });
        root += batch.iter().filter(|(_, uri)| uri == "/").count() as f64;
        unmatched += batch.iter().filter(|(_, uri)| uri != "/").count() as f64;
        sent += batch.len();
        let t = totals(&flushed_lines(&statsd, &rx));
        assert_eq!(
            t.counters.get("statstest.tower_statsd.dropped"),
            None,
            "nothing dropped"
        );
        unmatched_seen += t
            .counters
            .get("statstest.unmatched.called")
            .copied()
            .unwrap_or(0.0);
        root_seen += t
            .counters
            .get("statstest.root.called")
            .copied()
            .unwrap_or(0.0);
        names.extend(
            t.counters
                .keys()
                .chain(t.timers.keys())
                .chain(t.sets.keys())
                .cloned(),
        );
        assert!(started.elapsed().as_secs() < 300, "bounded in time");
    }
    let new: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "statstest.unmatched",
        "statstest.unmatched.called",
        "statstest.unmatched.bytes_sent",
        "statstest.unmatched.status.404",
        "statstest.root",
        "statstest.root.called",
        "statstest.root.bytes_sent",
        "statstest.root.status.200",
        "statstest.root.status.405",
    ]
    .into();
    assert!(
        new.is_subset(&expected),
        "new names: {:?}",
        new.difference(&expected).collect::<Vec<_>>()
    );
    assert!(
        new.contains("statstest.unmatched.called") && new.contains("statstest.root.status.405")
    );
    // Counts stayed exact: every request was one hit, under its route.
    assert_eq!((unmatched_seen, root_seen), (unmatched, root));
    assert_eq!(unmatched + root, N as f64);
}
