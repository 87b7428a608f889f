//! The local Lambda's runtime API with AWS's semantics for `next`, in front of the one
//! `cargo lambda watch` serves.
//!
//! On AWS a function's `GET …/runtime/invocation/next` blocks until there is an invocation.
//! `cargo lambda watch` answers one that waited its `--timeout` with `408 Request Timeout` (and
//! some versions with `204 No Content`). `lambda_runtime` panics on either ("missing
//! lambda-runtime-aws-request-id header"; it skips a 204 in debug builds only), leaving the relay
//! dead with nothing to restart it: whenever no invocation came for a function timeout, as with a
//! 5 s timeout and heartbeats 5 s apart. This pass-through asks again on either answer, so the
//! function lives as it would on AWS; every other request and answer passes unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

/// Before `next` is asked again after an idle answer: the local Lambda gives one only after
/// waiting, so this only keeps a misbehaving one from being asked in a tight loop.
const NEXT_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// The pass-through; stops serving when dropped.
#[derive(Debug)]
pub struct RuntimeApi {
    addr: SocketAddr,
    shutdown: CancellationToken,
}

struct Upstream {
    base: String,
    client: reqwest::Client,
}

impl RuntimeApi {
    /// Serves on a free loopback port, forwarding to the local Lambda on `upstream_port`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(upstream_port: u16) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // No timeout: `next` waits for an invocation as long as there is none, as on AWS.
        let client = reqwest::Client::builder().build().map_err(std::io::Error::other)?;
        let upstream = Arc::new(Upstream {
            base: format!("http://127.0.0.1:{upstream_port}"),
            client,
        });
        let app = Router::new().fallback(forward).with_state(upstream);
        let shutdown = CancellationToken::new();
        let stopped = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
        });
        Ok(Self { addr, shutdown })
    }

    /// The port the function's `AWS_LAMBDA_RUNTIME_API` names.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn forward(
    State(upstream): State<Arc<Upstream>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    let next = method == Method::GET && uri.path().ends_with("/runtime/invocation/next");
    loop {
        let mut request = upstream
            .client
            .request(method.clone(), format!("{}{path}", upstream.base))
            .body(body.clone());
        for (name, value) in &headers {
            if name != header::HOST {
                request = request.header(name, value);
            }
        }
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(err) => return (StatusCode::BAD_GATEWAY, format!("the local Lambda: {err}")).into_response(),
        };
        if next && matches!(answer.status(), StatusCode::NO_CONTENT | StatusCode::REQUEST_TIMEOUT) {
            tokio::time::sleep(NEXT_RETRY_PAUSE).await;
            continue;
        }
        let status = answer.status();
        let answer_headers = answer.headers().clone();
        let body = match answer.bytes().await {
            Ok(body) => body,
            Err(err) => return (StatusCode::BAD_GATEWAY, format!("the local Lambda: {err}")).into_response(),
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        *response.headers_mut() = answer_headers;
        return response;
    }
}
