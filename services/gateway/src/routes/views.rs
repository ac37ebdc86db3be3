//! `GET /v1/views/{view}/{key}`: a configured view's result for one key, as JSON, from Redis
//! or (on a miss) from the database, with an RFC 9211 `Cache-Status` header saying which:
//!
//! - `spillway; hit; ttl=42`: fresh from the cache, for 42 more seconds;
//! - `spillway; hit; ttl=-3; detail=stale`: stale for 3 s, served while one reload runs;
//! - `spillway; fwd=miss; stored`: this request loaded it and stored it;
//! - `spillway; fwd=miss; collapsed`: another request's load answered this one;
//! - `spillway; fwd=miss`: loaded, not stored (a commit refreshed the key meanwhile);
//! - `spillway; fwd=miss; detail=redis-unavailable`: read from the database, Redis down.
//!
//! A `rows` view answers a JSON array; a `one` view the row as an object, or a 404 when the
//! query found none (that answer is cached too).

use actix_web::{
    HttpResponse,
    http::{
        Method,
        header::{HeaderName, HeaderValue},
    },
    web,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::{
    AppState,
    access::{self, Access},
    auth::MaybeMember,
    error::ApiError,
    openapi::problems,
    routes::resource,
    views::{Answer, Outcome},
};

pub const CACHE_STATUS_HEADER: &str = "cache-status";

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(resource(
        "/v1/views/{view}/{key}",
        [(Method::GET, web::to(read))],
    ));
}

/// A view key's path (the document gives each configured view a path of its own).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ViewPath {
    /// A configured view (`[views.<name>]`).
    pub view: String,
    /// The value bound as `$1` of the view's query, of the view's `key_type`.
    pub key: String,
}

/// A cached view's result for one key, from Redis, or from the database on a miss (one
/// reload per key across gateways).
///
/// Under the view's read rule: `public` (the default) needs no token; `member` (the default
/// for a view with `key_is_member = true`) needs a token whose `sub` is the key (another
/// member's key is a 403); `scope:<scope>` needs that scope. The `Cache-Status` header (RFC
/// 9211) says where the answer came from: `spillway; hit; ttl=42` (fresh for 42 s more),
/// `spillway; hit; ttl=-3; detail=stale` (stale, served while one request reloads it),
/// `spillway; fwd=miss; stored` (loaded by this request), `spillway; fwd=miss; collapsed`
/// (another request's load answered this one), `spillway; fwd=miss` (loaded, not stored: a
/// commit refreshed it meanwhile), `spillway; fwd=miss; detail=redis-unavailable` (Redis
/// down, read from the database).
#[utoipa::path(
    get,
    path = "/v1/views/{view}/{key}",
    tag = "views",
    operation_id = "read_view",
    params(ViewPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The query's result as JSON: an array of rows (`result = \"rows\"`) or one row as an object (`result = \"one\"`).", body = serde_json::Value,
            headers(("Cache-Status" = String, description = "Where the answer came from (RFC 9211)."))),
        (status = 400, description = "The key is not a value of the view's key type (`field`: `key`).", body = problems::Problem, content_type = "application/problem+json"),
        (status = 401, response = problems::Unauthorized),
        (status = 403, description = "Another member's key of a view keyed by member, or a missing scope.", body = problems::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown view, or a `one` view whose query found no row (that answer is cached too).", body = problems::Problem, content_type = "application/problem+json",
            headers(("Cache-Status" = String, description = "Where the answer came from (RFC 9211)."))),
        (status = 503, response = problems::Unavailable),
    )
)]
async fn read(
    state: web::Data<AppState>,
    path: web::Path<ViewPath>,
    caller: MaybeMember,
) -> Result<HttpResponse, ApiError> {
    let ViewPath { view, key: raw_key } = path.into_inner();
    let settings = state
        .views
        .settings(&view)
        .ok_or_else(|| ApiError::NotFound(format!("unknown view `{view}`")))?;
    let access = access::check(
        &settings.read_rule(),
        caller.0.as_ref(),
        &format!("view `{view}`"),
    )?;
    let key = settings
        .parse_key(&raw_key)
        .map_err(|error| ApiError::InvalidField {
            field: "key".into(),
            detail: error.to_string(),
        })?;
    if let Access::OwnOnly(member) = &access
        && member != key.as_str()
    {
        return Err(ApiError::Forbidden(format!(
            "view `{view}` is keyed by member: member `{member}` may read only the key \
             `{member}`"
        )));
    }
    let answer = state.views.read(&view, &key).await?;
    Ok(respond(&view, key.as_str(), answer))
}

fn respond(view: &str, key: &str, answer: Answer) -> HttpResponse {
    let status = cache_status(answer.outcome);
    let mut response = if answer.body == "null" {
        ApiError::NotFound(format!("view `{view}` has no row for key `{key}`"))
            .problem()
            .to_response()
    } else {
        HttpResponse::Ok()
            .content_type("application/json")
            .body(answer.body)
    };
    if let Ok(value) = HeaderValue::from_str(&status) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(CACHE_STATUS_HEADER), value);
    }
    response
}

/// The `Cache-Status` value of an outcome (RFC 9211; `ttl` in whole seconds).
pub fn cache_status(outcome: Outcome) -> String {
    match outcome {
        Outcome::Hit { fresh_for_ms } => {
            format!("spillway; hit; ttl={}", fresh_for_ms.div_euclid(1_000))
        }
        Outcome::Stale { fresh_for_ms } => format!(
            "spillway; hit; ttl={}; detail=stale",
            fresh_for_ms.div_euclid(1_000)
        ),
        Outcome::Stored => "spillway; fwd=miss; stored".into(),
        Outcome::Superseded => "spillway; fwd=miss".into(),
        Outcome::Collapsed => "spillway; fwd=miss; collapsed".into(),
        Outcome::Bypass => "spillway; fwd=miss; detail=redis-unavailable".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_follows_rfc_9211() {
        assert_eq!(
            cache_status(Outcome::Hit {
                fresh_for_ms: 42_500
            }),
            "spillway; hit; ttl=42"
        );
        assert_eq!(
            cache_status(Outcome::Stale {
                fresh_for_ms: -2_500
            }),
            "spillway; hit; ttl=-3; detail=stale"
        );
        assert_eq!(cache_status(Outcome::Stored), "spillway; fwd=miss; stored");
        assert_eq!(
            cache_status(Outcome::Collapsed),
            "spillway; fwd=miss; collapsed"
        );
    }
}
