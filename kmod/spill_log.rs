// SPDX-License-Identifier: GPL-2.0

//! The spill log on its device: opening (and refusing) a device, moving the oldest
//! queued entries into the log, and reading them back in order for the sender.
//!
//! The log holds local sequences `[head_seq, tail_seq)`; the memory FIFO continues at
//! `tail_seq`, so log and FIFO together are one stream in write order. One mutex
//! serialises every use of the log: the spill thread appending, the sender reading
//! and freeing, the destructor flushing what is left.
//!
//! Crash safety: records are written, then a superblock covering them is written with
//! a preceding cache flush and FUA. Space freed by acknowledgements is reused only
//! after a superblock recording the new head is on disk, so the on-disk head never
//! points at overwritten records.

use core::pin::Pin;

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::lock::{mutex::MutexBackend, Guard};
use kernel::sync::{Arc, Mutex};

use crate::blockio::BlockIo;
use crate::entry::Entry;
use crate::history::History;
use crate::payload::Payload;
use crate::replication::{QueueState, Replication, SpillFigures};
use crate::activity_log::{
    decode_block, encode_block, encode_words, AlGeometry, BlockRange, AL_BLOCK,
};
use crate::regions::{words_for, DirtyRegions};
use crate::spill::{
    probe, record_len, Probe, RecordHeader, RecordKind, Ring, SpillError, Superblock, BLOCK,
};
use crate::table::VolumeName;

/// Largest bio the target takes (`max_io_len`), so one record always fits a batch.
pub(crate) const MAX_IO_BYTES: usize = 1 << 20;
/// Bytes written to the log per batch, at most.
const BATCH_BYTES: usize = 2 * MAX_IO_BYTES;
/// Entries per batch, at most.
const BATCH_ENTRIES: usize = 1024;
/// Records read and sent but not yet freed, at most (the sender's window).
pub(crate) const READ_WINDOW: usize = 4096;

/// What one attempt to move entries into the log did.
pub(crate) enum BatchOutcome {
    /// Entries moved from memory to the log.
    Moved,
    /// The oldest entry does not fit: the log is full.
    Full,
    /// Nothing to move (empty FIFO, or its head is being sent).
    Idle,
}

/// What the sender gets from the log next.
pub(crate) enum NextRecord {
    /// This record, at this local sequence.
    Send(u64, Arc<Entry>),
    /// Records remain, but as many are in flight as the window allows.
    WindowFull,
    /// Every record has been read: the FIFO comes next.
    Exhausted,
}

/// The spill log of one device, and its activity log.
#[pin_data]
pub(crate) struct SpillLog {
    io: BlockIo,
    volume: VolumeName,
    volume_size: u64,
    /// Where the activity log is; `None` in a format 1 log.
    pub(crate) al: Option<AlGeometry>,
    #[pin]
    state: Mutex<SpillState>,
    /// Serialises activity log writes; one block of DMA-able memory.
    #[pin]
    al_block: Mutex<KVVec<u8>>,
}

/// Where the log starts when a device is constructed.
pub(crate) struct Resume {
    /// Local sequence of the first entry the FIFO takes.
    pub(crate) first_seq: u64,
    /// Wire mapping learned by an earlier incarnation.
    pub(crate) wire_base: Option<u64>,
    pub(crate) figures: SpillFigures,
    /// The replication history the device continues, if it had one.
    pub(crate) history: Option<History>,
    /// The device was still in use when the primary stopped (a crash or power loss):
    /// whatever was in memory then is lost to the replica.
    pub(crate) lost_entries: bool,
    /// The regions the activity log has marked (format 2 only).
    pub(crate) activity_log: Option<DirtyRegions<KVVec<u64>>>,
    /// A copy of the whole volume was under way: the marked regions are what it has
    /// left.
    pub(crate) copy_pending: bool,
}

