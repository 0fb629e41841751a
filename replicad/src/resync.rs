//! What `Begin` and `ResyncDone` do to the replica, carried out on the applier's thread
//! in stream order (the decisions are [`crate::consistency`]'s).
//!
//! A resync first protects the replica's last consistent image ([`crate::protection`]),
//! then records durably that the replica is resyncing, all before any of its entries is
//! written: a crash in between leaves either the old image, recorded consistent, or a
//! replica recorded inconsistent, never an overwritten one recorded consistent. Once the
//! replica is durable through the resync's last entry it is recorded consistent again,
//! and only then is the protection snapshot removed.

use crate::applier::ApplyError;
use crate::consistency::{self, Begin, BeginPlan, Protect};
use crate::protection::{Image, ResyncProtection};
use crate::replica::Replica;
use crate::state::{Consistency, ReplicaState, StateError};
use crate::stats::Stats;

/// Carries out `begin`: adopts or checks the history, or protects the image and
/// records a resync. On an error nothing of it is recorded and nothing was written
/// (only a stale snapshot from an earlier resync may have been removed).
pub fn begin(
    replica: &mut Replica,
    protection: &ResyncProtection,
    begin: &Begin,
    stats: &Stats,
) -> Result<(), ApplyError> {
    let before = replica.state().clone();
    match consistency::plan(&before, begin)? {
        BeginPlan::Continue => {
            let resyncing = matches!(before.consistency, Consistency::Resyncing { .. });
            tracing::info!(
                "the stream continues history {} after seq {}{}",
                begin.history,
                begin.seq,
                if resyncing {
                    ", and with it the resync begun earlier: the replica stays inconsistent \
                     until it completes"
                } else {
                    ""
                }
            );
        }
        BeginPlan::Adopt(history) => {
            replica.record(|state| state.history = Some(history))?;
            tracing::info!(
                "the replica records history {history} from seq {} on (a new pairing, or a \
                 replica from before histories continued by sequence)",
                begin.seq
            );
        }
        BeginPlan::Resync { history, protect } => {
            let fresh = before.history.is_none() && before.durable_seq == 0;
            let snapshot = match protect {
                Protect::Image => {
                    release_stale_snapshot(replica, protection)?;
                    let state = replica.state();
                    let volume = state.identity.as_ref().map(|id| id.name.to_string());
                    let image = Image {
                        volume: volume.as_deref().unwrap_or_default(),
                        target: replica.volume().path(),
                        history: state.history,
                        durable_seq: state.durable_seq,
                        resync_history: history,
                    };
                    protection.protect(&image)?
                }
                // A fresh replica getting its initial copy is routine; anything else
                // losing its image unprotected is worth a warning.
                Protect::Nothing(why) if fresh => {
                    tracing::info!("the replica is not protected before this resync: {why}");
                    None
                }
                Protect::Nothing(why) => {
                    tracing::warn!("the replica is not protected before this resync: {why}");
                    None
                }
            };
            if let Some(diverged) = before.diverged {
                tracing::info!(
                    "the resync repairs the divergence recorded for seqs {}..={}: that record \
                     is cleared",
                    diverged.from_seq,
                    diverged.found_at
                );
            }
            let record = |state: &mut ReplicaState| {
                state.history = Some(history);
                state.consistency = Consistency::Resyncing { done_seq: None };
                state.diverged = None;
                if snapshot.is_some() {
                    state.protection_snapshot = snapshot;
                }
            };
            if begin.seq > before.durable_seq {
                replica.jump_to(begin.seq, record)?;
                stats.jumped(begin.seq);
                tracing::warn!(
                    "the resync's stream starts after seq {}, past the durable seq {}: the \
                     sender no longer holds seqs {}..={}, and the resync rewrites what they \
                     wrote",
                    begin.seq,
                    before.durable_seq,
                    before.durable_seq + 1,
                    begin.seq
                );
            } else {
                replica.record(record)?;
            }
            stats.resync_begun();
            let bytes = begin.resync_bytes.unwrap_or_default();
            if fresh {
                tracing::info!(
                    "initial copy under history {history} begins after seq {} ({bytes} bytes \
                     to copy): the replica is no consistent image until it completes",
                    begin.seq
                );
            } else {
                tracing::warn!(
                    "resync under history {history} begins after seq {} ({bytes} bytes to \
                     copy): the replica is no consistent image until it completes",
                    begin.seq
                );
            }
        }
    }
    stats.state_changed(replica.state());
    Ok(())
}

