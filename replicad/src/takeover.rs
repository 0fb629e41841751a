//! One active session at a time.
//!
//! The sender reconnects after a link failure, possibly before this side noticed the old
//! connection died, so a new session that passed the identity check takes over: the
//! active one is cancelled, finishes its batch and releases the replica.

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
