//! The accept loop: serves connections until shutdown, then waits for them to finish.
//! Also serves the metrics endpoint when it is configured.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::connection::{self, Shared};
use crate::http;
use crate::keys::{KeyError, KeyFiles};
use crate::protection::ResyncProtection;
use crate::replica::{Replica, ReplicaError};
use crate::resync;
use crate::state::ReplicaState;
use crate::stats::Stats;

/// Connections that may be in their handshake at once; more are closed on accept, so a
/// flood of peers that prove nothing cannot exhaust memory or file descriptors.
pub const MAX_HANDSHAKING: usize = 16;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The target or state directory is unusable.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A key file is unusable.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The metrics address cannot be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsListen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// A bound server with its replica open.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    metrics: Option<TcpListener>,
    replica: Replica,
    stats: Arc<Stats>,
    protection: ResyncProtection,
    keys: Option<KeyFiles>,
}

impl Server {
    /// Opens the target and state, then binds the listen and metrics addresses.
    pub async fn bind(settings: &Settings) -> Result<Self, StartError> {
        if let Some(keys) = &settings.keys {
            keys.check()?;
        }
        let mut replica = Replica::open(&settings.target, &settings.state_dir)?;
        // A resync made durable before a restart is complete; a snapshot whose removal
        // failed is removed now.
        resync::on_start(&mut replica, &settings.protection).map_err(ReplicaError::from)?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: settings.listen,
                    source,
                })?;
        let metrics = match settings.metrics_listen {
            None => None,
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::MetricsListen { addr, source })?,
            ),
        };
        let stats = Arc::new(Stats::new(replica.state()));
        stats.entries_recovered(replica.recovered_entries());
        Ok(Self {
            listener,
            metrics,
            replica,
            stats,
            protection: settings.protection.clone(),
            keys: settings.keys.clone(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The metrics address actually bound, if metrics are served.
    pub fn metrics_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.metrics.as_ref().map(TcpListener::local_addr)
    }

    /// The live figures.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The replica's state before serving.
    pub fn state(&self) -> &ReplicaState {
        self.replica.state()
    }

    /// Serves until `shutdown` is cancelled, then lets every session finish its batch and
    /// returns the final persisted state.
    pub async fn run(self, shutdown: CancellationToken) -> ReplicaState {
        let Self {
            listener,
            metrics,
            replica,
            stats,
            protection,
            keys,
        } = self;
        let metrics = metrics
            .map(|metrics| tokio::spawn(http::serve(metrics, stats.clone(), shutdown.clone())));
        let shared = Arc::new(Shared::new(
            replica,
            stats.clone(),
            protection,
            keys,
            shutdown.clone(),
        ));
        let handshaking = Arc::new(Semaphore::new(MAX_HANDSHAKING));
        let connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    // Acks are small and latency-bound.
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!("TCP_NODELAY on {peer}: {err}");
                    }
                    stats.connection_accepted();
                    let Ok(permit) = handshaking.clone().try_acquire_owned() else {
                        tracing::warn!(
                            "closing connection from {peer} at once: {MAX_HANDSHAKING} others \
                             are still in their handshake"
                        );
                        stats.connection_busy();
                        continue;
                    };
                    tracing::info!("connection from {peer}");
                    connections.spawn(connection::serve(stream, peer, shared.clone(), permit));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        drop(listener);
        connections.close();
        connections.wait().await;
        if let Some(metrics) = metrics {
            // It stops on the same shutdown; waiting means the port is closed on return.
            match metrics.await {
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                _ => {}
            }
        }
        let state = shared.replica().await.state().clone();
        state
    }
}
