//! One sink's batch handler: reduce, write in bulk, bisect poison rows, clear markers.
//!
//! Order of effects: the database transaction commits inside `handle`, which then hands the
//! changed rows' view keys to the [`ViewRefresher`] (refreshed in the background); the
//! consumer then stores the offsets; only then does `after_store` delete the
//! `{w:<sink>:<id>}` markers. A crash anywhere replays the batch, and the primary key absorbs
//! the duplicates.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::Instant,
};

use futures::{StreamExt, TryStreamExt};

use async_trait::async_trait;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts};
use sea_orm::{
    DatabaseConnection, DbErr, RuntimeErr,
    sqlx::{self, AssertSqlSafe, Row},
};
use serde_json::{Map, Value};
use spillway_core::{
    faults,
    kafka::consumer::{BatchHandler, Delivery, HandlerError, Rejection},
    metrics::Metrics,
    sinks::{self, CommittedWrite, PendingWrites, SinkSettings},
    views::RETURNED_KEYS_COLUMN,
    wire::{WriteEvent, WriteOperation},
};

use tracing::Instrument;

use crate::{
    reduce::{Change, reduce},
    refresh::ViewRefresher,
    spans,
};

/// The batch-writer's metrics, labelled by sink.
#[derive(Clone)]
pub struct WriterMetrics {
    pub rows: IntCounterVec,
    pub commit_duration: Histogram,
    pub batch_rows: Histogram,
    /// Seconds from the gateway's acceptance to the commit, per row.
    pub commit_lag: Histogram,
}

impl WriterMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let histogram = |what: &str, help: &str, buckets: Vec<f64>| {
            metrics.register(
                Histogram::with_opts(HistogramOpts::new(metrics.name(what), help).buckets(buckets))
                    .expect("valid metric"),
            )
        };
        let seconds = prometheus::exponential_buckets(0.001, 2.0, 16).expect("buckets");
        Self {
            rows: metrics.register(
                IntCounterVec::new(
                    Opts::new(metrics.name("rows_total"), "Rows by sink and outcome"),
                    &["sink", "outcome"],
                )
                .expect("valid metric"),
            ),
            commit_duration: histogram(
                "commit_duration_seconds",
                "One bulk transaction",
                seconds.clone(),
            ),
            batch_rows: histogram(
                "batch_rows",
                "Rows per bulk transaction",
                prometheus::exponential_buckets(1.0, 2.0, 14).expect("buckets"),
            ),
            commit_lag: histogram("commit_lag_seconds", "Acceptance to commit", seconds),
        }
    }
}

/// Markers whose clearing failed are tried again after the next commit, up to this many (the
/// rest expire with their TTL).
const MAX_UNCLEARED_MARKERS: usize = 100_000;

pub struct SinkHandler {
    name: String,
    sink: SinkSettings,
    insert_sql: String,
    delete_sql: String,
    db: DatabaseConnection,
    pending: PendingWrites,
    metrics: WriterMetrics,
    /// Writes committed (or refused for good) whose markers are not yet cleared: that waits
    /// until the offsets are stored.
    committed: Mutex<Vec<CommittedWrite>>,
    /// The cached views this sink's commits refresh, if any.
    views: Option<ViewRefresher>,
    /// Partitions written at once (`batch_writer.write_concurrency`).
    write_concurrency: usize,
}

/// SQLSTATE of a database error, when the database sent one.
fn sqlstate(error: &DbErr) -> Option<String> {
    let runtime = match error {
        DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime,
        _ => return None,
    };
    match runtime {
        RuntimeErr::SqlxError(error) => error
            .as_database_error()
            .and_then(|database| database.code())
            .map(|code| code.into_owned()),
        _ => None,
    }
}

/// A transaction on sea-orm's pool, used through sqlx directly: the bulk insert binds one
/// `text[]` per column with null elements, which sea-orm's values cannot carry.
type PgTransaction = sqlx::Transaction<'static, sqlx::Postgres>;

/// A driver error in sea-orm's form, so [`sqlstate`] reads it the same way.
fn db_error(error: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(std::sync::Arc::new(error)))
}

