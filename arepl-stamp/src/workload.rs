//! `write`: issue stamped writes, one run of the log.
//!
//! Write numbers come from one atomic counter, so they are handed out in order; each
//! submitter then brackets its `pwrite` with two values of one global event counter.
//! With one job the brackets never overlap (completion order = issue order); with J
//! jobs up to J writes are in flight at once, and the log says exactly which.

use std::fmt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::aligned::AlignedBuf;
use crate::device::Device;
use crate::geometry::Geometry;
use crate::log::{self, Log, Run, WriteRecord};
use crate::stamp::{target_block, Stamp};

#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub geometry: Geometry,
    pub count: u64,
    pub seed: u64,
    /// First write number; `None` continues the log (1 for a new log).
    pub first: Option<u64>,
    pub jobs: usize,
    /// fdatasync after every write whose number is a multiple of this.
    pub fsync_every: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub first: u64,
    pub writes: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub jobs: usize,
    pub direct: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        let mib_per_s = self.bytes as f64 / (1 << 20) as f64 / seconds.max(1e-9);
        write!(
            f,
            "wrote {} writes ({}..={}), {} bytes in {seconds:.3} s, {mib_per_s:.1} MiB/s, jobs {}, {}",
            self.writes,
            self.first,
            self.first + self.writes - 1,
            self.bytes,
            self.jobs,
            if self.direct {
                "O_DIRECT"
            } else {
                "buffered (O_DIRECT refused with EINVAL)"
            }
        )
    }
}

/// Runs the workload on `device` and appends its records to the log at `log_path`.
/// On a failed write nothing is appended: the log only ever describes whole runs.
pub fn run(workload: &Workload, device: &Device, log_path: &Path) -> anyhow::Result<Summary> {
    let previous = Log::load_or_new(log_path)?;
    let first = resolve_first(workload, &previous)?;
    device
        .ensure_capacity(workload.geometry.bytes())
        .context("device too small")?;

    let started = Instant::now();
    let mut records = issue_all(workload, device, first, previous.last_event() + 1)?;
    device
        .file
        .sync_all()
        .context("fsync of the device failed; log not updated")?;
    let elapsed = started.elapsed();

    records.sort_unstable_by_key(|r| r.number);
    let run = Run {
        first,
        count: workload.count,
        seed: workload.seed,
        block_size: workload.geometry.block_size(),
        blocks: workload.geometry.blocks(),
        jobs: workload.jobs,
    };
    log::append(log_path, &run, &records)
        .with_context(|| format!("cannot append to log {}", log_path.display()))?;
    Ok(Summary {
        first,
        writes: workload.count,
        bytes: workload.count * workload.geometry.block_size() as u64,
        elapsed,
        jobs: workload.jobs,
        direct: device.direct,
    })
}

/// Numbering must continue the log exactly, or the checker could not tell phases apart.
fn resolve_first(workload: &Workload, previous: &Log) -> anyhow::Result<u64> {
    if let Some(size) = previous.block_size() {
        if size != workload.geometry.block_size() {
            bail!(
                "the log uses block size {size}, not {}",
                workload.geometry.block_size()
            );
        }
    }
    let due = previous.next_number();
    match workload.first {
        None => Ok(due),
        Some(first) if previous.writes().is_empty() && first >= 1 => Ok(first),
        Some(first) if first == due => Ok(first),
        Some(first) => {
            bail!("--first {first} does not continue the log, whose next write number is {due}")
        }
    }
}

/// Shared by the submitters: the next write number and the event clock.
#[derive(Debug)]
struct Counters {
    next_number: AtomicU64,
    end: u64,
    events: AtomicU64,
    failed: AtomicBool,
}

impl Counters {
    fn take_number(&self) -> Option<u64> {
        if self.failed.load(Ordering::SeqCst) {
            return None;
        }
        let number = self.next_number.fetch_add(1, Ordering::SeqCst);
        (number < self.end).then_some(number)
    }

