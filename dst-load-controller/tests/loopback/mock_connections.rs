//! mock-dst's connections cannot pile up or spin it: a connection that
//! never sends its preface is closed after `--handshake-timeout`, at most
//! `--max-connections` are served at once (the rest wait, and it says so),
//! and at the descriptor limit its accept loop pauses instead of spinning.

use std::{
    io::Read,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support;

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");

/// Starts mock-dst with `flags` (under `sh -c 'ulimit -n N'` when `nofile`
/// is given), its log in `log`; returns it and its gRPC address once it
/// listens.
fn mock_dst(flags: &[&str], nofile: Option<u32>, log: &Path) -> (Child, String) {
    let grpc = format!("127.0.0.1:{}", support::free_port());
    let admin = format!("127.0.0.1:{}", support::free_port());
    let mut args = vec!["mock-dst", "-a", &grpc, "--admin-addr", &admin];
    args.extend(flags);
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), BIN]);
            c.args(&args);
            c
        }
        None => {
            let mut c = Command::new(BIN);
            c.args(&args);
            c
        }
    };
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("mock Destination server listening")
        {
            return (child, grpc);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "mock-dst did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mock-conns-{}-{name}", std::process::id()))
}

/// Reads `c` until the server closes it (or `within` passes): whether it
/// was closed.
fn closed_within(c: &mut TcpStream, within: Duration) -> bool {
    c.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            // The server's SETTINGS, then the close.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_connection_that_never_speaks_is_closed_after_the_handshake_timeout() {
    let log = temp("half-open.log");
    let (mut mock, addr) = mock_dst(&["--handshake-timeout", "1s"], None, &log);
    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    for c in &mut silent {
        assert!(closed_within(c, Duration::from_secs(60)), "still open");
    }
    // Never early.
    assert!(opened.elapsed() >= Duration::from_secs(1));
    mock.kill().unwrap();
    mock.wait().unwrap();
    std::fs::remove_file(&log).unwrap();
}

#[test]
fn past_the_cap_connections_wait_and_it_is_logged() {
    let log = temp("cap.log");
    let (mut mock, addr) = mock_dst(
        &["--max-connections", "2", "--handshake-timeout", "5m"],
        None,
        &log,
    );
    let mut held = vec![
        TcpStream::connect(&addr).unwrap(),
        TcpStream::connect(&addr).unwrap(),
    ];
    until("the cap's warning", || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("at the connection cap")
    });
    // A third is accepted by the kernel and left waiting: no SETTINGS.
    let mut waiting = TcpStream::connect(&addr).unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(waiting.read(&mut buf).is_err(), "served past the cap");
    // One closes: the waiting one is served (the server's SETTINGS).
    drop(held.remove(0));
    waiting
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    assert!(waiting.read(&mut buf).unwrap() > 0);
    mock.kill().unwrap();
    mock.wait().unwrap();
    std::fs::remove_file(&log).unwrap();
}

/// Waits up to a minute for `f`.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn at_the_descriptor_limit_it_pauses_and_says_so() {
    let log = temp("nofile.log");
    let (mut mock, addr) = mock_dst(&[], Some(64), &log);
    // More connections than descriptors left: the kernel accepts them into
    // the backlog, and the mock's accepts fail with EMFILE.
    let _held: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    until("the accept warning", || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("cannot accept a connection")
    });
    let before = cpu_seconds(mock.id());
    std::thread::sleep(Duration::from_secs(5));
    let used = cpu_seconds(mock.id()) - before;
    // Spinning took more than a core; pausing takes next to nothing.
    assert!(used < 1.0, "{used} CPU-s in 5 s at the descriptor limit");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Too many open files"), "{text}");
    // One line per 10 s, not one per failed accept.
    assert!(
        text.matches("cannot accept a connection").count() <= 2,
        "{text}"
    );
    mock.kill().unwrap();
    mock.wait().unwrap();
    std::fs::remove_file(&log).unwrap();
}
