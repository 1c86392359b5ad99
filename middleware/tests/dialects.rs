//! Golden tests of every wire dialect's bytes, held against the line
//! grammars of the StatsD servers that cannot run on our machines. Each
//! grammar below is written from the server's public documentation, rule by
//! rule, and each rule says where it comes from:
//!
//! - **DogStatsD** (Datadog's "Datagram Format and Shell Usage" page):
//!   `<NAME>:<VALUE>|<TYPE>|@<SAMPLE_RATE>|#<TAGS>`; names are ASCII
//!   alphanumerics, `_` and `.`; types `c g ms h s d`; protocol 1.1 packs
//!   values as `<NAME>:<V1>:<V2>|<TYPE>|...` for every type **except sets**,
//!   the type, rate and tags being shared by all the values.
//! - **statsd_exporter** (Prometheus' statsd_exporter README, "StatsD line
//!   formats"): one `name:value|type[|@rate][|#tags]` per line; the Etsy
//!   multi-value form `name:v1|t:v2|t` is read only when the line has no
//!   tags (DogStatsD tags are parsed off the whole line first); no set type
//!   is exported (sets are dropped, not misread).
//! - **gostatsd** (Atlassian's gostatsd README, "line protocol"): exactly one
//!   value per line, `name:value|type[|@rate][|#tags]`.
//! - **Telegraf** (`inputs.statsd` README): Etsy's format including
//!   multi-value lines `name:v1|ms:v2|ms`, and DogStatsD tags with
//!   `parse_data_dog_tags` / `datadog_extensions`.
//!
//! The first test pins the exact bytes of a fixed window in each dialect;
//! the second checks, for each dialect, which grammars read every line.
//! Last, each dialect's name as `STATSD_PROTOCOL` takes it and shows it.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_statsd::prelude::*;
use tower_statsd::{NamingMode, Protocol, Server, Statsd, UnknownProtocol};

mod support;
use support::daemon::{dogstatsd_as_etsy, Daemon};
use support::logged;
use support::spy::spy;

/// A server that reads `protocol` and tags: Etsy StatsD 0.9 for its own
/// packing and plain lines, the Datadog agent for DogStatsD's.
fn tag_reader(protocol: Protocol) -> Server {
    match protocol {
        Protocol::DogStatsd => Server::Datadog,
        _ => Server::Etsy,
    }
}

/// The lines of one window: 3 requests to `/` with two users, and a
/// handler-style timer with a client-side sample rate, through `protocol`.
async fn window(protocol: Protocol, naming: NamingMode) -> Vec<String> {
    let (rx, spy) = spy();
    let statsd = Statsd::builder()
        .prefix("app")
        .server(tag_reader(protocol))
        .protocol(protocol)
        .naming(naming)
        .max_packet_size(1432)
        .flush_interval(Duration::from_secs(3600))
        .build_with(spy)
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(statsd.layer().user_key(UserKey::query("id"), "user"));
    for id in ["7", "7", "8"] {
        let request = Request::get(format!("/?id={id}"))
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    statsd
        .time_with_tags("db", Duration::from_millis(4))
        .with_sampling_rate(0.5)
        .send();
    statsd.time("db", 6u64).ok();
    statsd.time("db", 9u64).ok();
    statsd.set("seen", 1i64).ok();
    statsd.set("seen", 2i64).ok();
    statsd.flush().unwrap();
    rx.lines()
}

/// Timer values of the layer depend on the clock: written as `T`.
fn masked(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|line| {
            let (name, rest) = line.split_once(':').unwrap();
            if rest.ends_with("|s") {
                // Set members in sorted order: a set has none of its own.
                let mut members: Vec<&str> = rest.split(':').collect();
                members.sort();
                return format!("{name}:{}", members.join(":"));
            }
            if name != "app.root" && name != "app.http.request.duration" {
                return line.clone();
            }
            let (body, tags) = match rest.split_once("|#") {
                Some((body, tags)) => (body, format!("|#{tags}")),
                None => (rest, String::new()),
            };
            let fields: Vec<String> = body
                .split(':')
                .map(|field| {
                    let number = field.find('|').unwrap_or(field.len());
                    format!("T{}", &field[number..])
                })
                .collect();
            format!("{name}:{}{tags}", fields.join(":"))
        })
        .collect()
}

