//! Hands an authenticated connection to the kernel's TLS record layer: every byte after
//! the handshake is then a TLS 1.3 record under AES-128-GCM, sealed and opened by the
//! kernel, so the codec above reads and writes plaintext as before.

use std::io;
use std::os::fd::AsFd;

use arepl_core::auth::TrafficKey;
use nix::sys::socket::setsockopt;
use nix::sys::socket::sockopt::{TcpTlsRx, TcpTlsTx, TcpUlp, TlsCryptoInfo};

/// Installs kTLS on `socket`: `send` protects what this side sends, `receive` what it
/// receives. Nothing may have been read past the handshake yet: received bytes still
/// in the socket are opened as records, bytes already read are not.
pub fn install(socket: &impl AsFd, send: &TrafficKey, receive: &TrafficKey) -> io::Result<()> {
    setsockopt(socket, TcpUlp::default(), &b"tls").map_err(|errno| {
        io::Error::new(
            io::Error::from(errno).kind(),
            format!(
                "the kernel's TLS layer is unavailable ({errno}): load the tls module or \
                 build with CONFIG_TLS"
            ),
        )
    })?;
    setsockopt(socket, TcpTlsTx, &crypto_info(send))?;
    setsockopt(socket, TcpTlsRx, &crypto_info(receive))?;
    Ok(())
}

fn crypto_info(key: &TrafficKey) -> TlsCryptoInfo {
    TlsCryptoInfo::Aes128Gcm(libc::tls12_crypto_info_aes_gcm_128 {
        info: libc::tls_crypto_info {
            version: libc::TLS_1_3_VERSION,
            cipher_type: libc::TLS_CIPHER_AES_GCM_128,
        },
        iv: key.iv,
        key: key.key,
        salt: key.salt,
        // Records are counted from 0 on each side.
        rec_seq: [0; 8],
    })
}
