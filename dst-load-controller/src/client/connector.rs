//! The client's TCP connections, each given a deadline for the server's
//! first bytes. An HTTP/2 server answers a new connection with its SETTINGS
//! at once; a server that accepts the connection and says nothing (hung, or
//! a port that is not the destination's) would otherwise hold every stream
//! on the connection open and silent, counted as active with no error. Past
//! the deadline the connection fails with [`HANDSHAKE_TIMEOUT`], its streams
//! count an error of reason `timeout` and re-open with backoff, as after
//! any transport error.

use std::{io, pin::Pin, time::Duration};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::net::FirstBytes;

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
            Ok(TokioIo::new(FirstBytes::new(
                tcp,
                handshake,
                HANDSHAKE_TIMEOUT,
            )))
        }) as Connecting
    })
}
