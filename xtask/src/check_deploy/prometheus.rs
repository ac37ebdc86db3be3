//! A real Prometheus (Debian's build) on 127.0.0.1 that scrapes the four services every two
//! seconds and evaluates spillway's alert rules; queried through its HTTP API.

use std::{net::TcpListener, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::http;
use crate::{paths::Paths, process, services::SERVICES};

pub const NAME: &str = "prometheus";
const PREFERRED_PORT: u16 = 19090;

pub struct Prometheus {
    pub port: u16,
}

/// What one instant query returned.
pub enum Answer {
    /// At least one series with a number (not NaN).
    Data,
    /// Series whose values are all NaN (a quantile over no observations).
    NaN(usize),
    Empty,
}

/// One rule as Prometheus loaded it.
pub struct Rule {
    pub name: String,
    pub query: String,
    pub health: String,
    pub last_error: String,
    pub state: String,
}

/// 19090 when free, else any free port.
fn free_port() -> Result<u16> {
    if let Ok(listener) = TcpListener::bind(("127.0.0.1", PREFERRED_PORT)) {
        drop(listener);
        return Ok(PREFERRED_PORT);
    }
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

fn config(rules: &Path) -> String {
    let mut text = format!(
        "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 2s\n\
         rule_files:\n  - {}\nscrape_configs:\n",
        rules.display()
    );
    for (service, port) in SERVICES {
        text.push_str(&format!(
            "  - job_name: {service}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ));
    }
    text
}

impl Prometheus {
    /// Starts Prometheus with a fresh storage under `.stack/prometheus`; its pid is recorded
    /// like the stack's.
    pub fn start(paths: &Paths, binary: &Path) -> Result<Self> {
        let port = free_port()?;
        let dir = paths.state.join(NAME);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let config_file = dir.join("prometheus.yml");
        let rules = paths.repo.join("deploy/prometheus/spillway-alerts.yaml");
        std::fs::write(&config_file, config(&rules))?;
        process::spawn_detached(
            paths,
            NAME,
            Command::new(binary)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn"),
        )?;
        let prometheus = Self { port };
        process::wait_until(
            "prometheus",
            Duration::from_secs(60),
            Some(&paths.log(NAME)),
            || http::request(port, "GET", "/-/ready", &[], "").is_ok_and(|r| r.status == 200),
        )?;
        Ok(prometheus)
    }

    fn api(&self, method: &str, path: &str, form: &str) -> Result<Value> {
        let response = http::request(
            self.port,
            method,
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form,
        )?;
        let body: Value = serde_json::from_str(&response.body)
            .with_context(|| format!("{path}: not JSON: {}", response.body))?;
        if body["status"] != "success" {
            bail!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or("unknown")
            );
        }
        Ok(body["data"].clone())
    }

    /// An instant query at the current time; an error when it does not parse or fails.
    pub fn query(&self, expr: &str) -> Result<Answer> {
        let data = self.api(
            "POST",
            "/api/v1/query",
            &format!("query={}", http::form_encode(expr)),
        )?;
        let values: Vec<Option<String>> = match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|sample| sample["value"][1].as_str().map(str::to_owned))
                .collect(),
            Some("scalar") => vec![data["result"][1].as_str().map(str::to_owned)],
            other => bail!("unexpected result type {other:?}"),
        };
        let numbers = values
            .iter()
            .filter(|v| v.as_deref().is_some_and(|v| v != "NaN"))
            .count();
        Ok(match (values.len(), numbers) {
            (0, _) => Answer::Empty,
            (_, 0) => Answer::NaN(values.len()),
            (_, _) => Answer::Data,
        })
    }

    /// Every rule of every loaded group.
    pub fn rules(&self) -> Result<Vec<Rule>> {
        let data = self.api("GET", "/api/v1/rules", "")?;
        let text = |rule: &Value, key: &str| rule[key].as_str().unwrap_or_default().to_owned();
        Ok(data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().into_iter().flatten())
            .map(|rule| Rule {
                name: text(rule, "name"),
                query: text(rule, "query"),
                health: text(rule, "health"),
                last_error: text(rule, "lastError"),
                state: text(rule, "state"),
            })
            .collect())
    }

    /// Waits until every service has been scraped successfully at least `scrapes` times.
    pub fn wait_for_scrapes(&self, paths: &Paths, scrapes: usize) -> Result<()> {
        let expr = format!(
            "count(sum_over_time(up[5m]) >= {scrapes}) == {}",
            SERVICES.len()
        );
        process::wait_until(
            &format!("{scrapes} scrapes of each service"),
            Duration::from_secs(120),
            Some(&paths.log(NAME)),
            || matches!(self.query(&expr), Ok(Answer::Data)),
        )
    }
}
