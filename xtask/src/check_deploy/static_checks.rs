//! The checks that need no running stack: the Helm chart (lint, render, Kubernetes schemas,
//! values schema), the alert rules (promtool), the Compose file, the Dockerfile and the
//! dashboards' files.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::{compose, report::Report, tools::Tools};
use crate::{paths::Paths, process};

/// The Kubernetes versions the rendered manifests are validated against: the oldest the
/// chart's kubeVersion admits and the newest kubernetes-validate ships.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];
const CHART: &str = "deploy/helm/spillway";
const ALERTS: &str = "deploy/prometheus/spillway-alerts.yaml";
const ALERT_TESTS: &str = "deploy/prometheus/spillway-alerts.test.yaml";

/// What the checks share: the tools, the repository and a scratch directory.
pub struct CheckContext<'a> {
    pub tools: &'a Tools,
    pub repo: PathBuf,
    pub scratch: PathBuf,
}

impl CheckContext<'_> {
    fn chart(&self) -> PathBuf {
        self.repo.join(CHART)
    }

    /// `helm template` of the chart with extra arguments; the rendered YAML.
    fn render(&self, args: &[&str]) -> Result<String> {
        process::run(
            Command::new(&self.tools.helm)
                .args(["template", "spillway"])
                .arg(self.chart())
                .args(["--kube-version", KUBERNETES_VERSIONS[1]])
                .args(args),
        )
    }

    /// Every YAML document of `yaml` as JSON (PyYAML, from the tools' virtual environment).
    fn documents(&self, yaml: &str) -> Result<Vec<Value>> {
        let file = self.scratch.join("documents.yaml");
        std::fs::write(&file, yaml)?;
        let json = process::run(
            Command::new(&self.tools.python)
                .args([
                    "-c",
                    "import json, sys, yaml\n\
                     docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]\n\
                     print(json.dumps(docs))",
                ])
                .arg(&file),
        )?;
        Ok(serde_json::from_str(&json)?)
    }
}

pub fn run(paths: &Paths, tools: &Tools, report: &mut Report) -> Result<()> {
    let scratch = paths.state.join("check-deploy");
    std::fs::create_dir_all(&scratch)?;
    let cx = CheckContext {
        tools,
        repo: paths.repo.clone(),
        scratch,
    };
    report.check("helm lint (default values)", || helm_lint(&cx, &[]));
    report.check("helm lint (values-production.yaml)", || {
        helm_lint(&cx, &["-f", "values-production.yaml"])
    });
    for (name, values) in [
        ("default", None),
        ("production", Some("values-production.yaml")),
    ] {
        report.check(
            &format!("helm template ({name} values), kubernetes-validate"),
            || rendered_manifests(&cx, name, values),
        );
    }
    report.check("values.schema.json rejects forbidden values", || {
        schema_rejects(&cx)
    });
    report.check("PrometheusRule of the chart (promtool check rules)", || {
        prometheus_rule(&cx)
    });
    report.check("promtool check rules", || promtool(&cx, "check", ALERTS));
    report.check("promtool test rules", || promtool(&cx, "test", ALERT_TESTS));
    report.check("every alert has a unit test and a runbook", || {
        alerts_covered(&cx)
    });
    report.check("docker-compose.yml (compose-go loader)", || {
        compose::check(&cx)
    });
    report.check(
        "deploy/compose/prometheus.yml (promtool check config)",
        || {
            process::run(
                Command::new(&tools.promtool)
                    .args(["check", "config", "--syntax-only"])
                    .arg(cx.repo.join("deploy/compose/prometheus.yml")),
            )
            .map(|_| "valid".to_owned())
        },
    );
    report.check("Dockerfile (hadolint)", || {
        process::run(
            Command::new(&tools.hadolint)
                .arg(cx.repo.join("Dockerfile"))
                .current_dir(&cx.repo),
        )
        .map(|_| "no findings".to_owned())
    });
    report.check("Grafana dashboards", || dashboards(&cx));
    Ok(())
}

fn helm_lint(cx: &CheckContext, args: &[&str]) -> Result<String> {
    let output = process::run(
        Command::new(&cx.tools.helm)
            .args(["lint", "--strict", "--kube-version", KUBERNETES_VERSIONS[1]])
            .arg(".")
            .args(args)
            .current_dir(cx.chart()),
    )?;
    Ok(output.lines().last().unwrap_or("linted").trim().to_owned())
}

