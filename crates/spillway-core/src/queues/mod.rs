//! Waiting rooms: a line per queue in Redis, admitting members up to a capacity and a rate.
//!
//! - [`config`]: what the user writes (`[queues.<name>]` by name pattern, `[admission]`).
//! - [`store`]: [`WaitingRooms`], one Lua step per join, poll and leave
//!   (`lua/queue_admit.lua`), the hold after Redis lost a room, the rooms' gauges.
//!
//! The gateway serves them under `/v1/queues`.

pub mod config;
pub mod store;

pub use store::{Operation, Standing, Step, WaitingRooms};

pub use config::{AdmissionSettings, QUEUE_NAME, QueueSettings, settings_for};
