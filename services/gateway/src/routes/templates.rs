//! `/v1/templates`: templates are registered by operators (scope `templates:write`); any
//! member takes a copy, from the pool when it has one (one copy, one caller), otherwise made
//! inside the request. Either way template-warmup is asked to refill the pool.
//!
//! A direct copy runs in a task of its own: if the request ends first (its deadline, a
//! client gone), the copy still finishes or cleans up, and a finished one goes to the pool.

use std::time::Instant;

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, HttpResponse, dev::Payload, http::Method, web};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use serde::{Deserialize, Serialize};
use spillway_core::{
    metrics::Metrics,
    templates::{
        self, CopiedObject, CopyMaker, CopyOrigin, CopyRecord, CopyState, MAX_KEY_CHARS,
        MAX_OBJECTS, Template,
        store::{self, Registration},
    },
};
use tokio::sync::oneshot;
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState,
    auth::Member,
    body,
    error::ApiError,
    middleware::RequestId,
    openapi::{problems, schemas},
    routes::{json_config_up_to, resource},
};

/// The scope a token needs to register templates.
pub const WRITE_SCOPE: &str = "templates:write";

/// The largest registration body: room for [`MAX_OBJECTS`] keys of [`MAX_KEY_CHARS`]
/// characters written as `\uXXXX` escapes (6 bytes a character, what most JSON encoders send
/// for any non-ASCII character), so that every registration the document allows is read, and
/// one with too many objects is refused naming `objects` rather than for its size.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
const _: () = assert!(MAX_OBJECTS * (MAX_KEY_CHARS * 6 + 3) + 1024 < MAX_BODY_BYTES);

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            resource(
                "/v1/templates/{template_id}",
                [
                    (Method::PUT, web::to(register)),
                    (Method::GET, web::to(show)),
                ],
            )
            .app_data(json_config_up_to(MAX_BODY_BYTES)),
        )
        .service(resource(
            "/v1/templates/{template_id}/copies",
            [(Method::POST, web::to(take_copy))],
        ))
        .service(resource(
            "/v1/templates/{template_id}/pool",
            [(Method::GET, web::to(pool))],
        ));
}

/// A template's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TemplatePath {
    /// A template id: 1-128 of `[A-Za-z0-9._-]`.
    pub template_id: String,
}

/// A member who may register templates (scope `templates:write`), checked before the body
/// is read.
pub struct TemplateWriter(#[allow(dead_code)] pub Member);

impl FromRequest for TemplateWriter {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let member = Member::from_request(request, payload);
        Box::pin(async move {
            let member = member.await?;
            member.require_scope(WRITE_SCOPE)?;
            Ok(Self(member))
        })
    }
}

/// A template as registered.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateBody {
    pub template_id: String,
    /// Grows by one whenever the object list changes.
    pub version: i64,
    #[schema(minimum = 0, maximum = 1000)]
    pub pool_capacity: i32,
    /// Source keys in the configured bucket, in order.
    pub objects: Vec<String>,
}

/// Where a copy came from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CopySource {
    /// From the warm pool.
    Pool,
    /// Copied inside the request.
    Direct,
}

/// One object of a copy.
#[derive(Debug, Serialize, ToSchema)]
pub struct CopyObject {
    /// The template's source key.
    pub source: String,
    /// Unique to this copy: `copies/<template_id>/<copy_id>/<position>-<name>`.
    pub key: String,
}

/// A copy of every object of a template, the caller's alone.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateCopy {
    pub copy_id: uuid::Uuid,
    pub template_id: String,
    pub version: i64,
    pub objects: Vec<CopyObject>,
    pub source: CopySource,
}

/// A template's pool.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pool {
    /// Ready copies now.
    pub ready: u64,
    /// How many the pool is kept at.
    pub capacity: i32,
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

/// A registration: the source objects, in order, and the pool's size.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registering {
    /// Source keys in the configured bucket, each listed once: 1-1024 characters without
    /// control characters or a leading `/`, not under the copy prefix.
    #[schema(schema_with = schemas::template_objects)]
    pub objects: Vec<String>,
    /// Ready copies to keep (0 keeps none).
    #[serde(default = "default_capacity")]
    #[schema(minimum = 0, maximum = 1000, default = 4)]
    pub pool_capacity: i64,
}

fn default_capacity() -> i64 {
    4
}

fn template_id(path: web::Path<TemplatePath>) -> Result<String, ApiError> {
    let id = path.into_inner().template_id;
    templates::validate_id(&id).map_err(|error| ApiError::InvalidField {
        field: "template_id".into(),
        detail: error.to_string(),
    })?;
    Ok(id)
}

fn template_json(template: &Template) -> TemplateBody {
    TemplateBody {
        template_id: template.id.clone(),
        version: template.version,
        pool_capacity: template.pool_capacity,
        objects: template.objects.clone(),
    }
}

