//! The waiting rooms' store over Redis: every join, poll and leave runs one Lua step
//! (`lua/queue_admit.lua`) that expires sessions and silent waiters, applies the call, admits
//! from the head of the line up to the capacity and the rate, and describes the caller's
//! token. Any number of gateways share a queue; no ticker and no lock are needed.
//!
//! Every step is a replicated call ([`RedisClient::replicated`]): a failover that lost an
//! admission would let more members in than the capacity.
//!
//! Each gateway remembers the epoch of every queue it has served; a queue whose Redis state
//! vanished under it (Redis restarted empty) is held (503) until every session it may have
//! admitted has expired, so the line never turns into letting everyone in.
//!
//! Each step also sets the room's gauges (waiting, active, admitted in the last minute),
//! labelled by the configured pattern (`concert-*`), never by the caller's queue name.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{LazyLock, Mutex},
};

use super::config::{QUEUE_NAME, QueueSettings, settings_for};
use crate::{
    metrics::Metrics,
    redis::{RedisClient, RedisError},
};
use prometheus::{IntGaugeVec, Opts};

/// One step of a waiting room: expire, apply the caller's operation, admit, describe.
static QUEUE_ADMIT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/queue_admit.lua")));

/// What a step is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Join,
    Poll,
    Leave,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Poll => "poll",
            Self::Leave => "leave",
        }
    }
}

/// Where a token stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// In line at `position` (1 is next).
    Waiting { position: u64 },
    /// Admitted until `expires_at_ms` (unix ms).
    Active { expires_at_ms: i64 },
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Ticket {
        token: String,
        standing: Standing,
        /// Members admitted in the last minute (the measured admission rate).
        admitted_last_minute: u64,
    },
    /// No such token (never issued, left, expired or dropped for silence).
    Unknown,
    /// The token is another member's.
    Forbidden,
    Left,
    /// The queue's state was lost; nobody is admitted until then (unix ms).
    Held {
        until_ms: i64,
    },
}

/// The step's part of the script's answer.
type StepAnswer = (String, String, String, u64, i64, u64, i64, String);

/// The raw answer of the script: the step, and the room's waiting and active counts.
type ScriptAnswer = (StepAnswer, (u64, u64));

/// The rooms' gauges, by configured pattern, as the last step on this gateway saw them.
struct RoomGauges {
    waiting: IntGaugeVec,
    active: IntGaugeVec,
    admitted_last_minute: IntGaugeVec,
}

impl RoomGauges {
    fn new(metrics: &Metrics) -> Self {
        let gauge = |name: &str, help: &str| {
            metrics.register(
                IntGaugeVec::new(Opts::new(metrics.name(name), help), &["room"])
                    .expect("valid metric"),
            )
        };
        Self {
            waiting: gauge("queue_waiting", "Members waiting in line, by room pattern"),
            active: gauge(
                "queue_active",
                "Members admitted and active, by room pattern",
            ),
            admitted_last_minute: gauge(
                "queue_admitted_last_minute",
                "Members admitted in the last minute, by room pattern",
            ),
        }
    }

    fn set(&self, room: &str, waiting: u64, active: u64, admitted: u64) {
        let as_gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.waiting
            .with_label_values(&[room])
            .set(as_gauge(waiting));
        self.active.with_label_values(&[room]).set(as_gauge(active));
        self.admitted_last_minute
            .with_label_values(&[room])
            .set(as_gauge(admitted));
    }
}

/// The waiting rooms of one gateway.
pub struct WaitingRooms {
    redis: RedisClient,
    queues: BTreeMap<String, QueueSettings>,
    /// Queue -> the epoch of its Redis state this gateway last saw.
    epochs: Mutex<HashMap<String, String>>,
    gauges: RoomGauges,
}

impl WaitingRooms {
    pub fn new(
        redis: RedisClient,
        queues: BTreeMap<String, QueueSettings>,
        metrics: &Metrics,
    ) -> Self {
        Self {
            redis,
            queues,
            epochs: Mutex::new(HashMap::new()),
            gauges: RoomGauges::new(metrics),
        }
    }

    /// The settings of a configured queue.
    pub fn settings(&self, queue: &str) -> Option<&QueueSettings> {
        if !QUEUE_NAME.accepts(queue) {
            return None;
        }
        settings_for(&self.queues, queue)
    }

    fn known_epoch(&self, queue: &str) -> String {
        let epochs = self.epochs.lock().expect("epochs lock");
        epochs.get(queue).cloned().unwrap_or_default()
    }

    fn remember_epoch(&self, queue: &str, epoch: String) {
        let mut epochs = self.epochs.lock().expect("epochs lock");
        epochs.insert(queue.to_owned(), epoch);
    }

