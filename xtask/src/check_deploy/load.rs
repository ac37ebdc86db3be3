//! The live check's short, bounded load through the gateway's REST API (docs/openapi.yaml):
//! likes and unlikes, views, playlist writes and reads, copies of the template `up`'s demo
//! registers, cached-view reads (a miss, then hits), a waiting room joined, polled and left,
//! a few requests the gateway refuses (4xx), and two undecodable messages put on
//! the counter and sink topics so that the DLQ panels have something to show.

use std::{
    collections::BTreeMap,
    io::Write,
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{Context, Result, ensure};

use super::http;
use crate::{env, paths::Paths, stack::kafka, token::TokenRequest};

const GATEWAY: u16 = 8080;
const ROUNDS: usize = 8;
const PER_ROUND: usize = 10;
const PAUSE: Duration = Duration::from_millis(1500);
const COUNTER_TOPIC: &str = "spillway.counter-events.v1";
const SINK_TOPIC: &str = "spillway.writes.playlists.v1";
/// The template the demo registers (tests/src/bin/spillway-demo.rs); 404 where templates
/// are not served yet.
const DEMO_TEMPLATE_COPIES: &str = "/v1/templates/welcome-kit/copies";

/// A member token signed with the local stack's development secret.
fn token(member: &str) -> Result<String> {
    TokenRequest::parse(&["--sub", member])?.sign(env::DEV_JWT_SECRET)
}

/// Answers counted by status.
#[derive(Default)]
struct Tally(BTreeMap<u16, usize>);

impl Tally {
    fn send(&mut self, method: &str, path: &str, member: Option<&str>, body: &str) -> Result<()> {
        self.call(method, path, member, body).map(drop)
    }

    /// [`Tally::send`], returning the answer's body.
    fn call(
        &mut self,
        method: &str,
        path: &str,
        member: Option<&str>,
        body: &str,
    ) -> Result<String> {
        let bearer = member
            .map(token)
            .transpose()?
            .map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(bearer) = &bearer {
            headers.push(("Authorization", bearer));
        }
        let response = http::request(GATEWAY, method, path, &headers, body)?;
        *self.0.entry(response.status).or_insert(0) += 1;
        Ok(response.body)
    }

    fn successes(&self) -> usize {
        self.0
            .iter()
            .filter(|(status, _)| (200..300).contains(*status))
            .map(|(_, n)| n)
            .sum()
    }
}

/// One round: likes, unlikes, views, writes, reads and refused requests.
fn round(tally: &mut Tally, round: usize) -> Result<()> {
    for i in 0..PER_ROUND {
        let video = format!("video-{}", i % 10 + 1);
        let member = format!("check-deploy-{round}-{i}");
        let likes = format!("/v1/counters/video-likes/{video}/members/me");
        tally.send("PUT", &likes, Some(&member), "")?;
        if i % 3 == 0 {
            tally.send("DELETE", &likes, Some(&member), "")?;
        }
        let views = format!("/v1/counters/video-views/{video}/increments");
        tally.send("POST", &views, None, &format!("{{\"delta\": {}}}", i + 1))?;
        let write =
            format!("{{\"title\": \"check-deploy {round}-{i}\", \"visibility\": \"public\"}}");
        tally.send("POST", "/v1/writes/playlists", Some(&member), &write)?;
        tally.send(
            "GET",
            &format!("/v1/counters/video-likes/{video}"),
            None,
            "",
        )?;
    }
    tally.send(
        "GET",
        "/v1/counters/video-views?ids=video-1,video-2,video-3",
        None,
        "",
    )?;
    // Copies after the demo's: their metrics' series exist by now, so rates see these.
    let member = format!("check-deploy-{round}");
    tally.send("POST", DEMO_TEMPLATE_COPIES, Some(&member), "")?;
    reads(tally, round)?;
    // Refused: a zero delta (400), an unknown namespace (404), a write without a token (401).
    tally.send(
        "POST",
        "/v1/counters/video-views/video-1/increments",
        None,
        "{\"delta\": 0}",
    )?;
    tally.send("GET", "/v1/counters/no-such-namespace/x", None, "")?;
    tally.send(
        "POST",
        "/v1/writes/playlists",
        None,
        "{\"title\": \"anonymous\"}",
    )?;
    Ok(())
}

/// Cached views (a lecture not read before: a miss, then hits; a member's playlists) and a
/// waiting room of the sample configuration joined, polled and left.
fn reads(tally: &mut Tally, round: usize) -> Result<()> {
    let lecture = format!("/v1/views/lecture-attendance/{}", 50 + round);
    for _ in 0..3 {
        tally.send("GET", &lecture, None, "")?;
    }
    let member = format!("check-deploy-{round}-0");
    // The view is keyed by member: the member reads its own key.
    tally.send(
        "GET",
        &format!("/v1/views/member-playlists/{member}"),
        Some(&member),
        "",
    )?;
    let room = "/v1/queues/concert-check-deploy/tokens";
    let joined: serde_json::Value =
        serde_json::from_str(&tally.call("POST", room, Some(&member), "")?)?;
    let token = joined["token"]
        .as_str()
        .context("a token from the waiting room")?;
    let own = format!("{room}/{token}");
    tally.send("GET", &own, Some(&member), "")?;
    tally.send("DELETE", &own, Some(&member), "")
}

/// Puts one undecodable message on `topic` with Kafka's console producer (it goes to the
/// DLQ: the byte 'g' starts a protobuf field with the invalid wire type 7).
fn produce_garbage(paths: &Paths, topic: &str) -> Result<()> {
    let mut producer = Command::new("java")
        .arg("-cp")
        .arg(kafka::classpath(paths))
        .args([
            "org.apache.kafka.tools.ConsoleProducer",
            "--bootstrap-server",
        ])
        .arg(format!("127.0.0.1:{}", kafka::PORT))
        .args(["--topic", topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting Kafka's console producer")?;
    producer
        .stdin
        .take()
        .context("producer stdin")?
        .write_all(b"garbage from cargo xtask check-deploy --live\n")?;
    let output = producer.wait_with_output()?;
    ensure!(
        output.status.success(),
        "console producer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Drives the load; a one-line summary of the answers.
pub fn drive(paths: &Paths) -> Result<String> {
    let mut tally = Tally::default();
    for number in 0..ROUNDS {
        round(&mut tally, number)?;
        sleep(PAUSE);
    }
    ensure!(
        tally.successes() > 0,
        "the gateway accepted nothing: {:?}",
        tally.0
    );
    for topic in [COUNTER_TOPIC, SINK_TOPIC] {
        produce_garbage(paths, topic)?;
    }
    let total: usize = tally.0.values().sum();
    let statuses: Vec<String> = tally.0.iter().map(|(s, n)| format!("{n}x{s}")).collect();
    Ok(format!(
        "{total} requests ({}), 2 undecodable messages for the DLQ",
        statuses.join(", ")
    ))
}
