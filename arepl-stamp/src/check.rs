//! `check`: is an image a state the replica may legitimately be in?
//!
//! # Model
//!
//! Write x was in flight during the open event interval `(I(x), C(x))` of the log.
//! dm-arepl gives every write one place in the sequence it replicates, and that place is
//! taken while the write is in flight: after submission, before completion. A replica
//! that stops anywhere holds a prefix of that sequence. So the valid states are exactly
//! these: choose a cut `t` between two events; every write that completed before `t` is
//! applied, no write issued after `t` is, and each write in flight at `t` may be applied
//! or not. Call the applied set S. Equivalently, S is downward closed: if y is in S, every
//! write that completed before y was issued is in S too. Each block then holds the last
//! write of S to it in sequence order, which is completion order except between writes
//! that were in flight together: of those, either may have been sequenced last.
//!
//! # Algorithm
//!
//! Each block b holding write x confines the cut to an interval `(L_b, U_b)`:
//! - x is applied, so it was issued before the cut: `L_b = I(x)`;
//! - a write y to b issued after x completed would have overwritten x, so it must be left
//!   out, which is possible exactly when it has not completed by the cut: `U_b` is the
//!   smallest `C(y)` over such y. Writes to b that overlap x may be applied (x can still
//!   be sequenced after them), and writes completed before x was issued are overwritten.
//!
//! An all-zero block has `L_b = 0` and `U_b` = the smallest `C(y)` over all writes to b.
//! The constraints of different blocks concern different writes, so the image is valid
//! iff `max L_b < min U_b`, found in one pass over the log and one over the blocks.
//!
//! For a sequential log (`C(n) < I(n+1)`) this is the prefix rule: the image is the state
//! after write P for every P from the largest stamp up to (excluding) the earliest write
//! to any block after that block's stamp; every write leaves a distinct stamp, so the
//! range, when not empty, is a single P.

use std::fmt;
use std::io::Read;

use anyhow::Context;

use crate::geometry::Geometry;
use crate::log::{Log, WriteRecord};
use crate::scan::{scan_image, BlockDefect, REPORTED};

/// A range of cuts consistent with the image, and what the latest of them means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// The cut lies after this event (0: before the first)…
    pub after_event: u64,
    /// …and before this one (`None`: after the last event of the log).
    pub before_event: Option<u64>,
    /// Writes completed before the latest consistent cut: all applied.
    pub completed: u64,
    /// Writes in flight at the latest consistent cut: each applied or not.
    pub in_flight: u64,
    /// No two writes of the log were ever in flight together.
    pub sequential: bool,
    /// The write number before the first logged write.
    pub base: u64,
    /// The last logged write number (`base` for an empty log).
    pub last: u64,
}

impl Cut {
    /// P in "the state after write P": for a sequential log, the last applied write.
    pub fn prefix_end(&self) -> u64 {
        self.base + self.completed
    }
}

/// A block that still holds an older state although `Reordering::newest` is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    pub block: u64,
    pub holds: Option<WriteRecord>,
    /// The write to `block` that completed before `newest` was issued, yet is missing.
    pub missed: WriteRecord,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reordering {
    pub newest_block: u64,
    /// The write with the latest issue event found in the image.
    pub newest: WriteRecord,
    /// The first [`REPORTED`] stale blocks, in block order.
    pub stale: Vec<Stale>,
    pub stale_count: u64,
}

/// The cuts consistent with `contents` (the write each block holds, `None` for zeroes;
/// each one a logged write to that block, as [`crate::scan`] guarantees).
pub fn feasible_cut(log: &Log, contents: &[Option<WriteRecord>]) -> Result<Cut, Reordering> {
    let newest = contents
        .iter()
        .enumerate()
        .filter_map(|(block, held)| held.map(|w| (block as u64, w)))
        .max_by_key(|(_, w)| w.issued);
    let lower = newest.map_or(0, |(_, w)| w.issued);

    // For each block, the earliest-completing write that must not be applied.
    let mut must_exclude: Vec<Option<WriteRecord>> = vec![None; contents.len()];
    for y in log.writes() {
        let Some(held) = contents.get(y.block as usize) else {
            continue;
        };
        let overwrites_held = y.issued > held.map_or(0, |x| x.completed);
        let slot = &mut must_exclude[y.block as usize];
        if overwrites_held && slot.is_none_or(|u| y.completed < u.completed) {
            *slot = Some(*y);
        }
    }
    let upper = must_exclude.iter().flatten().map(|y| y.completed).min();

    if let Some((newest_block, newest)) = newest.filter(|_| upper.is_some_and(|u| u <= lower)) {
        let mut stale = Vec::new();
        let mut stale_count = 0;
        for (block, missed) in must_exclude.iter().enumerate() {
            if let Some(missed) = missed.filter(|y| y.completed <= lower) {
                stale_count += 1;
                if stale.len() < REPORTED {
                    stale.push(Stale {
                        block: block as u64,
                        holds: contents[block],
                        missed,
                    });
                }
            }
        }
        return Err(Reordering {
            newest_block,
            newest,
            stale,
            stale_count,
        });
    }
    Ok(describe_latest_cut(log, lower, upper))
}

