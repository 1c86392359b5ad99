//! Hostile input against the real StatsD 0.9.0: requests whose method, path,
//! query, headers and user id carry `\n \r : | # @ ; =`, spaces, unicode,
//! empty and 10 kB values leave no bad line at the daemon and no key the
//! docs do not list; and thousands of random unknown paths and methods add
//! one route, `unmatched`, and nothing else.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use e2e::{poll, Stack};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_statsd::{Statsd, Transport, UserKey};

/// Each test has its own prefix: the stack is shared by this binary.
const INJECTION: &str = "hostile_injection";
const CARDINALITY: &str = "hostile_cardinality";
const ROUTES: [&str; 5] = [
    "root",
    "user",
    "users._id.posts",
    "files._rest",
    "unmatched",
];
const DEADLINE: Duration = Duration::from_secs(60);

fn app(statsd: &Statsd) -> Router {
    Router::new()
        .route("/", get(|| async { "root" }))
        .route("/user", get(|| async { "user" }))
        .route("/users/{id}/posts", get(|| async { "posts" }))
        .route("/files/{*rest}", get(|| async { "rest" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "nothing here") })
        .layer(statsd.layer().user_key(UserKey::query("id"), "user"))
}

fn client(stack: &Stack, prefix: &str) -> Statsd {
    Statsd::builder()
        .host("127.0.0.1")
        .port(stack.statsd_port)
        .prefix(prefix)
        .flush_interval(Duration::from_millis(200))
        .build()
        .expect("a client")
}

/// A client sending over TCP, whose flow control loses nothing however
/// much one `flush()` sends at once (a burst of UDP packets overflows the
/// daemon's receive buffer).
fn tcp_client_with_window(stack: &Stack, prefix: &str, window: Duration) -> Statsd {
    Statsd::builder()
        .host("127.0.0.1")
        .port(stack.statsd_port)
        .prefix(prefix)
        .transport(Transport::Tcp)
        .flush_interval(window)
        .build()
        .expect("a client")
}

/// A key the docs list: statsd's own, or one of [`app`]'s names under one of
/// this binary's prefixes.
fn documented(key: &str) -> bool {
    if key.starts_with("statsd.") {
        return true;
    }
    [INJECTION, CARDINALITY].iter().any(|prefix| {
        let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
            return false;
        };
        rest == "user"
            || rest == "tower_statsd.dropped"
            || ROUTES.iter().any(|route| {
                rest == *route
                    || rest.strip_prefix(route).is_some_and(|tail| {
                        [".called", ".bytes_sent", ".in_flight"].contains(&tail)
                            || tail.strip_prefix(".status.").is_some_and(|code| {
                                code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit())
                            })
                    })
            })
    })
}

