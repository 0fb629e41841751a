//! The write log: which write went to which block, and when it was in flight.
//!
//! A UTF-8 text file, one record per line, fields separated by single spaces:
//!
//! ```text
//! arepl-stamp log v1
//! run first=1 count=3 seed=7 block_size=4096 blocks=64 jobs=2
//! w 1 3 1 3
//! w 2 50 2 5
//! w 3 35 4 6
//! ```
//!
//! - The first line identifies the format.
//! - `run` opens the records of one `arepl-stamp write` invocation: its first write
//!   number, how many writes follow (so a truncated log is detected), the seed, the
//!   block size, the number of blocks writes were spread over and the number of
//!   concurrent submitters.
//! - `w NUMBER BLOCK ISSUED COMPLETED` is one write, in write-number order. `ISSUED` and
//!   `COMPLETED` are values of one global event counter, taken just before the write was
//!   submitted and just after it returned. They are distinct, increase over the whole
//!   file, and `COMPLETED(x) < ISSUED(y)` means x finished before y started; overlapping
//!   intervals mean the two writes were in flight together.
//!
//! Each invocation appends one `run` section at its end (then fsyncs the file), so a
//! test can run a workload in phases: write numbers and events continue where the
//! previous section stopped. All sections share one block size.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use thiserror::Error;

use crate::geometry::Geometry;
use crate::stamp::target_block;

pub const FORMAT_LINE: &str = "arepl-stamp log v1";

/// One `arepl-stamp write` invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first: u64,
    pub count: u64,
    pub seed: u64,
    pub block_size: usize,
    pub blocks: u64,
    pub jobs: usize,
}

/// One write and the events that bracket it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRecord {
    pub number: u64,
    pub block: u64,
    pub issued: u64,
    pub completed: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LogError {
    #[error("log line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("log run starting at write {first}: {reason}")]
    Inconsistent { first: u64, reason: String },
    #[error("log {0}")]
    Geometry(String),
}

/// All runs of a log, validated: write numbers contiguous, events increasing from run to
/// run, every block where the seed sends it.
#[derive(Debug, Clone, Default)]
pub struct Log {
    runs: Vec<Run>,
    writes: Vec<WriteRecord>,
    last_event: u64,
}

impl Log {
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Every write, in write-number order.
    pub fn writes(&self) -> &[WriteRecord] {
        &self.writes
    }

    pub fn first_number(&self) -> Option<u64> {
        self.writes.first().map(|w| w.number)
    }

    pub fn last_number(&self) -> Option<u64> {
        self.writes.last().map(|w| w.number)
    }

    /// The number the next run must start with.
    pub fn next_number(&self) -> u64 {
        self.last_number().map_or(1, |n| n + 1)
    }

    /// The largest event in the log (0 for an empty log); the next run counts on from it.
    pub fn last_event(&self) -> u64 {
        self.last_event
    }

    pub fn block_size(&self) -> Option<usize> {
        self.runs.first().map(|r| r.block_size)
    }

    pub fn get(&self, number: u64) -> Option<&WriteRecord> {
        let index = number.checked_sub(self.first_number()?)?;
        self.writes.get(usize::try_from(index).ok()?)
    }

    /// The run that issued write `number`.
    pub fn run_of(&self, number: u64) -> Option<&Run> {
        let after = self.runs.partition_point(|r| r.first <= number);
        let run = self.runs.get(after.checked_sub(1)?)?;
        (number < run.first + run.count).then_some(run)
    }

    /// Adds the records of one run after checking them against the log so far.
    pub fn push_run(&mut self, run: Run, writes: Vec<WriteRecord>) -> Result<(), LogError> {
        self.validate_run(&run, &writes)
            .map_err(|reason| LogError::Inconsistent {
                first: run.first,
                reason,
            })?;
        self.last_event = writes
            .iter()
            .map(|w| w.completed)
            .fold(self.last_event, u64::max);
        self.runs.push(run);
        self.writes.extend(writes);
        Ok(())
    }

    fn validate_run(&self, run: &Run, writes: &[WriteRecord]) -> Result<(), String> {
        Geometry::new(run.block_size, run.blocks).map_err(|e| e.to_string())?;
        if run.jobs == 0 {
            return Err("jobs must be at least 1".into());
        }
        if run.first == 0 {
            return Err("write numbers start at 1".into());
        }
        if !self.writes.is_empty() && run.first != self.next_number() {
            return Err(format!("numbering must continue at {}", self.next_number()));
        }
        if let Some(size) = self.block_size().filter(|&s| s != run.block_size) {
            return Err(format!(
                "block size {} differs from earlier runs ({size})",
                run.block_size
            ));
        }
        if writes.len() as u64 != run.count {
            return Err(format!(
                "announces {} writes but {} follow (truncated log?)",
                run.count,
                writes.len()
            ));
        }
        for (expected, w) in (run.first..).zip(writes) {
            if w.number != expected {
                return Err(format!("write {} where {expected} was due", w.number));
            }
            if w.block != target_block(run.seed, w.number, run.blocks) {
                return Err(format!(
                    "write {} logged at block {}, but the seed sends it to block {}",
                    w.number,
                    w.block,
                    target_block(run.seed, w.number, run.blocks)
                ));
            }
            if w.issued >= w.completed || w.issued <= self.last_event {
                return Err(format!(
                    "write {} has events {}..{}: must increase and follow event {}",
                    w.number, w.issued, w.completed, self.last_event
                ));
            }
        }
        Ok(())
    }

