//! `/v1/writes/{sink}`: a write is checked against its sink, remembered in Redis as pending
//! (so the caller can read it back at once), published, and answered 202 once Kafka holds
//! it. The batch-writer stores it in bulk and clears the marker after the commit.

use actix_web::{HttpResponse, http::header, web};
use serde_json::{Value, json};
use spillway_core::{
    faults,
    sinks::{self, ConflictRule, MarkedWrite, SinkSettings},
    wire::{self, WriteEvent, WriteOperation},
};

use crate::{AppState, access, auth::MaybeMember, error::ApiError, middleware::RequestId};

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/writes/{sink}", web::post().to(create))
        .route("/v1/writes/{sink}/{id}", web::get().to(read));
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

async fn create(
    state: web::Data<AppState>,
    path: web::Path<String>,
    caller: MaybeMember,
    body: web::Json<Value>,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    let sink_name = path.into_inner();
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
            .json(
                json!({"id": id, "status": existing.status, "replayed": true, "row": existing.row}),
            ));
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
        .json(json!({"id": id, "status": "pending"}))
}

/// A write of an id that exists already, pending or committed.
struct Existing {
    status: &'static str,
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
        Ok(Some(row)) => Some(("pending", row)),
        Ok(None) => match sinks::sql::read_committed(&state.db, sink, id).await {
            Ok(row) => row.map(|row| ("committed", row)),
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

/// `GET /v1/writes/{sink}/{id}`, under the sink's read rule: a `member` sink shows a row
/// only to the member in its member column; anyone else gets the 404 of a missing row.
async fn read(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    caller: MaybeMember,
) -> Result<HttpResponse, ApiError> {
    let (sink_name, id) = path.into_inner();
    let sink = sink(&state, &sink_name)?;
    let access = access::check(
        &sink.read_rule(),
        caller.0.as_ref(),
        &format!("sink `{sink_name}`"),
    )?;
    sink.parse_id(&id).map_err(invalid)?;
    let not_found = || ApiError::NotFound(format!("no write `{id}` in sink `{sink_name}`"));
    let (status, row) = match state.pending.read(&sink_name, &id).await? {
        Some(row) => ("pending", row),
        None => match sinks::sql::read_committed(&state.db, sink, &id).await? {
            Some(row) => ("committed", row),
            None => return Err(not_found()),
        },
    };
    if !access.allows(owner(sink, &row)) {
        return Err(not_found());
    }
    Ok(HttpResponse::Ok().json(json!({"id": id, "status": status, "row": row})))
}

/// The member a row belongs to (its member column), if the sink has one.
fn owner<'a>(sink: &SinkSettings, row: &'a Value) -> Option<&'a str> {
    row.get(sink.member_column.as_deref()?)?.as_str()
}
