//! The sweeper: every `templates.sweep_interval_ms`, for each template, it
//! 1. records copies handed out from the pool as taken (the gateway does so too, but may
//!    have failed to),
//! 2. takes copies out of the pool that are past the TTL or of a retired version, and
//!    deletes them,
//! 3. handles ready copies in no pool (a crash between `ready` and the push, or Redis lost):
//!    current ones go back into the pool, others are deleted,
//! 4. deletes the objects of copies abandoned mid-copy (a crash, a timeout),
//! 5. finishes deletions that were interrupted,
//! 6. asks for a refill when the pool is short.
//!
//! Each pass runs in a `template.sweep` span, so its refill requests continue its trace.
//!
//! Every step is safe to repeat and to run in several instances at once: pool changes are
//! atomic scripts and state changes are conditional updates.

use std::{collections::HashSet, time::Duration};

use chrono::Utc;
use spillway_core::{
    kafka::producer::EventProducer,
    templates::{
        CopyMaker, CopyRecord, LifecycleError, Template, request_refill,
        store::{self, CopyInfo, CopyState},
    },
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::metrics::WarmupMetrics;

/// A ready copy in no pool is stranded only after this long (the push follows `ready` at once).
const STRANDED_AFTER: Duration = Duration::from_secs(10);

pub struct Sweeper {
    pub maker: CopyMaker,
    pub metrics: WarmupMetrics,
    pub producer: EventProducer,
    pub warmup_topic: String,
    pub interval: Duration,
    pub ready_ttl: Duration,
    /// A copy still `copying` after this long is abandoned.
    pub abandoned_after: Duration,
}

impl Sweeper {
    /// Sweeps at start and then every interval, until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let pass = tracing::info_span!("template.sweep");
            if let Err(error) = self.sweep_all().instrument(pass).await {
                tracing::warn!(%error, "sweep failed; retried at the next interval");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One pass over every template.
    pub async fn sweep_all(&self) -> Result<(), LifecycleError> {
        for template in store::list_templates(&self.maker.db).await? {
            self.sweep(&template).await?;
        }
        Ok(())
    }

    async fn sweep(&self, template: &Template) -> Result<(), LifecycleError> {
        let id = template.id.as_str();
        let snapshot = self.maker.pool.snapshot(id).await?;
        self.record_taken(id, &snapshot.taken).await?;
        self.sweep_pooled(template, &snapshot.pooled).await?;
        let in_redis: HashSet<Uuid> = snapshot
            .pooled
            .iter()
            .chain(&snapshot.taken)
            .copied()
            .collect();
        self.sweep_stranded(template, &in_redis).await?;
        self.sweep_abandoned(id).await?;
        let interrupted =
            store::copies_in_state(&self.maker.db, id, CopyState::Expired, Duration::ZERO).await?;
        let ids: Vec<Uuid> = interrupted.iter().map(|row| row.copy_id).collect();
        self.maker
            .delete(id, &ids, CopyState::Expired, "expired")
            .await?;
        self.report_and_refill(template).await
    }

    /// Step 1: handed-out copies become `taken`, then leave the handed-out set.
    async fn record_taken(&self, template_id: &str, taken: &[Uuid]) -> Result<(), LifecycleError> {
        store::transition(
            &self.maker.db,
            taken,
            CopyState::Ready,
            CopyState::Taken,
            None,
        )
        .await?;
        self.maker.pool.forget_taken(template_id, taken).await?;
        Ok(())
    }

    /// Step 2: pooled copies past the TTL or of an old version leave the pool and are deleted.
    async fn sweep_pooled(
        &self,
        template: &Template,
        pooled: &[Uuid],
    ) -> Result<(), LifecycleError> {
        let infos = store::copy_infos(&self.maker.db, pooled).await?;
        for reason in ["retired", "ttl"] {
            let doomed: Vec<Uuid> = infos
                .iter()
                .filter(|info| self.why_unusable(template, info) == Some(reason))
                .map(|info| info.copy_id)
                .collect();
            let removed = self.maker.pool.remove(&template.id, &doomed).await?;
            let retired = self.maker.retire(&template.id, &removed, reason).await?;
            self.metrics
                .swept_copies
                .with_label_values(&[reason])
                .inc_by(retired as u64);
        }
        Ok(())
    }

    /// Why a ready copy may no longer be handed out, if it may not.
    fn why_unusable(&self, template: &Template, info: &CopyInfo) -> Option<&'static str> {
        if info.version != template.version {
            return Some("retired");
        }
        let ttl = chrono::Duration::from_std(self.ready_ttl).unwrap_or(chrono::Duration::MAX);
        match info.ready_at {
            Some(ready_at) if Utc::now() - ready_at > ttl => Some("ttl"),
            _ => None,
        }
    }

    /// Step 3: ready copies in no pool go back into it, or are deleted when unusable.
    async fn sweep_stranded(
        &self,
        template: &Template,
        in_redis: &HashSet<Uuid>,
    ) -> Result<(), LifecycleError> {
        let rows = store::copies_in_state(
            &self.maker.db,
            &template.id,
            CopyState::Ready,
            STRANDED_AFTER,
        )
        .await?;
        let stranded: Vec<Uuid> = rows
            .iter()
            .map(|row| row.copy_id)
            .filter(|id| !in_redis.contains(id))
            .collect();
        // The objects of the current version are needed to rebuild a record.
        let Some(current) = store::load_template(&self.maker.db, &template.id).await? else {
            return Ok(());
        };
        for info in store::copy_infos(&self.maker.db, &stranded).await? {
            match self.why_unusable(&current, &info) {
                None => {
                    let prefix = self.maker.copier.copy_prefix();
                    let record = CopyRecord::plan(&current, info.copy_id, prefix);
                    self.maker.pool.push(&record).await?;
                }
                Some(reason) => {
                    let retired = self
                        .maker
                        .retire(&template.id, &[info.copy_id], reason)
                        .await?;
                    self.metrics
                        .swept_copies
                        .with_label_values(&[reason])
                        .inc_by(retired as u64);
                }
            }
        }
        Ok(())
    }

    /// Step 4: copies stuck in `copying` past the copy timeout lose their objects.
    async fn sweep_abandoned(&self, template_id: &str) -> Result<(), LifecycleError> {
        let rows = store::copies_in_state(
            &self.maker.db,
            template_id,
            CopyState::Copying,
            self.abandoned_after,
        )
        .await?;
        let ids: Vec<Uuid> = rows.iter().map(|row| row.copy_id).collect();
        self.maker
            .delete(template_id, &ids, CopyState::Copying, "abandoned")
            .await?;
        self.metrics
            .swept_copies
            .with_label_values(&["abandoned"])
            .inc_by(ids.len() as u64);
        Ok(())
    }

    /// Step 6: the pool gauges, and a refill request when the pool is short.
    async fn report_and_refill(&self, template: &Template) -> Result<(), LifecycleError> {
        let ready = self.maker.pool.ready(&template.id).await?;
        self.metrics
            .report_pool(&template.id, ready, template.pool_capacity);
        if ready < template.pool_capacity as u64 {
            let request_id = Uuid::now_v7().to_string();
            if let Err(error) = request_refill(
                &self.producer,
                &self.warmup_topic,
                template,
                "sweep",
                &request_id,
            )
            .await
            {
                tracing::warn!(%error, template_id = %template.id, "refill request not sent");
            }
        }
        Ok(())
    }
}
