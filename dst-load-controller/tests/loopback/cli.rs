//! Usage errors: each fails before any side effect, names the problem and
//! the fix, and exits with status 2.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");

use crate::support::usage_error;

#[test]
fn churn_rejects_bad_flags() {
    usage_error(&["churn"], "nothing to do");
    usage_error(
        &[
            "churn",
            "--oscillate-services",
            "1",
            "--oscillate-min-endpoints",
            "5",
            "--oscillate-max-endpoints",
            "2",
        ],
        "--oscillate-min-endpoints (5) is greater than --oscillate-max-endpoints (2)",
    );
    usage_error(
        &[
            "churn",
            "--oscillate-services",
            "1",
            "--oscillate-jitter-percent",
            "101",
        ],
        "between 0 and 100",
    );
    usage_error(
        &[
            "churn",
            "--oscillate-services",
            "1",
            "--oscillate-jitter-percent",
            "5",
            "--oscillate-jitter",
            "5s",
        ],
        "cannot be used with",
    );
    usage_error(
        &["churn", "--stable-services", "1", "--duration", "soon"],
        "invalid value 'soon'",
    );
    usage_error(
        &["churn", "--stable-services", "1", "--toleration", "x=y"],
        "key[=value]:Effect",
    );
    usage_error(
        &["churn", "--stable-services", "1", "--namespace", "Bad_NS"],
        "not a valid namespace name",
    );
    usage_error(
        &["churn", "--stable-services", "1", "--qps", "0"],
        "--qps must be a positive number",
    );
    usage_error(
        &[
            "churn",
            "--stable-services",
            "1",
            "--servers",
            "2",
            "--server-proxy-protocol",
            "http/1",
        ],
        "[possible values: unknown, HTTP/1, HTTP/2, gRPC, opaque, TLS]",
    );
    usage_error(
        &[
            "churn",
            "--stable-services",
            "1",
            "--server-proxy-protocol",
            "opaque",
        ],
        "--servers <SERVERS>",
    );
    usage_error(
        &["churn", "--stable-services", "1", "--profile-routes", "3"],
        "--service-profiles",
    );
    usage_error(
        &[
            "churn",
            "--stable-services",
            "1",
            "--service-profiles",
            "--profile-change-interval",
            "0s",
        ],
        "--profile-change-interval must be above zero",
    );
    usage_error(
        &[
            "churn",
            "--stable-services",
            "1",
            "--service-profiles",
            "--cluster-domain",
            "Bad_Domain",
        ],
        "--cluster-domain 'Bad_Domain' is not a domain",
    );
}

