//! Online verify on the receiving side: what a `Verify` entry's check found, and the
//! record of it that `replicad status` shows.
//!
//! A `Verify` entry says what one chunk of the volume hashes to on the primary at its
//! place in the write order ([`arepl_core::verify`]). The applier reaches it once every
//! earlier entry is written to the target (with positioned writes through the page
//! cache, so a read sees them all and nothing later), hashes the same bytes of the
//! replica, and on a difference hands the connection a [`ChunkMismatch`], which it sends
//! as a `Mismatch` frame before the `Ack` that covers the entry.
//!
//! The figures are kept in `<state-dir>/replicad.verify`, apart from the state file (its
//! format does not change), rewritten whole (temp file, fsync, rename, fsync of the
//! directory) at most once a second while checks flow, when the applier goes idle and
//! when a session ends. A missing file means no verify has run. Text, one field a line:
//!
//! ```text
//! arepl-verify 1
//! chunks 4096
//! bytes 1073741824
//! mismatches 1
//! last_seq 81234
//! mismatch 80017 268435456 262144
//! ```
//!
//! `chunks`, `bytes` and `mismatches` count every check since the record was created,
//! `last_seq` is the sequence of the last check, and each `mismatch` line (the last
//! [`KEPT_MISMATCHES`], oldest first) is a check that differed: its sequence, byte offset
//! and length.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arepl_core::wire::Header;

use crate::state::StateError;

/// Name of the verify record inside the state directory.
pub const VERIFY_FILE_NAME: &str = "replicad.verify";
/// Mismatched ranges the record keeps, the most recent ones.
pub const KEPT_MISMATCHES: usize = 16;
/// First line of the record: its format.
const HEADING: &str = "arepl-verify 1";
/// Longest wait before checks counted are written to the record while a session runs.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// A chunk whose bytes on the replica differ from the primary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMismatch {
    /// The `Verify` entry's sequence.
    pub seq: u64,
    /// The chunk's byte offset on the volume.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u32,
}

impl ChunkMismatch {
    /// The byte after the chunk.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }

    /// The `Mismatch` frame header that reports it to the sender.
    pub fn header(&self) -> Header {
        Header::mismatch(self.seq, self.offset, self.len)
    }
}

/// What the verify checks found so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyRecord {
    /// Chunks checked.
    pub chunks: u64,
    /// Bytes checked.
    pub bytes: u64,
    /// Chunks that differed.
    pub mismatches: u64,
    /// Sequence of the last check (0: none).
    pub last_seq: u64,
    /// The last [`KEPT_MISMATCHES`] chunks that differed, oldest first.
    pub recent: VecDeque<ChunkMismatch>,
}

impl VerifyRecord {
    /// Counts a check of `len` bytes at `offset` by entry `seq`; `matched` says how it
    /// came out.
    pub fn note(&mut self, seq: u64, offset: u64, len: u32, matched: bool) {
        self.chunks += 1;
        self.bytes += u64::from(len);
        self.last_seq = self.last_seq.max(seq);
        if !matched {
            self.mismatches += 1;
            if self.recent.len() == KEPT_MISMATCHES {
                self.recent.pop_front();
            }
            self.recent.push_back(ChunkMismatch { seq, offset, len });
        }
    }

    /// The file's text.
    pub fn encode(&self) -> String {
        let mut text = format!(
            "{HEADING}\nchunks {}\nbytes {}\nmismatches {}\nlast_seq {}\n",
            self.chunks, self.bytes, self.mismatches, self.last_seq
        );
        for m in &self.recent {
            text.push_str(&format!("mismatch {} {} {}\n", m.seq, m.offset, m.len));
        }
        text
    }

    /// Reads the file's text; `None` if it is not a record of this format.
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != HEADING {
            return None;
        }
        let mut record = Self::default();
        let mut seen = [false; 4];
        for line in lines {
            let mut words = line.split(' ');
            let key = words.next()?;
            let mut number = || words.next()?.parse::<u64>().ok();
            let field = match key {
                "chunks" => Some((0, &mut record.chunks)),
                "bytes" => Some((1, &mut record.bytes)),
                "mismatches" => Some((2, &mut record.mismatches)),
                "last_seq" => Some((3, &mut record.last_seq)),
                "mismatch" => None,
                _ => return None,
            };
            match field {
                Some((at, value)) => {
                    if std::mem::replace(&mut seen[at], true) {
                        return None;
                    }
                    *value = number()?;
                }
                None => {
                    let (seq, offset) = (number()?, number()?);
                    let len = u32::try_from(number()?).ok()?;
                    if record.recent.len() == KEPT_MISMATCHES {
                        return None;
                    }
                    record.recent.push_back(ChunkMismatch { seq, offset, len });
                }
            }
            if words.next().is_some() {
                return None;
            }
        }
        seen.iter().all(|&seen| seen).then_some(record)
    }
}

/// Reads the record in `dir` (for `status`); `Ok(None)` when no verify has run there.
pub fn load(dir: &Path) -> Result<Option<VerifyRecord>, StateError> {
    let path = dir.join(VERIFY_FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    VerifyRecord::parse(&text).map(Some).ok_or(StateError::Io {
        path,
        source: io::Error::new(ErrorKind::InvalidData, "not a verify record"),
    })
}

/// Writes `record` to `dir` atomically: a reader sees the old record or the new one.
pub fn store(dir: &Path, record: &VerifyRecord) -> Result<(), StateError> {
    let path = dir.join(VERIFY_FILE_NAME);
    let temp = dir.join(format!("{VERIFY_FILE_NAME}.tmp"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    };
    let mut file = File::create(&temp).map_err(io(&temp))?;
    file.write_all(record.encode().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&temp))?;
    std::fs::rename(&temp, &path).map_err(io(&path))?;
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io(dir))
}