/// Everything under the log's mutex.
pub(crate) struct SpillState {
    ring: Ring,
    /// The ring as the newest superblock on disk records it.
    persisted: Ring,
    generation: u64,
    /// Recorded in every superblock.
    history: Option<History>,
    /// Recorded in every superblock: cleared only by a removal that lost nothing.
    in_use: bool,
    al: Option<AlGeometry>,
    /// Recorded in every superblock: a copy of the whole volume is under way.
    copy_pending: bool,
    /// Recorded in every superblock: an activity log write failed (writers went on).
    al_incomplete: bool,
    /// The newest superblock on disk records `al_incomplete`.
    al_incomplete_recorded: bool,
    /// One block of DMA-able memory: superblocks, record headers, wrap markers.
    block: KVVec<u8>,
    /// The batch being written, and its entries until they leave the FIFO.
    batch: KVVec<u8>,
    batch_entries: KVVec<Option<Arc<Entry>>>,
    reader: Reader,
}

/// The sender's read position and the records it has read but not yet freed.
struct Reader {
    /// Offset and sequence of the next record to read; `None`: start at the head.
    cursor: Option<(u64, u64)>,
    /// `(seq, offset, len)` of records read, oldest first, as a ring of fixed size.
    read: KVVec<(u64, u64, u64)>,
    read_head: usize,
    read_len: usize,
}

impl Reader {
    fn front(&self) -> Option<(u64, u64, u64)> {
        (self.read_len > 0).then(|| self.read[self.read_head])
    }

    fn pop_front(&mut self) {
        self.read_head = (self.read_head + 1) % self.read.len();
        self.read_len -= 1;
    }

    /// Appends a record; the caller checked there is room.
    fn push(&mut self, record: (u64, u64, u64)) {
        let at = (self.read_head + self.read_len) % self.read.len();
        self.read[at] = record;
        self.read_len += 1;
    }

    fn reset(&mut self) {
        self.cursor = None;
        self.read_head = 0;
        self.read_len = 0;
    }
}

/// Why construction refused a spill device; the message is already in the log.
pub(crate) struct Refused;

fn figures(ring: &Ring) -> SpillFigures {
    SpillFigures {
        entries: ring.tail_seq - ring.head_seq,
        bytes: ring.used(),
        capacity: ring.capacity(),
        head_seq: ring.head_seq,
        tail_seq: ring.tail_seq,
    }
}

/// How a construction takes the activity log on disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AlStart {
    /// Its marks are what the replica may lack.
    Load,
    /// Nothing is to be resynced: it is written cleared.
    Cleared,
    /// It cannot name what the replica lacks: it is written with every region marked.
    AllMarked,
}

/// Reads the activity log's marks, or writes it anew as `start` says. A block that
/// fails its checks marks all its regions, with a warning.
fn load_activity_log(
    io: &BlockIo,
    geometry: AlGeometry,
    volume_size: u64,
    start: AlStart,
) -> Result<DirtyRegions<KVVec<u64>>> {
    let region_bytes = geometry.region_bytes();
    let words = KVVec::from_elem(0u64, words_for(volume_size, region_bytes), GFP_KERNEL)?;
    let mut marks = DirtyRegions::new(words, volume_size, region_bytes).ok_or(EINVAL)?;
    let bytes = geometry.blocks as usize * AL_BLOCK as usize;
    let mut area = KVVec::from_elem(0u8, bytes, GFP_KERNEL)?;
    if start != AlStart::Load {
        if start == AlStart::AllMarked {
            marks.mark_all();
        }
        for index in 0..geometry.blocks {
            let at = index as usize * AL_BLOCK as usize;
            area[at..at + AL_BLOCK as usize].copy_from_slice(&encode_block(index, &marks));
        }
        io.write_through(geometry.block_offset(0), &area)?;
        return Ok(marks);
    }
    io.read(geometry.block_offset(0), &mut area)?;
    for index in 0..geometry.blocks {
        let at = index as usize * AL_BLOCK as usize;
        let mut block = [0u8; AL_BLOCK as usize];
        block.copy_from_slice(&area[at..at + AL_BLOCK as usize]);
        if !decode_block(&block, index, &mut marks) {
            pr_warn!(
                "activity log block {} on {} is damaged: all its regions will be resynced\n",
                index,
                io.name()
            );
        }
    }
    Ok(marks)
}

