//! The replica's history and consistency: what `Welcome` tells the sender about them,
//! what a `Begin` does to them, and how operators see them.
//!
//! A replica fed a write-order stream is always an image of its primary at some earlier
//! moment. A resync breaks that: it copies blocks in whatever order, so from its `Begin`
//! until it is durable through its last entry the target is no image of any moment. The
//! state file records which history the replica belongs to and whether a resync is
//! under way; [`crate::resync`] carries the changes out.
//!
//! Pure decisions only; nothing here touches the target or the state file.

use std::fmt;

use arepl_core::history::{History, HistoryBlock, CONSISTENT, RESYNCING};

use crate::sequencer::ProtocolError;
use crate::state::{Consistency, ReplicaState};

/// A sender's `Begin`, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// The replica's durable sequence, where the stream under `history` resumes.
    pub seq: u64,
    /// The history the stream runs under.
    pub history: History,
    /// `Some(bytes copied)` when a resync begins here.
    pub resync_bytes: Option<u64>,
}

/// What the replica is, for `status`, `--check-consistent` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A consistent image of an earlier moment of its history.
    Consistent,
    /// A resync is under way.
    Resyncing,
    /// A digest check failed: the replica may differ from the primary.
    Diverged,
    /// No history recorded: a fresh replica, or one an older replicad recorded.
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Consistent => "consistent",
            Self::Resyncing => "resyncing",
            Self::Diverged => "inconsistent (diverged)",
            Self::Unknown => "unknown (no history)",
        })
    }
}

/// The verdict on `state`. Divergence comes first: a resync that diverges does not
/// make an image either.
pub fn verdict(state: &ReplicaState) -> Verdict {
    if state.diverged.is_some() {
        Verdict::Diverged
    } else if matches!(state.consistency, Consistency::Resyncing { .. }) {
        Verdict::Resyncing
    } else if state.history.is_none() {
        Verdict::Unknown
    } else {
        Verdict::Consistent
    }
}

/// Whether the target holds an image worth keeping: consistent with a history, or
/// written by a replicad before histories (which streamed in write order and did not
/// diverge). A fresh replica holds nothing the replication put there.
pub fn holds_consistent_image(state: &ReplicaState) -> bool {
    state.diverged.is_none()
        && state.consistency == Consistency::Consistent
        && (state.history.is_some() || state.durable_seq > 0)
}

/// The history block `Welcome` carries: the replica's history and whether it is a
/// consistent image or mid-resync, for the sender's [`arepl_core::history::decide`].
pub fn welcome_block(state: &ReplicaState) -> HistoryBlock {
    let mut flags = 0;
    if holds_consistent_image(state) {
        flags |= CONSISTENT;
    }
    if matches!(state.consistency, Consistency::Resyncing { .. }) {
        flags |= RESYNCING;
    }
    HistoryBlock {
        history: state.history,
        flags,
    }
}

/// What a `Begin` does to the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginPlan {
    /// The stream continues the replica's history; nothing changes (a replica found
    /// resyncing stays so: the sender continues its own interrupted resync).
    Continue,
    /// A replica without a history takes the stream's: a new pairing (the operator
    /// asserted the replica equals the volume) or an older replicad's replica that the
    /// sender continues by sequence.
    Adopt(History),
    /// A resync under `history` begins.
    Resync {
        /// The history it runs under.
        history: History,
        /// Whether the current image must be protected first.
        protect: Protect,
    },
}

/// Whether a resync protects the replica's image before writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protect {
    /// The replica is a consistent image: keep it (hook, snapshot) before anything of
    /// the resync is written.
    Image,
    /// There is nothing (more) to protect; the reason, for the log.
    Nothing(&'static str),
}

/// Decides what `begin` does to a replica in `state`; a stream that names another
/// history than the replica's without resyncing it is a protocol error.
pub fn plan(state: &ReplicaState, begin: &Begin) -> Result<BeginPlan, ProtocolError> {
    if begin.resync_bytes.is_some() {
        return Ok(BeginPlan::Resync {
            history: begin.history,
            protect: protection_needed(state),
        });
    }
    match state.history {
        None => Ok(BeginPlan::Adopt(begin.history)),
        Some(held) if held == begin.history => Ok(BeginPlan::Continue),
        Some(held) => Err(ProtocolError::OtherHistory {
            begun: begin.history,
            held,
        }),
    }
}

fn protection_needed(state: &ReplicaState) -> Protect {
    if holds_consistent_image(state) {
        Protect::Image
    } else if matches!(state.consistency, Consistency::Resyncing { .. }) {
        Protect::Nothing(
            "a resync interrupted earlier already overwrote parts of it; the last consistent \
             image was protected (if at all) when that resync began",
        )
    } else if state.diverged.is_some() {
        Protect::Nothing("it diverged from the primary and holds no consistent image")
    } else {
        Protect::Nothing("it is fresh (no history, nothing durable) and holds no image yet")
    }
}

