//! The tutorial's API on axum: `GET /?msg=`, `GET /user?id=`, and
//! `GET /tutorial`, which makes the tutorial's other hand-written calls.
//!
//! [`routes`] is the bare app; [`app`] adds the tower-statsd layer. The
//! benchmarks run both, so they compare the same handlers.

use std::borrow::Cow;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tower_statsd::prelude::*;
use tower_statsd::{Statsd, UserKey};

/// How the handlers behave.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The root handler sleeps a random time between `min_delay` and this
    /// (the tutorial's `time.sleep(random.uniform(0, 0.5))`); zero turns the
    /// sleep off.
    pub max_delay: Duration,
    /// The shortest sleep of the root handler (default zero); a slow
    /// request shows in the in-flight gauge.
    pub min_delay: Duration,
}

impl Settings {
    /// From `DEMO_MAX_DELAY_MS` (default 500) and `DEMO_MIN_DELAY_MS`
    /// (default 0, at most the maximum).
    pub fn from_env() -> Result<Self, String> {
        let ms = |name: &str, default: u64| match std::env::var(name) {
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("{name}={v:?} is not a whole number of milliseconds")),
            Err(_) => Ok(default),
        };
        let max_delay = Duration::from_millis(ms("DEMO_MAX_DELAY_MS", 500)?);
        let min_delay = Duration::from_millis(ms("DEMO_MIN_DELAY_MS", 0)?);
        if min_delay > max_delay {
            return Err(format!(
                "DEMO_MIN_DELAY_MS ({} ms) is above DEMO_MAX_DELAY_MS ({} ms)",
                min_delay.as_millis(),
                max_delay.as_millis()
            ));
        }
        Ok(Settings {
            max_delay,
            min_delay,
        })
    }
}

/// The handlers alone, without metrics: the baseline of the benchmarks.
pub fn routes(settings: Settings) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/user", get(user))
        .with_state(settings)
}

/// The tutorial's app: the handlers with the tower-statsd layer, unique
/// users from `?id=`, and the client for `/tutorial`.
pub fn app(settings: Settings, statsd: &Statsd) -> Router {
    routes(settings)
        .route("/tutorial", get(tutorial))
        .layer(statsd.layer().user_key(user_id(), "user"))
        .layer(Extension(statsd.clone()))
}

/// The tutorial's unique users: the `id` of `/user?id=`, as the integer the
/// handler answers with (`0123` and `123` are one user). Other routes, and
/// ids that are not integers, are no user visits.
fn user_id() -> UserKey {
    UserKey::from_fn(|parts| {
        if parts.uri.path() != "/user" {
            return None;
        }
        let query = parts.uri.query()?;
        let raw = query.split('&').find_map(|pair| pair.strip_prefix("id="))?;
        let id: i64 = raw.parse().ok()?;
        // Already canonical (the usual case): no allocation.
        if raw.len() == 1
            || !(raw.starts_with('0') || raw.starts_with("-0") || raw.starts_with('+'))
        {
            Some(Cow::Borrowed(raw))
        } else {
            Some(Cow::Owned(id.to_string()))
        }
    })
}

#[derive(Deserialize)]
struct RootQuery {
    msg: Option<String>,
}

async fn root(
    State(settings): State<Settings>,
    query: Result<Query<RootQuery>, QueryRejection>,
) -> Response {
    if !settings.max_delay.is_zero() {
        let delay = rand::random_range(settings.min_delay..=settings.max_delay);
        tokio::time::sleep(delay).await;
    }
    let msg = match query {
        Ok(Query(RootQuery { msg: Some(msg) })) if !msg.is_empty() => msg,
        Ok(_) => "No message provided!".to_owned(),
        Err(rejection) => return bad_request(&rejection),
    };
    Json(json!({ "message": msg })).into_response()
}

#[derive(Deserialize)]
struct UserQuery {
    id: i64,
}

