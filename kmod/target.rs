// SPDX-License-Identifier: GPL-2.0

//! The `arepl` target: every bio goes to the local device; each completed write, flush,
//! discard and write-zeroes also joins the replication FIFO, in completion order.

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::c_str;
use kernel::prelude::*;
use kernel::sync::{Arc, CondVarTimeoutResult};
use kernel::time::Ktime;

use crate::bio::{Bio, BioKind};
use crate::copier::copier_main;
use crate::blockio::BlockIo;
use crate::claim::VolumeClaim;
use crate::dm::{ConstructCtx, ConstructError, DmDevice, StatusWriter, Target};
use crate::keys;
use crate::kthread::KThread;
use crate::replication::Replication;
use crate::sender::sender_main;
use crate::spill_log::{BatchOutcome, SpillLog, MAX_IO_BYTES};
use crate::spiller::spiller_main;
use crate::claim::Remembered;
use crate::table::{ReplicationConfig, TableArgs, VolumeName};
use crate::write_path::{cow_main, PendingEntries};
use crate::read_ahead::read_ahead_main;

/// Copy-on-write threads: each reads back the payloads one deferred write needs, so
/// several deferred writes read at once (as many as a block queue keeps busy).
const COW_THREADS: usize = 4;
/// How long `dmsetup remove` waits for the queue to drain before dropping what is left.
const DRAIN_TIMEOUT_MS: i64 = 30_000;

