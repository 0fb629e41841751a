// SPDX-License-Identifier: GPL-2.0

//! The sender thread: connects, performs the handshake, and streams the FIFO in sequence
//! order; plus the receiver thread of each connection, which applies acknowledgements.

use core::sync::atomic::{AtomicBool, Ordering};

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

/// The receiver refused the session (its reason is logged).
fn refused() -> Error {
    Error::from_errno(-(kernel::bindings::ECONNREFUSED as i32))
}

/// The receiver broke the protocol (the violation is logged).
fn protocol_error() -> Error {
    Error::from_errno(-(kernel::bindings::EPROTO as i32))
}

/// One live connection, shared by the sender and its receiver thread.
struct Session {
    repl: Arc<Replication>,
    stream: TcpStream,
    /// Wire sequence = base + local sequence for this device.
    wire_base: u64,
    /// Set by whichever side sees the connection fail.
    broken: AtomicBool,
}

impl Session {
    fn fail(&self) {
        if !self.broken.swap(true, Ordering::AcqRel) {
            self.stream.shutdown();
        }
        self.repl.work.notify_all();
    }
}

/// Body of the per-device sender thread.
pub(crate) fn sender_main(repl: &Arc<Replication>) {
    let mut backoff_ms = BACKOFF_MIN_MS;
    let mut link = 0;
    while !kthread::should_stop() {
        let Some(addr) = repl.links[link].or(repl.links[0]) else {
            return;
        };
        set_link(repl, LinkState::Connecting);
        match connect(repl, addr) {
            Ok(session) => {
                backoff_ms = BACKOFF_MIN_MS;
                if let Err(err) = run_session(&session) {
                    pr_warn!("link to {} lost (error {})\n", addr, err.to_errno());
                }
                session.fail();
                note_link_error(repl);
            }
            Err(err) => {
                note_link_error(repl);
                pr_debug!("connect to {} failed (error {})\n", addr, err.to_errno());
                // Alternate between the links while one is unreachable.
                if repl.links[1].is_some() {
                    link ^= 1;
                }
            }
        }
        set_link(repl, LinkState::Down);
        pause(repl, backoff_ms);
        backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
    }
}

/// Waits `ms` milliseconds, or less if the thread is asked to stop.
fn pause(repl: &Replication, ms: u32) {
    let deadline = Ktime::ktime_get().to_ms() + i64::from(ms);
    let mut queue = repl.queue.lock();
    loop {
        let left = deadline - Ktime::ktime_get().to_ms();
        if left <= 0 || kthread::should_stop() {
            return;
        }
        let _ = repl
            .work
            .wait_interruptible_timeout(&mut queue, msecs_to_jiffies(left as u32));
    }
}

fn set_link(repl: &Replication, state: LinkState) {
    repl.queue.lock().link = state;
}

fn note_link_error(repl: &Replication) {
    repl.queue.lock().link_errors += 1;
}

/// Connects and performs the handshake; on success the FIFO is rewound to resend
/// everything after the receiver's durable sequence.
fn connect(repl: &Arc<Replication>, addr: core::net::SocketAddr) -> Result<Arc<Session>> {
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
        queue.link = LinkState::Connected;
        queue.connects += 1;
        base
    };
    repl.acknowledge(durable_wire - wire_base);
    pr_info!(
        "connected to {} for volume {}, resuming after sequence {}\n",
        addr,
        repl.volume,
        durable_wire
    );
    Ok(Arc::new(
        Session {
            repl: repl.clone(),
            stream,
            wire_base,
            broken: AtomicBool::new(false),
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

/// Streams entries until the connection breaks or the thread is asked to stop.
fn run_session(session: &Arc<Session>) -> Result {
    let receiver = KThread::spawn(
        kernel::c_str!("arepl_ack"),
        kernel::c_str!("rx"),
        session.clone(),
        receiver_main,
    )?;
    let repl = &session.repl;
    let result = loop {
        if kthread::should_stop() || session.broken.load(Ordering::Acquire) {
            break Ok(());
        }
        let next = {
            let mut queue = repl.queue.lock();
            if queue.fifo.in_flight() < SEND_WINDOW {
                queue.fifo.next_to_send().map(|(seq, q)| (seq, q.entry.clone()))
            } else {
                None
            }
        };
        match next {
            Some((seq, entry)) => {
                let header = entry.header(session.wire_base + seq);
                if let Err(err) = session.stream.send(&header.encode(), entry.payload()) {
                    break Err(err);
                }
            }
            None => {
                let mut queue = repl.queue.lock();
                let idle = queue.fifo.in_flight() == queue.fifo.len()
                    || queue.fifo.in_flight() >= SEND_WINDOW;
                if idle && !session.broken.load(Ordering::Acquire) {
                    let _ = repl
                        .work
                        .wait_interruptible_timeout(&mut queue, msecs_to_jiffies(100));
                }
            }
        }
    };
    session.fail();
    drop(receiver);
    result
}

/// Body of a connection's receiver thread: applies cumulative acknowledgements.
fn receiver_main(session: &Arc<Session>) {
    while !kthread::should_stop() && !session.broken.load(Ordering::Acquire) {
        let header = match recv_header(&session.stream) {
            Ok(header) => header,
            Err(_) => break,
        };
        if header.kind != FrameKind::Ack {
            pr_err!("unexpected {:?} frame from replicad\n", header.kind);
            break;
        }
        let repl = &session.repl;
        let sent_local = repl.queue.lock().fifo.last_sent_seq();
        let acked_local = header.seq.checked_sub(session.wire_base);
        match acked_local {
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
