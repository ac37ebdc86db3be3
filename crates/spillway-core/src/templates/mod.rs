//! Templates and their pools of ready-made S3 copies, shared by the gateway (registers
//! templates, hands out copies, copies directly on a miss) and template-warmup (refills the
//! pools, sweeps expired, retired and abandoned copies).
//!
//! - [`config`]: what the user writes (`[templates]`) and the shape of a template id.
//! - [`store`]: the database rows: templates, their objects, and every copy's state.
//! - [`pool`]: the Redis pool of one template, with atomic take, push and remove scripts.
//! - `copier` (feature `s3`): server-side S3 copies with a bound on calls in flight, cleaned up on failure.
//! - `lifecycle` (feature `s3`): one copy from its first S3 call to its hand-out or deletion.
//!
//! A copy's life: a `copying` row is written before its first S3 call, so no object is ever
//! untracked; when every object is copied it becomes `ready` and is pushed into the pool (or
//! `taken` at once for a direct copy); the pool hands it to exactly one caller (`taken`); a
//! ready copy past its TTL or of a retired version is first removed from the pool, then
//! marked `expired`, then its objects are deleted (`deleted`). A copy that fails or is
//! abandoned has its objects deleted before its row says `deleted`.

pub mod config;
#[cfg(feature = "s3")]
pub mod copier;
#[cfg(feature = "s3")]
pub mod lifecycle;
pub mod pool;
pub mod store;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    kafka::{KafkaError, producer::EventProducer},
    wire::{self, WarmupRequest},
};

#[cfg(feature = "s3")]
pub use copier::{CopyError, S3Copier};
#[cfg(feature = "s3")]
pub use lifecycle::{CopyMaker, LifecycleError, Pooled};
pub use pool::TemplatePool;
pub use store::{CopyOrigin, CopyState, Template};

/// Most objects one template may copy.
pub const MAX_OBJECTS: usize = 1_000;
/// Largest pool a template may ask for.
pub const MAX_POOL_CAPACITY: i32 = 1_000;
/// Longest source key, in characters (JSON Schema's `maxLength` counts characters); S3's own
/// limit is 1,024 bytes, so a longer key cannot be in the bucket and is reported missing.
pub const MAX_KEY_CHARS: usize = 1_024;

/// One object of a copy: where it was copied from and the key it has now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedObject {
    pub source: String,
    pub key: String,
}

/// A finished copy as the pool holds it and a caller receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRecord {
    pub copy_id: Uuid,
    pub template_id: String,
    pub version: i64,
    pub objects: Vec<CopiedObject>,
}

impl CopyRecord {
    /// The record of a new copy of `template`: every object gets a key of its own under
    /// `<prefix>/<template_id>/<copy_id>/`, named `<position>-<source file name>`.
    pub fn plan(template: &Template, copy_id: Uuid, copy_prefix: &str) -> Self {
        let folder = copy_folder(copy_prefix, &template.id, copy_id);
        let objects = template
            .objects
            .iter()
            .enumerate()
            .map(|(position, source)| {
                let name = source.rsplit('/').next().unwrap_or(source);
                CopiedObject {
                    source: source.clone(),
                    key: format!("{folder}{position}-{name}"),
                }
            })
            .collect();
        Self {
            copy_id,
            template_id: template.id.clone(),
            version: template.version,
            objects,
        }
    }
}

/// The folder (with its trailing `/`) that holds every object of one copy.
pub fn copy_folder(copy_prefix: &str, template_id: &str, copy_id: Uuid) -> String {
    format!("{copy_prefix}/{template_id}/{copy_id}/")
}

/// Asks template-warmup to top up a template's pool; keyed by template id, so the refills
/// of one template run one at a time. `reason`: `taken`, `empty`, `registered`, `sweep`.
pub async fn request_refill(
    producer: &EventProducer,
    topic: &str,
    template: &Template,
    reason: &str,
    request_id: &str,
) -> Result<(), KafkaError> {
    let request = WarmupRequest {
        event_id: Uuid::now_v7().to_string(),
        accepted_at: Some(wire::now()),
        request_id: request_id.to_owned(),
        template_id: template.id.clone(),
        version: template.version,
        reason: reason.to_owned(),
    };
    producer
        .publish(topic, template.id.as_bytes(), &request, &[])
        .await?;
    Ok(())
}

