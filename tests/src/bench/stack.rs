//! `cargo xtask bench stack`: the round trips of the stack itself, so later benchmarks can be
//! read against them. Baseline: a TCP echo over loopback in the same process and run.

use std::time::{Duration, Instant};

use rdkafka::{
    ClientConfig, Message,
    consumer::{Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use sea_orm::{ConnectionTrait, Database};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{Report, Samples, time_sequential};
use crate::stack::Stack;

const ROUND_TRIPS: usize = 5_000;
const KAFKA_ROUND_TRIPS: usize = 1_000;
const BASELINE: &str = "loopback TCP echo";

pub async fn run() -> anyhow::Result<Report> {
    let stack = Stack::current();
    let mut report = Report::new("stack");
    report.add(
        BASELINE,
        None,
        &tcp_echo().await?,
        "64 B each way, same process",
    );
    report.add(
        "redis PING",
        Some(BASELINE),
        &redis_ping(&stack).await?,
        "one connection, unpipelined",
    );
    report.add(
        "postgres SELECT 1",
        Some(BASELINE),
        &postgres_select(&stack).await?,
        "one connection",
    );
    report.add(
        "kafka produce -> consume",
        Some(BASELINE),
        &kafka_round_trip(&stack).await?,
        "acks=all, idempotent; time from send to the consumer receiving it",
    );
    Ok(report)
}

async fn tcp_echo() -> anyhow::Result<Samples> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        if let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 64];
            while socket.read_exact(&mut buffer).await.is_ok() {
                if socket.write_all(&buffer).await.is_err() {
                    break;
                }
            }
        }
    });
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut buffer = [7u8; 64];
    let mut samples = Samples::with_capacity(ROUND_TRIPS);
    let started = Instant::now();
    for _ in 0..ROUND_TRIPS {
        let one = Instant::now();
        stream.write_all(&buffer).await?;
        stream.read_exact(&mut buffer).await?;
        samples.record(one.elapsed());
    }
    samples.set_elapsed(started.elapsed());
    Ok(samples)
}

async fn redis_ping(stack: &Stack) -> anyhow::Result<Samples> {
    let connection = redis::Client::open(stack.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    Ok(time_sequential(ROUND_TRIPS, |_| {
        let mut connection = connection.clone();
        async move {
            let _: String = redis::cmd("PING")
                .query_async(&mut connection)
                .await
                .expect("PING");
        }
    })
    .await)
}

async fn postgres_select(stack: &Stack) -> anyhow::Result<Samples> {
    let mut options = sea_orm::ConnectOptions::new(stack.database_url.clone());
    options.max_connections(1).sqlx_logging(false);
    let db = Database::connect(options).await?;
    Ok(time_sequential(ROUND_TRIPS, |_| {
        let db = db.clone();
        async move {
            db.execute_unprepared("SELECT 1").await.expect("SELECT 1");
        }
    })
    .await)
}

async fn kafka_round_trip(stack: &Stack) -> anyhow::Result<Samples> {
    let topic = format!("bench-stack-{}", uuid::Uuid::new_v4().simple());
    spillway_core::kafka::admin::ensure_topics(&stack.kafka, &[(topic.clone(), 1)]).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka)
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    consumer.subscribe(&[&topic])?;
    // Warm up: the first records pay for metadata and the group join.
    for i in 0..20 {
        send(&producer, &topic, i).await?;
        consumer.recv().await?;
    }
    let mut samples = Samples::with_capacity(KAFKA_ROUND_TRIPS);
    let started = Instant::now();
    for i in 0..KAFKA_ROUND_TRIPS {
        let one = Instant::now();
        send(&producer, &topic, i).await?;
        let message = tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await??;
        anyhow::ensure!(message.payload().is_some());
        samples.record(one.elapsed());
    }
    samples.set_elapsed(started.elapsed());
    Ok(samples)
}

async fn send(producer: &FutureProducer, topic: &str, i: usize) -> anyhow::Result<()> {
    let payload = format!("{i:0>64}");
    producer
        .send(
            FutureRecord::<(), _>::to(topic).payload(&payload),
            Timeout::After(Duration::from_secs(10)),
        )
        .await
        .map_err(|(error, _)| error)?;
    Ok(())
}
