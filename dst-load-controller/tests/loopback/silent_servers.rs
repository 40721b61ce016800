//! A destination that fails without a word: a port that accepts and never
//! answers, a closed port, a server that speaks HTTP/1. Each is counted as
//! errors in the summary and report and told in a warning that names the
//! cause, one line per reason every 10 s however many streams fail.

use std::{net::TcpListener, process::Output};

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");

fn client(addr: &str, report: &std::path::Path, extra: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .args(["client", "--destination-addr", addr])
        .args(["--target-services", "web.ns.svc.cluster.local:80"])
        .args(["--streams-per-service", "20", "--duration", "4s"])
        .args(["--admin-addr", "127.0.0.1:0", "--report"])
        .arg(report)
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

fn errors(report: &std::path::Path) -> u64 {
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    r["errors"].as_u64().unwrap()
}

fn warnings<'a>(stderr: &'a str, reason: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&format!("reason={reason} ")))
        .collect()
}

#[test]
fn silent_refusing_and_http1_servers_are_errors_with_their_cause() {
    let dir = std::env::temp_dir().join(format!("silent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Accepts (the kernel completes the handshake) and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let held = std::thread::spawn({
        let silent = silent.try_clone().unwrap();
        move || {
            silent
                .incoming()
                .take(64)
                .filter_map(Result::ok)
                .collect::<Vec<_>>()
        }
    });
    let report = dir.join("silent.json");
    let addr = silent.local_addr().unwrap().to_string();
    let out = client(&addr, &report, &["--handshake-timeout", "1s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines = warnings(&stderr, "timeout");
    assert!(
        lines
            .first()
            .is_some_and(|l| l
                .contains("cause=no HTTP/2 handshake from the server within --handshake-timeout")),
        "{stderr}"
    );
    // 4 s: the first line, and no other within 10 s.
    assert_eq!(lines.len(), 1, "{stderr}");
    // Every stream failed at least once; none counted as answered.
    assert!(errors(&report) >= 20, "{}", errors(&report));
    drop(silent);
    drop(held);

    // Nothing listens.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let report = dir.join("closed.json");
    let out = client(&closed, &report, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = warnings(&stderr, "transport");
    assert!(
        lines
            .first()
            .is_some_and(|l| l.contains("cause=Connection refused")),
        "{stderr}"
    );
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(errors(&report) >= 20);

    // An HTTP/1 server answers the HTTP/2 preface with an error page.
    let http1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = http1.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut c in http1.incoming().filter_map(Result::ok) {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    let report = dir.join("http1.json");
    let out = client(&addr, &report, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = warnings(&stderr, "transport");
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("cause="), "{stderr}");
    assert!(errors(&report) >= 20);
    std::fs::remove_dir_all(&dir).unwrap();
}
