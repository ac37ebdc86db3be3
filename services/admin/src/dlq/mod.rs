//! `spillway-admin dlq list|show|replay|purge`: the dead-letter topic (`kafka.dlq`) for an
//! operator. Each record is a `spillway.v1.DeadLetter` with `spillway-dlq-*` headers naming
//! its source topic, partition, offset and the reason.
//!
//! - `list` prints one line per dead letter; `show` one letter in full, its payload decoded
//!   when it is a spillway message.
//! - `replay` re-publishes each selected letter's original payload, key and content-type to
//!   its source topic through [`EventProducer`] (idempotent, `acks=all`), with a
//!   `spillway-dlq-replayed-from: <dlq topic>/<partition>/<offset>` header, and prints one line
//!   per record. The consumers' idempotence keeps a replay exact: a row's primary key
//!   (`ON CONFLICT`), a counter event's id.
//! - `purge` does not delete anything: the DLQ is a topic, and its retention removes old
//!   records. It advances the consumer group `spillway-admin` (`--group`) past the letters,
//!   so that `list` and `replay` no longer select them (`--all` still shows them).
//!
//! Filters: `--reason` (a part of the reason, e.g. `database` or `decode`), `--source-topic`,
//! `--since` and `--until` (RFC 3339, or an age such as `30m`, `2h`, `7d`).

mod read;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use spillway_core::{config::Settings, kafka::producer::EventProducer, wire};

use read::{Letter, Reader};

/// The header a replayed record carries: where in the DLQ it came from.
pub const REPLAYED_FROM_HEADER: &str = "spillway-dlq-replayed-from";

#[derive(clap::Subcommand)]
pub enum Command {
    /// One line per dead letter: its place in the DLQ, when, where it came from, why.
    List(Filters),
    /// One dead letter in full (JSON), its payload decoded when it is a spillway message.
    Show {
        /// The letter's place in the DLQ: `<partition>:<offset>`, or `<offset>` (partition 0).
        at: String,
        #[arg(long, default_value = "spillway-admin")]
        group: String,
    },
    /// Re-publish each selected letter's payload to its source topic.
    Replay {
        #[command(flatten)]
        filters: Filters,
        /// Print what would be replayed, publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Mark every letter up to `--until` (default: all) as handled for `--group`.
    Purge {
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        #[arg(long, default_value = "spillway-admin")]
        group: String,
    },
}

/// Which letters a command selects.
#[derive(clap::Args, Clone)]
pub struct Filters {
    /// A part of the reason (case-insensitive), e.g. `database`, `decode: protobuf`.
    #[arg(long)]
    pub reason: Option<String>,
    /// The topic the message came from.
    #[arg(long)]
    pub source_topic: Option<String>,
    /// Letters made at or after this time (RFC 3339, or an age: `30m`, `2h`, `7d`).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Letters made at or before this time.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// Also letters the group has purged.
    #[arg(long)]
    pub all: bool,
    /// The consumer group whose offsets mark purged letters.
    #[arg(long, default_value = "spillway-admin")]
    pub group: String,
}

impl Filters {
    fn accepts(&self, letter: &Letter) -> bool {
        let reason = letter.reason().to_lowercase();
        self.reason
            .as_ref()
            .is_none_or(|wanted| reason.contains(&wanted.to_lowercase()))
            && self
                .source_topic
                .as_ref()
                .is_none_or(|topic| *topic == letter.letter.source_topic)
            && self.since.is_none_or(|since| letter.made_at >= since)
            && self.until.is_none_or(|until| letter.made_at <= until)
    }
}

/// RFC 3339 (`2026-05-01T12:00:00Z`), or an age before now (`90s`, `30m`, `2h`, `7d`).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let seconds: i64 = match (number.parse::<i64>(), unit) {
        (Ok(n), "s") => n,
        (Ok(n), "m") => n * 60,
        (Ok(n), "h") => n * 3_600,
        (Ok(n), "d") => n * 86_400,
        _ => {
            return Err(format!(
                "`{text}`: give an RFC 3339 time or an age such as 30m, 2h, 7d"
            ));
        }
    };
    Ok(Utc::now() - chrono::Duration::seconds(seconds))
}

