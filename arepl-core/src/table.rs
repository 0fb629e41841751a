//! The `arepl` table line: parsing, validation and its canonical form.
//!
//! ```text
//! <start> <len> arepl <local_dev> <primary_addr:port> [<backup_addr:port>] [<#feature_args> <arg>...]
//! ```
//!
//! Device-mapper hands the target everything after `arepl`; [`TableArgs::parse`] takes
//! exactly that. Feature arguments are `queue_mb:N`, `volume:NAME`, `spill:DEV`,
//! `sync:full|none`, `ko_count:N`, `region_kb:N` (size of a dirty-tracking region),
//! `on_spill_full:block|bitmap` (what writes do when neither the memory queue nor the
//! spill log can take them), `resync_mbps:N` (rate limit of resync reads),
//! `wire_crc:on|off`, `key:DESC` (the kernel keyring's `logon` key the links
//! authenticate with, see [`crate::auth`]) and `encrypt:on|off` (with a key: whether the
//! links are encrypted, on by default), each at most once. The canonical form
//! ([`ReplicationConfig::canonical`]) always shows `queue_mb`, and the others only when
//! given (`volume`, `spill`, `key`), or when not the default (`sync`, `ko_count`,
//! `region_kb`, `on_spill_full`, `resync_mbps`, `wire_crc`, `encrypt`).

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
pub const MAX_FEATURE_ARGS: usize = 11;
/// Longest accepted key description, in bytes.
pub const MAX_KEY_DESCRIPTION_LEN: usize = 128;
/// `ko_count` used when the table line does not give one: a receiver that is alive but
/// acknowledges nothing for 7 periods of 5 s loses its session, as with DRBD's default
/// (7 periods of 6 s). See [`crate::liveness`].
pub const DEFAULT_KO_COUNT: u32 = 7;
/// Largest accepted `ko_count` (about a day); 0 never drops a live receiver.
pub const MAX_KO_COUNT: u32 = 17_280;
/// `region_kb` used when the table line does not give one: dirty regions of 4 MiB.
pub const DEFAULT_REGION_KB: u32 = 4096;
/// Smallest accepted `region_kb` (64 KiB); every `region_kb` is a power of two.
pub const MIN_REGION_KB: u32 = 64;
/// Largest accepted `region_kb` (1 GiB).
pub const MAX_REGION_KB: u32 = 1024 * 1024;
/// `resync_mbps` used when the table line does not give one: 0, unlimited.
pub const DEFAULT_RESYNC_MBPS: u32 = 0;
/// Largest accepted `resync_mbps`, in MiB/s; 0 means unlimited.
pub const MAX_RESYNC_MBPS: u32 = 100_000;

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
    /// Size of one dirty-tracking region, in KiB: a power of two from
    /// [`MIN_REGION_KB`] to [`MAX_REGION_KB`].
    pub region_kb: u32,
    /// What writes do when the memory queue and the spill log are both full (or no
    /// link is up and there is no spill log to take them).
    pub on_spill_full: SpillFullPolicy,
    /// Rate limit of resync and initial-copy reads, in MiB/s; 0: unlimited.
    pub resync_mbps: u32,
    /// Whether each write frame carries its payload's CRC-32C for the receiver to
    /// check (as DRBD's `data-integrity-alg`); off leaves the payload to TCP's checksum.
    /// The spill log checks its records either way.
    pub wire_crc: bool,
    /// Description of the `logon` key the links prove (the key itself never appears on
    /// the table line); `None`: links are not authenticated.
    pub key: Option<KeyDescription>,
    /// With a key: the links are encrypted after the handshake.
    pub encrypt: bool,
}

/// A validated `logon` key description (`service:name`, as the kernel requires of
/// logon keys), stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyDescription {
    bytes: [u8; MAX_KEY_DESCRIPTION_LEN],
    len: u8,
}