fn set(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().map(|l| (*l).to_owned()).collect()
}

#[tokio::test]
async fn every_dialect_writes_these_exact_bytes() {
    let plain = masked(&window(Protocol::Plain, NamingMode::Hierarchical).await);
    assert_eq!(
        plain,
        set(&[
            "app.root.called:3|c",
            "app.root.bytes_sent:6|c",
            "app.root.status.200:3|c",
            "app.root.in_flight:1|g",
            "app.root:T|ms",
            "app.user:7|s",
            "app.user:8|s",
            "app.db:6|ms",
            "app.db:9|ms",
            "app.db:4|ms|@0.5",
            "app.seen:1|s",
            "app.seen:2|s",
        ]),
        "plain: one value a line (the same timer line stands for three values)"
    );
    let etsy = masked(&window(Protocol::Etsy, NamingMode::Hierarchical).await);
    assert_eq!(
        etsy,
        set(&[
            "app.root.called:3|c",
            "app.root.bytes_sent:6|c",
            "app.root.status.200:3|c",
            "app.root.in_flight:1|g",
            "app.root:T|ms:T|ms:T|ms",
            "app.db:6|ms:9|ms:4|ms|@0.5",
            "app.seen:1|s:2|s",
            "app.user:7|s:8|s",
        ]),
        "etsy: the values of a name on one line, each with its type and rate"
    );
    let dog = masked(&window(Protocol::DogStatsd, NamingMode::Tagged).await);
    let tags = "#route:root,method:GET,status:200";
    assert_eq!(
        dog,
        set(&[
            &format!("app.http.requests:3|c|{tags}"),
            &format!("app.http.bytes_sent:6|c|{tags}"),
            "app.http.in_flight:1|g|#route:root",
            &format!("app.http.request.duration:T:T:T|ms|{tags}"),
            "app.user:7|s",
            "app.user:8|s",
            "app.db:6:9|ms",
            "app.db:4|ms|@0.5",
            "app.seen:1|s",
            "app.seen:2|s",
        ]),
        "dogstatsd 1.1: values of one rate share a line; sets one a line"
    );
}

// ---------------------------------------------------------------------------
// The grammars, one function each: `Ok` when the server reads every value of
// the line as what was meant.

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

fn is_number(text: &str) -> bool {
    text.parse::<f64>().is_ok_and(f64::is_finite)
}

fn is_rate(text: &str) -> bool {
    text.strip_prefix('@')
        .and_then(|r| r.parse::<f64>().ok())
        .is_some_and(|r| r > 0.0 && r <= 1.0)
}

fn is_tags(text: &str) -> bool {
    text.strip_prefix('#')
        .is_some_and(|t| !t.is_empty() && !t.contains(['|', ' ']))
}

/// `value|type[|@rate][|#tags]` after the name, one value.
fn single(rest: &str, types: &[&str]) -> Result<(), String> {
    let mut parts = rest.split('|');
    let value = parts.next().unwrap_or_default();
    let kind = parts.next().ok_or("no type")?;
    if !types.contains(&kind) {
        return Err(format!("type {kind:?}"));
    }
    if kind != "s" && !is_number(value) {
        return Err(format!("value {value:?}"));
    }
    for part in parts {
        if !(is_rate(part) || is_tags(part)) {
            return Err(format!("field {part:?}"));
        }
    }
    Ok(())
}

/// DogStatsD, protocol 1.1.
fn dogstatsd(line: &str) -> Result<(), String> {
    let (name, rest) = line.split_once(':').ok_or("no ':'")?;
    if !is_name(name) {
        return Err(format!("name {name:?}"));
    }
    let (values, suffix) = rest.split_once('|').ok_or("no type")?;
    let values: Vec<&str> = values.split(':').collect();
    let kind = suffix.split('|').next().unwrap_or_default();
    if kind == "s" && values.len() > 1 {
        return Err("packed set members (1.1 packs every type except sets)".into());
    }
    for value in values {
        single(
            &format!("{value}|{suffix}"),
            &["c", "g", "ms", "h", "s", "d"],
        )?;
    }
    Ok(())
}

