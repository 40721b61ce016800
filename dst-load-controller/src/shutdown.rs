//! One shutdown signal for every task: the first SIGINT/SIGTERM asks every task
//! to drain, the second aborts the process.

use tokio_util::sync::CancellationToken;

/// Exit status used when a second signal aborts the process (128 + SIGINT).
pub const ABORT_EXIT_CODE: i32 = 130;

/// Returns a token that is cancelled on the first SIGINT or SIGTERM. A second
/// signal exits the process at once.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let drain = token.clone();
    tokio::spawn(async move {
        if wait_signal().await.is_err() {
            return;
        }
        tracing::info!("shutdown requested; draining (signal again to abort)");
        drain.cancel();
        if wait_signal().await.is_ok() {
            tracing::warn!("second signal; aborting");
            std::process::exit(ABORT_EXIT_CODE);
        }
    });
    token
}

async fn wait_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

/// A token cancelled when `parent` is or when `duration` (if any) elapses:
/// how `--duration` ends a run the same way a signal does.
pub fn with_deadline(
    parent: &CancellationToken,
    duration: Option<std::time::Duration>,
) -> CancellationToken {
    let child = parent.child_token();
    if let Some(duration) = duration {
        let timer = child.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(duration) => {
                    tracing::info!(?duration, "--duration elapsed");
                    timer.cancel();
                }
                _ = timer.cancelled() => {}
            }
        });
    }
    child
}
