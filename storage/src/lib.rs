//! Herald durable storage: room history, notifications and analytics events.
//!
//! Nothing is implemented here yet: the gateway keeps room history in memory
//! until the storage work lands (an embedded default and ScyllaDB behind one
//! trait). The crate exists so the workspace has its final shape.
