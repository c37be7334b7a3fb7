//! What a storage backend can fail with.

/// Why a storage operation failed. Every variant is something the caller
/// answers with a typed error, never a crash: the gateway turns each into
/// `Unavailable` for the client, counts it and keeps serving other rooms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The backend cannot do I/O right now: disk full, an I/O error, a
    /// cluster that does not answer or has too few replicas.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded (a bug or a damaged disk).
    #[error("corrupt stored record: {0}")]
    Corrupt(String),
    /// The request itself is invalid (a name too long for a key, say).
    #[error("invalid storage request: {0}")]
    Invalid(String),
}

/// Result of a storage operation.
pub type StorageResult<T> = Result<T, StorageError>;
