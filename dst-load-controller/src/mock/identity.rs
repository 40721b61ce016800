//! The mock Identity service, in one of two modes:
//! - stored: `Certify` answers with a stored certificate chain per identity
//!   name, read from `<dir>/<identity-name>/crt.pem` (optionally with
//!   `key.p8` and `csr.der` beside it), whatever the request holds;
//! - issuing: `Certify` checks the request as Linkerd's identity service
//!   does and signs the proxy's CSR with a CA (given, or generated at
//!   start), for a set lifetime, so that a real proxy gets a certificate it
//!   verifies against the CA and renews before it expires.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use linkerd2_proxy_api::identity::{CertifyRequest, CertifyResponse, identity_server::Identity};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tonic::{Request, Response, Status};

/// A malformed identities directory.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The directory cannot be read.
    #[error(
        "cannot read identities directory {path}: {why}; expected a directory with one subdirectory per identity name"
    )]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why (shown in the message, so not its source).
        why: std::io::Error,
    },
    /// Something other than a subdirectory sits in the directory.
    #[error(
        "{0} is not a directory; the identities directory holds one subdirectory per identity name, each with crt.pem"
    )]
    NotADirectory(PathBuf),
    /// A certificate file is missing or unreadable.
    #[error(
        "cannot read {path}: {why}; each identity directory needs a PEM certificate chain in crt.pem"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (shown in the message, so not its source).
        why: std::io::Error,
    },
    /// The PEM holds no certificate.
    #[error("{path} holds no PEM certificate ({detail})")]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The leaf certificate cannot be parsed.
    #[error("{path}: the first certificate is not valid X.509: {detail}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// An optional file is present but empty.
    #[error("{0} is empty; remove it or put the identity's key (key.p8) or CSR (csr.der) in it")]
    Empty(PathBuf),
}

/// A CA that cannot be read or made.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// A file cannot be read.
    #[error("cannot read {path}: {why}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (shown in the message, so not its source).
        why: std::io::Error,
    },
    /// The CA's key is not a PEM private key rcgen can sign with.
    #[error(
        "{path} is not a usable PEM private key ({detail}); give the CA's key as PKCS#8 PEM (ECDSA P-256, as `step certificate create --profile intermediate-ca` makes it)"
    )]
    Key {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The CA's certificate is not a PEM certificate.
    #[error("{path} is not a usable PEM CA certificate ({detail})")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// Generating the CA failed.
    #[error("cannot generate the identity CA: {0}")]
    Generate(String),
}

/// What the issuing mode checks and signs with.
pub struct IssuerConfig {
    /// The CA's certificate and key (PEM files); `None`: generate one.
    pub ca: Option<(PathBuf, PathBuf)>,
    /// The token a proxy must present (its token file's contents).
    pub token: Vec<u8>,
    /// The identity name that token stands for (a proxy asking for another
    /// is refused, as Linkerd refuses a name its token does not match).
    pub identity: String,
    /// How long an issued certificate is valid.
    pub lifetime: Duration,
}

