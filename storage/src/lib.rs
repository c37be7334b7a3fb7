//! Herald storage: room history, notifications and analytics events.
//!
//! Today this crate holds the seam between the room owners and durable
//! history: [`LogStore`], which takes the owner's log requests and answers
//! them by message, now or later, and [`EphemeralLog`], the in-memory
//! node's store. Durable backends (an embedded engine by default, ScyllaDB
//! for clusters) implement the same trait.

#![forbid(unsafe_code)]

mod log;

pub use log::{EphemeralLog, LogStore};