/// statsd_exporter.
fn statsd_exporter(line: &str) -> Result<(), String> {
    let (name, rest) = line.split_once(':').ok_or("no ':'")?;
    if !is_name(name) {
        return Err(format!("name {name:?}"));
    }
    // Tags are parsed off the whole line first.
    let (body, tags) = match rest.split_once("|#") {
        Some((body, tags)) => (body, Some(tags)),
        None => (rest, None),
    };
    let fields: Vec<&str> = body.split(':').collect();
    if fields.len() > 1 && tags.is_some() {
        return Err("a multi-value line with tags".into());
    }
    for field in fields {
        // Sets are accepted on the wire and dropped (no Prometheus type).
        let field = match tags {
            Some(tags) => format!("{field}|#{tags}"),
            None => field.to_owned(),
        };
        single(&field, &["c", "g", "ms", "h", "d", "s"])?;
    }
    Ok(())
}

/// gostatsd.
fn gostatsd(line: &str) -> Result<(), String> {
    let (name, rest) = line.split_once(':').ok_or("no ':'")?;
    if !is_name(name) {
        return Err(format!("name {name:?}"));
    }
    let body = rest.split_once("|#").map_or(rest, |(body, _)| body);
    if body.contains(':') {
        return Err("more than one value".into());
    }
    single(rest, &["c", "g", "ms", "h", "s"])
}

/// Telegraf's statsd input.
fn telegraf(line: &str) -> Result<(), String> {
    let (body, tags) = match line.split_once("|#") {
        Some((body, tags)) => (body, Some(tags)),
        None => (line, None),
    };
    if tags.is_some_and(|t| t.is_empty()) {
        return Err("empty tags".into());
    }
    let (name, rest) = body.split_once(':').ok_or("no ':'")?;
    if !is_name(name) {
        return Err(format!("name {name:?}"));
    }
    for field in rest.split(':') {
        single(field, &["c", "g", "ms", "h", "s", "d"])?;
    }
    Ok(())
}

type Grammar = (&'static str, fn(&str) -> Result<(), String>);

const GRAMMARS: [Grammar; 4] = [
    ("DogStatsD 1.1", dogstatsd),
    ("statsd_exporter", statsd_exporter),
    ("gostatsd", gostatsd),
    ("Telegraf", telegraf),
];

/// Which grammars read every line of `lines`.
fn readers(lines: &[String]) -> Vec<&'static str> {
    GRAMMARS
        .iter()
        .filter(|(_, grammar)| lines.iter().all(|l| grammar(l).is_ok()))
        .map(|(name, _)| *name)
        .collect()
}

#[tokio::test]
async fn plain_is_read_by_every_grammar_and_the_others_where_documented() {
    for naming in [NamingMode::Hierarchical, NamingMode::Tagged] {
        let plain = window(Protocol::Plain, naming).await;
        assert_eq!(
            readers(&plain),
            ["DogStatsD 1.1", "statsd_exporter", "gostatsd", "Telegraf"],
            "plain, {naming:?}: {plain:?}"
        );
        let etsy = window(Protocol::Etsy, naming).await;
        assert!(
            readers(&etsy).contains(&"Telegraf"),
            "etsy, {naming:?}: Telegraf reads it: {etsy:?}"
        );
        for line in &etsy {
            if line.matches(':').count() > 1 && !line.contains("|#") {
                assert!(gostatsd(line).is_err(), "gostatsd takes one value a line");
            }
        }
        let dog = window(Protocol::DogStatsd, naming).await;
        assert!(
            readers(&dog).contains(&"DogStatsD 1.1"),
            "dogstatsd, {naming:?}: {dog:?}"
        );
    }
    // The rules themselves, on lines written by hand.
    assert!(dogstatsd("a:1:2|ms|@0.5|#t:v").is_ok());
    assert!(
        dogstatsd("a:x:y|s").is_err(),
        "no packed sets in DogStatsD 1.1"
    );
    assert!(
        dogstatsd("a:1|ms:2|ms").is_err(),
        "Etsy packing is not DogStatsD"
    );
    assert!(statsd_exporter("a:1|ms:2|ms").is_ok());
    assert!(statsd_exporter("a:1|ms:2|ms|#t:v").is_err());
    assert!(gostatsd("a:1|ms:2|ms").is_err());
    assert!(gostatsd("a:1|ms|#t:v").is_ok());
    assert!(telegraf("a:1|ms:2|ms|#t:v").is_ok());
}

