//! `staleless-api`: reads the configuration, sets up logs, binds, and runs until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use staleless_api::{AppState, Config, run, server::shutdown_signal, telemetry};

/// jemalloc instead of glibc's malloc: measured by `scripts/bench` with 100,000 cached profiles,
/// glibc spends about 16 % more memory on the many small strings and `Arc`s a cache holds
/// (per-chunk headers and per-thread arenas), and the request path is as fast.
#[cfg(not(target_env = "msvc"))]
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
    let sdk = aws_config::load_from_env().await;
    let bind_addr = config.bind_addr;
    let mode = config.cache.cache_mode;
    let state = AppState::from_aws(config, &sdk).await.context("cannot start")?;
    let listener = tokio::net::TcpListener::bind(bind_addr)
        .await
        .with_context(|| format!("cannot bind {bind_addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, mode = mode.as_str(), "listening");
    run(listener, state, shutdown_signal()).await.context("server failed")
}