/// The keys of the object StatsD's admin port prints with `util.inspect`
/// (`{ 'a.b': 1, c: [ 1, 2 ] }`), robust to any characters inside them.
fn inspect_keys(dump: &str) -> Vec<String> {
    let body = dump.trim().trim_end_matches("END").trim();
    let inner = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not an object: {dump:?}"));
    let chars: Vec<char> = inner.chars().collect();
    let mut keys = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let mut key = String::new();
        if chars[i] == '\'' || chars[i] == '"' {
            let quote = chars[i];
            i += 1;
            while i < chars.len() && chars[i] != quote {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                key.push(chars[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < chars.len() && chars[i] != ':' {
                key.push(chars[i]);
                i += 1;
            }
        }
        keys.push(key.trim().to_owned());
        // Skip `: value` up to the next comma outside brackets and quotes.
        let mut depth = 0i32;
        let mut quote = None;
        while i < chars.len() {
            let c = chars[i];
            match quote {
                Some(_) if c == '\\' => i += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '\'' | '"' => quote = Some(c),
                    '[' | '{' => depth += 1,
                    ']' | '}' => depth -= 1,
                    ',' if depth == 0 => break,
                    _ => {}
                },
            }
            i += 1;
        }
    }
    keys
}

/// Every metric path Graphite holds.
fn graphite_paths(stack: &Stack) -> Result<Vec<String>, String> {
    let url = format!("{}/metrics/index.json", stack.graphite_url());
    let json: serde_json::Value = reqwest::blocking::get(url)
        .and_then(|r| r.json())
        .map_err(|e| e.to_string())?;
    Ok(json
        .as_array()
        .ok_or("index.json answered no array")?
        .iter()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect())
}

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Gen(u64);

impl Gen {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A hostile string; one in twenty is 10 kB (one such per URI: encoded,
    /// it takes up to 30 kB of the 64 kB an `http::Uri` holds).
    fn maybe_big(&mut self) -> String {
        let s = self.hostile();
        if self.below(20) == 0 && !s.is_empty() {
            s.repeat(10_240 / s.len() + 1)
        } else {
            s
        }
    }

    /// A short hostile string.
    fn hostile(&mut self) -> String {
        const PARTS: &[&str] = &[
            "\n",
            "\r",
            ":",
            "|",
            "#",
            "@",
            ";",
            "=",
            " ",
            "\t",
            ".",
            "/",
            "%",
            "+",
            "&",
            "é",
            "日",
            "🦀",
            "a",
            "b",
            "7",
            "x:1|c\n",
            "evil.metric:999|c",
            "|@0.1",
            "|#tag:v",
            "",
        ];
        let len = self.below(12);
        (0..len).map(|_| *self.pick(PARTS)).collect()
    }
}

fn encode(s: &str) -> String {
    // Percent-encode every byte outside the unreserved set.
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A hostile request, and the user id the layer reads from it (the first
/// `id` parameter, decoded).
fn hostile_request(g: &mut Gen) -> (Request<Body>, String) {
    const METHODS: &[&str] = &[
        "GET", "GET", "GET", "POST", "DELETE", "X|EVIL", "A#B", "M'Q", "%0A", "PROPFIND",
    ];
    let method = Method::from_bytes(g.pick(METHODS).as_bytes()).expect("a token");
    let path = match g.below(5) {
        0 => "/".to_owned(),
        1 => "/user".to_owned(),
        2 => format!("/users/{}/posts", encode(&g.hostile())),
        3 => format!("/files/{}/{}", encode(&g.hostile()), encode(&g.hostile())),
        _ => format!("/{}/{}", encode(&g.hostile()), encode(&g.hostile())),
    };
    let (key, value) = (g.hostile(), g.hostile());
    let id = g.maybe_big();
    let query = format!(
        "{}={}&id={}&id={}",
        encode(&key),
        encode(&value),
        encode(&id),
        encode(&g.hostile())
    );
    let mut header = g.maybe_big().into_bytes();
    header.retain(|b| *b >= 0x20 && *b != 0x7f || *b == b'\t');
    let request = Request::builder()
        .method(method)
        .uri(format!("{path}?{query}"))
        .header(
            "x-user-id",
            HeaderValue::from_bytes(&header).expect("a header value"),
        )
        .header(
            "x-forwarded-for",
            HeaderValue::from_bytes(&header).expect("a header value"),
        )
        .body(Body::empty())
        .expect("a request");
    (request, id)
}

async fn send(app: &Router, request: Request<Body>) -> StatusCode {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    response.into_body().collect().await.expect("the body");
    status
}

fn render_sum_of_routes(stack: &Stack, prefix: &str) -> Result<f64, String> {
    let mut sum = 0.0;
    for route in ROUTES {
        sum += stack.render_sum(&format!("stats_counts.{prefix}.{route}.called"), "-10min")?;
    }
    Ok(sum)
}

/// The keys StatsD holds (counters, timers, gauges from the admin port;
/// sets from Graphite, as the admin port does not list them) are all
/// documented names, and it saw no bad line.
fn assert_daemon_holds_only_documented_keys(stack: &Stack) {
    for command in ["counters", "timers", "gauges"] {
        let keys = inspect_keys(&stack.admin(command));
        assert!(
            keys.iter().any(|k| k.starts_with("statsd.")) || command != "counters",
            "{keys:?}"
        );
        for key in keys {
            assert!(
                documented(&key),
                "StatsD holds the undocumented {command} key {key:?}"
            );
        }
    }
    for path in graphite_paths(stack).unwrap() {
        if let Some(set) = path.strip_prefix("stats.sets.") {
            let key = set
                .strip_suffix(".count")
                .unwrap_or_else(|| panic!("set path {path:?}"));
            assert!(
                documented(key),
                "Graphite holds the undocumented set {path:?}"
            );
        }
    }
    let stats = stack.admin("stats");
    assert!(
        stats
            .lines()
            .any(|l| l.trim() == "messages.bad_lines_seen: 0"),
        "StatsD saw bad lines:\n{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_leave_no_bad_line_and_no_undocumented_key() {
    const N: usize = 2_000;
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();
    // One window for the whole run, sent by `flush()`: each distinct user
    // leaves exactly once (per route), so the daemon's set counts add up to
    // them.
    let statsd = tcp_client_with_window(stack, INJECTION, Duration::from_secs(3600));
    let app = app(&statsd);
    let mut g = Gen(0x5eed_cafe_f00d_0001);
    let mut users = BTreeSet::new();
    let started = Instant::now();
    for _ in 0..N {
        let (request, id) = hostile_request(&mut g);
        if send(&app, request).await.as_u16() < 400 && !id.is_empty() {
            users.insert(id);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "bounded in time"
        );
    }
    // And a plain visit, so the set surely exists.
    assert_eq!(
        send(
            &app,
            Request::get("/user?id=alice").body(Body::empty()).unwrap()
        )
        .await,
        StatusCode::OK
    );
    users.insert("alice".to_owned());
    assert!(users.len() > 1, "the run had hostile visits");
    tokio::task::spawn_blocking({
        let s = statsd.clone();
        move || s.flush()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(statsd.sink().dropped(), 0, "nothing dropped on our side");

    tokio::task::spawn_blocking(move || {
        poll(
            "every hostile request counted under a documented route",
            DEADLINE,
            || {
                let sum = render_sum_of_routes(stack, INJECTION)?;
                (sum == (N + 1) as f64)
                    .then_some(())
                    .ok_or(format!("sum {sum}"))
            },
        );
        // Distinct ids are distinct members (plain ones as they are, the
        // rest hashed), so the set holds exactly one member per user.
        poll("every user in the set in Graphite", DEADLINE, || {
            let members =
                stack.render_sum(&format!("stats.sets.{INJECTION}.user.count"), "-10min")?;
            (members == users.len() as f64)
                .then_some(())
                .ok_or(format!("{members} members, want {}", users.len()))
        });
        poll("statsd.bad_lines_seen reported", DEADLINE, || {
            let points = stack.render("stats_counts.statsd.bad_lines_seen", "-10min")?;
            (!points.is_empty())
                .then_some(())
                .ok_or("no datapoints yet".to_owned())
        });
        let bad = stack
            .render_sum("stats_counts.statsd.bad_lines_seen", "-10min")
            .unwrap();
        assert_eq!(bad, 0.0, "stats_counts.statsd.bad_lines_seen");
        assert_daemon_holds_only_documented_keys(stack);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_add_only_unmatched() {
    const N: usize = 5_000;
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();
    let statsd = client(stack, CARDINALITY);
    let app = app(&statsd);
    let mut g = Gen(0x5eed_cafe_f00d_0002);
    let token = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+.^_`|~-";
    for i in 0..N {
        let len = 1 + g.below(16);
        let method: Vec<u8> = (0..len).map(|_| token[g.below(token.len())]).collect();
        let uri = format!("/scan-{i}/{:x}/{}.php", g.below(usize::MAX), g.below(1000));
        let request = Request::builder()
            .method(Method::from_bytes(&method).unwrap())
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, request).await, StatusCode::NOT_FOUND);
    }
    tokio::task::spawn_blocking({
        let s = statsd.clone();
        move || s.flush()
    })
    .await
    .unwrap()
    .unwrap();

    tokio::task::spawn_blocking(move || {
        poll("every request counted as unmatched", DEADLINE, || {
            let sum = stack.render_sum(
                &format!("stats_counts.{CARDINALITY}.unmatched.called"),
                "-10min",
            )?;
            (sum == N as f64).then_some(()).ok_or(format!("sum {sum}"))
        });
        let ours = |command: &str| -> BTreeSet<String> {
            inspect_keys(&stack.admin(command))
                .into_iter()
                .filter(|k| k.starts_with(CARDINALITY))
                .collect()
        };
        let expected = |names: &[&str]| -> BTreeSet<String> {
            names.iter().map(|n| format!("{CARDINALITY}.{n}")).collect()
        };
        assert_eq!(
            ours("counters"),
            expected(&[
                "unmatched.called",
                "unmatched.bytes_sent",
                "unmatched.status.404"
            ])
        );
        assert_eq!(ours("timers"), expected(&["unmatched"]));
        // The in-flight gauge, if a window ended while requests ran.
        assert!(ours("gauges").is_subset(&expected(&["unmatched.in_flight"])));
        let tree = stack
            .find(&format!("stats_counts.{CARDINALITY}.*"))
            .unwrap();
        assert_eq!(
            tree,
            [format!("stats_counts.{CARDINALITY}.unmatched")],
            "one route in Graphite"
        );
        assert_daemon_holds_only_documented_keys(stack);
    })
    .await
    .unwrap();
}

#[test]
fn inspect_keys_reads_node_util_inspect() {
    let dump = "{ 'statsd.bad_lines_seen': 0,\n  foo: [ 1, 2, ... 3 more items ],\n  'a,b': { x: 'y,z' },\n  \"q'q\": 1 }\nEND\n\n";
    assert_eq!(
        inspect_keys(dump),
        ["statsd.bad_lines_seen", "foo", "a,b", "q'q"]
    );
    assert_eq!(inspect_keys("{}\nEND\n"), Vec::<String>::new());
}