fn describe_latest_cut(log: &Log, after_event: u64, before_event: Option<u64>) -> Cut {
    let before = before_event.unwrap_or(u64::MAX);
    let completed = log.writes().iter().filter(|w| w.completed < before).count();
    let in_flight = log
        .writes()
        .iter()
        .filter(|w| w.issued < before && w.completed >= before)
        .count();
    let sequential = log
        .writes()
        .windows(2)
        .all(|pair| pair[0].completed < pair[1].issued);
    let base = log.first_number().map_or(0, |n| n - 1);
    Cut {
        after_event,
        before_event,
        completed: completed as u64,
        in_flight: in_flight as u64,
        sequential,
        base,
        last: log.last_number().unwrap_or(base),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Consistent(Cut),
    /// Some blocks hold something no logged write put there.
    Damaged {
        defects: Vec<BlockDefect>,
        defect_count: u64,
        blocks: u64,
    },
    /// Every block holds a logged write, but no cut explains them together.
    Reordered {
        reordering: Reordering,
        last: u64,
    },
}

impl Verdict {
    pub fn is_consistent(&self) -> bool {
        matches!(self, Verdict::Consistent(_))
    }
}

/// Reads the image, then decides whether it is a state the log allows.
pub fn check(image: &mut impl Read, log: &Log, geometry: Geometry) -> anyhow::Result<Verdict> {
    log.ensure_fits(geometry)?;
    let scan = scan_image(image, log, geometry).context("cannot read the image")?;
    if scan.defect_count > 0 {
        return Ok(Verdict::Damaged {
            defects: scan.defects,
            defect_count: scan.defect_count,
            blocks: geometry.blocks(),
        });
    }
    Ok(match feasible_cut(log, &scan.contents) {
        Ok(cut) => Verdict::Consistent(cut),
        Err(reordering) => Verdict::Reordered {
            reordering,
            last: log.last_number().unwrap_or(0),
        },
    })
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Consistent(cut) => write_consistent(f, cut),
            Verdict::Damaged {
                defects,
                defect_count,
                blocks: total,
            } => {
                write!(
                    f,
                    "violation: {defect_count} of {} hold neither zeroes nor a logged write to \
                     them",
                    blocks(*total)
                )?;
                for d in defects {
                    write!(f, "\nviolation: block {}: {}", d.block, d.defect)?;
                }
                write_more(f, *defect_count, defects.len())
            }
            Verdict::Reordered { reordering, last } => write_reordered(f, reordering, *last),
        }
    }
}

fn write_consistent(f: &mut fmt::Formatter<'_>, cut: &Cut) -> fmt::Result {
    let (p, w) = (cut.prefix_end(), cut.last);
    if cut.sequential {
        let applied = if p > cut.base {
            format!("writes {}..={p} applied", cut.base + 1)
        } else {
            "no write applied".to_string()
        };
        let pending = if p < w {
            format!("{}..={w} not", p + 1)
        } else {
            "none pending".to_string()
        };
        return write!(
            f,
            "ok: image is the state after write {p} of {w} (prefix: {applied}, {pending})"
        );
    }
    let Some(before) = cut.before_event else {
        return write!(
            f,
            "ok: image is the state after write {p} of {w} (concurrent log: every write applied)"
        );
    };
    write!(
        f,
        "ok: image is the state after write {p} of {w} in completion order (concurrent log: a \
         cut between events {} and {before}: the first {} writes to complete are applied, {} \
         in flight there may be either)",
        cut.after_event, cut.completed, cut.in_flight
    )
}

fn write_reordered(f: &mut fmt::Formatter<'_>, r: &Reordering, last: u64) -> fmt::Result {
    write!(
        f,
        "violation: no prefix of the {last} logged writes yields this image: block {} holds \
         write {}, yet writes that completed before it was issued are missing from {}",
        r.newest_block,
        r.newest.number,
        blocks(r.stale_count)
    )?;
    for s in &r.stale {
        let holds = match s.holds {
            Some(w) => format!("write {}", w.number),
            None => "zeroes".to_string(),
        };
        write!(
            f,
            "\nviolation: block {} holds {holds}, but write {} to it completed (event {}) \
             before write {} was issued (event {})",
            s.block, s.missed.number, s.missed.completed, r.newest.number, r.newest.issued
        )?;
    }
    write_more(f, r.stale_count, r.stale.len())
}

/// "1 block", "2 blocks".
fn blocks(count: u64) -> String {
    format!("{count} {}", noun(count))
}

fn noun(count: u64) -> &'static str {
    if count == 1 {
        "block"
    } else {
        "blocks"
    }
}

fn write_more(f: &mut fmt::Formatter<'_>, total: u64, shown: usize) -> fmt::Result {
    match total.checked_sub(shown as u64) {
        Some(more) if more > 0 => write!(f, "\nviolation: … and {more} more {}", noun(more)),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
