// SPDX-License-Identifier: GPL-2.0

//! The `arepl` target: validates its table line and, for now, maps every bio straight
//! to the local device (dm-linear behaviour) while counting what it sees.

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::prelude::*;

use crate::bio::{Bio, BioKind};
use crate::dm::{ConstructCtx, ConstructError, DmDevice, MapResult, StatusWriter, Target};
use crate::status::{Mode, Status};
use crate::table::{ReplicationConfig, TableArgs};

/// One `arepl` device.
pub(crate) struct Arepl {
    local: DmDevice,
    config: ReplicationConfig,
    counters: BioCounters,
}

/// Bios mapped since construction, by kind.
#[derive(Default)]
struct BioCounters {
    reads: AtomicU64,
    writes: AtomicU64,
    flushes: AtomicU64,
    discards: AtomicU64,
}

impl BioCounters {
    fn count(&self, kind: BioKind) {
        let counter = match kind {
            BioKind::Read => &self.reads,
            BioKind::Write => &self.writes,
            BioKind::Flush => &self.flushes,
            BioKind::Discard | BioKind::WriteZeroes => &self.discards,
            BioKind::Other => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Target for Arepl {
    const NAME: &'static CStr = kernel::c_str!("arepl");
    const VERSION: [u32; 3] = [0, 1, 0];

    fn construct(ctx: &mut ConstructCtx<'_>, args: &[&str]) -> Result<KBox<Self>, ConstructError> {
        let table = TableArgs::parse(args).map_err(|err| {
            pr_err!("{}\n", err);
            ConstructError::invalid(err.summary_with_nul())
        })?;
        let local = ctx.get_device(table.local_dev).map_err(|code| {
            pr_err!(
                "cannot open local device '{}' (error {})\n",
                table.local_dev,
                code.to_errno()
            );
            ConstructError {
                summary: kernel::c_str!("cannot open local device"),
                code,
            }
        })?;
        ctx.set_passdown_bios(1);

        let target = KBox::new(
            Arepl {
                local,
                config: table.config,
                counters: BioCounters::default(),
            },
            GFP_KERNEL,
        )
        .map_err(|_| ConstructError {
            summary: kernel::c_str!("out of memory"),
            code: ENOMEM,
        })?;
        pr_info!(
            "{} sectors on {} ({}), primary link {}\n",
            ctx.len_sectors(),
            table.local_dev,
            target.local.name(),
            target.config.primary
        );
        Ok(target)
    }

    fn map(&self, bio: &mut Bio<'_>) -> MapResult {
        self.counters.count(bio.kind());
        bio.remap_to(&self.local);
        MapResult::Remapped
    }

    fn status(&self, out: &mut StatusWriter<'_>) {
        let c = &self.counters;
        let status = Status {
            mode: Mode::Passthrough,
            reads: c.reads.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            discards: c.discards.load(Ordering::Relaxed),
        };
        let _ = write!(out, "{status}");
    }

    fn table(&self, out: &mut StatusWriter<'_>) {
        let _ = write!(out, "{}", self.config.canonical(self.local.name()));
    }

    fn data_device(&self) -> &DmDevice {
        &self.local
    }
}
