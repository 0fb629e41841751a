// SPDX-License-Identifier: GPL-2.0

//! The pre-shared key from the kernel keyring, and the HMAC-SHA256 the handshake's
//! proofs and session keys are made of ([`crate::auth`]), from the kernel's crypto API.

use kernel::prelude::*;

use crate::auth::{HmacSha256, Psk, PskError, NONCE_LEN};
use crate::bindings;
use crate::table::{KeyDescription, MAX_KEY_DESCRIPTION_LEN};

/// Longest logon key payload read: a key is 64 hex digits and a newline.
const MAX_PAYLOAD_LEN: usize = 128;

/// Why the key could not be had.
#[derive(Debug)]
pub(crate) enum KeyError {
    /// The keyring lookup failed with this error (`ENOKEY`: no such logon key).
    Lookup(Error),
    /// The key's payload is not a key.
    Malformed(PskError),
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Lookup(err) if err.to_errno() == -(kernel::bindings::ENOKEY as i32) => f.write_str(
                "no such logon key in the keyrings of this process (load it with \
                 `keyctl padd logon DESC @u < KEYFILE`, or `arepl key load`)",
            ),
            Self::Lookup(err) => write!(f, "keyring lookup failed (error {})", err.to_errno()),
            Self::Malformed(err) => write!(f, "{err}"),
        }
    }
}

/// Reads the logon key `description` as the calling process finds it: call it from a
/// process's context (table construction, a message), not from a kernel thread, whose
/// keyrings are not the administrator's.
pub(crate) fn read_logon_key(description: &KeyDescription) -> Result<Psk, KeyError> {
    let mut name = [0u8; MAX_KEY_DESCRIPTION_LEN + 1];
    let text = description.as_str().as_bytes();
    name[..text.len()].copy_from_slice(text);
    let mut payload = [0u8; MAX_PAYLOAD_LEN];
    // SAFETY: `name` is NUL-terminated (one byte longer than any description) and
    // `payload` is writable for its length; both outlive the call.
    let ret = unsafe {
        bindings::arepl_logon_key_read(name.as_ptr().cast(), payload.as_mut_ptr(), payload.len())
    };
    let len = kernel::error::to_result(ret)
        .map(|()| ret as usize)
        .map_err(KeyError::Lookup)?;
    let parsed = Psk::parse(&payload[..len]).map_err(KeyError::Malformed);
    // The key's text must not linger on the stack.
    payload.fill(0);
    core::hint::black_box(&payload);
    parsed
}

/// HMAC-SHA256 from the kernel's crypto API.
pub(crate) struct KernelHmac;

/// Most parts one HMAC takes (a proof has 8).
const MAX_PARTS: usize = 8;

impl HmacSha256 for KernelHmac {
    type Error = Error;

    fn hmac(&self, key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], Error> {
        if parts.len() > MAX_PARTS {
            return Err(EINVAL);
        }
        let mut pointers = [core::ptr::null::<u8>(); MAX_PARTS];
        let mut lens = [0usize; MAX_PARTS];
        for (i, part) in parts.iter().enumerate() {
            pointers[i] = part.as_ptr();
            lens[i] = part.len();
        }
        let mut out = [0u8; 32];
        // SAFETY: `key` and each of the first `parts.len()` pointers and lengths describe
        // borrowed slices that outlive the call; `out` is 32 writable bytes.
        let ret = unsafe {
            bindings::arepl_hmac_sha256(
                key.as_ptr(),
                key.len(),
                pointers.as_ptr(),
                lens.as_ptr(),
                parts.len(),
                out.as_mut_ptr(),
            )
        };
        kernel::error::to_result(ret)?;
        Ok(out)
    }
}

/// A fresh nonce from the kernel's random pool.
pub(crate) fn nonce() -> [u8; NONCE_LEN] {
    let mut bytes = [0u8; NONCE_LEN];
    // SAFETY: `bytes` is writable for its length for the duration of the call.
    unsafe { bindings::arepl_random_bytes(bytes.as_mut_ptr(), bytes.len()) };
    bytes
}
