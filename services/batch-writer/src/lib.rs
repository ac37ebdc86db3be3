//! The batch-writer service: turns bursts of acknowledged writes into a few bulk statements
//! per sink. This is the skeleton of the foundation: it connects Kafka, Redis and the
//! database, serves `/healthz`, `/readyz` and `/metrics`, and stops cleanly; the sink
//! consumers arrive with the batch-writer issue.

use spillway_core::{
    config::Settings,
    http::{self, OpsState},
    service::{self, ServiceBase},
};
use std::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The batch-writer, built and bound, not yet running.
pub struct Application {
    listener: TcpListener,
    ops: OpsState,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let mut base = ServiceBase::start("batch-writer", settings, &[]).await?;
        base.with_redis()?;
        base.with_database().await?;
        Ok(Self {
            listener: service::bind(&base.settings.batch_writer.listen)?,
            ops: base.ops_state(),
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|address| address.port())
            .unwrap_or(0)
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        http::serve_ops(self.listener, self.ops, shutdown).await?;
        Ok(())
    }
}
