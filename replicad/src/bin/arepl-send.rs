//! `arepl-send`: a test sender for `replicad`. Streams a deterministic write load (also
//! resending entries the server holds, with pings in between, or as a resync), pings,
//! or sends one kind of malformed input and checks that the server drops the connection.
//!
//! With `--key-file` it proves that key before `Hello` and encrypts the stream (unless
//! `--no-encrypt`); `replay-check` replays a recorded authentication.
//!
//! It speaks protocol version 6 without a history of its own: its `Hello` names none,
//! and its `Begin` continues the replica's history (a new random one on a replica
//! without), or with `stream --resync` begins a resync under its next generation.
//! `stream --verify-chunk` ends a stream with online verify checks of chunks of the
//! image it expects.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use arepl_core::verify::ChunkCheck;
use arepl_core::wire::{MAX_WRITE_PAYLOAD, SECTOR_SIZE};
use clap::{Parser, Subcommand};
use replicad::keys::read_key_file;
use replicad::sender::client::{BeginMode, Peer, StreamOptions};
use replicad::sender::malformed::{self, MalformedKind};
use replicad::sender::workload::{Op, Workload};
use sha2::{Digest, Sha256};

#[derive(Debug, Parser)]
#[command(name = "arepl-send", version, about = "Test sender for replicad")]
struct Cli {
    /// replicad's address.
    #[arg(long, value_name = "ADDR:PORT")]
    connect: SocketAddr,
    /// Volume name sent in Hello.
    #[arg(long, value_name = "NAME")]
    volume: String,
    /// Volume size in bytes sent in Hello (a multiple of 512).
    #[arg(long, value_name = "BYTES")]
    volume_size: u64,
    /// Oldest sequence held, sent in Hello (0: first handshake).
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    oldest_seq: u64,
    /// Seconds to wait for any answer from the server.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,
    /// Prove the key in this file (64 hex digits) before Hello.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// With a key: leave the stream unencrypted.
    #[arg(long, requires = "key_file")]
    no_encrypt: bool,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Send a deterministic pseudo-random stream and wait until all of it is acknowledged.
    Stream {
        /// Seed of the stream.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of entries (writes of 4 KiB to 1 MiB, discards, write-zeroes, and a
        /// flush every 16th).
        #[arg(long)]
        count: u64,
        /// Write the expected volume image here.
        #[arg(long, value_name = "PATH")]
        expect_image: Option<PathBuf>,
        /// The volume's contents before the stream (default: all zeroes).
        #[arg(long, value_name = "PATH")]
        base_image: Option<PathBuf>,
        /// Number the stream's first entry SEQ instead of the one after the server's
        /// durable sequence. With an earlier SEQ the entries the server already holds are
        /// resent, as by a sender that resends its log after a reconnect; the server skips
        /// them. Rerunning an interrupted stream with `--first-seq 1` completes it.
        #[arg(long, value_name = "SEQ")]
        first_seq: Option<u64>,
        /// Send a Ping after every N entries.
        #[arg(long, value_name = "N")]
        ping_every: Option<u64>,
        /// Send a Digest after every N new entries, so the server checks what it applied.
        #[arg(long, value_name = "N", default_value_t = 64)]
        digest_every: u64,
        /// Send the stream as a resync: Begin with the resync flag (the whole volume),
        /// under the replica's next history generation, and ResyncDone after its last
        /// entry.
        #[arg(long)]
        resync: bool,
        /// After the stream's entries, send a Verify entry for LEN bytes at byte OFFSET
        /// (whole sectors, LEN at most 8 MiB), hashed from the expected image; print the
        /// chunks the server reports different. Repeatable.
        #[arg(long, value_name = "OFFSET:LEN", value_parser = parse_chunk)]
        verify_chunk: Vec<(u64, u32)>,
    },
    /// Send Pings one at a time; exit 0 only if each is answered by an Ack of the
    /// server's durable sequence.
    Ping {
        /// Number of pings.
        #[arg(long, default_value_t = 3)]
        count: u64,
    },
    /// Authenticate with the key, then replay the recorded Greeting and Proof on a new
    /// connection; exit 0 only if the server refuses the replay.
    ReplayCheck,
    /// Send one kind of bad input; exit 0 only if the server drops the connection without
    /// acknowledging it.
    Malformed {
        /// Which bad input.
        #[arg(value_enum)]
        kind: MalformedKind,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let key = match cli.key_file.as_deref().map(read_key_file).transpose() {
        Ok(key) => key,
        Err(err) => {
            eprintln!("arepl-send: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut peer = Peer {
        oldest_seq: cli.oldest_seq,
        timeout: Duration::from_secs(cli.timeout),
        encrypt: key.is_some() && !cli.no_encrypt,
        key,
        ..Peer::new(cli.connect, &cli.volume, cli.volume_size)
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("arepl-send: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.mode {
            Mode::Stream {
                seed,
                count,
                expect_image,
                base_image,
                first_seq,
                ping_every,
                digest_every,
                resync,
                verify_chunk,
            } => {
                if resync {
                    peer.begin = BeginMode::Resync;
                }
                let options = StreamOptions {
                    first_seq,
                    ping_every,
                    digest_every: Some(digest_every),
                };
                let images = Images {
                    expect: expect_image,
                    base: base_image,
                };
                stream(&peer, seed, count, images, &verify_chunk, options).await
            }
            Mode::Ping { count } => {
                let (durable_seq, longest) = peer.ping(count).await?;
                println!(
                    "ping: {count} answered with Ack {durable_seq}, longest round trip {longest:?}"
                );
                Ok(true)
            }
            Mode::ReplayCheck => replay_check(&peer).await,
            Mode::Malformed { kind } => {
                let outcome = malformed::run(&peer, kind).await?;
                let verdict = if outcome.dropped { "ok" } else { "FAILED" };
                println!("malformed {kind:?}: {verdict}: {}", outcome.detail);
                Ok(outcome.dropped)
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("arepl-send: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Records a genuine authentication, then replays it.
async fn replay_check(peer: &Peer) -> anyhow::Result<bool> {
    let (conn, recording) = peer.connect_recorded().await?;
    drop(conn);
    let recording = recording.context("replay-check needs --key-file")?;
    match peer.replay(&recording).await? {
        None => {
            println!("replay-check: ok: the replayed authentication was refused");
            Ok(true)
        }
        Some(frame) => {
            println!(
                "replay-check: FAILED: the server answered the replay with {:?}",
                frame.header.kind
            );
            Ok(false)
        }
    }
}

/// `--verify-chunk OFFSET:LEN`.
fn parse_chunk(text: &str) -> Result<(u64, u32), String> {
    let (offset, len) = text
        .split_once(':')
        .ok_or_else(|| "expected OFFSET:LEN".to_string())?;
    let offset: u64 = offset.parse().map_err(|err| format!("offset: {err}"))?;
    let len: u32 = len.parse().map_err(|err| format!("length: {err}"))?;
    let sector = u64::from(SECTOR_SIZE);
    if !offset.is_multiple_of(sector)
        || !len.is_multiple_of(SECTOR_SIZE)
        || len == 0
        || len > MAX_WRITE_PAYLOAD
    {
        return Err(format!(
            "a chunk is whole sectors at a sector boundary, 512 to {MAX_WRITE_PAYLOAD} bytes"
        ));
    }
    Ok((offset, len))
}

/// Where the expected image goes and what the volume held before.
struct Images {
    expect: Option<PathBuf>,
    base: Option<PathBuf>,
}

async fn stream(
    peer: &Peer,
    seed: u64,
    count: u64,
    images: Images,
    verify_chunks: &[(u64, u32)],
    options: StreamOptions,
) -> anyhow::Result<bool> {
    let Images {
        expect: expect_image,
        base: base_image,
    } = images;
    let workload = Workload::new(seed, count, peer.volume_size)
        .context("--volume-size must be a positive multiple of 512")?;
    for &(offset, len) in verify_chunks {
        anyhow::ensure!(
            offset + u64::from(len) <= peer.volume_size,
            "--verify-chunk {offset}:{len} ends past the end of the volume"
        );
    }
    let image = match &base_image {
        Some(path) => {
            let image = std::fs::read(path)
                .with_context(|| format!("reading base image {}", path.display()))?;
            anyhow::ensure!(
                image.len() as u64 == peer.volume_size,
                "base image {} is {} bytes, volume is {}",
                path.display(),
                image.len(),
                peer.volume_size
            );
            image
        }
        None => vec![0u8; peer.volume_size as usize],
    };
    let image = RefCell::new(image);
    let ops = workload.inspect(|op: &Op| op.apply_to(&mut image.borrow_mut()));
    // Hashed once every entry before them is applied to the image, as the server does.
    let verifies = verify_chunks.iter().map(|&(offset, len)| {
        let at = offset as usize;
        Op::Verify {
            offset,
            check: ChunkCheck::of(&image.borrow()[at..at + len as usize]),
        }
    });
    let report = peer.stream_with(ops.chain(verifies), options).await?;
    let image = image.into_inner();
    if let Some((history, resync)) = report.begun {
        let how = if resync { "resync under" } else { "continuing" };
        println!("begin: {how} history {history}");
    }
    println!(
        "stream: welcome seq {}, sent {} entries ({} already held by the server) up to seq {}, \
         {} pings, {} acks, final ack {}",
        report.welcome_seq,
        report.sent,
        report.resent,
        report.last_seq,
        report.pings,
        report.acks,
        report.final_ack
    );
    if report.verifies > 0 {
        let ranges: Vec<String> = report
            .mismatches
            .iter()
            .map(|m| format!("bytes {}..{} (seq {})", m.offset, m.end(), m.seq))
            .collect();
        println!(
            "verify: {} chunk checks sent, {} reported different{}{}",
            report.verifies,
            report.mismatches.len(),
            if ranges.is_empty() { "" } else { ": " },
            ranges.join(", ")
        );
    }
    println!("expected image sha256: {:x}", Sha256::digest(&image));
    if let Some(path) = expect_image {
        std::fs::write(&path, &image)
            .with_context(|| format!("writing expected image {}", path.display()))?;
    }
    Ok(report.final_ack == report.last_seq)
}
