//! `/v1/writes/{sink}`: a write is checked against its sink, remembered in Redis as pending
//! (so the caller can read it back at once), published, and answered 202 once Kafka holds
//! it. The batch-writer stores it in bulk and clears the marker after the commit.

use actix_web::{
    HttpResponse,
    http::{Method, header},
    web,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spillway_core::{
    faults,
    sinks::{self, ConflictRule, MarkedWrite, SinkSettings},
    wire::{self, WriteEvent, WriteOperation},
};
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState, access, auth::MaybeMember, error::ApiError, middleware::RequestId, openapi::problems,
    routes::resource,
};

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource(
            "/v1/writes/{sink}",
            [(Method::POST, web::to(create))],
        ))
        .service(resource(
            "/v1/writes/{sink}/{id}",
            [(Method::GET, web::to(read))],
        ));
}

/// A sink's path (the document gives each configured sink a path of its own).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SinkPath {
    /// A configured sink (`[sinks.<name>]`).
    pub sink: String,
}

/// A write's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WritePath {
    /// A configured sink (`[sinks.<name>]`).
    pub sink: String,
    /// The row's primary key, of its column's type.
    pub id: String,
}

/// Where a write stands.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteStatus {
    /// Acknowledged (in Kafka), not yet in the table: read back from Redis.
    Pending,
    /// In the table.
    Committed,
}

/// A write's acknowledgement.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriteAccepted {
    /// The row's primary key: the body's, or a UUIDv7 made by the gateway.
    pub id: String,
    pub status: WriteStatus,
    /// True when a sink that keeps the first write of an id (`on_conflict = "ignore"`)
    /// already holds this member's write of this id: nothing was published, and `row` is the
    /// one it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = bool, required = false)]
    pub replayed: Option<bool>,
    /// The row held (with `replayed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, required = false)]
    pub row: Option<Value>,
}

/// A write read back.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriteRead {
    /// The row's primary key.
    pub id: String,
    pub status: WriteStatus,
    /// The row, every column of the sink.
    #[schema(value_type = Object)]
    pub row: Value,
}

fn sink<'a>(state: &'a AppState, name: &str) -> Result<&'a SinkSettings, ApiError> {
    state
        .sinks
        .get(name)
        .ok_or_else(|| ApiError::NotFound(format!("unknown sink `{name}`")))
}

fn invalid(error: sinks::RowError) -> ApiError {
    ApiError::InvalidField {
        field: error.column.clone(),
        detail: error.to_string(),
    }
}

/// Store a row in a sink's table, in bulk, later. 202 once Kafka holds it.
///
/// The body is a JSON object of the sink's columns. The member column (e.g. `member_id`) is
/// filled from the token's `sub`; the id is a UUIDv7 made by the gateway unless the body
/// gives one (a client-chosen id makes a retry the same write). Values must match their
/// column's type: a `bigint` is an integer of magnitude below 9e15 (rows travel in a
/// protobuf `Struct`, whose numbers are doubles), otherwise 400 naming the column.
#[utoipa::path(
    post,
    path = "/v1/writes/{sink}",
    tag = "writes",
    operation_id = "write",
    params(SinkPath),
    request_body(content = Object, description = "The row: the sink's columns but its member column."),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted (in Kafka); readable at once as pending.", body = WriteAccepted,
            headers(("Location" = String, description = "The write: `/v1/writes/{sink}/{id}`."))),
        (status = 400, description = "A column is unknown, missing, of the wrong type or too long, or the member column was sent (`field` names the column); or the body is not a JSON object.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 401, response = problems::Unauthorized),
        (status = 404, description = "Unknown sink.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The body's id belongs to another member's row (`id-taken`); choose another id.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 413, response = problems::PayloadTooLarge),
        (status = 415, response = problems::UnsupportedMediaType),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn create(
    state: web::Data<AppState>,
    path: web::Path<SinkPath>,
    caller: MaybeMember,
    body: web::Json<Value>,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    let sink_name = path.into_inner().sink;
    let sink = sink(&state, &sink_name)?;
    let Value::Object(row) = body.into_inner() else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object of the sink's columns".into(),
        ));
    };
    if sink.member_column.is_some() && caller.0.is_none() {
        return Err(ApiError::Unauthorized(
            "this sink needs a bearer token".into(),
        ));
    }
    let client_chose_id = row.contains_key(&sink.primary_key);
    let member = caller.0.as_ref().map(|member| member.id.as_str());
    let row = sink.accept_row(row, member).map_err(invalid)?;
    let id = sink
        .row_id(&row)
        .ok_or_else(|| ApiError::BadRequest("the row has no primary key".into()))?;
    let known = if client_chose_id {
        existing_row(&state, sink, &sink_name, &id, member).await?
    } else {
        Known::New
    };
    if let Known::Existing(existing) = &known
        && sink.on_conflict == ConflictRule::Ignore
    {
        // The sink keeps the first write of an id: this one would change nothing.
        return Ok(HttpResponse::Accepted()
            .insert_header((header::LOCATION, format!("/v1/writes/{sink_name}/{id}")))
            .json(WriteAccepted {
                id,
                status: existing.status,
                replayed: Some(true),
                row: Some(existing.row.clone()),
            }));
    }
    let event = WriteEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        accepted_at: Some(wire::now()),
        request_id: request_id.0.clone(),
        sink: sink_name.clone(),
        row_id: id.clone(),
        operation: WriteOperation::Upsert as i32,
        row: Some(sinks::to_struct(&row)),
        pending_marker: true,
    };
    let topic = state.writes_topic(&sink_name);
    let delivered = state
        .producer
        .publish(&topic, id.as_bytes(), &event, &[])
        .await?;
    faults::point(faults::GATEWAY_AFTER_PUBLISH);
    // Acknowledged: a marker that cannot be set only means a read may show the table until
    // the batch-writer commits (usually well under a second); it must not turn into a 503.
    if matches!(known, Known::Unverified) {
        // Whose id this is could not be read: no marker, so nothing unverified is shown;
        // the table's own rule decides (first write wins, or an upsert of the same member).
        return Ok(accepted(&sink_name, &id));
    }
    let marked = MarkedWrite {
        delivered,
        event_id: &event.event_id,
        row: &row,
        first_wins: sink.on_conflict == ConflictRule::Ignore,
    };
    if let Err(error) = state
        .pending
        .mark(&sink_name, &id, marked, sink.pending_ttl())
        .await
    {
        tracing::warn!(%error, sink = %sink_name, "setting the pending marker of an acknowledged write failed");
    }
    Ok(accepted(&sink_name, &id))
}

