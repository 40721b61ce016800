//! One owner per process for what every subcommand needs, as kubert's
//! `Runtime`: the root cancellation (the first SIGINT/SIGTERM, or a critical
//! task failing), a tracker of every task it spawns (none is detached: the
//! process waits for them), and the admin server. The metrics registry is
//! the caller's while components register into it; serving the admin
//! server takes it, so nothing registers once it serves.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use prometheus_client::registry::Registry;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::admin::{self, Readiness};

/// Any error a critical task ends with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The first critical task that failed, and how.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// It returned an error.
    #[error("{task} failed")]
    Failed {
        /// The task's name.
        task: &'static str,
        /// What it returned.
        #[source]
        error: BoxError,
    },
    /// It panicked.
    #[error("{task} failed: panicked: {what}")]
    Panicked {
        /// The task's name.
        task: &'static str,
        /// The panic's message.
        what: String,
    },
}

/// The process's root: build it first, spawn through it, finish it last.
pub struct Runtime {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    readiness: Readiness,
    failure: Arc<Mutex<Option<TaskError>>>,
    /// What `POST /shutdown` cancels, when not the root.
    admin_root: Option<CancellationToken>,
}

impl Runtime {
    /// A runtime whose root is cancelled on the first SIGINT or SIGTERM (a
    /// second one exits at once).
    pub fn new() -> Self {
        Self::with_shutdown(crate::shutdown::on_signal())
    }

    /// A runtime under an existing root (tests, embedding).
    pub fn with_shutdown(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            tracker: TaskTracker::new(),
            readiness: Readiness::default(),
            failure: Arc::default(),
            admin_root: None,
        }
    }

    /// The root cancellation: every task drains when it fires.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The tracker of every task spawned through this runtime: give it to
    /// components that spawn their own (the client), so that
    /// [`Runtime::finish`] waits for theirs too.
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// `/ready` of the admin server.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Spawns a task the process waits for at [`Runtime::finish`].
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Spawns a task whose failure (an error, or a panic) ends the process:
    /// it is logged, kept for [`Runtime::finish`], and cancels the root.
    pub fn spawn_critical<F, E>(&self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        use futures::FutureExt;
        let (shutdown, failure) = (self.shutdown.clone(), self.failure.clone());
        self.tracker.spawn(async move {
            let failed = match std::panic::AssertUnwindSafe(task).catch_unwind().await {
                Ok(Ok(())) => return,
                Ok(Err(error)) => TaskError::Failed {
                    task: name,
                    error: error.into(),
                },
                Err(panic) => TaskError::Panicked {
                    task: name,
                    what: panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".to_string()),
                },
            };
            // The error and every cause, as `main` prints it.
            let shown =
                std::iter::successors(Some(&failed as &dyn std::error::Error), |e| e.source())
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(": ");
            tracing::error!(task = name, error = %shown, "critical task failed; shutting down");
            failure.lock().expect("failure lock").get_or_insert(failed);
            shutdown.cancel();
        });
    }

    /// Binds and serves the admin server (the metrics of `registry`,
    /// `/live`, `/ready`, `POST /shutdown` cancelling the root, `POST
    /// /abort`) until the root is cancelled; a failure to serve is
    /// critical. Returns the bound address.
    pub async fn serve_admin(
        &mut self,
        registry: Registry,
        addr: SocketAddr,
        allow_remote_shutdown: bool,
    ) -> Result<SocketAddr, admin::BindError> {
        self.serve_admin_with(registry, addr, allow_remote_shutdown, axum::Router::new())
            .await
    }

    /// [`Runtime::serve_admin`] with more routes (the mock's control API).
    pub async fn serve_admin_with(
        &mut self,
        registry: Registry,
        addr: SocketAddr,
        allow_remote_shutdown: bool,
        routes: axum::Router,
    ) -> Result<SocketAddr, admin::BindError> {
        let control = admin::Control {
            shutdown: self
                .admin_root
                .clone()
                .unwrap_or_else(|| self.shutdown.clone()),
            allow_remote: allow_remote_shutdown,
        };
        let router =
            admin::router(Arc::new(registry), self.readiness.clone(), control).merge(routes);
        let listener = admin::bind(addr).await?;
        let local = listener.local_addr().map_err(|why| admin::BindError {
            flag: "--admin-addr",
            addr,
            why,
        })?;
        let shutdown = self.shutdown.clone();
        self.spawn_critical("admin server", async move {
            admin::serve(listener, router, shutdown).await
        });
        tracing::info!(addr = %local, "admin server listening");
        Ok(local)
    }

    /// Makes `POST /shutdown` cancel `root` (a parent of this runtime's
    /// root, say) instead of this runtime's root.
    pub fn set_admin_root(&mut self, root: CancellationToken) {
        self.admin_root = Some(root);
    }

    /// Whether a critical task has failed (the root is then cancelled).
    pub fn failed(&self) -> bool {
        self.failure.lock().expect("failure lock").is_some()
    }

    /// Cancels the root, waits for every task, and returns the first
    /// critical failure, if any.
    pub async fn finish(self) -> Result<(), TaskError> {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        match self.failure.lock().expect("failure lock").take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_failed_critical_task_cancels_the_root_and_is_reported() {
        let rt = Runtime::with_shutdown(CancellationToken::new());
        let root = rt.shutdown();
        let drained = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = drained.clone();
        let r = root.clone();
        rt.spawn(async move {
            r.cancelled().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            d.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        rt.spawn_critical("watcher", async { anyhow::bail!("boom") });
        tokio::time::timeout(Duration::from_secs(10), root.cancelled())
            .await
            .expect("the failure cancelled the root");
        let err = anyhow::Error::from(rt.finish().await.unwrap_err());
        assert_eq!(format!("{err:#}"), "watcher failed: boom");
        assert!(
            drained.load(std::sync::atomic::Ordering::SeqCst),
            "finish waited for every task"
        );
    }

    #[tokio::test]
    async fn a_panicking_critical_task_is_a_failure() {
        let rt = Runtime::with_shutdown(CancellationToken::new());
        let root = rt.shutdown();
        rt.spawn_critical::<_, std::io::Error>("churn", async { panic!("index out of bounds") });
        tokio::time::timeout(Duration::from_secs(10), root.cancelled())
            .await
            .expect("the panic cancelled the root");
        assert!(rt.failed());
        let err = anyhow::Error::from(rt.finish().await.unwrap_err());
        assert_eq!(
            format!("{err:#}"),
            "churn failed: panicked: index out of bounds"
        );
    }

    #[tokio::test]
    async fn finish_without_failure_is_ok_and_waits() {
        let rt = Runtime::with_shutdown(CancellationToken::new());
        let root = rt.shutdown();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        rt.spawn_critical("worker", async move {
            root.cancelled().await;
            d.store(true, std::sync::atomic::Ordering::SeqCst);
            anyhow::Ok(())
        });
        rt.finish().await.unwrap();
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }
}
