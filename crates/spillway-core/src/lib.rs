//! The pieces every spillway service stands on, in the order a request meets them:
//!
//! - [`config`]: the layered settings (a TOML file, then `SPILLWAY_` variables), validated at start.
//! - [`telemetry`]: `tracing` logs in JSON or pretty form.
//! - [`http`]: the ops endpoints (`/healthz`, `/readyz`, `/metrics`) and problem+json errors.
//! - [`wire`]: the protobuf messages on the Kafka topics, and their JSON form.
//! - [`counters`]: counter state in Redis with the database behind it.
//! - [`kafka`]: the idempotent producer, the at-least-once consumer loop, the DLQ and topic admin.
//! - [`redis`]: the connection pool and the Lua scripts' home.
//! - [`db`]: the database connection and the migrations run at start.
//! - [`s3`]: the S3 client for template copies.
//! - [`readiness`]: dependency checks behind `/readyz`.
//! - [`metrics`]: the Prometheus registry each service exports.
//! - [`service`]: the start-up and run loop every service shares.
//! - [`sinks`]: write sinks: rows checked against their table, and the bulk SQL.
//! - [`templates`]: templates and their pools of ready S3 copies.
//! - [`queues`]: waiting-room configuration.
//! - [`views`]: cached views: their configuration, keys, and the cache in Redis over the database.
//! - [`shutdown`]: one signal that reaches every task; SIGTERM drains, a second signal exits.

pub mod config;
pub mod counters;
pub mod db;
pub mod faults;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod queues;
pub mod readiness;
pub mod redis;
#[cfg(feature = "s3")]
pub mod s3;
pub mod service;
pub mod shutdown;
pub mod sinks;
pub mod telemetry;
pub mod templates;
pub mod views;
pub mod wire;
