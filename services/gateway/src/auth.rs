//! Member authentication: `Authorization: Bearer <JWT>`, HS256 with `SPILLWAY_JWT_SECRET`.
//! The member is `sub`; scopes are the space-separated `scope` claim; `exp` is required.

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The claims spillway reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

/// The keys for member tokens.
#[derive(Clone)]
pub struct Authenticator {
    decoding: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Self {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Member, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| ApiError::InvalidToken(refusal(error.kind())))?;
        if data.claims.sub.is_empty() || data.claims.sub.len() > 256 {
            return Err(ApiError::InvalidToken(
                "the token's `sub` (the member) must be 1-256 characters".into(),
            ));
        }
        Ok(Member {
            id: data.claims.sub,
            scopes: data
                .claims
                .scope
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// Why a token was refused, in the API's words: what is wrong and what to send instead.
fn refusal(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired (`exp`); sign a new one".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (`nbf`)".into(),
        ErrorKind::InvalidSignature => {
            "the token's signature does not verify: sign it (HS256) with this deployment's JWT secret"
                .into()
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token must be signed with HS256".into()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!(
            "the token has no `{claim}` claim; `sub` (the member) and `exp` are required"
        ),
        ErrorKind::Json(_) => {
            "the token's claims are not what spillway reads: `sub` a string, `exp` a number \
             of seconds, `scope` a space-separated string"
                .into()
        }
        _ => "the bearer token is not a JWT: send three base64url parts separated by dots, \
              signed with HS256"
            .into(),
    }
}

/// Signs a member token (tests, the demo, and operators' tooling).
pub fn issue_token(secret: &str, sub: &str, scopes: &[&str], ttl_seconds: i64) -> String {
    let claims = Claims {
        sub: sub.to_owned(),
        exp: chrono::Utc::now().timestamp() + ttl_seconds,
        scope: scopes.join(" "),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub scopes: Vec<String>,
}

impl Member {
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the token lacks the `{scope}` scope"
            )))
        }
    }
}

fn bearer(request: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        ApiError::Unauthorized(
            "the Authorization header is not text; send `Authorization: Bearer <token>`".into(),
        )
    })?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`".into(),
        )),
    }
}

fn authenticate(request: &HttpRequest) -> Result<Option<Member>, ApiError> {
    let Some(token) = bearer(request)? else {
        return Ok(None);
    };
    // Only a gateway built without its Authenticator meets the error: a programming error.
    let authenticator = request
        .app_data::<web::Data<Authenticator>>()
        .ok_or_else(|| ApiError::Unauthorized("authentication is not configured".into()))?;
    authenticator.verify(token).map(Some)
}

impl FromRequest for Member {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let outcome = authenticate(request).and_then(|member| {
            member.ok_or_else(|| {
                ApiError::Unauthorized(
                    "this call needs a member: send `Authorization: Bearer <token>`".into(),
                )
            })
        });
        Box::pin(async move { outcome })
    }
}

/// A caller that may or may not be signed in (a bad token is still an error).
pub struct MaybeMember(pub Option<Member>);

impl FromRequest for MaybeMember {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let outcome = authenticate(request).map(MaybeMember);
        Box::pin(async move { outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_with_its_scopes() {
        let token = issue_token("s3cret", "alice", &["templates:write"], 60);
        let member = Authenticator::new("s3cret").verify(&token).unwrap();
        assert_eq!(member.id, "alice");
        assert!(member.require_scope("templates:write").is_ok());
        assert!(member.require_scope("admin").is_err());
    }

    #[test]
    fn refusals_are_in_the_apis_words() {
        let token = issue_token("s3cret", "alice", &[], 60);
        let error = Authenticator::new("other").verify(&token).unwrap_err();
        assert!(matches!(error, ApiError::InvalidToken(_)));
        let detail = error.problem().detail;
        assert!(detail.contains("signature does not verify"), "{detail}");
        assert!(!detail.contains("InvalidSignature"), "{detail}");
        let detail = Authenticator::new("s3cret")
            .verify("not.a-token")
            .unwrap_err()
            .problem()
            .detail;
        assert!(detail.contains("not a JWT"), "{detail}");
        assert!(!detail.to_lowercase().contains("base64 error"), "{detail}");
    }

    #[test]
    fn wrong_secret_and_expired_tokens_are_refused() {
        let token = issue_token("s3cret", "alice", &[], 60);
        assert!(Authenticator::new("other").verify(&token).is_err());
        let expired = issue_token("s3cret", "alice", &[], -3600);
        assert!(Authenticator::new("s3cret").verify(&expired).is_err());
    }
}
