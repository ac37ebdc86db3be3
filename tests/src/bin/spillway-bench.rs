//! `cargo xtask bench <name>`: runs a named benchmark against the running stack, prints its
//! table and writes its JSON under `target/bench/`.

use anyhow::{Result, bail};
use spillway_tests::bench;

#[tokio::main]
async fn main() -> Result<()> {
    let name = std::env::args().nth(1).unwrap_or_default();
    let report = match name.as_str() {
        "stack" => bench::stack::run().await?,
        "counters" => bench::counters::run().await?,
        "batch-writer" => bench::writes::run().await?,
        "queues" => {
            let mut report = bench::Report::new("queues");
            bench::queues::run(&mut report).await?;
            report
        }
        other => bail!("unknown benchmark `{other}`; known: stack, counters, batch-writer, queues"),
    };
    report.publish()?;
    Ok(())
}
