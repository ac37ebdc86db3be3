//! `cargo xtask token --sub ada [--scope "templates:write"] [--ttl 1h]`: prints a member JWT
//! the local stack's gateway accepts: HS256, signed with `SPILLWAY_JWT_SECRET` when set, else
//! the stack's development secret, with the claims the gateway reads (`sub`, `exp`, and
//! `scope`, space-separated, OAuth 2.0 style).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::env;

const DEFAULT_TTL: Duration = Duration::from_secs(3600);

pub const USAGE: &str =
    "cargo xtask token --sub <member> [--scope \"<scope> ...\"] [--ttl <30s|15m|1h|7d>]";

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub sub: String,
    pub scope: Option<String>,
    pub ttl: Duration,
}

impl TokenRequest {
    /// `--sub`, `--scope` and `--ttl`, each as `--flag value` or `--flag=value`.
    pub fn parse(args: &[&str]) -> Result<Self> {
        let (mut sub, mut scope, mut ttl) = (None, None, DEFAULT_TTL);
        let mut rest = args.iter().copied();
        while let Some(arg) = rest.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag, Some(value)),
                None => (arg, None),
            };
            let mut value = || {
                inline
                    .or_else(|| rest.next())
                    .with_context(|| format!("{flag} needs a value; usage: {USAGE}"))
            };
            match flag {
                "--sub" => sub = Some(value()?.to_owned()),
                "--scope" => scope = Some(value()?.to_owned()),
                "--ttl" => ttl = parse_ttl(value()?)?,
                other => bail!("unknown argument `{other}`; usage: {USAGE}"),
            }
        }
        let sub = sub.with_context(|| format!("--sub is required; usage: {USAGE}"))?;
        ensure!(!sub.is_empty(), "--sub must not be empty");
        Ok(Self { sub, scope, ttl })
    }

    /// The signed token, valid for `ttl` from now.
    pub fn sign(&self, secret: &str) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let claims = Claims {
            sub: &self.sub,
            exp: (now + self.ttl).as_secs(),
            scope: self.scope.as_deref(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )?)
    }
}

/// The secret the gateway verifies with: the caller's `SPILLWAY_JWT_SECRET` (what `cargo
/// xtask env` exports), else the local stack's.
pub fn secret() -> String {
    std::env::var("SPILLWAY_JWT_SECRET")
        .ok()
        .filter(|secret| !secret.is_empty())
        .unwrap_or_else(|| env::DEV_JWT_SECRET.to_owned())
}

/// `90` (seconds), `30s`, `15m`, `1h`, `7d`.
fn parse_ttl(text: &str) -> Result<Duration> {
    let (number, unit_seconds) = match text.char_indices().last() {
        Some((at, 's')) => (&text[..at], 1),
        Some((at, 'm')) => (&text[..at], 60),
        Some((at, 'h')) => (&text[..at], 3600),
        Some((at, 'd')) => (&text[..at], 86_400),
        _ => (text, 1),
    };
    let count: u64 = number
        .parse()
        .with_context(|| format!("--ttl `{text}`: expected e.g. 30s, 15m, 1h or 7d"))?;
    ensure!(count > 0, "--ttl must be longer than zero");
    Ok(Duration::from_secs(count * unit_seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_scope_and_ttl_are_read_in_both_forms() {
        let request =
            TokenRequest::parse(&["--sub", "ada", "--scope=templates:write", "--ttl", "15m"])
                .unwrap();
        assert_eq!(
            request,
            TokenRequest {
                sub: "ada".into(),
                scope: Some("templates:write".into()),
                ttl: Duration::from_secs(900),
            }
        );
    }

    #[test]
    fn the_ttl_defaults_to_an_hour_and_sub_is_required() {
        assert_eq!(
            TokenRequest::parse(&["--sub", "ada"]).unwrap().ttl,
            DEFAULT_TTL
        );
        assert!(TokenRequest::parse(&["--scope", "templates:write"]).is_err());
        assert!(TokenRequest::parse(&["--sub"]).is_err());
        assert!(TokenRequest::parse(&["--sub", "ada", "--ttl", "soon"]).is_err());
    }

    #[test]
    fn the_token_carries_the_claims_and_verifies_with_the_secret() {
        let request = TokenRequest::parse(&["--sub", "ada", "--scope", "a b"]).unwrap();
        let token = request.sign("a-secret-for-this-test").unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"a-secret-for-this-test"),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sub"], "ada");
        assert_eq!(claims["scope"], "a b");
        assert!(claims.get("iat").is_none());
    }
}
