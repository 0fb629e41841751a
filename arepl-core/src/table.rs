//! The `arepl` table line: parsing, validation and its canonical form.
//!
//! ```text
//! <start> <len> arepl <local_dev> <primary_addr:port> [<backup_addr:port>] [<#feature_args> <arg>...]
//! ```
//!
//! Device-mapper hands the target everything after `arepl`; [`TableArgs::parse`] takes
//! exactly that. Feature arguments are `queue_mb:N`, `volume:NAME`, `spill:DEV`,
//! `sync:full|none` and `ko_count:N`.

use core::fmt;
use core::net::SocketAddr;

/// Queue size used when the table line does not give `queue_mb`.
pub const DEFAULT_QUEUE_MB: u32 = 64;
/// Smallest accepted `queue_mb`: one large write must always fit.
pub const MIN_QUEUE_MB: u32 = 1;
/// Largest accepted `queue_mb`; the queue is kernel memory.
pub const MAX_QUEUE_MB: u32 = 16 * 1024;
/// Longest accepted volume name, in bytes.
pub const MAX_VOLUME_LEN: usize = 64;
/// Most feature arguments a table line may carry (each feature at most once).
pub const MAX_FEATURE_ARGS: usize = 5;
/// `ko_count` used when the table line does not give one: a receiver that is alive but
/// acknowledges nothing for 7 periods of 5 s loses its session, as with DRBD's default
/// (7 periods of 6 s). See [`crate::liveness`].
pub const DEFAULT_KO_COUNT: u32 = 7;
/// Largest accepted `ko_count` (about a day); 0 never drops a live receiver.
pub const MAX_KO_COUNT: u32 = 17_280;

/// The validated arguments of one `arepl` table line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableArgs<'a> {
    /// Path or `major:minor` of the local device every bio is mapped to.
    pub local_dev: &'a str,
    /// Path or `major:minor` of the device queued entries spill to when no link is up.
    pub spill_dev: Option<&'a str>,
    /// Everything else on the line; owns its data, so the target can keep it.
    pub config: ReplicationConfig,
}

/// How a device replicates: the table line less its local device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// Address of the DR host's `replicad` on the primary link.
    pub primary: SocketAddr,
    /// Address to fail over to when the primary link is down.
    pub backup: Option<SocketAddr>,
    /// Bound of the in-memory replication queue, in MiB.
    pub queue_mb: u32,
    /// Volume name the receiver checks; `None` means the device-mapper name.
    pub volume: Option<VolumeName>,
    /// Whether a spill device was given (its name lives with the opened device).
    pub spill: bool,
    /// Whether the whole volume is first copied to the replica.
    pub initial_sync: InitialSync,
    /// Periods of silence on acknowledgements a live receiver is given before its
    /// session is dropped as too slow; 0: never.
    pub ko_count: u32,
}

/// What the replica holds when replication starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialSync {
    /// The same bytes as the volume (both new and blank, or seeded by a copy): only
    /// writes from now on are sent.
    #[default]
    None,
    /// Anything: the target reads the whole volume and sends it, in order with new
    /// writes; the replica is a consistent image once that copy is acknowledged.
    Full,
}

/// A validated volume name, stored inline so it needs no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VolumeName {
    bytes: [u8; MAX_VOLUME_LEN],
    len: u8,
}

