// SPDX-License-Identifier: GPL-2.0

//! The sender thread: picks a link, connects, performs the handshake, and streams the
//! FIFO in sequence order; plus the receiver thread of each connection, which applies
//! acknowledgements.
//!
//! Link policy (passive mode): one link carries the stream. A connect failure, a send or
//! receive error, or a silent link (no frame from the receiver for
//! [`SILENCE_LIMIT_MS`] although a `Ping` goes out every [`PING_INTERVAL_MS`]) ends the
//! session, and the next attempt uses the other link. While the backup carries the
//! stream, the primary is probed every [`FAILBACK_PROBE_MS`]; once it accepts a
//! connection the stream returns to it. Failed attempts back off exponentially from
//! [`BACKOFF_MIN_MS`] to [`BACKOFF_MAX_MS`].

use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::time::{msecs_to_jiffies, Ktime};

use crate::kthread::{self, KThread};
use crate::net::TcpStream;
use crate::replication::Replication;
use crate::status::LinkState;
use crate::wire::{FrameKind, Header, HEADER_LEN, MAX_REASON_LEN};

/// Connect and send timeout.
const IO_TIMEOUT_MS: u32 = 5_000;
/// Entries sent but not yet acknowledged, at most.
const SEND_WINDOW: usize = 4096;
/// Reconnect backoff bounds.
const BACKOFF_MIN_MS: u32 = 100;
const BACKOFF_MAX_MS: u32 = 5_000;
/// A `Ping` goes out this often.
const PING_INTERVAL_MS: i64 = 1_000;
/// A link that sends nothing back for this long is dead.
const SILENCE_LIMIT_MS: i64 = 5_000;
/// While on the backup link, the primary is tried this often.
const FAILBACK_PROBE_MS: i64 = 10_000;
/// Connect timeout of a failback probe (it stalls sending meanwhile).
const FAILBACK_PROBE_TIMEOUT_MS: u32 = 1_000;

const PRIMARY: usize = 0;
const BACKUP: usize = 1;

/// Why a session ended.
enum SessionEnd {
    /// The link failed.
    Failed(Error),
    /// The thread is stopping, or replication was paused.
    Stopped,
    /// `dmsetup message ... switch-link`.
    SwitchRequested,
    /// The primary link answers again while the backup carries the stream.
    PrimaryBack,
}

/// One live connection, shared by the sender and its receiver thread.
struct Session {
    repl: Arc<Replication>,
    stream: TcpStream,
    /// Wire sequence = base + local sequence for this device.
    wire_base: u64,
    /// Set by whichever side sees the connection fail.
    broken: AtomicBool,
    /// When the receiver last sent a frame (ms, monotonic).
    last_heard_ms: AtomicI64,
}

impl Session {
    fn fail(&self) {
        if !self.broken.swap(true, Ordering::AcqRel) {
            self.stream.shutdown();
        }
        self.repl.work.notify_all();
    }
}

fn now_ms() -> i64 {
    Ktime::ktime_get().to_ms()
}

fn protocol_error() -> Error {
    Error::from_errno(-(kernel::bindings::EPROTO as i32))
}

fn refused() -> Error {
    Error::from_errno(-(kernel::bindings::ECONNREFUSED as i32))
}

fn timed_out() -> Error {
    Error::from_errno(-(kernel::bindings::ETIMEDOUT as i32))
}

/// Body of the per-device sender thread.
pub(crate) fn sender_main(repl: &Arc<Replication>) {
    let mut link = PRIMARY;
    let mut backoff_ms = BACKOFF_MIN_MS;
    while !kthread::should_stop() {
        if repl.queue.lock().paused {
            pause(repl, 1_000);
            continue;
        }
        let Some(addr) = repl.links[link] else {
            link = PRIMARY;
            continue;
        };
        repl.queue.lock().links[link].state = LinkState::Connecting;
        let end = match connect(repl, link, addr) {
            Ok(session) => {
                let end = run_session(&session, link);
                session.fail();
                end
            }
            Err(err) => SessionEnd::Failed(err),
        };
        let mut queue = repl.queue.lock();
        queue.active_link = None;
        match end {
            SessionEnd::Failed(err) => {
                queue.link_failed(link, err);
                drop(queue);
                pr_warn!(
                    "{} link {} failed (error {})\n",
                    link_name(link),
                    addr,
                    err.to_errno()
                );
                if repl.links[BACKUP].is_some() {
                    link ^= 1;
                }
                pause(repl, backoff_ms);
                backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
                continue;
            }
            SessionEnd::SwitchRequested => {
                queue.links[link].state = LinkState::Down;
                queue.switch_requested = false;
                link ^= 1;
                pr_info!("switching to the {} link on request\n", link_name(link));
            }
            SessionEnd::PrimaryBack => {
                queue.links[link].state = LinkState::Down;
                link = PRIMARY;
                pr_info!("primary link answers again; returning to it\n");
            }
            SessionEnd::Stopped => queue.links[link].state = LinkState::Down,
        }
        backoff_ms = BACKOFF_MIN_MS;
    }
}

