//! Processes the stack starts: detached (their own session, so they outlive `cargo xtask`),
//! output to `.stack/logs/<name>.log`, pid in `.stack/pids/<name>.pid`; stopped by that pid,
//! never by name.

use std::{
    fs::File,
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::paths::Paths;

/// How long a stopped process gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

/// Polls `ready` every 200 ms until it holds or `timeout` passes; the error shows the log tail.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    log: Option<&Path>,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        sleep(Duration::from_millis(200));
    }
    let tail = log.map(log_tail).unwrap_or_default();
    bail!("{what} not ready after {timeout:?}\n{tail}")
}

/// The last lines of a log file.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(25);
    format!(
        "--- last lines of {} ---\n{}",
        log.display(),
        lines[start..].join("\n")
    )
}

/// Starts `command` detached, logging to `.stack/logs/<name>.log`, and records its pid.
pub fn spawn_detached(paths: &Paths, name: &str, command: &mut Command) -> Result<u32> {
    let log = File::create(paths.log(name))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let pid = child.id();
    write_pid(paths, name, pid)?;
    Ok(pid)
}

pub fn write_pid(paths: &Paths, name: &str, pid: u32) -> Result<()> {
    std::fs::write(paths.pid_file(name), pid.to_string())?;
    Ok(())
}

pub fn read_pid(paths: &Paths, name: &str) -> Option<u32> {
    std::fs::read_to_string(paths.pid_file(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| stat.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(false)
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// Stops the process recorded for `name` (SIGTERM, then SIGKILL after a grace period) and
/// removes its pid file. Returns whether there was one to stop.
pub fn stop_recorded(paths: &Paths, name: &str) -> Result<bool> {
    let Some(pid) = read_pid(paths, name) else {
        return Ok(false);
    };
    if alive(pid) {
        signal(pid, "-TERM");
        let started = Instant::now();
        while alive(pid) && started.elapsed() < STOP_GRACE {
            sleep(Duration::from_millis(100));
        }
        if alive(pid) {
            signal(pid, "-KILL");
            sleep(Duration::from_millis(200));
        }
    }
    std::fs::remove_file(paths.pid_file(name))?;
    Ok(true)
}

/// Stops the processes recorded for `names` together: SIGTERM to all, then SIGKILL to those
/// still alive after the grace period (members of a cluster shut down faster side by side than
/// one after another). Returns whether any was recorded.
pub fn stop_all_recorded(paths: &Paths, names: &[String]) -> Result<bool> {
    let recorded: Vec<(&String, u32)> = names
        .iter()
        .filter_map(|name| Some((name, read_pid(paths, name)?)))
        .collect();
    for (_, pid) in &recorded {
        if alive(*pid) {
            signal(*pid, "-TERM");
        }
    }
    let started = Instant::now();
    while recorded.iter().any(|(_, pid)| alive(*pid)) && started.elapsed() < STOP_GRACE {
        sleep(Duration::from_millis(100));
    }
    for (name, pid) in &recorded {
        if alive(*pid) {
            signal(*pid, "-KILL");
        }
        std::fs::remove_file(paths.pid_file(name))?;
    }
    Ok(!recorded.is_empty())
}

/// Kills the process recorded for `name` with SIGKILL (a crash, for fault tests), waits until
/// it is gone and removes its pid file. Returns its pid, or `None` when none was alive.
pub fn kill_recorded(paths: &Paths, name: &str) -> Result<Option<u32>> {
    let Some(pid) = read_pid(paths, name) else {
        return Ok(None);
    };
    let was_alive = alive(pid);
    if was_alive {
        signal(pid, "-KILL");
        let started = Instant::now();
        while alive(pid) && started.elapsed() < STOP_GRACE {
            sleep(Duration::from_millis(20));
        }
    }
    std::fs::remove_file(paths.pid_file(name))?;
    Ok(was_alive.then_some(pid))
}

/// Runs a command to completion, failing with its output when it fails.
pub fn run(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// Whether a program is on PATH.
pub fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `apt-get install -y <packages>` (after one `apt-get update`), as root or through sudo.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut command = if sudo {
            Command::new("sudo")
        } else {
            Command::new("apt-get")
        };
        if sudo {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    eprintln!("installing {} from Debian's packages", packages.join(" "));
    run(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(packages);
    run(&mut install)?;
    Ok(())
}

pub fn is_root() -> bool {
    run(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}