    /// Runs one step for `member` on `queue`; `token` is the caller's (poll, leave).
    pub async fn step(
        &self,
        queue: &str,
        settings: &QueueSettings,
        operation: Operation,
        member: &str,
        token: Option<&str>,
    ) -> Result<Step, RedisError> {
        let token = match token {
            Some(token) => token.to_owned(),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        let now = chrono::Utc::now().timestamp_millis();
        let mut invocation = QUEUE_ADMIT.prepare_invoke();
        for part in ["meta", "w", "a", "hb", "own", "tok", "adm"] {
            invocation.key(self.redis.keys().queue(queue, part));
        }
        invocation
            .arg(now)
            .arg(settings.capacity)
            .arg(settings.admit_per_minute)
            .arg(settings.session_ttl().as_millis() as u64)
            .arg(settings.heartbeat_timeout().as_millis() as u64)
            .arg(self.known_epoch(queue))
            .arg(uuid::Uuid::now_v7().to_string())
            .arg(operation.as_str())
            .arg(member)
            .arg(&token);
        let (answer, (waiting, active)): ScriptAnswer =
            self.redis.replicated().invoke(&invocation).await?;
        self.remember_epoch(queue, answer.1.clone());
        self.gauges
            .set(&settings.pattern, waiting, active, answer.5);
        Ok(interpret(answer))
    }
}

fn interpret(answer: StepAnswer) -> Step {
    let (outcome, _epoch, status, position, expiry, admitted, hold_until, token) = answer;
    match (outcome.as_str(), status.as_str()) {
        ("holding", _) => Step::Held {
            until_ms: hold_until,
        },
        ("forbidden", _) => Step::Forbidden,
        ("left", _) => Step::Left,
        ("ok", "active") => Step::Ticket {
            token,
            standing: Standing::Active {
                expires_at_ms: expiry,
            },
            admitted_last_minute: admitted,
        },
        ("ok", "waiting") => Step::Ticket {
            token,
            standing: Standing::Waiting { position },
            admitted_last_minute: admitted,
        },
        _ => Step::Unknown,
    }
}

/// Seconds until a waiter at `position` is admitted at the measured rate, if one was measured.
pub fn eta_seconds(position: u64, admitted_last_minute: u64) -> Option<u64> {
    if admitted_last_minute == 0 {
        return None;
    }
    Some((position * 60).div_ceil(admitted_last_minute))
}

/// When to poll again: often enough to stay in line, rarely when the wait is long.
pub fn poll_after_seconds(
    standing: &Standing,
    eta: Option<u64>,
    settings: &QueueSettings,
    now_ms: i64,
) -> u64 {
    let heartbeat_bound = (settings.heartbeat_timeout_seconds / 3).max(1);
    match standing {
        Standing::Waiting { .. } => eta.map_or(2, |eta| eta / 4).clamp(1, heartbeat_bound),
        Standing::Active { expires_at_ms } => {
            let remaining = (expires_at_ms - now_ms).max(0) as u64 / 1_000;
            (remaining / 2).clamp(1, 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> QueueSettings {
        QueueSettings {
            pattern: "q".into(),
            capacity: 1,
            admit_per_minute: 60,
            session_ttl_seconds: 600,
            heartbeat_timeout_seconds: 60,
        }
    }

    #[test]
    fn the_eta_comes_from_the_measured_rate() {
        assert_eq!(eta_seconds(10, 0), None, "nothing measured yet");
        assert_eq!(eta_seconds(10, 60), Some(10));
        assert_eq!(eta_seconds(1, 120), Some(1), "rounded up");
        assert_eq!(eta_seconds(300, 30), Some(600));
    }

    #[test]
    fn waiters_poll_within_the_heartbeat_timeout() {
        let waiting = Standing::Waiting { position: 5 };
        assert_eq!(poll_after_seconds(&waiting, None, &settings(), 0), 2);
        assert_eq!(
            poll_after_seconds(&waiting, Some(10_000), &settings(), 0),
            20
        );
        assert_eq!(poll_after_seconds(&waiting, Some(1), &settings(), 0), 1);
        let active = Standing::Active {
            expires_at_ms: 100_000,
        };
        assert_eq!(poll_after_seconds(&active, None, &settings(), 0), 50);
    }

    #[test]
    fn script_answers_become_steps() {
        let answer = |outcome: &str, status: &str| -> StepAnswer {
            (
                outcome.into(),
                "e".into(),
                status.into(),
                3,
                99,
                7,
                1234,
                "t".into(),
            )
        };
        assert_eq!(
            interpret(answer("ok", "waiting")),
            Step::Ticket {
                token: "t".into(),
                standing: Standing::Waiting { position: 3 },
                admitted_last_minute: 7
            }
        );
        assert_eq!(
            interpret(answer("holding", "")),
            Step::Held { until_ms: 1234 }
        );
        assert_eq!(interpret(answer("forbidden", "")), Step::Forbidden);
        assert_eq!(interpret(answer("unknown", "")), Step::Unknown);
    }
}
