//! `/v1/templates`: templates are registered by operators (scope `templates:write`); any
//! member takes a copy, from the pool when it has one (one copy, one caller), otherwise made
//! inside the request. Either way template-warmup is asked to refill the pool.
//!
//! A direct copy runs in a task of its own: if the request ends first (its deadline, a
//! client gone), the copy still finishes or cleans up, and a finished one goes to the pool.

use std::time::Instant;

use actix_web::{HttpResponse, web};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use serde::Deserialize;
use serde_json::json;
use spillway_core::{
    metrics::Metrics,
    templates::{
        self, CopyMaker, CopyOrigin, CopyRecord, CopyState, Template,
        store::{self, Registration},
    },
};
use tokio::sync::oneshot;

use crate::{AppState, auth::Member, body, error::ApiError, middleware::RequestId};

/// The scope a token needs to register templates.
pub const WRITE_SCOPE: &str = "templates:write";

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/templates/{template_id}", web::put().to(register))
        .route("/v1/templates/{template_id}", web::get().to(show))
        .route(
            "/v1/templates/{template_id}/copies",
            web::post().to(take_copy),
        )
        .route("/v1/templates/{template_id}/pool", web::get().to(pool));
}

/// The gateway's template metrics.
#[derive(Clone)]
pub struct TemplateMetrics {
    /// Copies handed out, by source (`pool`, `direct`) and outcome (`ok`, `failed`).
    pub copies: IntCounterVec,
    /// Seconds to answer a copy request, by source.
    pub copy_duration: HistogramVec,
}

