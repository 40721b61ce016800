//! The client's end of `Destination.Get`: every message is decoded once, into
//! what the client uses: its kind and its addresses. Metric labels, TLS
//! identities and protocol hints are skipped on the wire instead of being
//! decoded into maps and strings and dropped.
//!
//! The lean messages below are a subset of `destination.proto` with the same
//! field tags; protobuf skips the fields a message does not declare.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use linkerd2_proxy_api::{
    destination::{GetDestination, NoEndpoints, WeightedAddr},
    net::TcpAddress,
};
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType, check_wire_type, decode_key, decode_varint, skip_field},
};
use tonic::{Code, Status, client::GrpcService, transport::Channel};

/// The kind of an update, as a metric label.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum UpdateKind {
    /// `add`.
    Add,
    /// `remove`.
    Remove,
    /// `no_endpoints`.
    NoEndpoints,
    /// An `Update` with no variant set.
    #[default]
    Empty,
}

impl UpdateKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
            Self::NoEndpoints => "no_endpoints",
            Self::Empty => "empty",
        }
    }

    /// Every kind, in label order.
    pub const ALL: [UpdateKind; 4] = [Self::Add, Self::Remove, Self::NoEndpoints, Self::Empty];
}

/// One `Get` message as the client sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Which update it is.
    pub kind: UpdateKind,
    /// The addresses an `add` adds or a `remove` removes (none otherwise).
    pub addrs: Vec<SocketAddr>,
    /// Addresses in the message that could not be read (skipped).
    pub invalid_addrs: usize,
    /// `no_endpoints`' `exists` (false otherwise).
    pub exists: bool,
}

impl Delta {
    /// An `add` of `addrs`.
    pub fn add(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self::with(UpdateKind::Add, addrs)
    }

    /// A `remove` of `addrs`.
    pub fn remove(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self::with(UpdateKind::Remove, addrs)
    }

    /// A `no_endpoints`.
    pub fn no_endpoints(exists: bool) -> Self {
        Self {
            kind: UpdateKind::NoEndpoints,
            exists,
            ..Default::default()
        }
    }