/// Signs proxies' CSRs.
pub struct Issuer {
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_der: Vec<u8>,
    ca_pem: String,
    token: Vec<u8>,
    identity: String,
    lifetime: Duration,
    /// Certificates issued.
    issued: std::sync::atomic::AtomicU64,
    /// Requests refused, by status code.
    refused: std::sync::Mutex<std::collections::BTreeMap<i32, u64>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("identity", &self.identity)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    fn new(config: IssuerConfig) -> Result<Self, IssuerError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|why| IssuerError::Read {
                path: path.into(),
                why,
            })
        };
        let (ca, ca_pem, ca_der) = match &config.ca {
            Some((crt, key)) => {
                let (crt_pem, key_pem) = (read(crt)?, read(key)?);
                let key_pair =
                    rcgen::KeyPair::from_pem(&key_pem).map_err(|e| IssuerError::Key {
                        path: key.clone(),
                        detail: e.to_string(),
                    })?;
                let bad_crt = |detail: String| IssuerError::Certificate {
                    path: crt.clone(),
                    detail,
                };
                let der = CertificateDer::from_pem_slice(crt_pem.as_bytes())
                    .map_err(|e| bad_crt(e.to_string()))?
                    .to_vec();
                let ca = rcgen::Issuer::from_ca_cert_pem(&crt_pem, key_pair)
                    .map_err(|e| bad_crt(e.to_string()))?;
                (ca, crt_pem, der)
            }
            None => {
                let generate = |e: rcgen::Error| IssuerError::Generate(e.to_string());
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(generate)?;
                let mut params = rcgen::CertificateParams::default();
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, "mock-dst identity CA");
                params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                params.key_usages = vec![
                    rcgen::KeyUsagePurpose::KeyCertSign,
                    rcgen::KeyUsagePurpose::CrlSign,
                ];
                let now = SystemTime::now();
                params.not_before = (now - Duration::from_secs(60)).into();
                params.not_after = (now + Duration::from_secs(365 * 24 * 3600)).into();
                let cert = params.self_signed(&key).map_err(generate)?;
                (
                    rcgen::Issuer::new(params, key),
                    cert.pem(),
                    cert.der().to_vec(),
                )
            }
        };
        Ok(Self {
            ca,
            ca_der,
            ca_pem,
            token: config.token,
            identity: config.identity,
            lifetime: config.lifetime,
            issued: Default::default(),
            refused: Default::default(),
        })
    }

    /// Checks `req` as Linkerd's identity service does (the same status
    /// codes), then signs its CSR.
    fn certify(&self, req: CertifyRequest) -> Result<CertifyResponse, Status> {
        let refuse = |status: Status| {
            tracing::info!(identity = %req.identity, code = ?status.code(), reason = status.message(), "Certify refused");
            *self
                .refused
                .lock()
                .expect("refusals")
                .entry(status.code() as i32)
                .or_default() += 1;
            status
        };
        if req.identity.is_empty() {
            return Err(refuse(Status::invalid_argument("missing identity")));
        }
        if req.token.is_empty() {
            return Err(refuse(Status::invalid_argument("missing token")));
        }
        if req.certificate_signing_request.is_empty() {
            return Err(refuse(Status::invalid_argument(
                "missing certificate signing request",
            )));
        }
        let csr = rcgen::CertificateSigningRequestParams::from_der(
            &req.certificate_signing_request.as_slice().into(),
        )
        .map_err(|e| refuse(Status::invalid_argument(format!("bad CSR: {e}"))))?;
        check_csr(&csr.params, &req.identity)
            .map_err(|e| refuse(Status::failed_precondition(e.to_string())))?;
        // Linkerd's identity service has the apiserver review the token: one
        // the apiserver does not know is InvalidArgument ("invalid bearer
        // token"). Every token but the mock's is one it does not know.
        if req.token != self.token {
            return Err(refuse(Status::invalid_argument(
                "invalid bearer token: not the token this mock was given (--identity-token-file)",
            )));
        }
        if req.identity != self.identity {
            return Err(refuse(Status::failed_precondition(format!(
                "requested identity did not match provided token: requested={}; found={}",
                req.identity, self.identity
            ))));
        }
        let mut csr = csr;
        let now = SystemTime::now();
        // A little back-dated, for clocks a second apart.
        csr.params.not_before = (now - Duration::from_secs(10)).into();
        let until = now + self.lifetime;
        csr.params.not_after = until.into();
        csr.params.is_ca = rcgen::IsCa::ExplicitNoCa;
        csr.params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf = csr
            .signed_by(&self.ca)
            .map_err(|e| refuse(Status::internal(format!("signing failed: {e}"))))?;
        let valid_until = until
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(identity = %req.identity, valid_for = ?self.lifetime, "issued a certificate");
        Ok(CertifyResponse {
            leaf_certificate: leaf.der().to_vec(),
            intermediate_certificates: vec![self.ca_der.clone()],
            valid_until: Some(prost_types::Timestamp {
                seconds: valid_until.as_secs() as i64,
                nanos: valid_until.subsec_nanos() as i32,
            }),
        })
    }
}

/// A CSR Linkerd's identity service refuses, in its words.
#[derive(Debug, thiserror::Error)]
enum CsrError {
    /// Not exactly one DNS name.
    #[error("CSR must have exactly one DNSName (it has {0})")]
    DnsNames(usize),
    /// A DNS name that is not the identity asked for.
    #[error("CSR name does not match requested identity: csr={csr}; req={requested}")]
    Name {
        /// The CSR's name.
        csr: String,
        /// The request's identity.
        requested: String,
    },
    /// A common name that is not the identity.
    #[error("invalid CommonName: {0}")]
    CommonName(String),
    /// An email address among its names.
    #[error("cannot validate email addresses")]
    Email,
    /// An IP address among its names.
    #[error("cannot validate IP addresses")]
    IpAddress,
    /// A URI among its names.
    #[error("cannot validate URIs")]
    Uri,
}

