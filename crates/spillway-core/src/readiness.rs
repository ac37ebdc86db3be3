//! Dependency health: each dependency (Kafka, Redis, the database, S3) has a named check;
//! `/readyz?verbose` runs them all at once, each under a short timeout, and names every one
//! that is down, and a monitor runs them every [`MONITOR_INTERVAL`] so that the
//! `dependency_up` gauge (and the alert on it) is current without anyone asking.
//!
//! Plain `/readyz` does not run them: readiness means "this process can answer" (its start-up
//! is done and its listener is up). A gateway whose Kafka is down still answers reads from
//! Redis and 503 with Retry-After for what needs Kafka; taking every pod out of its Service
//! would turn those answers into connection errors. See docs/operations.md, "Readiness".

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How long one dependency may take to answer before it counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(1_500);
/// How often the monitor checks every dependency.
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(5);

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The outcome of one dependency's check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DependencyStatus {
    pub name: String,
    pub up: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The set of checks behind `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(String, CheckFn)>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a dependency check; the closure returns `Err(reason)` when the dependency is down.
    pub fn with_check<F, Fut>(mut self, name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let check: CheckFn = Arc::new(move || Box::pin(check()));
        self.checks.push((name.to_owned(), check));
        self
    }

    /// Runs every check concurrently and records `dependency_up` for each.
    pub async fn check_all(&self, metrics: &Metrics) -> Vec<DependencyStatus> {
        let runs = self.checks.iter().map(|(name, check)| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
            };
            metrics
                .dependency_up
                .with_label_values(&[name.as_str()])
                .set(i64::from(outcome.is_ok()));
            DependencyStatus {
                name: name.clone(),
                up: outcome.is_ok(),
                error: outcome.err(),
            }
        });
        futures::future::join_all(runs).await
    }

    /// Checks every dependency now and every [`MONITOR_INTERVAL`] until `shutdown`, logging
    /// when one goes down or comes back.
    pub async fn monitor(self, metrics: Metrics, shutdown: CancellationToken) {
        let mut down: Vec<String> = Vec::new();
        loop {
            let statuses = self.check_all(&metrics).await;
            for status in &statuses {
                let was_down = down.contains(&status.name);
                match (&status.error, was_down) {
                    (Some(error), false) => {
                        tracing::warn!(dependency = %status.name, %error, "dependency down");
                        down.push(status.name.clone());
                    }
                    (None, true) => {
                        tracing::info!(dependency = %status.name, "dependency up again");
                        down.retain(|name| name != &status.name);
                    }
                    _ => {}
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(MONITOR_INTERVAL) => {}
            }
        }
    }
}
