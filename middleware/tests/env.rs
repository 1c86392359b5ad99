//! `from_env` reads the process environment. The only test of this binary
//! (its own process), so that no other test reads the environment while it
//! is changed.

use std::time::Duration;

use tower_statsd::{Statsd, StatsdBuilder};

#[test]
fn from_env_reads_the_statsd_variables_of_the_process() {
    // Only the variables set here (CI may export others).
    for (name, _) in std::env::vars() {
        if name.starts_with("STATSD_") {
            std::env::remove_var(name);
        }
    }
    std::env::set_var("STATSD_PREFIX", "from.env");
    std::env::set_var("STATSD_MAXUDPSIZE", "1432");
    std::env::set_var("STATSD_FLUSH_MS", "250");
    let builder = StatsdBuilder::from_env().unwrap();
    let expected = StatsdBuilder::new()
        .prefix("from.env")
        .max_packet_size(1432)
        .flush_interval(Duration::from_millis(250));
    assert_eq!(format!("{builder:?}"), format!("{expected:?}"));
    let statsd = Statsd::from_env().unwrap();
    assert_eq!(statsd.prefix(), "from.env");

    std::env::set_var("STATSD_PORT", "0");
    assert_eq!(
        Statsd::from_env().unwrap_err().to_string(),
        "the StatsD port is 0: set STATSD_PORT or call `.port(..)` (default: 8125)"
    );
}
