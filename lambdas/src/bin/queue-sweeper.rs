//! The `queue-sweeper` Lambda: a thin main over [`staleless_lambdas::queue_sweeper::run`], so the three
//! binaries share one compiled library and each links in seconds.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    staleless_lambdas::queue_sweeper::run().await
}