async fn user(query: Result<Query<UserQuery>, QueryRejection>) -> Response {
    match query {
        Ok(Query(UserQuery { id })) => Json(json!({ "id": id })).into_response(),
        Err(rejection) => bad_request(&rejection),
    }
}

/// A malformed query is a 400 with a JSON body saying what was wrong.
fn bad_request(rejection: &QueryRejection) -> Response {
    let body = json!({ "error": "invalid query", "detail": rejection.body_text() });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// The tutorial's other calls, by hand, through the layer's client.
async fn tutorial(Extension(statsd): Extension<Statsd>) -> Json<Value> {
    // A batch: the counter goes up by ten in one packet.
    statsd.count("tutorial.batch", 10).ok();
    statsd.decr("tutorial.stock").ok();
    let memory = resident_memory_bytes();
    if let Some(bytes) = memory {
        statsd.gauge("resources.memory", bytes).ok();
    }
    statsd.gauge_delta("tutorial.level", 5.0);
    let prefix = statsd.prefix();
    Json(json!({
        "incremented_by_10": format!("{prefix}.tutorial.batch"),
        "decremented": format!("{prefix}.tutorial.stock"),
        "gauge": { "name": format!("{prefix}.resources.memory"), "value": memory },
        "gauge_delta": { "name": format!("{prefix}.tutorial.level"), "delta": 5 },
    }))
}

/// The process's resident memory, from `/proc/self/status` (Linux).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Asks the StatsD admin port for `health`, with a one-second deadline.
pub async fn statsd_health(host: &str, admin_port: u16) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((host, admin_port)).await?;
        stream.write_all(b"health\n").await?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
    };
    match tokio::time::timeout(Duration::from_secs(1), attempt).await {
        Ok(Ok(answer)) if answer.contains("up") => Ok(answer),
        Ok(Ok(answer)) => Err(format!("answered {answer:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 1 s".to_owned()),
    }
}

/// The library's one spy (its integration tests' file): cadence's
/// `SpyMetricSink` and the lines it received.
#[cfg(test)]
#[path = "../../middleware/tests/support/spy.rs"]
mod spy;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_json(app: Router, uri: &str) -> (StatusCode, Value) {
        let response = app
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn settings() -> Settings {
        Settings {
            max_delay: Duration::ZERO,
            min_delay: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn root_echoes_the_message() {
        let (status, body) = get_json(routes(settings()), "/?msg=Hello+world").await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({ "message": "Hello world" }))
        );
        let (_, body) = get_json(routes(settings()), "/").await;
        assert_eq!(body, json!({ "message": "No message provided!" }));
    }

    #[tokio::test]
    async fn user_ids_must_be_integers() {
        let (status, body) = get_json(routes(settings()), "/user?id=123").await;
        assert_eq!((status, body), (StatusCode::OK, json!({ "id": 123 })));
        for uri in ["/user?id=abc", "/user", "/user?id=1.5"] {
            let (status, body) = get_json(routes(settings()), uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(body["error"], "invalid query", "{uri}");
        }
    }

    #[tokio::test]
    async fn only_user_ids_are_user_visits() {
        let (packets, spy) = crate::spy::spy();
        let statsd = Statsd::builder()
            .prefix("statstest")
            .build_with(spy)
            .unwrap();
        let app = app(settings(), &statsd);
        for uri in [
            "/?msg=hi&id=7",
            "/tutorial?id=8",
            "/user?id=0123",
            "/user?id=123",
            "/user?id=abc",
        ] {
            get_json(app.clone(), uri).await;
        }
        statsd.flush().unwrap();
        let lines = packets.lines();
        let sets: Vec<&String> = lines.iter().filter(|l| l.ends_with("|s")).collect();
        assert_eq!(sets, ["statstest.user:123|s"], "{lines:?}");
    }

    #[test]
    fn memory_is_read() {
        assert!(resident_memory_bytes().unwrap() > 0);
    }
}