#[test]
fn client_rejects_bad_flags() {
    usage_error(
        &[
            "client",
            "--destination-addr",
            "127.0.0.1:8086",
            "--target-services",
            "web.ns.svc.cluster.local:80",
            "--proxy-discovery",
            "--profile-streams-per-service",
            "2",
        ],
        "cannot be used with",
    );
    usage_error(&["client"], "nothing to watch");
    usage_error(
        &["client", "--target-pods", "app=web"],
        "--namespace <NAMESPACE>",
    );
    usage_error(
        &["client", "--namespace", "ns", "--target-pods", "app in web"],
        "--target-pods 'app in web' is not a label selector: 'app in web': a set is written (a,b)",
    );
    usage_error(
        &[
            "client",
            "--namespace",
            "ns",
            "--target-pods",
            "app=web",
            "--profile-streams-per-pod",
            "0",
        ],
        "--profile-streams-per-pod must be at least 1",
    );
    usage_error(
        &[
            "client",
            "--namespace",
            "ns",
            "--target-pods",
            "app=web",
            "--target-pods-storm-interval",
            "0s",
        ],
        "--target-pods-storm-interval must be above zero",
    );
    usage_error(
        &[
            "client",
            "--namespace",
            "ns",
            "--target-pods",
            "app=web",
            "--default-opaque-ports",
            "25,9100-9000",
        ],
        "--default-opaque-ports '25,9100-9000' is not a port list",
    );
    usage_error(
        &[
            "client",
            "--namespace",
            "ns",
            "--service-label-selector",
            "tier=",
            "--target-pods-port",
            "80",
        ],
        "--target-pods <SELECTOR>",
    );
    usage_error(
        &[
            "client",
            "--target-services",
            "svc-{0..3.ns.svc.cluster.local:80",
        ],
        "unmatched '{'",
    );
    usage_error(
        &["client", "--target-services", "foo.ns.svc.cluster.local"],
        "has no port",
    );
    usage_error(
        &[
            "client",
            "--target-services",
            "a.b:80",
            "--streams-per-service",
            "0",
        ],
        "--streams-per-service must be at least 1",
    );
    usage_error(
        &[
            "client",
            "--target-services",
            "a.b:80",
            "--connections",
            "0",
        ],
        "--connections must be at least 1",
    );
    usage_error(
        &[
            "client",
            "--target-services",
            "a.b:80",
            "--min-stream-lifetime",
            "2m",
            "--max-stream-lifetime",
            "1m",
        ],
        "--min-stream-lifetime (2m) is greater than --max-stream-lifetime (1m)",
    );
    usage_error(
        &[
            "client",
            "--target-services",
            "a.b:80",
            "--backoff-jitter",
            "2",
        ],
        "--backoff-jitter must be between 0 and 1",
    );
    usage_error(
        &[
            "client",
            "--target-services",
            "a.b:80",
            "--destination-addr",
            "localhost",
        ],
        "has no port",
    );
    usage_error(
        &["client", "--target-services", "a.b:80", "--log-level", "=="],
        "invalid --log-level",
    );
    usage_error(
        &[
            "client",
            "--target-services",
            "a-target.ns.svc.cluster.local:80",
            "--ground-truth-kubeconfig",
            "/nonexistent/target-kubeconfig",
        ],
        "--ground-truth-kubeconfig /nonexistent/target-kubeconfig: no such file; give the kubeconfig of the cluster where the endpoints live",
    );
    usage_error(
        &[
            "client",
            "--target-services",
            "a-target.ns.svc.cluster.local:80",
            "--ground-truth-link",
            "Target_1",
        ],
        "--ground-truth-link 'Target_1' is not a link name",
    );
    usage_error(
        &[
            "client",
            "--target-services",
            "a.ns.svc.cluster.local:80",
            "--ground-truth-context",
            "target",
        ],
        "--ground-truth-kubeconfig",
    );
}

#[test]
fn mock_dst_rejects_bad_destinations() {
    usage_error(
        &["mock-dst", "foo.ns.svc.cluster.local:80=not-an-address"],
        "invalid endpoint 'not-an-address'",
    );
    usage_error(
        &["mock-dst", "--delay", "5ms..1ms", ""],
        "minimum above its maximum",
    );
    usage_error(
        &["mock-dst", "--profile-routes", "1001"],
        "--profile-routes",
    );
    usage_error(
        &["mock-dst", "--service-address", "10.96.0.10:80"],
        "expected AUTHORITY=IP:PORT",
    );
    usage_error(
        &[
            "mock-dst",
            "--service-address",
            "web.ns.svc.cluster.local:80=10.96.0.10",
        ],
        "'10.96.0.10' is not an IP:PORT address",
    );
    usage_error(
        &[
            "mock-dst",
            "--service-address",
            "10.96.0.10:80=10.96.0.10:80",
        ],
        "is not a service authority",
    );
    usage_error(
        &[
            "mock-dst",
            "--service-protocol",
            "web.ns.svc.cluster.local:80=grpc",
        ],
        "'grpc' is not a protocol: give detect, http1, http2 or opaque",
    );
    // One address for two services.
    usage_error(
        &[
            "mock-dst",
            "--service-address",
            "web.ns.svc.cluster.local:80=10.96.0.10:80",
            "--service-address",
            "api.ns.svc.cluster.local:80=10.96.0.10:80",
        ],
        "10.96.0.10:80 already stands for",
    );
}

