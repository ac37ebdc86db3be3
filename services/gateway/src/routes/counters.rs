//! `/v1/counters`: likes (distinct members) and views (sums). A change is answered 202 once
//! Kafka holds its event (`acks=all`); the counter service applies it. Reads come from Redis,
//! or the database while Redis rebuilds.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use spillway_core::{
    counters::config::{CounterKind, NamespaceSettings},
    wire::{self, CounterEvent, CounterOperation},
};

use crate::{
    AppState,
    auth::{MaybeMember, Member},
    body,
    error::ApiError,
    middleware::RequestId,
    validate,
};

/// Ids one multi-read may ask for.
const MAX_IDS: usize = 1_000;
const DELTA_RANGE: std::ops::RangeInclusive<i64> = 1..=1_000_000;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/counters/{namespace}", web::get().to(get_many))
        .route(
            "/v1/counters/{namespace}/{entity_id}",
            web::get().to(get_one),
        )
        .route(
            "/v1/counters/{namespace}/{entity_id}/members/me",
            web::put().to(join),
        )
        .route(
            "/v1/counters/{namespace}/{entity_id}/members/me",
            web::delete().to(leave),
        )
        .route(
            "/v1/counters/{namespace}/{entity_id}/increments",
            web::post().to(increment),
        );
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

async fn join(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    member: Member,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    change_membership(&state, &path.0, &path.1, &member, &request_id.0, true).await
}

async fn leave(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    member: Member,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    change_membership(&state, &path.0, &path.1, &member, &request_id.0, false).await
}

/// Publishes a like (join) or an unlike, answering the value the caller should now see.
async fn change_membership(
    state: &AppState,
    namespace_name: &str,
    entity_id: &str,
    member: &Member,
    request_id: &str,
    join: bool,
) -> Result<HttpResponse, ApiError> {
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
    Ok(HttpResponse::Accepted().json(json!({"value": value, "member": join})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementBody {
    delta: i64,
}

async fn increment(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    caller: MaybeMember,
    body: body::Json<IncrementBody>,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    let (namespace_name, entity_id) = path.into_inner();
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
                    return Ok(
                        HttpResponse::Accepted().json(json!({"value": value, "replayed": true}))
                    );
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
    Ok(HttpResponse::Accepted().json(json!({"value": value + delta})))
}

/// An Idempotency-Key sent again with another body.
fn key_reused(earlier: i64, delta: i64) -> ApiError {
    ApiError::IdempotencyKeyReused(format!(
        "this Idempotency-Key was used for an increment of {earlier}; this request asks for \
         {delta}. Send a new key for a new increment"
    ))
}

async fn get_one(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    caller: MaybeMember,
) -> Result<HttpResponse, ApiError> {
    let (namespace_name, entity_id) = path.into_inner();
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
    let mut body = json!({"namespace": namespace_name, "entity_id": entity_id, "value": value});
    if member.is_some() {
        body["member"] = json!(is_member);
    }
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Debug, Deserialize)]
struct IdsQuery {
    ids: Option<String>,
}

async fn get_many(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<IdsQuery>,
) -> Result<HttpResponse, ApiError> {
    let namespace_name = path.into_inner();
    namespace(&state, &namespace_name)?;
    let ids: Vec<String> = query
        .ids
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(ApiError::InvalidField {
            field: "ids".into(),
            detail: format!("`ids` must list 1-{MAX_IDS} comma-separated entity ids"),
        });
    }
    for id in &ids {
        validate::entity_id(id)?;
    }
    let values = state.counters.read_values(&namespace_name, &ids).await?;
    Ok(HttpResponse::Ok().json(json!({"values": values})))
}
