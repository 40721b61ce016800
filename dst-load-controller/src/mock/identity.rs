//! The mock Identity service: `Certify` answers with a stored certificate
//! chain per identity name, read from `<dir>/<identity-name>/crt.pem`
//! (optionally with `key.p8` and `csr.der` beside it).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use linkerd2_proxy_api::identity::{CertifyRequest, CertifyResponse, identity_server::Identity};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tonic::{Request, Response, Status};

/// A malformed identities directory.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The directory cannot be read.
    #[error(
        "cannot read identities directory {path}: {source}; expected a directory with one subdirectory per identity name"
    )]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Something other than a subdirectory sits in the directory.
    #[error(
        "{0} is not a directory; the identities directory holds one subdirectory per identity name, each with crt.pem"
    )]
    NotADirectory(PathBuf),
    /// A certificate file is missing or unreadable.
    #[error(
        "cannot read {path}: {source}; each identity directory needs a PEM certificate chain in crt.pem"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
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

/// One identity's stored chain.
#[derive(Clone, Debug)]
struct Chain {
    leaf: Vec<u8>,
    intermediates: Vec<Vec<u8>>,
    valid_until: prost_types::Timestamp,
}

/// Every identity the mock can certify.
#[derive(Clone, Debug, Default)]
pub struct Identities(Arc<HashMap<String, Chain>>);

impl Identities {
    /// Reads `dir`: each subdirectory is an identity name holding `crt.pem`.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let entries = std::fs::read_dir(dir).map_err(|source| IdentityError::Dir {
            path: dir.into(),
            source,
        })?;
        let mut map = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(|source| IdentityError::Dir {
                path: dir.into(),
                source,
            })?;
            let path = entry.path();
            if !path.is_dir() {
                return Err(IdentityError::NotADirectory(path));
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            map.insert(name, load_chain(&path)?);
        }
        Ok(Self(Arc::new(map)))
    }

    /// The identity names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.keys().cloned().collect();
        v.sort();
        v
    }
}

fn load_chain(dir: &Path) -> Result<Chain, IdentityError> {
    let crt = dir.join("crt.pem");
    let pem = std::fs::read(&crt).map_err(|source| IdentityError::Read {
        path: crt.clone(),
        source,
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
        let name = req.into_inner().identity;
        match self.0.get(&name) {
            Some(c) => Ok(Response::new(CertifyResponse {
                leaf_certificate: c.leaf.clone(),
                intermediate_certificates: c.intermediates.clone(),
                valid_until: Some(c.valid_until),
            })),
            None => Err(Status::not_found(format!("no identity named {name}"))),
        }
    }
}
