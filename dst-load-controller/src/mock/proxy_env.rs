//! What a real Linkerd proxy needs to run against this mock: its identity
//! directory (a key and a CSR for its identity name, as the proxy's start
//! script makes them in a pod) and its environment (the mock as Identity,
//! Destination and Policy, plaintext on loopback).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// A proxy of this mock.
#[derive(Clone, Debug)]
pub struct ProxyEnv {
    /// The mock's gRPC address (Identity, Destination and Policy).
    pub control: SocketAddr,
    /// The proxy's identity name (the mock's `--identity-name`).
    pub identity_name: String,
    /// The token file the mock checks (`--identity-token-file`).
    pub token_file: PathBuf,
    /// The trust anchors (PEM): the mock's issuing CA.
    pub trust_anchors_pem: String,
    /// Where the proxy's key and CSR are.
    pub identity_dir: PathBuf,
    /// The workload the proxy names to Policy (JSON, as the injector writes it).
    pub workload: String,
    /// The proxy's inbound listener.
    pub inbound: SocketAddr,
    /// The proxy's outbound listener.
    pub outbound: SocketAddr,
    /// The proxy's admin server (`/ready`, `/metrics`).
    pub admin: SocketAddr,
    /// The proxy's control listener (tap).
    pub control_listen: SocketAddr,
    /// The networks whose addresses the proxy asks `GetProfile` of, as the
    /// injector sets them from Linkerd's cluster networks.
    pub profile_networks: Vec<ipnet::IpNet>,
}

impl ProxyEnv {
    /// The environment variables, in a stable order.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let control = self.control.to_string();
        vec![
            ("LINKERD2_PROXY_IDENTITY_DIR", path(&self.identity_dir)),
            ("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", path(&self.token_file)),
            (
                "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
                self.trust_anchors_pem.clone(),
            ),
            (
                "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
                self.identity_name.clone(),
            ),
            ("LINKERD2_PROXY_IDENTITY_SVC_ADDR", control.clone()),
            ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", control.clone()),
            ("LINKERD2_PROXY_POLICY_SVC_ADDR", control),
            ("LINKERD2_PROXY_POLICY_WORKLOAD", self.workload.clone()),
            (
                "LINKERD2_PROXY_INBOUND_LISTEN_ADDR",
                self.inbound.to_string(),
            ),
            (
                "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR",
                self.outbound.to_string(),
            ),
            ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", self.admin.to_string()),
            (
                "LINKERD2_PROXY_CONTROL_LISTEN_ADDR",
                self.control_listen.to_string(),
            ),
            (
                "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS",
                self.profile_networks
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ]
    }

    /// The variables as `export NAME='value'` lines for a POSIX shell.
    pub fn shell(&self) -> String {
        self.vars()
            .into_iter()
            .map(|(k, v)| format!("export {k}={}\n", shell_quote(&v)))
            .collect()
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `s` in single quotes, each `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes `dir/key.p8` (a new ECDSA P-256 key, PKCS#8 DER) and `dir/csr.der`
/// (a CSR naming `identity` alone), creating `dir`.
pub fn write_identity_dir(dir: &Path, identity: &str) -> Result<(), IdentityDirError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| IdentityDirError::Generate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![identity.to_string()])
        .map_err(|e| IdentityDirError::Generate(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| IdentityDirError::Generate(e.to_string()))?;
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|why| IdentityDirError::Write { path: p, why })
    };
    std::fs::create_dir_all(dir).map_err(|why| IdentityDirError::Write {
        path: dir.into(),
        why,
    })?;
    write("key.p8", &key.serialize_der())?;
    write("csr.der", csr.der())
}

/// An identity directory that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityDirError {
    /// The key or CSR cannot be generated.
    #[error("cannot generate the proxy's key and CSR: {0}")]
    Generate(String),
    /// A file cannot be written.
    #[error("cannot write {path}: {why}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why (shown in the message, so not its source).
        why: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_for_a_shell() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("line1\nline2"), "'line1\nline2'");
    }

    #[test]
    fn the_identity_directory_holds_a_key_and_a_csr_for_the_name() {
        let dir = std::env::temp_dir().join(format!("dst-proxyenv-{}", std::process::id()));
        write_identity_dir(
            &dir,
            "default.ns.serviceaccount.identity.linkerd.cluster.local",
        )
        .unwrap();
        let csr = std::fs::read(dir.join("csr.der")).unwrap();
        let params =
            rcgen::CertificateSigningRequestParams::from_der(&csr.as_slice().into()).unwrap();
        assert_eq!(
            params.params.subject_alt_names,
            [rcgen::SanType::DnsName(
                "default.ns.serviceaccount.identity.linkerd.cluster.local"
                    .try_into()
                    .unwrap()
            )]
        );
        let key = std::fs::read(dir.join("key.p8")).unwrap();
        rcgen::KeyPair::try_from(key.as_slice()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
