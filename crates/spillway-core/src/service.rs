//! What every service does at start and at stop, in one place: log the effective
//! configuration (at debug), create the topics, connect the dependencies it needs (each adding
//! its dependency check), and run the ops server and the dependency monitor beside the
//! service's own work until shutdown. Once it serves, one info line says the service started,
//! where it listens and its version.

use std::{net::TcpListener, sync::Arc};

use tokio_util::sync::CancellationToken;

use crate::{
    config::Settings,
    db::{self, Db, DbError},
    http::{self, OpsState},
    kafka::{
        KafkaError, admin,
        consumer::{BatchHandler, ConsumerLoop, ConsumerSettings},
        dlq::DeadLetterQueue,
        producer::EventProducer,
    },
    metrics::Metrics,
    readiness::Readiness,
    redis::{RedisClient, RedisError},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[cfg(feature = "s3")]
    #[error(transparent)]
    S3(#[from] crate::s3::S3Error),
    #[error("binding {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

/// The parts a service is built from; each `with_*` connects one dependency.
pub struct ServiceBase {
    pub name: &'static str,
    pub settings: Settings,
    pub metrics: Metrics,
    pub readiness: Readiness,
    pub producer: EventProducer,
}

impl ServiceBase {
    /// Logs the configuration, creates the configured topics and the producer.
    pub async fn start(name: &'static str, settings: Settings) -> Result<Self, StartError> {
        tracing::debug!(service = name, configuration = %settings.to_masked_json(), "starting");
        let kafka = &settings.kafka;
        let mut topics = vec![
            (
                kafka.counter_events.name.clone(),
                kafka.counter_events.partitions,
            ),
            (
                kafka.warmup_requests.name.clone(),
                kafka.warmup_requests.partitions,
            ),
            (kafka.dlq.name.clone(), kafka.dlq.partitions),
        ];
        for sink in settings.sinks.keys() {
            topics.push((kafka.writes_topic(sink), kafka.writes_partitions));
        }
        admin::ensure_replicated_topics(
            &kafka.bootstrap,
            &topics,
            admin::Replication::from_settings(kafka),
        )
        .await?;
        let producer = EventProducer::new(
            &kafka.bootstrap,
            &format!("spillway-{name}"),
            kafka.produce_timeout(),
        )?;
        let checked = producer.clone();
        let readiness = Readiness::new().with_check("kafka", move || {
            let producer = checked.clone();
            async move { producer.check().await }
        });
        Ok(Self {
            name,
            metrics: Metrics::new(name),
            readiness,
            producer,
            settings,
        })
    }

    /// Redis (the pool, the key shapes and the call deadline), watched by the dependency
    /// monitor and `/readyz?verbose`.
    pub fn with_redis(&mut self) -> Result<RedisClient, StartError> {
        let client = RedisClient::from_settings(&self.settings.redis)?;
        let checked = client.clone();
        self.add_check("redis", move || {
            let client = checked.clone();
            async move { client.check().await }
        });
        Ok(client)
    }

    /// The database, checked to be at the schema version this build expects (the services
    /// never change the schema: `spillway-admin migrate` does), then watched like Redis.
    pub async fn with_database(&mut self) -> Result<Db, StartError> {
        let database = db::connect(&self.settings.database).await?;
        db::check_schema(&database, &self.settings.database.schema).await?;
        let checked = database.clone();
        self.add_check("database", move || {
            let database = checked.clone();
            async move { db::check(&database).await }
        });
        Ok(database)
    }

    /// The S3 client with the bucket created, watched like Redis.
    #[cfg(feature = "s3")]
    pub async fn with_s3(&mut self) -> Result<aws_sdk_s3::Client, StartError> {
        use crate::s3;
        let client = s3::client(&self.settings.s3);
        s3::ensure_bucket(&client, &self.settings.s3.bucket).await?;
        let (checked, bucket) = (client.clone(), self.settings.s3.bucket.clone());
        self.add_check("s3", move || {
            let (client, bucket) = (checked.clone(), bucket.clone());
            async move { s3::check(&client, &bucket).await }
        });
        Ok(client)
    }

    fn add_check<F, Fut>(&mut self, name: &str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.readiness = std::mem::take(&mut self.readiness).with_check(name, check);
    }

    pub fn dead_letter_queue(&self) -> DeadLetterQueue {
        DeadLetterQueue::new(
            self.producer.clone(),
            self.settings.kafka.dlq.name.clone(),
            self.name,
        )
    }

    /// A consumer loop for `handler` in `group_id` over `topics`, batching as configured
    /// under `[kafka]`.
    pub fn consumer<H: BatchHandler>(
        &self,
        group_id: &str,
        topics: Vec<String>,
        handler: Arc<H>,
    ) -> Result<ConsumerLoop<H>, StartError> {
        let settings = self.consumer_settings(group_id, topics);
        self.consumer_with(settings, handler)
    }

    /// The consumer settings `consumer` uses, to adjust before [`ServiceBase::consumer_with`].
    pub fn consumer_settings(&self, group_id: &str, topics: Vec<String>) -> ConsumerSettings {
        ConsumerSettings {
            bootstrap: self.settings.kafka.bootstrap.clone(),
            group_id: group_id.to_owned(),
            client_id: format!("spillway-{}", self.name),
            topics,
            batch_size: self.settings.kafka.consumer_batch_size,
            linger: self.settings.kafka.consumer_linger(),
            max_batch_bytes: 64 * 1024 * 1024,
        }
    }

    /// A consumer loop with explicit settings.
    pub fn consumer_with<H: BatchHandler>(
        &self,
        settings: ConsumerSettings,
        handler: Arc<H>,
    ) -> Result<ConsumerLoop<H>, StartError> {
        Ok(ConsumerLoop::new(
            settings,
            handler,
            self.dead_letter_queue(),
            self.metrics.clone(),
        )?)
    }

    pub fn ops_state(&self) -> OpsState {
        OpsState {
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
        }
    }
}

/// The one info line of a service's start: its name, where it listens, its version.
pub fn announce(name: &str, listener: &TcpListener) {
    let listen = listener
        .local_addr()
        .map(|address| address.to_string())
        .unwrap_or_default();
    tracing::info!(
        service = name,
        %listen,
        version = crate::metrics::VERSION,
        commit = crate::metrics::COMMIT,
        "service started"
    );
}

/// Binds a listen address (port 0 picks a free port).
pub fn bind(address: &str) -> Result<TcpListener, StartError> {
    http::bind(address).map_err(|source| StartError::Bind {
        address: address.to_owned(),
        source,
    })
}

/// A consumer service: the ops server and its consumer loops, stopped together.
pub struct ConsumerService<H: BatchHandler> {
    name: &'static str,
    listener: TcpListener,
    ops: OpsState,
    consumers: Vec<ConsumerLoop<H>>,
    producer: EventProducer,
}

impl<H: BatchHandler> ConsumerService<H> {
    pub fn new(
        base: &ServiceBase,
        listen: &str,
        consumers: Vec<ConsumerLoop<H>>,
    ) -> Result<Self, StartError> {
        Ok(Self {
            name: base.name,
            listener: bind(listen)?,
            ops: base.ops_state(),
            consumers,
            producer: base.producer.clone(),
        })
    }

    /// The port the ops server listens on.
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|address| address.port())
            .unwrap_or(0)
    }

    /// Serves until the token is cancelled; the consumer then drains and commits.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        announce(self.name, &self.listener);
        self.ops.spawn_dependency_monitor(shutdown.clone());
        let ops = tokio::spawn(http::serve_ops(self.listener, self.ops, shutdown.clone()));
        let runs = self.consumers.into_iter().map(|consumer| {
            let shutdown = shutdown.clone();
            async move {
                let outcome = consumer.run(shutdown.clone()).await;
                // Whatever ends one consumer ends the service.
                shutdown.cancel();
                outcome
            }
        });
        let outcomes = futures::future::join_all(runs).await;
        // A service with nothing to consume (no sink configured) still serves until stopped.
        shutdown.cancelled().await;
        shutdown.cancel();
        self.producer.flush_at_shutdown();
        ops.await??;
        for outcome in outcomes {
            outcome?;
        }
        Ok(())
    }
}
