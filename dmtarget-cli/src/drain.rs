//! Waiting for a device's replication queue to empty.

use std::time::{Duration, Instant};

use arepl_core::status::Status;

use crate::dm::DeviceMapper;
use crate::setup::arepl_status_words;

/// What is still unacknowledged: entries (memory plus spill log) and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub writes: u64,
    pub bytes: u64,
}

impl Backlog {
    /// Reads the backlog of arepl device `name`.
    pub fn of(dm: &DeviceMapper, name: &str) -> Result<Self, String> {
        let words = arepl_status_words(dm, name)?;
        let status = Status::parse(&words).map_err(|err| format!("{name}: {err}"))?;
        let c = status.counters;
        Ok(Self {
            writes: c.queued + c.spill_entries,
            bytes: c.queued_bytes + c.spill_bytes,
        })
    }
}

/// Waits up to `timeout` until `name` has nothing unacknowledged; returns what is left.
pub fn wait_drained(dm: &DeviceMapper, name: &str, timeout: Duration) -> Result<Backlog, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let backlog = Backlog::of(dm, name)?;
        if backlog.writes == 0 || Instant::now() >= deadline {
            return Ok(backlog);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
