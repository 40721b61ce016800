//! The client's end of `Destination.Get`: every message is decoded once, into
//! what the client uses: its kind and its addresses. Metric labels, TLS
//! identities and protocol hints are skipped on the wire instead of being
//! decoded into maps and strings and dropped.
//!
//! The lean messages below are a subset of `destination.proto` with the same
//! field tags; protobuf skips the fields a message does not declare.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Buf;
use linkerd2_proxy_api::{
    destination::{GetDestination, NoEndpoints, WeightedAddr},
    net::TcpAddress,
};
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType, check_wire_type, decode_key, decode_varint, skip_field},
};
use tonic::{
    Status,
    client::Grpc,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming},
    transport::Channel,
};

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

/// A `Get` stream's read buffer starts this small and grows to the largest
/// message: tonic's default (8 KiB) is most of an idle stream's memory.
const READ_BUFFER: usize = 512;

/// A `GetDestination` (path and context token) fits; a larger one grows it.
const REQUEST_BUFFER: usize = 256;

/// The `Get` codec: requests encoded with prost, responses decoded to [`Delta`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GetCodec;

impl Codec for GetCodec {
    type Encode = GetDestination;
    type Decode = Delta;
    type Encoder = GetCodec;
    type Decoder = GetCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for GetCodec {
    type Item = GetDestination;
    type Error = Status;

    fn encode(&mut self, item: GetDestination, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode a GetDestination: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        // The request body (and this buffer) lives as long as the stream: at
        // tonic's default 8 KiB it was half of an idle stream's memory, for
        // a request of about a hundred bytes.
        BufferSettings::new(REQUEST_BUFFER, 32 * 1024)
    }
}

impl Decoder for GetCodec {
    type Item = Delta;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Delta>, Status> {
        // One contiguous slice (split off the read buffer, not copied):
        // reading varints from it is much cheaper than through `DecodeBuf`.
        let message = src.copy_to_bytes(src.remaining());
        Delta::decode(message.as_ref())
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode an Update: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(READ_BUFFER, 32 * 1024)
    }
}

/// Opens a `Get` stream on `channel`'s connection.
pub async fn get(channel: Channel, request: GetDestination) -> Result<Streaming<Delta>, Status> {
    let mut grpc = Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("connection not ready: {e}")))?;
    let path =
        http::uri::PathAndQuery::from_static("/io.linkerd.proxy.destination.Destination/Get");
    Ok(grpc
        .server_streaming(tonic::Request::new(request), path, GetCodec)
        .await?
        .into_inner())
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
