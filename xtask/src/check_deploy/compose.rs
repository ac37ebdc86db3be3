//! docker-compose.yml through the Compose specification's own loader (compose-go, in
//! deploy/tools/compose-check), then what the loaded project must hold: secrets without
//! defaults, a healthcheck on every long-running container (the spillway images' through
//! `spillway-admin healthcheck`), the migrations run once before the services, and Redis with
//! the local stack's memory policy.

use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::static_checks::CheckContext;
use crate::{process, stack::redis};

const FILE: &str = "docker-compose.yml";
/// The variables the file requires; they have no default in it.
const REQUIRED: [&str; 2] = ["SPILLWAY_JWT_SECRET", "GRAFANA_ADMIN_PASSWORD"];
/// The one-shot service that applies the migrations.
const MIGRATE: &str = "migrate";

pub fn check(cx: &CheckContext) -> Result<String> {
    refuses_without_secrets(cx)?;
    let summary = compose_check(cx, &[])?;
    let project: Value = serde_json::from_str(&compose_check(cx, &["-json"])?)
        .context("compose-check -json printed no JSON")?;
    let services = project["services"]
        .as_object()
        .context("no services in the project")?;
    let mut healthchecks = 0;
    for (name, service) in services {
        if service["restart"] == "no" {
            continue; // one-shot: it exits, dependents wait for its completion
        }
        check_healthcheck(name, service)?;
        healthchecks += 1;
    }
    check_migrations_first(services)?;
    check_redis(&services["redis"])?;
    Ok(format!(
        "{}; {healthchecks} healthchecks; refused without {}",
        summary.trim(),
        REQUIRED.join(" or ")
    ))
}

/// compose-check with the required variables set to values made up for the check.
fn compose_check(cx: &CheckContext, args: &[&str]) -> Result<String> {
    let mut command = Command::new(&cx.tools.compose_check);
    command.args(args).arg(FILE).current_dir(&cx.repo);
    for variable in REQUIRED {
        command.env(
            variable,
            format!("check-deploy-{}", variable.to_lowercase()),
        );
    }
    process::run(&mut command)
}

/// Without the required variables the loader fails, naming each.
fn refuses_without_secrets(cx: &CheckContext) -> Result<()> {
    let mut command = Command::new(&cx.tools.compose_check);
    command.arg(FILE).current_dir(&cx.repo);
    for variable in REQUIRED {
        command.env_remove(variable);
    }
    let output = command.output()?;
    ensure!(
        !output.status.success(),
        "{FILE} loads without {}",
        REQUIRED.join(" and ")
    );
    let errors = String::from_utf8_lossy(&output.stderr);
    for variable in REQUIRED {
        ensure!(
            errors.contains(&format!("required variable {variable} is missing")),
            "without {variable}, the loader did not name it: {errors}"
        );
    }
    Ok(())
}

/// A healthcheck test; a spillway service's GETs its own /readyz through spillway-admin.
fn check_healthcheck(name: &str, service: &Value) -> Result<()> {
    let healthcheck = &service["healthcheck"];
    let test: Vec<&str> = healthcheck["test"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        !test.is_empty() && healthcheck["disable"] != true,
        "{name}: no healthcheck"
    );
    if !is_spillway(service) {
        return Ok(());
    }
    let port = service["ports"][0]["target"]
        .as_u64()
        .with_context(|| format!("{name}: no published port"))?;
    let expected = format!("http://127.0.0.1:{port}/readyz");
    ensure!(
        test == ["CMD", "spillway-admin", "healthcheck", "--url", &expected],
        "{name}: the healthcheck is {test:?}, not spillway-admin healthcheck --url {expected}"
    );
    Ok(())
}

/// Built from the Dockerfile (the services and the migrations).
fn is_spillway(service: &Value) -> bool {
    service["build"].is_object()
}

/// The migrations run once, and every spillway service waits until they succeeded.
fn check_migrations_first(services: &serde_json::Map<String, Value>) -> Result<()> {
    let migrate = services
        .get(MIGRATE)
        .with_context(|| format!("no `{MIGRATE}` service"))?;
    ensure!(
        migrate["command"] == serde_json::json!(["spillway-admin", "migrate"]),
        "`{MIGRATE}` does not run spillway-admin migrate"
    );
    for (name, service) in services {
        if name == MIGRATE || !is_spillway(service) {
            continue;
        }
        ensure!(
            service["depends_on"][MIGRATE]["condition"] == "service_completed_successfully",
            "{name}: does not wait for `{MIGRATE}` to complete"
        );
    }
    Ok(())
}

/// Redis with a memory limit and the local stack's eviction policy.
fn check_redis(redis_service: &Value) -> Result<()> {
    let command: Vec<&str> = redis_service["command"]
        .as_array()
        .context("redis: no command")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let value_of = |flag: &str| {
        command
            .iter()
            .position(|word| *word == flag)
            .and_then(|at| command.get(at + 1))
            .copied()
    };
    ensure!(
        value_of("--maxmemory").is_some(),
        "redis: no --maxmemory (an eviction policy applies only with a limit)"
    );
    match value_of("--maxmemory-policy") {
        Some(policy) if policy == redis::MAX_MEMORY_POLICY => Ok(()),
        other => bail!(
            "redis: --maxmemory-policy is {other:?}, the local stack's is {}",
            redis::MAX_MEMORY_POLICY
        ),
    }
}