/// What statsd 0.9 computes from `lines` (DogStatsD's packed values read as
/// the single values they stand for).
fn daemon_of(lines: &[String], protocol: Protocol) -> Daemon {
    let mut daemon = Daemon::default();
    for line in lines {
        let line = match protocol {
            Protocol::DogStatsd => dogstatsd_as_etsy(line),
            _ => line.clone(),
        };
        daemon
            .read(&line)
            .unwrap_or_else(|e| panic!("{protocol}: {e}"));
    }
    daemon
}

#[tokio::test]
async fn every_dialect_means_the_same_counts_to_the_daemon() {
    for naming in [NamingMode::Hierarchical, NamingMode::Tagged] {
        let plain = daemon_of(&window(Protocol::Plain, naming).await, Protocol::Plain);
        for protocol in [Protocol::Etsy, Protocol::DogStatsd] {
            let other = daemon_of(&window(protocol, naming).await, protocol);
            assert_eq!(other.counters, plain.counters, "{protocol}, {naming:?}");
            assert_eq!(other.sets, plain.sets, "{protocol}, {naming:?}");
            assert_eq!(
                other.timer_counts, plain.timer_counts,
                "{protocol}, {naming:?}"
            );
        }
        assert_eq!(
            plain.timer_counts["app.db|#"], 4.0,
            "3 values, one at rate 0.5"
        );
    }
}

