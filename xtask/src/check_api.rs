//! `cargo xtask openapi [--check]` and `cargo xtask check-api`: the API's document and the
//! gateway's behaviour held to each other.
//!
//! - `openapi` writes docs/openapi.yaml: the document `gateway openapi` generates for the
//!   sample configuration (config/spillway.toml, the file alone); `--check` fails instead
//!   when the file differs.
//! - `check-api` runs schemathesis (from PyPI, in a virtual environment in the cache) against
//!   the document a running gateway serves, with every check and the document's links, as a
//!   member with the `templates:write` scope, seeded and bounded (`xtask/schemathesis.toml`):
//!   every phase, then the stateful phase again without the sink writes ([`RUNS`]).
//!   It starts what `cargo xtask up` starts when it is not running (the stack, the sample
//!   schema, the four services) and stops what it started, by pid. Before schemathesis, it
//!   checks that docs/openapi.yaml is the generated document and that the gateway serves it,
//!   and puts the source objects registrations name into the bucket (the document's example
//!   registration and the `template-sources` dictionary of the settings), so that some
//!   registrations succeed and the links from them reach real templates.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{env, paths::Paths, process, services, stack, token, topology::Topology};

/// The schemathesis release the check runs (pinned: a new one may add checks).
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// Where the gateway of `cargo xtask up` listens.
const GATEWAY: &str = "127.0.0.1:8080";
/// The run is bounded by `xtask/schemathesis.toml` (examples per operation); this is the
/// backstop for a hang.
const RUN_TIMEOUT: Duration = Duration::from_secs(8 * 60);
/// The member schemathesis calls as.
const MEMBER: &str = "schemathesis";
/// Where the registration's example sits in the document.
const REGISTRATION_EXAMPLE: &str = "/paths/~1v1~1templates~1{template_id}/put/requestBody/content/application~1json/example/objects";
/// The settings' dictionary of source keys schemathesis draws registrations' objects from.
const SOURCES_DICTIONARY: &str = "template-sources";