    fn with(kind: UpdateKind, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            kind,
            addrs: addrs.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Decodes one message.
    pub fn decode(buf: impl Buf) -> Result<Self, prost::DecodeError> {
        Ok(LeanUpdate::decode(buf)?.into())
    }
}

/// `Update`, with its three kinds.
#[derive(Clone, PartialEq, prost::Message)]
struct LeanUpdate {
    #[prost(oneof = "LeanKind", tags = "1, 2, 3")]
    update: Option<LeanKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum LeanKind {
    #[prost(message, tag = "1")]
    Add(AddrList<true>),
    #[prost(message, tag = "2")]
    Remove(AddrList<false>),
    #[prost(message, tag = "3")]
    NoEndpoints(NoEndpoints),
}

/// The addresses of an `add` (`WeightedAddrSet`, `WEIGHTED`) or of a
/// `remove` (`AddrSet`): field 1 of either, read straight into socket
/// addresses as it is decoded (a `WeightedAddr` with its address in field 1,
/// or a bare `TcpAddress`); every other field is skipped.
#[derive(Clone, Debug, Default, PartialEq)]
struct AddrList<const WEIGHTED: bool> {
    addrs: Vec<SocketAddr>,
    invalid: usize,
}

impl<const WEIGHTED: bool> prost::Message for AddrList<WEIGHTED> {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        for a in &self.addrs {
            if WEIGHTED {
                prost::encoding::message::encode(1, &weighted(*a), buf);
            } else {
                prost::encoding::message::encode(1, &TcpAddress::from(*a), buf);
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag != 1 {
            return prost::encoding::skip_field(wire_type, tag, buf, ctx);
        }
        check_wire_type(WireType::LengthDelimited, wire_type)?;
        if self.addrs.is_empty() {
            // The rest of the message is this list: room for about as many
            // addresses as it can hold (an address with the controller's
            // labels and identity takes some 200 bytes, a bare one 14).
            self.addrs
                .reserve(buf.remaining() / if WEIGHTED { 64 } else { 16 });
        }
        // A `WeightedAddr` holds its `TcpAddress` in field 1.
        let addr = if WEIGHTED {
            let mut addr = None;
            nested(buf, |tag, wire, buf| match (tag, wire) {
                (1, WireType::LengthDelimited) => {
                    addr = tcp_address(buf)?;
                    Ok(())
                }
                _ => prost::encoding::skip_field(wire, tag, buf, ctx.clone()),
            })?;
            addr
        } else {
            tcp_address(buf)?
        };
        match addr {
            Some(a) => self.addrs.push(a),
            None => self.invalid += 1,
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.addrs
            .iter()
            .map(|a| {
                if WEIGHTED {
                    prost::encoding::message::encoded_len(1, &weighted(*a))
                } else {
                    prost::encoding::message::encoded_len(1, &TcpAddress::from(*a))
                }
            })
            .sum()
    }

    fn clear(&mut self) {
        self.addrs.clear();
        self.invalid = 0;
    }
}

fn weighted(addr: SocketAddr) -> WeightedAddr {
    WeightedAddr {
        addr: Some(addr.into()),
        ..Default::default()
    }
}

/// Reads one length-delimited message's fields with `field`, which must
/// consume each field it is given.
fn nested<B: Buf>(
    buf: &mut B,
    mut field: impl FnMut(u32, WireType, &mut B) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = decode_varint(buf)?;
    let remaining = buf.remaining();
    if len > remaining as u64 {
        return Err(malformed("buffer underflow"));
    }
    let end = remaining - len as usize;
    while buf.remaining() > end {
        let (tag, wire) = decode_key(buf)?;
        field(tag, wire, buf)?;
    }
    if buf.remaining() != end {
        return Err(malformed("delimited length exceeded"));
    }
    Ok(())
}

/// An error of our own reading. prost 0.14 has no other public constructor
/// for one (`new` is deprecated, to be removed in its next breaking release;
/// this crate's version is pinned by Cargo.lock).
#[allow(deprecated)]
fn malformed(what: &'static str) -> DecodeError {
    DecodeError::new(what)
}

/// A `TcpAddress` (`ip` = 1, `port` = 2) read into a socket address; `None`
/// without an IP (the port is truncated to 16 bits, as the proxy API's own
/// conversion does). An `IpAddress` is `ipv4` = 1 (fixed32) or `ipv6` = 2,
/// a message of `first` = 1 and `last` = 2 (fixed64 each).
fn tcp_address(buf: &mut impl Buf) -> Result<Option<SocketAddr>, DecodeError> {
    let ctx = DecodeContext::default();
    let (mut ip, mut port) = (None, 0u64);
    nested(buf, |tag, wire, buf| match (tag, wire) {
        (1, WireType::LengthDelimited) => nested(buf, |tag, wire, buf| match (tag, wire) {
            (1, WireType::ThirtyTwoBit) if buf.remaining() >= 4 => {
                ip = Some(IpAddr::from(Ipv4Addr::from_bits(buf.get_u32_le())));
                Ok(())
            }
            (2, WireType::LengthDelimited) => {
                let (mut first, mut last) = (0u64, 0u64);
                nested(buf, |tag, wire, buf| match (tag, wire) {
                    (1 | 2, WireType::SixtyFourBit) if buf.remaining() >= 8 => {
                        *if tag == 1 { &mut first } else { &mut last } = buf.get_u64_le();
                        Ok(())
                    }
                    _ => skip_field(wire, tag, buf, ctx.clone()),
                })?;
                let bits = (u128::from(first) << 64) | u128::from(last);
                ip = Some(IpAddr::from(Ipv6Addr::from_bits(bits)));
                Ok(())
            }
            _ => skip_field(wire, tag, buf, ctx.clone()),
        }),
        (2, WireType::Varint) => {
            port = decode_varint(buf)?;
            Ok(())
        }
        _ => skip_field(wire, tag, buf, ctx.clone()),
    })?;
    Ok(ip.map(|ip| SocketAddr::new(ip, port as u16)))
}

impl From<LeanUpdate> for Delta {
    fn from(u: LeanUpdate) -> Self {
        let with = |kind, list: Vec<SocketAddr>, invalid_addrs| Delta {
            kind,
            addrs: list,
            invalid_addrs,
            exists: false,
        };
        match u.update {
            Some(LeanKind::Add(l)) => with(UpdateKind::Add, l.addrs, l.invalid),
            Some(LeanKind::Remove(l)) => with(UpdateKind::Remove, l.addrs, l.invalid),
            Some(LeanKind::NoEndpoints(n)) => Delta::no_endpoints(n.exists),
            None => Delta::default(),
        }
    }
}

#[cfg(test)]
impl From<&linkerd2_proxy_api::destination::Update> for Delta {
    /// The delta of a full `Update`, for tests.
    fn from(u: &linkerd2_proxy_api::destination::Update) -> Self {
        Delta::decode(u.encode_to_vec().as_slice()).expect("an encoded Update decodes")
    }
}

/// The largest message a stream accepts (tonic's default).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// A gRPC message's prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

const GET_PATH: &str = "/io.linkerd.proxy.destination.Destination/Get";

/// Opens a `Get` stream on `channel`'s connection.
///
/// gRPC is framed here rather than by tonic's `Grpc` client: its response
/// stream keeps a read buffer as large as the largest message for the
/// stream's whole life (about 3 KB a stream for 10 endpoints with their
/// metadata, the largest share of an idle stream's memory). Here a message
/// that arrives in one DATA frame is decoded from that frame, and the
/// request is one complete body (hyper then needs no task to pipe it).
pub async fn get(mut channel: Channel, request: GetDestination) -> Result<Updates, Status> {
    let mut body = BytesMut::with_capacity(PREFIX + request.encoded_len());
    body.put_u8(0);
    body.put_u32(request.encoded_len() as u32);
    request
        .encode(&mut body)
        .map_err(|e| Status::internal(format!("cannot encode a GetDestination: {e}")))?;
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(GET_PATH)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            body.freeze(),
        )))
        .map_err(|e| Status::internal(format!("cannot build a Get request: {e}")))?;
    std::future::poll_fn(|cx| GrpcService::poll_ready(&mut channel, cx))
        .await
        .map_err(|e| Status::unknown(format!("connection not ready: {e}")))?;
    let response = GrpcService::call(&mut channel, request)
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    Updates::new(response)
}

/// A `Get` stream's messages, each decoded once into a [`Delta`].
pub struct Updates {
    body: tonic::body::Body,
    /// The unread rest of the last DATA frame.
    chunk: Bytes,
    /// A message split over DATA frames, gathered (empty otherwise).
    partial: BytesMut,
    /// The HTTP status, for a stream that ends without `grpc-status`.
    http_status: http::StatusCode,
    /// The stream ended (trailers read, or answered trailers-only).
    done: bool,
}

impl Updates {
    /// Checks a response's headers: a trailers-only answer carries the
    /// stream's status there (Linkerd answers an unknown service so).
    fn new(response: http::Response<tonic::body::Body>) -> Result<Self, Status> {
        let (parts, body) = response.into_parts();
        let done = match Status::from_header_map(&parts.headers) {
            Some(status) if status.code() != Code::Ok => return Err(status),
            Some(_) => true,
            None => false,
        };
        if let Some(encoding) = parts.headers.get("grpc-encoding")
            && encoding != "identity"
        {
            return Err(Status::unimplemented(format!(
                "the server compressed with {encoding:?}, which the client did not offer"
            )));
        }
        Ok(Self {
            body,
            chunk: Bytes::new(),
            partial: BytesMut::new(),
            http_status: parts.status,
            done,
        })
    }

