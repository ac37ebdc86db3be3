//! The gateway: spillway's REST front door (actix-web). It answers reads from Redis (the
//! database on a miss) and acknowledges changes once Kafka holds them; the consumer services
//! do the rest.
//!
//! A request meets the modules in this order:
//! - [`middleware`]: request id, deadline, request metrics.
//! - [`auth`]: the member from the bearer JWT.
//! - [`routes`]: one module per resource (`/v1/counters`, `/v1/writes`, `/v1/templates`,
//!   `/v1/queues`, `/v1/views`), reading bodies with [`body`], checking input with
//!   [`validate`] and reads with [`access`].
//! - [`views`]: cached views behind `/v1/views`: Redis, one reload per key on a miss.
//! - [`error`]: every failure becomes problem+json in one place.
//! - [`openapi`]: the API's OpenAPI 3.1 document, generated from the handlers and the
//!   configuration, served at `/openapi.json` (and shown at `/docs`).

pub mod access;
pub mod auth;
pub mod body;
pub mod error;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod validate;
pub mod views;

use std::{collections::BTreeMap, net::TcpListener, time::Duration};

use actix_cors::Cors;
use actix_web::{
    App, HttpServer,
    http::header,
    middleware::{Condition, from_fn},
    web,
};
use spillway_core::{
    config::{KafkaSettings, Settings},
    counters::{CounterStore, config::NamespaceSettings},
    db::Db,
    faults,
    http::{self, OpsState},
    kafka::producer::{Delivered, EventProducer},
    queues::WaitingRooms,
    service::{self, ServiceBase},
    sinks::{PendingWrites, SinkSettings},
    templates::{CopyMaker, S3Copier, TemplatePool},
    views::store::ViewStore,
    wire::CounterEvent,
};
use tokio_util::sync::CancellationToken;

use crate::{error::ApiError, middleware::RequestObserver};

/// What the handlers share.
pub struct AppState {
    pub namespaces: BTreeMap<String, NamespaceSettings>,
    pub db: Db,
    pub producer: EventProducer,
    pub counters: CounterStore,
    pub pending: PendingWrites,
    pub counter_topic: String,
    pub sinks: BTreeMap<String, SinkSettings>,
    pub kafka: KafkaSettings,
    pub templates: routes::templates::TemplateState,
    pub waiting_rooms: WaitingRooms,
    pub admission: routes::queues::AdmissionSigner,
    pub views: views::ViewReader,
}

impl AppState {
    /// The topic a sink's rows travel on.
    pub fn writes_topic(&self, sink: &str) -> String {
        self.kafka.writes_topic(sink)
    }

    /// Publishes a counter event keyed `namespace/entity_id`; returns once Kafka holds it.
    pub async fn publish_counter_event(&self, event: &CounterEvent) -> Result<Delivered, ApiError> {
        let key = format!("{}/{}", event.namespace, event.entity_id);
        let delivered = self
            .producer
            .publish(&self.counter_topic, key.as_bytes(), event, &[])
            .await?;
        faults::point(faults::GATEWAY_AFTER_PUBLISH);
        Ok(delivered)
    }
}

/// The admission secret: its own when configured, else the member JWT secret.
fn admission_secret(settings: &Settings) -> &str {
    match settings.admission.secret.expose() {
        "" => settings.jwt_secret.expose(),
        secret => secret,
    }
}

/// The gateway, built and bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    state: web::Data<AppState>,
    ops: OpsState,
    observer: web::Data<RequestObserver>,
    authenticator: web::Data<auth::Authenticator>,
    document: web::Data<openapi::ServedDocument>,
    producer: EventProducer,
    cors_origins: Vec<String>,
}

/// CORS for the configured browser origins (`gateway.cors_origins`): preflights answered,
/// the API's request and answer headers allowed. A request from another origin is served
/// without CORS headers, so the browser refuses to hand the answer to its page.
fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .block_on_origin_mismatch(false)
        .allowed_methods(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static(middleware::REQUEST_ID_HEADER),
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
            header::HeaderName::from_static(middleware::REQUEST_ID_HEADER),
            header::HeaderName::from_static(routes::views::CACHE_STATUS_HEADER),
        ])
        .max_age(3_600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if settings.jwt_secret.expose().is_empty() {
            anyhow::bail!("configuration key `jwt_secret` (SPILLWAY_JWT_SECRET): must be set");
        }
        let mut base = ServiceBase::start("gateway", settings).await?;
        let redis = base.with_redis()?;
        let db = base.with_database().await?;
        let settings = &base.settings;
        let templates = routes::templates::TemplateState {
            maker: CopyMaker::new(
                db.clone(),
                TemplatePool::new(redis.clone()),
                // No readiness check on S3: without it only direct copies fail; pool hits,
                // counters and writes go on.
                S3Copier::new(
                    spillway_core::s3::client(&settings.s3),
                    &settings.s3.bucket,
                    &settings.templates,
                ),
            ),
            metrics: routes::templates::TemplateMetrics::new(&base.metrics),
            warmup_topic: settings.kafka.warmup_requests.name.clone(),
        };
        let view_store = ViewStore::new(redis.clone(), db.clone());
        let state = AppState {
            namespaces: settings.namespaces.clone(),
            db: db.clone(),
            producer: base.producer.clone(),
            pending: PendingWrites::new(redis.clone()),
            counters: CounterStore::new(redis.clone(), db.clone()),
            counter_topic: settings.kafka.counter_events.name.clone(),
            sinks: settings.sinks.clone(),
            kafka: settings.kafka.clone(),
            templates,
            waiting_rooms: WaitingRooms::new(redis.clone(), settings.queues.clone(), &base.metrics),
            admission: routes::queues::AdmissionSigner::new(
                admission_secret(settings),
                settings.admission.ttl_seconds,
            ),
            views: views::ViewReader::new(view_store, settings.views.clone(), &base.metrics),
        };
        state.views.check_queries().await;
        let document = openapi::ServedDocument::new(&openapi::document(settings))?;
        let deadline = Duration::from_millis(settings.gateway.request_deadline_ms);
        let copy_deadline = Duration::from_millis(settings.gateway.copy_deadline_ms);
        Ok(Self {
            listener: service::bind(&settings.gateway.listen)?,
            observer: web::Data::new(RequestObserver::new(&base.metrics, deadline, copy_deadline)),
            authenticator: web::Data::new(auth::Authenticator::new(settings.jwt_secret.expose())),
            state: web::Data::new(state),
            document: web::Data::new(document),
            ops: base.ops_state(),
            producer: base.producer.clone(),
            cors_origins: settings.gateway.cors_origins.clone(),
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|address| address.port())
            .unwrap_or(0)
    }

    /// Serves until the token is cancelled, then lets in-flight requests finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        service::announce("gateway", &self.listener);
        self.ops.spawn_dependency_monitor(shutdown.clone());
        let (state, ops, observer, authenticator, document) = (
            self.state,
            self.ops,
            self.observer,
            self.authenticator,
            self.document,
        );
        let origins = self.cors_origins;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(observer.clone())
                .app_data(authenticator.clone())
                // Inside the observer, so preflights are counted and logged like any call.
                .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
                .wrap(from_fn(middleware::observe))
                .configure(http::configure_ops(ops.clone()))
                .configure(openapi::configure(document.clone()))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .disable_signals()
        .shutdown_timeout(http::HTTP_DRAIN_TIMEOUT.as_secs())
        .listen(self.listener)?
        .run();
        http::run_until_cancelled(server, shutdown).await?;
        self.producer.flush_at_shutdown();
        Ok(())
    }
}