fn spill_error(err: SpillError) -> Error {
    pr_err!("spill log: {}\n", err);
    EIO
}

impl SpillLog {
    /// Opens the spill log on `io` for `volume`: formats a blank device, resumes this
    /// volume's log, refuses anything else with a message.
    pub(crate) fn open(
        io: BlockIo,
        volume: VolumeName,
        volume_size: u64,
        region_kb: u32,
    ) -> Result<(Pin<KBox<Self>>, Resume), Refused> {
        // A copy: `io` moves into the log below, and messages still name the device.
        let mut name_buf = [0u8; 16];
        let name_len = io.name().len().min(name_buf.len());
        name_buf[..name_len].copy_from_slice(&io.name().as_bytes()[..name_len]);
        let name = core::str::from_utf8(&name_buf[..name_len]).unwrap_or("?");
        let device_bytes = io.size_bytes();
        let fail = |what: &dyn core::fmt::Display| {
            pr_err!(
                "volume {}: spill device {} refused: {}\n",
                volume,
                name,
                what
            );
            Refused
        };
        let nomem = |_| fail(&"out of memory");
        let mut block = KVVec::from_elem(0u8, 2 * BLOCK as usize, GFP_KERNEL).map_err(nomem)?;
        io.read(0, &mut block)
            .map_err(|err| fail(&format_args!("cannot read it (error {})", err.to_errno())))?;
        let mut slots = [[0u8; BLOCK as usize]; 2];
        slots[0].copy_from_slice(&block[..BLOCK as usize]);
        slots[1].copy_from_slice(&block[BLOCK as usize..]);
        let found = probe([&slots[0], &slots[1]], &volume, volume_size, device_bytes)
            .map_err(|err| fail(&err))?;

        // A blank device, and an empty format 1 log closed cleanly, get the current
        // format with an activity log; a log with records keeps the format it was
        // written in, and an activity log its region size.
        let blank = matches!(found, Probe::Blank);
        let found = match found {
            Probe::Log(sb) => sb,
            Probe::Blank => Superblock {
                generation: 0,
                volume_size,
                volume,
                ring: Ring::empty(device_bytes, 1).map_err(|err| fail(&err))?,
                wire_base: None,
                history: None,
                in_use: false,
                al: None,
                copy_pending: false,
                al_incomplete: false,
            },
        };
        let idle = found.ring.is_empty() && !found.in_use && !found.copy_pending;
        let geometry = AlGeometry::for_volume(volume_size, region_kb);
        // A device too small for an activity log and a ring still takes a log without.
        let room = Ring::empty_from(geometry.ring_start(), device_bytes, 1).is_ok();
        let new_bitmap = room && (blank || (idle && found.al.is_none()));
        let al = if new_bitmap { Some(geometry) } else { found.al };
        if blank && !room {
            pr_warn!(
                "volume {}: spill device {} is too small for an activity log ({} bytes needed \
                 before the ring): a crash will need a resync of the whole volume\n",
                volume,
                name,
                geometry.ring_start()
            );
        }
        let (ring, wire_base) = if found.ring.is_empty() {
            // An empty log carries no records over: local numbering starts afresh, at
            // the wire sequence after the last entry it saw.
            let start = al.map_or(found.ring.start, |al| al.ring_start());
            let ring = Ring::empty_from(start, device_bytes, 1).map_err(|err| fail(&err))?;
            (ring, found.wire_base.map(|base| base + found.ring.tail_seq - 1))
        } else {
            (found.ring, found.wire_base)
        };
        let lost_entries = found.in_use;
        let history = found.history;
        let generation = found.generation;
        // An incomplete activity log is written anew, so the superblock need not keep
        // saying so: all marked if the replica may lack anything (a crash, or a copy
        // under way), else cleared (a clean removal left no tracked regions with it).
        let al_start = if new_bitmap {
            AlStart::Cleared
        } else if found.al_incomplete && (found.in_use || found.copy_pending) {
            pr_warn!(
                "volume {}: the activity log on {} missed marks when the device stopped (a \
                 write to it had failed): the whole volume will be resynced\n",
                volume,
                name
            );
            AlStart::AllMarked
        } else if found.al_incomplete {
            AlStart::Cleared
        } else {
            AlStart::Load
        };
        let marks = match al {
            Some(geometry) => {
                Some(load_activity_log(&io, geometry, volume_size, al_start).map_err(|err| {
                    fail(&format_args!("cannot use its activity log (error {})", err.to_errno()))
                })?)
            }
            None => {
                pr_info!(
                    "volume {}: the spill log on {} has no activity log (format 1, records \
                     held); a crash before it empties needs a resync of the whole volume\n",
                    volume,
                    name
                );
                None
            }
        };
        if lost_entries {
            pr_warn!(
                "volume {}: spill device {} says the device was not removed cleanly (a crash \
                 or power loss of the primary): the writes that were in memory are lost to \
                 the replica and a resync will cover them\n",
                volume,
                name
            );
        }
        let al_block = KVVec::from_elem(0u8, AL_BLOCK as usize, GFP_KERNEL).map_err(nomem)?;
        let state = SpillState {
            ring,
            persisted: ring,
            generation,
            history,
            in_use: true,
            al,
            copy_pending: found.copy_pending,
            al_incomplete: false,
            al_incomplete_recorded: false,
            block,
            batch: KVVec::from_elem(0u8, BATCH_BYTES, GFP_KERNEL).map_err(nomem)?,
            batch_entries: KVVec::from_elem(None, BATCH_ENTRIES, GFP_KERNEL).map_err(nomem)?,
            reader: Reader {
                cursor: None,
                read: KVVec::from_elem((0, 0, 0), READ_WINDOW, GFP_KERNEL).map_err(nomem)?,
                read_head: 0,
                read_len: 0,
            },
        };
        let log = KBox::pin_init(
            pin_init!(Self {
                io,
                volume,
                volume_size,
                al,
                state <- new_mutex!(state, "arepl_spill"),
                al_block <- new_mutex!(al_block, "arepl_al"),
            }),
            GFP_KERNEL,
        )
        .map_err(|_| fail(&"out of memory"))?;
        {
            let mut st = log.state.lock();
            if !ring.is_empty() {
                log.check_head(&mut st).map_err(|err| fail(&err))?;
                pr_info!(
                    "volume {}: resuming the spill log on {}: {} entries ({} bytes), sequences {} to {}\n",
                    volume,
                    log.io.name(),
                    ring.tail_seq - ring.head_seq,
                    ring.used(),
                    ring.head_seq,
                    ring.tail_seq - 1
                );
            }
            // In use from now on, until a removal that loses nothing says otherwise.
            log.persist(&mut st, ring, wire_base)
                .map_err(|err| fail(&format_args!("cannot write it (error {})", err.to_errno())))?;
        }
        let resume = Resume {
            first_seq: ring.tail_seq,
            wire_base,
            figures: figures(&ring),
            history,
            lost_entries,
            activity_log: marks,
            copy_pending: found.copy_pending,
        };
        Ok((log, resume))
    }

