//! `arepl-lying-proxy`: a hostile receiver for tests of the module. It relays each
//! connection on `--listen` to a real replicad at `--upstream` (an unencrypted link) and
//! tells the sender one kind of lie in the receiver's frames, chosen by `--lie`, on every
//! connection. The sender must treat each lie as a protocol error: log it, drop the link,
//! and keep every entry it holds.
//!
//! Prints one line per connection and one per lie told.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread;

use arepl_core::wire::{FrameKind, Header, HEADER_LEN};
use clap::{Parser, ValueEnum};

/// How far past the truth a lied-about sequence number is.
const SEQUENCE_LIE: u64 = 1_000_000;

#[derive(Debug, Parser)]
#[command(
    name = "arepl-lying-proxy",
    version,
    about = "Relays to replicad and lies to the sender"
)]
struct Cli {
    /// Address to accept the sender's connections on.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// replicad's address.
    #[arg(long, value_name = "ADDR:PORT")]
    upstream: SocketAddr,
    /// The lie.
    #[arg(long, value_enum)]
    lie: Lie,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Lie {
    /// None: relay faithfully.
    Honest,
    /// Welcome (and the Digest after it) claims a durable sequence far past anything
    /// the sender sent.
    WelcomeFuture,
    /// The first Ack acknowledges a sequence far past anything the sender sent.
    AckUnsent,
    /// The first Ack is replaced by a Refuse whose length is over the maximum.
    Oversized,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let listener = match TcpListener::bind(cli.listen) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("arepl-lying-proxy: cannot listen on {}: {err}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}, lie {:?}", cli.listen, cli.lie);
    for (number, sender) in listener.incoming().enumerate() {
        let Ok(sender) = sender else { continue };
        println!("connection {}", number + 1);
        match TcpStream::connect(cli.upstream) {
            Ok(receiver) => {
                let lie = cli.lie;
                thread::spawn(move || relay(sender, receiver, lie));
            }
            Err(err) => println!("upstream {}: {err}", cli.upstream),
        }
    }
    ExitCode::SUCCESS
}

/// Copies the sender's bytes through untouched and the receiver's frames with the lie.
fn relay(sender: TcpStream, receiver: TcpStream, lie: Lie) {
    let (Ok(mut to_receiver), Ok(mut from_sender)) = (receiver.try_clone(), sender.try_clone())
    else {
        return;
    };
    let forward = thread::spawn(move || io::copy(&mut from_sender, &mut to_receiver));
    let mut from_receiver = receiver;
    let mut to_sender = sender;
    if let Err(err) = relay_frames(&mut from_receiver, &mut to_sender, lie) {
        println!("connection ended: {err}");
    }
    for stream in [&from_receiver, &to_sender] {
        let _ = stream.shutdown(Shutdown::Both);
    }
    let _ = forward.join();
}

fn relay_frames(from: &mut TcpStream, to: &mut TcpStream, lie: Lie) -> io::Result<()> {
    // Only the first Ack of a connection is lied about: one lie must be enough.
    let mut ack_seen = false;
    loop {
        let mut bytes = [0u8; HEADER_LEN];
        from.read_exact(&mut bytes)?;
        let mut header = Header::decode(&bytes)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, format!("{err}")))?;
        let mut payload = vec![0u8; header.payload_len() as usize];
        from.read_exact(&mut payload)?;
        if header.kind != FrameKind::Ack || !std::mem::replace(&mut ack_seen, true) {
            tell(lie, &mut header, &mut payload);
        }
        to.write_all(&header.encode())?;
        to.write_all(&payload)?;
    }
}

/// Changes the frame if it is one `lie` is about.
fn tell(lie: Lie, header: &mut Header, payload: &mut Vec<u8>) {
    match (lie, header.kind) {
        // The Digest that follows a Welcome names its sequence: a consistent liar
        // shifts both.
        (Lie::WelcomeFuture, FrameKind::Welcome | FrameKind::Digest)
        | (Lie::AckUnsent, FrameKind::Ack) => {
            println!(
                "lie: {:?} of sequence {} told as {}",
                header.kind,
                header.seq,
                header.seq + SEQUENCE_LIE
            );
            header.seq += SEQUENCE_LIE;
        }
        (Lie::Oversized, FrameKind::Ack) => {
            // A header that decodes nowhere: the length is checked before any payload.
            *header = Header {
                kind: FrameKind::Refuse,
                flags: 0,
                seq: 0,
                offset: 0,
                length: u32::MAX,
                payload_checksum: 0,
            };
            payload.clear();
            println!("lie: Refuse of {} bytes", u32::MAX);
        }
        _ => {}
    }
}
