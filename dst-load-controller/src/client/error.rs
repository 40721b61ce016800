//! Why a client could not run.

/// Why a client could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes client for one of its flags could not be made.
    #[error("cannot build a Kubernetes client for {purpose}")]
    Kube {
        /// The flag (or use) it was for.
        purpose: &'static str,
        /// Why not.
        #[source]
        source: crate::kube_api::ConnectError,
    },
    /// `--target-pods`' Servers could not be listed.
    #[error("cannot list Servers for --target-pods' ground truth")]
    Servers(#[source] kube::Error),
}

impl Error {
    /// The error of a Kubernetes client for `purpose` that could not be made.
    pub(super) fn kube(
        purpose: &'static str,
    ) -> impl FnOnce(crate::kube_api::ConnectError) -> Self {
        move |source| Self::Kube { purpose, source }
    }
}
