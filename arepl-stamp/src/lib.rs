//! `arepl-stamp`: does a replica preserve write order?
//!
//! [`workload`] writes stamped blocks to a device in a seeded, logged order (optionally
//! from several submitters at once); [`check`] reads an image, typically the replica,
//! and decides whether it is a state the device passed through, a consistent cut of the
//! logged writes, reporting which one or which blocks contradict every cut.
//!
//! - [`stamp`]: the content of a stamped block; [`prng`]: the deterministic generators;
//! - [`log`]: the write log file;
//! - [`geometry`], [`aligned`], [`device`]: block layout, O_DIRECT buffers and files;
//! - [`scan`]: which write each block of an image holds;
//! - [`image`]: whole images compared and digested.

pub mod aligned;
pub mod check;
pub mod device;
pub mod geometry;
pub mod image;
pub mod log;
pub mod prng;
pub mod scan;
pub mod stamp;
pub mod workload;
