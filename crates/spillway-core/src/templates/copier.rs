//! Server-side S3 copies (`CopyObject`, never download and upload) with a bound on the calls
//! in flight across the whole service and on the calls one copy makes at once.
//!
//! A started call is never abandoned: after a failure or past the copy's deadline no new call
//! starts, the started ones finish, and only then is the copy's folder listed and deleted, so
//! cleaning up cannot race a copy still landing.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aws_sdk_s3::{
    Client,
    config::http::HttpResponse,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::{Delete, ObjectIdentifier},
};
use futures::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use prometheus::IntGauge;
use tokio::{sync::Semaphore, time::Instant};
use uuid::Uuid;

use super::config::TemplatesSettings;
use super::{CopiedObject, CopyRecord, copy_folder};

/// S3's longest object key, in bytes of UTF-8.
const S3_MAX_KEY_BYTES: usize = 1_024;

/// What a copy source may keep unescaped (`/` separates the bucket and the key's folders).
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why an S3 call or a copy failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    /// S3 did not answer, timed out or answered 5xx: worth retrying later.
    #[error("s3 unavailable: {0}")]
    Unavailable(String),
    /// S3 refused the call (a missing source object, access denied).
    #[error("s3 refused: {0}")]
    Refused(String),
    /// The copy did not finish within its deadline.
    #[error("the copy did not finish within {0} ms")]
    TimedOut(u64),
}

impl CopyError {
    fn from_sdk<E: ProvideErrorMetadata + std::error::Error + 'static>(
        error: SdkError<E, HttpResponse>,
    ) -> Self {
        let status = error.raw_response().map(|r| r.status().as_u16());
        let text = DisplayErrorContext(&error).to_string();
        match &error {
            SdkError::ServiceError(_) if status.is_some_and(|s| s < 500) => Self::Refused(text),
            _ => Self::Unavailable(text),
        }
    }
}

/// A failed copy and whether its objects are certainly gone.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct CopyFailure {
    pub error: CopyError,
    /// True when every started call finished with an answer and the folder was emptied: the
    /// copy can be recorded as deleted. Otherwise the sweeper deletes it later.
    pub cleaned_up: bool,
}

/// Copies templates' objects within one bucket.
#[derive(Clone)]
pub struct S3Copier {
    client: Client,
    bucket: String,
    copy_prefix: String,
    in_flight_limit: Arc<Semaphore>,
    /// The bound of `in_flight_limit`.
    max_in_flight: usize,
    parallelism: usize,
    timeout: Duration,
    in_flight: Option<IntGauge>,
}

impl S3Copier {
    /// A copier for `bucket`, with the `[templates]` bounds.
    pub fn new(client: Client, bucket: &str, templates: &TemplatesSettings) -> Self {
        Self {
            client,
            bucket: bucket.to_owned(),
            copy_prefix: templates.copy_prefix.clone(),
            in_flight_limit: Arc::new(Semaphore::new(templates.max_s3_in_flight)),
            max_in_flight: templates.max_s3_in_flight,
            parallelism: templates.copy_parallelism,
            timeout: templates.copy_timeout(),
            in_flight: None,
        }
    }

    /// Reports the S3 calls in flight on this gauge.
    pub fn with_in_flight_gauge(mut self, gauge: IntGauge) -> Self {
        self.in_flight = Some(gauge);
        self
    }

    pub fn copy_prefix(&self) -> &str {
        &self.copy_prefix
    }

    /// Runs one S3 call under the service-wide bound.
    async fn call<T>(&self, call: impl Future<Output = T>) -> T {
        let _permit = self
            .in_flight_limit
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let _in_flight = self.in_flight.as_ref().map(InFlight::enter);
        call.await
    }

