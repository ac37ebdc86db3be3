//! What a rendered spillway release must hold beyond the Kubernetes schemas: probes, resources
//! and spread constraints on every Deployment; the migration Job as a pre-install/pre-upgrade
//! hook whose database credentials no service sees; an HPA, Ingress and NetworkPolicies that
//! point at the objects they are meant for.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

/// Checks every manifest of one rendering against the others.
pub fn check(documents: &[Value]) -> Result<()> {
    let deployments = of_kind(documents, "Deployment");
    for deployment in &deployments {
        check_deployment(deployment)?;
    }
    for job in of_kind(documents, "Job") {
        check_migration_job(job, documents, &deployments)?;
    }
    for autoscaler in of_kind(documents, "HorizontalPodAutoscaler") {
        check_autoscaler(autoscaler, &deployments)?;
    }
    for ingress in of_kind(documents, "Ingress") {
        check_ingress(ingress, &of_kind(documents, "Service"))?;
    }
    let policies = of_kind(documents, "NetworkPolicy");
    for policy in &policies {
        check_network_policy(policy, &deployments)?;
    }
    if !policies.is_empty() {
        for deployment in &deployments {
            ensure!(
                policies
                    .iter()
                    .any(|policy| selects(&policy["spec"]["podSelector"], deployment)),
                "{}: no NetworkPolicy selects its pods",
                name(deployment)
            );
        }
    }
    Ok(())
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|d| d["kind"] == kind).collect()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("?")
}

fn component(object: &Value) -> Option<&str> {
    object["metadata"]["labels"]["app.kubernetes.io/component"].as_str()
}

/// Whether `selector`'s matchLabels are all among the Deployment's pod labels.
fn selects(selector: &Value, deployment: &Value) -> bool {
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    selector["matchLabels"]
        .as_object()
        .is_some_and(|wanted| !wanted.is_empty() && wanted.iter().all(|(k, v)| &labels[k] == v))
}

/// The Secrets a pod template's containers read, by name.
fn secrets_read(pod: &Value) -> BTreeSet<String> {
    let containers = pod["containers"].as_array().into_iter().flatten();
    containers
        .flat_map(|container| container["env"].as_array().into_iter().flatten())
        .filter_map(|env| env["valueFrom"]["secretKeyRef"]["name"].as_str())
        .map(str::to_owned)
        .collect()
}

/// The Secret the container's `SPILLWAY_DATABASE__URL` comes from.
fn database_secret(container: &Value) -> Option<&str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|env| env["name"] == "SPILLWAY_DATABASE__URL")?["valueFrom"]["secretKeyRef"]["name"]
        .as_str()
}

/// Probes on /healthz and /readyz, requests and limits, a grace period for draining, and
/// spread constraints that select the Deployment's own pods.
fn check_deployment(deployment: &Value) -> Result<()> {
    let name = name(deployment);
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
    ensure!(
        database_secret(container).is_some(),
        "{name}: no SPILLWAY_DATABASE__URL from a Secret"
    );
    let constraints = pod["topologySpreadConstraints"]
        .as_array()
        .with_context(|| format!("{name}: no topologySpreadConstraints"))?;
    ensure!(
        !constraints.is_empty(),
        "{name}: no topologySpreadConstraints"
    );
    for constraint in constraints {
        ensure!(
            selects(&constraint["labelSelector"], deployment),
            "{name}: a spread constraint does not select the Deployment's own pods"
        );
    }
    Ok(())
}

