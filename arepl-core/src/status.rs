//! The `dmsetup status` line of an `arepl` target: written by the kernel module,
//! read by the `arepl` CLI.
//!
//! The line is a sequence of `key=value` words. Keys are never renamed or removed;
//! new keys are appended, and readers ignore keys they do not know.

use core::fmt;

/// What the target currently does with writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Writes are queued in memory and sent over a link (or wait in memory for one).
    Replicating,
    /// No link is up and the memory queue overflowed: entries go to the spill device.
    Spilling,
    /// A link is up and the spill log is being sent, ahead of the memory queue.
    Draining,
    /// The spill device is full too: writers wait until a link drains it.
    SpillFull,
    /// The spill log could not be read or written; writers wait once memory is full.
    SpillFailed,
    /// The initial copy of the volume (`sync:full`) is still being sent or is not yet
    /// acknowledged: the replica is not a consistent image yet. Also a resync (after a
    /// crash, a lost queue, or tracked regions) until it is acknowledged.
    Syncing,
    /// Writes are not queued: nothing could take them (queue and spill log full, no
    /// link) or no memory for them; their regions are tracked and resynced once a link
    /// returns. The replica is inconsistent until that resync completes.
    Tracking,
}

/// State of the replication link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkState {
    /// No connection; the sender waits before the next attempt.
    #[default]
    Down,
    /// Connecting or in the handshake.
    Connecting,
    /// Streaming entries.
    Connected,
    /// Not configured (a table line without a backup link).
    Absent,
}

/// Which link carries the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActiveLink {
    /// Neither: no session is up.
    #[default]
    None,
    /// The primary link.
    Primary,
    /// The backup link.
    Backup,
}

/// One link's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkReport {
    /// Its state.
    pub state: LinkState,
    /// Handshakes completed on it.
    pub connects: u64,
    /// Failed connection attempts and broken sessions on it.
    pub errors: u64,
    /// errno of its last failure (positive), 0 if none.
    pub last_error: u64,
}

