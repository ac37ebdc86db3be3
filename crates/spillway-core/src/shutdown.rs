//! One shutdown signal for every task of a service. The first SIGTERM or SIGINT cancels the
//! token: HTTP servers stop accepting, consumers stop fetching, finish and commit what they
//! hold. A second signal exits at once.

use tokio_util::sync::CancellationToken;

/// Exit code for a forced stop on the second signal (128 + SIGINT).
const FORCED_EXIT_CODE: i32 = 130;

/// Returns a token cancelled on the first SIGTERM/SIGINT; the second signal exits the process.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received: draining (a second signal exits at once)");
        cancel.cancel();
        wait_for_signal().await;
        tracing::warn!("second shutdown signal: exiting now");
        std::process::exit(FORCED_EXIT_CODE);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the service can still be stopped by its token.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
