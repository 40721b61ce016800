//! Linkerd's real proxy (v2.366.0, built from ../shared/sources by
//! `hack/build-deps.sh linkerd_proxy`) against our mock control plane, on
//! loopback. Run by `hack/e2e.sh`, which builds the proxy and sets
//! `DST_LINKERD_PROXY` to it.
//!
//! The proxy makes no key of its own: as in a pod, it reads its key and CSR
//! from its identity directory (`key.p8`, `csr.der`, written by `proxy-env`)
//! and asks Identity's `Certify` to sign the CSR with its token. Each proxy
//! is started as a user would: `eval "$(dst-load-controller proxy-env ...)"`.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use dst_load_controller::mock::identity::{Identities, IssuerConfig};

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

impl Proxy {
    /// Starts a proxy of the mock at `control` as a user would: `eval` of
    /// `proxy-env`'s output (which writes the key and CSR into `dir/id`),
    /// then the proxy, with `dir/token` as its token and the mock's trust
    /// anchors in `dir/anchors.pem`.
    fn start(dir: &Path, control: SocketAddr) -> Self {
        let port = || format!("127.0.0.1:{}", support::free_port());
        let admin = port();
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
            .args(["--inbound-addr", &port(), "--outbound-addr", &port()])
            .args([
                "--proxy-admin-addr",
                &admin,
                "--control-listen-addr",
                &port(),
            ])
            .env("DST_LINKERD_PROXY", proxy_bin())
            .env("LINKERD2_PROXY_LOG", "warn,linkerd=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("proxy.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start linkerd2-proxy");
        Self {
            _child: child,
            admin: admin.parse().unwrap(),
        }
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

    // Refused as Linkerd refuses an unauthenticated token, more than once
    // (the proxy retries), and not ready meanwhile.
    support::eventually_async("two refusals", Duration::from_secs(60), || async {
        ids.refused(tonic::Code::FailedPrecondition) >= 2
    })
    .await;
    let ready = proxy.ready().await;
    assert!(ready.is_some(), "the admin server answers");
    assert_ne!(ready, Some(200));
    assert_eq!(ids.issued(), 0);
    mock.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