    /// Copies every object of `record`; on failure deletes what it made.
    pub async fn copy(&self, record: &CopyRecord) -> Result<(), CopyFailure> {
        let deadline = Instant::now() + self.timeout;
        let stop = AtomicBool::new(false);
        let calls: Vec<_> = record
            .objects
            .iter()
            .map(|object| self.copy_one(object, deadline, &stop))
            .collect();
        let outcomes: Vec<Option<Result<(), CopyError>>> = futures::stream::iter(calls)
            .buffer_unordered(self.parallelism)
            .collect()
            .await;
        let mut first_error = None;
        let mut all_answered = true;
        for outcome in outcomes {
            match outcome {
                None => first_error = first_error.or(Some(self.timeout_error())),
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    all_answered &= matches!(error, CopyError::Refused(_));
                    first_error = first_error.or(Some(error));
                }
            }
        }
        let Some(error) = first_error else {
            return Ok(());
        };
        let deleted = self
            .delete_copy(&record.template_id, record.copy_id)
            .await
            .inspect_err(|cleanup| {
                tracing::warn!(%cleanup, copy_id = %record.copy_id, "cleaning up a failed copy");
            });
        Err(CopyFailure {
            error,
            cleaned_up: all_answered && deleted.is_ok(),
        })
    }

    fn timeout_error(&self) -> CopyError {
        CopyError::TimedOut(self.timeout.as_millis() as u64)
    }

    /// One `CopyObject`, unless the copy already failed or is past its deadline (`None`).
    async fn copy_one(
        &self,
        object: &CopiedObject,
        deadline: Instant,
        stop: &AtomicBool,
    ) -> Option<Result<(), CopyError>> {
        let _permit = self
            .in_flight_limit
            .acquire()
            .await
            .expect("the semaphore is never closed");
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            stop.store(true, Ordering::Relaxed);
            return None;
        }
        let _in_flight = self.in_flight.as_ref().map(InFlight::enter);
        let source =
            utf8_percent_encode(&format!("{}/{}", self.bucket, object.source), COPY_SOURCE)
                .to_string();
        let outcome = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(&object.key)
            .copy_source(source)
            .send()
            .await
            .map(|_| ())
            .map_err(CopyError::from_sdk);
        if outcome.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        Some(outcome)
    }

    /// Deletes every object under a copy's folder; returns how many there were.
    pub async fn delete_copy(&self, template_id: &str, copy_id: Uuid) -> Result<usize, CopyError> {
        let folder = copy_folder(&self.copy_prefix, template_id, copy_id);
        let keys = self.list(&folder).await?;
        for chunk in keys.chunks(1_000) {
            self.delete_keys(chunk).await?;
        }
        Ok(keys.len())
    }

    /// Every key under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, CopyError> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .call(
                    self.client
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(prefix)
                        .set_continuation_token(token)
                        .send(),
                )
                .await
                .map_err(CopyError::from_sdk)?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                return Ok(keys);
            }
        }
    }

    async fn delete_keys(&self, keys: &[String]) -> Result<(), CopyError> {
        let objects = keys
            .iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| CopyError::Refused(error.to_string()))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|error| CopyError::Refused(error.to_string()))?;
        let answer = self
            .call(
                self.client
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(delete)
                    .send(),
            )
            .await
            .map_err(CopyError::from_sdk)?;
        match answer.errors().first() {
            Some(error) => Err(CopyError::Unavailable(format!(
                "deleting {}: {}",
                error.key().unwrap_or("?"),
                error.message().unwrap_or("no message")
            ))),
            None => Ok(()),
        }
    }

    /// The keys among `keys` that do not exist in the bucket, in their order: S3 answers 404,
    /// or 400 for a name it refuses (which it cannot hold); a key S3 or its SDK cannot take
    /// ([`can_be_asked_for`]) is not asked for. The HEADs run concurrently, as many at once as the service-wide bound allows.
    pub async fn missing(&self, keys: &[String]) -> Result<Vec<String>, CopyError> {
        let heads = keys.iter().enumerate().map(|(position, key)| async move {
            let missing = self.is_missing(key).await?;
            Ok::<_, CopyError>(missing.then_some(position))
        });
        let mut positions: Vec<usize> = futures::stream::iter(heads)
            .buffer_unordered(self.max_in_flight.max(1))
            .filter_map(|answer| async move { answer.transpose() })
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        positions.sort_unstable();
        Ok(positions.into_iter().map(|p| keys[p].clone()).collect())
    }

    /// Whether one key is absent from the bucket (one HEAD).
    async fn is_missing(&self, key: &str) -> Result<bool, CopyError> {
        if !can_be_asked_for(key) {
            return Ok(true);
        }
        let head = self
            .call(
                self.client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send(),
            )
            .await;
        match head {
            Ok(_) => Ok(false),
            Err(error)
                if error
                    .raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 400 | 404)) =>
            {
                Ok(true)
            }
            Err(error) => Err(CopyError::from_sdk(error)),
        }
    }
}

/// Whether a key can be asked for at all: S3 holds at most 1,024 bytes, and the SDK refuses
/// to send a key of whitespace alone (it builds no request for it).
fn can_be_asked_for(key: &str) -> bool {
    key.len() <= S3_MAX_KEY_BYTES && !key.trim().is_empty()
}

/// Counts one call in flight on a gauge for as long as it lives.
struct InFlight<'a>(&'a IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_s3_or_its_sdk_cannot_take_are_not_asked_for() {
        assert!(can_be_asked_for("templates/logo.png"));
        assert!(can_be_asked_for(" padded "));
        assert!(can_be_asked_for(&"é".repeat(512)));
        assert!(!can_be_asked_for(&"é".repeat(513)));
        assert!(!can_be_asked_for(" "));
        assert!(!can_be_asked_for("\u{3000}\u{a0}"));
    }
}
