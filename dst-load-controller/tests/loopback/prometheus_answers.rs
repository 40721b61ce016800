//! `report --prometheus` against a server whose answers no measurement can
//! be, and with credentials in its URL: an error that says so, and the
//! password never printed.

use std::process::Output;

use axum::{Json, Router, routing::post};

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");

/// Serves Prometheus's query API on loopback, every query answered with
/// one sample of `value` (one point of it for range queries); returns its
/// address.
async fn answering(value: &'static str) -> std::net::SocketAddr {
    let answer = move || async move {
        Json(serde_json::json!({
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, value]}]}
        }))
    };
    let range = move || async move {
        Json(serde_json::json!({
            "status": "success",
            "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[1.0, value]]}]}
        }))
    };
    let app = Router::new()
        .route("/api/v1/query", post(answer))
        .route("/api/v1/query_range", post(range));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn report(url: &str, extra: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(["report", "--prometheus", url, "--since", "5m"])
        .args(extra)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn nan_and_infinite_samples_are_errors_not_zeros() {
    for value in ["NaN", "+Inf", "-Inf"] {
        let addr = answering(value).await;
        let out = report(&format!("http://{addr}"), &["--slo", "stale_streams==0"]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Not a report of zeros whose SLOs pass.
        assert_eq!(out.status.code(), Some(1), "{value}: {stderr}");
        assert!(
            stderr.contains(&format!("Prometheus answered {value} for `")),
            "{value}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("PASS"),
            "{value}"
        );
    }
    // A number is read (the same server, the same flags): the check is
    // on the value alone.
    let addr = answering("0").await;
    let out = report(&format!("http://{addr}"), &["--slo", "stale_streams==0"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn credentials_in_the_url_are_never_printed() {
    let addr = answering("0").await;
    let with_password = format!("http://admin:hunter2@{addr}");
    let dir = std::env::temp_dir().join(format!("prom-redact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let html = dir.join("r.html");
    let out = report(
        &with_password,
        &[
            "--report",
            json.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = [
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(&json).unwrap(),
        std::fs::read_to_string(&html).unwrap(),
    ];
    for text in &printed {
        assert!(
            !text.contains("hunter2") && !text.contains("admin"),
            "{text}"
        );
    }
    assert!(
        printed[0].contains(&format!("report from http://***@{addr}/")),
        "{}",
        printed[0]
    );
    // A server that is not there: the error names the URL, hidden too.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = report(&format!("http://admin:hunter2@{closed}"), &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot query Prometheus at http://***@{closed}/api/v1/query"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // A URL the flag refuses is shown hidden as well.
    let out = report("ftp://admin:hunter2@example", &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let out = report(&format!("http://{addr}"), &["--timeout", "0s"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--timeout must be above zero"));
    std::fs::remove_dir_all(&dir).unwrap();
}
