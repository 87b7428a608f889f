//! A loopback TCP proxy with an off switch.
//!
//! Pointing one component at an AWS service through it (for example the relay's
//! `AWS_ENDPOINT_URL_SNS`) and switching it off makes that service unavailable to that component
//! alone — connections are refused mid-flight, as in a network partition — while everything else
//! keeps talking to the emulator.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct SwitchableProxy {
    /// `http://127.0.0.1:<port>` of the proxy.
    url: String,
    /// Whether connections are forwarded.
    up: Arc<AtomicBool>,
    /// Bumped when switched off, so open connections are cut too.
    cut: Arc<tokio::sync::watch::Sender<u64>>,
    /// Stops the accept loop.
    shutdown: CancellationToken,
}

impl SwitchableProxy {
    /// Starts forwarding a free loopback port to `target` (`127.0.0.1:4566`).
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(target: &str) -> std::io::Result<Self> {
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0_u64);
        let cut = Arc::new(cut);
        let (url, shutdown) = forward_loopback(target, {
            let (up, cut) = (Arc::clone(&up), Arc::clone(&cut));
            move |mut client, mut server| {
                // Read at accept time: a connection made while switched off is refused.
                let forwarding = up.load(Ordering::SeqCst);
                let mut cut_signal = cut.subscribe();
                async move {
                    if forwarding {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut_signal.changed() => {}
                        }
                    }
                }
            }
        })
        .await?;
        Ok(Self { url, up, cut, shutdown })
    }

    /// The proxy's endpoint URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Refuses new connections and cuts open ones.
    pub fn switch_off(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
    }

    /// Forwards again.
    pub fn switch_on(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for SwitchableProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Listens on a free loopback port and, for each connection, connects to `target`
/// (`http://127.0.0.1:4566`) and runs `on_connection(client, server)` as its own task: the accept
/// loop every proxy between a component and the emulator shares. Returns the listening URL and
/// the token that stops accepting (open connections end with their peers).
///
/// # Errors
/// When no port can be bound.
pub async fn forward_loopback<F, Fut>(target: &str, on_connection: F) -> std::io::Result<(String, CancellationToken)>
where
    F: Fn(TcpStream, TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let target = target.trim_start_matches("http://").to_owned();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let Ok(server) = TcpStream::connect(&target).await else { continue };
                tokio::spawn(on_connection(client, server));
            }
        }
    });
    Ok((url, shutdown))
}
