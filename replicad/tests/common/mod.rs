//! An in-process `replicad` on 127.0.0.1 with a temporary target and state directory;
//! the built binaries in [`daemon`].

#![allow(dead_code)] // each test file uses a different part

pub mod daemon;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use replicad::config::Settings;
use replicad::keys::KeyFiles;
use replicad::protection::ResyncProtection;
use replicad::sender::client::Peer;
use replicad::sender::workload::Workload;
use replicad::server::Server;
use replicad::state::ReplicaState;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bound on any single test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);
pub const VOLUME: &str = "testvol";
pub const VOLUME_SIZE: u64 = 4 << 20;

/// Runs a test body on a multi-threaded runtime under [`TEST_TIMEOUT`].
pub fn run<F: Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(TEST_TIMEOUT, test)
                .await
                .expect("test timed out")
        })
}

/// A directory with an all-zero target of `target_len` bytes and an empty state.
pub fn fresh_dir(target_len: u64) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("target.img")).unwrap();
    file.set_len(target_len).unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    dir
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: TempDir,
    shutdown: CancellationToken,
    task: JoinHandle<ReplicaState>,
}

impl TestServer {
    /// A server on a fresh all-zero target of `target_len` bytes.
    pub async fn start(target_len: u64) -> Self {
        Self::start_in(fresh_dir(target_len)).await
    }

    /// A server on the target and state already in `dir`.
    pub async fn start_in(dir: TempDir) -> Self {
        Self::start_protecting(dir, ResyncProtection::default()).await
    }

    /// [`Self::start_in`], protecting the replica before a resync with `protection`.
    pub async fn start_protecting(dir: TempDir, protection: ResyncProtection) -> Self {
        Self::start_with(dir, protection, None).await
    }

    /// [`Self::start_in`], letting in only senders that prove one of `keys`.
    pub async fn start_keyed(dir: TempDir, keys: KeyFiles) -> Self {
        Self::start_with(dir, ResyncProtection::default(), Some(keys)).await
    }

    async fn start_with(
        dir: TempDir,
        protection: ResyncProtection,
        keys: Option<KeyFiles>,
    ) -> Self {
        let settings = Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            target: dir.path().join("target.img"),
            state_dir: dir.path().join("state"),
            metrics_listen: None,
            protection,
            keys,
        };
        let server = Server::bind(&settings).await.unwrap();
        let addr = server.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Self {
            addr,
            dir,
            shutdown,
            task,
        }
    }

    /// Shuts down as on SIGTERM; returns the directory and the final state.
    pub async fn stop(self) -> (TempDir, ReplicaState) {
        self.shutdown.cancel();
        let state = self.task.await.unwrap();
        (self.dir, state)
    }

    pub fn target_path(&self) -> PathBuf {
        self.dir.path().join("target.img")
    }

    pub fn target(&self) -> Vec<u8> {
        std::fs::read(self.target_path()).unwrap()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The state as persisted now.
    pub fn persisted(&self) -> ReplicaState {
        replicad::state::inspect(&self.state_dir())
            .unwrap()
            .unwrap()
            .state
    }

    pub fn peer(&self) -> Peer {
        Peer {
            timeout: Duration::from_secs(20),
            ..Peer::new(self.addr, VOLUME, VOLUME_SIZE)
        }
    }
}

/// Streams `count` entries of `seed` and updates `image` to match; returns the report.
pub async fn stream(
    peer: &Peer,
    seed: u64,
    count: u64,
    image: &mut [u8],
) -> replicad::sender::client::StreamReport {
    let workload = Workload::new(seed, count, peer.volume_size).unwrap();
    let ops = workload.inspect(|op| op.apply_to(image));
    peer.stream(ops).await.unwrap()
}

/// The target starts with `image` (compared without printing MiBs).
pub fn assert_image(target: &[u8], image: &[u8]) {
    assert!(target.len() >= image.len(), "target smaller than the image");
    let differing = target[..image.len()]
        .iter()
        .zip(image)
        .position(|(a, b)| a != b);
    assert_eq!(differing, None, "target differs from the expected image");
}
