//! The mock Identity service: in the stored mode `Certify` answers with each
//! identity's stored chain and `NotFound` for any other name, and a
//! malformed directory is refused; in the issuing mode it signs a proxy's
//! CSR with its CA for the lifetime set, and refuses what Linkerd's identity
//! service refuses with the same status codes.

use std::path::Path;

use std::time::{Duration, SystemTime};

use crate::support;
use dst_load_controller::mock::identity::{Identities, IdentityError, IssuerConfig};
use linkerd2_proxy_api::identity::{CertifyRequest, identity_client::IdentityClient};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA and, per name, a leaf it signed; returns (leaf DER, CA DER) per name.
fn write_identities(dir: &Path, names: &[&str]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params =
        CertificateParams::new(vec!["identity.linkerd.cluster.local".to_string()]).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    names
        .iter()
        .map(|name| {
            let key = KeyPair::generate().unwrap();
            let leaf = CertificateParams::new(vec![name.to_string()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            let d = dir.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("crt.pem"),
                format!("{}{}", leaf.pem(), ca_cert.pem()),
            )
            .unwrap();
            std::fs::write(d.join("key.p8"), key.serialize_der()).unwrap();
            (leaf.der().to_vec(), ca_cert.der().to_vec())
        })
        .collect()
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "dst-ids-{tag}-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn certify_returns_each_identitys_chain() {
    let dir = tempdir("ok");
    let names = [
        "foo.ns.serviceaccount.identity.linkerd.cluster.local",
        "bar.ns.serviceaccount.identity.linkerd.cluster.local",
        "baz.other.serviceaccount.identity.linkerd.cluster.local",
    ];
    let chains = write_identities(&dir, &names);
    let ids = Identities::load(&dir).unwrap();
    assert_eq!(ids.names().len(), 3);

    let (mut client, mock) = serve_identities(ids).await;
    for (name, (leaf, ca)) in names.iter().zip(&chains) {
        let rsp = client
            .certify(CertifyRequest {
                identity: name.to_string(),
                token: b"token".to_vec(),
                certificate_signing_request: vec![1, 2, 3],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&rsp.leaf_certificate, leaf, "{name}");
        assert_eq!(rsp.intermediate_certificates, vec![ca.clone()], "{name}");
        // rcgen's default validity ends in 4096.
        assert!(rsp.valid_until.unwrap().seconds > 4_000_000_000, "{name}");
    }
    let err = client
        .certify(CertifyRequest {
            identity: "nobody.ns.serviceaccount.identity.linkerd.cluster.local".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    mock.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_directories_are_refused() {
    assert!(matches!(
        Identities::load(Path::new("/nonexistent/ids")),
        Err(IdentityError::Dir { .. })
    ));

    let dir = tempdir("stray");
    std::fs::write(dir.join("README"), "x").unwrap();
    assert!(matches!(
        Identities::load(&dir),
        Err(IdentityError::NotADirectory(_))
    ));

    let dir = tempdir("nocrt");
    std::fs::create_dir(dir.join("foo")).unwrap();
    assert!(matches!(
        Identities::load(&dir),
        Err(IdentityError::Read { .. })
    ));

    let dir = tempdir("garbage");
    std::fs::create_dir(dir.join("foo")).unwrap();
    std::fs::write(dir.join("foo/crt.pem"), "not a certificate").unwrap();
    let err = Identities::load(&dir).unwrap_err();
    assert!(matches!(err, IdentityError::NoCertificate { .. }), "{err}");

    let dir = tempdir("emptykey");
    write_identities(&dir, &["foo"]);
    std::fs::write(dir.join("foo/key.p8"), "").unwrap();
    assert!(matches!(
        Identities::load(&dir),
        Err(IdentityError::Empty(_))
    ));
}

const ME: &str = "default.ns.serviceaccount.identity.linkerd.cluster.local";

/// Serves `ids` on loopback; returns a client of it and the mock.
async fn serve_identities(
    ids: Identities,
) -> (IdentityClient<tonic::transport::Channel>, support::Mock) {
    let mock = support::Mock::start_with_identities(ids).await;
    let client = IdentityClient::connect(format!("http://{}", mock.addr))
        .await
        .unwrap();
    (client, mock)
}

/// A proxy's request: a fresh ECDSA P-256 key and a CSR naming `dns`
/// (and `cn` as common name, if given).
fn csr(dns: &[&str], cn: Option<&str>) -> Vec<u8> {
    support::proxy_csr(dns, cn, false)
}

fn request(identity: &str, token: &[u8], csr: Vec<u8>) -> CertifyRequest {
    CertifyRequest {
        identity: identity.to_string(),
        token: token.to_vec(),
        certificate_signing_request: csr,
    }
}

/// An issuing mock's identities: `ME` for `token`, signed by `ca` (or a
/// CA made for it).
fn issuing(
    ca: Option<(std::path::PathBuf, std::path::PathBuf)>,
    token: &[u8],
    lifetime: Duration,
) -> Result<Identities, dst_load_controller::mock::identity::IssuerError> {
    Identities::issuing(IssuerConfig {
        ca,
        token: token.to_vec(),
        identity: ME.to_string(),
        lifetime,
    })
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn an_issuing_mock_signs_the_proxys_csr_with_its_ca_for_the_lifetime_set() {
    let ids = issuing(None, b"the-token", Duration::from_secs(90)).unwrap();
    let anchor_pem = ids.trust_anchor_pem().unwrap().to_string();
    let (_, anchor) = x509_parser::pem::parse_x509_pem(anchor_pem.as_bytes()).unwrap();
    let anchor = anchor.parse_x509().unwrap();
    assert!(anchor.is_ca());
    let (mut client, mock) = serve_identities(ids).await;

    for cn in [None, Some(ME)] {
        let before = SystemTime::now();
        let rsp = client
            .certify(request(ME, b"the-token", csr(&[ME], cn)))
            .await
            .unwrap()
            .into_inner();
        let after = SystemTime::now();
        let (_, leaf) = x509_parser::parse_x509_certificate(&rsp.leaf_certificate).unwrap();
        // Signed by the trust anchor the mock hands out, for the name asked.
        leaf.verify_signature(Some(anchor.public_key())).unwrap();
        assert_eq!(
            rsp.intermediate_certificates,
            vec![anchor.as_raw().to_vec()]
        );
        let sans: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(sans, [format!("DNSName({ME})")]);
        assert!(!leaf.is_ca());
        // Valid for the lifetime set from when it was issued.
        let until = rsp.valid_until.unwrap().seconds;
        assert!(
            until >= unix(before) + 90 && until <= unix(after) + 91,
            "{until}"
        );
        assert_eq!(leaf.validity().not_after.timestamp(), until);
        assert!(leaf.validity().not_before.timestamp() <= unix(before));
    }
    mock.stop().await;
}

#[tokio::test]
async fn an_issuing_mock_refuses_what_linkerds_identity_service_refuses() {
    use tonic::Code::{FailedPrecondition, InvalidArgument};
    let ids = issuing(None, b"the-token", Duration::from_secs(3600)).unwrap();
    let (mut client, mock) = serve_identities(ids.clone()).await;
    let other = "web.ns.serviceaccount.identity.linkerd.cluster.local";
    let cases = [
        (
            "no identity",
            request("", b"the-token", csr(&[ME], None)),
            InvalidArgument,
            "missing identity",
        ),
        (
            "no token",
            request(ME, b"", csr(&[ME], None)),
            InvalidArgument,
            "missing token",
        ),
        (
            "no CSR",
            request(ME, b"the-token", Vec::new()),
            InvalidArgument,
            "missing certificate signing request",
        ),
        (
            "a CSR that is not one",
            request(ME, b"the-token", vec![1, 2, 3]),
            InvalidArgument,
            "bad CSR",
        ),
        (
            "a CSR for another name",
            request(ME, b"the-token", csr(&[other], None)),
            FailedPrecondition,
            "CSR name does not match",
        ),
        (
            "a CSR with two names",
            request(ME, b"the-token", csr(&[ME, other], None)),
            FailedPrecondition,
            "exactly one DNSName",
        ),
        (
            "another common name",
            request(ME, b"the-token", csr(&[ME], Some(other))),
            FailedPrecondition,
            "invalid CommonName",
        ),
        (
            "a CSR with an IP address",
            request(ME, b"the-token", support::proxy_csr(&[ME], None, true)),
            FailedPrecondition,
            "cannot validate IP addresses",
        ),
        (
            "a wrong token",
            request(ME, b"not-the-token", csr(&[ME], None)),
            InvalidArgument,
            "invalid bearer token",
        ),
        (
            "a name the token is not",
            request(other, b"the-token", csr(&[other], None)),
            FailedPrecondition,
            "requested identity did not match provided token",
        ),
    ];
    for (what, req, code, says) in cases {
        let err = client.certify(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(err.message().contains(says), "{what}: {}", err.message());
    }
    // Each refusal is counted by its code, and the right request still passes.
    assert_eq!(
        (
            ids.refused(InvalidArgument),
            ids.refused(FailedPrecondition)
        ),
        (5, 5)
    );
    assert_eq!(ids.issued(), 0);
    client
        .certify(request(ME, b"the-token", csr(&[ME], None)))
        .await
        .unwrap();
    assert_eq!(ids.issued(), 1);
    mock.stop().await;
}

#[tokio::test]
async fn an_issuing_mock_signs_with_the_ca_it_is_given() {
    let dir = tempdir("ca");
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "identity.linkerd.cluster.local");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("ca.key"), ca_key.serialize_pem()).unwrap();
    let ids = issuing(
        Some((dir.join("ca.crt"), dir.join("ca.key"))),
        b"t",
        Duration::from_secs(3600),
    )
    .unwrap();
    assert_eq!(ids.trust_anchor_pem(), Some(ca_cert.pem().as_str()));
    let (mut client, mock) = serve_identities(ids).await;
    let rsp = client
        .certify(request(ME, b"t", csr(&[ME], None)))
        .await
        .unwrap()
        .into_inner();
    let (_, leaf) = x509_parser::parse_x509_certificate(&rsp.leaf_certificate).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(ca_cert.der()).unwrap();
    leaf.verify_signature(Some(ca.public_key())).unwrap();
    assert_eq!(rsp.intermediate_certificates, vec![ca_cert.der().to_vec()]);
    mock.stop().await;

    // A key that is not one is refused, naming the file.
    std::fs::write(dir.join("bad.key"), "not a key").unwrap();
    let err = issuing(
        Some((dir.join("ca.crt"), dir.join("bad.key"))),
        b"t",
        Duration::from_secs(3600),
    )
    .unwrap_err();
    assert!(err.to_string().contains("bad.key"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
