//! Shared helpers for Herald benchmarks.
//!
//! - [`CountingAlloc`]: a global allocator that forwards to an inner
//!   allocator and counts, per thread, the allocations made. A bench or test
//!   binary installs it with
//!   `#[global_allocator] static A: CountingAlloc = CountingAlloc::SYSTEM;`
//!   (or `CountingAlloc<MiMalloc> = CountingAlloc(MiMalloc)`) and then
//!   measures a closure with [`count_allocs`].
//! - [`fixtures`]: the messages and frames the codec benchmarks and the
//!   allocation tests use, so both measure exactly the same inputs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Heap activity of one thread during a measured closure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Calls to `alloc` / `alloc_zeroed`.
    pub allocs: u64,
    /// Calls to `realloc` (a growth is one more trip to the allocator).
    pub reallocs: u64,
    /// Calls to `dealloc`.
    pub deallocs: u64,
    /// Bytes requested by `alloc`, `alloc_zeroed` and `realloc` (new size).
    pub bytes: u64,
}

impl AllocStats {
    /// Allocations plus reallocations: every time the closure asked the
    /// allocator for memory.
    pub fn requests(&self) -> u64 {
        self.allocs + self.reallocs
    }
}

thread_local! {
    // `const` initialisation and a type without a destructor: accessing it
    // never allocates, so it is safe to use from inside the allocator.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static REALLOCS: Cell<u64> = const { Cell::new(0) };
    static DEALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn bump(counter: &'static std::thread::LocalKey<Cell<u64>>, by: u64) {
    // `try_with`: during thread teardown the slot may be gone; ignore then.
    let _ = counter.try_with(|c| c.set(c.get().wrapping_add(by)));
}

fn read(counter: &'static std::thread::LocalKey<Cell<u64>>) -> u64 {
    counter.try_with(Cell::get).unwrap_or(0)
}

fn snapshot() -> AllocStats {
    AllocStats {
        allocs: read(&ALLOCS),
        reallocs: read(&REALLOCS),
        deallocs: read(&DEALLOCS),
        bytes: read(&BYTES),
    }
}

/// A global allocator that counts allocations per thread and forwards to an
/// inner allocator: [`System`] ([`CountingAlloc::SYSTEM`]) or, to measure
/// what the gateway and load generator run with, `mimalloc::MiMalloc`
/// (`CountingAlloc(MiMalloc)`). Counters are thread-local, so tests running
/// in parallel (or criterion's own threads) do not disturb each other's
/// counts.
#[derive(Clone, Copy, Default)]
pub struct CountingAlloc<A = System>(pub A);

impl CountingAlloc<System> {
    /// Counting on top of the system allocator.
    pub const SYSTEM: Self = CountingAlloc(System);
}

impl<A> std::fmt::Debug for CountingAlloc<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CountingAlloc<{}>", std::any::type_name::<A>())
    }
}

// Implementing `GlobalAlloc` is inherently `unsafe` (the trait is an unsafe
// trait): there is no safe way to observe heap allocations in-process. The
// implementation only forwards to the inner allocator with the caller's
// arguments unchanged and bumps thread-local counters, so the inner
// allocator's contract is upheld.
#[allow(unsafe_code)]
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCS, 1);
        bump(&BYTES, layout.size() as u64);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCS, 1);
        bump(&BYTES, layout.size() as u64);
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        bump(&DEALLOCS, 1);
        // SAFETY: forwarded unchanged; `ptr` came from the inner allocator via this one.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump(&REALLOCS, 1);
        bump(&BYTES, new_size as u64);
        // SAFETY: forwarded unchanged; `ptr` came from the inner allocator via this one.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the heap activity of the current
/// thread while it ran. Only meaningful when [`CountingAlloc`] is the global
/// allocator of the binary; check with [`counting_active`].
pub fn count_allocs<R>(f: impl FnOnce() -> R) -> (R, AllocStats) {
    let before = snapshot();
    let r = f();
    let after = snapshot();
    (
        r,
        AllocStats {
            allocs: after.allocs - before.allocs,
            reallocs: after.reallocs - before.reallocs,
            deallocs: after.deallocs - before.deallocs,
            bytes: after.bytes - before.bytes,
        },
    )
}

/// Whether [`CountingAlloc`] is installed as this binary's global allocator
/// (a `Box` allocation is seen by the counters).
pub fn counting_active() -> bool {
    let ((), stats) = count_allocs(|| {
        drop(std::hint::black_box(Box::new(std::hint::black_box(7u64))));
    });
    stats.allocs == 1 && stats.deallocs == 1
}

/// Inputs shared by the codec benchmarks and the allocation tests.
pub mod fixtures {
    use bytes::Bytes;
    use herald_protocol::{DecodeLimits, Encoder, MessageRef, PublishRef, decode};

    /// Payload sizes measured: a small chat/dashboard update and a 1 KiB one.
    pub const PAYLOAD_SIZES: [usize; 2] = [64, 1024];

    /// A deterministic payload of `len` bytes (JSON-ish ASCII).
    pub fn payload(len: usize) -> Vec<u8> {
        b"{\"text\":\"hello from herald\",\"n\":12345}"
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    /// A delivered message as the gateway fans it out.
    pub fn message_ref(payload: &[u8]) -> MessageRef<'_> {
        MessageRef {
            room: "chat:lobby",
            epoch: 7,
            offset: 1_234_567,
            publisher: "user-42",
            timestamp_ms: 1_795_392_000_000,
            payload,
            content_type: Some("application/json"),
            volatile: false,
        }
    }

    /// A publish as a client sends it.
    pub fn publish_ref(payload: &[u8]) -> PublishRef<'_> {
        PublishRef {
            room: "chat:lobby",
            payload,
            content_type: Some("application/json"),
            volatile: false,
            idempotency_key: Some("c-1"),
        }
    }

    /// The encoded `Message` frame with a `len`-byte payload.
    pub fn message_frame(len: usize) -> Bytes {
        let p = payload(len);
        Encoder::new().message(&message_ref(&p))
    }

    /// The encoded `Publish` frame (request id 1) with a `len`-byte payload.
    pub fn publish_frame(len: usize) -> Bytes {
        let p = payload(len);
        Encoder::new().publish(1, &publish_ref(&p))
    }

    /// Decodes and verifies a delivered `Message` as a client does
    /// ([`DecodeLimits::SERVER_TO_CLIENT`]) and reads the fields a client
    /// needs first: room, offset and payload.
    #[inline]
    pub fn decode_message(buf: &[u8]) -> Option<(&str, u64, &[u8])> {
        let frame = decode(buf, &DecodeLimits::SERVER_TO_CLIENT).ok()?;
        let m = frame.body_as_message()?;
        Some((m.room(), m.offset(), m.payload().map_or(&[][..], |p| p.bytes())))
    }

    /// Decodes and verifies a `Publish` as a server does
    /// ([`DecodeLimits::CLIENT_TO_SERVER`]) and reads request id, room and
    /// payload.
    #[inline]
    pub fn decode_publish(buf: &[u8]) -> Option<(u32, &str, &[u8])> {
        let frame = decode(buf, &DecodeLimits::CLIENT_TO_SERVER).ok()?;
        let p = frame.body_as_publish()?;
        Some((frame.request_id(), p.room(), p.payload().map_or(&[][..], |p| p.bytes())))
    }
}