    /// The spill device's `major:minor` name.
    pub(crate) fn device_name(&self) -> &str {
        self.io.name()
    }

    /// Checks that the oldest record is where the superblock says, with its sequence.
    fn check_head(&self, st: &mut SpillState) -> Result<(), SpillError> {
        let (header, _) = self
            .read_header(st, st.ring.head)
            .map_err(|_| SpillError::BadRecord)?;
        if header.seq != st.ring.head_seq {
            return Err(SpillError::BadRecord);
        }
        Ok(())
    }

    /// Writes a superblock recording `ring`, after a cache flush, with FUA.
    fn persist(&self, st: &mut SpillState, ring: Ring, wire_base: Option<u64>) -> Result {
        let sb = Superblock {
            generation: st.generation + 1,
            volume_size: self.volume_size,
            volume: self.volume,
            ring,
            wire_base,
            history: st.history,
            in_use: st.in_use,
            al: st.al,
            copy_pending: st.copy_pending,
            al_incomplete: st.al_incomplete,
        };
        st.block[..BLOCK as usize].copy_from_slice(&sb.encode());
        self.io
            .write(sb.slot() * BLOCK, &st.block[..BLOCK as usize], true)?;
        st.al_incomplete_recorded = sb.al_incomplete;
        st.generation = sb.generation;
        st.ring = ring;
        st.persisted = ring;
        Ok(())
    }

