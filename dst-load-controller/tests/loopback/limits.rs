//! Sizes past what one process holds are usage errors: each is refused
//! before anything is allocated or opened, with exit status 2 and a message
//! naming the bound (these used to abort on a failed allocation, hang or
//! spin).

use std::{
    process::Command,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");

const SVC: &str = "web.ns.svc.cluster.local:8080";

#[test]
fn sizes_past_the_bounds_exit_2_at_once_naming_the_bound() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "client",
                "--target-services",
                SVC,
                "--streams-per-service",
                "100000000",
            ],
            "--streams-per-service 100000000 is more than one client holds: at most 1000000 streams",
        ),
        (
            &[
                "client",
                "--target-services",
                "web{0..9}.ns.svc.cluster.local:80",
                "--streams-per-service",
                "200000",
            ],
            "10 services x 200000 streams is 2000000 streams, more than one client holds",
        ),
        (
            &[
                "client",
                "--target-services",
                SVC,
                "--streams-per-service",
                "10",
                "--connections",
                "1000000",
            ],
            "--connections 1000000 is more than one client can open: at most 65535",
        ),
        (
            &[
                "client",
                "--target-services",
                SVC,
                "--streams-per-service",
                "2",
                "--connections",
                "3",
            ],
            "--connections 3 is more than the 2 streams it would carry",
        ),
        (
            &[
                "client",
                "--namespace",
                "ns",
                "--target-pods",
                "app=web",
                "--profile-streams-per-pod",
                "100000000",
            ],
            "--profile-streams-per-pod 100000000 is more than one client holds",
        ),
        (
            &["run", "--streams-per-service", "100000000"],
            "streams-per-service 100000000 is more than one client holds",
        ),
        (
            &["run", "--connections", "1000000"],
            "connections 1000000 is more than one client can open: at most 65535",
        ),
        (&["run", "--scale", "1e9"], "is more than one client holds"),
        (
            &[
                "mock-dst",
                "--generate",
                "x.ns.svc.cluster.local:8080=::/0:100000000",
            ],
            "--generate: x.ns.svc.cluster.local:8080 has 100000000 endpoints, more than a destination may have: at most 10000",
        ),
        (
            &[
                "mock-dst",
                "--generate",
                "x.ns.svc.cluster.local:8080=10.0.0.0/8:1..20000",
            ],
            "has 20000 endpoints, more than a destination may have",
        ),
        (
            &[
                "mock-dst",
                "--stream-queue-capacity",
                "18446744073709551615",
            ],
            "--stream-queue-capacity must be from 1 to 1000000 updates",
        ),
        (
            &[
                "mock-dst",
                "--generate",
                "x.ns.svc.cluster.local:8080=10.0.0.0/16:1..5",
                "--oscillate-hold-duration",
                "0s",
            ],
            "the oscillation holds add up to 0ns, below 1ms",
        ),
        (
            &[
                "churn",
                "--oscillate-services",
                "1",
                "--oscillate-hold-duration",
                "0s",
            ],
            "the oscillation holds add up to 0ns, below 1ms",
        ),
        (
            &["mock-dst", "10.0.0.1:80=10.1.1.1:80"],
            "'10.0.0.1:80=10.1.1.1:80': IP addresses are not service names",
        ),
        (
            &["mock-dst", "--max-connections", "0"],
            "--max-connections and --handshake-timeout must be above zero",
        ),
        (
            &["mock-dst", "--kubernetes-namespace", "Not_A_Namespace"],
            "--kubernetes-namespace 'Not_A_Namespace' is not a valid namespace name",
        ),
    ];
    for (args, expect) in cases {
        let started = Instant::now();
        refused(args, expect);
        // Refused before any allocation of that size: a loaded machine
        // takes milliseconds, an attempt took seconds to minutes.
        assert!(started.elapsed() < Duration::from_secs(20), "{args:?}");
    }
}

/// Runs `args` with no cluster and the default addresses (a side effect
/// would fail otherwise, or be seen as a bound port): exit 2, the first
/// line an error holding `expect`, nothing on standard output (a run that
/// went ahead prints its summary there).
fn refused(args: &[&str], expect: &str) {
    let out = crate::support::usage_error(args, expect);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.contains(expect),
        "{args:?}: {stderr}"
    );
    assert!(out.stdout.is_empty(), "{args:?}");
}