fn copy_json(record: &CopyRecord, source: CopySource) -> TemplateCopy {
    let object = |object: &CopiedObject| CopyObject {
        source: object.source.clone(),
        key: object.key.clone(),
    };
    TemplateCopy {
        copy_id: record.copy_id,
        template_id: record.template_id.clone(),
        version: record.version,
        objects: record.objects.iter().map(object).collect(),
        source,
    }
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

/// Register a template or change it (scope `templates:write`).
///
/// Every source must exist in the bucket. A changed object list is a new version: the pool
/// is emptied at once and the old copies are deleted. A changed capacity keeps the version.
/// Template-warmup is asked to fill the pool.
#[utoipa::path(
    put,
    path = "/v1/templates/{template_id}",
    tag = "templates",
    operation_id = "register_template",
    params(TemplatePath),
    request_body(
        content = Registering,
        description = "The sources, which must be in the bucket already (the example's are the ones `cargo xtask check-api` uploads), and the pool's size.",
        example = json!({
            "objects": ["templates/welcome-kit/image-00.png", "templates/welcome-kit/image-01.png"],
            "pool_capacity": 2
        })
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated (or unchanged).", body = TemplateBody, links(
            ("ReadTemplate" = (operation_id = "read_template", parameters(("template_id" = "$request.path.template_id")), description = "Read the template back.")),
            ("ReadPool" = (operation_id = "read_pool", parameters(("template_id" = "$request.path.template_id")), description = "How many copies its pool holds.")),
            ("TakeCopy" = (operation_id = "take_copy", parameters(("template_id" = "$request.path.template_id")), description = "Take a copy of its objects.")),
        )),
        (status = 201, description = "Created.", body = TemplateBody, links(
            ("ReadTemplate" = (operation_id = "read_template", parameters(("template_id" = "$request.path.template_id")), description = "Read the template back.")),
            ("ReadPool" = (operation_id = "read_pool", parameters(("template_id" = "$request.path.template_id")), description = "How many copies its pool holds.")),
            ("TakeCopy" = (operation_id = "take_copy", parameters(("template_id" = "$request.path.template_id")), description = "Take a copy of its objects.")),
        )),
        (status = 400, description = "The template id or the body is refused (`field` names it: `template_id`, `objects`, `pool_capacity`).", body = problems::Problem, content_type = "application/problem+json"),
        (status = 401, response = problems::Unauthorized),
        (status = 403, description = "The token lacks the scope `templates:write`.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 8 MiB.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 415, response = problems::UnsupportedMediaType),
        (status = 422, description = "Sources that are not in the bucket (`sources-missing`, `field`: `objects`; `detail` lists them): upload them first.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn register(
    state: web::Data<AppState>,
    path: web::Path<TemplatePath>,
    _writer: TemplateWriter,
    body: body::Json<Registering>,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
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
        return Err(ApiError::SourcesMissing(format!(
            "not in the bucket: {}",
            missing.join(", ")
        )));
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

/// A template at its current version.
#[utoipa::path(
    get,
    path = "/v1/templates/{template_id}",
    tag = "templates",
    operation_id = "read_template",
    params(TemplatePath),
    responses(
        (status = 200, description = "The template.", body = TemplateBody),
        (status = 400, description = "The template id is not 1-128 of `[A-Za-z0-9._-]` (`field`: `template_id`).", body = problems::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown template.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn show(
    state: web::Data<AppState>,
    path: web::Path<TemplatePath>,
) -> Result<HttpResponse, ApiError> {
    let id = template_id(path)?;
    Ok(HttpResponse::Ok().json(template_json(&load(&state, &id).await?)))
}

/// How many ready copies the pool holds.
#[utoipa::path(
    get,
    path = "/v1/templates/{template_id}/pool",
    tag = "templates",
    operation_id = "read_pool",
    params(TemplatePath),
    responses(
        (status = 200, description = "The pool.", body = Pool),
        (status = 400, description = "The template id is not 1-128 of `[A-Za-z0-9._-]` (`field`: `template_id`).", body = problems::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown template.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn pool(
    state: web::Data<AppState>,
    path: web::Path<TemplatePath>,
) -> Result<HttpResponse, ApiError> {
    let id = template_id(path)?;
    let template = load(&state, &id).await?;
    let ready = state.templates.maker.pool.ready(&id).await?;
    Ok(HttpResponse::Ok().json(Pool {
        ready,
        capacity: template.pool_capacity,
    }))
}

/// Take a copy of every object of the template, yours alone.
///
/// From the pool when it has a ready copy (one copy, one caller), otherwise copied inside the
/// request (server-side CopyObject, bounded parallelism; deadline `gateway.copy_deadline_ms`).
/// A direct copy that fails half way is deleted and never handed out. Either way a refill is
/// requested.
#[utoipa::path(
    post,
    path = "/v1/templates/{template_id}/copies",
    tag = "templates",
    operation_id = "take_copy",
    params(TemplatePath),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The copy.", body = TemplateCopy),
        (status = 400, description = "The template id is not 1-128 of `[A-Za-z0-9._-]` (`field`: `template_id`).", body = problems::Problem, content_type = "application/problem+json"),
        (status = 401, response = problems::Unauthorized),
        (status = 404, description = "Unknown template.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 502, description = "S3 refused a copy (e.g. a source was deleted); what was made is deleted.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn take_copy(
    state: web::Data<AppState>,
    path: web::Path<TemplatePath>,
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
        return Ok(HttpResponse::Created().json(copy_json(&record, CopySource::Pool)));
    }
    let template = load(&state, &id).await?;
    request_refill(&state, &template, "empty", &request_id.0).await;
    match copy_directly(state.templates.maker.clone(), template).await {
        Ok(record) => {
            metrics.observe("direct", "ok", started);
            Ok(HttpResponse::Created().json(copy_json(&record, CopySource::Direct)))
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
