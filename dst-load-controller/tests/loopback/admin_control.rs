//! `POST /shutdown` and `POST /abort` on a real process's admin server.

use std::{
    io::{Read, Write},
    process::Stdio,
    time::Duration,
};

use super::support;

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");

/// The status line of `METHOD path` on `addr`, once the server answers.
fn request(addr: &str, method: &str, path: &str) -> String {
    for _ in 0..400 {
        let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(25));
            continue;
        };
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            conn,
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        let _ = conn.read_to_string(&mut response);
        return response.lines().next().unwrap_or_default().to_string();
    }
    panic!("{addr} never answered");
}

/// A child process, killed if the test ends (or fails) before it exited.
struct Process(Option<std::process::Child>);

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A mock-dst process with its admin server on loopback.
fn mock_dst() -> (Process, String) {
    let (port, admin) = (support::free_port(), support::free_port());
    let admin = format!("127.0.0.1:{admin}");
    let child = std::process::Command::new(BIN)
        .args([
            "mock-dst",
            "-a",
            &format!("127.0.0.1:{port}"),
            "--admin-addr",
            &admin,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Process(Some(child)), admin)
}

/// Waits up to a minute for `child` to exit.
fn exit_code(mut process: Process) -> Option<i32> {
    let child = process.0.as_mut().expect("a running child");
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("the process did not exit within a minute");
}

#[test]
fn post_shutdown_drains_and_exits_0_and_other_methods_get_405() {
    let (child, admin) = mock_dst();
    // Ready once the mock serves: the admin server answers (503) before
    // (seen on a loaded machine).
    let ready = (0..600).any(|_| {
        let ok = request(&admin, "GET", "/ready") == "HTTP/1.1 200 OK";
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    assert!(ready, "/ready never answered 200 within 30 s");
    assert_eq!(
        request(&admin, "GET", "/shutdown"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(
        request(&admin, "PUT", "/abort"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(
        request(&admin, "POST", "/shutdown"),
        "HTTP/1.1 202 Accepted"
    );
    assert_eq!(exit_code(child), Some(0));
}

#[test]
fn post_abort_exits_at_once_with_130() {
    let (child, admin) = mock_dst();
    assert_eq!(request(&admin, "POST", "/abort"), "HTTP/1.1 202 Accepted");
    assert_eq!(exit_code(child), Some(130));
}

/// `POST /shutdown` during `run --repeat 3` ends the repeats, not only the
/// run in progress, and the run it cut short is left out of the report's
/// `repeats` (its figures would pass for a whole run's in `compare`).
#[test]
fn shutdown_during_repeats_ends_them_and_leaves_the_cut_run_out() {
    use std::io::BufRead;
    let admin = format!("127.0.0.1:{}", support::free_port());
    let report = std::env::temp_dir().join(format!("dst-repeat-cut-{}.json", std::process::id()));
    let mut child = support::short_run("5", "500ms", "4s")
        .args(["--repeat", "3", "--admin-addr", &admin])
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(report.with_extension("log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut process = Process(Some(child));
    let mut seen = Vec::new();
    let mut lines = stdout.lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line == "run 2 of 3" {
            break;
        }
    }
    assert_eq!(
        seen.last().map(String::as_str),
        Some("run 2 of 3"),
        "{seen:?}"
    );
    assert_eq!(
        request(&admin, "POST", "/shutdown"),
        "HTTP/1.1 202 Accepted"
    );
    seen.extend(lines.map(Result::unwrap));
    let status = process.0.take().unwrap().wait().unwrap();
    let log = std::fs::read_to_string(report.with_extension("log")).unwrap();
    std::fs::remove_file(report.with_extension("log")).unwrap();
    assert_eq!(status.code(), Some(0), "{seen:?}\n{log}");
    assert!(!seen.iter().any(|l| l == "run 3 of 3"), "{seen:?}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    std::fs::remove_file(&report).unwrap();
    let runs = json["repeats"].as_array().expect("repeats");
    assert_eq!(runs.len(), 1, "{json:#}");
    assert_eq!(runs[0]["run"], 1);
}
