//! `tracing` set-up: JSON lines for machines or a pretty form for people (`log.format =
//! "auto"`, the default, picks pretty on a terminal and JSON otherwise; colours only on a
//! terminal), filtered by the configured level (overridden by `RUST_LOG` when set).
//!
//! Known-harmless messages of the libraries are kept below `warn` by [`QUIET_DIRECTIVES`].

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, LogSettings};

/// Directives added to the configured level (unless `RUST_LOG` is set): PostgreSQL's notices
/// (`relation ... already exists, skipping` from an idempotent `CREATE ... IF NOT EXISTS`) and
/// actix-server's own start and stop lines (workers, runtime) are not worth an info line;
/// each service says once that it started (`service::announce`). The Redis Cluster client
/// warns at every attempt to reach a node that is down (hundreds a second while a master
/// fails over); the calls that fail meanwhile are logged by spillway itself.
const QUIET_DIRECTIVES: [&str; 3] = [
    "sqlx::postgres::notice=warn",
    "actix_server=warn",
    "redis::cluster_handling=error",
];

/// The format `auto` stands for on this output.
fn effective_format(format: LogFormat, terminal: bool) -> LogFormat {
    match (format, terminal) {
        (LogFormat::Auto, true) => LogFormat::Pretty,
        (LogFormat::Auto, false) => LogFormat::Json,
        (other, _) => other,
    }
}

fn filter(level: &str) -> EnvFilter {
    if let Ok(filter) = EnvFilter::try_from_default_env() {
        return filter;
    }
    let mut filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in QUIET_DIRECTIVES {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Installs the global subscriber once; later calls (tests) are ignored.
pub fn init(settings: &LogSettings) {
    let terminal = std::io::stdout().is_terminal();
    let registry = tracing_subscriber::registry().with(filter(&settings.level));
    let _ = match effective_format(settings.format, terminal) {
        LogFormat::Pretty => registry
            .with(fmt::layer().pretty().with_ansi(terminal))
            .try_init(),
        _ => registry
            .with(fmt::layer().json().with_current_span(true))
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_pretty_on_a_terminal_and_json_elsewhere() {
        assert_eq!(effective_format(LogFormat::Auto, true), LogFormat::Pretty);
        assert_eq!(effective_format(LogFormat::Auto, false), LogFormat::Json);
        assert_eq!(
            effective_format(LogFormat::Pretty, false),
            LogFormat::Pretty
        );
        assert_eq!(effective_format(LogFormat::Json, true), LogFormat::Json);
    }
}