impl VolumeName {
    /// Validates `text`: 1 to [`MAX_VOLUME_LEN`] bytes from `[A-Za-z0-9._-]`.
    pub fn new(text: &str) -> Option<Self> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if text.is_empty() || text.len() > MAX_VOLUME_LEN || !text.bytes().all(allowed) {
            return None;
        }
        let mut bytes = [0; MAX_VOLUME_LEN];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(Self {
            bytes,
            len: text.len() as u8,
        })
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII was admitted by `new`, so this never fails.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Debug for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a table line was refused. [`fmt::Display`] gives the full sentence for dmesg,
/// [`TableError::summary`] a short static text for device-mapper's `ti->error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError<'a> {
    /// Fewer than the two required positional arguments.
    MissingArguments {
        /// How many arguments were given.
        given: usize,
    },
    /// A link address that is not `ipv4:port` or `[ipv6]:port`.
    BadAddress {
        /// Which link: `primary` or `backup`.
        link: &'static str,
        /// The text given.
        text: &'a str,
    },
    /// Port 0 cannot be connected to.
    ZeroPort {
        /// Which link: `primary` or `backup`.
        link: &'static str,
    },
    /// Primary and backup name the same address.
    SameLinks,
    /// The feature argument count is not a number.
    BadFeatureCount {
        /// The text given.
        text: &'a str,
    },
    /// The feature argument count does not match the arguments that follow it.
    FeatureCountMismatch {
        /// The count given.
        declared: usize,
        /// The arguments actually following it.
        present: usize,
    },
    /// More feature arguments than there are features.
    TooManyFeatures {
        /// The count given.
        declared: usize,
    },
    /// A feature argument that is not `key:value` with a known key.
    UnknownFeature {
        /// The text given.
        text: &'a str,
    },
    /// The same feature given twice.
    DuplicateFeature {
        /// The feature's key.
        key: &'static str,
    },
    /// `queue_mb` not a number or out of range.
    BadQueueSize {
        /// The value given.
        text: &'a str,
    },
    /// `volume` empty, too long or with characters outside `[A-Za-z0-9._-]`.
    BadVolumeName {
        /// The value given.
        text: &'a str,
    },
    /// `spill:` without a device.
    EmptySpillDevice,
    /// `sync:` with a value other than `full` or `none`.
    BadSync {
        /// The value given.
        text: &'a str,
    },
    /// `ko_count` not a number or out of range.
    BadKoCount {
        /// The value given.
        text: &'a str,
    },
}

impl TableError<'_> {
    /// A short, static description of the error.
    pub fn summary(&self) -> &'static str {
        let text = self.summary_with_nul();
        text.strip_suffix('\0').unwrap_or(text)
    }

    /// [`Self::summary`] with a trailing NUL, for device-mapper's `ti->error` (a C string).
    pub fn summary_with_nul(&self) -> &'static str {
        match self {
            Self::MissingArguments { .. } => {
                "missing arguments (need <local_dev> <primary_addr:port>)\0"
            }
            Self::BadAddress { .. } => "invalid link address\0",
            Self::ZeroPort { .. } => "link port must not be 0\0",
            Self::SameLinks => "primary and backup links are the same address\0",
            Self::BadFeatureCount { .. } => "invalid feature argument count\0",
            Self::FeatureCountMismatch { .. } => "feature argument count mismatch\0",
            Self::TooManyFeatures { .. } => "too many feature arguments\0",
            Self::UnknownFeature { .. } => "unknown feature argument\0",
            Self::DuplicateFeature { .. } => "duplicate feature argument\0",
            Self::BadQueueSize { .. } => "invalid queue_mb\0",
            Self::BadVolumeName { .. } => "invalid volume name\0",
            Self::EmptySpillDevice => "spill: needs a device\0",
            Self::BadSync { .. } => "invalid sync mode\0",
            Self::BadKoCount { .. } => "invalid ko_count\0",
        }
    }
}