pub async fn run(command: Command) -> Result<()> {
    let settings = Settings::load()?;
    spillway_core::telemetry::init(&settings.log);
    let topic = settings.kafka.dlq.name.clone();
    match command {
        Command::List(filters) => list(&settings, &topic, &filters),
        Command::Show { at, group } => show(&settings, &topic, &group, &at),
        Command::Replay { filters, dry_run } => replay(&settings, &topic, &filters, dry_run).await,
        Command::Purge { until, group } => purge(&settings, &topic, &group, until),
    }
}

fn select(settings: &Settings, topic: &str, filters: &Filters) -> Result<Vec<Letter>> {
    let reader = Reader::new(&settings.kafka.bootstrap, topic, &filters.group)?;
    Ok(reader
        .read(filters.all)?
        .into_iter()
        .filter(|letter| filters.accepts(letter))
        .collect())
}

fn list(settings: &Settings, topic: &str, filters: &Filters) -> Result<()> {
    let letters = select(settings, topic, filters)?;
    for letter in &letters {
        println!("{}", letter.summary());
    }
    eprintln!("{} dead letter(s) in {topic}", letters.len());
    Ok(())
}

fn show(settings: &Settings, topic: &str, group: &str, at: &str) -> Result<()> {
    let (partition, offset): (i32, i64) = match at.split_once(':') {
        Some((partition, offset)) => (partition.parse()?, offset.parse()?),
        None => (
            0,
            at.parse().context("`<partition>:<offset>` or `<offset>`")?,
        ),
    };
    let reader = Reader::new(&settings.kafka.bootstrap, topic, group)?;
    let Some(letter) = reader
        .read(true)?
        .into_iter()
        .find(|letter| letter.partition == partition && letter.offset == offset)
    else {
        bail!("no dead letter at {topic} {partition}:{offset}");
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&letter.describe(&settings.kafka))?
    );
    Ok(())
}

async fn replay(settings: &Settings, topic: &str, filters: &Filters, dry_run: bool) -> Result<()> {
    let letters = select(settings, topic, filters)?;
    let producer = EventProducer::new(
        &settings.kafka.bootstrap,
        "spillway-admin",
        settings.kafka.produce_timeout(),
    )?;
    for letter in &letters {
        let from = format!("{topic}/{}/{}", letter.partition, letter.offset);
        let source = &letter.letter.source_topic;
        if dry_run {
            println!("would replay {from} -> {source} ({})", letter.reason());
            continue;
        }
        let mut headers = vec![(REPLAYED_FROM_HEADER, from.as_str())];
        if !letter.letter.content_type.is_empty() {
            headers.push((
                wire::CONTENT_TYPE_HEADER,
                letter.letter.content_type.as_str(),
            ));
        }
        if !letter.letter.request_id.is_empty() {
            headers.push((wire::REQUEST_ID_HEADER, letter.letter.request_id.as_str()));
        }
        let delivered = producer
            .send(source, &letter.letter.key, &letter.letter.payload, &headers)
            .await
            .with_context(|| format!("replaying {from} to {source}"))?;
        println!(
            "replayed {from} -> {source}/{}/{} ({})",
            delivered.partition,
            delivered.offset,
            letter.reason()
        );
    }
    producer.flush_at_shutdown();
    eprintln!(
        "{} dead letter(s) {}",
        letters.len(),
        if dry_run { "selected" } else { "replayed" }
    );
    Ok(())
}

fn purge(
    settings: &Settings,
    topic: &str,
    group: &str,
    until: Option<DateTime<Utc>>,
) -> Result<()> {
    let reader = Reader::new(&settings.kafka.bootstrap, topic, group)?;
    let purged = reader.advance_group(until)?;
    eprintln!("{purged} dead letter(s) of {topic} marked as handled for group `{group}`");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_an_age() {
        let at = parse_time("2026-05-01T12:00:00Z").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-05-01T12:00:00+00:00");
        let age = Utc::now() - parse_time("2h").unwrap();
        assert!((7_190..=7_210).contains(&age.num_seconds()), "{age}");
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("").is_err());
    }
}