    /// Whether an image of `geometry` can be checked against this log.
    pub fn ensure_fits(&self, geometry: Geometry) -> Result<(), LogError> {
        for run in &self.runs {
            if run.block_size != geometry.block_size() {
                return Err(LogError::Geometry(format!(
                    "uses block size {}, not {}",
                    run.block_size,
                    geometry.block_size()
                )));
            }
            if run.blocks > geometry.blocks() {
                return Err(LogError::Geometry(format!(
                    "run at write {} spreads writes over {} blocks, more than {}",
                    run.first,
                    run.blocks,
                    geometry.blocks()
                )));
            }
        }
        Ok(())
    }

    pub fn parse(text: &str) -> Result<Log, LogError> {
        let mut log = Log::default();
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        match lines.next() {
            None => return Ok(log),
            Some((_, FORMAT_LINE)) => {}
            Some((line, _)) => {
                return Err(LogError::Syntax {
                    line,
                    reason: format!("expected {FORMAT_LINE:?}"),
                })
            }
        }
        let mut open: Option<(usize, Run, Vec<WriteRecord>)> = None;
        let close = |log: &mut Log, open: Option<(usize, Run, Vec<WriteRecord>)>| {
            open.map_or(Ok(()), |(line, run, writes)| {
                log.push_run(run, writes).map_err(|e| LogError::Syntax {
                    line,
                    reason: e.to_string(),
                })
            })
        };
        for (line, text) in lines {
            let syntax = |reason: String| LogError::Syntax { line, reason };
            let mut fields = text.split(' ');
            match fields.next() {
                Some("run") => {
                    close(&mut log, open.take())?;
                    open = Some((line, parse_run(fields).map_err(syntax)?, Vec::new()));
                }
                Some("w") => {
                    let write = parse_write(fields).map_err(syntax)?;
                    match open.as_mut() {
                        Some((_, _, writes)) => writes.push(write),
                        None => return Err(syntax("write record before any run".into())),
                    }
                }
                _ => return Err(syntax(format!("unknown record {text:?}"))),
            }
        }
        close(&mut log, open)?;
        Ok(log)
    }

    /// Reads a log; a missing file is an error.
    pub fn load(path: &Path) -> anyhow::Result<Log> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read log {}", path.display()))?;
        Log::parse(&text).with_context(|| format!("invalid log {}", path.display()))
    }

    /// Reads a log, or starts an empty one if the file does not exist yet.
    pub fn load_or_new(path: &Path) -> anyhow::Result<Log> {
        match path.try_exists() {
            Ok(false) => Ok(Log::default()),
            _ => Log::load(path),
        }
    }
}

fn parse_u64(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

fn parse_run<'a>(fields: impl Iterator<Item = &'a str>) -> Result<Run, String> {
    let mut values = [None; 6];
    const KEYS: [&str; 6] = ["first", "count", "seed", "block_size", "blocks", "jobs"];
    for field in fields {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, found {field:?}"))?;
        let slot = KEYS
            .iter()
            .position(|&k| k == key)
            .ok_or_else(|| format!("unknown run field {key:?}"))?;
        values[slot] = Some(parse_u64(value)?);
    }
    let get = |slot: usize| values[slot].ok_or_else(|| format!("run lacks {}=", KEYS[slot]));
    let small = |slot: usize| {
        get(slot).and_then(|v| usize::try_from(v).map_err(|_| format!("{} too large", KEYS[slot])))
    };
    Ok(Run {
        first: get(0)?,
        count: get(1)?,
        seed: get(2)?,
        block_size: small(3)?,
        blocks: get(4)?,
        jobs: small(5)?,
    })
}

fn parse_write<'a>(mut fields: impl Iterator<Item = &'a str>) -> Result<WriteRecord, String> {
    let mut next = || -> Result<u64, String> {
        let field = fields.next().ok_or("write record needs 4 fields")?;
        parse_u64(field)
    };
    let record = WriteRecord {
        number: next()?,
        block: next()?,
        issued: next()?,
        completed: next()?,
    };
    if fields.next().is_some() {
        return Err("write record has more than 4 fields".into());
    }
    Ok(record)
}

/// The text of one run section, as [`append`] writes it.
pub fn render_run(run: &Run, writes: &[WriteRecord]) -> String {
    let mut text = format!(
        "run first={} count={} seed={} block_size={} blocks={} jobs={}\n",
        run.first, run.count, run.seed, run.block_size, run.blocks, run.jobs
    );
    for w in writes {
        text.push_str(&format!(
            "w {} {} {} {}\n",
            w.number, w.block, w.issued, w.completed
        ));
    }
    text
}

