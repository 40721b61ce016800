//! The client's TCP connections, each given a deadline for the server's
//! first bytes. An HTTP/2 server answers a new connection with its SETTINGS
//! at once; a server that accepts the connection and says nothing (hung, or
//! a port that is not the destination's) would otherwise hold every stream
//! on the connection open and silent, counted as active with no error. Past
//! the deadline the connection fails with [`HANDSHAKE_TIMEOUT`], its streams
//! count an error of reason `timeout` and re-open with backoff, as after
//! any transport error.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Sleep,
};

/// The message of a connection whose server sent nothing in time.
pub const HANDSHAKE_TIMEOUT: &str =
    "no HTTP/2 handshake from the server within --handshake-timeout";

/// A connection as hyper takes it.
pub type Conn = TokioIo<FirstBytes<TcpStream>>;

/// A connection being opened.
pub type Connecting = Pin<Box<dyn std::future::Future<Output = io::Result<Conn>> + Send>>;

/// Opens TCP connections to `uri`'s host and port with no delay, each
/// failing reads once `handshake` passes with nothing read.
pub fn connector(
    handshake: Duration,
) -> impl tower::Service<http::Uri, Response = Conn, Error = io::Error, Future = Connecting>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: http::Uri| {
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{uri} has no host"))
            })?;
            // An IPv6 literal comes bracketed in a URI.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(80);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(FirstBytes::new(tcp, handshake)))
        }) as Connecting
    })
}

/// An I/O whose reads fail with [`io::ErrorKind::TimedOut`] if nothing has
/// been read when its deadline passes; after the first bytes it is `io`.
pub struct FirstBytes<IO> {
    io: IO,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<IO> FirstBytes<IO> {
    /// `io`, with `within` for its first bytes.
    pub fn new(io: IO, within: Duration) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
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
            Poll::Pending => match self.deadline.as_mut() {
                Some(deadline) => {
                    ready!(deadline.as_mut().poll(cx));
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        HANDSHAKE_TIMEOUT,
                    )))
                }
                None => Poll::Pending,
            },
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silence_past_the_deadline_fails_and_bytes_in_time_lift_it() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut io = FirstBytes::new(ours, Duration::from_secs(10));
        let mut buf = [0u8; 8];
        let start = tokio::time::Instant::now();
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), HANDSHAKE_TIMEOUT);
        // Never early.
        assert!(start.elapsed() >= Duration::from_secs(10));

        let (ours, mut theirs2) = tokio::io::duplex(64);
        let mut io = FirstBytes::new(ours, Duration::from_secs(10));
        theirs2.write_all(b"hi").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 2);
        // Past the deadline, silence is only waiting now.
        tokio::time::advance(Duration::from_secs(60)).await;
        let read = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(read.is_err(), "a read after the first bytes waits");
        theirs.shutdown().await.unwrap();
    }
}
