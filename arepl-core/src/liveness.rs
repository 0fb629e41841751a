//! Whether the receiver at the other end of a session is alive, alive but slow, or gone.
//!
//! A receiver that applies more slowly than the sender sends stops reading for a while:
//! its `Ack`s and the answers to `Ping`s (which queue behind the data) come late. That is
//! no reason to drop the link, which only makes it start over. So the sender looks at
//! two signs of life besides the receiver's frames, as DRBD's `ko-count` does:
//! - the transport: TCP acknowledges bytes the receiver's host took in (the window moves);
//! - the replication: the acknowledged sequence advances.
//!
//! The link is **gone** when neither a frame nor transport progress came for
//! [`SILENCE_LIMIT_MS`]: pings go out every second, so a live host always has something
//! to acknowledge. The receiver is **slow** while it is alive but nothing it was sent has
//! been acknowledged for [`SILENCE_LIMIT_MS`]; after `ko_count` such periods in a row the
//! session is dropped as **too slow** (0 never drops). Everything here is a pure function
//! of what the sender observed, so it is tested in userspace.

/// A link with no sign of life for this long (ms) is dead; also the length of one
/// `ko_count` period.
pub const SILENCE_LIMIT_MS: i64 = 5_000;

/// What the sender saw at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Now, in milliseconds of a monotonic clock.
    pub now_ms: i64,
    /// When the receiver last sent a frame (ms).
    pub heard_ms: i64,
    /// The highest sequence it acknowledged.
    pub acked_seq: u64,
    /// The highest sequence sent to it.
    pub sent_seq: u64,
    /// Bytes of this connection the transport saw acknowledged (a counter).
    pub transport_acked_bytes: u64,
}

/// What the sender should do about the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Carry on.
    Alive,
    /// The receiver just became slow: alive, but nothing acknowledged for `stalled_ms`.
    TurnedSlow {
        /// Time since the acknowledged sequence last moved while entries were waiting.
        stalled_ms: i64,
    },
    /// Still slow; carry on.
    Slow,
    /// It acknowledges again after being slow for `slow_ms`.
    Recovered {
        /// How long it was stalled, from the last progress before.
        slow_ms: i64,
    },
    /// No frame and no transport progress for `silent_ms`: drop the link.
    Gone {
        /// Time since the last sign of life.
        silent_ms: i64,
    },
    /// Alive, but nothing acknowledged for `ko_count` periods: drop the session.
    TooSlow {
        /// Time since the acknowledged sequence last moved while entries were waiting.
        stalled_ms: i64,
    },
}

/// Tracks one session's receiver.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    ko_count: u32,
    acked_seq: u64,
    /// Last time the acknowledged sequence moved, or nothing was waiting for it.
    ack_progress_ms: i64,
    transport_acked_bytes: u64,
    transport_progress_ms: i64,
    slow: bool,
}

impl Liveness {
    /// A session that starts now, acknowledged through `acked_seq`, with the transport's
    /// counter at `transport_acked_bytes`.
    pub fn new(now_ms: i64, acked_seq: u64, transport_acked_bytes: u64, ko_count: u32) -> Self {
        Self {
            ko_count,
            acked_seq,
            ack_progress_ms: now_ms,
            transport_acked_bytes,
            transport_progress_ms: now_ms,
            slow: false,
        }
    }

    /// Whether the receiver is slow now (as last judged).
    pub fn is_slow(&self) -> bool {
        self.slow
    }

