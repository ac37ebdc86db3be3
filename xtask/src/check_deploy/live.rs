//! `check-deploy --live`: starts what `cargo xtask up` starts (the stack, the sample schema,
//! the four services), a real Prometheus scraping them, runs `up`'s demo and a short load of
//! its own, then runs every query of every dashboard panel and every alert rule through
//! Prometheus' HTTP API. It stops everything it started, by pid, and checks with `ps` that
//! none of it is left.

use std::{path::Path, process::Command, thread::sleep, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::{
    load,
    prometheus::{self, Answer, Prometheus},
    report::Report,
    static_checks::dashboard_files,
    tools::Tools,
};
use crate::{demo, paths::Paths, process, services, stack, topology::Topology};

/// Grafana's interval variables, as the check substitutes them: the load lies within the
/// last minute when the queries run.
const INTERVALS: [(&str, &str); 3] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "10s"),
    ("$__range", "5m"),
];

/// What this run started (and so must stop).
#[derive(Default)]
struct Started {
    stack: Vec<&'static str>,
    services: Vec<&'static str>,
    prometheus: bool,
}

pub fn run(paths: &Paths, tools: &Tools, report: &mut Report) -> Result<()> {
    let mut started = Started::default();
    let outcome = run_started(paths, tools, report, &mut started);
    eprintln!("  stopping what this run started:");
    report.check("everything started is stopped (ps)", || started.stop(paths));
    outcome
}

fn run_started(
    paths: &Paths,
    tools: &Tools,
    report: &mut Report,
    started: &mut Started,
) -> Result<()> {
    started.stack = stack::components(Topology::SINGLE)
        .iter()
        .filter(|component| !process::port_open(component.port()))
        .map(|component| component.name())
        .collect();
    stack::up(paths, Topology::SINGLE)?;
    stack::postgres::run_sql_file(&paths.repo.join("config/sample-schema.sql"))?;
    let binaries = services::build(paths)?;
    started.services = services::not_running();
    services::start(paths, &binaries, Topology::SINGLE)?;
    started.prometheus = true;
    let prometheus = Prometheus::start(paths, &tools.prometheus)?;
    eprintln!(
        "  prometheus        http://127.0.0.1:{}  ready",
        prometheus.port
    );
    // Two scrapes first, so that series the demo creates have a sample before it ends.
    prometheus.wait_for_scrapes(paths, 2)?;
    // `up` ends with the demo (counters, writes, templates); then our own load.
    report.check("the demo of `cargo xtask up`", || {
        demo::run(paths, Topology::SINGLE).map(|()| "ran".to_owned())
    });
    report.check("load through the gateway", || load::drive(paths));
    // A few scrapes after the load, and one librdkafka statistics interval (5 s) for the lag.
    sleep(Duration::from_secs(8));
    prometheus.wait_for_scrapes(paths, 5)?;
    report.check("dashboard queries return data", || {
        panel_queries(paths, &prometheus)
    });
    report.check("alert rules parse and evaluate", || {
        alert_rules(&prometheus)
    });
    Ok(())
}

struct PanelQuery {
    dashboard: String,
    panel: String,
    expr: String,
}

