//! The test bucket as an outside client sees it: source objects put in, copies read back and
//! listed, so tests can check that every copied object matches its source and that the
//! bucket holds nothing the database does not account for.

use aws_sdk_s3::{
    Client,
    primitives::ByteStream,
    types::{Delete, ObjectIdentifier},
};

use crate::TestConfig;

/// A client of the test's bucket (created when missing).
pub async fn bucket(config: &TestConfig) -> (Client, String) {
    let settings = config.settings();
    let client = spillway_core::s3::client(&settings.s3);
    spillway_core::s3::ensure_bucket(&client, &settings.s3.bucket)
        .await
        .expect("test bucket");
    (client, settings.s3.bucket)
}

/// Puts `count` source objects `<folder>/<n>.bin` of `size` bytes each (distinct contents);
/// returns their keys.
pub async fn put_sources(
    client: &Client,
    bucket: &str,
    folder: &str,
    count: usize,
    size: usize,
) -> Vec<String> {
    put_numbered(client, bucket, folder, count, |n| {
        (0..size).map(|i| ((i * 31 + n * 7) % 251) as u8).collect()
    })
    .await
}

/// Puts `<folder>/<n>.bin` with the bytes `body(n)` for each `n` below `count`; returns
/// their keys.
pub async fn put_numbered(
    client: &Client,
    bucket: &str,
    folder: &str,
    count: usize,
    body: impl Fn(usize) -> Vec<u8>,
) -> Vec<String> {
    let mut keys = Vec::with_capacity(count);
    for n in 0..count {
        let key = format!("{folder}/{n}.bin");
        client
            .put_object()
            .bucket(bucket)
            .key(&key)
            .body(ByteStream::from(body(n)))
            .send()
            .await
            .expect("put source object");
        keys.push(key);
    }
    keys
}

/// An object's bytes, or `None` when it does not exist.
pub async fn get(client: &Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .ok()?;
    Some(object.body.collect().await.expect("object body").to_vec())
}

/// Every key under `prefix`.
pub async fn list(client: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list objects");
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return keys;
        }
    }
}

/// Deletes every object of the bucket, then the bucket.
pub async fn remove_bucket(client: &Client, bucket: &str) -> anyhow::Result<()> {
    let keys = list(client, bucket, "").await;
    for chunk in keys.chunks(1_000) {
        let objects = chunk
            .iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()?;
        client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await?;
    }
    client.delete_bucket().bucket(bucket).send().await?;
    Ok(())
}
