//! Why a scenario run, or a red-line search, stopped without an outcome.

/// Why a scenario run, or a red-line search, stopped without an outcome.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A critical task (the mock, churn, the client, the admin server)
    /// failed: the first such failure.
    #[error(transparent)]
    Task(#[from] crate::runtime::TaskError),
    /// The admin server could not bind its address (a usage error: `run`
    /// exits 2).
    #[error("the admin server did not start")]
    Admin(#[from] crate::admin::BindError),
    /// The mock could not take a loopback address.
    #[error("the mock cannot listen on loopback")]
    MockListen(#[source] std::io::Error),
    /// A scenario's overrides (or a red-line step's load) make no scenario.
    #[error(transparent)]
    Scenario(#[from] crate::scenario::Invalid),
    /// A service's authority is not one.
    #[error(transparent)]
    Authority(#[from] crate::target::TargetError),
    /// The destination's address is not one.
    #[error(transparent)]
    Destination(#[from] crate::client::AddrError),
    /// No Kubernetes client.
    #[error(transparent)]
    Connect(#[from] crate::kube_api::ConnectError),
    /// Churn could not start.
    #[error(transparent)]
    Churn(#[from] crate::churn::Error),
    /// The client could not start.
    #[error(transparent)]
    Client(#[from] crate::client::Error),
    /// The cleanup after a cluster run failed.
    #[error(transparent)]
    Cleanup(#[from] crate::cleanup::CleanupError),
    /// Stopped (a signal, `POST /shutdown`, or a failure elsewhere) before
    /// the scenario had begun.
    #[error("stopped before {0}")]
    Stopped(&'static str),
    /// A red-line step's outcome could not be recorded as JSON.
    #[error("cannot record a step's outcome")]
    Record(#[from] serde_json::Error),
    /// The client ended without its summary (the runtime holds the cause).
    #[error("the client ended without a summary")]
    NoSummary,
    /// The service mirror did not make every mirror in time.
    #[error(
        "{missing} of {mirrors} services were not mirrored into the source's namespace {namespace} within {}s (first: {first}): is the link up, its service mirror running, and --ground-truth-link the link's name?",
        waited.as_secs()
    )]
    Unmirrored {
        /// Services without their mirror.
        missing: usize,
        /// Services that should have one.
        mirrors: usize,
        /// The source's namespace.
        namespace: String,
        /// How long it waited.
        waited: std::time::Duration,
        /// The first without.
        first: String,
    },
}
