//! `replicad status`: the persisted state, and the live figures of a running daemon.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;

use crate::consistency::{self, Verdict};
use crate::scrape::Sample;
use crate::state::{self, Consistency, ReplicaState, StateError};
use crate::verify::{self, VerifyRecord};

/// The persisted durable sequence, volume identity, history and consistency in `dir`,
/// one fact per line, then what the online verify found (see [`verify_lines`]).
pub fn persisted(dir: &Path) -> Result<String, StateError> {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let Some(snapshot) = state::inspect(dir)? else {
        let _ = writeln!(out, "state dir: {}", dir.display());
        let _ = writeln!(out, "durable seq: 0 (no state file yet)");
        let _ = writeln!(out, "volume: none recorded");
        let _ = writeln!(out, "history: none");
        let _ = writeln!(out, "consistency: {}", Verdict::Unknown);
        // Nothing replicated, nothing verified; unless a record says otherwise.
        if let Ok(Some(record)) = verify::load(dir) {
            verify_lines(&mut out, Ok(Some(record)));
        }
        return Ok(out);
    };
    let _ = writeln!(
        out,
        "state file: {}",
        dir.join(state::STATE_FILE_NAME).display()
    );
    let _ = writeln!(out, "durable seq: {}", snapshot.state.durable_seq);
    let _ = match &snapshot.state.identity {
        Some(identity) => writeln!(out, "volume: {} ({} bytes)", identity.name, identity.size),
        None => writeln!(out, "volume: none recorded"),
    };
    let _ = match snapshot.state.digest {
        Some(digest) => writeln!(out, "digest: {:#018x}", digest.0),
        None => writeln!(
            out,
            "digest: unknown (taken from the sender at the next session)"
        ),
    };
    if let Some(diverged) = snapshot.state.diverged {
        let _ = writeln!(
            out,
            "DIVERGED: the replica may differ from the primary in what seqs {}..={} wrote \
             (found at seq {}); it needs a resync",
            diverged.from_seq, diverged.found_at, diverged.found_at
        );
    }
    history_lines(&mut out, &snapshot.state);
    let _ = writeln!(out, "generation: {}", snapshot.generation);
    for slot in snapshot.corrupt_slots {
        let _ = writeln!(
            out,
            "warning: slot {slot} is corrupt; the other slot is in use"
        );
    }
    verify_lines(&mut out, verify::load(dir));
    Ok(out)
}

/// What the online verify found, from its record ([`crate::verify`]):
///
/// ```text
/// verify: 4096 chunks checked (1073741824 bytes), 1 mismatched; last check at seq 81234
/// verify mismatch: bytes 268435456..268697600 differ from the primary (seq 80017)
/// ```
///
/// one `verify mismatch` line for each of the last mismatched chunks, oldest first;
/// `verify: none run` without a record.
fn verify_lines(out: &mut String, record: Result<Option<VerifyRecord>, StateError>) {
    let record = match record {
        Ok(Some(record)) => record,
        Ok(None) => {
            let _ = writeln!(out, "verify: none run");
            return;
        }
        Err(err) => {
            let _ = writeln!(out, "verify: record unreadable ({err})");
            return;
        }
    };
    let _ = writeln!(
        out,
        "verify: {} chunks checked ({} bytes), {} mismatched; last check at seq {}",
        record.chunks, record.bytes, record.mismatches, record.last_seq
    );
    for mismatch in &record.recent {
        let _ = writeln!(
            out,
            "verify mismatch: bytes {}..{} differ from the primary (seq {})",
            mismatch.offset,
            mismatch.end(),
            mismatch.seq
        );
    }
}

fn history_lines(out: &mut String, state: &ReplicaState) {
    let _ = match state.history {
        Some(history) => writeln!(out, "history: {history}"),
        None => writeln!(out, "history: none"),
    };
    let _ = writeln!(out, "consistency: {}", consistency::verdict(state));
    if let Consistency::Resyncing {
        done_seq: Some(done),
    } = state.consistency
    {
        let _ = writeln!(
            out,
            "resync ends at seq: {done} (consistent once durable through it)"
        );
    }
    if let Some(snapshot) = &state.protection_snapshot {
        let _ = writeln!(out, "protection snapshot: {snapshot}");
    }
}

/// `--check-consistent`: whether the replica in `dir` is a consistent image, and why
/// (or why not) in one line. No state file: nothing was ever replicated there.
pub fn check_consistent(dir: &Path) -> Result<(bool, String), StateError> {
    Ok(match state::inspect(dir)? {
        None => (
            false,
            format!(
                "not known to be consistent: no state file in {}",
                dir.display()
            ),
        ),
        Some(snapshot) => {
            let state = &snapshot.state;
            (
                consistency::verdict(state) == Verdict::Consistent,
                consistency::explain(state),
            )
        }
    })
}