/// `cargo xtask openapi [--check]`.
pub fn openapi(paths: &Paths, check: bool) -> Result<ExitCode> {
    let generated = generated_document(paths, "--yaml")?;
    let file = paths.repo.join("docs/openapi.yaml");
    if !check {
        std::fs::write(&file, &generated)?;
        println!("wrote docs/openapi.yaml (the document of config/spillway.toml)");
        return Ok(ExitCode::SUCCESS);
    }
    let current = std::fs::read_to_string(&file).unwrap_or_default();
    if current == generated {
        println!("docs/openapi.yaml is the generated document");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("docs/openapi.yaml is not what the gateway generates: run `cargo xtask openapi`");
    Ok(ExitCode::FAILURE)
}

/// `gateway openapi <format> --config config/spillway.toml`, built first.
fn generated_document(paths: &Paths, format: &str) -> Result<String> {
    let status = services::cargo()
        .args(["build", "--quiet", "-p", "gateway", "--bin", "gateway"])
        .current_dir(&paths.repo)
        .status()?;
    ensure!(status.success(), "cargo build of the gateway failed");
    let gateway = services::target_dir(paths)?.join("debug/gateway");
    let mut command = Command::new(gateway);
    command
        .args(["openapi", format, "--config", "config/spillway.toml"])
        .current_dir(&paths.repo);
    let mut document = process::run(&mut command).context("gateway openapi")?;
    if !document.ends_with('\n') {
        document.push('\n');
    }
    Ok(document)
}

/// What this run started, and so stops.
#[derive(Default)]
struct Started {
    stack: Vec<&'static str>,
    services: Vec<&'static str>,
}

impl Started {
    fn stop(&self, paths: &Paths) -> Result<()> {
        for name in self.services.iter().rev() {
            process::stop_recorded(paths, name)?;
            eprintln!("  {name:<16} stopped");
        }
        if !self.stack.is_empty() {
            stack::down(paths, Topology::SINGLE, &self.stack)?;
        }
        Ok(())
    }
}

/// `cargo xtask check-api`.
pub fn run(paths: &Paths) -> Result<ExitCode> {
    let st = ensure_schemathesis(paths)?;
    let mut started = Started::default();
    let outcome = run_started(paths, &st, &mut started);
    if !started.stack.is_empty() || !started.services.is_empty() {
        eprintln!("stopping what this run started:");
    }
    started.stop(paths)?;
    Ok(if outcome? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_started(paths: &Paths, st: &Path, started: &mut Started) -> Result<bool> {
    eprintln!("stack:");
    started.stack = stack::up(paths, Topology::SINGLE)?;
    stack::postgres::run_sql_file(&paths.repo.join("config/sample-schema.sql"))?;
    eprintln!("services:");
    let binaries = services::build(paths)?;
    started.services = services::not_running();
    services::start(paths, &binaries, Topology::SINGLE)?;
    if openapi(paths, true)? != ExitCode::SUCCESS {
        return Ok(false);
    }
    let served = served_is_generated(paths)?;
    put_sources(paths, &binaries, &sample_sources(paths, &served)?)?;
    schemathesis(paths, st)
}

/// The source keys registrations will name: the document's example registration's and the
/// settings' dictionary's.
fn sample_sources(paths: &Paths, document: &serde_json::Value) -> Result<Vec<String>> {
    let strings = |value: Option<&serde_json::Value>| -> Vec<String> {
        value
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|key| key.as_str().map(str::to_owned))
            .collect()
    };
    let mut keys = strings(document.pointer(REGISTRATION_EXAMPLE));
    ensure!(!keys.is_empty(), "the document has no example registration");
    let settings: toml::Value = toml::from_str(&std::fs::read_to_string(
        paths.repo.join("xtask/schemathesis.toml"),
    )?)?;
    let dictionary = settings
        .get("dictionaries")
        .and_then(|dictionaries| dictionaries.get(SOURCES_DICTIONARY))
        .and_then(|dictionary| dictionary.get("values"))
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|key| key.as_str().map(str::to_owned));
    for key in dictionary {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// `spillway-demo sources KEY...`: the objects put into the configured bucket.
fn put_sources(paths: &Paths, binaries: &Path, keys: &[String]) -> Result<()> {
    let status = Command::new(binaries.join("spillway-demo"))
        .arg("sources")
        .args(keys)
        .current_dir(&paths.repo)
        .envs(env::variables(paths, Topology::SINGLE))
        .status()
        .context("spillway-demo sources")?;
    ensure!(status.success(), "putting the sample sources failed");
    println!("put {} source objects into the bucket", keys.len());
    Ok(())
}

/// The gateway on :8080 serves the document of the sample configuration; returns it.
fn served_is_generated(paths: &Paths) -> Result<serde_json::Value> {
    let served: serde_json::Value = serde_json::from_str(&http_get(GATEWAY, "/openapi.json")?)
        .context("GET /openapi.json is not JSON")?;
    let generated: serde_json::Value = serde_json::from_str(&generated_document(paths, "--json")?)?;
    ensure!(
        served == generated,
        "the gateway on {GATEWAY} serves another document than config/spillway.toml's: is it \
         this tree's gateway, started with the sample configuration?"
    );
    println!("GET /openapi.json is the generated document");
    Ok(served)
}

/// The runs of schemathesis, each a name (its report's folder) and its arguments beyond the
/// settings. schemathesis starts its stateful scenarios only from operations it judges sure
/// to succeed with drawn data (a POST whose inputs nothing else produces is not) while there
/// are any: here the sink writes. The second run leaves them out, so that its scenarios start
/// from the queue joins and the template registrations and follow their links.
const RUNS: [(&str, &[&str]); 2] = [
    ("all-phases", &[]),
    (
        "stateful-without-writes",
        &[
            "--phases",
            "stateful",
            "--exclude-operation-id-regex",
            "^write_",
        ],
    ),
];

/// schemathesis against the served document, every run of [`RUNS`]; true when none found
/// anything.
fn schemathesis(paths: &Paths, st: &Path) -> Result<bool> {
    let token = token::TokenRequest {
        sub: MEMBER.to_owned(),
        scope: Some("templates:write".to_owned()),
        ttl: Duration::from_secs(3600),
    }
    .sign(&token::secret())?;
    let reports = paths.state.join("schemathesis");
    let _ = std::fs::remove_dir_all(&reports);
    let mut clean = true;
    for (name, args) in RUNS {
        eprintln!(
            "schemathesis {name} (xtask/schemathesis.toml) against http://{GATEWAY}/openapi.json:"
        );
        let mut command = Command::new(st);
        command
            .arg("--config-file")
            .arg(paths.repo.join("xtask/schemathesis.toml"))
            .args([
                "run",
                &format!("http://{GATEWAY}/openapi.json"),
                "--checks",
                "all",
            ])
            .args(args)
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--report", "junit", "--report-dir"])
            .arg(reports.join(name));
        clean &= run_bounded(paths, &mut command)?;
    }
    Ok(clean)
}

/// One schemathesis run, killed past [`RUN_TIMEOUT`]; true when it found nothing.
fn run_bounded(paths: &Paths, command: &mut Command) -> Result<bool> {
    let mut child = command
        .current_dir(&paths.repo)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .spawn()
        .context("starting schemathesis")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            eprintln!("schemathesis took {:.0} s", started.elapsed().as_secs_f64());
            return Ok(status.success());
        }
        if started.elapsed() > RUN_TIMEOUT {
            child.kill()?;
            child.wait()?;
            bail!("schemathesis did not finish within {RUN_TIMEOUT:?}");
        }
        sleep(Duration::from_millis(200));
    }
}

/// The virtual environment holding schemathesis, made on first use.
fn ensure_schemathesis(paths: &Paths) -> Result<PathBuf> {
    let venv = paths
        .cache
        .join("tools")
        .join(SCHEMATHESIS.replace("==", "-"));
    let st = venv.join("bin/st");
    let marker = venv.join("installed");
    if marker.exists() && st.exists() {
        return Ok(st);
    }
    eprintln!("installing {SCHEMATHESIS} into {} (once)", venv.display());
    let _ = std::fs::remove_dir_all(&venv);
    let create = || process::run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    if create().is_err() {
        process::apt_install(&["python3-venv"])?;
        create().context("python3 -m venv")?;
    }
    process::run(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        SCHEMATHESIS,
    ]))
    .context("pip install schemathesis")?;
    std::fs::write(&marker, "")?;
    Ok(st)
}

/// The body of a GET (plain HTTP/1.1; no client library needed).
fn http_get(address: &str, path: &str) -> Result<String> {
    let mut stream =
        TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8(answer).context("the answer is not UTF-8")?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .context("the answer has no head")?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path}: {}",
        head.lines().next().unwrap_or_default()
    );
    ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "GET {path}: a chunked answer"
    );
    Ok(body.to_owned())
}
