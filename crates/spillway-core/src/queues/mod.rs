//! Waiting rooms: a line per queue in Redis, admitting members up to a capacity and a rate.
//!
//! - [`config`]: what the user writes (`[queues.<name>]` by name pattern, `[admission]`).
//!
//! The gateway runs the rooms over Redis (see `lua/queue_admit.lua`).

pub mod config;

pub use config::{AdmissionSettings, QUEUE_NAME, QueueSettings, settings_for};
