//! Reading and writing protocol frames on QUIC streams.

use quinn::{RecvStream, SendStream};
use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

use crate::proto::{CodecError, decode, encode, frame_len};

/// A frame could not be read or written.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The peer finished the stream cleanly between frames.
    #[error("stream closed")]
    Closed,
    /// The stream failed or ended inside a frame.
    #[error("stream: {0}")]
    Stream(String),
    /// The frame is oversized or malformed.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Read one message, refusing frames above `max` bytes.
pub async fn read<T: DeserializeOwned>(recv: &mut RecvStream, max: usize) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Stream(e.to_string())),
    }
    let n = frame_len(len, max)?;
    let mut body = vec![0u8; n];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| FrameError::Stream(e.to_string()))?;
    Ok(decode(&body)?)
}

/// Write one message.
pub async fn write<T: Serialize>(send: &mut SendStream, msg: &T) -> Result<(), FrameError> {
    send.write_all(&encode(msg))
        .await
        .map_err(|e| FrameError::Stream(e.to_string()))
}