#[test]
fn help_lists_the_documented_flags() {
    let help = |sub: &str| {
        String::from_utf8(
            Command::new(BIN)
                .args([sub, "--help"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    let churn = help("churn");
    for flag in [
        "--namespace",
        "--stable-services",
        "--stable-endpoints",
        "--oscillate-services",
        "--oscillate-min-endpoints",
        "--oscillate-max-endpoints",
        "--oscillate-hold-duration",
        "--oscillate-jitter-percent",
        "--oscillate-min-hold",
        "--oscillate-max-hold",
        "--oscillate-jitter",
        "--cycles",
        "--duration",
        "--seed",
        "--qps",
        "--burst",
        "--node-selector",
        "--toleration",
        "--service-port",
        "--cleanup-on-exit",
        "--admin-addr",
        "--log-level",
        "--log-format",
    ] {
        assert!(churn.contains(flag), "churn --help lacks {flag}");
    }
    let client = help("client");
    for flag in [
        "--destination-addr",
        "--target-services",
        "--service-label-selector",
        "--namespace",
        "--streams-per-service",
        "--watchers-per-service",
        "--connections",
        "--context-token",
        "--min-stream-lifetime",
        "--max-stream-lifetime",
        "--backoff-min",
        "--backoff-max",
        "--backoff-jitter",
        "--initial-timeout",
        "--duration",
        "--admin-addr",
    ] {
        assert!(client.contains(flag), "client --help lacks {flag}");
    }
}

#[test]
fn mock_dst_refuses_a_malformed_identities_dir() {
    usage_error(
        &["mock-dst", "--identities-dir", "/nonexistent/identities"],
        "cannot read identities directory",
    );
    let out = Command::new(BIN)
        .args(["mock-dst"])
        .env(
            "LINKERD2_MOCK_DST_IDENTITIES_DIR",
            "/nonexistent/identities",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn mock_dst_refuses_bad_identity_issuing_flags() {
    let dir = std::env::temp_dir().join(format!("dst-idflags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (token, empty, out) = (
        dir.join("token"),
        dir.join("empty"),
        dir.join("anchors.pem"),
    );
    std::fs::write(&token, "t").unwrap();
    std::fs::write(&empty, "").unwrap();
    let (token, empty, out) = (
        token.to_str().unwrap(),
        empty.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let name = "default.ns.serviceaccount.identity.linkerd.cluster.local";
    // (--identity-name, --identity-token-file, more flags, what the error says)
    let cases: [(&str, Option<&str>, &[&str], &str); 8] = [
        ("Not A Name", Some(token), &[], "is not a DNS name"),
        (
            name,
            Some("/nonexistent/token"),
            &[],
            "cannot read --identity-token-file /nonexistent/token",
        ),
        (name, Some(empty), &[], "is empty"),
        (name, None, &[], "--identity-token-file"),
        (
            name,
            Some(token),
            &["--identity-ca-cert", "/x.crt"],
            "--identity-ca-key",
        ),
        (
            name,
            Some(token),
            &[
                "--identity-ca-cert",
                "/nonexistent/ca.crt",
                "--identity-ca-key",
                "/nonexistent/ca.key",
            ],
            "cannot read /nonexistent/ca.crt",
        ),
        (
            name,
            Some(token),
            &["--identity-lifetime", "0s"],
            "--identity-lifetime must be at least 1s",
        ),
        (
            name,
            Some(token),
            &[
                "--identities-dir",
                "/tmp",
                "--identity-trust-anchors-out",
                out,
            ],
            "--identities-dir",
        ),
    ];
    for (identity, token_file, more, says) in cases {
        let mut argv = vec!["mock-dst", "--identity-name", identity];
        if let Some(t) = token_file {
            argv.extend(["--identity-token-file", t]);
        }
        argv.extend(more);
        usage_error(&argv, says);
    }
    // No side effect of a refused start.
    assert!(!std::path::Path::new(out).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn proxy_env_refuses_bad_input_before_writing_anything() {
    let dir = std::env::temp_dir().join(format!("dst-proxyenv-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (token, empty, anchors, not_pem) = (
        dir.join("token"),
        dir.join("empty"),
        dir.join("anchors.pem"),
        dir.join("not.pem"),
    );
    std::fs::write(&token, "t").unwrap();
    std::fs::write(&empty, "").unwrap();
    std::fs::write(&not_pem, "hello").unwrap();
    let ca = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    std::fs::write(&anchors, ca.pem()).unwrap();
    let id = dir.join("id");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let name = "default.ns.serviceaccount.identity.linkerd.cluster.local";
    let good = [
        "--identity-name".to_string(),
        name.to_string(),
        "--identity-token-file".to_string(),
        s(&token),
        "--identity-trust-anchors".to_string(),
        s(&anchors),
        "--identity-dir".to_string(),
        s(&id),
    ];
    // (a flag and its bad value, what the error says)
    let cases = [
        (
            "--control-addr",
            "10.0.0.1:8086".to_string(),
            "not a loopback address",
        ),
        (
            "--identity-name",
            "two words".to_string(),
            "is not a DNS name",
        ),
        (
            "--identity-token-file",
            "/nonexistent/token".to_string(),
            "cannot read --identity-token-file",
        ),
        ("--identity-token-file", s(&empty), "is empty"),
        (
            "--identity-trust-anchors",
            "/nonexistent/a.pem".to_string(),
            "--identity-trust-anchors-out",
        ),
        (
            "--identity-trust-anchors",
            s(&not_pem),
            "holds no PEM certificate",
        ),
        ("--workload", "ns:pod".to_string(), "is not JSON"),
        (
            "--workload",
            "{\"ns\":\"default\"}".to_string(),
            "is not JSON with \"ns\" and \"pod\"",
        ),
        (
            "--profile-networks",
            "10.0.0.0/8,10.1".to_string(),
            "invalid value '10.1'",
        ),
    ];
    for (flag, value, says) in cases {
        // The good flags, with this one's value replaced (or added).
        let mut argv: Vec<String> = vec!["proxy-env".into()];
        argv.extend(good.iter().cloned());
        match argv.iter().position(|a| a == flag) {
            Some(i) => argv[i + 1] = value,
            None => argv.extend([flag.to_string(), value]),
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        usage_error(&argv, says);
        assert!(!id.exists(), "{flag}: the identity directory was made");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_rejects_bad_flags() {
    usage_error(
        &["run", "--scale", "0"],
        "--scale must be a positive number",
    );
    usage_error(
        &["run", "--min-endpoints", "9", "--max-endpoints", "3"],
        "is greater than --max-endpoints",
    );
    usage_error(&["run", "--scenario", "huge"], "invalid value 'huge'");
    usage_error(
        &[
            "run",
            "--destination-addr",
            "127.0.0.1:1",
            "--namespace",
            "Bad_NS",
        ],
        "--namespace 'Bad_NS' is not a valid namespace name",
    );
}

#[test]
fn report_rejects_bad_flags() {
    usage_error(&["report"], "--prometheus <PROMETHEUS>");
    usage_error(
        &["report", "--prometheus", "localhost:9090"],
        "must be an http:// or https:// URL",
    );
    usage_error(
        &[
            "report",
            "--prometheus",
            "http://p:9090",
            "--since",
            "yesterday",
        ],
        "invalid --since 'yesterday'",
    );
    usage_error(
        &[
            "report",
            "--prometheus",
            "http://p:9090",
            "--since",
            "2026-01-02T00:00:00Z",
            "--until",
            "2026-01-01T00:00:00Z",
        ],
        "is not before --until",
    );
    usage_error(
        &[
            "report",
            "--prometheus",
            "http://p:9090",
            "--selector",
            "{a=\"b\"}",
        ],
        "without braces",
    );
    usage_error(
        &[
            "report",
            "--prometheus",
            "http://p:9090",
            "--slo",
            "errors~0",
        ],
        "invalid SLO 'errors~0'",
    );
}

/// The client's and the mock's Kubernetes clients honour the shared kube
/// flags (they used to read only the default kubeconfig context).
#[test]
fn client_and_mock_dst_use_the_kube_flags() {
    let dir = std::env::temp_dir().join(format!("dst-kubeflags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    // A default context that works as a kubeconfig (it is never dialled).
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: present, context: {cluster: c, user: u}}]\ncurrent-context: present\n",
    )
    .unwrap();
    let runs: [&[&str]; 2] = [
        &[
            "client",
            "--destination-addr",
            "127.0.0.1:1",
            "--target-services",
            "a.b.svc.cluster.local:80",
            "--ground-truth",
            "--duration",
            "2s",
            "--admin-addr",
            "127.0.0.1:0",
            "--kube-context",
            "absent",
        ],
        &[
            "mock-dst",
            "--addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--kubernetes-namespace",
            "ns",
            "--kube-context",
            "absent",
        ],
    ];
    for args in runs {
        let out = Command::new(BIN)
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot load kube context") && stderr.contains("absent"),
            "{args:?}: {stderr}"
        );
    }
    for bad in [["--qps", "0"], ["--burst", "0"]] {
        usage_error(
            &[
                &[
                    "client",
                    "--destination-addr",
                    "127.0.0.1:1",
                    "--target-services",
                    "a.b.svc.cluster.local:80",
                ][..],
                &bad[..],
            ]
            .concat(),
            bad[0],
        );
    }
    // kubectl's spelling: `--kubeconfig FILE` (KUBECONFIG unset or wrong)
    // and `--context`, on every subcommand that talks to a cluster; the
    // context is looked up in that file.
    let file = kubeconfig.to_str().unwrap();
    let kubectl_style: [&[&str]; 3] = [
        &[
            "client",
            "--destination-addr",
            "127.0.0.1:1",
            "--target-services",
            "a.b.svc.cluster.local:80",
            "--ground-truth",
            "--duration",
            "2s",
            "--admin-addr",
            "127.0.0.1:0",
        ],
        &[
            "churn",
            "-n",
            "ns",
            "--stable-services",
            "1",
            "--admin-addr",
            "127.0.0.1:0",
        ],
        &["cleanup", "-n", "ns"],
    ];
    for args in kubectl_style {
        let out = Command::new(BIN)
            .args(args)
            .args(["--kubeconfig", file, "--context", "absent"])
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot use kubeconfig") && stderr.contains("absent"),
            "{args:?}: {stderr}"
        );
        // A missing --kubeconfig file is a usage error.
        usage_error(
            &[args, &["--kubeconfig", "/nonexistent/kc"][..]].concat(),
            "--kubeconfig /nonexistent/kc: no such file",
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_address_in_use_is_one_message_naming_the_flag_and_exit_2_before_any_stream() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "run",
                "--scenario",
                "baseline",
                "--duration",
                "2s",
                "--admin-addr",
                &addr,
            ],
            "--admin-addr",
        ),
        (
            &[
                "run",
                "--scenario",
                "baseline",
                "--find-red-line",
                "--admin-addr",
                &addr,
            ],
            "--admin-addr",
        ),
        (
            &[
                "client",
                "--destination-addr",
                "http://127.0.0.1:1",
                "--target-services",
                "web.ns.svc.cluster.local:8080",
                "--admin-addr",
                &addr,
            ],
            "--admin-addr",
        ),
        (
            &["mock-dst", "--addr", "127.0.0.1:0", "--admin-addr", &addr],
            "--admin-addr",
        ),
        (
            &["mock-dst", "--addr", &addr, "--admin-addr", "127.0.0.1:0"],
            "-a/--addr",
        ),
    ];
    for (args, flag) in cases {
        let want = format!("cannot bind {flag} {addr}: ");
        let out = usage_error(args, &want);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.matches(&want).count(), 1, "{args:?}: {stderr}");
        // The cause is said once: in the message, not again as its source.
        assert_eq!(
            stderr.matches("Address already in use").count(),
            1,
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("pick a free address with {flag}")),
            "{args:?}: {stderr}"
        );
        // Nothing was started: no stream, no mock, no step.
        for started in ["streams started", "serving", "finding the red line"] {
            assert!(!stderr.contains(started), "{args:?}: {stderr}");
        }
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn completions_cover_every_subcommand_and_an_unknown_shell_is_a_usage_error() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for word in [
            "dst-load-controller",
            "mock-dst",
            "compare",
            "--find-red-line",
            "--kubeconfig",
        ] {
            // fish names long flags without their dashes (`-l find-red-line`).
            let word = word.trim_start_matches('-');
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    usage_error(&["completions", "nope"], "invalid value 'nope'");
}

#[test]
fn run_help_groups_its_flags_under_headings() {
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let headings = [
        "Scenario:",
        "Load (overrides of the scenario):",
        "Faults:",
        "Red line:",
        "Gates and reports:",
        "Admin server:",
        "Target (a cluster instead of the mock):",
    ];
    let at: Vec<usize> = headings
        .iter()
        .map(|h| {
            help.find(&format!("\n{h}\n"))
                .unwrap_or_else(|| panic!("no heading {h} in:\n{help}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{help}");
    // Each flag sits under its heading, before the next one.
    let section = |flag: &str| {
        let pos = help
            .find(&format!("  {flag}"))
            .unwrap_or_else(|| panic!("no {flag}"));
        headings[at.iter().rposition(|&h| h < pos).expect("under a heading")]
    };
    for (flag, heading) in [
        ("--scenario-file", "Scenario:"),
        ("--scale", "Load (overrides of the scenario):"),
        ("--seed", "Load (overrides of the scenario):"),
        ("--stuck-percent", "Faults:"),
        ("--mock-delay ", "Faults:"),
        ("--find-red-line", "Red line:"),
        ("--slo <", "Gates and reports:"),
        ("--report", "Gates and reports:"),
        ("--admin-addr", "Admin server:"),
        (
            "--destination-addr",
            "Target (a cluster instead of the mock):",
        ),
        ("--kubeconfig", "Target (a cluster instead of the mock):"),
    ] {
        assert_eq!(section(flag), heading, "{flag}");
    }
}

#[test]
fn client_duration_help_names_the_exit_status_of_a_failed_gate() {
    let out = Command::new(BIN)
        .args(["client", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let at = help.find("--duration <DURATION>").expect("--duration");
    let text: String = help[at..]
        .split_whitespace()
        .take(40)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(text.contains("exit: 0, or 3 when a gate"), "{text}");
}

/// Every flag `client --help` and `mock-dst --help` list is in the
/// README's table of that subcommand's flags (new flags used to land in
/// `--help` alone).
#[test]
fn every_client_and_mock_dst_flag_is_in_its_readme_table() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let lines: Vec<&str> = readme.lines().collect();
    // The table holding `anchor`: the run of `|` lines around it.
    let table = |anchor: &str| {
        let at = lines.iter().position(|l| l.contains(anchor)).unwrap();
        let start = (0..=at)
            .rev()
            .take_while(|&i| lines[i].starts_with('|'))
            .last()
            .unwrap();
        let end = (at..lines.len())
            .take_while(|&i| lines[i].starts_with('|'))
            .last()
            .unwrap();
        lines[start..=end].join("\n")
    };
    for (sub, anchor) in [
        ("client", "`--streams-per-service` (alias"),
        ("mock-dst", "`-a`, `--addr`"),
        ("proxy-env", "`--control-addr`"),
    ] {
        let help = String::from_utf8(
            Command::new(BIN)
                .args([sub, "--help"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let rows = table(anchor);
        let flags: std::collections::BTreeSet<&str> = help
            .lines()
            .filter_map(|l| {
                // Flags are indented by 2 or 6, their descriptions by 10.
                let indent = l.len() - l.trim_start().len();
                if indent >= 8 {
                    return None;
                }
                let l = l.trim_start();
                // `-n, --namespace <NAMESPACE>`: the long name.
                let l = match l.as_bytes() {
                    [b'-', c, b',', b' ', ..] if *c != b'-' => &l[4..],
                    _ => l,
                };
                l.starts_with("--")
                    .then(|| l.split([' ', '=', '<']).next().unwrap())
            })
            .filter(|f| *f != "--help")
            .collect();
        assert!(flags.len() > 10, "{sub}: {flags:?}");
        for flag in flags {
            let documented = rows.match_indices(flag).any(|(i, _)| {
                !rows[i + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            });
            assert!(
                documented,
                "{sub} {flag} is not in the README's table of {sub}'s flags"
            );
        }
    }
}
