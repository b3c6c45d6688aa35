//! The gRPC codec both sides use: prost's, with small starting buffers.
//!
//! tonic's default codec gives every stream an 8 KiB encode buffer and an
//! 8 KiB decode buffer up front. A session holds one stream for its whole
//! life, and most carry nothing but heartbeats, so 16 KiB a stream is most
//! of what an idle session costs. The buffers still grow to fit any
//! message; they only start small.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec, ProstCodec};

/// Bytes a stream's encode and decode buffers start with: a heartbeat, a
/// reply or a small write fits.
const START_BUFFER: usize = 512;
/// tonic's default: how much is encoded before the stream yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost's codec with buffers that start at 512 bytes; named by the generated
/// clients and servers (`tonic_build`'s `codec_path`).
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(START_BUFFER, YIELD_THRESHOLD)
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