    /// Writes the marks writers wait for (see `Replication::hold_activity`); only from
    /// a thread of this module, never from a write's submission.
    pub(crate) fn write_pending_marks(&self, repl: &Replication) -> Result {
        let pending = repl.queue.lock().al.as_ref().and_then(|al| al.unwritten());
        let result = match pending {
            Some(blocks) => self.write_activity_log(repl, blocks),
            None => Ok(()),
        };
        if let Err(err) = result {
            // The waiting writers go on unmarked (none waits forever): first the
            // superblock says so, and a crash resyncs the whole volume.
            self.record_incomplete_activity_log(repl, err);
        }
        repl.queue.lock().activity_log_failed = result.is_err();
        repl.activity_written.notify_all();
        result
    }

    /// Records in the superblock that writes went on without their marks.
    fn record_incomplete_activity_log(&self, repl: &Replication, err: Error) {
        let mut st = self.state.lock();
        let first = !core::mem::replace(&mut st.al_incomplete, true);
        if st.al_incomplete_recorded {
            return;
        }
        let wire_base = repl.queue.lock().wire_base;
        let ring = st.ring;
        let recorded = self.persist(&mut st, ring, wire_base);
        drop(st);
        match recorded {
            Ok(()) if first => pr_warn!(
                "volume {}: cannot write the activity log on {} (error {}): writes go on \
                 without their regions marked; if the primary crashes before the device is \
                 removed, the whole volume is resynced\n",
                self.volume,
                self.io.name(),
                err.to_errno()
            ),
            Ok(()) => {}
            // Every later superblock write tries again.
            Err(_) if first => pr_err!(
                "volume {}: cannot write the activity log nor the superblock on {} (error \
                 {}): writes go on without their regions marked; if the primary crashes \
                 before the device is removed, the replica may differ from the volume \
                 unless the device is created again with sync:full\n",
                self.volume,
                self.io.name(),
                err.to_errno()
            ),
            Err(_) => {}
        }
    }

    /// Whether the activity log on disk names every region the replica may lack.
    pub(crate) fn activity_log_complete(&self) -> bool {
        let st = self.state.lock();
        st.al.is_some() && !st.al_incomplete
    }

    /// Writes activity log blocks `blocks` as the tracker wants them now.
    fn write_activity_log(&self, repl: &Replication, blocks: BlockRange) -> Result {
        let Some(geometry) = self.al else {
            return Ok(());
        };
        let mut buffer = self.al_block.lock();
        for index in blocks.0..=blocks.1 {
            let words = match repl.queue.lock().al.as_ref() {
                Some(al) => al.snapshot(index),
                None => return Ok(()),
            };
            buffer.copy_from_slice(&encode_words(index, &words));
            self.io.write_through(geometry.block_offset(index), &buffer)?;
            if let Some(al) = repl.queue.lock().al.as_mut() {
                al.written(index, &words);
            }
        }
        Ok(())
    }

