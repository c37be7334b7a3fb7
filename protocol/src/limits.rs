//! Size, depth and rate limits, with defaults chosen for a gateway that holds
//! a very large number of mostly idle connections.

use flatbuffers::VerifierOptions;

/// Limits applied when decoding a frame, before any field is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest frame accepted, in bytes. Checked before verification (and, on
    /// QUIC streams, before the frame is buffered).
    pub max_frame_bytes: usize,
    /// Maximum table nesting depth. herald/1 frames nest at most 5 deep
    /// (Frame > Subscribed > Message > ...); 16 leaves room for growth.
    pub max_depth: usize,
    /// Maximum number of tables the verifier will visit.
    pub max_tables: usize,
}

impl DecodeLimits {
    /// Defaults for frames a server receives from untrusted clients:
    /// 64 KiB per frame and at most 1,024 tables (a `Connect` resuming 256
    /// rooms uses 258).
    pub const CLIENT_TO_SERVER: Self = Self {
        max_frame_bytes: 64 * 1024,
        max_depth: 16,
        max_tables: 1024,
    };

    /// Defaults for frames a client receives from a server: history pages and
    /// recovery batches are larger (16 MiB, a million tables).
    pub const SERVER_TO_CLIENT: Self = Self {
        max_frame_bytes: 16 * 1024 * 1024,
        max_depth: 16,
        max_tables: 1_000_000,
    };

    /// FlatBuffers verifier options derived from these limits. The apparent
    /// size bound (which counts shared data once per reference) is four times
    /// the frame limit, so a small frame cannot make the verifier walk
    /// gigabytes of aliased vectors.
    pub fn verifier_options(&self) -> VerifierOptions {
        VerifierOptions {
            max_depth: self.max_depth,
            max_tables: self.max_tables,
            max_apparent_size: self.max_frame_bytes.saturating_mul(4),
            ignore_missing_null_terminator: false,
        }
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self::CLIENT_TO_SERVER
    }
}

/// Per-connection limits a server session enforces (advertised to the client
/// in `Connected.limits`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionLimits {
    /// Frame decoding limits for inbound frames. Default: [`DecodeLimits::CLIENT_TO_SERVER`].
    pub decode: DecodeLimits,
    /// Largest publish payload, in bytes. Default 32 KiB: chat and dashboard
    /// updates are small; bulk data belongs in storage, not fan-out.
    pub max_payload_bytes: usize,
    /// Rooms one connection may be subscribed to. Default 256.
    pub max_rooms: usize,
    /// Longest room name in bytes. Default 128.
    pub max_room_name_bytes: usize,
    /// Sustained publishes per second per connection. Default 50.
    pub publish_rate_per_sec: u32,
    /// Publish burst per connection (token bucket size). Default 100.
    pub publish_burst: u32,
    /// Sustained typing updates per second per connection. Default 2.
    pub typing_rate_per_sec: u32,
    /// Typing burst. Default 5.
    pub typing_burst: u32,
    /// Outbound bytes queued for a connection before volatile frames are
    /// dropped and then the connection is closed as a slow consumer.
    /// Default 1 MiB: a few seconds of a busy dashboard.
    pub max_outbound_bytes: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            decode: DecodeLimits::CLIENT_TO_SERVER,
            max_payload_bytes: 32 * 1024,
            max_rooms: 256,
            max_room_name_bytes: 128,
            publish_rate_per_sec: 50,
            publish_burst: 100,
            typing_rate_per_sec: 2,
            typing_burst: 5,
            max_outbound_bytes: 1024 * 1024,
        }
    }
}

/// Checks a room name: non-empty, at most `max_bytes`, characters in
/// `[A-Za-z0-9:_\-.@/]`.
pub fn valid_room_name(room: &str, max_bytes: usize) -> bool {
    !room.is_empty()
        && room.len() <= max_bytes
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-' | b'.' | b'@' | b'/'))
}