/// Errors that belong to the rows (data exceptions 22, constraint violations 23), not to the
/// database being unavailable: bisecting finds the rows at fault.
fn is_row_error(error: &DbErr) -> bool {
    sqlstate(error).is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

impl SinkHandler {
    pub fn new(
        name: &str,
        sink: SinkSettings,
        db: DatabaseConnection,
        pending: PendingWrites,
        metrics: WriterMetrics,
        views: Option<ViewRefresher>,
        write_concurrency: usize,
    ) -> Self {
        // With views to refresh, the statements also return the changed rows' key columns.
        let returning = views
            .as_ref()
            .map(ViewRefresher::returning_clause)
            .unwrap_or_default();
        Self {
            name: name.to_owned(),
            insert_sql: sink.insert_sql() + &returning,
            delete_sql: sink.delete_sql() + &returning,
            sink,
            db,
            pending,
            metrics,
            committed: Mutex::new(Vec::new()),
            write_concurrency: write_concurrency.max(1),
            views,
        }
    }

    /// The change an event asks for, or why it cannot be written.
    fn change(&self, event: &WriteEvent) -> Result<(String, Change), String> {
        if event.sink != self.name {
            return Err(format!(
                "event for sink `{}` on the topic of `{}`",
                event.sink, self.name
            ));
        }
        match event.operation() {
            WriteOperation::Delete => {
                Ok((event.row_id.clone(), Change::Delete(event.row_id.clone())))
            }
            _ => {
                let row = event
                    .row
                    .as_ref()
                    .map(sinks::from_struct)
                    .unwrap_or_default();
                self.sink
                    .check_row(&row)
                    .map_err(|error| error.to_string())?;
                let id = self.sink.row_id(&row).ok_or("the row has no primary key")?;
                if id != event.row_id {
                    return Err(format!(
                        "row_id `{}` differs from the row's key `{id}`",
                        event.row_id
                    ));
                }
                Ok((id, Change::Upsert(row)))
            }
        }
    }

    /// Runs one bulk statement; the view keys it returned (none without views).
    async fn execute<'q>(
        &self,
        transaction: &mut PgTransaction,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<String>, DbErr> {
        if self.views.is_none() {
            query.execute(&mut **transaction).await.map_err(db_error)?;
            return Ok(Vec::new());
        }
        let rows = query
            .fetch_all(&mut **transaction)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| row.try_get(RETURNED_KEYS_COLUMN).map_err(db_error))
            .collect()
    }

    /// Writes changes in one transaction: one DELETE (deletes and replaced rows), then one
    /// INSERT (upserts and replacing rows); returns the view keys of the changed rows.
    async fn write(&self, changes: &[(usize, &Change)]) -> Result<Vec<String>, DbErr> {
        let upserts: Vec<&Map<String, Value>> = changes
            .iter()
            .filter_map(|(_, change)| match change {
                Change::Upsert(row) | Change::Replace(_, row) => Some(row),
                Change::Delete(_) => None,
            })
            .collect();
        let deletes: Vec<&String> = changes
            .iter()
            .filter_map(|(_, change)| match change {
                Change::Delete(id) | Change::Replace(id, _) => Some(id),
                Change::Upsert(_) => None,
            })
            .collect();
        let pool = self.db.get_postgres_connection_pool();
        let mut transaction = pool.begin().await.map_err(db_error)?;
        let mut changed = Vec::new();
        if !deletes.is_empty() {
            let ids = serde_json::to_value(&deletes).unwrap_or_default();
            let delete = sqlx::query(AssertSqlSafe(self.delete_sql.as_str())).bind(ids);
            changed.extend(self.execute(&mut transaction, delete).await?);
        }
        if !upserts.is_empty() {
            let mut insert = sqlx::query(AssertSqlSafe(self.insert_sql.as_str()));
            for column in self.sink.column_arrays(&upserts) {
                insert = insert.bind(column);
            }
            changed.extend(self.execute(&mut transaction, insert).await?);
        }
        transaction.commit().await.map_err(db_error)?;
        Ok(changed)
    }

    /// Writes the changes; when the database refuses a row, halves the set until the refused
    /// rows are alone, writes the rest and returns the refused ones, with the view keys of
    /// the committed rows.
    async fn write_bisecting(
        &self,
        changes: &[(usize, &Change)],
    ) -> Result<(Vec<Rejection>, Vec<String>), DbErr> {
        let mut rejections = Vec::new();
        let mut changed = Vec::new();
        let mut pending: Vec<&[(usize, &Change)]> = vec![changes];
        while let Some(part) = pending.pop() {
            match self.write(part).await {
                Ok(keys) => changed.extend(keys),
                Err(error) if is_row_error(&error) && part.len() == 1 => {
                    rejections.push(Rejection {
                        index: part[0].0,
                        reason: format!("database: {error}"),
                    })
                }
                Err(error) if is_row_error(&error) => {
                    let (left, right) = part.split_at(part.len() / 2);
                    pending.push(right);
                    pending.push(left);
                }
                Err(error) => return Err(error),
            }
        }
        Ok((rejections, changed))
    }
}

