//! `cargo xtask check-deploy [--live]`: the deployment artefacts checked by the tools that
//! consume them.
//!
//! - Without `--live` ([`static_checks`]): helm lint and helm template (default values with
//!   the required secrets, production values, every option on) with the manifests validated
//!   offline against the Kubernetes API schemas (kubernetes-validate) and against each other
//!   ([`chart`]: the migration hook Job, the HPA, Ingress, NetworkPolicies, spread
//!   constraints); missing secrets, the sample secret and other unsafe or forbidden values
//!   refused; promtool check and test of the alert rules; the Compose file through the Compose
//!   specification's loader and its healthchecks ([`compose`]); the Dockerfile through
//!   hadolint; the dashboards' files.
//! - With `--live` ([`live`]): the local stack and the services as `cargo xtask up` starts
//!   them, a real Prometheus scraping them under a short load, and every dashboard and
//!   alert query run against it.
//!
//! The tools are installed on first use into the cache ([`tools`]).

mod chart;
mod compose;
mod http;
mod live;
mod load;
mod prometheus;
mod report;
mod static_checks;
mod tools;

use std::{process::ExitCode, time::Instant};

use anyhow::Result;

use crate::paths::Paths;

pub fn run(paths: &Paths, live: bool) -> Result<ExitCode> {
    let clock = Instant::now();
    eprintln!("tools:");
    let tools = tools::Tools::ensure(paths)?;
    for line in tools.versions() {
        eprintln!("  {line}");
    }
    eprintln!("  ready after {:.1} s", clock.elapsed().as_secs_f64());
    let mut report = report::Report::default();
    if live {
        eprintln!("live check:");
        live::run(paths, &tools, &mut report)?;
    } else {
        eprintln!("static checks:");
        static_checks::run(paths, &tools, &mut report)?;
    }
    eprintln!(
        "check-deploy{} took {:.0} s",
        if live { " --live" } else { "" },
        clock.elapsed().as_secs_f64()
    );
    println!("check-deploy: {}", report.summary());
    Ok(if report.failed().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