    /// The next message: `Ok(None)` when the stream ended with status OK,
    /// `Err` when it ended with another status or failed. Cancel-safe: what
    /// was read stays in `self` when the returned future is dropped.
    pub async fn message(&mut self) -> Result<Option<Delta>, Status> {
        loop {
            if let Some(message) = self.next_buffered()? {
                return Delta::decode(message.as_ref())
                    .map(Some)
                    .map_err(|e| Status::internal(format!("cannot decode an Update: {e}")));
            }
            if self.done {
                return if self.chunk.is_empty() && self.partial.is_empty() {
                    Ok(None)
                } else {
                    Err(Status::internal("the stream ended inside a message"))
                };
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.push(data),
                    Err(frame) => {
                        self.done = true;
                        let status = frame
                            .trailers_ref()
                            .and_then(Status::from_header_map)
                            .unwrap_or_else(|| missing_status(self.http_status));
                        if status.code() != Code::Ok {
                            return Err(status);
                        }
                    }
                },
                Some(Err(status)) => {
                    self.done = true;
                    return Err(status);
                }
                None => {
                    self.done = true;
                    return Err(missing_status(self.http_status));
                }
            }
        }
    }

    /// Takes in a DATA frame.
    fn push(&mut self, mut data: Bytes) {
        if data.is_empty() {
            return;
        }
        if self.partial.is_empty() && self.chunk.is_empty() {
            self.chunk = data;
            return;
        }
        // A message continues: gather it (a transient copy) from the rest of
        // the last frame and as much of this one as it lacks; what follows
        // it stays in the frame.
        self.partial.extend_from_slice(&self.chunk);
        self.chunk = Bytes::new();
        while !data.is_empty() {
            let need = match message_len(&self.partial) {
                Ok(Some(len)) => (PREFIX + len).saturating_sub(self.partial.len()),
                Ok(None) => PREFIX - self.partial.len(),
                // Left for `next_buffered` to report.
                Err(_) => 0,
            };
            if need == 0 {
                break;
            }
            let take = need.min(data.len());
            self.partial.reserve(take);
            self.partial.extend_from_slice(&data.split_to(take));
        }
        self.chunk = data;
    }

