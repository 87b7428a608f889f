//! A loopback TCP proxy with an off switch and a hang switch.
//!
//! Pointing one component at an AWS service through it (for example the relay's
//! `AWS_ENDPOINT_URL_SNS`) and switching it off makes that service unavailable to that component
//! alone — connections are refused mid-flight, as in a network partition — while everything else
//! keeps talking to the emulator. Hanging it makes the service accept and never answer, the
//! failure only timeouts catch.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct SwitchableProxy {
    /// `http://127.0.0.1:<port>` of the proxy.
    url: String,
    /// [`FORWARD`], [`REFUSE`] or [`HANG`].
    mode: Arc<AtomicU8>,
    /// Bumped when switched off, so open connections are cut too.
    cut: Arc<tokio::sync::watch::Sender<u64>>,
    /// Stops the accept loop.
    shutdown: CancellationToken,
    /// Connections refused while switched off.
    refused: Arc<AtomicU64>,
}

/// Connections are forwarded.
const FORWARD: u8 = 0;
/// Connections are cut at once.
const REFUSE: u8 = 1;
/// Connections are held open and never answered.
const HANG: u8 = 2;

impl SwitchableProxy {
    /// Starts forwarding a free loopback port to `target` (`127.0.0.1:4566`).
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(target: &str) -> std::io::Result<Self> {
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let (cut, _) = tokio::sync::watch::channel(0_u64);
        let cut = Arc::new(cut);
        let refused = Arc::new(AtomicU64::new(0));
        let (url, shutdown) = forward_loopback(target, {
            let (mode, cut, refused) = (Arc::clone(&mode), Arc::clone(&cut), Arc::clone(&refused));
            move |mut client, mut server| {
                // Read at accept time: a connection made while switched off is refused.
                let mode = mode.load(Ordering::SeqCst);
                if mode == REFUSE {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                let mut cut_signal = cut.subscribe();
                async move {
                    match mode {
                        FORWARD => {
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = cut_signal.changed() => {}
                            }
                        }
                        // Accepted, never answered, until the mode changes.
                        HANG => {
                            let _ = cut_signal.changed().await;
                        }
                        _ => {}
                    }
                }
            }
        })
        .await?;
        Ok(Self {
            url,
            mode,
            cut,
            shutdown,
            refused,
        })
    }

    /// The proxy's endpoint URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many connections were refused while switched off: a test waits for the attempts it
    /// needs instead of sleeping for them.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Refuses new connections and cuts open ones.
    pub fn switch_off(&self) {
        self.set(REFUSE);
    }

    /// Accepts connections and never answers on them; open ones are cut.
    pub fn hang(&self) {
        self.set(HANG);
    }

    /// Forwards again (hung connections are released).
    pub fn switch_on(&self) {
        self.set(FORWARD);
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
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
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(on_connection(client, server));
            }
        }
    });
    Ok((url, shutdown))
}
