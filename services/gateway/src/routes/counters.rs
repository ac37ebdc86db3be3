//! `/v1/counters`: likes (distinct members) and views (sums). A change is answered 202 once
//! Kafka holds its event (`acks=all`); the counter service applies it. Reads come from Redis,
//! or the database while Redis rebuilds.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, http::Method, web};
use serde::{Deserialize, Serialize};
use spillway_core::{
    counters::config::{CounterKind, NamespaceSettings},
    wire::{self, CounterEvent, CounterOperation},
};
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState,
    auth::{MaybeMember, Member},
    body,
    error::ApiError,
    middleware::RequestId,
    openapi::problems,
    routes::resource,
    validate,
};

/// Ids one multi-read may ask for.
pub const MAX_IDS: usize = 1_000;
/// The longest `ids` a multi-read may send, in characters: its URL stays well inside what
/// the HTTP server reads (128 KiB), even with every character percent-encoded.
pub const MAX_IDS_LENGTH: usize = 32 * 1024;
const DELTA_RANGE: std::ops::RangeInclusive<i64> = 1..=1_000_000;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource(
            "/v1/counters/{namespace}",
            [(Method::GET, web::to(get_many))],
        ))
        .service(resource(
            "/v1/counters/{namespace}/{entity_id}",
            [(Method::GET, web::to(get_one))],
        ))
        .service(resource(
            "/v1/counters/{namespace}/{entity_id}/members/me",
            [
                (Method::PUT, web::to(join)),
                (Method::DELETE, web::to(leave)),
            ],
        ))
        .service(resource(
            "/v1/counters/{namespace}/{entity_id}/increments",
            [(Method::POST, web::to(increment))],
        ));
}

/// A counter's path: its namespace and entity id.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CounterPath {
    /// A configured counter namespace (`[namespaces.<name>]`).
    pub namespace: String,
    /// The counted thing: 1-128 of `[A-Za-z0-9._:-]`.
    pub entity_id: String,
}

/// A namespace's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NamespacePath {
    /// A configured counter namespace (`[namespaces.<name>]`).
    pub namespace: String,
}

/// A like's or an unlike's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Membership {
    /// The count as the caller should now see it.
    pub value: i64,
    /// Whether the caller is now counted.
    pub member: bool,
}

/// An increment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncrementBody {
    /// How much to add (a whole number; `1000.0` is 1000).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub delta: i64,
}

/// An increment's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncrementResult {
    /// The count as the caller should now see it.
    pub value: i64,
    /// True when this gateway knows the Idempotency-Key was acknowledged before: nothing was
    /// published or counted again. Absent after a retry it cannot vouch for (it publishes
    /// the same event id, which counts once).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = bool, required = false)]
    pub replayed: Option<bool>,
}

/// One counter.
#[derive(Debug, Serialize, ToSchema)]
pub struct Counter {
    pub namespace: String,
    pub entity_id: String,
    /// 0 when never counted.
    pub value: i64,
    /// Whether the caller is counted: only for a distinct namespace when a token is sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = bool, required = false)]
    pub member: Option<bool>,
}

/// Many counters of one namespace.
#[derive(Debug, Serialize, ToSchema)]
pub struct CounterValues {
    /// The value of each entity id asked for (0 when never counted).
    pub values: BTreeMap<String, i64>,
}

/// The `Idempotency-Key` of an increment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IncrementHeaders {
    /// A retried POST with the same key counts once within the namespace's dedupe window
    /// (24 h by default), also when the gateway died before answering or Redis was lost: the
    /// key becomes the event's id and the counter applies an id once. The same key with
    /// another delta is a 422. 1-128 visible ASCII characters.
    #[serde(rename = "Idempotency-Key")]
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}

/// The entity ids of a multi-read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IdsQuery {
    /// 1-1000 comma-separated entity ids, at most 32 KiB in all.
    #[param(required = true)]
    pub ids: Option<String>,
}

fn namespace<'a>(state: &'a AppState, name: &str) -> Result<&'a NamespaceSettings, ApiError> {
    state
        .namespaces
        .get(name)
        .ok_or_else(|| ApiError::NotFound(format!("unknown counter namespace `{name}`")))
}

