//! A loopback TCP proxy that counts AWS API calls by action, for the benchmark.
//!
//! The benchmark needs "how many SQS requests does an idle task make" and "how many SNS
//! `PublishBatch` calls does the relay make per 1,000 changed keys" measured on the real
//! processes, not derived from their code. Neither the API nor the relay exports such a counter,
//! and moto keeps none, so the component's `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL_SNS` points
//! here and the proxy reads the action of every request as it forwards it:
//! the `X-Amz-Target: <Service>.<Action>` header of the JSON protocols (SQS) or the
//! `Action=<Action>` form field of the query protocol (SNS). Each request carries exactly one of
//! them, and neither appears in the bodies these components send (they are keys and ids), so
//! counting occurrences in the client → server byte stream counts requests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use infra::proxy::forward_loopback;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Calls seen so far, by action name.
pub type Counts = BTreeMap<String, u64>;

/// A running counting proxy; stops accepting when dropped (open connections end with their peer).
#[derive(Debug)]
pub struct CountingProxy {
    /// `http://127.0.0.1:<port>` of the proxy.
    url: String,
    /// Calls seen, by action; shared with every connection's forwarding task.
    counts: Arc<Mutex<Counts>>,
    /// Stops the accept loop.
    shutdown: CancellationToken,
}

impl CountingProxy {
    /// Starts forwarding a free loopback port to `target` (`http://127.0.0.1:4566`).
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(target: &str) -> std::io::Result<Self> {
        let counts = Arc::new(Mutex::new(Counts::new()));
        let (url, shutdown) = forward_loopback(target, {
            let counts = Arc::clone(&counts);
            move |client, server| forward(client, server, Arc::clone(&counts))
        })
        .await?;
        Ok(Self { url, counts, shutdown })
    }

    /// The proxy's endpoint URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A snapshot of the counts so far.
    #[must_use]
    pub fn counts(&self) -> Counts {
        self.counts.lock().map(|counts| counts.clone()).unwrap_or_default()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Calls of `action` between two snapshots.
#[must_use]
pub fn delta(before: &Counts, after: &Counts, action: &str) -> u64 {
    let count = |counts: &Counts| counts.get(action).copied().unwrap_or(0);
    count(after).saturating_sub(count(before))
}

/// Copies client → server while counting actions, and server → client as is.
async fn forward(client: TcpStream, server: TcpStream, counts: Arc<Mutex<Counts>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let mut scanner = ActionScanner::default();
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            let read = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let actions = scanner.feed(&buffer[..read]);
            if !actions.is_empty()
                && let Ok(mut counts) = counts.lock()
            {
                for action in actions {
                    *counts.entry(action).or_default() += 1;
                }
            }
            if server_write.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// Finds action names in a byte stream that arrives in arbitrary chunks.
#[derive(Debug, Default)]
struct ActionScanner {
    /// The tail of the previous chunk, so a marker split across two reads is still found.
    carry: Vec<u8>,
}

/// Markers that precede an action name, lower-case (the header name's case varies).
const MARKERS: [&[u8]; 2] = [b"x-amz-target:", b"action="];

/// The longest tail kept between chunks: a marker plus a long action name.
const CARRY_BYTES: usize = 96;

impl ActionScanner {
    /// Feeds the next chunk; returns the actions whose name ended inside it.
    fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut text = std::mem::take(&mut self.carry);
        text.extend_from_slice(chunk);
        let lower = text.to_ascii_lowercase();
        let mut actions = Vec::new();
        // Everything before `keep_from` is scanned for good; a tail is kept for the next chunk.
        let mut keep_from = text.len().saturating_sub(CARRY_BYTES);
        let mut at = 0;
        while let Some((marker, start)) = MARKERS
            .iter()
            .filter_map(|marker| find(&lower[at..], marker).map(|offset| (marker, at + offset)))
            .min_by_key(|(_, start)| *start)
        {
            // Header values may start with spaces (`X-Amz-Target: AmazonSQS.…`).
            let value_start = start
                + marker.len()
                + text[start + marker.len()..]
                    .iter()
                    .take_while(|byte| **byte == b' ')
                    .count();
            let Some(end) = text[value_start..]
                .iter()
                .position(|byte| matches!(byte, b'\r' | b'\n' | b'&' | b' ' | b'"'))
                .map(|offset| value_start + offset)
            else {
                // The name is cut by the end of the chunk: scan it again with the next one.
                keep_from = start;
                break;
            };
            let value = String::from_utf8_lossy(&text[value_start..end]);
            let value = value.trim();
            // `AmazonSQS.ReceiveMessage` → `ReceiveMessage`.
            let action = value.rsplit('.').next().unwrap_or(value);
            if !action.is_empty() {
                actions.push(action.to_owned());
            }
            at = end;
            keep_from = keep_from.max(end);
        }
        self.carry = text[keep_from.min(text.len())..].to_vec();
        actions
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_json_targets_and_query_actions_across_chunk_boundaries() {
        let request = b"POST / HTTP/1.1\r\nX-Amz-Target: AmazonSQS.ReceiveMessage\r\ncontent-length: 2\r\n\r\n{}\
POST / HTTP/1.1\r\ncontent-type: application/x-www-form-urlencoded\r\n\r\nAction=PublishBatch&Version=2010-03-31";
        for split in 0..request.len() {
            let mut scanner = ActionScanner::default();
            let mut actions = scanner.feed(&request[..split]);
            actions.extend(scanner.feed(&request[split..]));
            actions.extend(scanner.feed(b"\r\n"));
            assert_eq!(actions, ["ReceiveMessage", "PublishBatch"], "split at {split}");
        }
    }
}