    /// Clears the regions of the activity log nothing holds any more, and the
    /// superblock's copy-pending flag once the copy is all acknowledged.
    pub(crate) fn clear_activity_log(&self, repl: &Replication) -> Result {
        if self.al.is_none() {
            return Ok(());
        }
        let (blocks, copy_acknowledged) = {
            let mut queue = repl.queue.lock();
            let QueueState {
                al, dirty, copy, acked_local, ..
            } = &mut *queue;
            let keep = |region| {
                dirty.is_marked(region) || copy.plan.still_to_copy(dirty.bounds(region).1)
            };
            let blocks = al.as_mut().and_then(|al| al.clear_idle(keep));
            (blocks, copy.plan.acknowledged(*acked_local))
        };
        if let Some(blocks) = blocks {
            self.write_activity_log(repl, blocks)?;
        }
        let mut st = self.state.lock();
        if st.copy_pending && copy_acknowledged {
            st.copy_pending = false;
            let wire_base = repl.queue.lock().wire_base;
            let ring = st.ring;
            self.persist(&mut st, ring, wire_base)?;
        }
        Ok(())
    }

    /// A copy of the whole volume begins: every region is marked on disk, and the
    /// superblock says a copy is pending, so an interruption resumes it.
    pub(crate) fn begin_whole_copy(&self, repl: &Replication) -> Result {
        if self.al.is_none() {
            return Ok(());
        }
        let blocks = repl.queue.lock().al.as_mut().and_then(|al| al.mark_all());
        if let Some(blocks) = blocks {
            self.write_activity_log(repl, blocks)?;
        }
        let mut st = self.state.lock();
        st.copy_pending = true;
        let wire_base = repl.queue.lock().wire_base;
        let ring = st.ring;
        self.persist(&mut st, ring, wire_base)
    }

    /// Records the history the device now continues, and the wire mapping that goes
    /// with it, before the stream goes on under it.
    pub(crate) fn record_history(&self, repl: &Replication, history: History) -> Result {
        let mut st = self.state.lock();
        let wire_base = repl.queue.lock().wire_base;
        st.history = Some(history);
        let ring = st.ring;
        self.persist(&mut st, ring, wire_base)
    }

    /// Last superblock of a removal: with `clean` (nothing lost: every entry is on
    /// the replica or in the log), the device is no longer in use, and the next
    /// construction continues its history without a resync.
    pub(crate) fn close(&self, repl: &Replication, clean: bool) -> Result {
        let mut st = self.state.lock();
        let (wire_base, next_seq) = {
            let queue = repl.queue.lock();
            (queue.wire_base, queue.fifo.next_seq())
        };
        let mut ring = st.ring;
        // Entries acknowledged straight from memory moved the stream past the log.
        ring.restart_at(next_seq);
        st.in_use = !clean;
        self.persist(&mut st, ring, wire_base)
    }

    /// Records on disk how far acknowledgements freed the log, if that moved.
    pub(crate) fn persist_head(&self, repl: &Replication) -> Result {
        let mut st = self.state.lock();
        if st.ring.head_seq == st.persisted.head_seq {
            return Ok(());
        }
        let wire_base = repl.queue.lock().wire_base;
        let ring = st.ring;
        self.persist(&mut st, ring, wire_base)
    }

