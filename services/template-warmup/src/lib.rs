//! The template-warmup service: keeps a pool of ready-made S3 copies per template. This is
//! the skeleton of the foundation: it connects Kafka, Redis, the database and S3 (creating
//! the bucket), serves `/healthz`, `/readyz` and `/metrics`, and stops cleanly; the refill
//! consumer arrives with the template warm-up issue.

use spillway_core::{
    config::Settings,
    http::{self, OpsState},
    service::{self, ServiceBase},
};
use std::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The template-warmup service, built and bound, not yet running.
pub struct Application {
    listener: TcpListener,
    ops: OpsState,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let mut base = ServiceBase::start("template-warmup", settings, &[]).await?;
        base.with_redis()?;
        base.with_database().await?;
        base.with_s3().await?;
        Ok(Self {
            listener: service::bind(&base.settings.template_warmup.listen)?,
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