macro_rules! words {
    ($ty:ident { $($variant:ident => $word:literal),* $(,)? }) => {
        impl $ty {
            /// The word used on the status line.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $word),* }
            }

            fn from_word(word: &str) -> Option<Self> {
                match word { $($word => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

words!(Mode {
    Replicating => "replicating",
    Spilling => "spilling",
    Draining => "draining",
    SpillFull => "spill_full",
    SpillFailed => "spill_failed",
    Syncing => "syncing",
    Tracking => "tracking",
});
words!(LinkState {
    Down => "down",
    Connecting => "connecting",
    Connected => "connected",
    Absent => "none",
});
words!(ActiveLink { None => "none", Primary => "primary", Backup => "backup" });

/// Everything the status line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Read bios mapped since the table was loaded.
    pub reads: u64,
    /// Write bios carrying data mapped since the table was loaded.
    pub writes: u64,
    /// Flush requests (empty REQ_PREFLUSH bios) mapped since the table was loaded.
    pub flushes: u64,
    /// Discard and write-zeroes bios mapped since the table was loaded.
    pub discards: u64,
    /// Entries in the replication queue (sent or not, not yet acknowledged).
    pub queued: u64,
    /// Bytes the queue holds against its bound (payload plus per-entry overhead).
    pub queued_bytes: u64,
    /// The queue's bound in bytes (`queue_mb`).
    pub capacity_bytes: u64,
    /// Highest sequence number sent in the current session (0: none yet).
    pub sent_seq: u64,
    /// Highest sequence number the receiver acknowledged as durable (0: none yet).
    pub acked_seq: u64,
    /// Age in milliseconds of the oldest unacknowledged write: the current RPO.
    pub lag_ms: u64,
    /// Writes that failed on the local device (completed with their error, not replicated).
    pub write_errors: u64,
    /// Failed connection attempts and broken links.
    pub link_errors: u64,
    /// Handshakes completed (the first connection counts).
    pub connects: u64,
    /// Entries held in the spill log.
    pub spill_entries: u64,
    /// Bytes of the spill log in use.
    pub spill_bytes: u64,
    /// Bytes the spill log can hold (0: no spill device).
    pub spill_capacity_bytes: u64,
    /// Bytes of the volume the initial copy has read and queued so far.
    pub sync_bytes: u64,
    /// Bytes the initial copy covers: the volume size with `sync:full`, else 0.
    pub sync_total_bytes: u64,
    /// 1 when the replica is a consistent image of the volume at some earlier moment:
    /// no initial copy was asked for, or all of it is acknowledged, and it has not
    /// diverged. 0 otherwise.
    pub consistent: u64,
    /// 1 once a replication digest check (at a handshake or in the stream, on either
    /// side) found that the replica's history differs from the primary's: it may lack
    /// or misplace writes and needs a resync. Stays 1 for the device's lifetime.
    pub diverged: u64,
    /// Bytes per second the initial copy queued over about the last 10 s; 0 when no copy
    /// runs or it has not run for a second yet.
    pub sync_rate: u64,
    /// 1 while the receiver is alive but has acknowledged nothing for 5 s or more: the
    /// link stays up and sending waits for it.
    pub receiver_slow: u64,
    /// Sessions dropped because a live receiver acknowledged nothing for `ko_count`
    /// periods of 5 s.
    pub slow_drops: u64,
    /// Generation (counter) of the replication history the device continues; 0 before
    /// it has one.
    pub generation: u64,
    /// 1 while replicad's replica cannot be continued by this device and it may not
    /// resync it on its own (the kernel log says why), else 0.
    pub refused: u64,
    /// Resyncs begun since the table was loaded (a copy of the volume under a new
    /// generation, after a crash, a lost queue, or `sync:full`).
    pub resyncs: u64,
    /// Bytes of the volume in regions marked for a resync (writes tracked instead of
    /// queued, not yet copied).
    pub dirty_bytes: u64,
    /// 1 while an online verify runs: checks to queue, or queued checks the receiver
    /// has not acknowledged yet.
    pub verifying: u64,
    /// Bytes of the volume whose check the current (or last) verify has queued.
    pub verify_bytes: u64,
    /// Bytes the current (or last) verify covers; 0 if none ran.
    pub verify_total_bytes: u64,
    /// Chunks the current (or last) verify found different on the replica.
    pub verify_mismatches: u64,
    /// Mismatched chunks sent again (`verify repair`).
    pub verify_repaired: u64,
    /// Writes that first waited for the queued payload of blocks they overwrite to be
    /// read back from the local device (copy-on-write).
    pub cow_writes: u64,
    /// Writes whose payload was copied from their pages as they were mapped (small
    /// random writes, on a device created with the target).
    pub map_copies: u64,
}

/// The whole status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// What the target does with writes.
    pub mode: Mode,
    /// State of the link carrying the stream (or of the one being tried).
    pub link: LinkState,
    /// Counters and gauges.
    pub counters: Counters,
    /// Which link carries the stream.
    pub active_link: ActiveLink,
    /// Replication paused by `dmsetup message ... pause`.
    pub paused: bool,
    /// Primary link, then backup link.
    pub links: [LinkReport; 2],
}

/// Link names on the status line, in `Status::links` order.
const LINK_NAMES: [&str; 2] = ["primary", "backup"];

/// Why a status line could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusError<'a> {
    /// A word that is not `key=value`.
    Malformed(&'a str),
    /// A value that does not fit its key.
    BadValue {
        /// The key.
        key: &'a str,
        /// The value given.
        value: &'a str,
    },
    /// A key every status line carries is absent.
    Missing(&'static str),
}

impl fmt::Display for StatusError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(word) => write!(f, "status word '{word}' is not key=value"),
            Self::BadValue { key, value } => write!(f, "status key {key} has bad value '{value}'"),
            Self::Missing(key) => write!(f, "status line lacks key {key}"),
        }
    }
}

/// Access to one numeric field of [`Counters`].
type CounterField = fn(&mut Counters) -> &mut u64;

/// The numeric keys, in line order, with accessors; one list for writing and reading.
/// Those from [`LATER_KEYS`] on were added later and follow the link keys.
const COUNTER_KEYS: [(&str, CounterField); 34] = [
    ("reads", |c| &mut c.reads),
    ("writes", |c| &mut c.writes),
    ("flushes", |c| &mut c.flushes),
    ("discards", |c| &mut c.discards),
    ("queued", |c| &mut c.queued),
    ("queued_bytes", |c| &mut c.queued_bytes),
    ("capacity_bytes", |c| &mut c.capacity_bytes),
    ("sent_seq", |c| &mut c.sent_seq),
    ("acked_seq", |c| &mut c.acked_seq),
    ("lag_ms", |c| &mut c.lag_ms),
    ("write_errors", |c| &mut c.write_errors),
    ("link_errors", |c| &mut c.link_errors),
    ("connects", |c| &mut c.connects),
    ("spill_entries", |c| &mut c.spill_entries),
    ("spill_bytes", |c| &mut c.spill_bytes),
    ("spill_capacity_bytes", |c| &mut c.spill_capacity_bytes),
    ("sync_bytes", |c| &mut c.sync_bytes),
    ("sync_total_bytes", |c| &mut c.sync_total_bytes),
    ("consistent", |c| &mut c.consistent),
    ("diverged", |c| &mut c.diverged),
    ("sync_rate", |c| &mut c.sync_rate),
    ("receiver_slow", |c| &mut c.receiver_slow),
    ("slow_drops", |c| &mut c.slow_drops),
    ("generation", |c| &mut c.generation),
    ("refused", |c| &mut c.refused),
    ("resyncs", |c| &mut c.resyncs),
    ("dirty_bytes", |c| &mut c.dirty_bytes),
    ("verifying", |c| &mut c.verifying),
    ("verify_bytes", |c| &mut c.verify_bytes),
    ("verify_total_bytes", |c| &mut c.verify_total_bytes),
    ("verify_mismatches", |c| &mut c.verify_mismatches),
    ("verify_repaired", |c| &mut c.verify_repaired),
    ("cow_writes", |c| &mut c.cow_writes),
    ("map_copies", |c| &mut c.map_copies),
];

/// Index in [`COUNTER_KEYS`] of the first key printed after the link keys.
const LATER_KEYS: usize = 13;

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mode={} link={}", self.mode.as_str(), self.link.as_str())?;
        let mut counters = self.counters;
        for (key, field) in &COUNTER_KEYS[..LATER_KEYS] {
            write!(f, " {key}={}", *field(&mut counters))?;
        }
        write!(
            f,
            " active_link={} paused={}",
            self.active_link.as_str(),
            u8::from(self.paused)
        )?;
        for (name, link) in LINK_NAMES.iter().zip(&self.links) {
            write!(
                f,
                " {name}={} {name}_connects={} {name}_errors={} {name}_last_error={}",
                link.state.as_str(),
                link.connects,
                link.errors,
                link.last_error
            )?;
        }
        for (key, field) in &COUNTER_KEYS[LATER_KEYS..] {
            write!(f, " {key}={}", *field(&mut counters))?;
        }
        Ok(())
    }
}

