//! `replicad`: the receiving side of dm-arepl on the disaster-recovery host, and the
//! `arepl-send` test client.
//!
//! Receiver, outside in:
//! - [`server`]: accept loop and shutdown;
//! - [`connection`]: one link, handshake then entry streaming, `Ack`s back;
//! - [`authentication`]: the opening before `Hello`: the sender proves a key from
//!   [`keys`], and [`ktls`] hands the socket to the kernel's TLS layer;
//! - [`takeover`]: one active session; a new welcomed `Hello` takes over the old one;
//! - [`handshake`]: whether a `Hello` may start a session;
//! - [`codec`]: frames over [`arepl_core::wire`]; [`sequencer`]: order and range checks,
//!   skipping of resent entries, pings; [`entry`]: the validated result;
//! - [`applier`]: in-order apply, group commit and the sender's digest checks;
//!   [`resync`]: what `Begin` and `ResyncDone` do there, decided by [`consistency`]
//!   (histories, resyncs, whether the replica is a consistent image), with
//!   [`protection`] keeping the last consistent image before a resync;
//!   [`replica`]: target plus state;
//!   [`volume`]: the target; [`state`]: the crash-safe durable sequence, digest,
//!   identity, divergence record, history and consistency; [`applied_marker`]: what is applied past the
//!   durable sequence in this boot, made durable at the next start; [`verify`]: the
//!   online verify's checks of chunks and their record;
//! - [`cli`]: the command line; [`config`]: settings from it and a TOML file.
//!
//! Operations: [`stats`] holds the live figures the paths above update, [`metrics`]
//! renders them for Prometheus and [`http`] serves them; [`scrape`] reads them back and
//! [`status`] prints them with the persisted state.
//!
//! The client side lives in [`sender`].

pub mod applied_marker;
pub mod applier;
pub mod authentication;
pub mod cli;
pub mod codec;
pub mod config;
pub mod connection;
pub mod consistency;
pub mod entry;
pub mod handshake;
pub mod http;
pub mod keys;
pub mod ktls;
pub mod metrics;
pub mod protection;
pub mod replica;
pub mod resync;
pub mod scrape;
pub mod sender;
pub mod sequencer;
pub mod server;
pub mod state;
pub mod stats;
pub mod status;
pub mod takeover;
pub mod verify;
pub mod volume;
