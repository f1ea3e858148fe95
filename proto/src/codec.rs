//! The codec of every generated client and server: prost's, except that the encoder sizes
//! its buffer for the whole message before writing it, and a message that does not decode
//! (garbage bytes, a string field that is not UTF-8) is the sender's bad input:
//! `INVALID_ARGUMENT`, where prost's decoder says `INTERNAL`.
//!
//! Prost's own encoder writes into tonic's buffer as it is, which grows by doubling as the
//! message goes in: a read response of hundreds of events is copied several times over
//! before it reaches the socket. Prost computes the message's length before encoding in any
//! case, so reserving it up front costs nothing more.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A [`tonic::codec::Codec`] for prost messages; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct SizedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SizedCodec<T, U> {
    fn default() -> Self {
        SizedCodec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for SizedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder(PhantomData)
    }
}

/// Encodes a prost message into a buffer reserved for all of it.
#[derive(Debug, Clone, Copy)]
pub struct SizedEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for SizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode_raw(buf);
        Ok(())
    }
}

/// Decodes a prost message, reporting bytes that are not one as `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Copy)]
pub struct CheckedDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|error| Status::invalid_argument(format!("malformed message: {error}")))
    }
}
