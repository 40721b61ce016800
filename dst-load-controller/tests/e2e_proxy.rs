//! Linkerd's real proxy (v2.366.0, built from ../shared/sources by
//! `hack/build-deps.sh linkerd_proxy`) against our mock control plane, on
//! loopback. Run by `hack/e2e.sh`, which builds the proxy and sets
//! `DST_LINKERD_PROXY` to it.
//!
//! The proxy makes no key of its own: as in a pod, it reads its key and CSR
//! from its identity directory (`key.p8`, `csr.der`, written by `proxy-env`)
//! and asks Identity's `Certify` to sign the CSR with its token. Each proxy
//! is started as a user would: `eval "$(dst-load-controller proxy-env ...)"`.
//!
//! The traffic test runs again in a network namespace of its own (`unshare
//! --net`; root, or a user namespace): addresses on its loopback device,
//! iptables `REDIRECT` of the application's connections to the proxy's
//! listeners as linkerd-proxy-init sets them in a pod, HTTP backends that
//! answer their names. Nothing leaves the namespace.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use dst_load_controller::mock::{
    identity::{Identities, IssuerConfig},
    inbound::InboundPolicy,
    policy::{AppProtocol, ServicePolicy},
    server::Behavior,
};

const BIN: &str = env!("CARGO_BIN_EXE_dst-load-controller");
const ME: &str = "default.ns.serviceaccount.identity.linkerd.cluster.local";

fn proxy_bin() -> PathBuf {
    let bin = std::env::var("DST_LINKERD_PROXY").expect(
        "DST_LINKERD_PROXY: the linkerd2-proxy binary (hack/build-deps.sh linkerd_proxy builds it; hack/e2e.sh sets this)",
    );
    assert!(
        Path::new(&bin).is_file(),
        "DST_LINKERD_PROXY={bin} is not a file"
    );
    bin.into()
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "dst-proxy-{tag}-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The mock control plane, issuing `ME`'s certificates for `token`.
async fn control_plane(token: &[u8], lifetime: Duration) -> (Identities, support::Mock) {
    let ids = Identities::issuing(IssuerConfig {
        ca: None,
        token: token.to_vec(),
        identity: ME.to_string(),
        lifetime,
    })
    .unwrap();
    (ids.clone(), support::Mock::start_with_identities(ids).await)
}

struct Proxy {
    _child: tokio::process::Child,
    admin: SocketAddr,
}

fn loopback_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], support::free_port()))
}

impl Proxy {
    /// Starts a proxy of the mock at `control` as a user would: `eval` of
    /// `proxy-env`'s output (which writes the key and CSR into `dir/id`),
    /// then the proxy, with `dir/token` as its token and the mock's trust
    /// anchors in `dir/anchors.pem`.
    fn start(dir: &Path, control: SocketAddr) -> Self {
        Self::start_with(dir, control, loopback_port(), loopback_port())
    }