impl KeyDescription {
    /// Validates `text`: printable ASCII without spaces, at most
    /// [`MAX_KEY_DESCRIPTION_LEN`] bytes, with a `:` after a non-empty prefix.
    pub fn new(text: &str) -> Option<Self> {
        let printable = text.bytes().all(|b| b.is_ascii_graphic());
        let prefixed = text.find(':').is_some_and(|at| at > 0);
        if !printable || !prefixed || text.len() > MAX_KEY_DESCRIPTION_LEN {
            return None;
        }
        let mut bytes = [0; MAX_KEY_DESCRIPTION_LEN];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(Self {
            bytes,
            len: text.len() as u8,
        })
    }

    /// The description as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII was admitted by `new`, so this never fails.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Debug for KeyDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for KeyDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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

/// What happens when the memory queue and the spill log are both full, or when no link
/// is up and no spill log can take writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpillFullPolicy {
    /// Writers wait until a link drains the queue and the log.
    Block,
    /// Data stops being queued; the regions written are marked dirty for a later
    /// resync, so writers go on at local speed (the replica is inconsistent until that
    /// resync is acknowledged).
    #[default]
    Bitmap,
}

impl SpillFullPolicy {
    /// The policy as the table line spells it: `block` or `bitmap`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Bitmap => "bitmap",
        }
    }
}