/// How a figure is shown.
enum Shown {
    Plain,
    /// An age in seconds; absent means the event has not happened since start.
    Age,
    /// Followed by a unit.
    With(&'static str),
}

/// One line of the live table.
struct Row {
    caption: &'static str,
    metric: &'static str,
    /// The `kind` label the sample must have.
    kind: Option<&'static str>,
    shown: Shown,
}

const fn plain(caption: &'static str, metric: &'static str) -> Row {
    Row {
        caption,
        metric,
        kind: None,
        shown: Shown::Plain,
    }
}

const fn age(caption: &'static str, metric: &'static str) -> Row {
    Row {
        shown: Shown::Age,
        ..plain(caption, metric)
    }
}

const fn applied(caption: &'static str, kind: &'static str) -> Row {
    Row {
        kind: Some(kind),
        ..plain(caption, "replicad_applied_entries_total")
    }
}

/// The figures shown, in order.
const ROWS: &[Row] = &[
    plain("sessions active", "replicad_sessions_active"),
    plain("received seq", "replicad_received_sequence"),
    plain("applied seq", "replicad_applied_sequence"),
    plain("durable seq", "replicad_durable_sequence"),
    Row {
        shown: Shown::With(" entries"),
        ..plain("gap", "replicad_sequence_gap")
    },
    age("last frame", "replicad_last_frame_age_seconds"),
    age("durable advanced", "replicad_durable_sequence_age_seconds"),
    plain("bytes applied", "replicad_applied_bytes_total"),
    applied("writes applied", "write"),
    applied("flushes applied", "flush"),
    applied("discards applied", "discard"),
    applied("write-zeroes applied", "write_zeroes"),
    plain("group commits", "replicad_group_commits_total"),
    plain("skipped entries", "replicad_skipped_entries_total"),
    plain("reapply skipped", "replicad_reapply_skipped_entries_total"),
    plain("diverged", "replicad_diverged"),
    plain("diverged from seq", "replicad_diverged_from_sequence"),
    plain("consistent", "replicad_consistent"),
    plain("resyncing", "replicad_resyncing"),
    plain("history generation", "replicad_history_generation"),
    plain("resyncs", "replicad_resyncs_total"),
    plain(
        "protection failures",
        "replicad_resync_protection_failures_total",
    ),
    plain(
        "connections accepted",
        "replicad_connections_accepted_total",
    ),
    plain("session errors", "replicad_session_errors_total"),
    plain("sessions refused", "replicad_sessions_refused_total"),
    plain("malformed frames", "replicad_malformed_frames_total"),
    plain("auth failures", "replicad_auth_failures_total"),
    plain("target I/O errors", "replicad_target_io_errors_total"),
    plain("state I/O errors", "replicad_state_io_errors_total"),
    plain("verify chunks", "replicad_verify_chunks_total"),
    plain("verify bytes", "replicad_verify_bytes_total"),
    plain("verify mismatches", "replicad_verify_mismatches_total"),
];

/// The live figures scraped from `addr`, as an aligned table under a heading.
pub fn live(addr: SocketAddr, samples: &[Sample]) -> String {
    let find = |name: &str, kind: Option<&str>| {
        samples
            .iter()
            .find(|sample| sample.name == name && sample.label("kind") == kind)
    };
    let volume = find("replicad_durable_sequence", None)
        .and_then(|sample| sample.label("volume"))
        .unwrap_or("none recorded");
    let mut rows = vec![("volume", volume.to_string())];
    rows.extend(ROWS.iter().map(|row| {
        let value = find(row.metric, row.kind).map(|sample| sample.value.as_str());
        let text = match (value, &row.shown) {
            (Some(value), Shown::Plain) => value.to_string(),
            (Some(value), Shown::With(unit)) => format!("{value}{unit}"),
            (Some(value), Shown::Age) => format!("{value} s ago"),
            (None, Shown::Age) => "never since start".to_string(),
            // A daemon of another version may not have it.
            (None, _) => "n/a".to_string(),
        };
        (row.caption, text)
    }));
    let width = rows
        .iter()
        .map(|(caption, _)| caption.len())
        .max()
        .unwrap_or(0);
    let mut out = format!("live from http://{addr}/metrics:\n");
    for (caption, value) in rows {
        let _ = writeln!(out, "  {caption:width$}  {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Snapshot;
    use crate::{metrics, scrape};
    use std::time::Duration;

    #[test]
    fn live_figures_are_an_aligned_table() {
        let snapshot = Snapshot {
            volume: Some("db".to_string()),
            received_seq: 12,
            applied_seq: 11,
            durable_seq: 10,
            applied_bytes: 49152,
            applied_writes: 10,
            applied_flushes: 1,
            group_commits: 3,
            connections_accepted: 2,
            sessions_active: 1,
            session_errors: 1,
            malformed_frames: 1,
            consistent: true,
            history_generation: 2,
            resyncs: 1,
            since_last_frame: Some(Duration::from_millis(20)),
            verify_chunks: 8,
            verify_bytes: 32768,
            verify_mismatches: 1,
            ..Snapshot::default()
        };
        let samples = scrape::parse(&metrics::render(&snapshot));
        let addr = "127.0.0.1:9477".parse().unwrap();
        assert_eq!(
            live(addr, &samples),
            "live from http://127.0.0.1:9477/metrics:
  volume                db
  sessions active       1
  received seq          12
  applied seq           11
  durable seq           10
  gap                   2 entries
  last frame            0.020 s ago
  durable advanced      never since start
  bytes applied         49152
  writes applied        10
  flushes applied       1
  discards applied      0
  write-zeroes applied  0
  group commits         3
  skipped entries       0
  reapply skipped       0
  diverged              0
  diverged from seq     0
  consistent            1
  resyncing             0
  history generation    2
  resyncs               1
  protection failures   0
  connections accepted  2
  session errors        1
  sessions refused      0
  malformed frames      1
  auth failures         0
  target I/O errors     0
  state I/O errors      0
  verify chunks         8
  verify bytes          32768
  verify mismatches     1
"
        );
        assert!(live(addr, &[]).contains("\n  durable seq           n/a\n"));
    }

    #[test]
    fn persisted_state_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = persisted(dir.path()).unwrap();
        assert!(
            text.contains("durable seq: 0 (no state file yet)\n"),
            "{text}"
        );
        assert!(
            text.ends_with("consistency: unknown (no history)\n"),
            "{text}"
        );
        let (consistent, why) = check_consistent(dir.path()).unwrap();
        assert!(!consistent);
        assert!(
            why.starts_with("not known to be consistent: no state file"),
            "{why}"
        );
    }

    #[test]
    fn persisted_verify_figures_follow_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = state::StateStore::open(dir.path()).unwrap();
        store
            .persist(ReplicaState {
                durable_seq: 12,
                ..ReplicaState::fresh()
            })
            .unwrap();
        let text = persisted(dir.path()).unwrap();
        assert!(text.ends_with("\nverify: none run\n"), "{text}");
        let mut record = VerifyRecord::default();
        record.note(9, 0, 4096, true);
        record.note(10, 4096, 4096, false);
        record.note(12, 1 << 20, 8192, false);
        verify::store(dir.path(), &record).unwrap();
        let text = persisted(dir.path()).unwrap();
        assert!(
            text.contains("\ndurable seq: 12\n") && text.contains("\nconsistency: unknown"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\nverify: 3 chunks checked (16384 bytes), 2 mismatched; last check at seq 12\n\
                 verify mismatch: bytes 4096..8192 differ from the primary (seq 10)\n\
                 verify mismatch: bytes 1048576..1056768 differ from the primary (seq 12)\n"
            ),
            "{text}"
        );
        std::fs::write(dir.path().join(verify::VERIFY_FILE_NAME), "junk").unwrap();
        let text = persisted(dir.path()).unwrap();
        assert!(text.contains("\nverify: record unreadable ("), "{text}");
    }

    #[test]
    fn persisted_history_consistency_and_snapshot() {
        use arepl_core::history::History;
        let dir = tempfile::tempdir().unwrap();
        let mut store = state::StateStore::open(dir.path()).unwrap();
        let history = History {
            uuid: [0xAB; 16],
            counter: 2,
        };
        let resyncing = ReplicaState {
            durable_seq: 30,
            history: Some(history),
            consistency: Consistency::Resyncing { done_seq: Some(40) },
            protection_snapshot: Some("vg/db_arepl_resync".to_string()),
            ..ReplicaState::fresh()
        };
        store.persist(resyncing.clone()).unwrap();
        let text = persisted(dir.path()).unwrap();
        assert!(
            text.contains(
                "history: abababab-abab-abab-abab-abababababab:2\nconsistency: resyncing\n\
                 resync ends at seq: 40 (consistent once durable through it)\n\
                 protection snapshot: vg/db_arepl_resync\n"
            ),
            "{text}"
        );
        let (consistent, why) = check_consistent(dir.path()).unwrap();
        assert!(!consistent);
        assert!(why.contains("a resync under history abababab-"), "{why}");
        store
            .persist(ReplicaState {
                durable_seq: 40,
                consistency: Consistency::Consistent,
                protection_snapshot: None,
                ..resyncing
            })
            .unwrap();
        let text = persisted(dir.path()).unwrap();
        assert!(text.contains("\nconsistency: consistent\n"), "{text}");
        assert!(!text.contains("snapshot"), "{text}");
        assert_eq!(
            check_consistent(dir.path()).unwrap(),
            (
                true,
                "consistent: an image of history abababab-abab-abab-abab-abababababab:2 at \
                 durable seq 40"
                    .to_string()
            )
        );
    }
}
