//! The wire dialects' names, as `STATSD_PROTOCOL` takes them and as they
//! are shown: each one its own, and read back as itself.

use tower_statsd::{Protocol, UnknownProtocol};

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