    /// SeqCst read-modify-writes on one counter: if x's completion event is smaller than
    /// y's issue event, x's `pwrite` returned before y's was called.
    fn tick(&self) -> u64 {
        self.events.fetch_add(1, Ordering::SeqCst)
    }
}

fn issue_all(
    workload: &Workload,
    device: &Device,
    first: u64,
    first_event: u64,
) -> anyhow::Result<Vec<WriteRecord>> {
    let counters = Counters {
        next_number: AtomicU64::new(first),
        end: first + workload.count,
        events: AtomicU64::new(first_event),
        failed: AtomicBool::new(false),
    };
    let results: Vec<anyhow::Result<Vec<WriteRecord>>> = std::thread::scope(|scope| {
        let submitters: Vec<_> = (0..workload.jobs)
            .map(|_| scope.spawn(|| submit(workload, device, &counters)))
            .collect();
        submitters
            .into_iter()
            .map(|s| s.join().expect("submitter panicked"))
            .collect()
    });
    let mut records = Vec::with_capacity(workload.count as usize);
    for result in results {
        records.extend(result?);
    }
    Ok(records)
}

/// One submitter: take a number, stamp the block, write it, until numbers run out.
fn submit(
    workload: &Workload,
    device: &Device,
    counters: &Counters,
) -> anyhow::Result<Vec<WriteRecord>> {
    let geometry = workload.geometry;
    let mut buffer = AlignedBuf::zeroed(geometry.block_size());
    let mut records = Vec::new();
    while let Some(number) = counters.take_number() {
        let block = target_block(workload.seed, number, geometry.blocks());
        let stamp = Stamp {
            number,
            block,
            seed: workload.seed,
        };
        stamp.fill(buffer.as_mut_slice());
        let issued = counters.tick();
        if let Err(e) = device
            .file
            .write_all_at(buffer.as_slice(), geometry.offset(block))
        {
            counters.failed.store(true, Ordering::SeqCst);
            return Err(e).with_context(|| {
                format!("write {number} to block {block} failed; log not updated")
            });
        }
        let completed = counters.tick();
        // After the bracket: a flush changes no block, so the log need not know of it.
        if workload
            .fsync_every
            .is_some_and(|every| number % every == 0)
        {
            if let Err(e) = device.file.sync_data() {
                counters.failed.store(true, Ordering::SeqCst);
                return Err(e).with_context(|| {
                    format!("fdatasync after write {number} failed; log not updated")
                });
            }
        }
        records.push(WriteRecord {
            number,
            block,
            issued,
            completed,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{open, Access};

    fn workload(count: u64, jobs: usize, first: Option<u64>) -> Workload {
        Workload {
            geometry: Geometry::new(4096, 32).unwrap(),
            count,
            seed: 11,
            first,
            jobs,
            fsync_every: Some(3),
        }
    }

    #[test]
    fn phases_continue_numbering_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let (image, log_path) = (dir.path().join("image"), dir.path().join("log"));
        std::fs::File::create(&image).unwrap();
        let device = open(&image, Access::Write).unwrap();
        run(&workload(50, 1, None), &device, &log_path).unwrap();
        let summary = run(&workload(70, 4, Some(51)), &device, &log_path).unwrap();
        assert_eq!((summary.first, summary.writes), (51, 70));
        let log = Log::load(&log_path).unwrap();
        assert_eq!(log.last_number(), Some(120));
        let sequential = &log.writes()[..50];
        assert!(sequential.windows(2).all(|w| w[0].completed < w[1].issued));
        assert!(log.writes()[50..]
            .iter()
            .all(|w| w.issued > sequential[49].completed));
    }

    #[test]
    fn numbering_that_does_not_continue_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (image, log_path) = (dir.path().join("image"), dir.path().join("log"));
        std::fs::File::create(&image).unwrap();
        let device = open(&image, Access::Write).unwrap();
        run(&workload(5, 1, Some(1)), &device, &log_path).unwrap();
        let err = run(&workload(5, 1, Some(1)), &device, &log_path).unwrap_err();
        assert!(err.to_string().contains("next write number is 6"), "{err}");
    }
}
