//! Fail points: named places where a test makes a process stall or die at the worst moment,
//! so a fault test hits its window every time instead of by luck. They are tikv's fail-rs
//! points, configured by the `FAILPOINTS` environment variable of a service process
//! (`FAILPOINTS="gateway::after_publish=sleep(60000)"`, `...=panic`); without it each one
//! is a lookup in an empty table. Test-only: nothing in a deployment sets `FAILPOINTS`.

/// The gateway has the broker's acknowledgement of an event, and has not answered yet.
pub const GATEWAY_AFTER_PUBLISH: &str = "gateway::after_publish";
/// The counter applied a batch to Redis; nothing of it is in the database yet.
pub const COUNTER_AFTER_APPLY: &str = "counter::after_apply";
/// A consumer's flush made its effects durable; the offsets are not stored yet.
pub const CONSUMER_AFTER_FLUSH: &str = "consumer::after_flush";
/// The batch-writer committed a batch; the offsets are not stored yet.
pub const BATCH_WRITER_AFTER_COMMIT: &str = "batch_writer::after_commit";

/// Reads `FAILPOINTS` once at start; keep the guard for the life of the process.
pub fn enable_from_env() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}

/// Evaluates one fail point (a no-op unless `FAILPOINTS` configures it).
pub fn point(name: &str) {
    fail::fail_point!(name);
}

/// A consumer's flush is about to run; its loop is still receiving the next batch.
pub const CONSUMER_BEFORE_FLUSH: &str = "consumer::before_flush";

/// Evaluates one fail point that stalls without blocking its thread:
/// `consumer::before_flush=1*return(12000)` makes the caller wait 12 s while the task's other
/// work (receiving, rebalancing) goes on, which `sleep(..)` in [`point`] would block.
pub async fn stall(name: &str) {
    if let Some(millis) = stall_millis(name) {
        tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
    }
}

/// The milliseconds a `return(MS)` action of the fail point asks for.
fn stall_millis(name: &str) -> Option<u64> {
    fail::fail_point!(name, |millis: Option<String>| millis
        .and_then(|millis| millis.parse().ok()));
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stall_point_takes_its_milliseconds_from_a_return_action() {
        let _scenario = fail::FailScenario::setup();
        assert_eq!(super::stall_millis("test::stall"), None);
        fail::cfg("test::stall", "return(250)").unwrap();
        assert_eq!(super::stall_millis("test::stall"), Some(250));
        fail::cfg("test::stall", "return").unwrap();
        assert_eq!(super::stall_millis("test::stall"), None);
    }
}
