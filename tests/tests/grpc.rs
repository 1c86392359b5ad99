//! gRPC against the real StatsD 0.9.0 and Graphite: tonic's ready-made
//! health service, wrapped in the layer with `.grpc()` and called by a tonic
//! client. The route is the method (`/grpc.health.v1.Health/Check` →
//! `grpc_health_v1_Health.Check`), and the status counted is the gRPC
//! status: `status.0` for a serving service (OK, in the trailers),
//! `status.5` for an unknown one (NOT_FOUND, in the headers).

use std::net::SocketAddr;
use std::time::Duration;

use e2e::{free_port, poll, Stack};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower_statsd::{Server, Statsd};

const PREFIX: &str = "grpctest";
const ROUTE: &str = "grpc_health_v1_Health.Check";
const DEADLINE: Duration = Duration::from_secs(60);
const SERVING: usize = 3;
const UNKNOWN: usize = 2;

#[test]
fn tonic_health_checks_are_named_timed_and_counted_by_grpc_status() {
    let stack = Stack::shared();
    let statsd = Statsd::builder()
        .host("127.0.0.1")
        .port(stack.statsd_port)
        .prefix(PREFIX)
        .server(Server::Etsy)
        .flush_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (reporter, health) = tonic_health::server::health_reporter();
    runtime
        .block_on(reporter.set_service_status("shop.Orders", tonic_health::ServingStatus::Serving));
    let server = tonic::transport::Server::builder()
        .layer(statsd.layer().grpc())
        .add_service(health)
        .serve(addr);
    runtime.spawn(server);

    runtime.block_on(async {
        let url = format!("http://{addr}");
        // The server binds once its task runs: connect until it answers.
        let started = std::time::Instant::now();
        let mut client = loop {
            assert!(
                started.elapsed() < DEADLINE,
                "the gRPC server never answered"
            );
            let endpoint = tonic::transport::Endpoint::from_shared(url.clone()).unwrap();
            match endpoint.connect().await {
                Ok(channel) => break HealthClient::new(channel),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        for _ in 0..SERVING {
            let request = HealthCheckRequest {
                service: "shop.Orders".into(),
            };
            let response = client.check(request).await.unwrap().into_inner();
            assert_eq!(response.status(), ServingStatus::Serving);
        }
        for _ in 0..UNKNOWN {
            let request = HealthCheckRequest {
                service: "no.Such".into(),
            };
            let status = client.check(request).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::NotFound);
        }
    });
    statsd.flush().unwrap();

    for (target, want) in [
        (
            format!("stats_counts.{PREFIX}.{ROUTE}.called"),
            SERVING + UNKNOWN,
        ),
        (format!("stats_counts.{PREFIX}.{ROUTE}.status.0"), SERVING),
        (format!("stats_counts.{PREFIX}.{ROUTE}.status.5"), UNKNOWN),
        (
            format!("stats.timers.{PREFIX}.{ROUTE}.count"),
            SERVING + UNKNOWN,
        ),
    ] {
        poll(&format!("{target} = {want}"), DEADLINE, || {
            let got = stack.render_sum(&target, "-10min")?;
            (got == want as f64)
                .then_some(())
                .ok_or(format!("{got}, want {want}"))
        });
    }
    // No HTTP status for a gRPC route: every response had a grpc-status.
    let statuses = stack
        .find(&format!("stats_counts.{PREFIX}.{ROUTE}.status.*"))
        .unwrap();
    let mut statuses: Vec<&str> = statuses
        .iter()
        .filter_map(|id| id.rsplit('.').next())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["0", "5"]);
    // The timer is the real one: its upper bound a positive number of ms.
    let upper = stack
        .render(&format!("stats.timers.{PREFIX}.{ROUTE}.upper"), "-10min")
        .unwrap();
    assert!(upper.iter().any(|&(_, ms)| ms > 0.0), "{upper:?}");
    drop(runtime);
}
