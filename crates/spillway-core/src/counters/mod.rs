//! Counters: likes (distinct members) and views (sums), applied exactly once in Redis and
//! written behind to the database.
//!
//! - [`config`]: what the user writes (`[namespaces.<name>]`) and the shape of entity ids.
//! - [`store`]: [`CounterStore`], the counters in Redis with the database behind them: the
//!   gateway's reads, the counter service's apply, load and flush reads.
//! - [`combine`]: a batch's events of one counter collapsed into the few entries one script
//!   call carries.
//! - [`sql`]: the database side: counter rows and members read back, and the write-behind.

pub mod combine;
pub mod config;
pub mod sql;
pub mod store;

use std::collections::BTreeMap;

pub use store::{
    Applied, ApplyRound, BatchOutcome, CounterBatch, CounterStore, CounterStoreError, EventToApply,
    Operation,
};

/// Source partition -> the last offset of that partition a counter's value includes.
pub type AppliedOffsets = BTreeMap<i32, i64>;