fn require_kind(
    name: &str,
    namespace: &NamespaceSettings,
    kind: CounterKind,
    call: &str,
) -> Result<(), ApiError> {
    if namespace.kind == kind {
        return Ok(());
    }
    let instead = match namespace.kind {
        CounterKind::Sum => format!(
            "`{name}` adds up increments: POST /v1/counters/{name}/{{entity_id}}/increments"
        ),
        CounterKind::Distinct => format!(
            "`{name}` counts members: PUT or DELETE \
             /v1/counters/{name}/{{entity_id}}/members/me"
        ),
    };
    Err(ApiError::Conflict(format!(
        "{call} does not apply to namespace `{name}`; {instead}"
    )))
}

/// A counter's value and whether `member` is counted.
async fn value_and_membership(
    state: &AppState,
    namespace: &str,
    entity_id: &str,
    member: Option<&str>,
) -> Result<(i64, bool), ApiError> {
    Ok(state
        .counters
        .value_and_membership(namespace, entity_id, member)
        .await?)
}

/// The namespace of the event ids derived from Idempotency-Keys (UUIDv5).
const IDEMPOTENT_EVENT_IDS: uuid::Uuid =
    uuid::Uuid::from_u128(0x0b6f_3c1e_52a4_4d0e_9b7e_1f4c_8a2d_6e31);

/// The event id of an increment: derived from the Idempotency-Key when there is one, so a
/// retry carries the same id and the counter counts it once; otherwise fresh, and marked
/// `never_resent` (the counter need not remember it).
fn event_id(namespace: &str, entity_id: &str, idempotency_key: Option<&str>) -> (String, bool) {
    match idempotency_key {
        Some(key) => {
            let name = format!("{namespace}/{entity_id}/{key}");
            let id = uuid::Uuid::new_v5(&IDEMPOTENT_EVENT_IDS, name.as_bytes());
            (id.to_string(), false)
        }
        None => (uuid::Uuid::now_v7().to_string(), true),
    }
}

fn event(
    namespace: &str,
    entity_id: &str,
    request_id: &str,
    operation: CounterOperation,
    idempotency_key: Option<&str>,
) -> CounterEvent {
    let (event_id, never_resent) = event_id(namespace, entity_id, idempotency_key);
    CounterEvent {
        event_id,
        accepted_at: Some(wire::now()),
        request_id: request_id.to_owned(),
        namespace: namespace.to_owned(),
        entity_id: entity_id.to_owned(),
        member: String::new(),
        operation: operation as i32,
        delta: 0,
        never_resent,
    }
}

/// Count the caller once (like). Idempotent.
#[utoipa::path(
    put,
    path = "/v1/counters/{namespace}/{entity_id}/members/me",
    tag = "counters",
    operation_id = "join",
    params(CounterPath),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted (in Kafka).", body = Membership),
        (status = 400, description = "The entity id is not 1-128 of `[A-Za-z0-9._:-]` (`field`: `entity_id`).", body = problems::Problem, content_type = "application/problem+json"),
        (status = 401, response = problems::Unauthorized),
        (status = 404, description = "Unknown namespace.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The namespace adds up increments: it has no members.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn join(
    state: web::Data<AppState>,
    path: web::Path<CounterPath>,
    member: Member,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    change_membership(&state, &path, &member, &request_id.0, true).await
}

/// Stop counting the caller (unlike). Idempotent.
#[utoipa::path(
    delete,
    path = "/v1/counters/{namespace}/{entity_id}/members/me",
    tag = "counters",
    operation_id = "leave",
    params(CounterPath),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted (in Kafka).", body = Membership),
        (status = 400, description = "The entity id is not 1-128 of `[A-Za-z0-9._:-]` (`field`: `entity_id`).", body = problems::Problem, content_type = "application/problem+json"),
        (status = 401, response = problems::Unauthorized),
        (status = 404, description = "Unknown namespace.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The namespace adds up increments: it has no members.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn leave(
    state: web::Data<AppState>,
    path: web::Path<CounterPath>,
    member: Member,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    change_membership(&state, &path, &member, &request_id.0, false).await
}