fn accepted(sink_name: &str, id: &str) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/v1/writes/{sink_name}/{id}")))
        .json(WriteAccepted {
            id: id.to_owned(),
            status: WriteStatus::Pending,
            replayed: None,
            row: None,
        })
}

/// A write of an id that exists already, pending or committed.
struct Existing {
    status: WriteStatus,
    row: Value,
}

/// What the gateway knows of a client-chosen id before it publishes.
enum Known {
    New,
    Existing(Existing),
    /// Redis or the database could not say (down): the write is still accepted (Kafka holds
    /// it), without a marker.
    Unverified,
}

/// The pending or stored row of `id`, if any; another member's is refused (409): a
/// client-chosen id never shows, nor changes, someone else's row (the batch-writer's upsert
/// also never updates another member's row).
async fn existing_row(
    state: &AppState,
    sink: &SinkSettings,
    sink_name: &str,
    id: &str,
    member: Option<&str>,
) -> Result<Known, ApiError> {
    let found = match state.pending.read(sink_name, id).await {
        Ok(Some(row)) => Some((WriteStatus::Pending, row)),
        Ok(None) => match sinks::sql::read_committed(&state.db, sink, id).await {
            Ok(row) => row.map(|row| (WriteStatus::Committed, row)),
            Err(error) => return Ok(unverified(sink_name, &error)),
        },
        Err(error) => return Ok(unverified(sink_name, &error)),
    };
    let Some((status, row)) = found else {
        return Ok(Known::New);
    };
    if let Some(column) = &sink.member_column
        && row.get(column).and_then(Value::as_str) != member
    {
        return Err(ApiError::IdTaken(format!(
            "the id `{id}` belongs to another member's row in sink `{sink_name}`; choose another id"
        )));
    }
    Ok(Known::Existing(Existing { status, row }))
}

fn unverified(sink_name: &str, error: &dyn std::fmt::Display) -> Known {
    tracing::warn!(%error, sink = %sink_name, "whose id a write names could not be read; accepted without a marker");
    Known::Unverified
}

/// A write, pending (read back from Redis) or committed (from the database).
///
/// Under the sink's read rule: `member` (the default for a sink with a member column) needs
/// a token and shows a row only to the member in its member column; another member's row is
/// a 404, like a row that does not exist. `scope:<scope>` needs a token with that scope;
/// `public` needs none.
#[utoipa::path(
    get,
    path = "/v1/writes/{sink}/{id}",
    tag = "writes",
    operation_id = "read_write",
    params(WritePath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The row and its status.", body = WriteRead),
        (status = 400, description = "The id is not a value of the primary key's type (`field` names the key).", body = problems::Problem, content_type = "application/problem+json"),
        (status = 401, response = problems::Unauthorized),
        (status = 403, description = "The sink is read by scope and the token lacks it.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown sink or id, or another member's row.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn read(
    state: web::Data<AppState>,
    path: web::Path<WritePath>,
    caller: MaybeMember,
) -> Result<HttpResponse, ApiError> {
    let WritePath {
        sink: sink_name,
        id,
    } = path.into_inner();
    let sink = sink(&state, &sink_name)?;
    let access = access::check(
        &sink.read_rule(),
        caller.0.as_ref(),
        &format!("sink `{sink_name}`"),
    )?;
    sink.parse_id(&id).map_err(invalid)?;
    let not_found = || ApiError::NotFound(format!("no write `{id}` in sink `{sink_name}`"));
    let (status, row) = match state.pending.read(&sink_name, &id).await? {
        Some(row) => (WriteStatus::Pending, row),
        None => match sinks::sql::read_committed(&state.db, sink, &id).await? {
            Some(row) => (WriteStatus::Committed, row),
            None => return Err(not_found()),
        },
    };
    if !access.allows(owner(sink, &row)) {
        return Err(not_found());
    }
    Ok(HttpResponse::Ok().json(WriteRead { id, status, row }))
}

/// The member a row belongs to (its member column), if the sink has one.
fn owner<'a>(sink: &SinkSettings, row: &'a Value) -> Option<&'a str> {
    row.get(sink.member_column.as_deref()?)?.as_str()
}