/// Linkerd's CSR rules: exactly one DNS name, the requested identity; a
/// common name, if any, the same; no email address, IP address or URI.
fn check_csr(params: &rcgen::CertificateParams, identity: &str) -> Result<(), CsrError> {
    let dns: Vec<&str> = params
        .subject_alt_names
        .iter()
        .filter_map(|san| match san {
            rcgen::SanType::DnsName(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let [name] = dns.as_slice() else {
        return Err(CsrError::DnsNames(dns.len()));
    };
    if *name != identity {
        return Err(CsrError::Name {
            csr: name.to_string(),
            requested: identity.to_string(),
        });
    }
    match params.distinguished_name.get(&rcgen::DnType::CommonName) {
        None => {}
        Some(rcgen::DnValue::Utf8String(cn)) if cn == identity => {}
        Some(rcgen::DnValue::PrintableString(cn)) if cn.as_str() == identity => {}
        Some(rcgen::DnValue::Utf8String(cn)) => return Err(CsrError::CommonName(cn.clone())),
        Some(rcgen::DnValue::PrintableString(cn)) => {
            return Err(CsrError::CommonName(cn.as_str().to_string()));
        }
        Some(other) => return Err(CsrError::CommonName(format!("{other:?}"))),
    }
    // In Linkerd's order: email addresses, then IP addresses, then URIs.
    let has = |kind: fn(&rcgen::SanType) -> bool| params.subject_alt_names.iter().any(kind);
    if has(|s| matches!(s, rcgen::SanType::Rfc822Name(_))) {
        return Err(CsrError::Email);
    }
    if has(|s| matches!(s, rcgen::SanType::IpAddress(_))) {
        return Err(CsrError::IpAddress);
    }
    if has(|s| matches!(s, rcgen::SanType::URI(_))) {
        return Err(CsrError::Uri);
    }
    Ok(())
}

/// One identity's stored chain.
#[derive(Clone, Debug)]
pub struct Chain {
    leaf: Vec<u8>,
    intermediates: Vec<Vec<u8>>,
    valid_until: prost_types::Timestamp,
}

/// What the mock's Identity service answers with.
#[derive(Clone, Debug)]
pub enum Identities {
    /// A stored chain per identity name.
    Stored(Arc<HashMap<String, Chain>>),
    /// Certificates signed on request.
    Issuing(Arc<Issuer>),
}

impl Default for Identities {
    fn default() -> Self {
        Self::Stored(Arc::default())
    }
}

impl Identities {
    /// Reads `dir`: each subdirectory is an identity name holding `crt.pem`.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let entries = std::fs::read_dir(dir).map_err(|why| IdentityError::Dir {
            path: dir.into(),
            why,
        })?;
        let mut map = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(|why| IdentityError::Dir {
                path: dir.into(),
                why,
            })?;
            let path = entry.path();
            if !path.is_dir() {
                return Err(IdentityError::NotADirectory(path));
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            map.insert(name, load_chain(&path)?);
        }
        Ok(Self::Stored(Arc::new(map)))
    }

    /// Signs proxies' CSRs with `config`'s CA (made now when none is given).
    pub fn issuing(config: IssuerConfig) -> Result<Self, IssuerError> {
        Ok(Self::Issuing(Arc::new(Issuer::new(config)?)))
    }

    /// The identity names, sorted.
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::Stored(map) => {
                let mut v: Vec<String> = map.keys().cloned().collect();
                v.sort();
                v
            }
            Self::Issuing(issuer) => vec![issuer.identity.clone()],
        }
    }

    /// Certificates issued so far (always 0 in the stored mode).
    pub fn issued(&self) -> u64 {
        match self {
            Self::Stored(_) => 0,
            Self::Issuing(issuer) => issuer.issued.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Requests refused so far with `code` (always 0 in the stored mode).
    pub fn refused(&self, code: tonic::Code) -> u64 {
        match self {
            Self::Stored(_) => 0,
            Self::Issuing(issuer) => issuer
                .refused
                .lock()
                .expect("refusals")
                .get(&(code as i32))
                .copied()
                .unwrap_or(0),
        }
    }

    /// The issuing CA's certificate (PEM): the trust anchor a proxy of this
    /// mock needs. `None` in the stored mode.
    pub fn trust_anchor_pem(&self) -> Option<&str> {
        match self {
            Self::Stored(_) => None,
            Self::Issuing(issuer) => Some(&issuer.ca_pem),
        }
    }
}

fn load_chain(dir: &Path) -> Result<Chain, IdentityError> {
    let crt = dir.join("crt.pem");
    let pem = std::fs::read(&crt).map_err(|why| IdentityError::Read {
        path: crt.clone(),
        why,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::NoCertificate {
            path: crt.clone(),
            detail: e.to_string(),
        })?;
    let Some((leaf, rest)) = certs.split_first() else {
        return Err(IdentityError::NoCertificate {
            path: crt,
            detail: "no CERTIFICATE block".into(),
        });
    };
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| IdentityError::BadCertificate {
            path: crt.clone(),
            detail: e.to_string(),
        })?;
    let valid_until = prost_types::Timestamp {
        seconds: parsed.validity().not_after.timestamp(),
        nanos: 0,
    };
    for optional in ["key.p8", "csr.der"] {
        let p = dir.join(optional);
        if std::fs::metadata(&p).is_ok_and(|meta| meta.len() == 0) {
            return Err(IdentityError::Empty(p));
        }
    }
    Ok(Chain {
        leaf: leaf.to_vec(),
        intermediates: rest.iter().map(|c| c.to_vec()).collect(),
        valid_until,
    })
}

#[tonic::async_trait]
impl Identity for Identities {
    async fn certify(
        &self,
        req: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let map = match self {
            Self::Issuing(issuer) => return issuer.certify(req.into_inner()).map(Response::new),
            Self::Stored(map) => map,
        };
        let name = req.into_inner().identity;
        match map.get(&name) {
            Some(c) => Ok(Response::new(CertifyResponse {
                leaf_certificate: c.leaf.clone(),
                intermediate_certificates: c.intermediates.clone(),
                valid_until: Some(c.valid_until),
            })),
            None => Err(Status::not_found(format!("no identity named {name}"))),
        }
    }
}
