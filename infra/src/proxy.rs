//! A loopback TCP proxy with an off switch.
//!
//! Pointing one component at an AWS service through it (for example the relay's
//! `AWS_ENDPOINT_URL_SNS`) and switching it off makes that service unavailable to that component
//! alone — connections are refused mid-flight, as in a network partition — while everything else
//! keeps talking to the emulator.

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
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0_u64);
        let cut = Arc::new(cut);
        let shutdown = CancellationToken::new();
        let target = target.trim_start_matches("http://").to_owned();
        tokio::spawn({
            let up = Arc::clone(&up);
            let cut = Arc::clone(&cut);
            let shutdown = shutdown.clone();
            async move {
                loop {
                    let accepted = tokio::select! {
                        () = shutdown.cancelled() => return,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((client, _)) = accepted else { continue };
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let target = target.clone();
                    let mut cut_signal = cut.subscribe();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&target).await else { return };
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut_signal.changed() => {}
                        }
                    });
                }
            }
        });
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
