//! How every staleless process reaches AWS: the SDK's HTTPS client on rustls with *ring*, set on
//! every SDK configuration the project builds.
//!
//! The SDK's default client brings rustls on aws-lc, whose C sources are the largest single
//! compile of the Lambdas' release build (minutes of `sam build` on 2 cores); *ring* is already
//! in the graph (rustls under `reqwest` and the Lambda runtime) and compiles in seconds. Every
//! configuration therefore comes from here: one built without [`https_client`] would have no
//! HTTP client at all, and its first call would fail.

use aws_config::ConfigLoader;
use aws_smithy_http_client::Builder;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

pub use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// The HTTPS client (HTTP too, for local endpoints) every SDK client of the project uses.
#[must_use]
pub fn https_client() -> SharedHttpClient {
    Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// `aws_config::from_env()` with [`https_client`]: the environment's region, endpoint and
/// credentials, as every AWS tool reads them.
#[must_use]
pub fn from_env() -> ConfigLoader {
    aws_config::from_env().http_client(https_client())
}

/// The environment's SDK configuration ([`from_env`]), loaded.
pub async fn load_from_env() -> aws_config::SdkConfig {
    from_env().load().await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_config::{BehaviorVersion, Region};
    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpListener;

    use super::*;

    /// The client speaks TLS to an `https://` endpoint: the first bytes it sends are a TLS
    /// handshake record (content type 22, version 3.x), so rustls and its *ring* provider are
    /// wired in, not merely compiled.
    #[tokio::test]
    async fn an_https_endpoint_gets_a_tls_client_hello() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let first_bytes = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut bytes = [0_u8; 3];
            stream.read_exact(&mut bytes).await.expect("read");
            bytes
        });
        let config = from_env()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("https://127.0.0.1:{port}"))
            .credentials_provider(aws_sdk_sts::config::Credentials::new("a", "b", None, None, "test"))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(Duration::from_secs(2))
                    .build(),
            )
            .load()
            .await;
        // The call fails (nothing answers the handshake); what was sent is the point.
        let _ = aws_sdk_sts::Client::new(&config).get_caller_identity().send().await;
        let bytes = tokio::time::timeout(Duration::from_secs(5), first_bytes)
            .await
            .expect("the client connected")
            .expect("join");
        assert_eq!(bytes[0], 0x16, "not a TLS handshake record: {bytes:?}");
        assert_eq!(bytes[1], 0x03, "not a TLS version: {bytes:?}");
    }
}