impl fmt::Display for TableError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::MissingArguments { given } => write!(
                f,
                "missing arguments: got {given}, need <local_dev> <primary_addr:port> \
                 [<backup_addr:port>] [<#feature_args> <arg>...]"
            ),
            Self::BadAddress { link, text } => write!(
                f,
                "invalid {link} link address '{text}': expected ipv4:port or [ipv6]:port"
            ),
            Self::ZeroPort { link } => write!(f, "invalid {link} link address: port must not be 0"),
            Self::SameLinks => write!(f, "primary and backup links must be different addresses"),
            Self::BadFeatureCount { text } => write!(
                f,
                "invalid feature argument count '{text}': expected a number followed by that many arguments"
            ),
            Self::FeatureCountMismatch { declared, present } => write!(
                f,
                "feature argument count is {declared} but {present} argument(s) follow"
            ),
            Self::TooManyFeatures { declared } => write!(
                f,
                "feature argument count {declared} exceeds the {MAX_FEATURE_ARGS} known features"
            ),
            Self::UnknownFeature { text } => write!(
                f,
                "unknown feature argument '{text}': known are queue_mb:N, volume:NAME, spill:DEV, sync:full|none and ko_count:N"
            ),
            Self::DuplicateFeature { key } => write!(f, "feature argument {key} given twice"),
            Self::BadQueueSize { text } => write!(
                f,
                "invalid queue_mb '{text}': expected a whole number of MiB from {MIN_QUEUE_MB} to {MAX_QUEUE_MB}"
            ),
            Self::BadVolumeName { text } => write!(
                f,
                "invalid volume name '{text}': 1 to {MAX_VOLUME_LEN} characters from A-Z a-z 0-9 . _ -"
            ),
            Self::EmptySpillDevice => {
                write!(f, "invalid spill device '': expected spill:/dev/PATH or spill:MAJOR:MINOR")
            }
            Self::BadSync { text } => {
                write!(f, "invalid sync mode '{text}': expected sync:full or sync:none")
            }
            Self::BadKoCount { text } => write!(
                f,
                "invalid ko_count '{text}': expected a whole number from 0 (never drop a live \
                 receiver) to {MAX_KO_COUNT}"
            ),
        }
    }
}

impl<'a> TableArgs<'a> {
    /// Parses the arguments device-mapper passes after the target name.
    pub fn parse(args: &[&'a str]) -> Result<Self, TableError<'a>> {
        let [local_dev, primary, rest @ ..] = args else {
            return Err(TableError::MissingArguments { given: args.len() });
        };
        let primary = parse_link("primary", primary)?;

        // An optional backup address comes next; a feature count is a bare number,
        // never an address, so the two cannot be confused.
        let (backup, rest) = match rest {
            [first, tail @ ..] if first.parse::<usize>().is_err() => {
                (Some(parse_link("backup", first)?), tail)
            }
            _ => (None, rest),
        };
        if backup == Some(primary) {
            return Err(TableError::SameLinks);
        }

        let mut config = ReplicationConfig {
            primary,
            backup,
            queue_mb: DEFAULT_QUEUE_MB,
            volume: None,
            spill: false,
            initial_sync: InitialSync::None,
            ko_count: DEFAULT_KO_COUNT,
        };
        let spill_dev = config.parse_features(rest)?;
        Ok(TableArgs {
            local_dev,
            spill_dev,
            config,
        })
    }
}

impl ReplicationConfig {
    /// Applies the feature arguments; returns the spill device, if one is named.
    fn parse_features<'a>(&mut self, args: &[&'a str]) -> Result<Option<&'a str>, TableError<'a>> {
        let [count, features @ ..] = args else {
            return Ok(None);
        };
        let declared: usize = count
            .parse()
            .map_err(|_| TableError::BadFeatureCount { text: count })?;
        if declared != features.len() {
            return Err(TableError::FeatureCountMismatch {
                declared,
                present: features.len(),
            });
        }
        if declared > MAX_FEATURE_ARGS {
            return Err(TableError::TooManyFeatures { declared });
        }

        let mut seen_queue = false;
        let mut seen_sync = false;
        let mut seen_ko = false;
        let mut spill_dev = None;
        for feature in features {
            match feature.split_once(':') {
                Some(("queue_mb", value)) => {
                    if core::mem::replace(&mut seen_queue, true) {
                        return Err(TableError::DuplicateFeature { key: "queue_mb" });
                    }
                    self.queue_mb = parse_queue_mb(value)?;
                }
                Some(("volume", value)) => {
                    if self.volume.is_some() {
                        return Err(TableError::DuplicateFeature { key: "volume" });
                    }
                    let name = VolumeName::new(value);
                    self.volume = Some(name.ok_or(TableError::BadVolumeName { text: value })?);
                }
                Some(("spill", value)) => {
                    if spill_dev.is_some() {
                        return Err(TableError::DuplicateFeature { key: "spill" });
                    }
                    if value.is_empty() {
                        return Err(TableError::EmptySpillDevice);
                    }
                    spill_dev = Some(value);
                    self.spill = true;
                }
                Some(("sync", value)) => {
                    if core::mem::replace(&mut seen_sync, true) {
                        return Err(TableError::DuplicateFeature { key: "sync" });
                    }
                    self.initial_sync = match value {
                        "full" => InitialSync::Full,
                        "none" => InitialSync::None,
                        _ => return Err(TableError::BadSync { text: value }),
                    };
                }
                Some(("ko_count", value)) => {
                    if core::mem::replace(&mut seen_ko, true) {
                        return Err(TableError::DuplicateFeature { key: "ko_count" });
                    }
                    self.ko_count = parse_number(value, 0..=MAX_KO_COUNT)
                        .ok_or(TableError::BadKoCount { text: value })?;
                }
                _ => return Err(TableError::UnknownFeature { text: feature }),
            }
        }
        Ok(spill_dev)
    }