/// Records that the resync's last entry is `seq`, and completes it if the replica is
/// durable through it already. A replica not resyncing ignores it (a sender repeating
/// itself after a reconnect). Returns whether the replica became consistent.
pub fn done(
    replica: &mut Replica,
    protection: &ResyncProtection,
    seq: u64,
) -> Result<bool, StateError> {
    if replica.state().consistency == Consistency::Consistent {
        tracing::warn!("ResyncDone for seq {seq}, but no resync is in progress here; ignored");
        return Ok(false);
    }
    replica.record(|state| {
        state.consistency = Consistency::Resyncing {
            done_seq: Some(seq),
        }
    })?;
    tracing::info!(
        "the resync's last entry is seq {seq}: the replica is consistent again once durable \
         through it"
    );
    complete_if_due(replica, protection)
}

/// Records the replica consistent once it is durable through the resync's last entry,
/// then removes the protection snapshot. Returns whether it became consistent.
pub fn complete_if_due(
    replica: &mut Replica,
    protection: &ResyncProtection,
) -> Result<bool, StateError> {
    let state = replica.state();
    let Consistency::Resyncing {
        done_seq: Some(done),
    } = state.consistency
    else {
        return Ok(false);
    };
    if state.durable_seq < done {
        return Ok(false);
    }
    replica.record(|state| state.consistency = Consistency::Consistent)?;
    let state = replica.state();
    let history = state
        .history
        .expect("only a replica with a history resyncs");
    if let Some(diverged) = state.diverged {
        // The snapshot holds the only consistent image left: it stays.
        tracing::error!(
            "the resync completed at sequence {} (history {history}), but the replica diverged \
             during it (seqs {}..={}): it is still no consistent image",
            state.durable_seq,
            diverged.from_seq,
            diverged.found_at
        );
        return Ok(false);
    }
    tracing::info!(
        "replica consistent again at sequence {} (history {history})",
        state.durable_seq
    );
    release_snapshot(replica, protection)?;
    Ok(true)
}

/// At start-up: completes a resync made durable before a restart, and retries removing
/// a snapshot whose removal failed.
pub fn on_start(replica: &mut Replica, protection: &ResyncProtection) -> Result<(), StateError> {
    if complete_if_due(replica, protection)? {
        return Ok(());
    }
    release_stale_snapshot(replica, protection)
}

/// Removes a snapshot still recorded on a consistent replica: its removal failed after
/// an earlier resync, and it holds an older image than the replica's own.
fn release_stale_snapshot(
    replica: &mut Replica,
    protection: &ResyncProtection,
) -> Result<(), StateError> {
    if consistency::verdict(replica.state()) == consistency::Verdict::Consistent {
        release_snapshot(replica, protection)?;
    }
    Ok(())
}

fn release_snapshot(
    replica: &mut Replica,
    protection: &ResyncProtection,
) -> Result<(), StateError> {
    let Some(name) = replica.state().protection_snapshot.clone() else {
        return Ok(());
    };
    match protection.remove_snapshot(&name) {
        Ok(()) => {
            replica.record(|state| state.protection_snapshot = None)?;
            tracing::info!("removed LVM snapshot {name}: the replica is consistent again");
        }
        Err(why) => {
            tracing::warn!("cannot remove LVM snapshot {name}: {why}; retrying at the next start")
        }
    }
    Ok(())
}
