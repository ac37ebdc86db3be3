//! The pieces every spillway service stands on, in the order a request meets them.
//!
//! **Infrastructure** (no feature knowledge):
//! - [`config`]: the layered settings (a TOML file, then `SPILLWAY_` variables), validated at
//!   start; it only aggregates the sections, over the leaves [`check`] (the shared checks and
//!   `ConfigError`), [`secret`] (and the published sample secrets, refused outside the local
//!   stack) and [`read_rule`] (who may read a sink or a view).
//! - [`telemetry`]: `tracing` logs, pretty on a terminal and JSON otherwise, and traces over
//!   OTLP when `[telemetry] otlp_endpoint` is set (the W3C `traceparent` of Kafka records in
//!   [`telemetry::context`]).
//! - [`service`]: the start-up and run loop every service shares (the schema check, the one
//!   start-up line), with [`http`] (the ops endpoints, problem+json), [`readiness`] (the
//!   dependency checks behind `/readyz?verbose` and their monitor), [`metrics`] (the
//!   Prometheus registry, process and build metrics) and [`shutdown`] (SIGTERM drains, a
//!   second signal exits).
//! - [`wire`]: the protobuf messages on the Kafka topics, and their JSON form.
//! - [`kafka`]: the idempotent producer (`publish` of any [`wire::WireMessage`]), the
//!   at-least-once consumer loop, the DLQ and topic admin.
//! - [`redis`]: the pool, deadlines, scripts re-loaded after a restart, and every key shape.
//! - [`db`]: the database connection, the schema check at start, and the migrations
//!   (`migrate_all`, run by `spillway-admin migrate`, never by a service).
//! - `s3` (feature `s3`): the S3 client for template copies.
//! - [`faults`]: fail points, where fault tests stall a process at its worst moment.
//!
//! **Features**, each owning its settings (`config`), its store (the only code that knows
//! its Redis keys, fields and scripts) and its SQL:
//! - [`counters`]: likes and views; [`counters::CounterStore`], the write-behind SQL.
//! - [`sinks`]: write sinks: rows checked against their table, the bulk SQL, and
//!   [`sinks::PendingWrites`], the markers of writes not yet committed.
//! - [`views`]: cached views: their configuration, keys, and the cache in Redis over the
//!   database.
//! - [`queues`]: waiting rooms and their Redis step.
//! - [`templates`]: templates and their pools of ready S3 copies.
//!
//! Every binary that links this crate (the services, `spillway-admin`, the tests and the
//! benchmarks) allocates with mimalloc: the services allocate per message, and glibc's
//! `malloc` and `free` were a third of the counter's CPU.

/// The allocator of every binary built on this crate.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod check;
pub mod config;
pub mod counters;
pub mod db;
pub mod faults;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod queues;
pub mod read_rule;
pub mod readiness;
pub mod redis;
#[cfg(feature = "s3")]
pub mod s3;
pub mod secret;
pub mod service;
pub mod shutdown;
pub mod sinks;
pub mod telemetry;
pub mod templates;
pub mod views;
pub mod wire;