/// Appends one run section to the log at `path` (creating it with its format line) and
/// makes it durable: the file is fsynced, and so is its directory when it was created.
pub fn append(path: &Path, run: &Run, writes: &[WriteRecord]) -> io::Result<()> {
    let created = !path.try_exists()?;
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let mut out = BufWriter::new(&file);
    if file.metadata()?.len() == 0 {
        writeln!(out, "{FORMAT_LINE}")?;
    }
    out.write_all(render_run(run, writes).as_bytes())?;
    out.flush()?;
    drop(out);
    file.sync_all()?;
    if created {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first: u64, count: u64) -> Run {
        Run {
            first,
            count,
            seed: 7,
            block_size: 512,
            blocks: 16,
            jobs: 1,
        }
    }

    /// Sequential records: write n is in flight between events after `base`.
    fn sequential(run: &Run, base: u64) -> Vec<WriteRecord> {
        (run.first..run.first + run.count)
            .enumerate()
            .map(|(i, number)| WriteRecord {
                number,
                block: target_block(run.seed, number, run.blocks),
                issued: base + 2 * i as u64 + 1,
                completed: base + 2 * i as u64 + 2,
            })
            .collect()
    }

    fn two_runs() -> (Log, String) {
        let (a, b) = (
            run(1, 3),
            Run {
                jobs: 2,
                ..run(4, 2)
            },
        );
        let mut log = Log::default();
        log.push_run(a, sequential(&a, 0)).unwrap();
        log.push_run(b, sequential(&b, 6)).unwrap();
        let text = format!(
            "{FORMAT_LINE}\n{}{}",
            render_run(&a, &sequential(&a, 0)),
            render_run(&b, &sequential(&b, 6))
        );
        (log, text)
    }

    #[test]
    fn render_then_parse_round_trips() {
        let (log, text) = two_runs();
        let parsed = Log::parse(&text).unwrap();
        assert_eq!(parsed.runs(), log.runs());
        assert_eq!(parsed.writes(), log.writes());
        assert_eq!(parsed.next_number(), 6);
        assert_eq!(parsed.last_event(), 10);
        assert_eq!(parsed.get(4).unwrap().issued, 7);
        assert_eq!(parsed.run_of(4).unwrap().jobs, 2);
        assert_eq!(parsed.run_of(3).unwrap().jobs, 1);
        assert!(parsed.run_of(6).is_none() && parsed.get(0).is_none());
    }

    #[test]
    fn documented_example_parses() {
        let example = "arepl-stamp log v1\n\
                       run first=1 count=3 seed=7 block_size=4096 blocks=64 jobs=2\n\
                       w 1 3 1 3\nw 2 50 2 5\nw 3 35 4 6\n";
        let log = Log::parse(example).unwrap();
        assert_eq!(log.last_number(), Some(3));
        assert_eq!(log.last_event(), 6);
    }

    #[test]
    fn empty_text_is_an_empty_log() {
        let log = Log::parse("").unwrap();
        assert!(log.writes().is_empty());
        assert_eq!(log.next_number(), 1);
    }

    #[test]
    fn truncated_run_is_rejected() {
        let (_, text) = two_runs();
        let cut = text.trim_end().rsplit_once('\n').unwrap().0;
        let err = Log::parse(cut).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn gaps_wrong_blocks_and_stale_events_are_rejected() {
        let a = run(1, 3);
        let mut log = Log::default();
        log.push_run(a, sequential(&a, 0)).unwrap();
        let gap = run(5, 1);
        assert!(log.push_run(gap, sequential(&gap, 6)).is_err());
        let next = run(4, 1);
        let mut moved = sequential(&next, 6);
        moved[0].block = (moved[0].block + 1) % 16;
        assert!(log.push_run(next, moved).is_err());
        assert!(log.push_run(next, sequential(&next, 3)).is_err());
        assert!(log.push_run(next, sequential(&next, 6)).is_ok());
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Log::parse(&format!("{FORMAT_LINE}\nw 1 2 3 4\n")).unwrap_err();
        assert!(matches!(err, LogError::Syntax { line: 2, .. }), "{err}");
        let err = Log::parse(&format!("{FORMAT_LINE}\nrun first=1 count=x\n")).unwrap_err();
        assert!(matches!(err, LogError::Syntax { line: 2, .. }), "{err}");
        assert!(Log::parse("something else\n").is_err());
    }

    #[test]
    fn append_creates_then_extends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (a, b) = (run(1, 3), run(4, 2));
        append(&path, &a, &sequential(&a, 0)).unwrap();
        append(&path, &b, &sequential(&b, 6)).unwrap();
        let log = Log::load(&path).unwrap();
        assert_eq!(log.runs().len(), 2);
        assert_eq!(log.last_number(), Some(5));
        assert!(Log::load_or_new(&dir.path().join("absent"))
            .unwrap()
            .writes()
            .is_empty());
    }
}
