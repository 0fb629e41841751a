//! One active session at a time.
//!
//! The sender reconnects after a link failure (or fails over to its other link), possibly
//! before this side noticed the old connection died, so a new session that passed the
//! identity check takes over: the active one is cancelled, stops reading, and its applier
//! applies what was already queued, makes it all durable and only then releases the
//! replica.
//!
//! The new session reads the durable sequence for its `Welcome` only once it holds the
//! replica, so the `Welcome` covers every entry the old session applied: the sender
//! resends exactly from there, and nothing past the welcomed sequence is on the target.
//! (If the old session's final commit failed, the state stays behind what was written
//! and the sender resends those entries, which are written again, in order: what a failed
//! sync needs.) A sender that resends more than that, entries already durable, has them
//! skipped by the [`crate::sequencer::Sequencer`].

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

/// The cancellation handle of the active session.
#[derive(Debug, Default)]
pub struct SessionSlot {
    active: Mutex<Option<CancellationToken>>,
}

impl SessionSlot {
    /// Cancels the active session, if any, and returns the token of the new one; it is
    /// also cancelled when `shutdown` is.
    pub fn take_over(&self, shutdown: &CancellationToken) -> CancellationToken {
        let token = shutdown.child_token();
        let previous = self
            .active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .replace(token.clone());
        if let Some(previous) = previous {
            previous.cancel();
        }
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_new_session_cancels_the_previous_one() {
        let shutdown = CancellationToken::new();
        let slot = SessionSlot::default();
        let first = slot.take_over(&shutdown);
        assert!(!first.is_cancelled());
        let second = slot.take_over(&shutdown);
        assert!(first.is_cancelled() && !second.is_cancelled());
        shutdown.cancel();
        assert!(second.is_cancelled());
    }
}
