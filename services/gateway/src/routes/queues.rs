//! `/v1/queues/{queue}/tokens`: a member joins a waiting room, polls its token (each poll is
//! its heartbeat) and leaves; an active token carries `admission`, a short-lived JWT (`sub`,
//! `queue`, `exp`) that the protected backend verifies offline with the admission secret.

use actix_web::{HttpResponse, http::Method, web};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use spillway_core::queues::{
    Operation, QueueSettings, Standing, Step,
    store::{self},
};
use utoipa::{IntoParams, ToSchema};

use crate::{AppState, auth::Member, error::ApiError, openapi::problems, routes::resource};

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource(
            "/v1/queues/{queue}/tokens",
            [(Method::POST, web::to(join))],
        ))
        .service(resource(
            "/v1/queues/{queue}/tokens/{token}",
            [
                (Method::GET, web::to(poll)),
                (Method::DELETE, web::to(leave)),
            ],
        ));
}

/// A waiting room's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct QueuePath {
    /// A waiting room: a name one of the configured patterns (`[queues.<name>] pattern`)
    /// matches.
    pub queue: String,
}

/// A token's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// A waiting room: a name one of the configured patterns (`[queues.<name>] pattern`)
    /// matches.
    pub queue: String,
    /// The token `POST .../tokens` answered.
    pub token: String,
}

/// Where a member stands in a waiting room.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueueStatus {
    Waiting,
    Active,
}

/// A member's token in a waiting room.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueToken {
    pub token: String,
    pub status: QueueStatus,
    /// 1 is next in line; 0 when active.
    pub position: u64,
    /// From the admissions measured over the last minute; null until one is measured.
    #[schema(required = true)]
    pub eta_seconds: Option<u64>,
    /// Poll again after this; a waiter who stops polling for the heartbeat timeout leaves
    /// the line.
    pub poll_after_seconds: u64,
    /// Active only: an HS256 JWT (`sub`, `queue`, `exp`) for the protected backend to verify
    /// offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub admission: Option<String>,
    /// Active only: when the session ends (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = DateTime, required = false)]
    pub session_expires_at: Option<String>,
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
) -> Result<Option<QueueToken>, ApiError> {
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
) -> QueueToken {
    let now = chrono::Utc::now().timestamp_millis();
    let (status, position, eta) = match standing {
        Standing::Waiting { position } => (
            QueueStatus::Waiting,
            *position,
            store::eta_seconds(*position, admitted_last_minute),
        ),
        Standing::Active { .. } => (QueueStatus::Active, 0, Some(0)),
    };
    let mut body = QueueToken {
        token: token.to_owned(),
        status,
        position,
        eta_seconds: eta,
        poll_after_seconds: store::poll_after_seconds(standing, eta, settings, now),
        admission: None,
        session_expires_at: None,
    };
    if let Standing::Active { expires_at_ms } = standing {
        body.admission = Some(state.admission.sign(&member.id, queue, *expires_at_ms));
        body.session_expires_at =
            chrono::DateTime::from_timestamp_millis(*expires_at_ms).map(|at| at.to_rfc3339());
    }
    body
}

/// Join a waiting room (the same member asking twice keeps its place and token).
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/tokens",
    tag = "queues",
    operation_id = "join_queue",
    params(QueuePath),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The member's token.", body = QueueToken),
        (status = 401, response = problems::Unauthorized),
        (status = 404, description = "No waiting room is configured for this name.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn join(
    state: web::Data<AppState>,
    path: web::Path<QueuePath>,
    member: Member,
) -> Result<HttpResponse, ApiError> {
    let queue = path.into_inner().queue;
    let body = run(&state, &queue, Operation::Join, &member, None).await?;
    Ok(HttpResponse::Created().json(body))
}

/// Where the token stands; each poll is the waiter's heartbeat.
#[utoipa::path(
    get,
    path = "/v1/queues/{queue}/tokens/{token}",
    tag = "queues",
    operation_id = "poll_queue",
    params(TokenPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token.", body = QueueToken),
        (status = 401, response = problems::Unauthorized),
        (status = 403, description = "Another member's token.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown room or token (left, expired, or dropped after missing heartbeats).", body = problems::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn poll(
    state: web::Data<AppState>,
    path: web::Path<TokenPath>,
    member: Member,
) -> Result<HttpResponse, ApiError> {
    let TokenPath { queue, token } = path.into_inner();
    let body = run(&state, &queue, Operation::Poll, &member, Some(&token)).await?;
    Ok(HttpResponse::Ok().json(body))
}

/// Leave the line or end the session; the place is freed at once.
#[utoipa::path(
    delete,
    path = "/v1/queues/{queue}/tokens/{token}",
    tag = "queues",
    operation_id = "leave_queue",
    params(TokenPath),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Left."),
        (status = 401, response = problems::Unauthorized),
        (status = 403, description = "Another member's token.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown room or token.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn leave(
    state: web::Data<AppState>,
    path: web::Path<TokenPath>,
    member: Member,
) -> Result<HttpResponse, ApiError> {
    let TokenPath { queue, token } = path.into_inner();
    run(&state, &queue, Operation::Leave, &member, Some(&token)).await?;
    Ok(HttpResponse::NoContent().finish())
}