/// Every query of every panel of every dashboard.
fn collect_panel_queries(repo: &Path) -> Result<Vec<PanelQuery>> {
    let mut queries = Vec::new();
    for file in dashboard_files(repo)? {
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                queries.push(PanelQuery {
                    dashboard: name.clone(),
                    panel: panel["title"].as_str().unwrap_or_default().to_owned(),
                    expr: target["expr"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
    }
    Ok(queries)
}

fn instantiate(expr: &str) -> String {
    INTERVALS
        .iter()
        .fold(expr.to_owned(), |expr, (variable, value)| {
            expr.replace(variable, value)
        })
}

/// Runs each panel query; every one must parse and return a number.
fn panel_queries(paths: &Paths, prometheus: &Prometheus) -> Result<String> {
    let queries = collect_panel_queries(&paths.repo)?;
    let mut with_data = 0;
    let mut without = Vec::new();
    for query in &queries {
        let outcome = match prometheus.query(&instantiate(&query.expr)) {
            Ok(Answer::Data) => {
                with_data += 1;
                continue;
            }
            Ok(Answer::NaN(series)) => format!("only NaN ({series} series)"),
            Ok(Answer::Empty) => "no data".to_owned(),
            Err(error) => format!("error: {error:#}"),
        };
        eprintln!(
            "        {outcome:<22} {} / {}: {}",
            query.dashboard, query.panel, query.expr
        );
        without.push(query);
    }
    let summary = format!("{} panel queries, {with_data} returned data", queries.len());
    println!("live: {summary}");
    ensure!(
        without.is_empty(),
        "{summary}; {} did not (listed above)",
        without.len()
    );
    Ok(summary)
}

/// Every alert rule as Prometheus loaded it: evaluated without error, and its expression
/// parses and runs as an instant query.
fn alert_rules(prometheus: &Prometheus) -> Result<String> {
    let mut rules = prometheus.rules()?;
    // Rules are evaluated every two seconds; wait for a first evaluation of each.
    for _ in 0..10 {
        if rules.iter().all(|rule| rule.health != "unknown") {
            break;
        }
        sleep(Duration::from_secs(1));
        rules = prometheus.rules()?;
    }
    ensure!(!rules.is_empty(), "Prometheus loaded no rules");
    let mut problems = Vec::new();
    let mut active = Vec::new();
    for rule in &rules {
        if rule.health != "ok" {
            problems.push(format!(
                "{}: health {} {}",
                rule.name, rule.health, rule.last_error
            ));
        }
        if let Err(error) = prometheus.query(&rule.query) {
            problems.push(format!("{}: {error:#}", rule.name));
        }
        if rule.state != "inactive" && !rule.state.is_empty() {
            active.push(format!("{} ({})", rule.name, rule.state));
        }
    }
    let summary = format!(
        "{} alert rules, {} parse and evaluate; {}",
        rules.len(),
        rules.len() - problems.len().min(rules.len()),
        if active.is_empty() {
            "none pending or firing".to_owned()
        } else {
            format!("pending or firing now: {}", active.join(", "))
        }
    );
    println!("live: {summary}");
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(summary)
}

impl Started {
    fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.stack.clone();
        names.extend(&self.services);
        if self.prometheus {
            names.push(prometheus::NAME);
        }
        names
    }

    /// Stops Prometheus, the services and the stack components this run started, then
    /// checks with `ps` that none of their processes (or their children) is left.
    fn stop(&self, paths: &Paths) -> Result<String> {
        let pids = process_tree(paths, &self.names())?;
        if self.prometheus {
            process::stop_recorded(paths, prometheus::NAME)?;
        }
        for name in self.services.iter().rev() {
            process::stop_recorded(paths, name)?;
        }
        if !self.stack.is_empty() {
            stack::down(paths, Topology::SINGLE, &self.stack)?;
        }
        verify_gone(&pids)?;
        Ok(format!(
            "{} stopped; none of their {} processes is left",
            if self.names().is_empty() {
                "nothing to stop".to_owned()
            } else {
                self.names().join(", ")
            },
            pids.len()
        ))
    }
}

/// The recorded pids of `names` and all their descendants.
fn process_tree(paths: &Paths, names: &[&str]) -> Result<Vec<u32>> {
    let table = process::run(Command::new("ps").args(["-eo", "pid=,ppid="]))?;
    let parents: Vec<(u32, u32)> = table
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().map(|f| f.parse::<u32>().ok());
            Some((fields.next()??, fields.next()??))
        })
        .collect();
    let mut pids: Vec<u32> = names
        .iter()
        .filter_map(|name| process::read_pid(paths, name))
        .collect();
    let mut index = 0;
    while index < pids.len() {
        let parent = pids[index];
        pids.extend(
            parents
                .iter()
                .filter(|(pid, ppid)| *ppid == parent && !pids.contains(pid))
                .map(|(pid, _)| *pid)
                .collect::<Vec<_>>(),
        );
        index += 1;
    }
    Ok(pids)
}

/// None of `pids` may still run. A zombie (state Z) has exited: it only waits for its parent
/// (this xtask, which spawned it detached) to reap it, and holds no port or memory.
fn verify_gone(pids: &[u32]) -> Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    // ps exits 1 when none of the pids exists: that is the good case.
    let output = Command::new("ps")
        .args(["-o", "pid=,stat=,args=", "-p", &list.join(",")])
        .output()
        .context("running ps")?;
    let running: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .nth(1)
                .is_some_and(|stat| !stat.starts_with('Z'))
        })
        .map(str::to_owned)
        .collect();
    if !running.is_empty() {
        bail!("still running after the stop:\n{}", running.join("\n"));
    }
    Ok(())
}
