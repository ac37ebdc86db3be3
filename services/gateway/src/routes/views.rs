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
    http::header::{HeaderName, HeaderValue},
    web,
};

use crate::{
    AppState,
    access::{self, Access},
    auth::MaybeMember,
    error::ApiError,
    views::{Answer, Outcome},
};

pub const CACHE_STATUS_HEADER: &str = "cache-status";

pub fn configure(config: &mut web::ServiceConfig) {
    config.route("/v1/views/{view}/{key}", web::get().to(read));
}

/// Reads one key under the view's read rule: a view keyed by member (`key_is_member`) with
/// the `member` rule answers only its own key to a member, 403 to another member.
async fn read(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    caller: MaybeMember,
) -> Result<HttpResponse, ApiError> {
    let (view, raw_key) = path.into_inner();
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