    /// Moves the oldest entries of the FIFO, if none of them is being sent, to the end
    /// of the log, as one contiguous batch.
    pub(crate) fn spill_batch(&self, repl: &Replication) -> Result<BatchOutcome> {
        // Records carry payloads: those still only on the local device are read first.
        repl.read_back_oldest(BATCH_ENTRIES, BATCH_BYTES as u64)?;
        let mut st = self.state.lock();
        let wire_base = repl.queue.lock().wire_base;
        if st.ring.head_seq != st.persisted.head_seq {
            // Space freed since the last superblock must be on record before reuse.
            let ring = st.ring;
            self.persist(&mut st, ring, wire_base)?;
        }
        let mut ring = st.ring;
        let mut first_seq = 0;
        let mut first_at = None;
        let mut wrap_marker_at = None;
        let mut count = 0;
        let mut bytes = 0;
        {
            let SpillState {
                batch_entries,
                reader,
                ..
            } = &mut *st;
            let mut queue = repl.queue.lock();
            if queue.fifo.in_flight() != 0 || queue.fifo.is_empty() {
                return Ok(BatchOutcome::Idle);
            }
            if !ring.is_empty() && ring.tail_seq <= queue.acked_local + 1 {
                // Every record is on the replica, and acknowledgements may have taken
                // the FIFO past the log's end: drop them all (the sender frees records
                // only as it reads them), then continue where the FIFO is.
                ring.clear();
                reader.reset();
            }
            ring.restart_at(queue.fifo.head_seq());
            if queue.fifo.head_seq() != ring.tail_seq {
                pr_err!(
                    "volume {}: queue starts at sequence {} but the spill log ends at {}\n",
                    self.volume,
                    queue.fifo.head_seq(),
                    ring.tail_seq
                );
                return Err(EINVAL);
            }
            while count < BATCH_ENTRIES {
                let Some(queued) = queue.fifo.get(count).filter(|q| q.range.is_none()) else {
                    break;
                };
                let len = record_len(queued.entry.payload().map_or(0, Payload::len) as u64);
                if bytes + len > BATCH_BYTES as u64 {
                    break;
                }
                let Some(placement) = ring.place(len) else {
                    break;
                };
                if count > 0 && placement.wrap_marker_at.is_some() {
                    break; // The batch is one contiguous write; wrap in the next one.
                }
                if count == 0 {
                    first_seq = ring.tail_seq;
                    first_at = Some(placement.record_at);
                    wrap_marker_at = placement.wrap_marker_at;
                }
                ring.push(placement, len);
                batch_entries[count] = Some(queued.entry.clone());
                count += 1;
                bytes += len;
            }
        }
        let Some(first_at) = first_at else {
            return Ok(BatchOutcome::Full);
        };

        let result = self.write_batch(
            &mut st,
            first_seq,
            first_at,
            wrap_marker_at,
            count,
            bytes as usize,
        );
        let result = result.and_then(|()| self.persist(&mut st, ring, wire_base));
        if result.is_ok() {
            let mut queue = repl.queue.lock();
            for seq in first_seq..first_seq + count as u64 {
                // While the batch was written, an acknowledgement (a new session's
                // `Welcome` covering entries an earlier session sent) may have taken
                // some of its entries off the FIFO's head. Those are on the replica and
                // gone; what is left of the batch is at the head. Popping blindly would
                // take newer entries that are not in the log.
                if queue.fifo.head_seq() != seq {
                    continue;
                }
                if let Some(moved) = queue.fifo.pop_oldest() {
                    queue.budget.release(moved.entry.cost());
                    // In the log now: a crash replays it, its regions need no mark.
                    queue.release_activity(&moved.entry);
                    // The batch still holds a reference: nothing is freed under the lock.
                    drop(moved);
                }
            }
            queue.spill = figures(&st.ring);
        }
        // The entries' memory is freed here, outside the spinlock.
        for slot in st.batch_entries[..count].iter_mut() {
            *slot = None;
        }
        drop(st);
        result?;
        repl.space_freed.notify_all();
        repl.work.notify_all();
        Ok(BatchOutcome::Moved)
    }

    /// Encodes the batch's records into the batch buffer and writes them.
    fn write_batch(
        &self,
        st: &mut SpillState,
        first_seq: u64,
        first_at: u64,
        wrap_marker_at: Option<u64>,
        count: usize,
        bytes: usize,
    ) -> Result {
        let SpillState {
            batch,
            batch_entries,
            block,
            ..
        } = st;
        let mut pos = 0;
        for (i, entry) in batch_entries[..count].iter().enumerate() {
            let Some(entry) = entry else {
                return Err(EINVAL);
            };
            let payload_len = entry.payload().map_or(0, Payload::len);
            let len = record_len(payload_len as u64) as usize;
            let record = &mut batch[pos..pos + len];
            record[..BLOCK as usize]
                .copy_from_slice(&entry.record_header(first_seq + i as u64).encode());
            let (data, padding) = record[BLOCK as usize..].split_at_mut(payload_len);
            if let Some(payload) = entry.payload() {
                payload.copy_to(data);
            }
            padding.fill(0);
            pos += len;
        }
        if let Some(marker_at) = wrap_marker_at {
            let marker = RecordHeader {
                seq: first_seq,
                kind: RecordKind::Wrap,
                fua: false,
                offset: 0,
                length: 0,
                payload_crc: 0,
            };
            block[..BLOCK as usize].copy_from_slice(&marker.encode());
            self.io.write(marker_at, &block[..BLOCK as usize], false)?;
        }
        self.io.write(first_at, &batch[..bytes], false)
    }

