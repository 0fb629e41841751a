//! The `dmsetup status` line of an `arepl` target: written by the kernel module,
//! read by the `arepl` CLI.
//!
//! The line is a sequence of `key=value` words. Keys are never renamed or removed;
//! new keys are appended, and readers ignore keys they do not know.

use core::fmt;

/// What the target currently does with writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every bio goes to the local device; nothing is queued for replication yet.
    Passthrough,
}

impl Mode {
    /// The word used on the status line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passthrough => "passthrough",
        }
    }

    fn from_word(word: &str) -> Option<Self> {
        match word {
            "passthrough" => Some(Self::Passthrough),
            _ => None,
        }
    }
}

/// Everything the status line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// What the target does with writes.
    pub mode: Mode,
    /// Read bios mapped since the table was loaded.
    pub reads: u64,
    /// Write bios carrying data mapped since the table was loaded.
    pub writes: u64,
    /// Flush requests (empty REQ_PREFLUSH bios) mapped since the table was loaded.
    pub flushes: u64,
    /// Discard and write-zeroes bios mapped since the table was loaded.
    pub discards: u64,
}

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

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mode={} reads={} writes={} flushes={} discards={}",
            self.mode.as_str(),
            self.reads,
            self.writes,
            self.flushes,
            self.discards
        )
    }
}

impl Status {
    /// Reads the words device-mapper prints after the target name in `dmsetup status`.
    pub fn parse(line: &str) -> Result<Self, StatusError<'_>> {
        let (mut mode, mut reads, mut writes, mut flushes, mut discards) =
            (None, None, None, None, None);
        for word in line.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').ok_or(StatusError::Malformed(word))?;
            let bad = || StatusError::BadValue { key, value };
            let counter = || value.parse::<u64>().map_err(|_| bad());
            match key {
                "mode" => mode = Some(Mode::from_word(value).ok_or_else(bad)?),
                "reads" => reads = Some(counter()?),
                "writes" => writes = Some(counter()?),
                "flushes" => flushes = Some(counter()?),
                "discards" => discards = Some(counter()?),
                _ => {} // a newer module's key
            }
        }
        Ok(Status {
            mode: mode.ok_or(StatusError::Missing("mode"))?,
            reads: reads.ok_or(StatusError::Missing("reads"))?,
            writes: writes.ok_or(StatusError::Missing("writes"))?,
            flushes: flushes.ok_or(StatusError::Missing("flushes"))?,
            discards: discards.ok_or(StatusError::Missing("discards"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    const SAMPLE: Status = Status {
        mode: Mode::Passthrough,
        reads: 7,
        writes: 1 << 40,
        flushes: 3,
        discards: 0,
    };

    #[test]
    fn golden_line() {
        assert_eq!(
            SAMPLE.to_string(),
            "mode=passthrough reads=7 writes=1099511627776 flushes=3 discards=0"
        );
    }

    #[test]
    fn round_trip() {
        assert_eq!(Status::parse(&SAMPLE.to_string()), Ok(SAMPLE));
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let line = std::format!("{SAMPLE} future_key=42");
        assert_eq!(Status::parse(&line), Ok(SAMPLE));
    }

    #[test]
    fn errors() {
        assert_eq!(
            Status::parse("mode=passthrough reads"),
            Err(StatusError::Malformed("reads"))
        );
        assert_eq!(
            Status::parse("mode=warp"),
            Err(StatusError::BadValue {
                key: "mode",
                value: "warp"
            })
        );
        assert_eq!(
            Status::parse("mode=passthrough reads=1 writes=-1"),
            Err(StatusError::BadValue {
                key: "writes",
                value: "-1"
            })
        );
        assert_eq!(
            Status::parse("mode=passthrough reads=1 writes=1 flushes=1"),
            Err(StatusError::Missing("discards"))
        );
    }
}
