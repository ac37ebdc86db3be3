//! `/v1/queues/{queue}/tokens`: a member joins a waiting room, polls its token (each poll is
//! its heartbeat) and leaves; an active token carries `admission`, a short-lived JWT (`sub`,
//! `queue`, `exp`) that the protected backend verifies offline with the admission secret.

use actix_web::{HttpResponse, web};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::json;
use spillway_core::queues::{
    Operation, QueueSettings, Standing, Step,
    store::{self},
};

use crate::{AppState, auth::Member, error::ApiError};

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/queues/{queue}/tokens", web::post().to(join))
        .route("/v1/queues/{queue}/tokens/{token}", web::get().to(poll))
        .route("/v1/queues/{queue}/tokens/{token}", web::delete().to(leave));
}

/// Signs admissions.
pub struct AdmissionSigner {
    key: EncodingKey,
    ttl_seconds: i64,
}

/// The claims of an admission.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct AdmissionClaims {
    pub sub: String,
    pub queue: String,
    pub exp: i64,
}

impl AdmissionSigner {
    pub fn new(secret: &str, ttl_seconds: u64) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            ttl_seconds: ttl_seconds as i64,
        }
    }

    /// An admission for `member` on `queue`, never outliving the session.
    fn sign(&self, member: &str, queue: &str, session_ends_ms: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = AdmissionClaims {
            sub: member.to_owned(),
            queue: queue.to_owned(),
            exp: (now + self.ttl_seconds)
                .min(session_ends_ms / 1_000)
                .max(now + 1),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .expect("HS256 signing cannot fail")
    }
}

fn settings<'a>(state: &'a AppState, queue: &str) -> Result<&'a QueueSettings, ApiError> {
    state
        .waiting_rooms
        .settings(queue)
        .ok_or_else(|| ApiError::NotFound(format!("no waiting room is configured for `{queue}`")))
}

/// Runs a step and turns it into the token's description (or an error).
async fn run(
    state: &AppState,
    queue: &str,
    operation: Operation,
    member: &Member,
    token: Option<&str>,
) -> Result<Option<serde_json::Value>, ApiError> {
    let settings = settings(state, queue)?;
    let step = state
        .waiting_rooms
        .step(queue, settings, operation, &member.id, token)
        .await?;
    match step {
        Step::Ticket {
            token,
            standing,
            admitted_last_minute,
        } => Ok(Some(describe(
            state,
            queue,
            settings,
            member,
            &token,
            &standing,
            admitted_last_minute,
        ))),
        Step::Left => Ok(None),
        Step::Unknown => Err(ApiError::NotFound(
            "unknown token (never issued, left, expired, or dropped after missing heartbeats)"
                .into(),
        )),
        Step::Forbidden => Err(ApiError::Forbidden("this token is another member's".into())),
        Step::Held { until_ms } => Err(ApiError::QueueHeld {
            retry_after_seconds: retry_after(until_ms),
        }),
    }
}

fn retry_after(until_ms: i64) -> u64 {
    let now = chrono::Utc::now().timestamp_millis();
    ((until_ms - now).max(0) as u64).div_ceil(1_000).max(1)
}

fn describe(
    state: &AppState,
    queue: &str,
    settings: &QueueSettings,
    member: &Member,
    token: &str,
    standing: &Standing,
    admitted_last_minute: u64,
) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp_millis();
    let (status, position, eta) = match standing {
        Standing::Waiting { position } => (
            "waiting",
            *position,
            store::eta_seconds(*position, admitted_last_minute),
        ),
        Standing::Active { .. } => ("active", 0, Some(0)),
    };
    let mut body = json!({
        "token": token,
        "status": status,
        "position": position,
        "eta_seconds": eta,
        "poll_after_seconds": store::poll_after_seconds(standing, eta, settings, now),
    });
    if let Standing::Active { expires_at_ms } = standing {
        body["admission"] = state
            .admission
            .sign(&member.id, queue, *expires_at_ms)
            .into();
        body["session_expires_at"] = chrono::DateTime::from_timestamp_millis(*expires_at_ms)
            .map(|at| at.to_rfc3339())
            .into();
    }
    body
}

/// `POST /v1/queues/{queue}/tokens`: join (the same member keeps its place).
async fn join(
    state: web::Data<AppState>,
    path: web::Path<String>,
    member: Member,
) -> Result<HttpResponse, ApiError> {
    let queue = path.into_inner();
    let body = run(&state, &queue, Operation::Join, &member, None).await?;
    Ok(HttpResponse::Created().json(body))
}

/// `GET /v1/queues/{queue}/tokens/{token}`: where the token stands; the poll is a heartbeat.
async fn poll(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    member: Member,
) -> Result<HttpResponse, ApiError> {
    let (queue, token) = path.into_inner();
    let body = run(&state, &queue, Operation::Poll, &member, Some(&token)).await?;
    Ok(HttpResponse::Ok().json(body))
}

/// `DELETE /v1/queues/{queue}/tokens/{token}`: leave the line or end the session.
async fn leave(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    member: Member,
) -> Result<HttpResponse, ApiError> {
    let (queue, token) = path.into_inner();
    run(&state, &queue, Operation::Leave, &member, Some(&token)).await?;
    Ok(HttpResponse::NoContent().finish())
}