    fn read_header(&self, st: &mut SpillState, at: u64) -> Result<(RecordHeader, u64)> {
        self.io.read(at, &mut st.block[..BLOCK as usize])?;
        let mut bytes = [0u8; BLOCK as usize];
        bytes.copy_from_slice(&st.block[..BLOCK as usize]);
        let header = RecordHeader::decode(&bytes).map_err(spill_error)?;
        if header.kind != RecordKind::Wrap {
            return Ok((header, at));
        }
        if at == st.ring.start {
            return Err(spill_error(SpillError::BadRecord));
        }
        // A wrap marker: the record is at the ring's start.
        let at = st.ring.start;
        self.io.read(at, &mut st.block[..BLOCK as usize])?;
        bytes.copy_from_slice(&st.block[..BLOCK as usize]);
        let header = RecordHeader::decode(&bytes).map_err(spill_error)?;
        Ok((header, at))
    }

    /// Locks the log for the sender's next decision.
    pub(crate) fn lock(&self) -> Guard<'_, SpillState, MutexBackend> {
        self.state.lock()
    }

    /// Frees records the receiver acknowledged (local sequence `acked` and older).
    pub(crate) fn free_acked(&self, st: &mut SpillState, queue: &mut QueueState) -> bool {
        let mut freed = false;
        while let Some((seq, at, len)) = st.reader.front() {
            if seq > queue.acked_local {
                break;
            }
            st.ring.pop(at, len);
            st.reader.pop_front();
            freed = true;
        }
        if freed {
            queue.spill = figures(&st.ring);
        }
        freed
    }

    /// Forgets what was read in the ended session; the next one reads from the head.
    pub(crate) fn reset_reader(&self, st: &mut SpillState) {
        st.reader.reset();
    }

    /// The next record to send, in sequence order. Records the receiver already holds
    /// are freed, not returned.
    pub(crate) fn read_next(&self, st: &mut SpillState, repl: &Replication) -> Result<NextRecord> {
        loop {
            let acked = {
                let mut queue = repl.queue.lock();
                self.free_acked(st, &mut queue);
                queue.acked_local
            };
            let (at, seq) = match st.reader.cursor {
                Some((at, seq)) if seq > st.ring.head_seq => (at, seq),
                _ => (st.ring.head, st.ring.head_seq),
            };
            if seq >= st.ring.tail_seq {
                return Ok(NextRecord::Exhausted);
            }
            if st.reader.read_len == st.reader.read.len() {
                return Ok(NextRecord::WindowFull);
            }
            let (header, at) = self.read_header(st, at)?;
            if header.seq != seq {
                pr_err!(
                    "volume {}: spill record at byte {} has sequence {}, expected {}\n",
                    self.volume,
                    at,
                    header.seq,
                    seq
                );
                return Err(EIO);
            }
            let payload_len = header.payload_len();
            let padded = payload_len.div_ceil(BLOCK) * BLOCK;
            let data = match padded {
                0 => None,
                _ => {
                    let mut data = self.io.read_payload(at + BLOCK, padded as usize)?;
                    data.truncate(payload_len as usize);
                    Some(data)
                }
            };
            header
                .check_payload_pieces(data.iter().flat_map(Payload::pieces))
                .map_err(spill_error)?;
            let len = record_len(payload_len);
            st.reader.push((seq, at, len));
            let next_at = if at + len == st.ring.end {
                st.ring.start
            } else {
                at + len
            };
            st.reader.cursor = Some((next_at, seq + 1));
            if seq <= acked {
                continue; // Durable on the replica already; freed on the next turn.
            }
            return Ok(NextRecord::Send(seq, Entry::from_record(&header, data)?));
        }
    }
}
