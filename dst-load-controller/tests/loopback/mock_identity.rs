//! The mock Identity service: `Certify` answers with each identity's stored
//! chain and `NotFound` for any other name; a malformed directory is refused.

use std::path::Path;

use dst_load_controller::mock::{
    MockDestination,
    identity::{Identities, IdentityError},
    server::Behavior,
};
use linkerd2_proxy_api::identity::{CertifyRequest, identity_client::IdentityClient};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio_util::sync::CancellationToken;

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

    let mock =
        MockDestination::new(Behavior::default(), &mut Default::default()).with_identities(ids);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(mock.serve(listener, stop.clone()));
    let mut client = IdentityClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
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
    stop.cancel();
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