    /// The table line as device-mapper shows it in `dmsetup table`, with the local and
    /// spill devices given as their names (device-mapper's `major:minor` form).
    pub fn canonical<'b>(
        &'b self,
        local_dev_name: &'b str,
        spill_dev_name: Option<&'b str>,
    ) -> CanonicalTable<'b> {
        CanonicalTable {
            config: self,
            local_dev_name,
            spill_dev_name,
        }
    }
}

/// Displays a table line in canonical form; see [`ReplicationConfig::canonical`].
#[derive(Debug)]
pub struct CanonicalTable<'b> {
    config: &'b ReplicationConfig,
    local_dev_name: &'b str,
    spill_dev_name: Option<&'b str>,
}

impl fmt::Display for CanonicalTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.config;
        write!(f, "{} {}", self.local_dev_name, t.primary)?;
        if let Some(backup) = t.backup {
            write!(f, " {backup}")?;
        }
        let full_sync = t.initial_sync == InitialSync::Full;
        let own_ko_count = t.ko_count != DEFAULT_KO_COUNT;
        let features = 1
            + usize::from(t.volume.is_some())
            + usize::from(self.spill_dev_name.is_some())
            + usize::from(full_sync)
            + usize::from(own_ko_count);
        write!(f, " {features} queue_mb:{}", t.queue_mb)?;
        if let Some(volume) = &t.volume {
            write!(f, " volume:{volume}")?;
        }
        if let Some(spill) = self.spill_dev_name {
            write!(f, " spill:{spill}")?;
        }
        if full_sync {
            write!(f, " sync:full")?;
        }
        if own_ko_count {
            write!(f, " ko_count:{}", t.ko_count)?;
        }
        Ok(())
    }
}

fn parse_link<'a>(link: &'static str, text: &'a str) -> Result<SocketAddr, TableError<'a>> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| TableError::BadAddress { link, text })?;
    if addr.port() == 0 {
        return Err(TableError::ZeroPort { link });
    }
    Ok(addr)
}

fn parse_queue_mb(text: &str) -> Result<u32, TableError<'_>> {
    parse_number(text, MIN_QUEUE_MB..=MAX_QUEUE_MB).ok_or(TableError::BadQueueSize { text })
}