/// One `arepl` device.
pub(crate) struct Arepl {
    local: DmDevice,
    config: ReplicationConfig,
    counters: BioCounters,
    replication: Arc<Replication>,
    /// Stopped (joined) before the queue is discarded in `drop`.
    sender: Option<KThread>,
    spiller: Option<KThread>,
    copier: Option<KThread>,
    cow: [Option<KThread>; COW_THREADS],
    read_ahead: Option<KThread>,
    /// Released last, once nothing of this target streams any more; it passes the
    /// history on to the volume's next target.
    claim: VolumeClaim,
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
            BioKind::WriteZeroes => &self.discards,
            BioKind::Other => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Target for Arepl {
    const NAME: &'static CStr = kernel::c_str!("arepl");
    const VERSION: [u32; 3] = [0, 5, 0];
    type PerBio = PendingEntries;

    fn construct(ctx: &mut ConstructCtx<'_>, args: &[&str]) -> Result<KBox<Self>, ConstructError> {
        let table = TableArgs::parse(args).map_err(|err| {
            pr_err!("{}\n", err);
            ConstructError::invalid(err.summary_with_nul())
        })?;
        // Read here, in the administrator's process: a kernel thread does not search
        // the administrator's keyrings.
        let psk = match &table.config.key {
            Some(description) => Some(keys::read_logon_key(description).map_err(|err| {
                pr_err!("key {}: {}\n", description, err);
                ConstructError::invalid("cannot read the key\0")
            })?),
            None => None,
        };
        let volume = match table.config.volume {
            Some(volume) => volume,
            None => {
                let mut buf = [0u8; crate::table::MAX_VOLUME_LEN + 1];
                let name = ctx.device_name(&mut buf);
                name.and_then(VolumeName::new).ok_or_else(|| {
                    pr_err!(
                        "device name '{}' is not a valid volume name: give volume:NAME\n",
                        name.unwrap_or("(longer than 64 bytes)")
                    );
                    ConstructError::invalid("device name is not a valid volume name\0")
                })?
            }
        };
        let (claim, remembered) = VolumeClaim::new(&volume).map_err(|code| {
            pr_err!(
                "volume {} is already replicated by another live arepl target (two streams \
                 into one replica would corrupt it; reloading a live arepl table is not \
                 supported yet)\n",
                volume
            );
            ConstructError {
                summary: kernel::c_str!("volume already in use by another arepl target"),
                code,
            }
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
        // Bounded bios keep every spill record within one batch buffer.
        ctx.set_max_io_sectors((MAX_IO_BYTES >> 9) as u32);

        let out_of_memory = |_| ConstructError {
            summary: kernel::c_str!("out of memory"),
            code: ENOMEM,
        };
        let volume_size = ctx.len_sectors() << 9;
        let spill = match table.spill_dev {
            Some(path) => Some(open_spill(
                ctx,
                path,
                &local,
                volume,
                volume_size,
                table.config.region_kb,
            )?),
            None => None,
        };
        // Read by the initial copy and by any resync a handshake decides on.
        let copy_source = open_copy_source(ctx, table.local_dev)?;
        let replication = Replication::new(
            &table.config,
            volume,
            volume_size,
            spill,
            remembered,
            copy_source,
            psk,
        )
        .map_err(out_of_memory)?;
        // Only a device created with this table had every writer since (a file system
        // mounted later included) see it ask for stable writes: a file system mounted
        // under an earlier table keeps changing pages in flight, even where the block
        // device's own flag is set.
        replication
            .writes_stable
            .store(ctx.first_table(), Ordering::Relaxed);
        if let Some(log) = replication.spill.as_deref() {
            if replication.copy_wants_activity_log() {
                // The initial copy's regions are all on disk before it starts.
                log.begin_whole_copy(&replication).map_err(|code| {
                    pr_err!("cannot write the activity log (error {})\n", code.to_errno());
                    ConstructError {
                        summary: c_str!("cannot write the activity log"),
                        code,
                    }
                })?;
            }
        }
        let sender = spawn(c_str!("arepl_tx"), &replication, sender_main, c_str!("sender"))?;
        let spiller = match replication.spill {
            Some(_) => Some(spawn(
                c_str!("arepl_spill"),
                &replication,
                spiller_main,
                c_str!("spill"),
            )?),
            None => None,
        };
        let copier = spawn(c_str!("arepl_copy"), &replication, copier_main, c_str!("copy"))?;
        let mut cow: [Option<KThread>; COW_THREADS] = core::array::from_fn(|_| None);
        for thread in cow.iter_mut() {
            *thread = Some(spawn(
                c_str!("arepl_cow"),
                &replication,
                cow_main,
                c_str!("copy-on-write"),
            )?);
        }
        let read_ahead = spawn(
            c_str!("arepl_read"),
            &replication,
            read_ahead_main,
            c_str!("read-ahead"),
        )?;

        let target = KBox::new(
            Arepl {
                local,
                config: table.config,
                counters: BioCounters::default(),
                replication,
                sender: Some(sender),
                spiller,
                copier: Some(copier),
                cow,
                read_ahead: Some(read_ahead),
                claim,
            },
            GFP_KERNEL,
        )
        .map_err(|_| ConstructError {
            summary: kernel::c_str!("out of memory"),
            code: ENOMEM,
        })?;
        pr_info!(
            "volume {}: {} sectors on {} ({}), primary link {}\n",
            volume,
            ctx.len_sectors(),
            table.local_dev,
            target.local.name(),
            target.config.primary
        );
        Ok(target)
    }

    fn map(&self, bio: &mut Bio<'_>) -> Option<PendingEntries> {
        let kind = bio.kind();
        self.counters.count(kind);
        let pending = match kind {
            BioKind::Read | BioKind::Other => Some(PendingEntries::NONE),
            _ => self.replication.map_write(bio, kind),
        };
        bio.remap_to(&self.local);
        if pending.is_none() {
            self.replication.defer(bio.defer());
        }
        pending
    }

    fn end_io(&self, pending: PendingEntries, failed: bool) {
        self.replication.complete(pending, failed);
    }

    fn status(&self, out: &mut StatusWriter<'_>) {
        let c = &self.counters;
        let mut status = self.replication.status();
        status.counters.reads = c.reads.load(Ordering::Relaxed);
        status.counters.writes = c.writes.load(Ordering::Relaxed);
        status.counters.flushes = c.flushes.load(Ordering::Relaxed);
        status.counters.discards = c.discards.load(Ordering::Relaxed);
        let _ = write!(out, "{status}");
    }

    fn message(&self, args: &[&str]) -> Result<(), &'static str> {
        let mut queue = self.replication.queue.lock();
        match args {
            ["switch-link"] if self.config.backup.is_none() => {
                return Err("switch-link: this device has no backup link")
            }
            ["switch-link"] => queue.switch_requested = true,
            ["pause"] => queue.paused = true,
            ["resume"] => queue.paused = false,
            ["verify"] | ["verify", "repair"] => {
                drop(queue);
                return self.replication.start_verify(args.len() == 2);
            }
            ["key", "reload"] => {
                drop(queue);
                return self.reload_key();
            }
            _ => {
                return Err(
                    "unknown message: expected switch-link, pause, resume, verify, verify \
                     repair or key reload",
                )
            }
        }
        drop(queue);
        self.replication.work.notify_all();
        Ok(())
    }

    fn table(&self, out: &mut StatusWriter<'_>) {
        let spill = self.replication.spill.as_deref().map(SpillLog::device_name);
        let _ = write!(out, "{}", self.config.canonical(self.local.name(), spill));
    }

    fn data_device(&self) -> &DmDevice {
        &self.local
    }

    fn resume(&self) {
        // Until now the previous table (an LV's linear one, say) may have been writing
        // to the volume without queueing anything: the copy must start after that.
        self.replication.allow_copy();
    }
}

/// Starts `body` in a kernel thread named `name/<volume>`; `what` names the thread in
/// the error.
fn spawn(
    name: &'static CStr,
    replication: &Arc<Replication>,
    body: fn(&Arc<Replication>),
    what: &'static CStr,
) -> Result<KThread, ConstructError> {
    KThread::spawn(name, &replication.thread_name, replication.clone(), body).map_err(|code| {
        pr_err!("cannot start the {} thread (error {})\n", what, code.to_errno());
        ConstructError {
            summary: c_str!("cannot start a kernel thread"),
            code,
        }
    })
}

/// Opens the local device a second time, for the copy's reads.
fn open_copy_source(ctx: &mut ConstructCtx<'_>, path: &str) -> Result<BlockIo, ConstructError> {
    let failed = |code: Error| {
        pr_err!(
            "cannot open local device '{}' for copying (error {})\n",
            path,
            code.to_errno()
        );
        ConstructError {
            summary: c_str!("cannot set up the initial copy"),
            code,
        }
    };
    let dev = ctx.get_device(path).map_err(failed)?;
    BlockIo::new(dev).map_err(failed)
}

/// Opens the spill device named on the table line and its log.
fn open_spill(
    ctx: &mut ConstructCtx<'_>,
    path: &str,
    local: &crate::dm::DmDevice,
    volume: VolumeName,
    volume_size: u64,
    region_kb: u32,
) -> Result<(core::pin::Pin<KBox<SpillLog>>, crate::spill_log::Resume), ConstructError> {
    let refused = |code| ConstructError {
        summary: kernel::c_str!("spill device refused"),
        code,
    };
    let dev = ctx.get_device(path).map_err(|code| {
        pr_err!("cannot open spill device '{}' (error {})\n", path, code.to_errno());
        ConstructError {
            summary: kernel::c_str!("cannot open spill device"),
            code,
        }
    })?;
    if dev.name() == local.name() {
        pr_err!("spill device '{}' is the local device itself\n", path);
        return Err(refused(EINVAL));
    }
    let io = BlockIo::new(dev).map_err(refused)?;
    SpillLog::open(io, volume, volume_size, region_kb).map_err(|_| refused(EINVAL))
}

impl Arepl {
    /// `key reload`: reads the table's logon key again (an administrator updated it to
    /// roll keys over) and reconnects with it.
    fn reload_key(&self) -> Result<(), &'static str> {
        let Some(description) = &self.config.key else {
            return Err("key reload: this device has no key: (table feature key:DESC)");
        };
        let psk = keys::read_logon_key(description).map_err(|err| {
            pr_err!("volume {}: key reload: key {}: {}\n", self.replication.volume, description, err);
            "key reload: cannot read the key (see the kernel log)"
        })?;
        let mut queue = self.replication.queue.lock();
        queue.psk = Some(psk);
        queue.rekey_requested = true;
        drop(queue);
        pr_info!("volume {}: key {} reloaded\n", self.replication.volume, description);
        self.replication.work.notify_all();
        Ok(())
    }

    /// Waits, up to [`DRAIN_TIMEOUT_MS`], for the queue to drain through a link. Without
    /// a link, a device with a spill log keeps its entries there instead of waiting.
    fn wait_for_drain(&self) {
        let repl = &self.replication;
        let deadline = Ktime::ktime_get().to_ms() + DRAIN_TIMEOUT_MS;
        loop {
            let mut queue = repl.queue.lock();
            let drained = queue.fifo.is_empty() && queue.spill.entries == 0;
            let no_way_out = queue.paused || (queue.has_spill && queue.active_link.is_none());
            if drained || no_way_out || Ktime::ktime_get().to_ms() >= deadline {
                return;
            }
            let woke = repl
                .space_freed
                .wait_interruptible_timeout(&mut queue, kernel::time::msecs_to_jiffies(100));
            if matches!(woke, CondVarTimeoutResult::Signal { .. }) {
                return;
            }
        }
    }

    /// Moves everything still in memory to the spill log, so a later construction with
    /// the same spill device sends it; false if some could not be moved.
    fn spill_remaining(&self, log: &SpillLog) -> bool {
        let repl = &self.replication;
        {
            let mut st = log.lock();
            let mut queue = repl.queue.lock();
            log.free_acked(&mut st, &mut queue);
            log.reset_reader(&mut st);
            queue.fifo.rewind();
        }
        let mut moved_all = true;
        loop {
            match log.spill_batch(repl) {
                Ok(BatchOutcome::Moved) => continue,
                Ok(BatchOutcome::Idle) => break,
                Ok(BatchOutcome::Full) => {
                    pr_err!(
                        "volume {}: spill device {} is full; entries still in memory are lost \
                         to replication\n",
                        repl.volume,
                        log.device_name()
                    );
                    moved_all = false;
                    break;
                }
                Err(err) => {
                    pr_err!(
                        "volume {}: cannot write the spill log (error {}); entries still in \
                         memory are lost to replication\n",
                        repl.volume,
                        err.to_errno()
                    );
                    moved_all = false;
                    break;
                }
            }
        }
        if let Err(err) = log.persist_head(repl) {
            pr_err!(
                "volume {}: cannot update the spill log (error {})\n",
                repl.volume,
                err.to_errno()
            );
        }
        let spill = repl.queue.lock().spill;
        if spill.entries > 0 {
            pr_info!(
                "volume {}: {} entries ({} bytes) stay in the spill log on {}; they are sent \
                 when the device is created again with it\n",
                repl.volume,
                spill.entries,
                spill.bytes,
                log.device_name()
            );
        }
        moved_all
    }

    /// What the next target of this volume may continue from without a spill device
    /// (while the module stays loaded): the history, if no entry of it was lost, and
    /// where an unfinished copy of the whole volume stood.
    fn history_left(&self) -> Option<Remembered> {
        let queue = self.replication.queue.lock();
        let history = queue.history.current?;
        let base = queue.wire_base?;
        Some(Remembered {
            history,
            last_wire_seq: base + queue.fifo.next_seq() - 1,
            copy_from: queue.copy.plan.whole_copy_cursor(),
        })
    }
}

impl Drop for Arepl {
    fn drop(&mut self) {
        if let Some(copier) = self.copier.take() {
            drop(copier);
            if self.replication.copy_allowed() && !self.replication.copy_done() {
                pr_warn!(
                    "volume {}: removed before the initial copy finished; the replica is \
                     not a consistent image\n",
                    self.replication.volume
                );
            }
        }
        self.wait_for_drain();
        for thread in self.cow.iter_mut() {
            drop(thread.take());
        }
        drop(self.read_ahead.take());
        drop(self.sender.take());
        drop(self.spiller.take());
        let spilled_all = match self.replication.spill.as_deref() {
            Some(log) => self.spill_remaining(log),
            None => true,
        };
        let (count, bytes) = self.replication.discard_all();
        let al_complete = self
            .replication
            .spill
            .as_deref()
            .is_some_and(|log| log.activity_log_complete());
        let clean = {
            let queue = self.replication.queue.lock();
            // Tracked regions, and what a copy of regions has left, are lost with the
            // device unless its activity log keeps them.
            let regions_kept = al_complete
                || (!queue.tracking && queue.dirty.marked() == 0 && !queue.copy.plan.copying_regions());
            count == 0 && spilled_all && !queue.history.lost_entries && regions_kept
        };
        if let Some(log) = self.replication.spill.as_deref() {
            // Regions nothing holds any more need no resync next time.
            let _ = log.clear_activity_log(&self.replication);
            // Not clean: the next construction resyncs what was lost.
            if let Err(err) = log.close(&self.replication, clean) {
                pr_err!(
                    "volume {}: cannot close the spill log (error {}); the next construction \
                     will resync\n",
                    self.replication.volume,
                    err.to_errno()
                );
            }
        } else if let Some(left) = self.history_left().filter(|_| clean) {
            self.claim.leave(left);
        }
        if count > 0 {
            pr_warn!(
                "volume {}: removed with {} entries ({} bytes) not acknowledged by the receiver; \
                 the replica lacks them\n",
                self.replication.volume,
                count,
                bytes
            );
        }
    }
}