    /// A whole message, if one is buffered.
    fn next_buffered(&mut self) -> Result<Option<Bytes>, Status> {
        if self.partial.is_empty() {
            let Some(len) = message_len(&self.chunk)? else {
                return Ok(None);
            };
            if self.chunk.len() < PREFIX + len {
                return Ok(None);
            }
            let message = self.chunk.slice(PREFIX..PREFIX + len);
            self.chunk.advance(PREFIX + len);
            if self.chunk.is_empty() {
                // An empty slice would still hold the connection's read
                // buffer that the frame came in.
                self.chunk = Bytes::new();
            }
            return Ok(Some(message));
        }
        let Some(len) = message_len(&self.partial)? else {
            return Ok(None);
        };
        if self.partial.len() < PREFIX + len {
            return Ok(None);
        }
        self.partial.advance(PREFIX);
        let message = self.partial.split_to(len).freeze();
        if self.partial.is_empty() {
            // Not kept for the stream's life: most messages need none.
            self.partial = BytesMut::new();
        }
        Ok(Some(message))
    }
}

/// The length of the message `buf` starts with, once its prefix is there.
fn message_len(buf: &[u8]) -> Result<Option<usize>, Status> {
    if buf.len() < PREFIX {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(Status::internal(
            "a compressed message, though the client asked for none",
        ));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(Status::out_of_range(format!(
            "a message of {len} bytes, larger than the limit of {MAX_MESSAGE}"
        )));
    }
    Ok(Some(len))
}