/// `spillway-admin migrate` in a pre-install and pre-upgrade hook, replaced before each run,
/// reading its database URL from a Secret that no Deployment reads; what it mounts or reads
/// and the chart renders is a hook too, created before it.
fn check_migration_job(job: &Value, documents: &[Value], deployments: &[&Value]) -> Result<()> {
    let name = name(job);
    let annotations = &job["metadata"]["annotations"];
    let hooks = annotations["helm.sh/hook"].as_str().unwrap_or_default();
    for hook in ["pre-install", "pre-upgrade"] {
        ensure!(
            hooks.split(',').any(|h| h == hook),
            "{name}: not a {hook} hook"
        );
    }
    let policy = annotations["helm.sh/hook-delete-policy"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        policy.split(',').any(|p| p == "before-hook-creation"),
        "{name}: hook-delete-policy lacks before-hook-creation"
    );
    let pod = &job["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    ensure!(
        container["command"] == serde_json::json!(["/usr/local/bin/spillway-admin", "migrate"]),
        "{name}: does not run spillway-admin migrate"
    );
    ensure!(
        pod["restartPolicy"] == "Never",
        "{name}: restartPolicy is not Never"
    );
    let secret = database_secret(container)
        .with_context(|| format!("{name}: no SPILLWAY_DATABASE__URL from a Secret"))?;
    for deployment in deployments {
        ensure!(
            !secrets_read(&deployment["spec"]["template"]["spec"]).contains(secret),
            "{}: reads the migration Job's Secret {secret}",
            self::name(deployment)
        );
    }
    let weight = hook_weight(job);
    let config_maps = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|volume| volume["configMap"]["name"].as_str());
    for needed in config_maps.chain([secret]) {
        let Some(object) = documents.iter().find(|d| self::name(d) == needed) else {
            continue; // an existing Secret, created outside the chart
        };
        ensure!(
            object["metadata"]["annotations"]["helm.sh/hook"].as_str() == Some(hooks),
            "{name}: needs {needed}, which is not created by the same hooks"
        );
        ensure!(
            hook_weight(object) < weight,
            "{name}: {needed} is not created before the Job (hook-weight)"
        );
    }
    Ok(())
}

fn hook_weight(object: &Value) -> i64 {
    object["metadata"]["annotations"]["helm.sh/hook-weight"]
        .as_str()
        .and_then(|weight| weight.parse().ok())
        .unwrap_or(0)
}

/// autoscaling/v2 on CPU, aimed at the gateway's Deployment, which leaves its replica count
/// to the autoscaler.
fn check_autoscaler(autoscaler: &Value, deployments: &[&Value]) -> Result<()> {
    let name = name(autoscaler);
    ensure!(
        autoscaler["apiVersion"] == "autoscaling/v2",
        "{name}: not autoscaling/v2"
    );
    let spec = &autoscaler["spec"];
    let target = deployments
        .iter()
        .find(|d| d["metadata"]["name"] == spec["scaleTargetRef"]["name"])
        .with_context(|| format!("{name}: its scaleTargetRef is no rendered Deployment"))?;
    ensure!(
        component(target) == Some("gateway"),
        "{name}: scales {}, not the gateway",
        self::name(target)
    );
    ensure!(
        target["spec"].get("replicas").is_none(),
        "{name}: the gateway's Deployment still sets replicas (an upgrade would reset the HPA's count)"
    );
    ensure!(
        spec["minReplicas"].as_i64() <= spec["maxReplicas"].as_i64(),
        "{name}: minReplicas above maxReplicas"
    );
    ensure!(
        spec["metrics"][0]["resource"]["name"] == "cpu",
        "{name}: not on CPU"
    );
    Ok(())
}

/// Every path goes to the gateway's Service, on its `http` port.
fn check_ingress(ingress: &Value, services: &[&Value]) -> Result<()> {
    let name = name(ingress);
    let rules = ingress["spec"]["rules"].as_array().context("no rules")?;
    for rule in rules {
        for path in rule["http"]["paths"].as_array().into_iter().flatten() {
            let backend = &path["backend"]["service"];
            let service = services
                .iter()
                .find(|s| s["metadata"]["name"] == backend["name"])
                .with_context(|| format!("{name}: backend {} is no rendered Service", backend))?;
            ensure!(
                component(service) == Some("gateway") && backend["port"]["name"] == "http",
                "{name}: a path does not go to the gateway's http port"
            );
        }
    }
    Ok(())
}

/// An ingress policy selecting one Deployment's pods, admitting only ports its container has.
fn check_network_policy(policy: &Value, deployments: &[&Value]) -> Result<()> {
    let name = name(policy);
    let spec = &policy["spec"];
    let deployment = deployments
        .iter()
        .find(|d| selects(&spec["podSelector"], d))
        .with_context(|| format!("{name}: selects no rendered Deployment's pods"))?;
    ensure!(
        spec["policyTypes"]
            .as_array()
            .is_some_and(|types| types.iter().any(|t| t == "Ingress")),
        "{name}: not an Ingress policy"
    );
    let ports: Vec<&Value> = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|port| &port["name"])
        .collect();
    let rules = spec["ingress"].as_array().context("no ingress rules")?;
    for rule in rules {
        for port in rule["ports"].as_array().into_iter().flatten() {
            ensure!(
                ports.contains(&&port["port"]),
                "{name}: admits port {}, which {} does not have",
                port["port"],
                self::name(deployment)
            );
        }
    }
    Ok(())
}
