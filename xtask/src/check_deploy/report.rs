//! The outcome of each named check: printed as it finishes, counted at the end.

use std::time::Instant;

use anyhow::Result;

#[derive(Default)]
pub struct Report {
    passed: usize,
    failed: Vec<String>,
}

impl Report {
    /// Runs one check; `check` returns a one-line detail on success.
    pub fn check(&mut self, name: &str, check: impl FnOnce() -> Result<String>) {
        let clock = Instant::now();
        match check() {
            Ok(detail) => {
                self.passed += 1;
                eprintln!(
                    "  ok    {name} ({:.1} s): {detail}",
                    clock.elapsed().as_secs_f64()
                );
            }
            Err(error) => {
                self.failed.push(name.to_owned());
                eprintln!(
                    "  FAIL  {name} ({:.1} s): {error:#}",
                    clock.elapsed().as_secs_f64()
                );
            }
        }
    }

    pub fn failed(&self) -> &[String] {
        &self.failed
    }

    /// `N passed, N failed`, then the names of the failed checks.
    pub fn summary(&self) -> String {
        let mut summary = format!("{} passed, {} failed", self.passed, self.failed.len());
        if !self.failed.is_empty() {
            summary.push_str(&format!("\nfailed: {}", self.failed.join(", ")));
        }
        summary
    }
}
