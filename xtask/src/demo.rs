//! The demo `cargo xtask up` ends with: it runs the `spillway-demo` binary of the tests crate
//! against the started services, which shows the main jobs working through the gateway.

use anyhow::Result;

use crate::{env, paths::Paths, services, topology::Topology};

pub fn run(paths: &Paths, topology: Topology) -> Result<()> {
    let status = services::cargo()
        .args([
            "run",
            "--quiet",
            "-p",
            "spillway-tests",
            "--bin",
            "spillway-demo",
        ])
        .current_dir(&paths.repo)
        .envs(env::variables(paths, topology))
        .status()?;
    anyhow::ensure!(status.success(), "the demo failed");
    Ok(())
}
