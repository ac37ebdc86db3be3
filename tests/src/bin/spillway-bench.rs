//! `cargo xtask bench <name>`: runs a named benchmark against the running stack, prints its
//! table and writes its JSON under `target/bench/`.

use anyhow::{Result, bail};
use spillway_tests::bench;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().cloned().unwrap_or_default();
    if name == "naive-likes-server" {
        // The naive handler of `counters`, run as a process of its own (see there).
        let (schema, port) = (args.get(1).cloned().unwrap_or_default(), args.get(2));
        let port = port.and_then(|p| p.parse().ok()).unwrap_or(0);
        return bench::counters::serve_naive(&schema, port).await;
    }
    let report = match name.as_str() {
        "stack" => bench::stack::run().await?,
        "counters" => bench::counters::run().await?,
        "batch-writer" => bench::writes::run().await?,
        "templates" => bench::templates::run().await?,
        "peers" => bench::peers::run(&args[1..]).await?,
        "scale" => bench::scale::run().await?,
        "reads" | "views" | "queues" => reads(&name).await?,
        other => bail!(
            "unknown benchmark `{other}`; known: stack, counters, batch-writer, templates, \
             reads (views and queues), peers, scale"
        ),
    };
    report.publish()?;
    Ok(())
}

/// The read paths in one report: cached views and waiting rooms (`reads`), or one of them.
async fn reads(name: &str) -> Result<bench::Report> {
    let mut report = bench::Report::new(name);
    if name != "queues" {
        bench::views::run(&mut report).await?;
    }
    if name != "views" {
        bench::queues::run(&mut report).await?;
    }
    Ok(report)
}
