// SPDX-License-Identifier: GPL-2.0

//! Kernel TCP connections: a network namespace reference and a connected socket.

use core::net::SocketAddr;

use kernel::prelude::*;

use crate::auth::TrafficKey;
use crate::bindings;
use crate::entry::Entry;

/// A counted reference to the network namespace a device was created in; links are
/// made there, so `ip netns exec prod dmsetup create ...` replicates from `prod`.
pub(crate) struct NetNamespace(*mut bindings::net);

// SAFETY: a `struct net` reference may be used and dropped from any thread.
unsafe impl Send for NetNamespace {}
// SAFETY: shared access only passes the pointer to socket creation, which is thread-safe.
unsafe impl Sync for NetNamespace {}

impl NetNamespace {
    /// The calling process's namespace.
    pub(crate) fn current() -> Self {
        // SAFETY: process context (a table load); takes a reference released on drop.
        Self(unsafe { bindings::arepl_current_net_get() })
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `current` is released exactly once.
        unsafe { bindings::arepl_net_put(self.0) };
    }
}

/// A frame's body, by how it may be sent.
pub(crate) enum Body<'a> {
    /// Bytes copied into the socket: anything, a stack buffer or one reused later.
    Copied(&'a [u8]),
    /// A queued entry's payload (none: no body), its pages handed to TCP without a
    /// copy.
    Payload(&'a Entry),
}

/// A connected kernel TCP socket, released on drop.
pub(crate) struct TcpStream {
    sock: *mut bindings::socket,
}

// SAFETY: kernel sockets may be used from any thread; sends and receives on one socket
// from different threads (one sender, one receiver) are serialised by the socket lock.
unsafe impl Send for TcpStream {}
// SAFETY: as above; `shutdown` may race with I/O by design, to interrupt it.
unsafe impl Sync for TcpStream {}

impl TcpStream {
    /// Connects to `addr` in `net` within `connect_timeout_ms`. A send then waits at most
    /// `send_wait_ms` for buffer space before it asks its caller whether to go on.
    pub(crate) fn connect(
        net: &NetNamespace,
        addr: SocketAddr,
        connect_timeout_ms: u32,
        send_wait_ms: u32,
    ) -> Result<Self> {
        let (ipv6, bytes): (bool, [u8; 16]) = match addr {
            SocketAddr::V4(v4) => {
                let mut bytes = [0; 16];
                bytes[..4].copy_from_slice(&v4.ip().octets());
                (false, bytes)
            }
            SocketAddr::V6(v6) => (true, v6.ip().octets()),
        };
        let mut sock = core::ptr::null_mut();
        // SAFETY: `net` holds a namespace reference, `bytes` holds the address in network
        // order and `sock` is a valid out pointer.
        let ret = unsafe {
            bindings::arepl_tcp_connect(
                net.0,
                ipv6,
                bytes.as_ptr(),
                addr.port(),
                connect_timeout_ms,
                send_wait_ms,
                &mut sock,
            )
        };
        kernel::error::to_result(ret)?;
        Ok(Self { sock })
    }

    /// Sends `head` followed by `body`, completely; `more`: another frame follows at
    /// once. Each time the send buffer stays full for the send wait, `stalled`
    /// decides: `Ok` waits on, an error gives up with it.
    pub(crate) fn send(
        &self,
        head: &[u8],
        body: Body<'_>,
        more: bool,
        mut stalled: impl FnMut() -> Result,
    ) -> Result {
        let (bytes, pages, len): (&[u8], _, _) = match body {
            Body::Copied(bytes) => (bytes, core::ptr::null(), bytes.len()),
            Body::Payload(entry) => match entry.payload() {
                Some(payload) => (&[], payload.pages(), payload.len()),
                None => (&[], core::ptr::null(), 0),
            },
        };
        let mut done = 0usize;
        loop {
            // SAFETY: `head`, `bytes` and the entry's payload stay borrowed for the
            // whole call; the body is `len` bytes of `bytes` or of the payload's pages
            // (`pages`, non-null only for a payload); `done` is a valid out pointer that
            // never exceeds the frame's length (the helper only adds what it sent); the
            // socket is connected. TCP may hold references to the payload's pages after
            // the call: a payload is never written once built, and dropping it only
            // puts the payload's own page references.
            let ret = unsafe {
                bindings::arepl_sock_send(
                    self.sock,
                    head.as_ptr().cast(),
                    head.len(),
                    bytes.as_ptr().cast(),
                    pages,
                    len,
                    more,
                    &mut done,
                )
            };
            match kernel::error::to_result(ret) {
                Err(err) if err == EAGAIN => stalled()?,
                sent => return sent,
            }
        }
    }

    /// Bytes the peer's TCP acknowledged on this connection so far: a counter that moves
    /// while the peer host takes data in, however slowly its application reads.
    pub(crate) fn transport_acked(&self) -> u64 {
        // SAFETY: the socket lives until drop; the helper only reads a counter.
        unsafe { bindings::arepl_sock_transport_acked(self.sock) }
    }

    /// Bounds each receive to `ms` milliseconds (`None`: it waits until data or
    /// shutdown); a receive that runs out fails with `ETIMEDOUT`.
    pub(crate) fn set_recv_timeout(&self, ms: Option<u32>) {
        // SAFETY: the socket lives until drop; the helper only stores the timeout.
        unsafe { bindings::arepl_sock_set_recv_timeout(self.sock, ms.unwrap_or(0)) };
    }

    /// Fills `buf` completely from the stream.
    pub(crate) fn recv_exact(&self, buf: &mut [u8]) -> Result {
        // SAFETY: `buf` is exclusively borrowed for the whole call.
        let ret = unsafe {
            bindings::arepl_sock_recv_exact(self.sock, buf.as_mut_ptr().cast(), buf.len())
        };
        kernel::error::to_result(ret)
    }

    /// Hands the connection to the kernel's TLS record layer: what is sent from now on
    /// is sealed under `send`, what is received opened under `receive`.
    pub(crate) fn enable_tls(&self, send: &TrafficKey, receive: &TrafficKey) -> Result {
        // SAFETY: the socket is connected and lives until drop; each pointer is to an
        // array of the length the helper reads (16-byte key, 4-byte salt, 8-byte IV),
        // borrowed for the call.
        let ret = unsafe {
            bindings::arepl_sock_enable_tls(
                self.sock,
                send.key.as_ptr(),
                send.salt.as_ptr(),
                send.iv.as_ptr(),
                receive.key.as_ptr(),
                receive.salt.as_ptr(),
                receive.iv.as_ptr(),
            )
        };
        kernel::error::to_result(ret)
    }

    /// Shuts the connection down both ways, waking any thread blocked on it.
    pub(crate) fn shutdown(&self) {
        // SAFETY: the socket lives until drop; shutdown is safe concurrently with I/O.
        unsafe { bindings::arepl_sock_shutdown(self.sock) };
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        // SAFETY: no other reference to the socket remains once the stream is dropped.
        unsafe { bindings::arepl_sock_release(self.sock) };
    }
}
