//! The `heartbeat` Lambda: a thin main over [`staleless_lambdas::heartbeat::run`], so the three
//! binaries share one compiled library and each links in seconds.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    staleless_lambdas::heartbeat::run().await
}
