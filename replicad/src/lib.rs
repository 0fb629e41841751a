//! `replicad`: the receiving side of dm-arepl on the disaster-recovery host, and the
//! `arepl-send` test client.
//!
//! Receiver: [`server`] accepts links, [`connection`] runs one of them (handshake, then
//! reading and validating entries), [`applier`] applies entries in order and makes them
//! durable in groups, [`replica`] ties the [`volume`] (the target) to the [`state`] file.
//! The client side lives in [`sender`].

pub mod applier;
pub mod codec;
pub mod config;
pub mod connection;
pub mod entry;
pub mod handshake;
pub mod replica;
pub mod sender;
pub mod sequencer;
pub mod server;
pub mod state;
pub mod takeover;
pub mod volume;