/// The newest record of each row id in a batch that may have a pending marker (batches are
/// in offset order per partition): what the commit holds of each id, for clearing its
/// marker. Ids written only by producers that set no marker need no Redis call.
fn newest_per_id(batch: &[Delivery<WriteEvent>]) -> Vec<CommittedWrite> {
    let marked: std::collections::HashSet<&str> = batch
        .iter()
        .filter(|delivery| delivery.message.pending_marker)
        .map(|delivery| delivery.message.row_id.as_str())
        .collect();
    let mut newest: HashMap<&str, CommittedWrite> = HashMap::new();
    for delivery in batch
        .iter()
        .filter(|d| marked.contains(d.message.row_id.as_str()))
    {
        newest.insert(
            &delivery.message.row_id,
            CommittedWrite {
                id: delivery.message.row_id.clone(),
                partition: delivery.partition,
                offset: delivery.offset,
            },
        );
    }
    newest.into_values().collect()
}

impl SinkHandler {
    /// Writes each partition's changes in its own transaction, up to `write_concurrency` at
    /// once: a row id lives on one partition, so the transactions never touch the same row,
    /// and PostgreSQL works on several while one waits. Returns the refused rows and the view
    /// keys of every committed one; any other failure fails the whole batch (it is retried,
    /// and the committed partitions' rows are absorbed by their primary keys).
    async fn write_by_partition(
        &self,
        batch: &[Delivery<WriteEvent>],
        changes: &[(usize, Change)],
    ) -> Result<(Vec<Rejection>, Vec<String>), DbErr> {
        let mut by_partition: BTreeMap<i32, Vec<(usize, &Change)>> = BTreeMap::new();
        for (index, change) in changes {
            by_partition
                .entry(batch[*index].partition)
                .or_default()
                .push((*index, change));
        }
        let writes: Vec<_> = by_partition
            .iter()
            .map(|(partition, part)| {
                let span = spans::transaction(&self.name, *partition, part.len());
                Box::pin(self.write_bisecting(part).instrument(span))
            })
            .collect();
        let written: Vec<(Vec<Rejection>, Vec<String>)> = futures::stream::iter(writes)
            .buffer_unordered(self.write_concurrency)
            .try_collect()
            .await?;
        let mut refused = Vec::new();
        let mut changed = Vec::new();
        for (part_refused, part_changed) in written {
            refused.extend(part_refused);
            changed.extend(part_changed);
        }
        Ok((refused, changed))
    }
}

#[async_trait]
impl BatchHandler for SinkHandler {
    type Message = WriteEvent;

    async fn handle(&self, batch: &[Delivery<WriteEvent>]) -> Result<Vec<Rejection>, HandlerError> {
        let mut rejections = Vec::new();
        let mut writes = Vec::with_capacity(batch.len());
        for (index, delivery) in batch.iter().enumerate() {
            match self.change(&delivery.message) {
                Ok((id, change)) => writes.push((index, id, change)),
                Err(reason) => rejections.push(Rejection { index, reason }),
            }
        }
        let changes = reduce(writes, self.sink.on_conflict);
        let spans = spans::writes(&self.name, batch);
        let started = Instant::now();
        let (refused, changed) = self
            .write_by_partition(batch, &changes)
            .await
            .map_err(HandlerError::retry)?;
        faults::point(faults::BATCH_WRITER_AFTER_COMMIT);
        if let Some(views) = &self.views {
            views.after_commit(&changed);
        }
        self.metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_rows.observe(changes.len() as f64);
        let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        for (index, _) in &changes {
            if let Some(accepted) = &batch[*index].message.accepted_at {
                self.metrics.commit_lag.observe(
                    (now - accepted.seconds as f64 - f64::from(accepted.nanos) / 1e9).max(0.0),
                );
            }
        }
        let written = changes.len() - refused.len();
        self.metrics
            .rows
            .with_label_values(&[&self.name, "written"])
            .inc_by(written as u64);
        self.metrics
            .rows
            .with_label_values(&[&self.name, "rejected"])
            .inc_by((refused.len() + rejections.len()) as u64);
        self.committed
            .lock()
            .expect("committed lock")
            .extend(newest_per_id(batch));
        rejections.extend(refused);
        spans::record_outcomes(&spans, &rejections);
        Ok(rejections)
    }

    async fn after_store(&self) {
        let committed = std::mem::take(&mut *self.committed.lock().expect("committed lock"));
        if let Err(error) = self.pending.clear_committed(&self.name, &committed).await {
            tracing::warn!(sink = %self.name, %error, "pending markers not cleared; trying again after the next commit");
            let mut waiting = self.committed.lock().expect("committed lock");
            if waiting.len() < MAX_UNCLEARED_MARKERS {
                waiting.extend(committed);
            }
        }
    }
}
