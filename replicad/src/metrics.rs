//! The live figures in the Prometheus text exposition format, version 0.0.4.
//!
//! Figures about the replicated volume carry a `volume` label once the volume is known
//! (recorded in the state or welcomed in this run); figures about connections do not,
//! since a connection may end before it names a volume. An age is left out (its HELP and
//! TYPE lines stay) until the event it measures from has happened in this run.

use std::fmt::{Display, Write};
use std::time::Duration;

use crate::stats::Snapshot;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Renders `snapshot` as an exposition.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = Exposition {
        text: String::new(),
        volume: snapshot.volume.as_deref(),
    };
    let s = snapshot;
    out.volume_gauge(
        "replicad_received_sequence",
        "Highest sequence received from the sender and queued to apply.",
        s.received_seq,
    );
    out.volume_gauge(
        "replicad_applied_sequence",
        "Highest sequence written to the target.",
        s.applied_seq,
    );
    out.volume_gauge(
        "replicad_durable_sequence",
        "Highest sequence durable on the target and acknowledged to the sender.",
        s.durable_seq,
    );
    out.volume_gauge(
        "replicad_sequence_gap",
        "Received sequence minus durable sequence: entries received but not yet durable.",
        s.received_seq.saturating_sub(s.durable_seq),
    );
    out.volume_age(
        "replicad_last_frame_age_seconds",
        "Seconds since the last frame arrived from a sender (pings included).",
        s.since_last_frame,
    );
    out.volume_age(
        "replicad_durable_sequence_age_seconds",
        "Seconds since the durable sequence last advanced.",
        s.since_durable_advanced,
    );
    out.volume_counter(
        "replicad_applied_bytes_total",
        "Payload bytes of the writes applied to the target.",
        s.applied_bytes,
    );
    let entries = "replicad_applied_entries_total";
    out.header(
        entries,
        "counter",
        "Entries applied to the target, by kind.",
    );
    for (kind, count) in [
        ("write", s.applied_writes),
        ("flush", s.applied_flushes),
        ("discard", s.applied_discards),
        ("write_zeroes", s.applied_write_zeroes),
    ] {
        out.sample(entries, true, Some(("kind", kind)), count);
    }
    out.volume_counter(
        "replicad_group_commits_total",
        "Group commits: a target fdatasync followed by a state file update.",
        s.group_commits,
    );
    out.volume_counter(
        "replicad_skipped_entries_total",
        "Entries resent by the sender and skipped because they were applied before.",
        s.skipped_entries,
    );
    out.volume_counter(
        "replicad_reapply_skipped_entries_total",
        "Entries applied before a restart in this boot, not yet durable then, that were made \
         durable at start without being written again.",
        s.reapply_skipped,
    );
    let checks = "replicad_digest_checks_total";
    out.header(
        checks,
        "counter",
        "Sender digests compared with the digest of what was applied, by result.",
    );
    for (result, count) in [
        ("match", s.digest_checks_matched),
        ("mismatch", s.digest_checks_failed),
    ] {
        out.sample(checks, true, Some(("result", result)), count);
    }
    out.volume_gauge(
        "replicad_diverged",
        "1 once a digest check failed: the replica may differ from the primary and needs a \
         resync; 0 otherwise.",
        u64::from(s.diverged.is_some()),
    );
    out.volume_gauge(
        "replicad_diverged_from_sequence",
        "First sequence whose write the replica may lack or hold wrongly (0: not diverged).",
        s.diverged.map_or(0, |d| d.from_seq),
    );
    out.volume_counter(
        "replicad_verify_chunks_total",
        "Chunks an online verify checked: hashed on the replica once every entry before \
         their Verify entry was applied, and compared with the primary's hash.",
        s.verify_chunks,
    );
    out.volume_counter(
        "replicad_verify_bytes_total",
        "Bytes of the chunks an online verify checked.",
        s.verify_bytes,
    );
    out.volume_counter(
        "replicad_verify_mismatches_total",
        "Chunks an online verify found different from the primary's; each is reported to \
         the sender.",
        s.verify_mismatches,
    );
    out.volume_counter(
        "replicad_target_io_errors_total",
        "Failed writes or syncs of the target; each ends its session.",
        s.target_io_errors,
    );
    out.volume_counter(
        "replicad_state_io_errors_total",
        "Failed updates of the state file; each ends its session.",
        s.state_io_errors,
    );
    out.daemon_metric(
        "replicad_connections_accepted_total",
        "counter",
        "TCP connections accepted on the replication address.",
        s.connections_accepted,
    );
    out.daemon_metric(
        "replicad_sessions_active",
        "gauge",
        "Sessions streaming now (a new session takes over from an older one).",
        s.sessions_active,
    );
    out.daemon_metric(
        "replicad_session_errors_total",
        "counter",
        "Connections that ended with an error: bad input, a refused Hello, a lost link, \
         a Hello timeout, or a failed target or state update.",
        s.session_errors,
    );
    out.daemon_metric(
        "replicad_sessions_refused_total",
        "counter",
        "Hellos refused: another volume, or a size that does not match.",
        s.sessions_refused,
    );
    out.daemon_metric(
        "replicad_malformed_frames_total",
        "counter",
        "Frames that broke the wire format or the session rules; each drops its connection.",
        s.malformed_frames,
    );
    out.daemon_metric(
        "replicad_auth_failures_total",
        "counter",
        "Connections refused because the peer failed authentication: no key, an unknown \
         key, or a wrong proof; each is closed before any data frame is read.",
        s.auth_failures,
    );
    out.daemon_metric(
        "replicad_connections_busy_total",
        "counter",
        "Connections closed at once because too many others were still in their handshake.",
        s.connections_busy,
    );
    out.volume_gauge(
        "replicad_consistent",
        "1 when the replica is a consistent image of its history (not resyncing, not \
         diverged, a history recorded); 0 otherwise.",
        u64::from(s.consistent),
    );
    out.volume_gauge(
        "replicad_resyncing",
        "1 while a resync is under way: the replica is no consistent image until it completes.",
        u64::from(s.resyncing),
    );
    out.volume_gauge(
        "replicad_history_generation",
        "Generation counter of the replica's replication history (one more per resync); 0 \
         without a history.",
        s.history_generation,
    );
    out.volume_counter("replicad_resyncs_total", "Resyncs begun.", s.resyncs);
    out.volume_counter(
        "replicad_resync_protection_failures_total",
        "Resyncs refused because the before-resync hook or the LVM snapshot failed.",
        s.resync_protection_failures,
    );
    out.text
}

