//! Stream errors told to the user: a warning per kind of error, at most one
//! line per kind every [`EVERY`], saying the cause and how many more came
//! since the last line. A refused connection, an HTTP/1 server or an outage
//! of the destination is otherwise only a counter (140,000 errors were seen
//! with nothing logged).

use std::time::{Duration, Instant};

use tonic::Status;

use crate::logging::Throttle;

/// The least time between two lines of one kind.
pub const EVERY: Duration = Duration::from_secs(10);

/// The kinds of error seen, each logged at most once every [`EVERY`].
#[derive(Debug)]
pub struct ErrorLog(Throttle);

impl Default for ErrorLog {
    fn default() -> Self {
        Self(Throttle::new(EVERY))
    }
}

impl ErrorLog {
    /// Notes a stream's error and logs it at warn when due, with its cause.
    pub fn note(&self, what: &str, target: &str, reason: &str, status: &Status) {
        if let Some(skipped) = self.0.due(reason, Instant::now()) {
            tracing::warn!(
                %target,
                %reason,
                cause = %cause(status),
                more_since_last_line = skipped,
                "{what} failed; retrying with backoff (one line per reason every 10s)"
            );
        }
    }
}

/// What went wrong, in words: the innermost error under a transport
/// failure (`Connection refused`, an HTTP/2 protocol error from a server
/// that speaks HTTP/1), else the status's code and message.
pub fn cause(status: &Status) -> String {
    let mut source = std::error::Error::source(status);
    let mut innermost = None;
    while let Some(e) = source {
        innermost = Some(e);
        source = e.source();
    }
    match innermost {
        Some(e) => e.to_string(),
        None if status.message().is_empty() => format!("{:?}", status.code()),
        None => format!("{:?}: {}", status.code(), status.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_interval_with_what_was_skipped() {
        let log = Throttle::new(EVERY);
        let t0 = Instant::now();
        assert_eq!(log.due("transport", t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(log.due("transport", t0 + Duration::from_millis(i)), None);
        }
        // Another reason has its own line.
        assert_eq!(log.due("Unavailable", t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(log.due("transport", t0 + EVERY), Some(1000));
        assert_eq!(
            log.due("transport", t0 + EVERY + Duration::from_secs(1)),
            None
        );
        assert_eq!(log.due("transport", t0 + EVERY * 3), Some(1));
    }

    #[test]
    fn the_cause_is_the_innermost_error_or_the_status() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let status = Status::from_error(Box::new(io));
        assert_eq!(cause(&status), "Connection refused");
        assert_eq!(
            cause(&Status::unavailable("destination restarting")),
            "Unavailable: destination restarting"
        );
        assert_eq!(cause(&Status::unavailable("")), "Unavailable");
    }
}