    /// As [`Proxy::start`], with its outbound and inbound listeners there.
    fn start_with(
        dir: &Path,
        control: SocketAddr,
        outbound: SocketAddr,
        inbound: SocketAddr,
    ) -> Self {
        let port = || loopback_port().to_string();
        let admin = port();
        let log = std::fs::File::create(dir.join("proxy.log")).unwrap();
        let script =
            r#"out=$("$0" proxy-env "$@") || exit 3; eval "$out"; exec "$DST_LINKERD_PROXY""#;
        let child = tokio::process::Command::new("sh")
            .args(["-c", script, BIN])
            .args([
                "--control-addr",
                &control.to_string(),
                "--identity-name",
                ME,
            ])
            .arg("--identity-token-file")
            .arg(dir.join("token"))
            .arg("--identity-trust-anchors")
            .arg(dir.join("anchors.pem"))
            .arg("--identity-dir")
            .arg(dir.join("id"))
            .args(["--inbound-addr", &inbound.to_string()])
            .args(["--outbound-addr", &outbound.to_string()])
            .args([
                "--proxy-admin-addr",
                &admin,
                "--control-listen-addr",
                &port(),
            ])
            .env("DST_LINKERD_PROXY", proxy_bin())
            // Until the policy of a port is discovered, deny: what gets
            // in, gets in by the mock's inbound policy.
            .env("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "deny")
            // Keep a service's discovery through pauses in its traffic (5 s
            // by default), as while the mock restarts on a loaded machine.
            .env("LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT", "120s")
            .env(
                "LINKERD2_PROXY_LOG",
                // DST_PROXY_LOG to debug, e.g. linkerd_app_outbound=debug.
                std::env::var("DST_PROXY_LOG").unwrap_or("warn,linkerd=info".into()),
            )
            // The proxy logs to stdout.
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start linkerd2-proxy");
        Self {
            _child: child,
            admin: admin.parse().unwrap(),
        }
    }

    /// Waits until `/ready` says 200.
    async fn until_ready(&self) {
        support::eventually_async("the proxy ready", Duration::from_secs(60), || async {
            self.ready().await == Some(200)
        })
        .await;
    }

    /// The admin server's `/ready` status (None: not answering).
    async fn ready(&self) -> Option<u16> {
        let rsp = reqwest::get(format!("http://{}/ready", self.admin))
            .await
            .ok()?;
        Some(rsp.status().as_u16())
    }

    /// A gauge or counter of the proxy's `/metrics`.
    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        support::sample(&text, name, &[])
    }
}