/// The status of a stream that ended without `grpc-status`, from its HTTP
/// status, as gRPC's HTTP mapping has it.
fn missing_status(http: http::StatusCode) -> Status {
    use http::StatusCode as H;
    let code = match http {
        H::OK => {
            return Status::unknown("the stream ended without a grpc-status trailer");
        }
        H::BAD_REQUEST => Code::Internal,
        H::UNAUTHORIZED => Code::Unauthenticated,
        H::FORBIDDEN => Code::PermissionDenied,
        H::NOT_FOUND => Code::Unimplemented,
        H::TOO_MANY_REQUESTS | H::BAD_GATEWAY | H::SERVICE_UNAVAILABLE | H::GATEWAY_TIMEOUT => {
            Code::Unavailable
        }
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {http} without a grpc-status"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::destination::{
        AddrSet, TlsIdentity, Update, WeightedAddrSet, tls_identity, update,
    };
    use std::collections::HashMap;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_add_decodes_to_its_addresses_and_skips_the_rest() {
        let labels = HashMap::from([("pod".to_string(), "web-0".to_string())]);
        let u = Update {
            update: Some(update::Update::Add(WeightedAddrSet {
                addrs: vec![
                    WeightedAddr {
                        addr: Some(sa("10.0.0.1:80").into()),
                        weight: 10_000,
                        metric_labels: labels.clone(),
                        tls_identity: Some(TlsIdentity {
                            server_name: None,
                            strategy: Some(tls_identity::Strategy::DnsLikeIdentity(
                                tls_identity::DnsLikeIdentity {
                                    name:
                                        "default.ns.serviceaccount.identity.linkerd.cluster.local"
                                            .into(),
                                },
                            )),
                        }),
                        ..Default::default()
                    },
                    // No address: counted as invalid, not dropped silently.
                    WeightedAddr::default(),
                    WeightedAddr {
                        addr: Some(sa("[fd00::2]:8080").into()),
                        ..Default::default()
                    },
                ],
                metric_labels: labels,
            })),
        };
        let d = Delta::decode(u.encode_to_vec().as_slice()).unwrap();
        assert_eq!(d.kind, UpdateKind::Add);
        assert_eq!(d.addrs, vec![sa("10.0.0.1:80"), sa("[fd00::2]:8080")]);
        assert_eq!(d.invalid_addrs, 1);
    }

    #[test]
    fn remove_no_endpoints_and_empty_decode() {
        let remove = Update {
            update: Some(update::Update::Remove(AddrSet {
                addrs: vec![sa("10.0.0.1:80").into()],
            })),
        };
        assert_eq!(Delta::from(&remove), Delta::remove([sa("10.0.0.1:80")]));
        let none = Update {
            update: Some(update::Update::NoEndpoints(NoEndpoints { exists: true })),
        };
        assert_eq!(Delta::from(&none), Delta::no_endpoints(true));
        assert_eq!(Delta::from(&Update { update: None }), Delta::default());
        assert_eq!(Delta::default().kind, UpdateKind::Empty);
    }

    fn framed(u: &Update) -> Vec<u8> {
        let m = u.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(&m);
        out
    }

    fn remove(ip: &str) -> Update {
        Update {
            update: Some(update::Update::Remove(AddrSet {
                addrs: vec![sa(ip).into()],
            })),
        }
    }

    fn trailers(code: i32) -> http::HeaderMap {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", code.to_string().parse().unwrap());
        t
    }

    /// Updates over a response whose body is `data` cut into DATA frames at
    /// `cuts`, then `end` (trailers), with `headers`.
    fn updates(
        headers: http::HeaderMap,
        data: &[u8],
        cuts: &[usize],
        end: Option<http::HeaderMap>,
    ) -> Result<Updates, Status> {
        let mut frames = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain([data.len()].iter()) {
            frames.push(Ok::<_, Status>(http_body::Frame::data(
                Bytes::copy_from_slice(&data[at..c]),
            )));
            at = c;
        }
        frames.extend(end.map(|t| Ok(http_body::Frame::trailers(t))));
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        let mut response = http::Response::new(tonic::body::Body::new(body));
        *response.headers_mut() = headers;
        Updates::new(response)
    }

    /// Cut positions in `0..=len`, sorted, as `updates` takes them.
    fn cuts(len: usize, raw: Vec<usize>) -> Vec<usize> {
        let mut c: Vec<usize> = raw.into_iter().map(|c| c % (len + 1)).collect();
        c.sort_unstable();
        c
    }

    /// Every message of `u` until it ends or fails (at most `max`).
    fn drain(mut u: Updates, max: usize) -> Vec<Result<Option<Delta>, Code>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut out = Vec::new();
            for _ in 0..max {
                let m = u.message().await.map_err(|s| s.code());
                let last = !matches!(m, Ok(Some(_)));
                out.push(m);
                if last {
                    break;
                }
            }
            out
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            failure_persistence: None,
            ..Default::default()
        })]

        /// Messages cut into DATA frames anywhere read back whole, in order,
        /// then the OK trailers end the stream.
        #[test]
        fn framing_reads_back_every_message_whatever_the_frames(
            ips in proptest::collection::vec(proptest::prelude::any::<[u8; 4]>(), 1..8),
            raw_cuts in proptest::collection::vec(0usize..10_000, 0..12),
        ) {
            let sent: Vec<Update> = ips
                .iter()
                .map(|o| remove(&format!("{}.{}.{}.{}:80", o[0], o[1], o[2], o[3])))
                .collect();
            let data: Vec<u8> = sent.iter().flat_map(framed).collect();
            let u = updates(http::HeaderMap::new(), &data, &cuts(data.len(), raw_cuts), Some(trailers(0))).unwrap();
            let mut want: Vec<Result<Option<Delta>, Code>> = sent.iter().map(|m| Ok(Some(Delta::from(m)))).collect();
            want.push(Ok(None));
            proptest::prop_assert_eq!(drain(u, 100), want);
        }

        /// Any bytes, cut anywhere, with or without trailers: messages or an
        /// error, never a panic, and an end.
        #[test]
        fn framing_of_any_bytes_ends_without_a_panic(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            raw_cuts in proptest::collection::vec(0usize..10_000, 0..8),
            code in proptest::option::of(0i32..17),
        ) {
            let u = match updates(http::HeaderMap::new(), &data, &cuts(data.len(), raw_cuts), code.map(trailers)) {
                Ok(u) => u,
                Err(_) => return Ok(()),
            };
            let got = drain(u, 400);
            proptest::prop_assert!(got.len() < 400, "no end");
        }
    }

    #[tokio::test]
    async fn messages_are_read_across_and_within_frames_and_ok_trailers_end_the_stream() {
        let (a, b, c) = (
            remove("10.0.0.1:80"),
            remove("10.0.0.2:80"),
            remove("10.0.0.3:80"),
        );
        let mut data = framed(&a);
        data.extend(framed(&b));
        data.extend(framed(&c));
        let first = framed(&a).len();
        // A frame ending inside the first prefix, one holding the rest of the
        // first message and half of the second, then the rest.
        for cuts in [
            vec![],
            vec![3, first + 4],
            vec![first, 2 * first],
            vec![1, 2, 3, 4],
        ] {
            let mut u = updates(http::HeaderMap::new(), &data, &cuts, Some(trailers(0))).unwrap();
            for want in [&a, &b, &c] {
                assert_eq!(
                    u.message().await.unwrap(),
                    Some(Delta::from(want)),
                    "{cuts:?}"
                );
            }
            assert_eq!(u.message().await.unwrap(), None, "{cuts:?}");
            assert!(
                u.partial.capacity() == 0,
                "{cuts:?}: the gathering buffer is let go"
            );
        }
    }

    #[tokio::test]
    async fn statuses_come_from_trailers_headers_or_the_http_status() {
        let data = framed(&remove("10.0.0.1:80"));
        // Trailers-only: the status is in the headers (Linkerd's NotFound).
        let e = updates(trailers(5), &[], &[], None).err().unwrap();
        assert_eq!(e.code(), Code::NotFound);
        let mut ok_only = updates(trailers(0), &[], &[], None).unwrap();
        assert_eq!(ok_only.message().await.unwrap(), None);
        // A status in the trailers after a message.
        let mut u = updates(http::HeaderMap::new(), &data, &[], Some(trailers(14))).unwrap();
        assert!(u.message().await.unwrap().is_some());
        assert_eq!(u.message().await.unwrap_err().code(), Code::Unavailable);
        // No trailers at all: Unknown, as gRPC has it for HTTP 200.
        let mut u = updates(http::HeaderMap::new(), &data, &[], None).unwrap();
        assert!(u.message().await.unwrap().is_some());
        assert_eq!(u.message().await.unwrap_err().code(), Code::Unknown);
        // Trailers in the middle of a message.
        let mut u = updates(http::HeaderMap::new(), &data[..4], &[], Some(trailers(0))).unwrap();
        assert_eq!(u.message().await.unwrap_err().code(), Code::Internal);
        assert_eq!(
            missing_status(http::StatusCode::SERVICE_UNAVAILABLE).code(),
            Code::Unavailable
        );
    }

    #[tokio::test]
    async fn compressed_and_oversized_messages_are_errors() {
        let mut data = framed(&remove("10.0.0.1:80"));
        data[0] = 1;
        let mut u = updates(http::HeaderMap::new(), &data, &[], Some(trailers(0))).unwrap();
        assert_eq!(u.message().await.unwrap_err().code(), Code::Internal);
        let big = [0, 0xff, 0xff, 0xff, 0xff];
        let mut u = updates(http::HeaderMap::new(), &big, &[], Some(trailers(0))).unwrap();
        assert_eq!(u.message().await.unwrap_err().code(), Code::OutOfRange);
        let mut gzip = http::HeaderMap::new();
        gzip.insert("grpc-encoding", "gzip".parse().unwrap());
        assert_eq!(
            updates(gzip, &[], &[], None).err().unwrap().code(),
            Code::Unimplemented
        );
    }

    #[test]
    fn a_truncated_message_is_an_error() {
        let u = Update {
            update: Some(update::Update::Remove(AddrSet {
                addrs: vec![sa("10.0.0.1:80").into()],
            })),
        };
        let bytes = u.encode_to_vec();
        assert!(Delta::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