#[test]
fn output_paths_are_checked_before_the_run() {
    let tmp = std::env::temp_dir();
    let tmp = tmp.to_str().unwrap();
    let cases: &[(&[&str], String)] = &[
        (
            &[
                "run",
                "--duration",
                "1s",
                "--report",
                "/nonexistent/dir/x.json",
            ],
            "--report /nonexistent/dir/x.json: the folder /nonexistent/dir does not exist".into(),
        ),
        (
            &["run", "--duration", "1s", "--report", tmp],
            format!("--report {tmp}: is a folder; give a file path in it"),
        ),
        (
            &["run", "--duration", "1s", "--junit", "/nonexistent/x.xml"],
            "--junit /nonexistent/x.xml: the folder /nonexistent does not exist".into(),
        ),
        (
            &[
                "client",
                "--target-services",
                SVC,
                "--html",
                "/nonexistent/x.html",
            ],
            "--html /nonexistent/x.html: the folder /nonexistent does not exist".into(),
        ),
        (
            &[
                "churn",
                "--stable-services",
                "1",
                "--report",
                "/nonexistent/x.json",
            ],
            "--report /nonexistent/x.json: the folder /nonexistent does not exist".into(),
        ),
    ];
    for (args, expect) in cases {
        // Refused up front: a write failing after the run exits 1 and
        // follows the run's summary.
        refused(args, expect);
    }
}

/// A run of many streams (50,000 here, against the mock in the same
/// process) ends soon after a SIGTERM that comes while its streams are
/// still being answered, and says why.
#[test]
fn sigterm_during_a_large_runs_setup_ends_it() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--streams-per-service",
            "5000",
            "--connections",
            "100",
        ])
        .args(["--duration", "10m", "--admin-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("streams started") {
            break;
        }
    }
    let pid = child.id().to_string();
    let signalled = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let took = signalled.elapsed();
    let rest = rest.join("\n");
    assert!(rest.contains("shutdown requested"), "{rest}");
    // Ended on its own (not by a second signal), with an exit status and
    // the reason; 3 when it got as far as judging, 1 when it stopped first.
    assert!(matches!(status.code(), Some(1 | 3)), "{status:?}: {rest}");
    if status.code() == Some(1) {
        assert!(
            rest.contains("stopped before every service had its first truth"),
            "{rest}"
        );
    }
    // Far below the 10 minutes asked for, however loaded the machine.
    assert!(took < Duration::from_secs(180), "took {took:?}");
}

#[test]
fn zero_durations_stray_flags_bad_names_and_huge_counts_are_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["client", "--target-services", SVC, "--duration", "0s"],
            "--duration must be above zero (e.g. 60s), or left out to run until signalled",
        ),
        (
            &["run", "--duration", "0s"],
            "duration must be above zero (e.g. 60s)",
        ),
        (
            &[
                "client",
                "--target-services",
                SVC,
                "--ground-truth-link",
                "target",
            ],
            "--ground-truth-link maps mirrored services to the ground truth: give --ground-truth-kubeconfig",
        ),
        (
            &["cleanup", "--namespace", "Bad_NS"],
            "--namespace 'Bad_NS' is not a valid namespace name",
        ),
        (
            &["churn", "--oscillate-services", "100000000"],
            "--oscillate-services 100000000 is more than churn makes: at most 4096 services",
        ),
        (
            &[
                "churn",
                "--stable-services",
                "3000",
                "--oscillate-services",
                "3000",
            ],
            "6000 services in all is more than churn makes: at most 4096",
        ),
    ];
    for (args, expect) in cases {
        refused(args, expect);
    }
}

/// Standard output closed under the process (`| head`) ends it quietly
/// with 141, as a tool killed by SIGPIPE, not with a panic's message.
#[test]
fn a_closed_standard_output_ends_quietly() {
    let mut child = Command::new(BIN)
        .args(["client", "--target-services", SVC, "--duration", "1s"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
