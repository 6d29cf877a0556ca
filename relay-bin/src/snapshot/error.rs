//! [`SnapshotError`]: why a snapshot could not be made, with the HTTP status the API answers.

/// Why a snapshot could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// No such stream is live on this node, or no such recording exists.
    #[error("{0}")]
    NotFound(String),
    /// The stream is live but holds no keyframe yet (or its GOP overflowed the cache until the next one).
    #[error("{0}")]
    NoKeyframe(String),
    /// The video codec is not one a snapshot decodes (H.264 only).
    #[error("cannot decode {0} video for a snapshot (H.264 only)")]
    Codec(String),
    /// The keyframe or its sequence header is malformed.
    #[error("malformed video: {0}")]
    Malformed(String),
    /// The decoder read the keyframe and produced no picture, or failed.
    #[error("the keyframe did not decode: {0}")]
    Decode(String),
    /// Every decoder is busy and the queue for them is full, or the decoder did not answer in time.
    #[error("{0}")]
    Busy(String),
    /// Snapshots are off, or the decoder cannot run here.
    #[error("{0}")]
    Unavailable(String),
    /// A bad request (a width out of range, a bad time).
    #[error("{0}")]
    BadRequest(String),
}

impl SnapshotError {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            SnapshotError::NotFound(_) | SnapshotError::NoKeyframe(_) => 404,
            SnapshotError::Codec(_) => 415,
            SnapshotError::Malformed(_) | SnapshotError::Decode(_) => 422,
            SnapshotError::Busy(_) | SnapshotError::Unavailable(_) => 503,
            SnapshotError::BadRequest(_) => 400,
        }
    }
}
