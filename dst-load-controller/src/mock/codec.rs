//! `Get` on the wire, below tonic's codec: every stream of a destination
//! sends the same change, so the mock encodes each change's message once,
//! already framed for gRPC, and every stream's response body yields that one
//! refcounted buffer (tonic's codec would copy it into each stream's own
//! encode buffer, and the generated server would re-encode the message).

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{BufMut, Bytes};
use futures::Stream;
use http_body::Frame;
use http_body_util::BodyExt;
use linkerd2_proxy_api::destination::{GetDestination, Update, update};
use prost::Message;
use tonic::Status;

/// The gRPC message prefix: the compression flag and the length.
const PREFIX: usize = 5;

/// An `Update`, protobuf-encoded with its gRPC prefix, and the addresses it
/// carries (for the mock's metrics).
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// The prefix and the encoded message: one gRPC message on the wire.
    pub framed: Bytes,
    /// Addresses added or removed by it.
    pub endpoints: u64,
}

impl Encoded {
    /// Encodes `u`.
    pub fn new(u: &Update) -> Self {
        let endpoints = match &u.update {
            Some(update::Update::Add(s)) => s.addrs.len() as u64,
            Some(update::Update::Remove(s)) => s.addrs.len() as u64,
            _ => 0,
        };
        Self::of(u, endpoints)
    }

    /// Encodes any message (a `GetProfile` stream's profiles) that carries
    /// `endpoints` addresses for the metrics.
    pub fn of(u: &impl Message, endpoints: u64) -> Self {
        let len = u.encoded_len();
        let mut framed = Vec::with_capacity(PREFIX + len);
        framed.put_u8(0);
        framed.put_u32(u32::try_from(len).expect("an update under 4 GiB"));
        u.encode(&mut framed).expect("the buffer has the room");
        Self {
            framed: framed.into(),
            endpoints,
        }
    }

    /// The encoded message, without its prefix.
    #[cfg(test)]
    pub fn message(&self) -> Bytes {
        self.framed.slice(PREFIX..)
    }
}

/// The largest request read (tonic's default limit of a decoded message).
const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// Reads a `Get` request body: one uncompressed gRPC message.
pub async fn read_request<B>(body: B) -> Result<GetDestination, Status>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bytes = http_body_util::Limited::new(body, MAX_REQUEST)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                // What gRPC servers answer a message past their limit.
                Status::resource_exhausted(format!("a request larger than {MAX_REQUEST} bytes"))
            } else {
                Status::internal(format!("cannot read the request: {e}"))
            }
        })?
        .to_bytes();
    let Some((prefix, message)) = bytes.split_first_chunk::<PREFIX>() else {
        return Err(Status::invalid_argument(
            "a Get request is one gRPC message",
        ));
    };
    if prefix[0] != 0 {
        return Err(Status::unimplemented(
            "the mock takes uncompressed requests only",
        ));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if message.len() != len {
        return Err(Status::invalid_argument(
            "a Get request is exactly one gRPC message",
        ));
    }
    GetDestination::decode(bytes.slice(PREFIX..))
        .map_err(|e| Status::invalid_argument(format!("cannot decode a GetDestination: {e}")))
}

/// `name` as an error message may echo it: at most [`ECHOED`] bytes of it,
/// and its length when cut. (A 4 MB path was echoed twice into a 5 MB
/// trailer.)
pub fn echoed(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() <= ECHOED {
        return name.into();
    }
    let mut end = ECHOED;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &name[..end], name.len()).into()
}

/// The most bytes of a name an error message echoes: any DNS name and port.
const ECHOED: usize = 260;

/// A `Get` response body: each queued message's framed bytes as they come,
/// then the trailers with OK when the stream ends (a stream ended for being
/// too slow ends so too, as the controller ends it).
pub struct GetBody<S> {
    updates: S,
    done: bool,
}

impl<S> GetBody<S> {
    /// The body of `updates`.
    pub fn new(updates: S) -> Self {
        Self {
            updates,
            done: false,
        }
    }
}

impl<S> http_body::Body for GetBody<S>
where
    S: Stream<Item = Encoded> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(u) = ready!(Pin::new(&mut self.updates).poll_next(cx)) {
            return Poll::Ready(Some(Ok(Frame::data(u.framed))));
        }
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        Poll::Ready(Some(match Status::ok("").add_header(&mut trailers) {
            Ok(()) => Ok(Frame::trailers(trailers)),
            Err(e) => Err(e),
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::destination::AddrSet;

    fn remove_two() -> Update {
        let addrs = ["10.0.0.1:80", "10.0.0.2:80"]
            .iter()
            .map(|a| a.parse::<std::net::SocketAddr>().unwrap().into())
            .collect();
        Update {
            update: Some(update::Update::Remove(AddrSet { addrs })),
        }
    }

    #[test]
    fn encoded_is_one_framed_grpc_message_of_the_update() {
        let u = remove_two();
        let e = Encoded::new(&u);
        assert_eq!(e.endpoints, 2);
        assert_eq!(e.framed[0], 0);
        let len = u32::from_be_bytes(e.framed[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, e.framed.len() - 5);
        assert_eq!(Update::decode(e.message()).unwrap(), u);
    }

    #[tokio::test]
    async fn a_request_is_exactly_one_uncompressed_message() {
        let get = GetDestination {
            path: "web.ns.svc.cluster.local:80".into(),
            ..Default::default()
        };
        let mut framed = vec![0];
        framed.extend((get.encoded_len() as u32).to_be_bytes());
        get.encode(&mut framed).unwrap();
        let body = |b: Vec<u8>| http_body_util::Full::new(Bytes::from(b));
        assert_eq!(read_request(body(framed.clone())).await.unwrap(), get);
        let mut compressed = framed.clone();
        compressed[0] = 1;
        let code = |b| async move { read_request(body(b)).await.unwrap_err().code() };
        assert_eq!(code(compressed).await, tonic::Code::Unimplemented);
        let mut two = framed.clone();
        two.extend(&framed);
        assert_eq!(code(two).await, tonic::Code::InvalidArgument);
        assert_eq!(
            code(framed[..3].to_vec()).await,
            tonic::Code::InvalidArgument
        );
    }

    #[tokio::test]
    async fn the_body_yields_the_shared_bytes_then_ok_in_trailers() {
        let e = Encoded::new(&remove_two());
        let mut body = GetBody::new(futures::stream::iter(vec![e.clone()]));
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        // The same buffer, not a copy.
        assert_eq!(data.as_ptr(), e.framed.as_ptr());
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        assert!(http_body::Body::is_end_stream(&body));
        assert!(body.frame().await.is_none());
    }
}
