//! Connections that cannot hang or spin: a deadline for a connection's first
//! bytes (the client waits for the server's HTTP/2 SETTINGS, the mock for
//! the client's preface), and the mock's accept loop, which caps its
//! connections and backs off when accepting fails (at the descriptor limit
//! tonic's own loop retries at once, spinning a core, and says nothing).

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::Semaphore,
    time::Sleep,
};
use tokio_util::sync::CancellationToken;

use crate::logging::Throttle;

pub mod coalesce;

pub use coalesce::Coalesced;

/// An I/O whose reads fail with [`io::ErrorKind::TimedOut`] if nothing has
/// been read when its deadline passes; after the first bytes it is `io`.
pub struct FirstBytes<IO> {
    io: IO,
    deadline: Option<Pin<Box<Sleep>>>,
    /// The error's message, naming what was awaited.
    what: &'static str,
}

impl<IO> FirstBytes<IO> {
    /// `io`, with `within` for its first bytes; past it reads fail with
    /// `what` as the error's message.
    pub fn new(io: IO, within: Duration, what: &'static str) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            what,
        }
    }

    /// The I/O inside.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstBytes<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.deadline = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let what = self.what;
                match self.deadline.as_mut() {
                    Some(deadline) => {
                        ready!(deadline.as_mut().poll(cx));
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
                    }
                    None => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstBytes<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// How the mock accepts connections.
#[derive(Copy, Clone, Debug)]
pub struct AcceptLimits {
    /// Connections open at once; past it the next waits in the backlog.
    pub max_connections: usize,
    /// How long a new connection may take to send its first bytes (the
    /// HTTP/2 preface) before it is closed.
    pub handshake: Duration,
}

/// The message of a connection closed for saying nothing in time.
const NO_PREFACE: &str = "no HTTP/2 preface from the client in time";

/// The longest pause after a failed accept.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// An accepted connection, holding its place under the cap until it closes;
/// its writes leave in one write per round of work ([`Coalesced`]).
pub type Accepted = FirstBytes<Coalesced<tokio::net::tcp::OwnedReadHalf>>;

/// The connections `listener` accepts, within `limits`, until `stop`. A
/// failed accept (the descriptor limit, above all) is logged at warn, at
/// most once every 10 s, and retried after a pause that doubles up to a
/// second; reaching the cap is logged the same way. Never yields an error.
pub fn incoming(
    listener: TcpListener,
    limits: AcceptLimits,
    stop: CancellationToken,
) -> impl Stream<Item = io::Result<Accepted>> {
    struct State {
        listener: TcpListener,
        limits: AcceptLimits,
        open: Arc<Semaphore>,
        throttle: Throttle,
        backoff: Duration,
        stop: CancellationToken,
    }
    let state = State {
        listener,
        limits,
        open: Arc::new(Semaphore::new(limits.max_connections)),
        throttle: Throttle::new(Duration::from_secs(10)),
        backoff: Duration::ZERO,
        stop,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            let permit = match s.open.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if let Some(held) = s.throttle.due("cap", Instant::now()) {
                        tracing::warn!(
                            max_connections = s.limits.max_connections,
                            more_since_last_line = held,
                            "at the connection cap: new connections wait until one closes (--max-connections)"
                        );
                    }
                    tokio::select! {
                        p = s.open.clone().acquire_owned() => p.expect("never closed"),
                        _ = s.stop.cancelled() => return None,
                    }
                }
            };
            let accepted = tokio::select! {
                a = s.listener.accept() => a,
                _ = s.stop.cancelled() => return None,
            };
            match accepted {
                Ok((tcp, _)) => {
                    s.backoff = Duration::ZERO;
                    // Updates are small and latency-sensitive: no Nagle.
                    let _ = tcp.set_nodelay(true);
                    // The place is held until the socket closes: its writer's
                    // end, which may come after the connection's.
                    let io = FirstBytes::new(
                        Coalesced::tcp(tcp, permit),
                        s.limits.handshake,
                        NO_PREFACE,
                    );
                    return Some((Ok(io), s));
                }
                Err(error) => {
                    drop(permit);
                    s.backoff = (s.backoff * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
                    if let Some(held) = s.throttle.due("accept", Instant::now()) {
                        tracing::warn!(
                            %error,
                            pause = ?s.backoff,
                            more_since_last_line = held,
                            "cannot accept a connection; pausing (raise `ulimit -n` if the descriptors ran out)"
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(s.backoff) => {}
                        _ = s.stop.cancelled() => return None,
                    }
                }
            }
        }
    })
}

impl tonic::transport::server::Connected for Accepted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.get_ref().connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silence_past_the_deadline_fails_and_bytes_in_time_lift_it() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut io = FirstBytes::new(ours, Duration::from_secs(10), "nothing in time");
        let mut buf = [0u8; 8];
        let start = tokio::time::Instant::now();
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "nothing in time");
        // Never early.
        assert!(start.elapsed() >= Duration::from_secs(10));

        let (ours, mut theirs2) = tokio::io::duplex(64);
        let mut io = FirstBytes::new(ours, Duration::from_secs(10), "nothing in time");
        theirs2.write_all(b"hi").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 2);
        // Past the deadline, silence is only waiting now.
        tokio::time::advance(Duration::from_secs(60)).await;
        let read = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(read.is_err(), "a read after the first bytes waits");
        theirs.shutdown().await.unwrap();
    }
}
