//! Reading cached views: Redis first; on a miss one caller reloads from the database.
//!
//! Within this gateway, concurrent misses of one key share one *flight* (a task of its own,
//! so a caller that gives up at its deadline does not cancel the reload the others wait
//! for). Across gateways, the flight takes the key's Redis lock before it queries; a flight
//! that finds the lock taken polls Redis until the winner's result appears. A stale value is
//! served at once while one background flight reloads it. Redis down: the database is
//! queried (still one flight per key) and nothing is stored. The HTTP answer, with its
//! `Cache-Status`, is built in `routes::views`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use spillway_core::{
    metrics::Metrics,
    redis::RedisError,
    views::{
        ViewKey, ViewSettings,
        store::{self, LockOutcome, ViewError, ViewStore},
    },
};

/// How often a flight that lost the lock race looks for the winner's result.
const LOCK_POLL: Duration = Duration::from_millis(10);

/// How a read was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fresh from Redis for this many more milliseconds.
    Hit { fresh_for_ms: i64 },
    /// Stale from Redis (stale for `-fresh_for_ms` ms) while one reload runs.
    Stale { fresh_for_ms: i64 },
    /// Missed; this request's flight loaded and stored it.
    Stored,
    /// Missed; loaded, but a commit refreshed the key meanwhile, so the refresh was kept.
    Superseded,
    /// Missed; another request's load (in this gateway or another) answered it.
    Collapsed,
    /// Redis is unavailable: read from the database, not stored.
    Bypass,
}

impl Outcome {
    /// The `cache` label of the request metric.
    fn label(self) -> &'static str {
        match self {
            Self::Hit { .. } => "hit",
            Self::Stale { .. } => "stale",
            Self::Stored | Self::Superseded => "miss",
            Self::Collapsed => "collapsed",
            Self::Bypass => "bypass",
        }
    }
}

/// A view's JSON text and how it was obtained.
#[derive(Debug, Clone)]
pub struct Answer {
    pub body: String,
    pub outcome: Outcome,
}

/// Why a view could not be read (cloneable: every caller of a flight gets it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("redis is unavailable: {0}")]
    Redis(String),
    #[error("the database is unavailable: {0}")]
    Database(String),
}

impl ReadError {
    /// The dependency to name in the 503.
    pub fn dependency(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Database(_) => "database",
        }
    }
}

impl From<RedisError> for ReadError {
    fn from(error: RedisError) -> Self {
        Self::Redis(error.to_string())
    }
}

impl From<ViewError> for ReadError {
    fn from(error: ViewError) -> Self {
        match error {
            ViewError::Redis(error) => error.into(),
            other => Self::Database(other.to_string()),
        }
    }
}

type FlightResult = Result<Answer, ReadError>;
type Flight = Shared<BoxFuture<'static, FlightResult>>;

/// The loads running in this gateway, one per view key.
#[derive(Default)]
struct Flights {
    running: Mutex<HashMap<String, Flight>>,
}

impl Flights {
    /// The running flight for `id`, or `fetch` started as it; true when joined.
    fn join_or_start(
        self: &Arc<Self>,
        id: &str,
        fetch: impl Future<Output = FlightResult> + Send + 'static,
    ) -> (Flight, bool) {
        let mut running = self.running.lock().expect("flights lock");
        if let Some(flight) = running.get(id) {
            return (flight.clone(), true);
        }
        let (flights, key) = (Arc::clone(self), id.to_owned());
        let task = tokio::spawn(async move {
            let result = fetch.await;
            flights.running.lock().expect("flights lock").remove(&key);
            result
        });
        let flight = async move {
            task.await
                .unwrap_or_else(|error| Err(ReadError::Database(format!("reload failed: {error}"))))
        }
        .boxed()
        .shared();
        running.insert(id.to_owned(), flight.clone());
        (flight, false)
    }
}