/// Why `state` is or is not a consistent image, in one line for `--check-consistent`.
pub fn explain(state: &ReplicaState) -> String {
    let history = state
        .history
        .map_or_else(|| "none".to_string(), |history| history.to_string());
    let mut text = match verdict(state) {
        Verdict::Consistent => format!(
            "consistent: an image of history {history} at durable seq {}",
            state.durable_seq
        ),
        Verdict::Diverged => {
            let diverged = state.diverged.expect("the verdict says diverged");
            format!(
                "not consistent: the replica diverged from the primary in what seqs {}..={} \
                 wrote (found at seq {}); it needs a resync",
                diverged.from_seq, diverged.found_at, diverged.found_at
            )
        }
        Verdict::Resyncing => {
            let end = match state.consistency {
                Consistency::Resyncing {
                    done_seq: Some(done),
                } => format!("it ends at seq {done}, durable at {}", state.durable_seq),
                _ => "its end is not known yet".to_string(),
            };
            format!(
                "not consistent: a resync under history {history} is in progress ({end}); the \
                 target mixes the last image with blocks copied since"
            )
        }
        Verdict::Unknown => "not known to be consistent: no history recorded (a fresh \
                             replica, or one recorded by a replicad before histories)"
            .to_string(),
    };
    if let Some(snapshot) = &state.protection_snapshot {
        if verdict(state) != Verdict::Consistent {
            text.push_str(&format!(
                "; the last consistent image is kept in LVM snapshot {snapshot}"
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Divergence;

    const A: History = History {
        uuid: [0xA1; 16],
        counter: 3,
    };
    const B: History = History {
        uuid: [0xB2; 16],
        counter: 1,
    };

    fn with_history(durable_seq: u64) -> ReplicaState {
        ReplicaState {
            durable_seq,
            history: Some(A),
            ..ReplicaState::fresh()
        }
    }

    fn resyncing() -> ReplicaState {
        ReplicaState {
            consistency: Consistency::Resyncing { done_seq: None },
            ..with_history(10)
        }
    }

    fn diverged(state: ReplicaState) -> ReplicaState {
        ReplicaState {
            diverged: Some(Divergence {
                from_seq: 4,
                found_at: 6,
            }),
            ..state
        }
    }

    fn begin(history: History, resync: bool) -> Begin {
        Begin {
            seq: 10,
            history,
            resync_bytes: resync.then_some(1 << 20),
        }
    }

    #[test]
    fn verdicts_and_welcome_flags() {
        let legacy = ReplicaState {
            durable_seq: 10,
            ..ReplicaState::fresh()
        };
        let cases = [
            (ReplicaState::fresh(), Verdict::Unknown, 0),
            (legacy.clone(), Verdict::Unknown, CONSISTENT),
            (with_history(0), Verdict::Consistent, CONSISTENT),
            (with_history(10), Verdict::Consistent, CONSISTENT),
            (resyncing(), Verdict::Resyncing, RESYNCING),
            (diverged(with_history(10)), Verdict::Diverged, 0),
            (diverged(legacy), Verdict::Diverged, 0),
            (diverged(resyncing()), Verdict::Diverged, RESYNCING),
        ];
        for (state, expected, flags) in cases {
            assert_eq!(verdict(&state), expected, "{state:?}");
            let block = welcome_block(&state);
            assert_eq!(block.flags, flags, "{state:?}");
            assert_eq!(block.history, state.history);
        }
        assert_eq!(Verdict::Diverged.to_string(), "inconsistent (diverged)");
        assert_eq!(Verdict::Unknown.to_string(), "unknown (no history)");
    }

    #[test]
    fn begin_without_resync_adopts_continues_or_is_refused() {
        assert_eq!(
            plan(&ReplicaState::fresh(), &begin(B, false)),
            Ok(BeginPlan::Adopt(B))
        );
        assert_eq!(
            plan(&with_history(10), &begin(A, false)),
            Ok(BeginPlan::Continue)
        );
        // The sender continuing its own interrupted resync.
        assert_eq!(
            plan(&resyncing(), &begin(A, false)),
            Ok(BeginPlan::Continue)
        );
        let err = plan(&with_history(10), &begin(B, false)).unwrap_err();
        assert_eq!(err, ProtocolError::OtherHistory { begun: B, held: A });
        assert!(err
            .to_string()
            .starts_with("Begin continues history b2b2b2b2-b2b2-b2b2-b2b2-b2b2b2b2b2b2:1 but this replica holds a1a1a1a1-"));
        // Another generation of the same history is another history too.
        assert!(plan(&with_history(10), &begin(A.next_generation(), false)).is_err());
    }

    #[test]
    fn only_a_consistent_image_is_protected_before_a_resync() {
        let next = A.next_generation();
        let protect = |state: &ReplicaState| match plan(state, &begin(next, true)) {
            Ok(BeginPlan::Resync { history, protect }) => {
                assert_eq!(history, next);
                protect
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(protect(&with_history(10)), Protect::Image);
        let legacy = ReplicaState {
            durable_seq: 10,
            ..ReplicaState::fresh()
        };
        assert_eq!(protect(&legacy), Protect::Image);
        for state in [
            ReplicaState::fresh(),
            resyncing(),
            diverged(with_history(10)),
        ] {
            assert!(matches!(protect(&state), Protect::Nothing(_)), "{state:?}");
        }
    }

    #[test]
    fn explanations_say_why() {
        assert!(explain(&with_history(7)).starts_with("consistent: an image of history "));
        let mid = ReplicaState {
            consistency: Consistency::Resyncing { done_seq: Some(40) },
            protection_snapshot: Some("vg/db_arepl_resync".to_string()),
            ..with_history(30)
        };
        let text = explain(&mid);
        assert!(
            text.contains("(it ends at seq 40, durable at 30)"),
            "{text}"
        );
        assert!(
            text.ends_with("kept in LVM snapshot vg/db_arepl_resync"),
            "{text}"
        );
        assert!(explain(&diverged(with_history(7))).contains("seqs 4..=6"));
        assert!(explain(&ReplicaState::fresh()).contains("no history recorded"));
    }
}
