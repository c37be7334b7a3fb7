//! `herald-loadgen`: an open-loop load generator for Herald (WebSocket, or
//! Server-Sent Events streams with WebSocket publishers), which also
//! drives a Socket.IO 4 server so the two can be compared on one workload.
//!
//! - Open-loop schedules ([`schedule`]): each message is due at a time fixed
//!   in advance and carries that time, so latency is measured from when it
//!   *should* have been sent (no coordinated omission).
//! - One epoll loop per worker ([`fleet`]); `--workers K` runs K processes
//!   ([`coord`]) that split the connections and merge their histograms.
//! - Reports: a table on stdout, JSON with documented keys, HTML with
//!   charts, and `compare` for two JSON reports (docs/LOADGEN.md).
//! - Several targets (a cluster's nodes): deliveries split into same-node
//!   and cross-node ([`locality`]).
//! - `capacity`: what a workload needs, from measured reports
//!   ([`capacity`], docs/CAPACITY.md).

#![forbid(unsafe_code)]

mod alarm;
pub mod capacity;
pub mod cli;
pub mod compare;
pub mod coord;
pub mod fleet;
pub mod hist;
pub mod html;
pub mod inflight;
pub mod locality;
mod ping;
pub mod plan;
pub mod procstat;
pub mod schedule;
pub mod sse;
pub mod target;
pub mod wire;
pub mod worker;
