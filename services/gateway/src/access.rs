//! Read rules (`read = "public" | "member" | "scope:<scope>"` on sinks and views) applied to
//! a caller. Without a token, a `member` or scoped read is 401; a token without the scope is
//! 403. What a `member` read may then see is decided by the route: another member's row is
//! 404 (a row's existence is itself information), another member's view key is 403 (the
//! caller chose the key; nothing about the data is revealed).

use spillway_core::config::ReadRule;

use crate::{auth::Member, error::ApiError};

/// What a caller may read under a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Everything the rule covers.
    Everything,
    /// Only what belongs to this member.
    OwnOnly(String),
}

/// Applies `rule` to the caller; `what` names the resource in the errors (`sink
/// `playlists``).
pub fn check(rule: &ReadRule, caller: Option<&Member>, what: &str) -> Result<Access, ApiError> {
    match rule {
        ReadRule::Public => Ok(Access::Everything),
        ReadRule::Member => {
            let member = require_member(caller, what)?;
            Ok(Access::OwnOnly(member.id.clone()))
        }
        ReadRule::Scope(scope) => {
            require_member(caller, what)?.require_scope(scope)?;
            Ok(Access::Everything)
        }
    }
}

fn require_member<'a>(caller: Option<&'a Member>, what: &str) -> Result<&'a Member, ApiError> {
    caller.ok_or_else(|| {
        ApiError::Unauthorized(format!(
            "reading {what} needs a member: send `Authorization: Bearer <token>`"
        ))
    })
}

impl Access {
    /// Whether the caller may see something that belongs to `owner`.
    pub fn allows(&self, owner: Option<&str>) -> bool {
        match self {
            Self::Everything => true,
            Self::OwnOnly(member) => owner == Some(member.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, scopes: &[&str]) -> Member {
        Member {
            id: id.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn each_rule_asks_for_what_it_names() {
        assert_eq!(
            check(&ReadRule::Public, None, "x").unwrap(),
            Access::Everything
        );
        assert!(matches!(
            check(&ReadRule::Member, None, "x"),
            Err(ApiError::Unauthorized(_))
        ));
        let ada = member("ada", &[]);
        let access = check(&ReadRule::Member, Some(&ada), "x").unwrap();
        assert!(access.allows(Some("ada")));
        assert!(!access.allows(Some("bob")));
        assert!(!access.allows(None));
        let scope = ReadRule::Scope("reports:read".into());
        assert!(matches!(
            check(&scope, Some(&ada), "x"),
            Err(ApiError::Forbidden(_))
        ));
        let auditor = member("eve", &["reports:read"]);
        assert_eq!(
            check(&scope, Some(&auditor), "x").unwrap(),
            Access::Everything
        );
    }
}
