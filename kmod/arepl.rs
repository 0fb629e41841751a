// SPDX-License-Identifier: GPL-2.0

//! dm-arepl: asynchronous remote replication for device-mapper.
//!
//! The crate is split in two layers. The thin unsafe layer wraps the C interfaces:
//! `bindings` (generated) and `arepl_helpers.c`; `dm` (target registration and
//! callbacks), `bio` (bios, deferred bios), `blockio` (synchronous block I/O), `net`
//! (kernel sockets and their TLS), `keys` (the keyring's pre-shared key and the
//! crypto API's HMAC), `kthread`, `sync` (interrupt-safe locks), `noio` (allocation
//! scope), `crc32c` (the kernel's) and `claim` (the module-wide volume registry).
//! Everything above it is safe Rust: the write path (`target`, `write_path`), the
//! queue (`replication`), its threads (`sender` with `authenticate`, `read_ahead`,
//! `spiller`, `copier`)
//! and the spill log, much of it shared word for word with userspace (the
//! `arepl-core` crate).

// `Replication`'s initializer has more fields than `pin_init!`'s expansion fits in the
// default limit.
#![recursion_limit = "256"]

use kernel::prelude::*;

mod authenticate;
mod bindings;
mod bio;
mod blockio;
mod claim;
mod copier;
mod crc32c;
mod dm;
mod entry;
mod keys;
mod kthread;
mod net;
mod noio;
mod payload;
mod read_ahead;
mod replication;
mod sender;
mod spill_log;
mod spiller;
mod sync;
mod target;
mod write_path;

// Logic shared with userspace: the `arepl-core` crate's own source files, compiled here
// unchanged. They are public so the kernel's `unreachable_pub` lint accepts their API.
#[path = "../arepl-core/src/activity_log.rs"]
pub mod activity_log;
#[path = "../arepl-core/src/auth.rs"]
pub mod auth;
#[path = "../arepl-core/src/copy_plan.rs"]
pub mod copy_plan;
#[path = "../arepl-core/src/copy_policy.rs"]
pub mod copy_policy;
#[path = "../arepl-core/src/digest.rs"]
pub mod digest;
#[path = "../arepl-core/src/fifo.rs"]
pub mod fifo;
#[path = "../arepl-core/src/history.rs"]
pub mod history;
#[path = "../arepl-core/src/range_table.rs"]
pub mod range_table;
#[path = "../arepl-core/src/liveness.rs"]
pub mod liveness;
#[path = "../arepl-core/src/rate.rs"]
pub mod rate;
#[path = "../arepl-core/src/regions.rs"]
pub mod regions;
#[path = "../arepl-core/src/spill.rs"]
pub mod spill;
#[path = "../arepl-core/src/status.rs"]
pub mod status;
#[path = "../arepl-core/src/table.rs"]
pub mod table;
#[path = "../arepl-core/src/verify.rs"]
pub mod verify;
#[path = "../arepl-core/src/wire.rs"]
pub mod wire;
#[path = "../arepl-core/src/xxh64.rs"]
pub mod xxh64;

module! {
    type: AreplModule,
    name: "dm_arepl",
    author: "dm-arepl developers",
    description: "device-mapper target for asynchronous remote block replication",
    license: "GPL",
}

struct AreplModule {
    _target: dm::Registration<target::Arepl>,
}

impl kernel::Module for AreplModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let registration = dm::Registration::new(module)?;
        pr_info!("target registered\n");
        Ok(Self {
            _target: registration,
        })
    }
}

impl Drop for AreplModule {
    fn drop(&mut self) {
        // No target is left when the module unloads; neither are their histories.
        claim::forget_all();
    }
}
