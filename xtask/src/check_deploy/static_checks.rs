//! The checks that need no running stack: the Helm chart (lint, render, Kubernetes schemas,
//! values schema, the values it must refuse, [`chart`]'s checks of what it renders), the alert
//! rules (promtool), the Compose file ([`compose`]), the Dockerfile and the dashboards' files.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::{chart, compose, report::Report, tools::Tools};
use crate::{paths::Paths, process};

/// The Kubernetes versions the rendered manifests are validated against: the oldest the
/// chart's kubeVersion admits and the newest kubernetes-validate ships.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];
const CHART: &str = "deploy/helm/spillway";
const ALERTS: &str = "deploy/prometheus/spillway-alerts.yaml";
const ALERT_TESTS: &str = "deploy/prometheus/spillway-alerts.test.yaml";

/// What the checks share: the tools, the repository, a scratch directory, and the values a
/// trial installation must set.
pub struct CheckContext<'a> {
    pub tools: &'a Tools,
    pub repo: PathBuf,
    pub scratch: PathBuf,
    /// `--set` arguments for every value the chart has no default for (see [`trial_values`]).
    pub trial: Vec<String>,
}

impl CheckContext<'_> {
    fn chart(&self) -> PathBuf {
        self.repo.join(CHART)
    }

    fn helm_template(&self) -> Command {
        let mut command = Command::new(&self.tools.helm);
        command
            .args(["template", "spillway"])
            .arg(self.chart())
            .args(["--kube-version", KUBERNETES_VERSIONS[1]]);
        command
    }

    /// `helm template` of the chart with extra arguments; the rendered YAML.
    fn render(&self, args: &[&str]) -> Result<String> {
        process::run(self.helm_template().args(args))
    }

    /// [`CheckContext::render`] with the trial values first.
    fn render_trial(&self, args: &[&str]) -> Result<String> {
        process::run(self.helm_template().args(&self.trial).args(args))
    }

    /// `helm template` that must fail; its error output.
    fn render_error(&self, args: &[&str]) -> Result<String> {
        let output = self.helm_template().args(args).output()?;
        ensure!(
            !output.status.success(),
            "helm template accepted {}",
            args.join(" ")
        );
        Ok(String::from_utf8_lossy(&output.stderr).into_owned())
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

/// The options the default values leave off, all on (with trial values), so that their
/// manifests are rendered and validated too.
const EVERY_OPTION: [&str; 15] = [
    "services.gateway.autoscaling.enabled=true",
    "ingress.enabled=true",
    "ingress.className=nginx",
    "ingress.tls[0].secretName=spillway-tls",
    "ingress.tls[0].hosts[0]=spillway.example.com",
    "networkPolicy.enabled=true",
    "networkPolicy.gatewayFromNamespaces[0]=ingress-nginx",
    "config.queues.concerts.pattern=concert-*",
    "config.queues.concerts.capacity=100",
    "config.queues.concerts.admit_per_minute=60",
    "services.counter.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
    "services.counter.topologySpreadConstraints[0].maxSkew=1",
    "services.counter.topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule",
    "services.counter.databaseMaxConnections=2",
    "config.telemetry.otlp_endpoint=http://jaeger-collector.observability:4318",
];

/// A sample ratio for the "every option on" rendering, through `--set-json` (`--set` would
/// make `0.25` a string).
const SAMPLE_RATIO_FOR_CHECK: &str = "config.telemetry.sample_ratio=0.25";

pub fn run(paths: &Paths, tools: &Tools, report: &mut Report) -> Result<()> {
    let scratch = paths.state.join("check-deploy");
    std::fs::create_dir_all(&scratch)?;
    let cx = CheckContext {
        tools,
        repo: paths.repo.clone(),
        scratch,
        trial: trial_values()?,
    };
    let trial: Vec<&str> = cx.trial.iter().map(String::as_str).collect();
    report.check(
        "helm lint (default values and the required secrets)",
        || helm_lint(&cx, &trial),
    );
    report.check("helm lint (values-production.yaml)", || {
        helm_lint(&cx, &["-f", "values-production.yaml"])
    });
    let production = cx.chart().join("values-production.yaml");
    let production = production.to_str().context("chart path is UTF-8")?;
    let mut every_option = trial.clone();
    every_option.extend(every_option_args());
    for (name, args, expected) in [
        (
            "default values and the required secrets",
            trial.clone(),
            DEFAULT_KINDS.as_slice(),
        ),
        (
            "values-production.yaml",
            vec!["-f", production],
            PRODUCTION_KINDS.as_slice(),
        ),
        (
            "every option on",
            every_option,
            EVERY_OPTION_KINDS.as_slice(),
        ),
    ] {
        report.check(
            &format!("helm template ({name}), kubernetes-validate"),
            || rendered_manifests(&cx, name, &args, expected),
        );
    }
    report.check("helm template refuses missing and unsafe values", || {
        chart_refusals(&cx)
    });
    report.check("values.schema.json rejects forbidden values", || {
        schema_rejects(&cx)
    });
    report.check("tracing values in spillway.toml", || telemetry_values(&cx));
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

/// The kinds (and how many at least) each rendering must hold.
const DEFAULT_KINDS: [(&str, usize); 7] = [
    ("Deployment", 4),
    ("PodDisruptionBudget", 4),
    ("Service", 4),
    ("ConfigMap", 2),
    ("Secret", 2),
    ("Job", 1),
    ("ServiceAccount", 1),
];
const PRODUCTION_KINDS: [(&str, usize); 7] = [
    ("Deployment", 4),
    ("PodDisruptionBudget", 4),
    ("Job", 1),
    ("HorizontalPodAutoscaler", 1),
    ("Ingress", 1),
    ("NetworkPolicy", 4),
    ("ServiceMonitor", 1),
];
const EVERY_OPTION_KINDS: [(&str, usize); 6] = [
    ("Deployment", 4),
    ("Job", 1),
    ("Secret", 2),
    ("HorizontalPodAutoscaler", 1),
    ("Ingress", 1),
    ("NetworkPolicy", 4),
];

/// Values for a trial installation, made up for this run: a random JWT and admission secret,
/// distinct database roles for the services and the migration Job, S3 keys.
fn trial_values() -> Result<Vec<String>> {
    let values = [
        ("secrets.jwtSecret", random_secret()?),
        (
            "secrets.databaseUrl",
            "postgres://spillway_app:app@db:5432/spillway".into(),
        ),
        ("secrets.s3AccessKey", "check-deploy".into()),
        ("secrets.s3SecretKey", random_secret()?),
        (
            "migrations.databaseUrl",
            "postgres://spillway_owner:owner@db:5432/spillway".into(),
        ),
    ];
    Ok(values
        .into_iter()
        .flat_map(|(key, value)| ["--set".to_owned(), format!("{key}={value}")])
        .collect())
}

/// [`EVERY_OPTION`] as `--set` arguments, with an admission secret (the queues need one).
fn every_option_args() -> Vec<&'static str> {
    EVERY_OPTION
        .iter()
        .flat_map(|value| ["--set", value])
        .chain(["--set", ADMISSION_SECRET_FOR_CHECK])
        .chain(["--set-json", SAMPLE_RATIO_FOR_CHECK])
        .collect()
}

/// A fixed admission secret for the "every option on" rendering; 40 characters, used nowhere.
const ADMISSION_SECRET_FOR_CHECK: &str =
    "secrets.admissionSecret=check-deploy-admission-0123456789abcdef";

/// 48 hexadecimal characters from the kernel's random source.
fn random_secret() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Renders the chart, validates every manifest against the Kubernetes schemas and checks
/// what a spillway installation needs ([`chart::check`], the configuration's TOML).
fn rendered_manifests(
    cx: &CheckContext,
    name: &str,
    args: &[&str],
    expected: &[(&str, usize)],
) -> Result<String> {
    let yaml = cx.render(args)?;
    let file = cx.scratch.join(format!("{}.yaml", name.replace(' ', "-")));
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
    for (kind, least) in expected {
        ensure!(
            kinds.get(*kind).copied().unwrap_or(0) >= *least,
            "expected at least {least} {kind}"
        );
    }
    chart::check(&documents)?;
    for config_map in documents.iter().filter(|d| d["kind"] == "ConfigMap") {
        check_config(config_map)?;
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

/// Values the chart must refuse, each with (part of) the message that says what to set.
fn chart_refusals(cx: &CheckContext) -> Result<String> {
    let trial: Vec<&str> = cx.trial.iter().map(String::as_str).collect();
    let with_trial = |extra: &[&'static str]| {
        let mut args = trial.clone();
        args.extend(extra.iter().flat_map(|value| ["--set", value]));
        args
    };
    let queues = [
        "config.queues.c.pattern=c-*",
        "config.queues.c.capacity=1",
        "config.queues.c.admit_per_minute=1",
    ];
    let jwt_secret = trial
        .iter()
        .find_map(|arg| arg.strip_prefix("secrets.jwtSecret="))
        .context("the trial values have a JWT secret")?;
    let same_admission = format!("secrets.admissionSecret={jwt_secret}");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("no values at all", vec![], "secrets.jwtSecret is required"),
        (
            "the sample JWT secret",
            with_trial(&["secrets.jwtSecret=dev-secret-change-me"]),
            "at '/secrets/jwtSecret': 'not' failed",
        ),
        (
            "a short JWT secret",
            with_trial(&["secrets.jwtSecret=too-short"]),
            "at '/secrets/jwtSecret'",
        ),
        (
            "waiting rooms without an admission secret",
            with_trial(&queues),
            "secrets.admissionSecret is required",
        ),
        (
            "the JWT secret as admission secret",
            {
                let mut args = with_trial(&queues);
                args.extend(["--set", same_admission.as_str()]);
                args
            },
            "secrets.admissionSecret must differ from secrets.jwtSecret",
        ),
        (
            "no migration credentials",
            with_trial(&["migrations.databaseUrl="]),
            "migrations.databaseUrl (or migrations.existingSecret",
        ),
        (
            "the services' role for the migrations",
            with_trial(&["migrations.databaseUrl=postgres://spillway_app:app@db:5432/spillway"]),
            "migrations.databaseUrl must differ from secrets.databaseUrl",
        ),
        (
            "one existing Secret for both",
            with_trial(&[
                "secrets.existingSecret=spillway",
                "migrations.existingSecret=spillway",
            ]),
            "migrations.existingSecret must not be secrets.existingSecret",
        ),
        (
            "an HPA whose maximum is below its minimum",
            with_trial(&[
                "services.gateway.autoscaling.enabled=true",
                "services.gateway.autoscaling.minReplicas=4",
                "services.gateway.autoscaling.maxReplicas=2",
            ]),
            "maxReplicas (2) is below minReplicas (4)",
        ),
        (
            "more database connections than the server takes",
            with_trial(&["config.database.max_connections=40"]),
            "database connections",
        ),
    ];
    for (what, args, expected) in &cases {
        let error = cx.render_error(args).with_context(|| what.to_string())?;
        ensure!(
            error.contains(expected),
            "{what}: refused, but without `{expected}`: {error}"
        );
    }
    Ok(format!("{} unsafe values refused, each named", cases.len()))
}

/// The one key of spillway.toml that is a fraction, not an integer.
const FLOAT_KEYS: [&str; 1] = [".telemetry.sample_ratio"];

/// The rendered spillway.toml is TOML, with integers (not floats, but for the sample ratio),
/// the pods' listen addresses and a `[telemetry]` spillway reads: an endpoint that is empty
/// (off, the default) or an http(s) URL, a ratio between 0 and 1.
fn check_config(config_map: &Value) -> Result<()> {
    let text = config_map["data"]["spillway.toml"]
        .as_str()
        .context("ConfigMap without spillway.toml")?;
    let table: toml::Table = toml::from_str(text).context("spillway.toml is not TOML")?;
    no_floats("", &toml::Value::Table(table.clone()))?;
    check_telemetry(&table)?;
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

/// The `[telemetry]` section of a rendered spillway.toml, when the values have one.
fn check_telemetry(table: &toml::Table) -> Result<()> {
    let Some(telemetry) = table.get("telemetry") else {
        return Ok(());
    };
    let endpoint = telemetry
        .get("otlp_endpoint")
        .map(|value| {
            value
                .as_str()
                .context("telemetry.otlp_endpoint is not a string")
        })
        .transpose()?
        .unwrap_or_default();
    ensure!(
        endpoint.is_empty() || endpoint.starts_with("http://") || endpoint.starts_with("https://"),
        "telemetry.otlp_endpoint is `{endpoint}`"
    );
    if let Some(ratio) = telemetry.get("sample_ratio") {
        let ratio = ratio
            .as_float()
            .or_else(|| ratio.as_integer().map(|n| n as f64))
            .context("telemetry.sample_ratio is not a number")?;
        ensure!(
            (0.0..=1.0).contains(&ratio),
            "telemetry.sample_ratio is {ratio}"
        );
    }
    Ok(())
}

/// The tracing values reach spillway.toml: off by default, the endpoint and the ratio as set.
fn telemetry_values(cx: &CheckContext) -> Result<String> {
    let telemetry_of = |args: &[&str]| -> Result<toml::Value> {
        let yaml = cx.render_trial(args)?;
        let documents = cx.documents(&yaml)?;
        let config_map = documents
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["data"]["spillway.toml"].is_string())
            .context("no ConfigMap with spillway.toml")?;
        let text = config_map["data"]["spillway.toml"]
            .as_str()
            .unwrap_or_default();
        let table: toml::Table = toml::from_str(text)?;
        table
            .get("telemetry")
            .cloned()
            .context("spillway.toml has no [telemetry]")
    };
    let default = telemetry_of(&[])?;
    ensure!(
        default.get("otlp_endpoint").and_then(toml::Value::as_str) == Some(""),
        "tracing is not off by default: {default}"
    );
    let endpoint = "http://tempo.observability:4318";
    let set = telemetry_of(&[
        "--set",
        &format!("config.telemetry.otlp_endpoint={endpoint}"),
        "--set-json",
        "config.telemetry.sample_ratio=0.1",
    ])?;
    ensure!(
        set.get("otlp_endpoint").and_then(toml::Value::as_str) == Some(endpoint)
            && set.get("sample_ratio").and_then(toml::Value::as_float) == Some(0.1),
        "the tracing values did not reach spillway.toml: {set}"
    );
    Ok("off by default; endpoint and sample ratio rendered as set".into())
}

fn no_floats(key: &str, value: &toml::Value) -> Result<()> {
    match value {
        toml::Value::Float(_) if FLOAT_KEYS.contains(&key) => Ok(()),
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
        (
            "services.gateway.autoscaling.targetCPUUtilizationPercentage=0",
            "/services/gateway/autoscaling/targetCPUUtilizationPercentage",
        ),
        (
            "topologySpreadConstraints[0].whenUnsatisfiable=Sometimes",
            "/topologySpreadConstraints/0/whenUnsatisfiable",
        ),
        (
            "networkPolicy.monitoringNamespace=Not_A_Namespace",
            "/networkPolicy/monitoringNamespace",
        ),
        (
            "ingress.hosts[0].paths[0].pathType=Anything",
            "/ingress/hosts/0/paths/0/pathType",
        ),
        (
            "config.telemetry.otlp_endpoint=jaeger:4318",
            "/config/telemetry/otlp_endpoint",
        ),
        (
            "config.telemetry.sample_ratio=2",
            "/config/telemetry/sample_ratio",
        ),
    ];
    for (value, pointer) in forbidden {
        match cx.render_trial(&["--set", value]) {
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
    let yaml = cx.render_trial(&[
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