#[tokio::test]
#[ignore = "needs Linkerd's proxy (DST_LINKERD_PROXY); run by hack/e2e.sh"]
async fn the_real_proxy_is_certified_by_the_mock_and_renews_before_expiry() {
    let dir = tempdir("certified");
    std::fs::write(dir.join("token"), "proxy-token").unwrap();
    let lifetime = Duration::from_secs(30);
    let (ids, mock) = control_plane(b"proxy-token", lifetime).await;
    std::fs::write(dir.join("anchors.pem"), ids.trust_anchor_pem().unwrap()).unwrap();
    let proxy = Proxy::start(&dir, mock.addr);

    // Ready once certified (the proxy is not ready without its identity).
    support::eventually_async("the proxy ready", Duration::from_secs(60), || async {
        proxy.ready().await == Some(200)
    })
    .await;
    assert!(ids.issued() >= 1);
    let expiry = "control_identity_cert_expiration_timestamp_seconds";
    let refreshed = "control_identity_cert_refresh_timestamp_seconds";
    let (first_expiry, first_refresh) = (
        proxy.metric(expiry).await.unwrap(),
        proxy.metric(refreshed).await.unwrap(),
    );
    // The certificate it holds is the one the mock issued: valid for the
    // lifetime set (the mock back-dates nothing on the end; seconds apart
    // at most on a loaded machine).
    let held = first_expiry - first_refresh;
    assert!(
        (lifetime.as_secs_f64() - 5.0..=lifetime.as_secs_f64() + 1.0).contains(&held),
        "{held}"
    );

    // It renews before the certificate expires, with a new one from the mock.
    support::eventually_async("a renewal", Duration::from_secs(120), || async {
        ids.issued() >= 2 && proxy.metric(expiry).await.is_some_and(|e| e > first_expiry)
    })
    .await;
    let second_refresh = proxy.metric(refreshed).await.unwrap();
    assert!(
        second_refresh < first_expiry,
        "renewed at {second_refresh}, after expiry {first_expiry}"
    );
    assert_eq!(proxy.ready().await, Some(200));
    assert_eq!(ids.refused(tonic::Code::FailedPrecondition), 0);
    assert_eq!(ids.refused(tonic::Code::InvalidArgument), 0);
    mock.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
#[ignore = "needs Linkerd's proxy (DST_LINKERD_PROXY); run by hack/e2e.sh"]
async fn a_proxy_with_a_wrong_token_is_refused_and_never_ready() {
    let dir = tempdir("refused");
    std::fs::write(dir.join("token"), "not-the-token").unwrap();
    let (ids, mock) = control_plane(b"proxy-token", Duration::from_secs(3600)).await;
    std::fs::write(dir.join("anchors.pem"), ids.trust_anchor_pem().unwrap()).unwrap();
    let proxy = Proxy::start(&dir, mock.addr);

    // Refused as Linkerd refuses a token the apiserver does not know
    // (InvalidArgument, as e2e_cluster's comparison with Linkerd's identity
    // service shows), more than once (the proxy retries), and not ready
    // meanwhile.
    support::eventually_async("two refusals", Duration::from_secs(60), || async {
        ids.refused(tonic::Code::InvalidArgument) >= 2
    })
    .await;
    let ready = proxy.ready().await;
    assert!(ready.is_some(), "the admin server answers");
    assert_ne!(ready, Some(200));
    assert_eq!(ids.issued(), 0);
    mock.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Set in the run of a test inside the network namespace it made.
const IN_NETNS: &str = "DST_E2E_PROXY_IN_NETNS";

/// Whether this process is the run of test `name` inside a network
/// namespace of its own. If it is not, runs `name` again, alone, in a new
/// namespace (`unshare --net`, with `--map-root-user` when not root),
/// asserts that it ran and passed, and returns false.
fn in_own_netns(name: &str) -> bool {
    let netns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    if std::env::var_os(IN_NETNS).is_some() {
        // Never set up the host's network: the variable may be inherited.
        assert_ne!(
            netns("self"),
            netns("1"),
            "{IN_NETNS} is set outside a namespace of our own"
        );
        run(&["ip", "link", "set", "lo", "up"]);
        return true;
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    // A loaded machine's patience, and then some: the run ends either way.
    let mut unshare = std::process::Command::new("timeout");
    unshare.args(["900", "unshare"]);
    if !root {
        unshare.arg("--map-root-user");
    }
    let out = unshare
        .args(["--net", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(IN_NETNS, "1")
        .output()
        .expect("unshare (util-linux) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the run in its namespace failed");
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the run in its namespace ran no test"
    );
    false
}

/// The mock on `control` (the same port again after a restart), issuing
/// with `ids`, its endpoints unmeshed: the backends speak plain HTTP.
fn mock_on(control: SocketAddr, ids: &Identities) -> support::Mock {
    let listener = dst_load_controller::mock::bind(control).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener.into_std().unwrap()).unwrap();
    support::Mock::serve(
        listener,
        Behavior {
            unmeshed: true,
            ..Default::default()
        },
        Some(ids.clone()),
    )
}

/// `service` stands at `ip` (its ClusterIP) in the mock's policy, detected.
fn at_cluster_ip(
    mock: &support::Mock,
    service: &dst_load_controller::target::Authority,
    ip: SocketAddr,
) {
    let policy = ServicePolicy {
        addresses: [ip].into(),
        protocol: AppProtocol::Detect,
    };
    mock.handle.set_policy(service, policy).unwrap();
}

/// Sends the application's connections to `to` (a CIDR) to the proxy's
/// `listener`, as linkerd-proxy-init's iptables rules do.
fn redirect(to: &str, listener: SocketAddr) {
    run(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-s",
        APP_SOURCE,
        "-d",
        to,
        "-j",
        "REDIRECT",
        "--to-ports",
        &listener.port().to_string(),
    ]);
}

/// The namespace's own addresses on its loopback device.
fn add_addresses(ips: &[&str]) {
    for ip in ips {
        run(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
}

/// An issuing identity service for the proxy of `dir` (its token in
/// `dir/token`, the trust anchors in `dir/anchors.pem`).
fn issuer_in(dir: &Path) -> Identities {
    std::fs::write(dir.join("token"), "proxy-token").unwrap();
    let ids = Identities::issuing(IssuerConfig {
        ca: None,
        token: b"proxy-token".to_vec(),
        identity: ME.to_string(),
        lifetime: Duration::from_secs(24 * 3600),
    })
    .unwrap();
    std::fs::write(dir.join("anchors.pem"), ids.trust_anchor_pem().unwrap()).unwrap();
    ids
}

/// Runs a command of the namespace's setup (`ip`, `iptables`).
fn run(argv: &[&str]) {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A backend: an HTTP server answering its name, counting its requests
/// and how many came straight from the application (not through the proxy).
struct Backend {
    name: &'static str,
    addr: SocketAddr,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    unproxied: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Backend {
    async fn start(name: &'static str, addr: &str) -> Self {
        let addr: SocketAddr = addr.parse().unwrap();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let unproxied = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (counted, direct) = (hits.clone(), unproxied.clone());
        let app = axum::Router::new().fallback(
            move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if peer.ip() == std::net::IpAddr::from(APP_IP) {
                    direct.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                async move { name }
            },
        );
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            name,
            addr,
            hits,
            unproxied,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The source address of the "application" whose connections iptables
/// redirects to the proxy (the proxy's own connections come from other
/// addresses and are not redirected).
const APP_IP: [u8; 4] = [10, 77, 0, 100];
const APP_SOURCE: &str = "10.77.0.100";

/// One HTTP/1 request from the application to `to` on a new connection:
/// the status and the body (None: no answer within a loaded machine's
/// patience, or the connection failed).
async fn request(to: SocketAddr) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::from((APP_IP, 0))).ok()?;
        let mut conn = socket.connect(to).await.ok()?;
        conn.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_string();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .ok()
        .flatten()
}

/// Which backend of `all` answered a request to `to` (None: another
/// answer, printed).
async fn answered_by<'a>(to: SocketAddr, all: &'a [&'a Backend]) -> Option<&'a Backend> {
    let (status, body) = request(to).await?;
    let backend = all.iter().find(|b| body.ends_with(b.name)).copied();
    if status != 200 || backend.is_none() {
        println!("{to}: {status} {body:?}");
    }
    backend
}

#[tokio::test]
#[ignore = "needs Linkerd's proxy (DST_LINKERD_PROXY), unshare and iptables; run by hack/e2e.sh"]
async fn traffic_through_the_real_proxy_follows_the_mock() {
    if !in_own_netns("traffic_through_the_real_proxy_follows_the_mock") {
        return;
    }
    // In the namespace: addresses of its own on its loopback device. Not
    // 127/8: the proxy refuses to connect to loopback addresses. Backends
    // are 10.77.0.11-15, the application 10.77.0.100 and its pod's address
    // 10.77.0.20; services' ClusterIPs are 10.96.0.1-3.
    add_addresses(&[
        "10.77.0.11",
        "10.77.0.12",
        "10.77.0.13",
        "10.77.0.14",
        "10.77.0.15",
        "10.77.0.20",
        APP_SOURCE,
        "10.96.0.1",
        "10.96.0.2",
        "10.96.0.3",
    ]);
    let [a, b, c, d, e] = [
        ("backend-a", "10.77.0.11:8080"),
        ("backend-b", "10.77.0.12:8080"),
        ("backend-c", "10.77.0.13:8080"),
        ("backend-d", "10.77.0.14:8080"),
        ("backend-e", "10.77.0.15:8080"),
    ]
    .map(|(name, addr)| Backend::start(name, addr));
    let (a, b, c, d, e) = (a.await, b.await, c.await, d.await, e.await);
    // What answers at an address no service holds (the proxy forwards to
    // it), and the application behind the proxy's inbound side.
    let direct = Backend::start("direct", "10.96.0.3:80").await;
    let app = Backend::start("app", "0.0.0.0:9090").await;
    let all = [&a, &b, &c, &d, &e, &direct, &app];

    // The mock: web's ClusterIP is 10.96.0.1:80; gone's (10.96.0.2:80)
    // is a service with no destination.
    let web: dst_load_controller::target::Authority =
        "web.ns.svc.cluster.local:80".parse().unwrap();
    let gone: dst_load_controller::target::Authority =
        "gone.ns.svc.cluster.local:80".parse().unwrap();
    let web_ip: SocketAddr = "10.96.0.1:80".parse().unwrap();
    let gone_ip: SocketAddr = "10.96.0.2:80".parse().unwrap();
    let dir = tempdir("traffic");
    let ids = issuer_in(&dir);
    let control = loopback_port();
    let start_mock = |endpoints: Vec<SocketAddr>| {
        let mock = mock_on(control, &ids);
        mock.handle.set(&web, endpoints);
        at_cluster_ip(&mock, &web, web_ip);
        at_cluster_ip(&mock, &gone, gone_ip);
        mock
    };
    let mock = start_mock(vec![a.addr, b.addr]);

    // The proxy, and iptables redirecting the application's connections
    // as linkerd-proxy-init does: to services' addresses to its outbound
    // listener, to the pod's own port 9090 to its inbound one.
    let (outbound, inbound) = (loopback_port(), loopback_port());
    let proxy = Proxy::start_with(&dir, control, outbound, inbound);
    redirect("10.96.0.0/24", outbound);
    redirect("10.77.0.20/32", inbound);
    proxy.until_ready().await;
    assert!(ids.issued() >= 1, "certified by the mock");

    // Requests reach exactly the mock's endpoints, both of them.
    support::eventually_async("a first answer", Duration::from_secs(60), || async {
        answered_by(web_ip, &all).await.is_some()
    })
    .await;
    // Requests reach exactly the mock's endpoints, and each of them.
    each_answers(web_ip, &[&a, &b], &[&a, &b], &all).await;

    // The PATCH that removes A and adds C; then D is added, a later change
    // on the same stream: the mock sends web's changes in order and the
    // proxy applies them in order, so once D answers it has the PATCH.
    mock.handle.patch(&web, &[c.addr], &[a.addr]);
    mock.handle.patch(&web, &[d.addr], &[]);
    each_answers(web_ip, &[&d], &[&a, &b, &c, &d], &all).await;
    // From then on no request reaches A, and C gets some. (The balancer
    // prefers endpoints by latency: C may wait a while for its first.)
    let a_hits = a.hits();
    each_answers(web_ip, &[&b, &c, &d], &[&b, &c, &d], &all).await;
    assert_eq!(a.hits(), a_hits, "no request reached A after the PATCH");

    // An address no service holds: the policy is NotFound and the proxy
    // forwards to the address itself.
    let answer = request(direct.addr).await;
    assert_eq!(
        answer.map(|(s, body)| (s, body.ends_with("direct"))),
        Some((200, true))
    );
    // A service whose destination does not exist: the proxy answers 504
    // once the backend's queue gives up (the 3 s fail-fast timeout of the
    // mock's policy; never before it), and no backend sees the request.
    let hits: Vec<usize> = all.iter().map(|b| b.hits()).collect();
    let asked = std::time::Instant::now();
    let (status, body) = request(gone_ip).await.expect("the proxy answers");
    let waited = asked.elapsed();
    println!("gone: {status} {body:?} after {waited:?}");
    assert_eq!(status, 504, "{body:?}");
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
    assert_eq!(all.iter().map(|b| b.hits()).collect::<Vec<_>>(), hits);
    // Inbound: the proxy's own default is `deny` here (see
    // `Proxy::start_with`), so the application's connection to the pod's
    // port gets in only by the mock's all-unauthenticated policy.
    support::eventually_async(
        "in by the mock's policy",
        Duration::from_secs(60),
        || async {
            let answer = request("10.77.0.20:9090".parse().unwrap()).await;
            answer.is_some_and(|(s, body)| s == 200 && body.ends_with("app"))
        },
    )
    .await;
    // The port's policy follows the mock's changes: deny refuses the
    // application's request (403, as the proxy refuses an unauthorized
    // one) and so does all-authenticated (the application is not meshed);
    // cluster-unauthenticated lets it in (10.77.0.100 is in the chart's
    // cluster networks), and so does the default once the port's own
    // policy goes. A refused request never reaches the application.
    let pod_port: SocketAddr = "10.77.0.20:9090".parse().unwrap();
    for (policy, want) in [
        (Some(InboundPolicy::Deny), 403),
        (Some(InboundPolicy::ClusterUnauthenticated), 200),
        (Some(InboundPolicy::AllAuthenticated), 403),
        (None, 200),
    ] {
        match policy {
            Some(p) => mock.handle.set_inbound_port(9090, p).unwrap(),
            None => assert!(mock.handle.clear_inbound_port(9090)),
        }
        let what = format!("{policy:?} answered {want}");
        support::eventually_async(&what, Duration::from_secs(60), || async {
            request(pod_port).await.is_some_and(|(s, _)| s == want)
        })
        .await;
        let hits = app.hits();
        for _ in 0..5 {
            let answer = request(pod_port).await;
            assert_eq!(
                answer.as_ref().map(|a| a.0),
                Some(want),
                "{what}: {answer:?}"
            );
        }
        if want == 403 {
            assert_eq!(
                app.hits(),
                hits,
                "{what}: refused, never at the application"
            );
        } else {
            assert_eq!(app.hits(), hits + 5, "{what}");
        }
    }

    // The mock restarts on the same port. Meanwhile the proxy keeps
    // routing to the endpoints it has.
    mock.stop().await;
    let seen = who_answers(web_ip, 10, &all).await;
    assert!(
        names(&seen)
            .iter()
            .all(|n| ["backend-b", "backend-c", "backend-d"].contains(n)),
        "{seen:?}"
    );
    let mock = start_mock(vec![b.addr, c.addr, d.addr]);
    // Once the proxy watches web again, traffic follows the next change.
    support::eventually_async(
        "the proxy back on the mock",
        Duration::from_secs(60),
        || async { mock.handle.metrics().streams_active.get() >= 1 },
    )
    .await;
    mock.handle.set(&web, [e.addr]);
    mock.handle.patch(&web, &[a.addr], &[]);
    each_answers(web_ip, &[&a], &[&a, &b, &c, &d, &e], &all).await;
    each_answers(web_ip, &[&a, &e], &[&a, &e], &all).await;

    assert!(direct.hits() >= 1 && app.hits() >= 1);
    only_through_the_proxy(&all, &dir);
    mock.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every request the backends saw came through the proxy (of `dir`), and
/// the proxy took every policy the mock sent.
/// A `mock-dst` process on `control`, as a user starts one: issuing with
/// `dir/token`, its trust anchors written to `anchors` (the proxy reads
/// `dir/anchors.pem`), web at its ClusterIP with `endpoint`, and its admin
/// server (control API and metrics) on `admin`.
async fn mock_process(
    dir: &Path,
    control: SocketAddr,
    admin: SocketAddr,
    anchors: &str,
    endpoint: SocketAddr,
) -> tokio::process::Child {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("mock.log"))
        .unwrap();
    let child = tokio::process::Command::new(BIN)
        .args(["mock-dst", "--addr", &control.to_string()])
        .args(["--admin-addr", &admin.to_string(), "--identity-name", ME])
        .arg("--identity-token-file")
        .arg(dir.join("token"))
        .arg("--identity-trust-anchors-out")
        .arg(dir.join(anchors))
        .args([
            "--unmeshed-endpoints",
            "--service-address",
            "web.ns.svc.cluster.local:80=10.96.0.1:80",
            &format!("web.ns.svc.cluster.local:80={endpoint}"),
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start mock-dst");
    support::eventually_async("mock-dst serving", Duration::from_secs(60), || async {
        dir.join(anchors).exists()
    })
    .await;
    child
}

/// The mock-dst process's `mock_dst_streams_active` (None: not answering).
async fn mock_streams(admin: SocketAddr) -> Option<f64> {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    support::sample(&text, "mock_dst_streams_active", &[])
}

/// The issue's restart, as an operator does it: the `mock-dst` process is
/// killed (SIGKILL: no goodbye on any stream) and started again on the same
/// port with another endpoint. The proxy keeps routing to what it had,
/// re-resolves on the new process, follows its set, and then a `PATCH`
/// over the control API.
#[tokio::test]
#[ignore = "needs Linkerd's proxy (DST_LINKERD_PROXY), unshare and iptables; run by hack/e2e.sh"]
async fn a_killed_mock_dst_process_restarted_on_its_port_is_followed() {
    if !in_own_netns("a_killed_mock_dst_process_restarted_on_its_port_is_followed") {
        return;
    }
    add_addresses(&[
        "10.77.0.11",
        "10.77.0.12",
        "10.77.0.13",
        APP_SOURCE,
        "10.96.0.1",
    ]);
    let [a, b, c] = [
        ("backend-a", "10.77.0.11:8080"),
        ("backend-b", "10.77.0.12:8080"),
        ("backend-c", "10.77.0.13:8080"),
    ]
    .map(|(name, addr)| Backend::start(name, addr));
    let (a, b, c) = (a.await, b.await, c.await);
    let all = [&a, &b, &c];
    let web_ip: SocketAddr = "10.96.0.1:80".parse().unwrap();
    let dir = tempdir("killed");
    std::fs::write(dir.join("token"), "proxy-token").unwrap();
    let (control, admin) = (loopback_port(), loopback_port());
    let mut mock = mock_process(&dir, control, admin, "anchors.pem", a.addr).await;

    let (outbound, inbound) = (loopback_port(), loopback_port());
    let proxy = Proxy::start_with(&dir, control, outbound, inbound);
    redirect("10.96.0.0/24", outbound);
    proxy.until_ready().await;
    each_answers(web_ip, &[&a], &[&a], &all).await;

    // Killed: the proxy still routes to A.
    mock.kill().await.unwrap();
    let seen = who_answers(web_ip, 5, &all).await;
    assert_eq!(names(&seen), ["backend-a"], "{seen:?}");
    // The same port, another process, web at B: the proxy follows it.
    let _mock = mock_process(&dir, control, admin, "anchors-2.pem", b.addr).await;
    support::eventually_async(
        "the proxy back on mock-dst",
        Duration::from_secs(60),
        || async { mock_streams(admin).await.is_some_and(|n| n >= 1.0) },
    )
    .await;
    each_answers(web_ip, &[&b], &[&a, &b], &all).await;
    let seen = who_answers(web_ip, 10, &all).await;
    assert_eq!(names(&seen), ["backend-b"], "{seen:?}");

    // A PATCH over the control API: C in, B out.
    let patched = reqwest::Client::new()
        .patch(format!(
            "http://{admin}/api/destinations/web.ns.svc.cluster.local:80"
        ))
        .json(&serde_json::json!({"add": [c.addr.to_string()], "remove": [b.addr.to_string()]}))
        .send()
        .await
        .unwrap();
    assert!(patched.status().is_success(), "{patched:?}");
    each_answers(web_ip, &[&c], &[&b, &c], &all).await;
    let seen = who_answers(web_ip, 10, &all).await;
    assert_eq!(names(&seen), ["backend-c"], "{seen:?}");
    only_through_the_proxy(&all, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn only_through_the_proxy(all: &[&Backend], dir: &Path) {
    for backend in all {
        assert_eq!(
            backend.unproxied.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{} was reached without the proxy",
            backend.name
        );
    }
    let log = std::fs::read_to_string(dir.join("proxy.log")).unwrap();
    for bad in ["Client policy misconfigured", "Server misconfigured"] {
        assert!(!log.contains(bad), "the proxy logged {bad:?}:\n{log}");
    }
}

/// Who answered `n` requests to `to`, by name, with how many each (a
/// request no backend answered counts as `no answer`).
async fn who_answers(
    to: SocketAddr,
    n: usize,
    all: &[&Backend],
) -> std::collections::BTreeMap<&'static str, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        let by = answered_by(to, all).await.map(|b| b.name);
        *seen.entry(by.unwrap_or("no answer")).or_default() += 1;
    }
    println!("{n} requests to {to}: {seen:?}");
    seen
}

fn names(seen: &std::collections::BTreeMap<&'static str, usize>) -> Vec<&'static str> {
    seen.keys().copied().collect()
}

/// Requests `to` until each of `wanted` has answered (at least 20
/// requests); every answer is from one of `allowed`. The deadline is long:
/// the proxy's balancer gives a new endpoint a 30 ms RTT estimate that
/// decays over 10 s, and sends it nothing while the others answer faster
/// (tens of seconds once they are warm; see BENCHMARKS.md).
async fn each_answers(to: SocketAddr, wanted: &[&Backend], allowed: &[&Backend], all: &[&Backend]) {
    let name_of = |set: &[&Backend]| set.iter().map(|b| b.name).collect::<Vec<_>>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    loop {
        let by = answered_by(to, all).await.map(|b| b.name);
        *seen.entry(by.unwrap_or("no answer")).or_default() += 1;
        assert!(
            by.is_some_and(|name| name_of(allowed).contains(&name)),
            "answered by {by:?}, not one of {:?} (so far {seen:?})",
            name_of(allowed)
        );
        let requests: usize = seen.values().sum();
        if requests >= 20 && wanted.iter().all(|b| seen.contains_key(b.name)) {
            println!("{requests} requests to {to}: {seen:?}");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not each of {:?} answered in 180 s: {seen:?}",
            name_of(wanted)
        );
    }
}

/// Routing by the profile: the proxy asks `GetProfile` of every
/// connection's original destination (the service's ClusterIP, which the
/// mock answers with the service's profile), and a profile with traffic
/// overrides takes over from the policy's routes. The proxy decides so
/// once per destination, so web's profile is set before any request:
/// all of web's traffic goes to canary; a 50/50 split then reaches both;
/// with the profile deleted, web's own endpoint answers again.
#[tokio::test]
#[ignore = "needs Linkerd's proxy (DST_LINKERD_PROXY); run by hack/e2e.sh"]
async fn a_profiles_traffic_split_routes_the_real_proxys_requests() {
    use dst_load_controller::mock::profiles::{DstOverride, ProfileSpec};
    if !in_own_netns("a_profiles_traffic_split_routes_the_real_proxys_requests") {
        return;
    }
    add_addresses(&[
        "10.77.0.11",
        "10.77.0.13",
        APP_SOURCE,
        "10.96.0.1",
        "10.96.0.2",
    ]);
    let (web_backend, canary_backend) = (
        Backend::start("web-a", "10.77.0.11:8080").await,
        Backend::start("canary-c", "10.77.0.13:8080").await,
    );
    let all = [&web_backend, &canary_backend];
    let web: dst_load_controller::target::Authority =
        "web.ns.svc.cluster.local:80".parse().unwrap();
    let canary: dst_load_controller::target::Authority =
        "canary.ns.svc.cluster.local:80".parse().unwrap();
    let web_ip: SocketAddr = "10.96.0.1:80".parse().unwrap();
    let dir = tempdir("profile");
    let ids = issuer_in(&dir);
    let control = loopback_port();
    let mock = mock_on(control, &ids);
    for (service, backend, ip) in [
        (&web, &web_backend, web_ip),
        (&canary, &canary_backend, "10.96.0.2:80".parse().unwrap()),
    ] {
        mock.handle.set(service, [backend.addr]);
        at_cluster_ip(&mock, service, ip);
    }
    let split = |weights: &[(&dst_load_controller::target::Authority, u32)]| ProfileSpec {
        dst_overrides: weights
            .iter()
            .map(|(a, weight)| DstOverride {
                authority: a.to_string(),
                weight: *weight,
            })
            .collect(),
        ..Default::default()
    };
    mock.handle
        .set_profile(web.host(), split(&[(&canary, 10_000)]));

    let outbound = loopback_port();
    let proxy = Proxy::start_with(&dir, control, outbound, loopback_port());
    redirect("10.96.0.0/24", outbound);
    proxy.until_ready().await;
    // Every request to web goes to canary.
    each_answers(web_ip, &[&canary_backend], &[&canary_backend], &all).await;
    // Half and half: both answer.
    mock.handle
        .set_profile(web.host(), split(&[(&web, 5_000), (&canary, 5_000)]));
    each_answers(web_ip, &all, &all, &all).await;
    // No profile of its own: web's endpoint only, once the proxy has it.
    mock.handle.delete_profile(web.host());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while answered_by(web_ip, &all).await.map(|b| b.name) != Some("web-a") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "web-a never answered alone"
        );
    }
    each_answers(web_ip, &[&web_backend], &[&web_backend], &all).await;
    only_through_the_proxy(&all, &dir);
    mock.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