/// The record of a replica's state directory, kept in memory and written back now and
/// then.
#[derive(Debug)]
pub struct VerifyLog {
    dir: PathBuf,
    record: VerifyRecord,
    /// Checks counted since the record was last written.
    dirty: bool,
    persisted_at: Option<Instant>,
    /// The last write failed (said once, until one succeeds).
    failing: bool,
}

impl VerifyLog {
    /// The record in `dir`; a new one if there is none, or if it cannot be read (said
    /// in the log: it is only figures for operators, and the next write replaces it).
    pub fn open(dir: &Path) -> Self {
        let record = match load(dir) {
            Ok(record) => record.unwrap_or_default(),
            Err(err) => {
                tracing::warn!("{err}; starting a new verify record");
                VerifyRecord::default()
            }
        };
        Self {
            dir: dir.to_path_buf(),
            record,
            dirty: false,
            persisted_at: None,
            failing: false,
        }
    }

    /// The figures so far.
    pub fn record(&self) -> &VerifyRecord {
        &self.record
    }

    /// Counts a check; see [`VerifyRecord::note`].
    pub fn note(&mut self, seq: u64, offset: u64, len: u32, matched: bool) {
        self.record.note(seq, offset, len, matched);
        self.dirty = true;
    }

    /// Writes the record if checks were counted since the last write, and `now` is
    /// set or the last write is [`PERSIST_INTERVAL`] old. A failure is logged (once,
    /// until a write succeeds), not passed on: replication does not stop over it.
    pub fn persist(&mut self, now: bool) {
        if !self.dirty
            || !(now
                || self
                    .persisted_at
                    .is_none_or(|at| at.elapsed() >= PERSIST_INTERVAL))
        {
            return;
        }
        match store(&self.dir, &self.record) {
            Ok(()) => {
                self.dirty = false;
                self.persisted_at = Some(Instant::now());
                if std::mem::take(&mut self.failing) {
                    tracing::info!("verify record written again");
                }
            }
            Err(err) => {
                // Retried at the next chance, not before an interval.
                self.persisted_at = Some(Instant::now());
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!("cannot write the verify record: {err}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_keeps_the_last_mismatches() {
        let mut record = VerifyRecord::default();
        for seq in 1..=40u64 {
            record.note(seq, seq * 4096, 4096, seq % 2 == 0);
        }
        assert_eq!(
            (
                record.chunks,
                record.bytes,
                record.mismatches,
                record.last_seq
            ),
            (40, 40 * 4096, 20, 40)
        );
        assert_eq!(record.recent.len(), KEPT_MISMATCHES);
        assert_eq!(record.recent.front().unwrap().seq, 9);
        assert_eq!(
            record.recent.back(),
            Some(&ChunkMismatch {
                seq: 39,
                offset: 39 * 4096,
                len: 4096
            })
        );
        let text = record.encode();
        assert!(text.starts_with(
            "arepl-verify 1\nchunks 40\nbytes 163840\nmismatches 20\nlast_seq 40\n\
             mismatch 9 36864 4096\n"
        ));
        assert_eq!(VerifyRecord::parse(&text), Some(record));
    }

    #[test]
    fn damaged_records_are_refused() {
        let good = "arepl-verify 1\nchunks 1\nbytes 512\nmismatches 1\nlast_seq 7\n\
                    mismatch 7 0 512\n";
        assert!(VerifyRecord::parse(good).is_some());
        for bad in [
            "",
            "arepl-verify 2\nchunks 1\nbytes 512\nmismatches 1\nlast_seq 7\n",
            "arepl-verify 1\nchunks 1\nbytes 512\nmismatches 1\n",
            "arepl-verify 1\nchunks 1\nchunks 1\nbytes 512\nmismatches 1\nlast_seq 7\n",
            "arepl-verify 1\nchunks x\nbytes 512\nmismatches 1\nlast_seq 7\n",
            "arepl-verify 1\nchunks 1 2\nbytes 512\nmismatches 1\nlast_seq 7\n",
            "arepl-verify 1\nchunks 1\nbytes 512\nmismatches 1\nlast_seq 7\nmismatch 7 0\n",
            "arepl-verify 1\nchunks 1\nbytes 512\nmismatches 1\nlast_seq 7\nother 1\n",
        ] {
            assert_eq!(VerifyRecord::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_log_writes_atomically_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let mut log = VerifyLog::open(dir.path());
        log.persist(true);
        assert_eq!(load(dir.path()).unwrap(), None, "nothing to write yet");
        log.note(3, 0, 4096, false);
        log.persist(false);
        let written = load(dir.path()).unwrap().unwrap();
        assert_eq!((written.chunks, written.mismatches), (1, 1));
        // Within the interval only a forced write goes out.
        log.note(4, 4096, 4096, true);
        log.persist(false);
        assert_eq!(load(dir.path()).unwrap().unwrap().chunks, 1);
        log.persist(true);
        assert_eq!(load(dir.path()).unwrap().unwrap().chunks, 2);
        assert!(!dir.path().join("replicad.verify.tmp").exists());
        let reopened = VerifyLog::open(dir.path());
        assert_eq!(reopened.record(), log.record());
        // An unreadable record is started anew.
        std::fs::write(dir.path().join(VERIFY_FILE_NAME), "garbage").unwrap();
        assert!(load(dir.path()).is_err());
        assert_eq!(
            VerifyLog::open(dir.path()).record(),
            &VerifyRecord::default()
        );
    }
}
