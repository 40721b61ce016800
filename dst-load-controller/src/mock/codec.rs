//! Updates encoded once and sent as bytes: every stream of a destination
//! sends the same change, so the mock encodes each change's protobuf once
//! and each stream only copies the bytes into its gRPC frame (the generated
//! server would re-encode the message for every stream).

use bytes::{Buf, BufMut, Bytes};
use linkerd2_proxy_api::destination::{GetDestination, Update, update};
use prost::Message;
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// An `Update`, protobuf-encoded, and the addresses it carries (for the
/// mock's metrics).
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// The encoded message.
    pub bytes: Bytes,
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
        Self {
            bytes: u.encode_to_vec().into(),
            endpoints,
        }
    }
}

/// The `Get` call's codec: requests decoded with prost, responses written
/// from their encoded bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct GetCodec;

impl Codec for GetCodec {
    type Encode = Encoded;
    type Decode = GetDestination;
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
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.bytes);
        Ok(())
    }
}

impl Decoder for GetCodec {
    type Item = GetDestination;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<GetDestination>, Status> {
        let request = GetDestination::decode(src.copy_to_bytes(src.remaining()))
            .map_err(|e| Status::internal(format!("cannot decode a GetDestination: {e}")))?;
        Ok(Some(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::destination::AddrSet;

    #[test]
    fn encoded_bytes_decode_to_the_update() {
        let addr: std::net::SocketAddr = "10.0.0.1:80".parse().unwrap();
        let u = Update {
            update: Some(update::Update::Remove(AddrSet {
                addrs: vec![
                    addr.into(),
                    "10.0.0.2:80"
                        .parse::<std::net::SocketAddr>()
                        .unwrap()
                        .into(),
                ],
            })),
        };
        let e = Encoded::new(&u);
        assert_eq!(e.endpoints, 2);
        assert_eq!(Update::decode(e.bytes.clone()).unwrap(), u);
    }
}