/// Renders the chart, validates every manifest against the Kubernetes schemas and checks
/// what a spillway installation needs (probes, resources, the configuration's TOML).
fn rendered_manifests(cx: &CheckContext, name: &str, values: Option<&str>) -> Result<String> {
    let values_path = values.map(|file| cx.chart().join(file));
    let mut args = Vec::new();
    if let Some(path) = &values_path {
        args.extend(["-f", path.to_str().context("values path is UTF-8")?]);
    }
    let yaml = cx.render(&args)?;
    let file = cx.scratch.join(format!("{name}.yaml"));
    std::fs::write(&file, &yaml)?;
    for version in KUBERNETES_VERSIONS {
        process::run(
            Command::new(&cx.tools.kubernetes_validate)
                .args(["--strict", "--quiet", "-k", version])
                .arg(&file),
        )
        .with_context(|| format!("against Kubernetes {version}"))?;
    }
    let documents = cx.documents(&yaml)?;
    let kinds = count_kinds(&documents);
    for (kind, least) in [
        ("Deployment", 4),
        ("PodDisruptionBudget", 4),
        ("Service", 1),
        ("ConfigMap", 1),
    ] {
        ensure!(
            kinds.get(kind).copied().unwrap_or(0) >= least,
            "expected at least {least} {kind}"
        );
    }
    for document in &documents {
        match document["kind"].as_str() {
            Some("Deployment") => check_deployment(document)?,
            Some("ConfigMap") => check_config(document)?,
            _ => {}
        }
    }
    let unchecked: Vec<&str> = ["ServiceMonitor", "PrometheusRule"]
        .into_iter()
        .filter(|kind| kinds.contains_key(*kind))
        .collect();
    Ok(format!(
        "{} against Kubernetes {}{}",
        kinds
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect::<Vec<_>>()
            .join(", "),
        KUBERNETES_VERSIONS.join(" and "),
        if unchecked.is_empty() {
            String::new()
        } else {
            format!(
                " ({} have no schema offline; the PrometheusRule is checked by promtool)",
                unchecked.join(", ")
            )
        }
    ))
}

fn count_kinds(documents: &[Value]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for kind in documents.iter().filter_map(|d| d["kind"].as_str()) {
        *kinds.entry(kind.to_owned()).or_insert(0) += 1;
    }
    kinds
}

/// Probes on /healthz and /readyz, requests and limits, a grace period for draining.
fn check_deployment(deployment: &Value) -> Result<()> {
    let name = deployment["metadata"]["name"].as_str().unwrap_or("?");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let path = |probe: &str| container[probe]["httpGet"]["path"].as_str();
    ensure!(
        path("livenessProbe") == Some("/healthz"),
        "{name}: liveness is not /healthz"
    );
    ensure!(
        path("readinessProbe") == Some("/readyz"),
        "{name}: readiness is not /readyz"
    );
    for bound in ["requests", "limits"] {
        ensure!(
            container["resources"][bound]["memory"].is_string(),
            "{name}: no memory {bound}"
        );
    }
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(0);
    ensure!(
        grace >= 10,
        "{name}: terminationGracePeriodSeconds {grace} < 10"
    );
    Ok(())
}

/// The rendered spillway.toml is TOML, with integers (not floats) and the pods' listen
/// addresses.
fn check_config(config_map: &Value) -> Result<()> {
    let text = config_map["data"]["spillway.toml"]
        .as_str()
        .context("ConfigMap without spillway.toml")?;
    let table: toml::Table = toml::from_str(text).context("spillway.toml is not TOML")?;
    no_floats("", &toml::Value::Table(table.clone()))?;
    for (section, port) in [
        ("gateway", 8080),
        ("counter", 8081),
        ("batch_writer", 8082),
        ("template_warmup", 8083),
    ] {
        let listen = table
            .get(section)
            .and_then(|s| s.get("listen"))
            .and_then(toml::Value::as_str);
        ensure!(
            listen == Some(&format!("0.0.0.0:{port}")),
            "{section}.listen is {listen:?}"
        );
    }
    Ok(())
}

fn no_floats(key: &str, value: &toml::Value) -> Result<()> {
    match value {
        toml::Value::Float(number) => bail!("spillway.toml: {key} = {number} is a float"),
        toml::Value::Table(table) => table
            .iter()
            .try_for_each(|(inner, value)| no_floats(&format!("{key}.{inner}"), value)),
        toml::Value::Array(items) => items.iter().try_for_each(|item| no_floats(key, item)),
        _ => Ok(()),
    }
}

/// Values that values.schema.json forbids make `helm template` fail, naming the value.
fn schema_rejects(cx: &CheckContext) -> Result<String> {
    let forbidden = [
        ("config.log.format=xml", "/config/log/format"),
        (
            "services.counter.terminationGracePeriodSeconds=3",
            "/services/counter/terminationGracePeriodSeconds",
        ),
        ("services.gateway.replicas=-1", "/services/gateway/replicas"),
        (
            "config.kafka.counter_events.partitions=0",
            "/config/kafka/counter_events/partitions",
        ),
    ];
    for (value, pointer) in forbidden {
        match cx.render(&["--set", value]) {
            Ok(_) => bail!("helm template accepted --set {value}"),
            Err(error) => {
                let message = format!("{error:#}");
                ensure!(
                    message.contains("don't meet the specifications of the schema")
                        && message.contains(pointer),
                    "--set {value} failed, but not on the schema: {message}"
                );
            }
        }
    }
    Ok(format!("{} forbidden values refused", forbidden.len()))
}