impl TemplateMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            copies: metrics.register(
                IntCounterVec::new(
                    Opts::new(
                        metrics.name("template_copies_total"),
                        "Template copies handed out",
                    ),
                    &["source", "outcome"],
                )
                .expect("valid metric"),
            ),
            copy_duration: metrics.register(
                HistogramVec::new(
                    HistogramOpts::new(
                        metrics.name("template_copy_duration_seconds"),
                        "Time to hand out a template copy",
                    )
                    .buckets(prometheus::exponential_buckets(0.000_5, 2.0, 16).expect("buckets")),
                    &["source"],
                )
                .expect("valid metric"),
            ),
        }
    }

    fn observe(&self, source: &str, outcome: &str, started: Instant) {
        self.copies.with_label_values(&[source, outcome]).inc();
        self.copy_duration
            .with_label_values(&[source])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// What the gateway needs for templates.
#[derive(Clone)]
pub struct TemplateState {
    pub maker: CopyMaker,
    pub metrics: TemplateMetrics,
    pub warmup_topic: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registering {
    objects: Vec<String>,
    #[serde(default = "default_capacity")]
    pool_capacity: i64,
}

fn default_capacity() -> i64 {
    4
}

fn template_id(path: web::Path<String>) -> Result<String, ApiError> {
    let id = path.into_inner();
    templates::validate_id(&id).map_err(|error| ApiError::InvalidField {
        field: "template_id".into(),
        detail: error.to_string(),
    })?;
    Ok(id)
}

fn template_json(template: &Template) -> serde_json::Value {
    json!({
        "template_id": template.id,
        "version": template.version,
        "pool_capacity": template.pool_capacity,
        "objects": template.objects,
    })
}

fn copy_json(record: &CopyRecord, source: &str) -> serde_json::Value {
    json!({
        "copy_id": record.copy_id,
        "template_id": record.template_id,
        "version": record.version,
        "objects": record.objects,
        "source": source,
    })
}

async fn load(state: &AppState, id: &str) -> Result<Template, ApiError> {
    store::load_template(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("unknown template `{id}`")))
}

/// Asks for a refill; a failure is logged, not answered (the sweeper asks again).
async fn request_refill(state: &AppState, template: &Template, reason: &str, request_id: &str) {
    if template.pool_capacity == 0 {
        return;
    }
    let topic = &state.templates.warmup_topic;
    if let Err(error) =
        templates::request_refill(&state.producer, topic, template, reason, request_id).await
    {
        tracing::warn!(%error, template_id = %template.id, "refill request not sent");
    }
}

/// `PUT /v1/templates/{template_id}`.
async fn register(
    state: web::Data<AppState>,
    path: web::Path<String>,
    member: Member,
    body: body::Json<Registering>,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    member.require_scope(WRITE_SCOPE)?;
    let id = template_id(path)?;
    let Registering {
        objects,
        pool_capacity,
    } = body.into_inner();
    let maker = &state.templates.maker;
    templates::validate_registration(&objects, pool_capacity, maker.copier.copy_prefix()).map_err(
        |error| ApiError::InvalidField {
            field: match error {
                templates::InvalidTemplate::Capacity => "pool_capacity",
                _ => "objects",
            }
            .into(),
            detail: error.to_string(),
        },
    )?;
    let missing = maker.copier.missing(&objects).await?;
    if !missing.is_empty() {
        return Err(ApiError::InvalidField {
            field: "objects".into(),
            detail: format!("not in the bucket: {}", missing.join(", ")),
        });
    }
    let capacity = i32::try_from(pool_capacity).expect("validated");
    let (template, registration) = store::register(&state.db, &id, &objects, capacity).await?;
    if registration == Registration::NewVersion {
        retire_pool(maker, &template.id).await?;
    }
    if registration != Registration::Unchanged {
        request_refill(&state, &template, "registered", &request_id.0).await;
    }
    let body = template_json(&template);
    Ok(match registration {
        Registration::Created => HttpResponse::Created().json(body),
        _ => HttpResponse::Ok().json(body),
    })
}

/// Empties a template's pool (nobody gets an old copy after the new version is answered)
/// and deletes the old copies; what cannot be deleted now the sweeper deletes later.
async fn retire_pool(maker: &CopyMaker, template_id: &str) -> Result<(), ApiError> {
    let snapshot = maker.pool.snapshot(template_id).await?;
    let removed = maker.pool.remove(template_id, &snapshot.pooled).await?;
    if let Err(error) = maker.retire(template_id, &removed, "retired").await {
        tracing::warn!(%error, template_id, "old copies left to the sweeper");
    }
    Ok(())
}

/// `GET /v1/templates/{template_id}`.
async fn show(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = template_id(path)?;
    Ok(HttpResponse::Ok().json(template_json(&load(&state, &id).await?)))
}

/// `GET /v1/templates/{template_id}/pool`.
async fn pool(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = template_id(path)?;
    let template = load(&state, &id).await?;
    let ready = state.templates.maker.pool.ready(&id).await?;
    Ok(HttpResponse::Ok().json(json!({ "ready": ready, "capacity": template.pool_capacity })))
}

/// `POST /v1/templates/{template_id}/copies`.
async fn take_copy(
    state: web::Data<AppState>,
    path: web::Path<String>,
    _member: Member,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    let id = template_id(path)?;
    let started = Instant::now();
    let metrics = &state.templates.metrics;
    if let Some(record) = take_from_pool(&state, &id).await {
        let template = Template {
            id: id.clone(),
            version: record.version,
            pool_capacity: 1,
            objects: Vec::new(),
        };
        request_refill(&state, &template, "taken", &request_id.0).await;
        metrics.observe("pool", "ok", started);
        return Ok(HttpResponse::Created().json(copy_json(&record, "pool")));
    }
    let template = load(&state, &id).await?;
    request_refill(&state, &template, "empty", &request_id.0).await;
    match copy_directly(state.templates.maker.clone(), template).await {
        Ok(record) => {
            metrics.observe("direct", "ok", started);
            Ok(HttpResponse::Created().json(copy_json(&record, "direct")))
        }
        Err(error) => {
            metrics.observe("direct", "failed", started);
            Err(error)
        }
    }
}

/// A copy from the pool, recorded as taken; `None` when the pool is empty or Redis is down
/// (the caller then copies directly).
async fn take_from_pool(state: &AppState, template_id: &str) -> Option<CopyRecord> {
    let maker = &state.templates.maker;
    let record = match maker.pool.take(template_id).await {
        Ok(record) => record?,
        Err(error) => {
            tracing::warn!(%error, template_id, "pool unreadable; copying directly");
            return None;
        }
    };
    let ids = [record.copy_id];
    let recorded =
        store::transition(&maker.db, &ids, CopyState::Ready, CopyState::Taken, None).await;
    match recorded {
        Ok(_) => {
            if let Err(error) = maker.pool.forget_taken(template_id, &ids).await {
                tracing::debug!(%error, "handed-out marker left to the sweeper");
            }
        }
        Err(error) => tracing::warn!(%error, "taken copy left for the sweeper to record"),
    }
    Some(record)
}

/// Copies every object of `template` in a task of its own and waits for it.
async fn copy_directly(maker: CopyMaker, template: Template) -> Result<CopyRecord, ApiError> {
    let (delivered, receiver) = oneshot::channel();
    tokio::spawn(async move {
        let outcome = make_direct_copy(&maker, &template, &delivered).await;
        if let Err(Ok(record)) = delivered.send(outcome) {
            // The caller left between the hand-out and the delivery: the copy is still whole.
            if let Err(error) = maker.pool(&record, CopyState::Taken).await {
                tracing::warn!(%error, copy_id = %record.copy_id, "undelivered copy not pooled");
            }
        }
    });
    receiver
        .await
        .unwrap_or_else(|_| Err(ApiError::S3("the copy task ended unexpectedly".into())))
}

async fn make_direct_copy(
    maker: &CopyMaker,
    template: &Template,
    delivered: &oneshot::Sender<Result<CopyRecord, ApiError>>,
) -> Result<CopyRecord, ApiError> {
    let record = maker.copy(template, CopyOrigin::Direct).await?;
    if delivered.is_closed() {
        // Nobody waits any more: the finished copy goes to the pool rather than to waste.
        maker.pool(&record, CopyState::Copying).await?;
        return Err(ApiError::S3("the caller left".into()));
    }
    if !maker.hand_out(&record).await? {
        return Err(ApiError::S3(
            "the copy was abandoned before it finished".into(),
        ));
    }
    Ok(record)
}
