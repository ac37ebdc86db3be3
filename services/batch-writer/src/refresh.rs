//! After-commit refresh of the cached views that depend on a sink
//! (`refreshed_by = [{ sink, key_column }]`).
//!
//! The sink's INSERT and DELETE return the key columns of the rows they changed; once the
//! transaction has committed, the handler hands those to [`ViewRefresher::after_commit`],
//! which refreshes the affected view keys in a task of its own: each key is claimed (a new
//! generation, so no reload that began before the commit can store its older result), and a
//! key that is cached is reloaded from the database and stored. A key nobody has read is
//! left for the next read to load. Nothing here can fail the write: errors are logged and
//! counted. A batch that did not commit never gets here.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use futures::StreamExt;
use prometheus::{IntCounterVec, Opts};
use serde_json::{Map, Value};
use spillway_core::{
    metrics::Metrics,
    views::{self, ViewKey, ViewSettings, store::ViewStore},
};

/// View keys refreshed at once after one commit.
const REFRESH_CONCURRENCY: usize = 4;

/// `spillway_batch_writer_view_refreshes_total{view,outcome}`, shared by every sink.
#[derive(Clone)]
pub struct RefreshMetrics {
    refreshes: IntCounterVec,
}

impl RefreshMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            refreshes: metrics.register(
                IntCounterVec::new(
                    Opts::new(
                        metrics.name("view_refreshes_total"),
                        "View keys changed by a commit, by outcome (refreshed, not_cached, \
                         superseded, failed)",
                    ),
                    &["view", "outcome"],
                )
                .expect("valid metric"),
            ),
        }
    }

    fn count(&self, view: &str, outcome: &str) {
        self.refreshes.with_label_values(&[view, outcome]).inc();
    }
}

/// A view that one sink refreshes, and the sink column that is its key.
struct Target {
    view: String,
    settings: ViewSettings,
    key_column: String,
}

/// Refreshes the views that depend on one sink.
#[derive(Clone)]
pub struct ViewRefresher {
    store: ViewStore,
    targets: Arc<[Target]>,
    metrics: RefreshMetrics,
}

impl ViewRefresher {
    /// The refresher of `sink`, or `None` when no view depends on it.
    pub fn for_sink(
        sink: &str,
        views: &BTreeMap<String, ViewSettings>,
        store: ViewStore,
        metrics: RefreshMetrics,
    ) -> Option<Self> {
        let targets: Vec<Target> = views::refreshed_by_sink(views, sink)
            .into_iter()
            .map(|(view, settings, key_column)| Target {
                view: view.to_owned(),
                settings: settings.clone(),
                key_column: key_column.to_owned(),
            })
            .collect();
        (!targets.is_empty()).then(|| Self {
            store,
            targets: targets.into(),
            metrics,
        })
    }

    /// What the sink's statements return: the key columns of every changed row.
    pub fn returning_clause(&self) -> String {
        let columns: BTreeSet<&str> = self
            .targets
            .iter()
            .map(|target| target.key_column.as_str())
            .collect();
        views::returning_clause(columns)
    }

    /// Refreshes, in the background, the view keys of rows a committed transaction changed
    /// (`changed`: the texts its `RETURNING` clause produced).
    pub fn after_commit(&self, changed: &[String]) {
        let keys = self.keys_of(changed);
        if keys.is_empty() {
            return;
        }
        let refresher = self.clone();
        tokio::spawn(async move {
            futures::stream::iter(keys)
                .for_each_concurrent(REFRESH_CONCURRENCY, |(target, key)| {
                    let refresher = refresher.clone();
                    async move { refresher.refresh(target, &key).await }
                })
                .await;
        });
    }

    /// The distinct (target, key) pairs the changed rows map to.
    fn keys_of(&self, changed: &[String]) -> Vec<(usize, ViewKey)> {
        let mut seen = BTreeSet::new();
        let mut keys = Vec::new();
        for text in changed {
            let Ok(row) = serde_json::from_str::<Map<String, Value>>(text) else {
                continue;
            };
            for (index, target) in self.targets.iter().enumerate() {
                if let Some(key) = target.settings.key_of_row(&row, &target.key_column)
                    && seen.insert((index, key.as_str().to_owned()))
                {
                    keys.push((index, key));
                }
            }
        }
        keys
    }

    /// Claims one key and, when it is cached, reloads it.
    async fn refresh(&self, target: usize, key: &ViewKey) {
        let Target { view, settings, .. } = &self.targets[target];
        let outcome = match self.store.claim(view, settings, key).await {
            Ok(None) => "not_cached",
            Ok(Some(lease)) => match self.store.reload(view, settings, key, &lease).await {
                Ok(loaded) if loaded.stored => "refreshed",
                Ok(_) => "superseded",
                Err(error) => {
                    tracing::warn!(view, key = key.as_str(), %error, "view refresh failed; the next read reloads the key");
                    "failed"
                }
            },
            Err(error) => {
                tracing::warn!(view, key = key.as_str(), %error, "view refresh failed: Redis unavailable");
                "failed"
            }
        };
        self.metrics.count(view, outcome);
    }
}