impl fmt::Display for SpillFullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// `region_kb` not a number, out of range or not a power of two.
    BadRegionKb {
        /// The value given.
        text: &'a str,
    },
    /// `on_spill_full:` with a value other than `block` or `bitmap`.
    BadSpillFullPolicy {
        /// The value given.
        text: &'a str,
    },
    /// `resync_mbps` not a number or out of range.
    BadResyncMbps {
        /// The value given.
        text: &'a str,
    },
    /// `wire_crc` neither `on` nor `off`.
    BadWireCrc {
        /// The text given.
        text: &'a str,
    },
    /// `key` not a logon key description.
    BadKeyDescription {
        /// The text given.
        text: &'a str,
    },
    /// `encrypt` neither `on` nor `off`.
    BadEncrypt {
        /// The text given.
        text: &'a str,
    },
    /// `encrypt` without `key`: there is nothing to derive the session keys from.
    EncryptWithoutKey,
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
            Self::BadRegionKb { .. } => "invalid region_kb\0",
            Self::BadSpillFullPolicy { .. } => "invalid on_spill_full\0",
            Self::BadResyncMbps { .. } => "invalid resync_mbps\0",
            Self::BadWireCrc { .. } => "invalid wire_crc\0",
            Self::BadKeyDescription { .. } => "invalid key description\0",
            Self::BadEncrypt { .. } => "invalid encrypt\0",
            Self::EncryptWithoutKey => "encrypt needs key\0",
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
                "unknown feature argument '{text}': known are queue_mb:N, volume:NAME, spill:DEV, \
                 sync:full|none, ko_count:N, region_kb:N, on_spill_full:block|bitmap, \
                 resync_mbps:N, wire_crc:on|off, key:DESC and encrypt:on|off"
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
            Self::BadRegionKb { text } => write!(
                f,
                "invalid region_kb '{text}': expected a power of two from {MIN_REGION_KB} to \
                 {MAX_REGION_KB} (KiB)"
            ),
            Self::BadSpillFullPolicy { text } => write!(
                f,
                "invalid on_spill_full '{text}': expected block or bitmap"
            ),
            Self::BadResyncMbps { text } => write!(
                f,
                "invalid resync_mbps '{text}': expected a whole number of MiB/s from 0 \
                 (unlimited) to {MAX_RESYNC_MBPS}"
            ),
            Self::BadWireCrc { text } => {
                write!(f, "invalid wire_crc '{text}': expected on or off")
            }
            Self::BadKeyDescription { text } => write!(
                f,
                "invalid key description '{text}': expected the description of a logon key, \
                 like arepl:NAME (printable, no spaces, at most {MAX_KEY_DESCRIPTION_LEN} bytes)"
            ),
            Self::BadEncrypt { text } => {
                write!(f, "invalid encrypt '{text}': expected on or off")
            }
            Self::EncryptWithoutKey => write!(
                f,
                "encrypt needs key:DESC: the link's encryption keys come from the pre-shared key"
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
            region_kb: DEFAULT_REGION_KB,
            on_spill_full: SpillFullPolicy::Bitmap,
            resync_mbps: DEFAULT_RESYNC_MBPS,
            wire_crc: true,
            key: None,
            encrypt: true,
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
        let mut seen_region = false;
        let mut seen_spill_full = false;
        let mut seen_resync = false;
        let mut seen_wire_crc = false;
        let mut seen_encrypt = false;
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
                Some(("region_kb", value)) => {
                    if core::mem::replace(&mut seen_region, true) {
                        return Err(TableError::DuplicateFeature { key: "region_kb" });
                    }
                    self.region_kb = parse_number(value, MIN_REGION_KB..=MAX_REGION_KB)
                        .filter(|kb| kb.is_power_of_two())
                        .ok_or(TableError::BadRegionKb { text: value })?;
                }
                Some(("on_spill_full", value)) => {
                    if core::mem::replace(&mut seen_spill_full, true) {
                        return Err(TableError::DuplicateFeature {
                            key: "on_spill_full",
                        });
                    }
                    self.on_spill_full = match value {
                        "block" => SpillFullPolicy::Block,
                        "bitmap" => SpillFullPolicy::Bitmap,
                        _ => return Err(TableError::BadSpillFullPolicy { text: value }),
                    };
                }
                Some(("resync_mbps", value)) => {
                    if core::mem::replace(&mut seen_resync, true) {
                        return Err(TableError::DuplicateFeature { key: "resync_mbps" });
                    }
                    self.resync_mbps = parse_number(value, 0..=MAX_RESYNC_MBPS)
                        .ok_or(TableError::BadResyncMbps { text: value })?;
                }
                Some(("wire_crc", value)) => {
                    if core::mem::replace(&mut seen_wire_crc, true) {
                        return Err(TableError::DuplicateFeature { key: "wire_crc" });
                    }
                    self.wire_crc = match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(TableError::BadWireCrc { text: value }),
                    };
                }
                Some(("key", value)) => {
                    if self.key.is_some() {
                        return Err(TableError::DuplicateFeature { key: "key" });
                    }
                    let description = KeyDescription::new(value);
                    self.key =
                        Some(description.ok_or(TableError::BadKeyDescription { text: value })?);
                }
                Some(("encrypt", value)) => {
                    if core::mem::replace(&mut seen_encrypt, true) {
                        return Err(TableError::DuplicateFeature { key: "encrypt" });
                    }
                    self.encrypt = match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(TableError::BadEncrypt { text: value }),
                    };
                }
                _ => return Err(TableError::UnknownFeature { text: feature }),
            }
        }
        if seen_encrypt && self.key.is_none() {
            return Err(TableError::EncryptWithoutKey);
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
        let own_region_kb = t.region_kb != DEFAULT_REGION_KB;
        let own_spill_full = t.on_spill_full != SpillFullPolicy::default();
        let own_resync_mbps = t.resync_mbps != DEFAULT_RESYNC_MBPS;
        let wire_crc_off = !t.wire_crc;
        let encrypt_off = t.key.is_some() && !t.encrypt;
        let features = 1
            + usize::from(t.key.is_some())
            + usize::from(encrypt_off)
            + usize::from(t.volume.is_some())
            + usize::from(self.spill_dev_name.is_some())
            + usize::from(full_sync)
            + usize::from(own_ko_count)
            + usize::from(own_region_kb)
            + usize::from(own_spill_full)
            + usize::from(own_resync_mbps)
            + usize::from(wire_crc_off);
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
        if own_region_kb {
            write!(f, " region_kb:{}", t.region_kb)?;
        }
        if own_spill_full {
            write!(f, " on_spill_full:{}", t.on_spill_full)?;
        }
        if own_resync_mbps {
            write!(f, " resync_mbps:{}", t.resync_mbps)?;
        }
        if wire_crc_off {
            write!(f, " wire_crc:off")?;
        }
        if let Some(key) = &t.key {
            write!(f, " key:{key}")?;
        }
        if encrypt_off {
            write!(f, " encrypt:off")?;
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
    fn region_kb_feature() {
        let args = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1"]).unwrap();
        assert_eq!(args.config.region_kb, DEFAULT_REGION_KB);
        for kb in [MIN_REGION_KB, 128, DEFAULT_REGION_KB * 2, MAX_REGION_KB] {
            let arg = std::format!("region_kb:{kb}");
            let args = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", &arg]).unwrap();
            assert_eq!(args.config.region_kb, kb);
        }
        let words = ["/dev/vdb", "10.0.0.2:1", "2", "region_kb:64", "ko_count:0"];
        let args = TableArgs::parse(&words).unwrap();
        assert_eq!(args.config.region_kb, 64);
        let text = args.config.canonical("254:16", None).to_string();
        assert_eq!(
            text,
            "254:16 10.0.0.2:1 3 queue_mb:64 ko_count:0 region_kb:64"
        );
        let words: std::vec::Vec<&str> = text.split(' ').collect();
        assert_eq!(TableArgs::parse(&words).unwrap().config, args.config);
        let default = ["/dev/vdb", "10.0.0.2:1", "1", "region_kb:4096"];
        assert_eq!(
            TableArgs::parse(&default)
                .unwrap()
                .config
                .canonical("254:16", None)
                .to_string(),
            "254:16 10.0.0.2:1 1 queue_mb:64",
            "the default is not shown"
        );
        let err = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", "region_kb:x"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid region_kb 'x': expected a power of two from 64 to 1048576 (KiB)"
        );
        assert_eq!(err.summary(), "invalid region_kb");
    }

    #[test]
    fn on_spill_full_feature() {
        let args = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1"]).unwrap();
        assert_eq!(args.config.on_spill_full, SpillFullPolicy::Bitmap);
        assert_eq!(SpillFullPolicy::default(), SpillFullPolicy::Bitmap);
        assert_eq!(SpillFullPolicy::Block.as_str(), "block");
        assert_eq!(SpillFullPolicy::Bitmap.as_str(), "bitmap");
        let words = [
            "/dev/vdb",
            "10.0.0.2:1",
            "3",
            "on_spill_full:block",
            "spill:/dev/vdd",
            "sync:full",
        ];
        let args = TableArgs::parse(&words).unwrap();
        assert_eq!(args.config.on_spill_full, SpillFullPolicy::Block);
        let text = args.config.canonical("254:16", Some("254:48")).to_string();
        assert_eq!(
            text,
            "254:16 10.0.0.2:1 4 queue_mb:64 spill:254:48 sync:full on_spill_full:block"
        );
        let words: std::vec::Vec<&str> = text.split(' ').collect();
        assert_eq!(TableArgs::parse(&words).unwrap().config, args.config);
        let default = ["/dev/vdb", "10.0.0.2:1", "1", "on_spill_full:bitmap"];
        let args = TableArgs::parse(&default).unwrap();
        assert_eq!(args.config.on_spill_full, SpillFullPolicy::Bitmap);
        assert_eq!(
            args.config.canonical("254:16", None).to_string(),
            "254:16 10.0.0.2:1 1 queue_mb:64",
            "the default is not shown"
        );
        let err =
            TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", "on_spill_full:drop"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid on_spill_full 'drop': expected block or bitmap"
        );
        assert_eq!(err.summary(), "invalid on_spill_full");
    }

    #[test]
    fn resync_mbps_feature() {
        let args = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1"]).unwrap();
        assert_eq!(args.config.resync_mbps, 0);
        let words = ["/dev/vdb", "10.0.0.2:1", "1", "resync_mbps:100000"];
        let args = TableArgs::parse(&words).unwrap();
        assert_eq!(args.config.resync_mbps, MAX_RESYNC_MBPS);
        let text = args.config.canonical("254:16", None).to_string();
        assert_eq!(text, "254:16 10.0.0.2:1 2 queue_mb:64 resync_mbps:100000");
        let words: std::vec::Vec<&str> = text.split(' ').collect();
        assert_eq!(TableArgs::parse(&words).unwrap().config, args.config);
        let default = ["/dev/vdb", "10.0.0.2:1", "1", "resync_mbps:0"];
        assert_eq!(
            TableArgs::parse(&default)
                .unwrap()
                .config
                .canonical("254:16", None)
                .to_string(),
            "254:16 10.0.0.2:1 1 queue_mb:64",
            "the default (unlimited) is not shown"
        );
        let err =
            TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", "resync_mbps:100001"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid resync_mbps '100001': expected a whole number of MiB/s from 0 (unlimited) \
             to 100000"
        );
        assert_eq!(err.summary(), "invalid resync_mbps");
    }

    #[test]
    fn wire_crc_feature() {
        let args = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1"]).unwrap();
        assert!(args.config.wire_crc, "payload checksums are on by default");
        let on = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", "wire_crc:on"]).unwrap();
        assert_eq!(on.config, args.config);
        assert_eq!(
            on.config.canonical("254:16", None).to_string(),
            "254:16 10.0.0.2:1 1 queue_mb:64",
            "the default (on) is not shown"
        );
        let off = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", "wire_crc:off"]).unwrap();
        assert!(!off.config.wire_crc);
        let text = off.config.canonical("254:16", None).to_string();
        assert_eq!(text, "254:16 10.0.0.2:1 2 queue_mb:64 wire_crc:off");
        let words: std::vec::Vec<&str> = text.split(' ').collect();
        assert_eq!(TableArgs::parse(&words).unwrap().config, off.config);
        let err = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", "wire_crc:1"]).unwrap_err();
        assert_eq!(err.to_string(), "invalid wire_crc '1': expected on or off");
        assert_eq!(err.summary(), "invalid wire_crc");
    }

    #[test]
    fn every_feature_at_once_round_trips() {
        let words = [
            "/dev/vdb",
            "10.0.0.2:1",
            "10.0.0.3:1",
            "9",
            "wire_crc:off",
            "resync_mbps:50",
            "on_spill_full:block",
            "region_kb:1024",
            "ko_count:3",
            "sync:full",
            "spill:/dev/vdd",
            "volume:v",
            "queue_mb:8",
        ];
        let args = TableArgs::parse(&words).unwrap();
        let t = args.config;
        assert_eq!(
            (t.region_kb, t.on_spill_full, t.resync_mbps, t.wire_crc),
            (1024, SpillFullPolicy::Block, 50, false)
        );
        let text = t.canonical("254:16", Some("254:48")).to_string();
        assert_eq!(
            text,
            "254:16 10.0.0.2:1 10.0.0.3:1 9 queue_mb:8 volume:v spill:254:48 sync:full \
             ko_count:3 region_kb:1024 on_spill_full:block resync_mbps:50 wire_crc:off"
        );
        let words: std::vec::Vec<&str> = text.split(' ').collect();
        let again = TableArgs::parse(&words).unwrap();
        assert_eq!(again.config, t);
        assert_eq!(again.spill_dev, Some("254:48"));
    }

    #[test]
    fn key_and_encrypt_features() {
        let args = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", "key:arepl:db"]).unwrap();
        assert_eq!(args.config.key.unwrap().as_str(), "arepl:db");
        assert!(args.config.encrypt, "a key encrypts by default");
        let text = args.config.canonical("254:16", None).to_string();
        assert_eq!(text, "254:16 10.0.0.2:1 2 queue_mb:64 key:arepl:db");
        let off = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "2", "encrypt:off", "key:arepl:db"])
            .unwrap();
        assert!(!off.config.encrypt);
        let text = off.config.canonical("254:16", None).to_string();
        assert_eq!(
            text,
            "254:16 10.0.0.2:1 3 queue_mb:64 key:arepl:db encrypt:off"
        );
        let words: std::vec::Vec<&str> = text.split(' ').collect();
        assert_eq!(TableArgs::parse(&words).unwrap().config, off.config);
        let none = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1"]).unwrap();
        assert_eq!(none.config.key, None);
        let long = std::format!("key:a:{}", "x".repeat(MAX_KEY_DESCRIPTION_LEN));
        assert!(matches!(
            TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", &long]),
            Err(TableError::BadKeyDescription { .. })
        ));
    }

    #[test]
    fn unknown_feature_lists_every_feature() {
        let err = TableArgs::parse(&["/dev/vdb", "10.0.0.2:1", "1", "fast:yes"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown feature argument 'fast:yes': known are queue_mb:N, volume:NAME, spill:DEV, \
             sync:full|none, ko_count:N, region_kb:N, on_spill_full:block|bitmap, \
             resync_mbps:N, wire_crc:on|off, key:DESC and encrypt:on|off"
        );
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
                &[
                    "/dev/vdb",
                    "10.0.0.2:1",
                    "12",
                    "a",
                    "b",
                    "c",
                    "d",
                    "e",
                    "f",
                    "g",
                    "h",
                    "i",
                    "j",
                    "k",
                    "l",
                ],
                TableError::TooManyFeatures { declared: 12 },
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
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "region_kb:32"],
                TableError::BadRegionKb { text: "32" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "region_kb:100"],
                TableError::BadRegionKb { text: "100" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "region_kb:2097152"],
                TableError::BadRegionKb { text: "2097152" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "region_kb:0"],
                TableError::BadRegionKb { text: "0" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "region_kb:+64"],
                TableError::BadRegionKb { text: "+64" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "region_kb:"],
                TableError::BadRegionKb { text: "" },
            ),
            (
                &[
                    "/dev/vdb",
                    "10.0.0.2:1",
                    "2",
                    "region_kb:64",
                    "region_kb:64",
                ],
                TableError::DuplicateFeature { key: "region_kb" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "on_spill_full:"],
                TableError::BadSpillFullPolicy { text: "" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "on_spill_full:Block"],
                TableError::BadSpillFullPolicy { text: "Block" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "on_spill_full"],
                TableError::UnknownFeature {
                    text: "on_spill_full",
                },
            ),
            (
                &[
                    "/dev/vdb",
                    "10.0.0.2:1",
                    "2",
                    "on_spill_full:block",
                    "on_spill_full:bitmap",
                ],
                TableError::DuplicateFeature {
                    key: "on_spill_full",
                },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "resync_mbps:-1"],
                TableError::BadResyncMbps { text: "-1" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "resync_mbps:100001"],
                TableError::BadResyncMbps { text: "100001" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "resync_mbps:"],
                TableError::BadResyncMbps { text: "" },
            ),
            (
                &[
                    "/dev/vdb",
                    "10.0.0.2:1",
                    "2",
                    "resync_mbps:1",
                    "resync_mbps:0",
                ],
                TableError::DuplicateFeature { key: "resync_mbps" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "wire_crc:yes"],
                TableError::BadWireCrc { text: "yes" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "2", "wire_crc:on", "wire_crc:off"],
                TableError::DuplicateFeature { key: "wire_crc" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "key:nocolon"],
                TableError::BadKeyDescription { text: "nocolon" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "key::x"],
                TableError::BadKeyDescription { text: ":x" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "2", "key:a:b", "key:a:c"],
                TableError::DuplicateFeature { key: "key" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "2", "key:a:b", "encrypt:maybe"],
                TableError::BadEncrypt { text: "maybe" },
            ),
            (
                &["/dev/vdb", "10.0.0.2:1", "1", "encrypt:on"],
                TableError::EncryptWithoutKey,
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