/// The view metrics: requests by view and cache outcome, reloads and their duration.
#[derive(Clone)]
struct ViewMetrics {
    requests: IntCounterVec,
    reloads: IntCounterVec,
    reload_duration: HistogramVec,
}

impl ViewMetrics {
    fn new(metrics: &Metrics) -> Self {
        Self {
            requests: metrics.register(
                IntCounterVec::new(
                    Opts::new(
                        metrics.name("view_requests_total"),
                        "View reads by view and cache outcome (hit, stale, miss, collapsed, bypass)",
                    ),
                    &["view", "cache"],
                )
                .expect("valid metric"),
            ),
            reloads: metrics.register(
                IntCounterVec::new(
                    Opts::new(
                        metrics.name("view_reloads_total"),
                        "Database loads of a view key by outcome (stored, superseded, failed)",
                    ),
                    &["view", "outcome"],
                )
                .expect("valid metric"),
            ),
            reload_duration: metrics.register(
                HistogramVec::new(
                    HistogramOpts::new(
                        metrics.name("view_reload_duration_seconds"),
                        "One database load of a view key, query and store",
                    )
                    .buckets(prometheus::exponential_buckets(0.000_5, 2.0, 14).expect("buckets")),
                    &["view"],
                )
                .expect("valid metric"),
            ),
        }
    }
}

struct Inner {
    store: ViewStore,
    views: BTreeMap<String, ViewSettings>,
    flights: Arc<Flights>,
    metrics: ViewMetrics,
}

/// The configured views of one gateway.
#[derive(Clone)]
pub struct ViewReader {
    inner: Arc<Inner>,
}

impl ViewReader {
    pub fn new(store: ViewStore, views: BTreeMap<String, ViewSettings>, metrics: &Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                views,
                flights: Arc::default(),
                metrics: ViewMetrics::new(metrics),
            }),
        }
    }

    pub fn settings(&self, view: &str) -> Option<&ViewSettings> {
        self.inner.views.get(view)
    }

    /// Plans every view's query once, so a broken one is reported at start (a warning: a
    /// table a sink creates may appear later).
    pub async fn check_queries(&self) {
        for (name, settings) in &self.inner.views {
            if let Err(error) = self.inner.store.check_query(settings).await {
                tracing::warn!(view = %name, %error, "configuration key `views.{name}.sql`: the query does not plan");
            }
        }
    }

    /// Reads a configured view's key.
    pub async fn read(&self, view: &str, key: &ViewKey) -> Result<Answer, ReadError> {
        let answer = match self.inner.store.get(view, key).await {
            Ok(Some(cached)) => {
                let fresh_for_ms = cached.fresh_for_ms(store::now_ms());
                if fresh_for_ms > 0 {
                    Answer {
                        body: cached.body,
                        outcome: Outcome::Hit { fresh_for_ms },
                    }
                } else {
                    self.revalidate(view, key, &cached.body);
                    Answer {
                        body: cached.body,
                        outcome: Outcome::Stale { fresh_for_ms },
                    }
                }
            }
            Ok(None) => self.load(view, key, Inner::fetch).await?,
            Err(error) => {
                tracing::warn!(view, %error, "view read from the database: Redis unavailable");
                self.load(view, key, Inner::bypass).await?
            }
        };
        self.inner
            .metrics
            .requests
            .with_label_values(&[view, answer.outcome.label()])
            .inc();
        Ok(answer)
    }

    /// Joins or starts the key's flight running `fetch`; a joiner's answer is `Collapsed`.
    async fn load<F, Fut>(&self, view: &str, key: &ViewKey, fetch: F) -> FlightResult
    where
        F: FnOnce(Arc<Inner>, String, ViewKey) -> Fut,
        Fut: Future<Output = FlightResult> + Send + 'static,
    {
        let fetch = fetch(Arc::clone(&self.inner), view.to_owned(), key.clone());
        let (flight, joined) = self
            .inner
            .flights
            .join_or_start(&flight_id(view, key), fetch);
        let mut answer = flight.await?;
        if joined {
            answer.outcome = Outcome::Collapsed;
        }
        Ok(answer)
    }

    /// Starts one background reload of a stale key unless one is running here already.
    fn revalidate(&self, view: &str, key: &ViewKey, stale_body: &str) {
        let (inner, view, key) = (Arc::clone(&self.inner), view.to_owned(), key.clone());
        let stale_body = stale_body.to_owned();
        let id = flight_id(&view, &key);
        // The flight runs in a task of its own; this request does not wait for it.
        let _running = self.inner.flights.join_or_start(&id, async move {
            let settings = inner.settings(&view)?;
            let body = match inner.store.try_lock(&view, &settings, &key).await? {
                LockOutcome::Taken(lease) => {
                    return inner.reload(&view, &settings, &key, &lease).await;
                }
                LockOutcome::Fresh(cached) => cached.body,
                // Another caller is reloading (or a commit's refresh): keep the stale value.
                LockOutcome::Held => stale_body,
            };
            Ok(Answer {
                body,
                outcome: Outcome::Collapsed,
            })
        });
    }
}

