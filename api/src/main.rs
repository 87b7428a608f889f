//! `staleless-api`: reads the configuration, sets up logs, binds, and runs until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use staleless_api::{AppState, Config, run, server::shutdown_signal, telemetry};

/// jemalloc instead of glibc's malloc: measured by `scripts/bench`, a cached profile costs
/// ≈ 700 B with it against ≈ 800 B with glibc at 100,000 profiles (most of a profile is small
/// strings, which glibc rounds up to 32-byte chunks), which keeps 100,000 profiles under
/// 100 MiB; the price, measured A/B, is ≈ 4 % of cache-hit throughput at 70,000 req/s per task
/// (see `BENCHMARKS.md`). Built in with `--features jemalloc` (the shipped binary); debug builds
/// and tests keep glibc's.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init();
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line naming the problem: the chain of causes joined, no backtrace.
            tracing::error!(error = format!("{err:#}"), "staleless-api failed");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let sdk = staleless_aws::load_from_env().await;
    let bind_addr = config.bind_addr;
    let mode = config.cache.cache_mode;
    let state = AppState::from_aws(config, &sdk).await.context("cannot start")?;
    let listener = tokio::net::TcpListener::bind(bind_addr)
        .await
        .with_context(|| format!("cannot bind {bind_addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, mode = mode.as_str(), "listening");
    run(listener, state, shutdown_signal()).await.context("server failed")
}
