//! `report --prometheus` against a server whose answers no measurement can
//! be, and with credentials in its URL: an error that says so, and the
//! password never printed.

use std::{path::Path, process::Output, sync::Arc};

use axum::{
    Json, Router, http::HeaderMap, http::StatusCode, response::IntoResponse, routing::post,
};

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
    // Down to the cause, said once.
    let said = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert_eq!(said.matches("Connection refused").count(), 1, "{stderr}");
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

/// Prometheus's query API answering one sample of 0, only to requests that
/// carry `Authorization: Bearer s3cret` (401 otherwise).
fn guarded() -> Router {
    let answer = |headers: HeaderMap, range: bool| {
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer s3cret") {
            return (StatusCode::UNAUTHORIZED, "no\n").into_response();
        }
        let data = if range {
            serde_json::json!({"resultType": "matrix", "result": [{"metric": {}, "values": [[1.0, "0"]]}]})
        } else {
            serde_json::json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "0"]}]})
        };
        Json(serde_json::json!({"status": "success", "data": data})).into_response()
    };
    Router::new()
        .route(
            "/api/v1/query",
            post(move |h: HeaderMap| async move { answer(h, false) }),
        )
        .route(
            "/api/v1/query_range",
            post(move |h: HeaderMap| async move { answer(h, true) }),
        )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_bearer_token_from_a_file_is_sent_and_never_printed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, guarded()).await.unwrap() });
    let dir = std::env::temp_dir().join(format!("prom-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("http://{addr}");
    // Without it: the status, and what to do.
    let out = report(&url, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("answered HTTP 401 Unauthorized: give --bearer-token-file"),
        "{stderr}"
    );
    // With it (a token file ends with a newline).
    let token = write(&dir, "token", "s3cret\n");
    let json = dir.join("r.json");
    let out = report(
        &url,
        &[
            "--bearer-token-file",
            &token,
            "--report",
            json.to_str().unwrap(),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for text in [
        stderr.into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        std::fs::read_to_string(&json).unwrap(),
    ] {
        assert!(!text.contains("s3cret"), "{text}");
    }
    // Files that cannot be used: exit 2, naming the flag and the file.
    for (flags, want) in [
        (
            vec!["--bearer-token-file", "/nonexistent/token"],
            "--bearer-token-file /nonexistent/token: No such file",
        ),
        (
            vec!["--bearer-token-file", &write(&dir, "empty", "\n")],
            "no token on its first line",
        ),
        (
            vec!["--ca-file", "/nonexistent/ca.pem"],
            "--ca-file /nonexistent/ca.pem: No such file",
        ),
        (vec!["--ca-file", &token], "no PEM certificate in it"),
    ] {
        let out = report(&url, &flags).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(want), "{flags:?}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An https:// Prometheus whose certificate a private CA signed: refused
/// without --ca-file, read with it.
#[tokio::test]
async fn an_https_prometheus_is_trusted_through_the_ca_file() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(vec!["prometheus CA".to_string()]).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = guarded();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    tower::ServiceExt::oneshot(app.clone(), req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let dir = std::env::temp_dir().join(format!("prom-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = write(&dir, "token", "s3cret");
    let ca = write(&dir, "ca.pem", &ca_cert.pem());
    let url = format!("https://localhost:{port}");
    let out = report(&url, &["--bearer-token-file", &token]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot query Prometheus at https://localhost"),
        "{stderr}"
    );
    let out = report(&url, &["--bearer-token-file", &token, "--ca-file", &ca]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