/// The chart's PrometheusRule carries the same rules as deploy/prometheus, and promtool
/// accepts its spec as a rules file.
fn prometheus_rule(cx: &CheckContext) -> Result<String> {
    let copy = std::fs::read(cx.chart().join("files/spillway-alerts.yaml"))?;
    ensure!(
        copy == std::fs::read(cx.repo.join(ALERTS))?,
        "{CHART}/files/spillway-alerts.yaml differs from {ALERTS}: copy it again"
    );
    let yaml = cx.render(&[
        "--set",
        "prometheusRule.enabled=true",
        "--show-only",
        "templates/prometheusrule.yaml",
    ])?;
    let documents = cx.documents(&yaml)?;
    let spec = documents
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .map(|d| &d["spec"])
        .context("no PrometheusRule rendered")?;
    let file = cx.scratch.join("prometheusrule-spec.json");
    std::fs::write(&file, serde_json::to_string_pretty(spec)?)?;
    let output = process::run(
        Command::new(&cx.tools.promtool)
            .args(["check", "rules"])
            .arg(&file),
    )?;
    Ok(last_line(&output))
}

fn promtool(cx: &CheckContext, action: &str, file: &str) -> Result<String> {
    let output = process::run(
        Command::new(&cx.tools.promtool)
            .args([action, "rules", file])
            .current_dir(&cx.repo),
    )?;
    Ok(last_line(&output))
}

fn last_line(output: &str) -> String {
    output
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Every alert has a unit test in which it fires, and a runbook heading in operations.md.
fn alerts_covered(cx: &CheckContext) -> Result<String> {
    let rules = cx.documents(&std::fs::read_to_string(cx.repo.join(ALERTS))?)?;
    let tests = cx.documents(&std::fs::read_to_string(cx.repo.join(ALERT_TESTS))?)?;
    let alerts: Vec<&str> = rules[0]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .filter_map(|rule| rule["alert"].as_str())
        .collect();
    let fired: Vec<&str> = tests[0]["tests"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|test| test["alert_rule_test"].as_array().into_iter().flatten())
        .filter(|case| case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .filter_map(|case| case["alertname"].as_str())
        .collect();
    let operations = std::fs::read_to_string(cx.repo.join("docs/operations.md"))?;
    let mut missing = Vec::new();
    for alert in &alerts {
        if !fired.contains(alert) {
            missing.push(format!("{alert}: no unit test in which it fires"));
        }
        if !operations.contains(&format!("### {alert}")) {
            missing.push(format!(
                "{alert}: no `### {alert}` runbook in docs/operations.md"
            ));
        }
    }
    ensure!(missing.is_empty(), "{}", missing.join("; "));
    Ok(format!(
        "{} alerts, each tested and with a runbook",
        alerts.len()
    ))
}

/// The JSON files are what generate.py writes, and each dashboard has a Prometheus
/// datasource variable that every panel and query uses.
fn dashboards(cx: &CheckContext) -> Result<String> {
    process::run(
        Command::new("python3")
            .arg(cx.repo.join("deploy/grafana/generate.py"))
            .arg("--check"),
    )?;
    let files = dashboard_files(&cx.repo)?;
    let mut panels = 0;
    for file in &files {
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(file)?)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        panels += check_dashboard(&dashboard).with_context(|| format!("{}", file.display()))?;
    }
    Ok(format!("{} dashboards, {panels} panels", files.len()))
}

pub fn dashboard_files(repo: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo.join("deploy/grafana"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no dashboards in deploy/grafana");
    Ok(files)
}

fn check_dashboard(dashboard: &Value) -> Result<usize> {
    let variables = dashboard["templating"]["list"].as_array();
    let has_datasource = variables.into_iter().flatten().any(|variable| {
        variable["name"] == "datasource"
            && variable["type"] == "datasource"
            && variable["query"] == "prometheus"
    });
    ensure!(
        has_datasource,
        "no Prometheus datasource variable `datasource`"
    );
    ensure!(dashboard["uid"].is_string(), "no uid");
    let panels = dashboard["panels"].as_array().context("no panels")?;
    let mut ids = std::collections::BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        ensure!(
            ids.insert(panel["id"].as_i64()),
            "{title}: duplicate panel id"
        );
        ensure!(
            panel["datasource"]["uid"] == "${datasource}",
            "{title}: does not use the datasource variable"
        );
        let targets = panel["targets"]
            .as_array()
            .context("panel without targets")?;
        ensure!(!targets.is_empty(), "{title}: no queries");
        for target in targets {
            ensure!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: a query without expr"
            );
        }
    }
    Ok(panels.len())
}
