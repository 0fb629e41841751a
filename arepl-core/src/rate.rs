//! The recent rate of a growing byte count, such as the initial copy's progress, so an
//! operator sees a crawl at once instead of an average since the start.
//!
//! Progress is sampled at most once a second into a small ring; the rate is measured
//! from the oldest sample of the last [`WINDOW_MS`] to now. When progress stops, the
//! rate falls towards 0 as time passes, without any new sample.

/// The rate covers about this much recent time (ms).
pub const WINDOW_MS: i64 = 10_000;
/// Samples are kept at least this far apart (ms).
const SAMPLE_SPACING_MS: i64 = 1_000;
/// Enough samples for a full window at the sample spacing, plus the one just before it.
const SAMPLES: usize = (WINDOW_MS / SAMPLE_SPACING_MS) as usize + 2;

/// Recent progress of one counter.
#[derive(Debug, Clone, Copy)]
pub struct RecentRate {
    /// `(ms, bytes)` pairs; the newest is at `newest`.
    samples: [(i64, u64); SAMPLES],
    newest: usize,
    len: usize,
}

impl Default for RecentRate {
    fn default() -> Self {
        Self::new()
    }
}

impl RecentRate {
    /// No progress recorded yet.
    pub const fn new() -> Self {
        Self {
            samples: [(0, 0); SAMPLES],
            newest: 0,
            len: 0,
        }
    }

    /// The counter stands at `bytes` at `now_ms`.
    pub fn record(&mut self, now_ms: i64, bytes: u64) {
        if self.len > 0 {
            let (newest_ms, _) = self.samples[self.newest];
            if now_ms - newest_ms < SAMPLE_SPACING_MS {
                return;
            }
            self.newest = (self.newest + 1) % SAMPLES;
        }
        self.samples[self.newest] = (now_ms, bytes);
        self.len = (self.len + 1).min(SAMPLES);
    }

    /// Bytes per second from the oldest sample within [`WINDOW_MS`] of `now_ms` (or the
    /// newest one, if all are older) to `bytes` at `now_ms`; `None` until a second of
    /// progress is known.
    pub fn per_second(&self, now_ms: i64, bytes: u64) -> Option<u64> {
        let mut base = None;
        for age in 0..self.len {
            let index = (self.newest + SAMPLES - age) % SAMPLES;
            let sample = self.samples[index];
            if base.is_some() && now_ms - sample.0 > WINDOW_MS {
                break;
            }
            base = Some(sample);
        }
        let (since_ms, since_bytes) = base?;
        let elapsed_ms = now_ms - since_ms;
        if elapsed_ms < SAMPLE_SPACING_MS {
            return None;
        }
        let gained = bytes.saturating_sub(since_bytes);
        let elapsed_ms = elapsed_ms as u64;
        // In two parts, so nothing overflows (and no 128-bit division, which the kernel
        // lacks).
        Some(gained / elapsed_ms * 1000 + gained % elapsed_ms * 1000 / elapsed_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rate_before_a_second_of_progress() {
        let mut rate = RecentRate::new();
        assert_eq!(rate.per_second(0, 0), None);
        rate.record(0, 0);
        assert_eq!(rate.per_second(500, 1 << 20), None);
        assert_eq!(rate.per_second(1000, 1 << 20), Some(1 << 20));
    }

    #[test]
    fn a_steady_rate_is_measured_over_the_window() {
        let mut rate = RecentRate::new();
        for ms in (0..60_000).step_by(100) {
            rate.record(ms, ms as u64 * 2048);
        }
        // 2048 bytes per ms.
        assert_eq!(rate.per_second(60_000, 60_000 * 2048), Some(2048 * 1000));
    }

    #[test]
    fn a_slowdown_shows_within_the_window_not_averaged_since_the_start() {
        let mut rate = RecentRate::new();
        let mut bytes = 0;
        for second in 0..100 {
            rate.record(second * 1000, bytes);
            bytes += if second < 90 { 10 << 20 } else { 100 << 10 };
        }
        // The last ten seconds ran at 100 KiB/s; since the start it was about 9 MiB/s.
        let recent = rate.per_second(100_000, bytes).unwrap();
        assert_eq!(recent, 100 << 10);
    }

    #[test]
    fn a_stall_falls_towards_zero_without_new_samples() {
        let mut rate = RecentRate::new();
        for second in 0..=20 {
            rate.record(second * 1000, (second as u64) << 20);
        }
        let bytes = 20 << 20;
        let at = |ms| rate.per_second(ms, bytes).unwrap();
        assert_eq!(at(20_000), 1 << 20);
        assert!(at(25_000) < at(20_000));
        assert!(at(29_000) < at(25_000));
        // Every sample older than the window: measured from the newest, i.e. nothing.
        assert_eq!(at(60_000), 0);
    }

    #[test]
    fn samples_closer_than_a_second_are_not_kept() {
        let mut rate = RecentRate::new();
        rate.record(0, 0);
        rate.record(10, 1 << 30);
        assert_eq!(rate.per_second(1000, 1 << 20), Some(1 << 20));
    }
}
