//! Golden bytes: what each server profile sends for a sampled timer, a
//! set, a counter and a tagged metric. For the servers that cannot run on
//! our machines (DogStatsD, statsd_exporter, Telegraf, Vector, gostatsd)
//! these bytes, checked against each server's grammar, are the proof; Etsy
//! StatsD, collectd and netdata are also tested live
//! (`tests/tests/matrix.rs`).
//!
//! The load is the same for every profile: 65 timer values of 5 ms (one
//! past the smallest cap, 64: a server that reads rates gets a sample
//! whose `1/rate` add up to 65; one that does not gets all 65, unrated),
//! two counts of 3, one set member, one tagged count.

use std::time::Duration;

use tower_statsd::prelude::*;
use tower_statsd::{Server, Statsd};

mod support;
use support::spy::spy;

/// Every line the profile sends for the load, in the order sent.
fn lines(server: Server) -> Vec<String> {
    let (rx, spy) = spy();
    let mut builder = Statsd::builder()
        .server(server)
        .prefix("app")
        .max_packet_size(8_192)
        .flush_interval(Duration::from_secs(3600));
    if server.reads_timer_rates() {
        builder = builder.max_timer_samples(64);
    }
    let statsd = builder.build_with(spy).unwrap();
    for _ in 0..65 {
        statsd.time("db", 5).unwrap();
    }
    statsd.count("jobs", 3).unwrap();
    statsd.count("jobs", 3).unwrap();
    statsd.set("users", 42).unwrap();
    statsd
        .count_with_tags("hits", 1)
        .with_tag("env", "prod")
        .try_send()
        .unwrap();
    // A value the handler sampled itself, at 1 in 4.
    statsd
        .time_with_tags("rt", 7)
        .with_sampling_rate(0.25)
        .try_send()
        .unwrap();
    statsd.flush().unwrap();
    rx.lines()
}

/// The lines, sorted: packets come out in the order the window holds names.
fn sorted(server: Server) -> Vec<String> {
    let mut lines = lines(server);
    lines.sort();
    lines
}

/// 65 unrated values, one a line, and the handler's value sampled at 1 in
/// 4 as the 4 events it stands for.
fn every_value() -> Vec<String> {
    let mut lines = vec!["app.db:5|ms".to_owned(); 65];
    lines.extend(vec!["app.rt:7|ms".to_owned(); 4]);
    lines
}

/// The handler's sampled value, as sent to a server that reads rates.
const RATED: &str = "app.rt:7|ms|@0.25";

/// A sample of 64 standing for 65: one value weighs 2 (`|@0.5`), 63 weigh
/// 1; one a line.
fn sample_a_line() -> Vec<String> {
    let mut lines = vec!["app.db:5|ms|@0.5".to_owned(), RATED.to_owned()];
    lines.extend(vec!["app.db:5|ms".to_owned(); 63]);
    lines
}

fn with(mut timers: Vec<String>, rest: &[&str]) -> Vec<String> {
    timers.extend(rest.iter().map(|l| l.to_string()));
    timers.sort();
    timers
}

const UNTAGGED: [&str; 3] = ["app.hits:1|c", "app.jobs:6|c", "app.users:42|s"];
const TAGGED: [&str; 3] = ["app.hits:1|c|#env:prod", "app.jobs:6|c", "app.users:42|s"];

#[test]
fn servers_that_misread_rates_get_every_timer_value_unrated_and_no_tags() {
    // No line carries a rate: a value the handler sampled is repeated
    // `1/rate` times instead, as statsd_exporter and Telegraf count it.
    // Generic: only `name:value|type`, the grammar every server shares.
    // collectd (src/statsd.c `statsd_handle_line`: `name:value|type[|@rate]`,
    // one value; a rate would divide a timer's value) and netdata (its
    // statsd.plugin reads `name:value|type[|@rate][|#tags]`, but does not
    // scale a timer's count by the rate, and reads `#` as chart options).
    for server in [Server::Generic, Server::Collectd, Server::Netdata] {
        assert_eq!(sorted(server), with(every_value(), &UNTAGGED), "{server}");
    }
}

#[test]
fn etsy_statsd_and_telegraf_get_multi_value_lines_with_rates() {
    // Etsy StatsD 0.9 (stats.js `handlePacket`: the fields after the name
    // split on `:`, each `value|type[|@rate]`; `|#k:v` becomes the tagged
    // key `name;k=v`). Telegraf (statsd.go `parseStatsdLine`: the same
    // split; `|@rate` repeats a timer value `int(1/rate)` times; DogStatsD
    // tags only with `datadog_extensions`, off by default: sent without).
    let multi = format!("app.db:5|ms|@0.5{}", ":5|ms".repeat(63));
    let timers = vec![multi, RATED.to_owned()];
    assert_eq!(sorted(Server::Etsy), with(timers.clone(), &TAGGED));
    assert_eq!(sorted(Server::Telegraf), with(timers, &UNTAGGED));
}

#[test]
fn the_datadog_agent_gets_dogstatsd_1_1_lines() {
    // DogStatsD protocol 1.1 (agent 7.25+): `name:v1:v2|ms|@rate|#tags`,
    // one type and one rate for every value of the line; sets one member a
    // line.
    let unrated = format!("app.db{}|ms", ":5".repeat(63));
    assert_eq!(
        sorted(Server::Datadog),
        with(
            vec!["app.db:5|ms|@0.5".to_owned(), unrated, RATED.to_owned()],
            &TAGGED
        )
    );
}

#[test]
fn statsd_exporter_vector_and_gostatsd_get_plain_lines_with_rates_and_tags() {
    // statsd_exporter (pkg/line: `name:value|type|@rate|#tags`, a timer
    // event repeated `int(1/rate)` times; no set type, so `app.users` is
    // dropped there, as the start log says). Vector (`statsd` source: one
    // value a line, `1/rate` truncated to u32, DogStatsD tags). gostatsd
    // (`name:value|type|@rate|#tags`; multi-value lines not documented).
    for server in [Server::StatsdExporter, Server::Vector, Server::Gostatsd] {
        assert_eq!(sorted(server), with(sample_a_line(), &TAGGED), "{server}");
    }
}

#[test]
fn the_count_each_server_computes_is_the_number_of_values() {
    // What a server that weighs a value by `int(1/rate)` (or scales its
    // count by it) counts, for every profile: 65, the values recorded.
    for server in "generic etsy collectd netdata telegraf statsd_exporter datadog vector gostatsd"
        .split(' ')
        .map(|s| s.parse::<Server>().unwrap())
    {
        let lines = lines(server);
        let count = |name: &str| -> u64 {
            lines
                .iter()
                .filter_map(|l| l.strip_prefix(name))
                .map(weight)
                .sum()
        };
        assert_eq!(count("app.db:"), 65, "{server}");
        assert_eq!(count("app.rt:"), 4, "{server}");
    }
}

/// The events a server counts for the fields of one timer line: each
/// `value|ms[|@rate]` field weighs `1/rate` (Etsy); in a DogStatsD line,
/// bare values share the last field's `|ms[|@rate]`.
fn weight(fields: &str) -> u64 {
    let rate_of = |field: &str| {
        field
            .split_once("|@")
            .map_or(1.0, |(_, rate)| rate.parse::<f64>().unwrap())
    };
    let fields: Vec<&str> = fields.split(':').collect();
    let (last, bare) = fields.split_last().unwrap();
    if bare.iter().all(|f| !f.contains('|')) {
        (fields.len() as f64 / rate_of(last)) as u64
    } else {
        fields.iter().map(|f| (1.0 / rate_of(f)) as u64).sum()
    }
}