/// Why a template id, object list or capacity is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTemplate {
    #[error("a template id is 1-128 of [A-Za-z0-9._-]")]
    Id,
    #[error("`objects` must list 1-{MAX_OBJECTS} source keys")]
    ObjectCount,
    #[error(
        "object {position}: a source key is 1-1024 characters without control characters or a leading `/`"
    )]
    ObjectKey { position: usize },
    #[error("object {position}: `{key}` is listed twice")]
    DuplicateObject { position: usize, key: String },
    #[error("object {position}: `{key}` lies under the copy prefix `{prefix}/`")]
    ObjectUnderCopies {
        position: usize,
        key: String,
        prefix: String,
    },
    #[error("`pool_capacity` must be 0-{MAX_POOL_CAPACITY}")]
    Capacity,
}

/// Checks a template id.
pub fn validate_id(id: &str) -> Result<(), InvalidTemplate> {
    if config::TEMPLATE_ID.accepts(id) {
        Ok(())
    } else {
        Err(InvalidTemplate::Id)
    }
}

/// Checks what a registration asks for.
pub fn validate_registration(
    objects: &[String],
    pool_capacity: i64,
    copy_prefix: &str,
) -> Result<(), InvalidTemplate> {
    if objects.is_empty() || objects.len() > MAX_OBJECTS {
        return Err(InvalidTemplate::ObjectCount);
    }
    let mut seen = std::collections::HashSet::new();
    for (position, key) in objects.iter().enumerate() {
        let valid = (1..=MAX_KEY_CHARS).contains(&key.chars().count())
            && !key.starts_with('/')
            && !key.chars().any(char::is_control);
        if !valid {
            return Err(InvalidTemplate::ObjectKey { position });
        }
        if key.starts_with(&format!("{copy_prefix}/")) {
            return Err(InvalidTemplate::ObjectUnderCopies {
                position,
                key: key.clone(),
                prefix: copy_prefix.to_owned(),
            });
        }
        if !seen.insert(key.as_str()) {
            return Err(InvalidTemplate::DuplicateObject {
                position,
                key: key.clone(),
            });
        }
    }
    if !(0..=i64::from(MAX_POOL_CAPACITY)).contains(&pool_capacity) {
        return Err(InvalidTemplate::Capacity);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(objects: &[&str]) -> Template {
        Template {
            id: "welcome".into(),
            version: 3,
            pool_capacity: 4,
            objects: objects.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    #[test]
    fn a_plan_gives_every_object_a_key_of_its_own() {
        let copy_id = Uuid::nil();
        let record = CopyRecord::plan(
            &template(&["a/logo.png", "b/logo.png", "x"]),
            copy_id,
            "copies",
        );
        let keys: Vec<_> = record.objects.iter().map(|o| o.key.as_str()).collect();
        let folder = "copies/welcome/00000000-0000-0000-0000-000000000000/";
        assert_eq!(
            keys,
            [
                format!("{folder}0-logo.png"),
                format!("{folder}1-logo.png"),
                format!("{folder}2-x")
            ]
        );
        assert_eq!(record.version, 3);
        assert_eq!(record.objects[1].source, "b/logo.png");
    }

    #[test]
    fn template_ids_are_checked() {
        assert!(validate_id("welcome-v2.1_x").is_ok());
        assert_eq!(validate_id(""), Err(InvalidTemplate::Id));
        assert_eq!(validate_id("a/b"), Err(InvalidTemplate::Id));
        assert_eq!(validate_id(&"x".repeat(129)), Err(InvalidTemplate::Id));
    }

    #[test]
    fn registrations_are_checked() {
        let objects = |keys: &[&str]| keys.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
        assert!(validate_registration(&objects(&["a", "b"]), 4, "copies").is_ok());
        assert_eq!(
            validate_registration(&[], 4, "copies"),
            Err(InvalidTemplate::ObjectCount)
        );
        assert_eq!(
            validate_registration(&objects(&["a", "/b"]), 4, "copies"),
            Err(InvalidTemplate::ObjectKey { position: 1 })
        );
        assert!(matches!(
            validate_registration(&objects(&["a", "a"]), 4, "copies"),
            Err(InvalidTemplate::DuplicateObject { position: 1, .. })
        ));
        assert!(matches!(
            validate_registration(&objects(&["copies/t/x"]), 4, "copies"),
            Err(InvalidTemplate::ObjectUnderCopies { .. })
        ));
        assert_eq!(
            validate_registration(&objects(&["a"]), 1_001, "copies"),
            Err(InvalidTemplate::Capacity)
        );
        assert_eq!(
            validate_registration(&objects(&["a"]), -1, "copies"),
            Err(InvalidTemplate::Capacity)
        );
    }
}
