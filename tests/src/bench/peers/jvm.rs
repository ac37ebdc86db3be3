//! The JVM peers' artifacts and processes: Maven fetches (and for Kafka Streams, builds) them
//! once into `<cache>/peers/` (`$SPILLWAY_CACHE_DIR`, default `~/.cache/spillway`), in a
//! directory named after a hash of the pom and sources, so a second run starts at once and
//! an edited pom is fetched again. [`JavaProcess`] runs one of them with its stdout read line
//! by line and its stderr kept in a log file.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

use crate::stack::workspace_root;

/// Where the peers' jars are: classpaths and the Connect plugin directory.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub streams_classpath: String,
    pub connect_classpath: String,
    /// `plugin.path` of the Connect worker: holds `debezium-connector-jdbc/`.
    pub connect_plugin_path: PathBuf,
}

/// Fetches and builds what is not cached yet (Maven, blocking).
pub fn prepare() -> anyhow::Result<Artifacts> {
    let peers = workspace_root().join("tests/peers");
    let streams = build_streams(&peers.join("kafka-streams"))?;
    let runtime = fetch_dependencies(
        &peers.join("kafka-connect/runtime"),
        "connect-runtime",
        Path::new("lib"),
    )?;
    let plugins = fetch_dependencies(
        &peers.join("kafka-connect/debezium-jdbc"),
        "debezium-jdbc",
        Path::new("debezium-connector-jdbc"),
    )?;
    Ok(Artifacts {
        streams_classpath: format!(
            "{}:{}/*",
            streams.join("peer-kafka-streams.jar").display(),
            streams.join("lib").display()
        ),
        connect_classpath: format!("{}/*", runtime.join("lib").display()),
        connect_plugin_path: plugins,
    })
}

fn cache_dir() -> anyhow::Result<PathBuf> {
    let root = match std::env::var_os("SPILLWAY_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/spillway"),
    };
    Ok(root.join("peers"))
}

/// The Kafka Streams application: compiled and packaged, its dependencies beside it.
fn build_streams(project: &Path) -> anyhow::Result<PathBuf> {
    cached(project, "kafka-streams", |partial| {
        let mut mvn = maven(project);
        mvn.args([
            "package",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
        ])
        .arg(format!("-Dpeer.build.dir={}", partial.display()))
        .arg(format!(
            "-DoutputDirectory={}",
            partial.join("lib").display()
        ));
        run(mvn)
    })
}

/// A `packaging=pom` project's runtime dependencies copied into `<dir>/<into>`.
fn fetch_dependencies(project: &Path, name: &str, into: &Path) -> anyhow::Result<PathBuf> {
    cached(project, name, |partial| {
        let mut mvn = maven(project);
        mvn.arg("dependency:copy-dependencies").arg(format!(
            "-DoutputDirectory={}",
            partial.join(into).display()
        ));
        run(mvn)
    })
}

/// `<cache>/peers/<name>-<hash of the project>`, made by `make` into a partial directory
/// first so an interrupted fetch is never taken for a finished one.
fn cached(
    project: &Path,
    name: &str,
    make: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let dir = cache_dir()?.join(format!("{name}-{:016x}", project_hash(project)?));
    if dir.exists() {
        return Ok(dir);
    }
    eprintln!(
        "peers: fetching {name} with Maven into {} (once)",
        dir.display()
    );
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    make(&partial).with_context(|| format!("preparing {name} with Maven"))?;
    std::fs::rename(&partial, &dir)?;
    Ok(dir)
}

fn maven(project: &Path) -> std::process::Command {
    let mut mvn = std::process::Command::new("mvn");
    mvn.args(["-q", "-B", "-f"]).arg(project.join("pom.xml"));
    mvn
}

fn run(mut command: std::process::Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .context("running mvn (is Maven installed?)")?;
    if !output.status.success() {
        bail!(
            "{:?} failed: {}\n{}",
            command,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// FNV-1a over the pom and every file under `src/` (sorted by path): stable across builds.
fn project_hash(project: &Path) -> anyhow::Result<u64> {
    let mut files = vec![project.join("pom.xml")];
    collect_files(&project.join("src"), &mut files)?;
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in files {
        let relative = file.strip_prefix(project).unwrap_or(&file);
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        for byte in relative.to_string_lossy().bytes().chain(bytes) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(hash)
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// A JVM child: each stdout line arrives with the instant it was read; stderr goes to a log.
pub struct JavaProcess {
    pub name: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<(Instant, String)>,
    log: PathBuf,
}

impl JavaProcess {
    /// `java <jvm_args> -cp <classpath> <main> <args>`, stderr into `log`.
    pub fn spawn(
        name: &str,
        classpath: &str,
        jvm_args: &[String],
        main: &str,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(log)?;
        let mut child = Command::new("java")
            .args(jvm_args)
            .arg("-cp")
            .arg(classpath)
            .arg(main)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .context("starting java (is a JDK installed?)")?;
        let stdout = child.stdout.take().context("java stdout")?;
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The next stdout line, or an error naming the log if the process ends or `deadline`
    /// passes first.
    pub async fn next_line(&mut self, deadline: Instant) -> anyhow::Result<(Instant, String)> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.lines.recv()).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => bail!("{} exited early; {}", self.name, self.log_tail()),
            Err(_) => bail!("{} timed out; {}", self.name, self.log_tail()),
        }
    }

    /// Fails if the process has exited (with its log's tail).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("{} exited with {status}; {}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("last lines of {}:\n{tail}", self.log.display())
    }
}