fn link_name(link: usize) -> &'static str {
    if link == PRIMARY {
        "primary"
    } else {
        "backup"
    }
}

/// Waits `ms` milliseconds, or less if the thread is asked to stop or resumed.
fn pause(repl: &Replication, ms: u32) {
    let deadline = now_ms() + i64::from(ms);
    let mut queue = repl.queue.lock();
    loop {
        let left = deadline - now_ms();
        if left <= 0 || kthread::should_stop() {
            return;
        }
        let _ = repl
            .work
            .wait_interruptible_timeout(&mut queue, msecs_to_jiffies(left as u32));
    }
}

/// Connects and performs the handshake; on success the FIFO is rewound to resend
/// everything after the receiver's durable sequence.
fn connect(repl: &Arc<Replication>, link: usize, addr: SocketAddr) -> Result<Arc<Session>> {
    let stream = TcpStream::connect(&repl.net, addr, IO_TIMEOUT_MS)?;

    let oldest_wire = {
        let queue = repl.queue.lock();
        queue.wire_base.map_or(0, |base| base + queue.fifo.head_seq())
    };
    let name = repl.volume.as_str().as_bytes();
    let hello = Header::hello(oldest_wire, repl.volume_size, name);
    stream.send(&hello.encode(), name)?;

    let reply = recv_header(&stream)?;
    match reply.kind {
        FrameKind::Welcome => {}
        FrameKind::Refuse => {
            let mut reason = [0u8; MAX_REASON_LEN as usize];
            let reason = &mut reason[..reply.length as usize];
            stream.recv_exact(reason)?;
            pr_err!(
                "replicad at {} refused volume {}: {}\n",
                addr,
                repl.volume,
                core::str::from_utf8(reason).unwrap_or("(reason not UTF-8)")
            );
            return Err(refused());
        }
        _ => {
            pr_err!("replicad at {} answered the handshake with {:?}\n", addr, reply.kind);
            return Err(protocol_error());
        }
    }
    if reply.offset != repl.volume_size {
        pr_err!(
            "replicad at {} has volume size {} bytes, this device {}\n",
            addr,
            reply.offset,
            repl.volume_size
        );
        return Err(protocol_error());
    }

    let durable_wire = reply.seq;
    let wire_base = {
        let mut queue = repl.queue.lock();
        let base = *queue.wire_base.get_or_insert(durable_wire);
        let newest_wire = base + queue.fifo.next_seq() - 1;
        if durable_wire < base + queue.fifo.head_seq() - 1 || durable_wire > newest_wire {
            drop(queue);
            pr_err!(
                "replicad at {} is durable at sequence {}, outside what this device holds\n",
                addr,
                durable_wire
            );
            return Err(protocol_error());
        }
        queue.fifo.rewind();
        queue.active_link = Some(link);
        queue.links[link].state = LinkState::Connected;
        queue.links[link].connects += 1;
        base
    };
    repl.acknowledge(durable_wire - wire_base);
    pr_info!(
        "connected to {} ({} link) for volume {}, resuming after sequence {}\n",
        addr,
        link_name(link),
        repl.volume,
        durable_wire
    );
    Ok(Arc::new(
        Session {
            repl: repl.clone(),
            stream,
            wire_base,
            broken: AtomicBool::new(false),
            last_heard_ms: AtomicI64::new(now_ms()),
        },
        GFP_KERNEL,
    )?)
}

