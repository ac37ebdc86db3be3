//! One copy from its first S3 call to its hand-out or deletion, the same way in the gateway
//! and in template-warmup: [`CopyMaker::copy`] records and copies, then the copy is either
//! handed out at once ([`CopyMaker::hand_out`], a direct copy) or put into the pool
//! ([`CopyMaker::pool`]); [`CopyMaker::retire`] takes ready copies out of service and deletes
//! their objects.

use sea_orm::{DatabaseConnection, DbErr};
use uuid::Uuid;

use super::{
    CopyRecord, Template,
    copier::{CopyError, S3Copier},
    pool::TemplatePool,
    store::{self, CopyOrigin, CopyState},
};
use crate::redis::RedisError;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("database: {0}")]
    Database(#[from] DbErr),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Copy(#[from] CopyError),
}

/// What became of a finished pool copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooled {
    /// It is in the pool.
    Ready,
    /// Its template moved to a new version meanwhile: it was deleted.
    Retired,
    /// The sweeper gave it up as abandoned before it finished: it was deleted.
    Abandoned,
}

/// Makes, pools, hands out and retires copies.
#[derive(Clone)]
pub struct CopyMaker {
    pub db: DatabaseConnection,
    pub pool: TemplatePool,
    pub copier: S3Copier,
}

impl CopyMaker {
    pub fn new(db: DatabaseConnection, pool: TemplatePool, copier: S3Copier) -> Self {
        Self { db, pool, copier }
    }

    /// Records a new copy of `template` and copies its objects. On failure the objects are
    /// deleted and the row says `deleted`, or, when that cannot be certain, the row stays
    /// `copying` for the sweeper.
    pub async fn copy(
        &self,
        template: &Template,
        origin: CopyOrigin,
    ) -> Result<CopyRecord, LifecycleError> {
        let record = CopyRecord::plan(template, Uuid::now_v7(), self.copier.copy_prefix());
        store::insert_copy(&self.db, record.copy_id, template, origin).await?;
        match self.copier.copy(&record).await {
            Ok(()) => Ok(record),
            Err(failure) => {
                if failure.cleaned_up {
                    let ids = [record.copy_id];
                    store::transition(
                        &self.db,
                        &ids,
                        CopyState::Copying,
                        CopyState::Deleted,
                        Some("failed"),
                    )
                    .await?;
                }
                Err(failure.error.into())
            }
        }
    }

    /// Records a finished direct copy as handed out; false (and the copy deleted) when the
    /// sweeper abandoned it first.
    pub async fn hand_out(&self, record: &CopyRecord) -> Result<bool, LifecycleError> {
        let ids = [record.copy_id];
        let moved =
            store::transition(&self.db, &ids, CopyState::Copying, CopyState::Taken, None).await?;
        if moved.is_empty() {
            self.copier
                .delete_copy(&record.template_id, record.copy_id)
                .await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Puts a finished copy (in state `from`: `copying`, or `taken` for a direct copy whose
    /// caller left before it was delivered) into its template's pool, unless the template
    /// has a new version by now or the sweeper abandoned the copy (then it is deleted).
    pub async fn pool(
        &self,
        record: &CopyRecord,
        from: CopyState,
    ) -> Result<Pooled, LifecycleError> {
        let ids = [record.copy_id];
        let moved = store::transition(&self.db, &ids, from, CopyState::Ready, None).await?;
        if moved.is_empty() {
            self.copier
                .delete_copy(&record.template_id, record.copy_id)
                .await?;
            return Ok(Pooled::Abandoned);
        }
        let current = store::load_template(&self.db, &record.template_id).await?;
        if current.is_none_or(|template| template.version != record.version) {
            self.retire(&record.template_id, &ids, "retired").await?;
            return Ok(Pooled::Retired);
        }
        self.pool.push(record).await?;
        Ok(Pooled::Ready)
    }

    /// Retires ready copies that are in no pool (take them out with
    /// [`TemplatePool::remove`] first): marks them expired, deletes their objects, marks them
    /// deleted. Returns how many it retired. Copies no longer ready are left alone.
    pub async fn retire(
        &self,
        template_id: &str,
        ids: &[Uuid],
        reason: &str,
    ) -> Result<usize, LifecycleError> {
        let expired = store::transition(
            &self.db,
            ids,
            CopyState::Ready,
            CopyState::Expired,
            Some(reason),
        )
        .await?;
        self.delete(template_id, &expired, CopyState::Expired, reason)
            .await?;
        Ok(expired.len())
    }

    /// Deletes the objects of copies in state `from` and records them as deleted.
    pub async fn delete(
        &self,
        template_id: &str,
        ids: &[Uuid],
        from: CopyState,
        reason: &str,
    ) -> Result<(), LifecycleError> {
        for id in ids {
            self.copier.delete_copy(template_id, *id).await?;
            store::transition(&self.db, &[*id], from, CopyState::Deleted, Some(reason)).await?;
        }
        Ok(())
    }
}
