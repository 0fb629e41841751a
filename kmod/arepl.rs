// SPDX-License-Identifier: GPL-2.0

//! dm-arepl: asynchronous remote replication for device-mapper.
//!
//! The crate is split in two layers. `bindings`, `dm` and `bio` are the thin unsafe
//! layer over device-mapper's C interface; everything above it is safe Rust, much of
//! it shared word for word with userspace through `shared` (the `arepl-core` crate).

use kernel::prelude::*;

mod bindings;
mod bio;
mod dm;
mod target;

/// Logic shared with userspace: these are the `arepl-core` crate's own source files.
pub mod shared {
    #[path = "../../arepl-core/src/status.rs"]
    pub mod status;
    #[path = "../../arepl-core/src/table.rs"]
    pub mod table;
}

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
        pr_info!("dm-arepl: target registered\n");
        Ok(Self {
            _target: registration,
        })
    }
}