struct Exposition<'a> {
    text: String,
    volume: Option<&'a str>,
}

impl Exposition<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(
        &mut self,
        name: &str,
        per_volume: bool,
        extra: Option<(&str, &str)>,
        value: impl Display,
    ) {
        let volume = self.volume.filter(|_| per_volume).map(|v| ("volume", v));
        let labels: Vec<String> = volume
            .into_iter()
            .chain(extra)
            .map(|(key, value)| format!("{key}=\"{}\"", escape_label(value)))
            .collect();
        let _ = if labels.is_empty() {
            writeln!(self.text, "{name} {value}")
        } else {
            writeln!(self.text, "{name}{{{}}} {value}", labels.join(","))
        };
    }

    fn volume_gauge(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, "gauge", help);
        self.sample(name, true, None, value);
    }

    fn volume_counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, "counter", help);
        self.sample(name, true, None, value);
    }

    fn volume_age(&mut self, name: &str, help: &str, age: Option<Duration>) {
        self.header(name, "gauge", help);
        if let Some(age) = age {
            self.sample(name, true, None, format_args!("{:.3}", age.as_secs_f64()));
        }
    }

    fn daemon_metric(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.header(name, kind, help);
        self.sample(name, false, None, value);
    }
}

/// Escapes a label value as the format requires.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> Snapshot {
        Snapshot {
            volume: Some("db-01".to_string()),
            received_seq: 1040,
            applied_seq: 1030,
            durable_seq: 1024,
            applied_bytes: 4_198_400,
            applied_writes: 1000,
            applied_flushes: 20,
            applied_discards: 3,
            applied_write_zeroes: 1,
            group_commits: 77,
            skipped_entries: 12,
            reapply_skipped: 6,
            digest_checks_matched: 40,
            digest_checks_failed: 1,
            verify_chunks: 4096,
            verify_bytes: 1 << 30,
            verify_mismatches: 2,
            diverged: Some(crate::state::Divergence {
                from_seq: 900,
                found_at: 1000,
            }),
            connections_accepted: 5,
            sessions_active: 1,
            session_errors: 4,
            sessions_refused: 1,
            malformed_frames: 2,
            auth_failures: 3,
            connections_busy: 1,
            consistent: false,
            resyncing: true,
            history_generation: 3,
            resyncs: 2,
            resync_protection_failures: 1,
            target_io_errors: 0,
            state_io_errors: 0,
            since_last_frame: Some(Duration::from_millis(250)),
            since_durable_advanced: Some(Duration::from_micros(1_500_400)),
        }
    }

    #[test]
    fn a_known_snapshot_renders_exactly() {
        let expected = r#"# HELP replicad_received_sequence Highest sequence received from the sender and queued to apply.
# TYPE replicad_received_sequence gauge
replicad_received_sequence{volume="db-01"} 1040
# HELP replicad_applied_sequence Highest sequence written to the target.
# TYPE replicad_applied_sequence gauge
replicad_applied_sequence{volume="db-01"} 1030
# HELP replicad_durable_sequence Highest sequence durable on the target and acknowledged to the sender.
# TYPE replicad_durable_sequence gauge
replicad_durable_sequence{volume="db-01"} 1024
# HELP replicad_sequence_gap Received sequence minus durable sequence: entries received but not yet durable.
# TYPE replicad_sequence_gap gauge
replicad_sequence_gap{volume="db-01"} 16
# HELP replicad_last_frame_age_seconds Seconds since the last frame arrived from a sender (pings included).
# TYPE replicad_last_frame_age_seconds gauge
replicad_last_frame_age_seconds{volume="db-01"} 0.250
# HELP replicad_durable_sequence_age_seconds Seconds since the durable sequence last advanced.
# TYPE replicad_durable_sequence_age_seconds gauge
replicad_durable_sequence_age_seconds{volume="db-01"} 1.500
# HELP replicad_applied_bytes_total Payload bytes of the writes applied to the target.
# TYPE replicad_applied_bytes_total counter
replicad_applied_bytes_total{volume="db-01"} 4198400
# HELP replicad_applied_entries_total Entries applied to the target, by kind.
# TYPE replicad_applied_entries_total counter
replicad_applied_entries_total{volume="db-01",kind="write"} 1000
replicad_applied_entries_total{volume="db-01",kind="flush"} 20
replicad_applied_entries_total{volume="db-01",kind="discard"} 3
replicad_applied_entries_total{volume="db-01",kind="write_zeroes"} 1
# HELP replicad_group_commits_total Group commits: a target fdatasync followed by a state file update.
# TYPE replicad_group_commits_total counter
replicad_group_commits_total{volume="db-01"} 77
# HELP replicad_skipped_entries_total Entries resent by the sender and skipped because they were applied before.
# TYPE replicad_skipped_entries_total counter
replicad_skipped_entries_total{volume="db-01"} 12
# HELP replicad_reapply_skipped_entries_total Entries applied before a restart in this boot, not yet durable then, that were made durable at start without being written again.
# TYPE replicad_reapply_skipped_entries_total counter
replicad_reapply_skipped_entries_total{volume="db-01"} 6
# HELP replicad_digest_checks_total Sender digests compared with the digest of what was applied, by result.
# TYPE replicad_digest_checks_total counter
replicad_digest_checks_total{volume="db-01",result="match"} 40
replicad_digest_checks_total{volume="db-01",result="mismatch"} 1
# HELP replicad_diverged 1 once a digest check failed: the replica may differ from the primary and needs a resync; 0 otherwise.
# TYPE replicad_diverged gauge
replicad_diverged{volume="db-01"} 1
# HELP replicad_diverged_from_sequence First sequence whose write the replica may lack or hold wrongly (0: not diverged).
# TYPE replicad_diverged_from_sequence gauge
replicad_diverged_from_sequence{volume="db-01"} 900
# HELP replicad_verify_chunks_total Chunks an online verify checked: hashed on the replica once every entry before their Verify entry was applied, and compared with the primary's hash.
# TYPE replicad_verify_chunks_total counter
replicad_verify_chunks_total{volume="db-01"} 4096
# HELP replicad_verify_bytes_total Bytes of the chunks an online verify checked.
# TYPE replicad_verify_bytes_total counter
replicad_verify_bytes_total{volume="db-01"} 1073741824
# HELP replicad_verify_mismatches_total Chunks an online verify found different from the primary's; each is reported to the sender.
# TYPE replicad_verify_mismatches_total counter
replicad_verify_mismatches_total{volume="db-01"} 2
# HELP replicad_target_io_errors_total Failed writes or syncs of the target; each ends its session.
# TYPE replicad_target_io_errors_total counter
replicad_target_io_errors_total{volume="db-01"} 0
# HELP replicad_state_io_errors_total Failed updates of the state file; each ends its session.
# TYPE replicad_state_io_errors_total counter
replicad_state_io_errors_total{volume="db-01"} 0
# HELP replicad_connections_accepted_total TCP connections accepted on the replication address.
# TYPE replicad_connections_accepted_total counter
replicad_connections_accepted_total 5
# HELP replicad_sessions_active Sessions streaming now (a new session takes over from an older one).
# TYPE replicad_sessions_active gauge
replicad_sessions_active 1
# HELP replicad_session_errors_total Connections that ended with an error: bad input, a refused Hello, a lost link, a Hello timeout, or a failed target or state update.
# TYPE replicad_session_errors_total counter
replicad_session_errors_total 4
# HELP replicad_sessions_refused_total Hellos refused: another volume, or a size that does not match.
# TYPE replicad_sessions_refused_total counter
replicad_sessions_refused_total 1
# HELP replicad_malformed_frames_total Frames that broke the wire format or the session rules; each drops its connection.
# TYPE replicad_malformed_frames_total counter
replicad_malformed_frames_total 2
# HELP replicad_auth_failures_total Connections refused because the peer failed authentication: no key, an unknown key, or a wrong proof; each is closed before any data frame is read.
# TYPE replicad_auth_failures_total counter
replicad_auth_failures_total 3
# HELP replicad_connections_busy_total Connections closed at once because too many others were still in their handshake.
# TYPE replicad_connections_busy_total counter
replicad_connections_busy_total 1
# HELP replicad_consistent 1 when the replica is a consistent image of its history (not resyncing, not diverged, a history recorded); 0 otherwise.
# TYPE replicad_consistent gauge
replicad_consistent{volume="db-01"} 0
# HELP replicad_resyncing 1 while a resync is under way: the replica is no consistent image until it completes.
# TYPE replicad_resyncing gauge
replicad_resyncing{volume="db-01"} 1
# HELP replicad_history_generation Generation counter of the replica's replication history (one more per resync); 0 without a history.
# TYPE replicad_history_generation gauge
replicad_history_generation{volume="db-01"} 3
# HELP replicad_resyncs_total Resyncs begun.
# TYPE replicad_resyncs_total counter
replicad_resyncs_total{volume="db-01"} 2
# HELP replicad_resync_protection_failures_total Resyncs refused because the before-resync hook or the LVM snapshot failed.
# TYPE replicad_resync_protection_failures_total counter
replicad_resync_protection_failures_total{volume="db-01"} 1
"#;
        assert_eq!(render(&busy()), expected);
    }

    #[test]
    fn without_a_volume_or_events_labels_and_ages_are_left_out() {
        let text = render(&Snapshot::default());
        assert!(text.contains("\nreplicad_durable_sequence 0\n"), "{text}");
        assert!(
            text.contains("\nreplicad_applied_entries_total{kind=\"flush\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("volume="), "{text}");
        for age in [
            "replicad_last_frame_age_seconds",
            "replicad_durable_sequence_age_seconds",
        ] {
            assert!(text.contains(&format!("# TYPE {age} gauge\n")), "{text}");
            assert!(!text.contains(&format!("\n{age} ")), "{text}");
        }
        // Every sample line belongs to the family announced right before it.
        let mut family = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(family), "{line} outside {family}");
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }
}