impl Status {
    /// Reads the words device-mapper prints after the target name in `dmsetup status`.
    pub fn parse(line: &str) -> Result<Self, StatusError<'_>> {
        let (mut mode, mut link, mut active_link, mut paused) = (None, None, None, None);
        let mut links = [LinkReport::default(); 2];
        let mut link_states = [None; 2];
        let mut counters = Counters::default();
        let mut seen = [false; COUNTER_KEYS.len()];
        for word in line.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').ok_or(StatusError::Malformed(word))?;
            let bad = StatusError::BadValue { key, value };
            match key {
                "mode" => mode = Some(Mode::from_word(value).ok_or(bad)?),
                "link" => link = Some(LinkState::from_word(value).ok_or(bad)?),
                "active_link" => active_link = Some(ActiveLink::from_word(value).ok_or(bad)?),
                "paused" => {
                    paused = Some(match value {
                        "0" => false,
                        "1" => true,
                        _ => return Err(bad),
                    })
                }
                _ if parse_link_key(key, value, &mut links, &mut link_states)
                    .map_err(|()| bad)? => {}
                _ => {
                    // Unknown keys come from a newer module; skip them.
                    if let Some(i) = COUNTER_KEYS.iter().position(|(k, _)| *k == key) {
                        *COUNTER_KEYS[i].1(&mut counters) = value.parse().map_err(|_| bad)?;
                        seen[i] = true;
                    }
                }
            }
        }
        if let Some(i) = seen.iter().position(|seen| !seen) {
            return Err(StatusError::Missing(COUNTER_KEYS[i].0));
        }
        for (i, state) in link_states.iter().enumerate() {
            links[i].state = state.ok_or(StatusError::Missing(LINK_NAMES[i]))?;
        }
        Ok(Status {
            mode: mode.ok_or(StatusError::Missing("mode"))?,
            link: link.ok_or(StatusError::Missing("link"))?,
            counters,
            active_link: active_link.ok_or(StatusError::Missing("active_link"))?,
            paused: paused.ok_or(StatusError::Missing("paused"))?,
            links,
        })
    }
}