/// Publishes a like (join) or an unlike, answering the value the caller should now see.
async fn change_membership(
    state: &AppState,
    path: &CounterPath,
    member: &Member,
    request_id: &str,
    join: bool,
) -> Result<HttpResponse, ApiError> {
    let (namespace_name, entity_id) = (path.namespace.as_str(), path.entity_id.as_str());
    let namespace = namespace(state, namespace_name)?;
    require_kind(
        namespace_name,
        namespace,
        CounterKind::Distinct,
        "members/me",
    )?;
    validate::entity_id(entity_id)?;
    let (value, was_member) =
        value_and_membership(state, namespace_name, entity_id, Some(&member.id)).await?;
    let operation = if join {
        CounterOperation::AddMember
    } else {
        CounterOperation::RemoveMember
    };
    let mut counter_event = event(namespace_name, entity_id, request_id, operation, None);
    counter_event.member = member.id.clone();
    state.publish_counter_event(&counter_event).await?;
    let value = match (join, was_member) {
        (true, false) => value + 1,
        (false, true) => value - 1,
        _ => value,
    };
    Ok(HttpResponse::Accepted().json(Membership {
        value,
        member: join,
    }))
}

/// Add to a sum counter (views).
///
/// Needs a member token unless the namespace sets `anonymous_increments = true`.
#[utoipa::path(
    post,
    path = "/v1/counters/{namespace}/{entity_id}/increments",
    tag = "counters",
    operation_id = "increment",
    params(CounterPath, IncrementHeaders),
    request_body = IncrementBody,
    security((), ("bearer" = [])),
    responses(
        (status = 202, description = "Accepted (in Kafka).", body = IncrementResult),
        (status = 400, description = "The body, the entity id or the Idempotency-Key is refused (`field` names it).", body = problems::Problem, content_type = "application/problem+json"),
        (status = 401, response = problems::Unauthorized),
        (status = 404, description = "Unknown namespace.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The namespace counts members: it has no increments.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 413, response = problems::PayloadTooLarge),
        (status = 415, response = problems::UnsupportedMediaType),
        (status = 422, description = "The Idempotency-Key was used for an increment with another delta (`field`: `Idempotency-Key`); nothing was published.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn increment(
    state: web::Data<AppState>,
    path: web::Path<CounterPath>,
    request: HttpRequest,
    caller: MaybeMember,
    body: body::Json<IncrementBody>,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    let CounterPath {
        namespace: namespace_name,
        entity_id,
    } = path.into_inner();
    let namespace = namespace(&state, &namespace_name)?;
    require_kind(&namespace_name, namespace, CounterKind::Sum, "increments")?;
    if caller.0.is_none() && !namespace.anonymous_increments {
        return Err(ApiError::Unauthorized(format!(
            "increments of `{namespace_name}` need a member (the namespace does not set \
             `anonymous_increments`): send `Authorization: Bearer <token>`"
        )));
    }
    validate::entity_id(&entity_id)?;
    if !DELTA_RANGE.contains(&body.delta) {
        return Err(ApiError::InvalidField {
            field: "delta".into(),
            detail: format!("delta {} is outside 1..=1000000", body.delta),
        });
    }
    let idempotency_key = match request.headers().get("idempotency-key") {
        Some(value) => {
            let key = value.to_str().unwrap_or("");
            validate::idempotency_key(key)?;
            Some(key)
        }
        None => None,
    };
    let delta = body.delta;
    let value = match idempotency_key {
        Some(key) => {
            let (value, remembered) = state
                .counters
                .value_and_remembered_increment(&namespace_name, &entity_id, key)
                .await?;
            match remembered {
                // Acknowledged before: answering without publishing loses nothing.
                Some(earlier) if earlier == delta => {
                    return Ok(HttpResponse::Accepted().json(IncrementResult {
                        value,
                        replayed: Some(true),
                    }));
                }
                Some(earlier) => return Err(key_reused(earlier, delta)),
                None => value,
            }
        }
        None => {
            value_and_membership(&state, &namespace_name, &entity_id, None)
                .await?
                .0
        }
    };
    let mut counter_event = event(
        &namespace_name,
        &entity_id,
        &request_id.0,
        CounterOperation::Increment,
        idempotency_key,
    );
    counter_event.delta = delta;
    state.publish_counter_event(&counter_event).await?;
    if let Some(key) = idempotency_key
        && let Err(error) = state
            .counters
            .remember_increment(
                &namespace_name,
                &entity_id,
                key,
                delta,
                namespace.dedupe_window(),
            )
            .await
    {
        // The event is in Kafka and its id deduplicates a retry; only the shortcut is lost.
        tracing::warn!(%error, "remembering an acknowledged Idempotency-Key failed");
    }
    Ok(HttpResponse::Accepted().json(IncrementResult {
        value: value + delta,
        replayed: None,
    }))
}

/// An Idempotency-Key sent again with another body.
fn key_reused(earlier: i64, delta: i64) -> ApiError {
    ApiError::IdempotencyKeyReused(format!(
        "this Idempotency-Key was used for an increment of {earlier}; this request asks for \
         {delta}. Send a new key for a new increment"
    ))
}

/// One counter (0 when never counted).
///
/// With a token, and a distinct namespace, says whether the caller is counted.
#[utoipa::path(
    get,
    path = "/v1/counters/{namespace}/{entity_id}",
    tag = "counters",
    operation_id = "read_counter",
    params(CounterPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The counter.", body = Counter),
        (status = 400, description = "The entity id is not 1-128 of `[A-Za-z0-9._:-]` (`field`: `entity_id`).", body = problems::Problem, content_type = "application/problem+json"),
        (status = 401, response = problems::Unauthorized),
        (status = 404, description = "Unknown namespace.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn get_one(
    state: web::Data<AppState>,
    path: web::Path<CounterPath>,
    caller: MaybeMember,
) -> Result<HttpResponse, ApiError> {
    let CounterPath {
        namespace: namespace_name,
        entity_id,
    } = path.into_inner();
    let namespace = namespace(&state, &namespace_name)?;
    validate::entity_id(&entity_id)?;
    let member = caller.0.filter(|_| namespace.kind == CounterKind::Distinct);
    let (value, is_member) = value_and_membership(
        &state,
        &namespace_name,
        &entity_id,
        member.as_ref().map(|m| m.id.as_str()),
    )
    .await?;
    Ok(HttpResponse::Ok().json(Counter {
        namespace: namespace_name,
        entity_id,
        value,
        member: member.map(|_| is_member),
    }))
}

/// Many counters of one namespace.
#[utoipa::path(
    get,
    path = "/v1/counters/{namespace}",
    tag = "counters",
    operation_id = "read_counters",
    params(NamespacePath, IdsQuery),
    responses(
        (status = 200, description = "Values by entity id.", body = CounterValues),
        (status = 400, description = "`ids` is missing, empty, too long, or holds an id that is not 1-128 of `[A-Za-z0-9._:-]` (`field` names it).", body = problems::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown namespace.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn get_many(
    state: web::Data<AppState>,
    path: web::Path<NamespacePath>,
    query: web::Query<IdsQuery>,
) -> Result<HttpResponse, ApiError> {
    let namespace_name = path.into_inner().namespace;
    namespace(&state, &namespace_name)?;
    let ids = requested_ids(query.ids.as_deref().unwrap_or(""))?;
    for id in &ids {
        validate::entity_id(id).map_err(|error| match error {
            ApiError::InvalidField { detail, .. } => ApiError::InvalidField {
                field: "ids".into(),
                detail: format!("`ids`: {detail}"),
            },
            other => other,
        })?;
    }
    let values = state.counters.read_values(&namespace_name, &ids).await?;
    Ok(HttpResponse::Ok().json(CounterValues {
        values: values.into_iter().collect(),
    }))
}

/// The ids of `ids=a,b,c`: 1 to [`MAX_IDS`] of them, none empty, [`MAX_IDS_LENGTH`] at most.
fn requested_ids(ids: &str) -> Result<Vec<String>, ApiError> {
    let refused = || ApiError::InvalidField {
        field: "ids".into(),
        detail: format!(
            "`ids` must list 1-{MAX_IDS} comma-separated entity ids, at most {MAX_IDS_LENGTH} \
             characters in all"
        ),
    };
    if ids.is_empty() || ids.len() > MAX_IDS_LENGTH {
        return Err(refused());
    }
    let ids: Vec<String> = ids.split(',').map(str::to_owned).collect();
    if ids.len() > MAX_IDS {
        return Err(refused());
    }
    Ok(ids)
}