fn flight_id(view: &str, key: &ViewKey) -> String {
    format!("{view}\u{0}{}", key.as_str())
}

impl Inner {
    fn settings(&self, view: &str) -> Result<ViewSettings, ReadError> {
        self.views
            .get(view)
            .cloned()
            .ok_or_else(|| ReadError::Database(format!("no view `{view}`")))
    }

    /// A miss: take the key's lock and reload, or wait for whoever holds it.
    async fn fetch(self: Arc<Self>, view: String, key: ViewKey) -> FlightResult {
        let settings = self.settings(&view)?;
        // The holder's lock expires after the reload timeout; then this flight may take it.
        let give_up = Instant::now() + settings.reload_timeout() * 2;
        loop {
            match self.store.try_lock(&view, &settings, &key).await? {
                LockOutcome::Taken(lease) => {
                    return self.reload(&view, &settings, &key, &lease).await;
                }
                LockOutcome::Fresh(cached) => {
                    return Ok(Answer {
                        body: cached.body,
                        outcome: Outcome::Collapsed,
                    });
                }
                LockOutcome::Held => {}
            }
            tokio::time::sleep(LOCK_POLL).await;
            if let Some(cached) = self.store.get(&view, &key).await? {
                return Ok(Answer {
                    body: cached.body,
                    outcome: Outcome::Collapsed,
                });
            }
            if Instant::now() > give_up {
                return Err(ReadError::Database(format!(
                    "another reload of view `{view}` did not finish within {} ms",
                    2 * settings.reload_timeout_ms
                )));
            }
        }
    }

    /// Redis is unavailable: the database answers, nothing is stored.
    async fn bypass(self: Arc<Self>, view: String, key: ViewKey) -> FlightResult {
        let settings = self.settings(&view)?;
        let body = self.store.query(&settings, &key).await?;
        Ok(Answer {
            body,
            outcome: Outcome::Bypass,
        })
    }

    /// One database load under `lease`, measured.
    async fn reload(
        &self,
        view: &str,
        settings: &ViewSettings,
        key: &ViewKey,
        lease: &store::Lease,
    ) -> FlightResult {
        let started = Instant::now();
        let loaded = self.store.reload(view, settings, key, lease).await;
        let outcome = match &loaded {
            Ok(loaded) if loaded.stored => "stored",
            Ok(_) => "superseded",
            Err(_) => "failed",
        };
        self.metrics
            .reloads
            .with_label_values(&[view, outcome])
            .inc();
        self.metrics
            .reload_duration
            .with_label_values(&[view])
            .observe(started.elapsed().as_secs_f64());
        let loaded = loaded?;
        Ok(Answer {
            body: loaded.body,
            outcome: if loaded.stored {
                Outcome::Stored
            } else {
                Outcome::Superseded
            },
        })
    }
}