    /// Judges the link from `seen`.
    pub fn check(&mut self, seen: &Observation) -> Verdict {
        let now = seen.now_ms;
        if seen.transport_acked_bytes != self.transport_acked_bytes {
            self.transport_acked_bytes = seen.transport_acked_bytes;
            self.transport_progress_ms = now;
        }
        let stalled_since = self.ack_progress_ms;
        let advanced = seen.acked_seq > self.acked_seq;
        self.acked_seq = self.acked_seq.max(seen.acked_seq);
        if advanced || seen.sent_seq <= seen.acked_seq {
            self.ack_progress_ms = now;
        }

        let last_sign = seen.heard_ms.max(self.transport_progress_ms);
        if now - last_sign > SILENCE_LIMIT_MS {
            return Verdict::Gone {
                silent_ms: now - last_sign,
            };
        }
        let stalled_ms = now - self.ack_progress_ms;
        let was_slow = self.slow;
        self.slow = stalled_ms > SILENCE_LIMIT_MS;
        if self.ko_count > 0 && stalled_ms > i64::from(self.ko_count) * SILENCE_LIMIT_MS {
            return Verdict::TooSlow { stalled_ms };
        }
        match (was_slow, self.slow) {
            (false, true) => Verdict::TurnedSlow { stalled_ms },
            (true, true) => Verdict::Slow,
            (true, false) => Verdict::Recovered {
                slow_ms: now - stalled_since,
            },
            (false, false) => Verdict::Alive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::DEFAULT_KO_COUNT;

    /// A receiver observed every second: `acked` and `transport` give its progress.
    struct Run {
        live: Liveness,
        seen: Observation,
    }

    impl Run {
        fn new(ko_count: u32) -> Self {
            Self {
                live: Liveness::new(0, 10, 1000, ko_count),
                seen: Observation {
                    now_ms: 0,
                    heard_ms: 0,
                    acked_seq: 10,
                    sent_seq: 10,
                    transport_acked_bytes: 1000,
                },
            }
        }

        /// Advances one second: frames heard, acks and transport bytes as given.
        fn second(&mut self, heard: bool, acked: u64, transport: u64) -> Verdict {
            self.seen.now_ms += 1000;
            if heard {
                self.seen.heard_ms = self.seen.now_ms;
            }
            self.seen.acked_seq += acked;
            self.seen.transport_acked_bytes += transport;
            self.live.check(&self.seen)
        }
    }

    #[test]
    fn a_receiver_that_acks_is_alive() {
        let mut run = Run::new(DEFAULT_KO_COUNT);
        run.seen.sent_seq = 1000;
        for _ in 0..60 {
            assert_eq!(run.second(true, 1, 4096), Verdict::Alive);
        }
    }

    #[test]
    fn silence_without_transport_progress_is_a_dead_link() {
        let mut run = Run::new(DEFAULT_KO_COUNT);
        run.seen.sent_seq = 20;
        for _ in 0..5 {
            assert_eq!(run.second(false, 0, 0), Verdict::Alive);
        }
        assert_eq!(run.second(false, 0, 0), Verdict::Gone { silent_ms: 6000 });
    }

    #[test]
    fn a_silent_receiver_whose_window_moves_is_slow_not_dead() {
        let mut run = Run::new(DEFAULT_KO_COUNT);
        run.seen.sent_seq = 20;
        for _ in 0..5 {
            assert_eq!(run.second(false, 0, 1448), Verdict::Alive);
        }
        assert_eq!(
            run.second(false, 0, 1448),
            Verdict::TurnedSlow { stalled_ms: 6000 }
        );
        assert!(run.live.is_slow());
        for _ in 0..10 {
            assert_eq!(run.second(false, 0, 1448), Verdict::Slow);
        }
        assert_eq!(
            run.second(true, 1, 1448),
            Verdict::Recovered { slow_ms: 17_000 }
        );
        assert!(!run.live.is_slow());
        assert_eq!(run.second(true, 1, 0), Verdict::Alive);
    }

    #[test]
    fn answered_pings_keep_a_stalled_receiver_alive_until_ko_count_periods_pass() {
        let mut run = Run::new(3);
        run.seen.sent_seq = 20;
        let verdicts: [Verdict; 16] = core::array::from_fn(|_| run.second(true, 0, 0));
        assert_eq!(verdicts[4], Verdict::Alive);
        assert_eq!(verdicts[5], Verdict::TurnedSlow { stalled_ms: 6000 });
        assert!(verdicts[6..15].iter().all(|v| *v == Verdict::Slow));
        assert_eq!(verdicts[15], Verdict::TooSlow { stalled_ms: 16_000 });
    }

    #[test]
    fn ko_count_zero_never_drops_a_live_receiver() {
        let mut run = Run::new(0);
        run.seen.sent_seq = 20;
        for _ in 0..600 {
            let verdict = run.second(true, 0, 100);
            assert!(!matches!(
                verdict,
                Verdict::TooSlow { .. } | Verdict::Gone { .. }
            ));
        }
    }

    #[test]
    fn nothing_waiting_is_no_stall() {
        let mut run = Run::new(1);
        // Everything sent is acknowledged: an idle link that answers pings is fine.
        for _ in 0..60 {
            assert_eq!(run.second(true, 0, 40), Verdict::Alive);
        }
        // Entries sent now start the clock from now, not from the last ack long ago.
        run.seen.sent_seq = 11;
        assert_eq!(run.second(true, 0, 0), Verdict::Alive);
        assert_eq!(run.second(true, 1, 0), Verdict::Alive);
    }

    #[test]
    fn a_dead_link_is_gone_even_while_slow() {
        let mut run = Run::new(DEFAULT_KO_COUNT);
        run.seen.sent_seq = 20;
        for _ in 0..6 {
            run.second(true, 0, 0);
        }
        assert!(run.live.is_slow());
        for _ in 0..5 {
            assert_eq!(run.second(false, 0, 0), Verdict::Slow);
        }
        assert_eq!(run.second(false, 0, 0), Verdict::Gone { silent_ms: 6000 });
    }
}
