//! The S3 client (aws-sdk-s3) for an S3-compatible endpoint with path-style addressing, and
//! the bucket spillway copies into, created at start when missing.

use std::time::Duration;

use aws_sdk_s3::{
    Client,
    config::{BehaviorVersion, Credentials, Region, timeout::TimeoutConfig},
};

use crate::config::S3Settings;

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("s3: {0}")]
    Request(String),
}

/// Builds a client for the configured endpoint; nothing is contacted yet.
pub fn client(settings: &S3Settings) -> Client {
    let credentials = Credentials::new(
        settings.access_key.expose(),
        settings.secret_key.expose(),
        None,
        None,
        "spillway-config",
    );
    let timeout = Duration::from_millis(settings.timeout_ms);
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&settings.endpoint)
        .region(Region::new(settings.region.clone()))
        .credentials_provider(credentials)
        .force_path_style(true)
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(timeout)
                .connect_timeout(Duration::from_millis(1_000))
                .build(),
        )
        .build();
    Client::from_conf(config)
}

/// Creates the bucket unless it exists.
pub async fn ensure_bucket(client: &Client, bucket: &str) -> Result<(), S3Error> {
    if client.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    match client.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(error) => {
            let already = error.as_service_error().is_some_and(|e| {
                e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
            });
            if already {
                Ok(())
            } else {
                Err(S3Error::Request(format!(
                    "creating bucket {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&error)
                )))
            }
        }
    }
}

/// Readiness: the bucket answers a HEAD.
pub async fn check(client: &Client, bucket: &str) -> Result<(), String> {
    client
        .head_bucket()
        .bucket(bucket)
        .send()
        .await
        .map(|_| ())
        .map_err(|error| aws_sdk_s3::error::DisplayErrorContext(&error).to_string())
}
