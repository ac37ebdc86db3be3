//! The Redis side of the counter: one `counter_apply.lua` call per event, pipelined per batch,
//! and the epoch, a key whose value changes whenever Redis is found emptied.

use deadpool_redis::Connection;
use spillway_core::redis::{Keys, scripts};

/// One event, ready for the apply script.
#[derive(Debug, Clone)]
pub struct ApplyCommand {
    pub namespace: String,
    pub entity_id: String,
    pub partition: i32,
    pub offset: i64,
    pub operation: Operation,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    AddMember(String),
    RemoveMember(String),
    Increment(i64),
}

impl Operation {
    fn script_args(&self) -> (&'static str, &str, i64) {
        match self {
            Operation::AddMember(member) => ("add", member, 0),
            Operation::RemoveMember(member) => ("remove", member, 0),
            Operation::Increment(delta) => ("incr", "", *delta),
        }
    }

    pub fn member(&self) -> Option<&str> {
        match self {
            Operation::AddMember(member) | Operation::RemoveMember(member) => Some(member),
            Operation::Increment(_) => None,
        }
    }
}

/// What the apply script did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyStatus {
    /// Redis does not hold this counter: load it from the database, then apply again.
    Missing,
    /// Applied now; the value after it.
    Applied(i64),
    /// Applied before (a replay); nothing changed.
    Replayed(i64),
}

fn status(code: i64, value: i64) -> ApplyStatus {
    match code {
        0 => ApplyStatus::Missing,
        1 => ApplyStatus::Applied(value),
        _ => ApplyStatus::Replayed(value),
    }
}

/// Applies the commands in order, in one pipeline. A Redis that lost the script (restarted)
/// gets it loaded again and the pipeline re-sent: replays change nothing.
pub async fn apply_all(
    connection: &mut Connection,
    keys: &Keys,
    commands: &[&ApplyCommand],
) -> redis::RedisResult<Vec<ApplyStatus>> {
    if commands.is_empty() {
        return Ok(Vec::new());
    }
    let pipeline = apply_pipeline(keys, commands);
    let replies: Vec<(i64, i64)> =
        spillway_core::redis::query_with_scripts(connection, &pipeline, &[&scripts::COUNTER_APPLY])
            .await?;
    Ok(replies
        .into_iter()
        .map(|(code, value)| status(code, value))
        .collect())
}

fn apply_pipeline(keys: &Keys, commands: &[&ApplyCommand]) -> redis::Pipeline {
    let mut pipeline = redis::pipe();
    for command in commands {
        let (operation, member, delta) = command.operation.script_args();
        pipeline
            .cmd("EVALSHA")
            .arg(scripts::COUNTER_APPLY.get_hash())
            .arg(2)
            .arg(keys.counter(&command.namespace, &command.entity_id))
            .arg(keys.counter_members(&command.namespace, &command.entity_id))
            .arg(command.partition)
            .arg(command.offset)
            .arg(operation)
            .arg(member)
            .arg(delta);
    }
    pipeline
}

/// The key whose value identifies "this Redis, since it was last found empty".
pub fn epoch_key(keys: &Keys) -> String {
    keys.other("spillway:counter:epoch")
}

/// The current epoch, creating one if Redis has none (a new or emptied Redis).
pub async fn current_epoch(connection: &mut Connection, key: &str) -> redis::RedisResult<String> {
    let fresh = uuid::Uuid::new_v4().to_string();
    let _: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(&fresh)
        .arg("NX")
        .query_async(connection)
        .await?;
    redis::cmd("GET").arg(key).query_async(connection).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_arguments_say_what_to_do() {
        assert_eq!(
            Operation::AddMember("a".into()).script_args(),
            ("add", "a", 0)
        );
        assert_eq!(
            Operation::RemoveMember("a".into()).script_args(),
            ("remove", "a", 0)
        );
        assert_eq!(Operation::Increment(7).script_args(), ("incr", "", 7));
        assert_eq!(status(0, 0), ApplyStatus::Missing);
        assert_eq!(status(1, 5), ApplyStatus::Applied(5));
        assert_eq!(status(2, 5), ApplyStatus::Replayed(5));
    }
}