fn recv_header(stream: &TcpStream) -> Result<Header> {
    let mut bytes = [0u8; HEADER_LEN];
    stream.recv_exact(&mut bytes)?;
    Header::decode(&bytes).map_err(|err| {
        pr_err!("bad frame from replicad: {}\n", err);
        protocol_error()
    })
}

/// What the sender loop does next.
enum Step {
    Send(u64, Arc<crate::entry::Entry>),
    Idle,
    End(SessionEnd),
}

/// Streams entries until the connection breaks, the thread stops, or the link changes.
fn run_session(session: &Arc<Session>, link: usize) -> SessionEnd {
    let receiver = match KThread::spawn(
        kernel::c_str!("arepl_ack"),
        &session.repl.thread_name,
        session.clone(),
        receiver_main,
    ) {
        Ok(receiver) => receiver,
        Err(err) => return SessionEnd::Failed(err),
    };
    let repl = &session.repl;
    let mut next_ping_ms = now_ms() + PING_INTERVAL_MS;
    let mut next_probe_ms = now_ms() + FAILBACK_PROBE_MS;
    let end = loop {
        if kthread::should_stop() {
            break SessionEnd::Stopped;
        }
        if session.broken.load(Ordering::Acquire) {
            break SessionEnd::Failed(Error::from_errno(-(kernel::bindings::ECONNRESET as i32)));
        }
        let now = now_ms();
        if now - session.last_heard_ms.load(Ordering::Acquire) > SILENCE_LIMIT_MS {
            break SessionEnd::Failed(timed_out());
        }
        if now >= next_ping_ms {
            next_ping_ms = now + PING_INTERVAL_MS;
            if let Err(err) = session.stream.send(&Header::ping().encode(), &[]) {
                break SessionEnd::Failed(err);
            }
        }
        if link == BACKUP && now >= next_probe_ms {
            next_probe_ms = now + FAILBACK_PROBE_MS;
            if let Some(primary) = repl.links[PRIMARY] {
                if TcpStream::connect(&repl.net, primary, FAILBACK_PROBE_TIMEOUT_MS).is_ok() {
                    break SessionEnd::PrimaryBack;
                }
            }
        }

        let step = {
            let mut queue = repl.queue.lock();
            if queue.paused {
                Step::End(SessionEnd::Stopped)
            } else if queue.switch_requested {
                Step::End(SessionEnd::SwitchRequested)
            } else if queue.fifo.in_flight() < SEND_WINDOW {
                match queue.fifo.next_to_send() {
                    Some((seq, q)) => Step::Send(seq, q.entry.clone()),
                    None => Step::Idle,
                }
            } else {
                Step::Idle
            }
        };
        match step {
            Step::End(end) => break end,
            Step::Send(seq, entry) => {
                let header = entry.header(session.wire_base + seq);
                if let Err(err) = session.stream.send(&header.encode(), entry.payload()) {
                    break SessionEnd::Failed(err);
                }
            }
            Step::Idle => {
                let mut queue = repl.queue.lock();
                let nothing_to_send = queue.fifo.in_flight() == queue.fifo.len()
                    || queue.fifo.in_flight() >= SEND_WINDOW;
                if nothing_to_send
                    && !queue.paused
                    && !queue.switch_requested
                    && !session.broken.load(Ordering::Acquire)
                {
                    let _ = repl
                        .work
                        .wait_interruptible_timeout(&mut queue, msecs_to_jiffies(100));
                }
            }
        }
    };
    session.fail();
    drop(receiver);
    end
}

/// Body of a connection's receiver thread: applies cumulative acknowledgements.
fn receiver_main(session: &Arc<Session>) {
    while !kthread::should_stop() && !session.broken.load(Ordering::Acquire) {
        let header = match recv_header(&session.stream) {
            Ok(header) => header,
            Err(_) => break,
        };
        session.last_heard_ms.store(now_ms(), Ordering::Release);
        if header.kind != FrameKind::Ack {
            pr_err!("unexpected {:?} frame from replicad\n", header.kind);
            break;
        }
        let repl = &session.repl;
        let sent_local = repl.queue.lock().fifo.last_sent_seq();
        match header.seq.checked_sub(session.wire_base) {
            Some(local) if local <= sent_local => repl.acknowledge(local),
            _ => {
                pr_err!(
                    "replicad acknowledged sequence {} which was never sent\n",
                    header.seq
                );
                break;
            }
        }
    }
    session.fail();
}