/// Reads a `primary*`/`backup*` key; `Ok(false)` if `key` is not one.
fn parse_link_key(
    key: &str,
    value: &str,
    links: &mut [LinkReport; 2],
    states: &mut [Option<LinkState>; 2],
) -> Result<bool, ()> {
    // strip_prefix, not slicing: slicing a str can panic, and the kernel build rejects
    // panic paths its objtool cannot follow.
    let Some((i, suffix)) = LINK_NAMES
        .iter()
        .enumerate()
        .find_map(|(i, name)| key.strip_prefix(name).map(|suffix| (i, suffix)))
    else {
        return Ok(false);
    };
    let number = || value.parse::<u64>().map_err(|_| ());
    match suffix {
        "" => states[i] = Some(LinkState::from_word(value).ok_or(())?),
        "_connects" => links[i].connects = number()?,
        "_errors" => links[i].errors = number()?,
        "_last_error" => links[i].last_error = number()?,
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    const SAMPLE: Status = Status {
        mode: Mode::Replicating,
        link: LinkState::Connected,
        counters: Counters {
            reads: 7,
            writes: 1 << 40,
            flushes: 3,
            discards: 0,
            queued: 12,
            queued_bytes: 4096 * 12,
            capacity_bytes: 64 << 20,
            sent_seq: 100,
            acked_seq: 90,
            lag_ms: 15,
            write_errors: 1,
            link_errors: 2,
            connects: 3,
            spill_entries: 4,
            spill_bytes: 9216,
            spill_capacity_bytes: 1 << 30,
            sync_bytes: 1 << 20,
            sync_total_bytes: 1 << 30,
            consistent: 0,
            diverged: 1,
            sync_rate: 3 << 20,
            receiver_slow: 1,
            slow_drops: 2,
            generation: 3,
            refused: 1,
            resyncs: 2,
            dirty_bytes: 4 << 20,
            verifying: 1,
            verify_bytes: 1 << 20,
            verify_total_bytes: 1 << 30,
            verify_mismatches: 2,
            verify_repaired: 1,
            cow_writes: 5,
            map_copies: 6,
        },
        active_link: ActiveLink::Backup,
        paused: false,
        links: [
            LinkReport {
                state: LinkState::Down,
                connects: 1,
                errors: 2,
                last_error: 110,
            },
            LinkReport {
                state: LinkState::Connected,
                connects: 2,
                errors: 0,
                last_error: 0,
            },
        ],
    };

    #[test]
    fn golden_line() {
        assert_eq!(
            SAMPLE.to_string(),
            "mode=replicating link=connected reads=7 writes=1099511627776 flushes=3 discards=0 \
             queued=12 queued_bytes=49152 capacity_bytes=67108864 sent_seq=100 acked_seq=90 \
             lag_ms=15 write_errors=1 link_errors=2 connects=3 active_link=backup paused=0 \
             primary=down primary_connects=1 primary_errors=2 primary_last_error=110 \
             backup=connected backup_connects=2 backup_errors=0 backup_last_error=0 \
             spill_entries=4 spill_bytes=9216 spill_capacity_bytes=1073741824 \
             sync_bytes=1048576 sync_total_bytes=1073741824 consistent=0 diverged=1 \
             sync_rate=3145728 receiver_slow=1 slow_drops=2 generation=3 refused=1 resyncs=2 \
             dirty_bytes=4194304 verifying=1 verify_bytes=1048576 \
             verify_total_bytes=1073741824 verify_mismatches=2 verify_repaired=1 cow_writes=5 \
             map_copies=6"
        );
    }

    #[test]
    fn round_trip() {
        assert_eq!(Status::parse(&SAMPLE.to_string()), Ok(SAMPLE));
    }

    #[test]
    fn every_mode_round_trips() {
        for mode in [
            Mode::Replicating,
            Mode::Spilling,
            Mode::Draining,
            Mode::SpillFull,
            Mode::SpillFailed,
            Mode::Syncing,
            Mode::Tracking,
        ] {
            let status = Status { mode, ..SAMPLE };
            assert_eq!(Status::parse(&status.to_string()), Ok(status));
        }
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let line = std::format!("{SAMPLE} future_key=42");
        assert_eq!(Status::parse(&line), Ok(SAMPLE));
    }

    #[test]
    fn errors() {
        assert_eq!(
            Status::parse("mode=replicating reads"),
            Err(StatusError::Malformed("reads"))
        );
        assert_eq!(
            Status::parse("mode=warp"),
            Err(StatusError::BadValue {
                key: "mode",
                value: "warp"
            })
        );
        let negative = SAMPLE
            .to_string()
            .replace("writes=1099511627776", "writes=-1");
        assert_eq!(
            Status::parse(&negative),
            Err(StatusError::BadValue {
                key: "writes",
                value: "-1"
            })
        );
        let missing = SAMPLE.to_string().replace(" connects=3", "");
        assert_eq!(
            Status::parse(&missing),
            Err(StatusError::Missing("connects"))
        );
    }
}
