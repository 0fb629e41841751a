// SPDX-License-Identifier: GPL-2.0

//! The sender's side of the opening before `Hello` when the device has a key
//! ([`crate::auth`]): `Greeting`, the receiver's `Challenge` checked, this side's
//! `Proof`, then the kernel's TLS layer on the socket when the link is encrypted.
//!
//! Nothing of the volume's data is sent before the receiver has proven the key: a
//! listener that does not hold it gets the volume's name, size and a nonce, no more.

use core::net::SocketAddr;

use kernel::prelude::*;

use crate::auth::{self, split_challenge, GreetingPayload, Psk, Role, Transcript, CHALLENGE_LEN};
use crate::keys::{self, KernelHmac};
use crate::net::{Body, TcpStream};
use crate::replication::Replication;
use crate::sender::{protocol_error, recv_header, recv_refusal, refused, timed_out};
use crate::wire::{FrameKind, Header, MAX_REASON_LEN};

/// The receiver failed to prove the key.
fn impostor() -> Error {
    EACCES
}

/// Proves `psk` to the receiver at `addr` and checks its proof; with `encrypt`, the
/// stream is TLS from here on.
pub(crate) fn authenticate(
    repl: &Replication,
    stream: &TcpStream,
    addr: SocketAddr,
    psk: &Psk,
    encrypt: bool,
) -> Result {
    let hmac = KernelHmac;
    let key_id = psk.id(&hmac)?;
    let sender_nonce = keys::nonce();
    let payload = GreetingPayload::new(&key_id, &sender_nonce, &repl.volume);
    let greeting = Header::greeting(repl.volume_size, encrypt, payload.as_bytes());
    // The handshake's frames are small: a full send buffer here is a dead link.
    stream.send(
        &greeting.encode(),
        Body::Copied(payload.as_bytes()),
        false,
        || Err(timed_out()),
    )?;

    let answer = recv_header(stream)?;
    match answer.kind {
        FrameKind::Challenge => {}
        FrameKind::Refuse => {
            let mut reason = [0u8; MAX_REASON_LEN as usize];
            let reason = recv_refusal(stream, &answer, &mut reason)?;
            pr_err!(
                "volume {}: replicad at {} refused the key: {}\n",
                repl.volume,
                addr,
                reason
            );
            return Err(refused());
        }
        kind => {
            pr_err!(
                "volume {}: replicad at {} answered Greeting with {:?}\n",
                repl.volume,
                addr,
                kind
            );
            return Err(protocol_error());
        }
    }
    let mut challenge = [0u8; CHALLENGE_LEN];
    stream.recv_exact(&mut challenge)?;
    if answer.check_payload(&challenge).is_err() {
        pr_err!("volume {}: replicad at {} sent a corrupt Challenge\n", repl.volume, addr);
        return Err(protocol_error());
    }
    let (receiver_nonce, their_proof) = split_challenge(&challenge);
    let transcript = Transcript {
        encrypt,
        key_id,
        volume_name: repl.volume.as_str().as_bytes(),
        volume_size: repl.volume_size,
        sender_nonce,
        receiver_nonce,
    };
    if !transcript.check(&hmac, psk, Role::Receiver, &their_proof)? {
        pr_err!(
            "volume {}: AUTHENTICATION FAILED: the peer at {} does not prove the device's key; \
             sending it nothing\n",
            repl.volume,
            addr
        );
        return Err(impostor());
    }
    let own = transcript.proof(&hmac, psk, Role::Sender)?;
    stream.send(&Header::proof(&own).encode(), Body::Copied(&own), false, || {
        Err(timed_out())
    })?;
    if encrypt {
        let keys = auth::session_keys(&hmac, psk, &sender_nonce, &receiver_nonce)?;
        stream
            .enable_tls(&keys.sender_to_receiver, &keys.receiver_to_sender)
            .inspect_err(|err| {
                pr_err!(
                    "volume {}: cannot encrypt the link to {}: the kernel's TLS layer \
                     failed (error {}; CONFIG_TLS?)\n",
                    repl.volume,
                    addr,
                    err.to_errno()
                )
            })?;
    }
    Ok(())
}