/// Lines of three requests to `/` (2-byte bodies) through a layer that asks
/// for the response size distribution.
async fn sizes(protocol: Protocol, naming: NamingMode) -> Vec<String> {
    let (rx, spy) = spy();
    let statsd = Statsd::builder()
        .prefix("app")
        .protocol(protocol)
        .naming(naming)
        .flush_interval(Duration::from_secs(3600))
        .build_with(spy)
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(statsd.layer().response_size_distribution(true));
    for _ in 0..3 {
        let request = Request::get("/").body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    statsd.flush().unwrap();
    rx.lines()
}

#[tokio::test]
async fn response_sizes_are_a_distribution_in_dogstatsd_only() {
    let tagged = sizes(Protocol::DogStatsd, NamingMode::Tagged).await;
    assert!(
        tagged.contains(
            &"app.http.response.size:2:2:2|d|#route:root,method:GET,status:200".to_owned()
        ),
        "{tagged:?}"
    );
    assert!(tagged.iter().all(|l| dogstatsd(l).is_ok()), "{tagged:?}");
    let paths = sizes(Protocol::DogStatsd, NamingMode::Hierarchical).await;
    assert!(
        paths.contains(&"app.root.response_size:2:2:2|d".to_owned()),
        "{paths:?}"
    );
    for protocol in [Protocol::Plain, Protocol::Etsy] {
        let lines = sizes(protocol, NamingMode::Hierarchical).await;
        assert!(
            lines.iter().all(|l| !l.contains("|d")),
            "{protocol}: no distribution where the daemon would count it: {lines:?}"
        );
        assert!(
            lines.contains(&"app.root.bytes_sent:6|c".to_owned()),
            "{lines:?}"
        );
    }
}

#[test]
fn asking_for_a_size_distribution_a_server_cannot_keep_is_a_warning() {
    let warning = "response_size_distribution needs a server that keeps distributions";
    for (server, keeps) in [
        (Server::Datadog, true),
        (Server::StatsdExporter, true),
        (Server::Vector, true),
        (Server::Generic, false),
        (Server::Etsy, false),
        (Server::Telegraf, false),
        (Server::Netdata, false),
    ] {
        for on in [true, false] {
            let (_rx, spy) = spy();
            let statsd = Statsd::builder().server(server).build_with(spy).unwrap();
            let log = logged(|| drop(statsd.layer().response_size_distribution(on)));
            let warned = on && !keeps;
            assert_eq!(
                log.contains(warning),
                warned,
                "{server}, response_size_distribution({on}): {log:?}"
            );
            if warned {
                assert!(log.contains("WARN"), "{log:?}");
                assert!(log.contains(&format!("server={server}")), "{log:?}");
            }
        }
    }
}

#[test]
fn tagged_naming_on_the_layer_for_a_server_without_tags_is_a_warning() {
    let warning = "tagged naming needs a server that reads tags";
    for (server, reads) in [
        (Server::Generic, false),
        (Server::Collectd, false),
        (Server::Netdata, false),
        (Server::Etsy, true),
        (Server::Datadog, true),
    ] {
        for (mode, tagged) in [
            (NamingMode::Tagged, true),
            (NamingMode::Hierarchical, false),
        ] {
            let (_rx, spy) = spy();
            let statsd = Statsd::builder().server(server).build_with(spy).unwrap();
            let log = logged(|| drop(statsd.layer().naming(mode)));
            let warned = tagged && !reads;
            assert_eq!(log.contains(warning), warned, "{server}, {mode:?}: {log:?}");
            if warned {
                assert!(log.contains("WARN"), "{log:?}");
                assert!(log.contains(&format!("server={server}")), "{log:?}");
            }
        }
    }
}

#[tokio::test]
async fn tagged_naming_on_the_layer_for_a_server_without_tags_stays_hierarchical() {
    for (server, tagged) in [(Server::Generic, false), (Server::Etsy, true)] {
        let (rx, spy) = spy();
        let statsd = Statsd::builder()
            .prefix("app")
            .server(server)
            .flush_interval(Duration::from_secs(3600))
            .build_with(spy)
            .unwrap();
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(statsd.layer().naming(NamingMode::Tagged));
        let request = Request::get("/").body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        statsd.flush().unwrap();
        let lines = rx.lines();
        let has = |line: &str| lines.iter().any(|l| l == line);
        assert_eq!(has("app.root.called:1|c"), !tagged, "{server}: {lines:?}");
        assert_eq!(
            has("app.http.requests:1|c|#route:root,method:GET,status:200"),
            tagged,
            "{server}: {lines:?}"
        );
    }
}

#[test]
fn at_start_one_line_names_the_server_the_packing_and_what_is_not_kept() {
    for (server, protocol, cap, not_kept) in [
        (None, Protocol::Plain, 0, "timers are never sampled"),
        (
            Some(Server::Etsy),
            Protocol::Etsy,
            1024,
            "above the timer cap a sample is sent",
        ),
        (
            Some(Server::Collectd),
            Protocol::Plain,
            0,
            "whole milliseconds",
        ),
        (
            Some(Server::StatsdExporter),
            Protocol::Plain,
            1024,
            "sets (unique users) are not kept",
        ),
    ] {
        let (_rx, spy) = spy();
        let mut builder = Statsd::builder();
        if let Some(server) = server {
            builder = builder.server(server);
        }
        let log = logged(|| drop(builder.build_with(spy).unwrap()));
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 1, "{log}");
        let line = lines[0];
        assert!(line.contains(" INFO "), "{line}");
        let server = server.unwrap_or_default();
        for field in [
            format!("server={server}"),
            format!("protocol={protocol}"),
            format!("timer_cap={cap}"),
        ] {
            assert!(line.contains(&field), "{field}: {line}");
        }
        assert!(line.contains(not_kept), "{not_kept}: {line}");
    }
}

/// The wire dialects' names, as `STATSD_PROTOCOL` takes them and as they
/// are shown: each one its own, and read back as itself.
#[test]
fn every_dialect_has_its_name_and_reads_back() {
    for (protocol, name) in [
        (Protocol::Plain, "plain"),
        (Protocol::Etsy, "etsy"),
        (Protocol::DogStatsd, "dogstatsd"),
    ] {
        assert_eq!(protocol.as_str(), name);
        assert_eq!(protocol.to_string(), name);
        assert_eq!(name.parse::<Protocol>(), Ok(protocol));
        assert_eq!(
            format!(" {} ", name.to_ascii_uppercase()).parse::<Protocol>(),
            Ok(protocol)
        );
    }
    assert_eq!(Protocol::default(), Protocol::Plain);
    assert_eq!(
        "graphite".parse::<Protocol>(),
        Err(UnknownProtocol("graphite".to_owned()))
    );
}