/// A decimal number in `range`, digits only.
fn parse_number(text: &str, range: core::ops::RangeInclusive<u32>) -> Option<u32> {
    // `u32::from_str` accepts a leading '+'; a table line should not.
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    text.parse::<u32>()
        .ok()
        .filter(|n| digits_only && range.contains(n))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn minimal_line_takes_defaults() {
        let args = TableArgs::parse(&["/dev/vdb", "10.0.0.2:7788"]).unwrap();
        assert_eq!(args.local_dev, "/dev/vdb");
        let t = args.config;
        assert_eq!(t.primary, addr("10.0.0.2:7788"));
        assert_eq!(t.backup, None);
        assert_eq!(t.queue_mb, DEFAULT_QUEUE_MB);
        assert_eq!(t.volume, None);
        assert_eq!(args.spill_dev, None);
        assert!(!t.spill);
    }

    #[test]
    fn spill_device_feature() {
        let args = TableArgs::parse(&[
            "/dev/vdb",
            "10.0.0.2:1",
            "3",
            "spill:/dev/vdd",
            "queue_mb:4",
            "volume:v",
        ])
        .unwrap();
        assert_eq!(args.spill_dev, Some("/dev/vdd"));
        assert!(args.config.spill);
        let text = args.config.canonical("254:16", Some("254:48")).to_string();
        assert_eq!(text, "254:16 10.0.0.2:1 3 queue_mb:4 volume:v spill:254:48");
        let words: std::vec::Vec<&str> = text.split(' ').collect();
        let again = TableArgs::parse(&words).unwrap();
        assert_eq!(again.spill_dev, Some("254:48"));
    }

    #[test]
    fn initial_sync_feature() {
        let args = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", "sync:none"]).unwrap();
        assert_eq!(args.config.initial_sync, InitialSync::None);
        assert_eq!(
            args.config.canonical("254:16", None).to_string(),
            "254:16 10.0.0.2:1 1 queue_mb:64",
            "sync:none is the default and not shown"
        );
        let words = [
            "/dev/vdb",
            "10.0.0.2:1",
            "4",
            "sync:full",
            "spill:/dev/vdd",
            "queue_mb:4",
            "volume:v",
        ];
        let args = TableArgs::parse(&words).unwrap();
        assert_eq!(args.config.initial_sync, InitialSync::Full);
        let text = args.config.canonical("254:16", Some("254:48")).to_string();
        assert_eq!(
            text,
            "254:16 10.0.0.2:1 4 queue_mb:4 volume:v spill:254:48 sync:full"
        );
        let words: std::vec::Vec<&str> = text.split(' ').collect();
        assert_eq!(TableArgs::parse(&words).unwrap().config, args.config);
    }

    #[test]
    fn ko_count_feature() {
        let args = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1"]).unwrap();
        assert_eq!(args.config.ko_count, DEFAULT_KO_COUNT);
        let words = ["/dev/vdb", "10.0.0.2:1", "2", "ko_count:0", "queue_mb:8"];
        let args = TableArgs::parse(&words).unwrap();
        assert_eq!(args.config.ko_count, 0);
        let text = args.config.canonical("254:16", None).to_string();
        assert_eq!(text, "254:16 10.0.0.2:1 2 queue_mb:8 ko_count:0");
        let words: std::vec::Vec<&str> = text.split(' ').collect();
        assert_eq!(TableArgs::parse(&words).unwrap().config, args.config);
        let default = ["/dev/vdb", "10.0.0.2:1", "1", "ko_count:7"];
        assert_eq!(
            TableArgs::parse(&default)
                .unwrap()
                .config
                .canonical("254:16", None)
                .to_string(),
            "254:16 10.0.0.2:1 1 queue_mb:64",
            "the default is not shown"
        );
        let err = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", "ko_count:x"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid ko_count 'x': expected a whole number from 0 (never drop a live receiver) \
             to 17280"
        );
        assert_eq!(err.summary(), "invalid ko_count");
    }

    #[test]
    fn full_line_with_backup_and_features() {
        let t = TableArgs::parse(&[
            "253:0",
            "10.0.0.2:7788",
            "[fd00::2]:7789",
            "2",
            "volume:db-01",
            "queue_mb:8",
        ])
        .unwrap()
        .config;
        assert_eq!(t.backup, Some(addr("[fd00::2]:7789")));
        assert_eq!(t.queue_mb, 8);
        assert_eq!(t.volume.unwrap().as_str(), "db-01");
    }

    #[test]
    fn features_without_backup() {
        let t = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", "queue_mb:4096"])
            .unwrap()
            .config;
        assert_eq!(t.backup, None);
        assert_eq!(t.queue_mb, 4096);
    }

    #[test]
    fn canonical_form_round_trips() {
        let line = [
            "/dev/vdb",
            "10.0.0.2:7788",
            "10.1.0.2:7788",
            "1",
            "volume:v",
        ];
        let t = TableArgs::parse(&line).unwrap().config;
        let text = t.canonical("254:16", None).to_string();
        assert_eq!(
            text,
            "254:16 10.0.0.2:7788 10.1.0.2:7788 2 queue_mb:64 volume:v"
        );
        let words: std::vec::Vec<&str> = text.split(' ').collect();
        let again = TableArgs::parse(&words).unwrap();
        assert_eq!(again.config.canonical("254:16", None).to_string(), text);
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases: &[(&[&str], TableError<'_>)] = &[
            (&[], TableError::MissingArguments { given: 0 }),
            (&["/dev/vdb"], TableError::MissingArguments { given: 1 }),
            (
                &["/dev/vdb", "nowhere"],
                TableError::BadAddress {
                    link: "primary",
                    text: "nowhere",
                },
            ),
            (
                &["/dev/vdb", "10.0.0.2"],
                TableError::BadAddress {
                    link: "primary",
                    text: "10.0.0.2",
                },
            ),
            (
                &["/dev/vdb", "10.0.0.2:0"],
                TableError::ZeroPort { link: "primary" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "10.0.0.3:x"],
                TableError::BadAddress {
                    link: "backup",
                    text: "10.0.0.3:x",
                },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "10.0.0.2:1"],
                TableError::SameLinks,
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "2", "queue_mb:1"],
                TableError::FeatureCountMismatch {
                    declared: 2,
                    present: 1,
                },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "0", "queue_mb:1"],
                TableError::FeatureCountMismatch {
                    declared: 0,
                    present: 1,
                },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "6", "a", "b", "c", "d", "e", "f"],
                TableError::TooManyFeatures { declared: 6 },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "spill:"],
                TableError::EmptySpillDevice,
            ),
            (
                &[
                    "/dev/vdb",
                    "10.0.0.2:1",
                    "2",
                    "spill:/dev/a",
                    "spill:/dev/b",
                ],
                TableError::DuplicateFeature { key: "spill" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "fast:yes"],
                TableError::UnknownFeature { text: "fast:yes" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "queue_mb"],
                TableError::UnknownFeature { text: "queue_mb" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "2", "queue_mb:1", "queue_mb:2"],
                TableError::DuplicateFeature { key: "queue_mb" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "2", "volume:a", "volume:b"],
                TableError::DuplicateFeature { key: "volume" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "queue_mb:0"],
                TableError::BadQueueSize { text: "0" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "queue_mb:+5"],
                TableError::BadQueueSize { text: "+5" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "queue_mb:16385"],
                TableError::BadQueueSize { text: "16385" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "volume:"],
                TableError::BadVolumeName { text: "" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "sync:partial"],
                TableError::BadSync { text: "partial" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "2", "sync:full", "sync:none"],
                TableError::DuplicateFeature { key: "sync" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "volume:a/b"],
                TableError::BadVolumeName { text: "a/b" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "ko_count:-1"],
                TableError::BadKoCount { text: "-1" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "ko_count:17281"],
                TableError::BadKoCount { text: "17281" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "ko_count:"],
                TableError::BadKoCount { text: "" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "2", "ko_count:1", "ko_count:2"],
                TableError::DuplicateFeature { key: "ko_count" },
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(TableArgs::parse(args), Err(*expected), "args {args:?}");
        }
    }

    #[test]
    fn messages_are_precise() {
        let err = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", "queue_mb:0"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid queue_mb '0': expected a whole number of MiB from 1 to 16384"
        );
        assert_eq!(err.summary(), "invalid queue_mb");
    }

    #[test]
    fn volume_name_length_limit() {
        let long = "v".repeat(MAX_VOLUME_LEN);
        let arg = std::format!("volume:{long}");
        assert!(TableArgs::parse(&["d", "10.0.0.2:1", "1", &arg]).is_ok());
        let too_long = std::format!("volume:{long}v");
        assert!(matches!(
            TableArgs::parse(&["d", "10.0.0.2:1", "1", &too_long]),
            Err(TableError::BadVolumeName { .. })
        ));
    }
}
