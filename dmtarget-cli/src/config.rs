//! Persistent configuration: one TOML file per replicated volume in /etc/arepl, which
//! `arepl up` applies at boot and `arepl down` tears down (LVM's metadata knows nothing
//! of arepl, so nothing else would).
//!
//! ```toml
//! # /etc/arepl/db.toml
//! lv = "vg0/db"                # an LV to convert, or
//! # device = "/dev/sdb"        # a plain device, created as /dev/mapper/<name>
//! primary = "10.0.0.2:7788"
//! backup = "10.0.1.2:7788"     # optional
//! spill = "vg0/db-spill"       # optional: VG/LV or a device path
//! queue_mb = 64                # optional
//! volume = "db"                # optional: the name replicad checks
//! initial_sync = "full"        # optional: "full" (default) or "none"
//! ko_count = 7                 # optional: 5 s periods a live replicad may not ack
//! region_kb = 4096             # optional: dirty-tracking region in KiB (power of two)
//! on_spill_full = "bitmap"     # optional: "bitmap" (default) or "block"
//! resync_mbps = 0              # optional: resync read limit in MiB/s (0: unlimited)
//! wire_crc = "on"              # optional: "on" (default) or "off": payload checksums
//! key_file = "/etc/arepl/db.key" # optional: pre-shared key authenticating the links
//! encrypt = "on"               # optional, with key_file: "on" (default) or "off"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::{InitialSync, LinkArgs, OnSpillFull, Switch};
use arepl_core::table::{
    DEFAULT_KO_COUNT, DEFAULT_QUEUE_MB, DEFAULT_REGION_KB, DEFAULT_RESYNC_MBPS,
};

/// One volume's file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeFile {
    pub lv: Option<String>,
    pub device: Option<PathBuf>,
    /// Device-mapper name for `device` (default: the file name without `.toml`).
    pub name: Option<String>,
    pub primary: SocketAddr,
    pub backup: Option<SocketAddr>,
    pub spill: Option<String>,
    pub queue_mb: Option<u32>,
    pub volume: Option<String>,
    pub initial_sync: Option<InitialSync>,
    pub ko_count: Option<u32>,
    pub region_kb: Option<u32>,
    pub on_spill_full: Option<OnSpillFull>,
    pub resync_mbps: Option<u32>,
    pub wire_crc: Option<Switch>,
    pub key_file: Option<PathBuf>,
    pub encrypt: Option<Switch>,
}

/// What a file asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Convert this LV (`VG/LV`).
    Lv(String),
    /// Create device `name` on `device`.
    Device { name: String, device: PathBuf },
}

/// A parsed, checked volume description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeConfig {
    /// The file name without `.toml`.
    pub id: String,
    pub target: Target,
    pub link: LinkArgs,
    pub spill: Option<String>,
}

impl VolumeConfig {
    /// Parses file `path`'s `text`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, String> {
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: file name is not UTF-8", path.display()))?
            .to_string();
        let file: VolumeFile =
            toml::from_str(text).map_err(|err| format!("{}: {}", path.display(), err.message()))?;
        let target = match (file.lv, file.device) {
            (Some(lv), None) => {
                if file.name.is_some() {
                    return Err(format!(
                        "{}: `name` is for `device`; an LV keeps its own name",
                        path.display()
                    ));
                }
                Target::Lv(lv)
            }
            (None, Some(device)) => Target::Device {
                name: file.name.unwrap_or_else(|| id.clone()),
                device,
            },
            _ => {
                return Err(format!(
                    "{}: give exactly one of `lv` (VG/LV) and `device` (a path)",
                    path.display()
                ))
            }
        };
        Ok(Self {
            id,
            target,
            link: LinkArgs {
                primary: file.primary,
                backup: file.backup,
                queue_mb: file.queue_mb.unwrap_or(DEFAULT_QUEUE_MB),
                volume: file.volume,
                initial_sync: file.initial_sync.unwrap_or(InitialSync::Full),
                ko_count: file.ko_count.unwrap_or(DEFAULT_KO_COUNT),
                region_kb: file.region_kb.unwrap_or(DEFAULT_REGION_KB),
                on_spill_full: file.on_spill_full.unwrap_or(OnSpillFull::Bitmap),
                resync_mbps: file.resync_mbps.unwrap_or(DEFAULT_RESYNC_MBPS),
                wire_crc: file.wire_crc.unwrap_or(Switch::On),
                key_file: file.key_file,
                encrypt: file.encrypt.unwrap_or(Switch::On),
            },
            spill: file.spill,
        })
    }
}

/// Every `*.toml` in `dir`, sorted by name, each parsed or with its error.
pub fn load_dir(dir: &Path) -> Result<Vec<Result<VolumeConfig, String>>, String> {
    let entries = std::fs::read_dir(dir).map_err(|err| {
        format!(
            "cannot read the configuration directory {}: {err}",
            dir.display()
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    Ok(paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .map_err(|err| format!("{}: {err}", path.display()))?;
            VolumeConfig::parse(path, &text)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lv_volume_with_defaults() {
        let text = "lv = \"vg0/db\"\nprimary = \"10.0.0.2:7788\"\n";
        let v = VolumeConfig::parse(Path::new("/etc/arepl/db.toml"), text).unwrap();
        assert_eq!(v.id, "db");
        assert_eq!(v.target, Target::Lv("vg0/db".into()));
        assert_eq!(v.link.queue_mb, DEFAULT_QUEUE_MB);
        assert_eq!(v.link.initial_sync, InitialSync::Full);
        assert_eq!(v.link.ko_count, DEFAULT_KO_COUNT);
        assert_eq!(v.link.region_kb, DEFAULT_REGION_KB);
        assert_eq!(v.link.on_spill_full, OnSpillFull::Bitmap);
        assert_eq!(v.link.resync_mbps, DEFAULT_RESYNC_MBPS);
        assert_eq!(v.link.wire_crc, Switch::On);
        assert_eq!(v.link.backup, None);
    }

    #[test]
    fn device_volume_with_everything() {
        let text = r#"
            device = "/dev/sdb"
            name = "web"
            primary = "10.0.0.2:7788"
            backup = "10.0.1.2:7788"
            spill = "/dev/sdc"
            queue_mb = 16
            volume = "webvol"
            initial_sync = "none"
            ko_count = 0
            region_kb = 65536
            on_spill_full = "block"
            resync_mbps = 200
            wire_crc = "off"
        "#;
        let v = VolumeConfig::parse(Path::new("x.toml"), text).unwrap();
        assert_eq!(
            v.target,
            Target::Device {
                name: "web".into(),
                device: "/dev/sdb".into()
            }
        );
        assert_eq!(v.link.queue_mb, 16);
        assert_eq!(v.link.initial_sync, InitialSync::None);
        assert_eq!(v.link.ko_count, 0);
        assert_eq!(v.link.region_kb, 65536);
        assert_eq!(v.link.on_spill_full, OnSpillFull::Block);
        assert_eq!(v.link.resync_mbps, 200);
        assert_eq!(v.link.wire_crc, Switch::Off);
        assert_eq!(v.spill.as_deref(), Some("/dev/sdc"));
    }

    #[test]
    fn refusals_are_clear() {
        let p = Path::new("v.toml");
        let both = "lv = \"a/b\"\ndevice = \"/dev/x\"\nprimary = \"10.0.0.2:1\"\n";
        assert!(VolumeConfig::parse(p, both)
            .unwrap_err()
            .contains("exactly one of"));
        let typo = "lv = \"a/b\"\nprimary = \"10.0.0.2:1\"\nqueue = 4\n";
        assert!(VolumeConfig::parse(p, typo)
            .unwrap_err()
            .contains("unknown field `queue`"));
        let bad_addr = "lv = \"a/b\"\nprimary = \"nowhere\"\n";
        assert!(VolumeConfig::parse(p, bad_addr)
            .unwrap_err()
            .starts_with("v.toml: "));
        let bad_sync = "lv = \"a/b\"\nprimary = \"10.0.0.2:1\"\ninitial_sync = \"some\"\n";
        assert!(VolumeConfig::parse(p, bad_sync).is_err());
        let bad_policy = "lv = \"a/b\"\nprimary = \"10.0.0.2:1\"\non_spill_full = \"drop\"\n";
        assert!(VolumeConfig::parse(p, bad_policy).is_err());
    }

    #[test]
    fn directory_is_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.toml"),
            "lv = \"v/b\"\nprimary = \"10.0.0.2:1\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("a.toml"), "broken").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let loaded = load_dir(dir.path()).unwrap();
        assert_eq!(loaded.len(), 2);
        assert!(loaded[0].is_err());
        assert_eq!(loaded[1].as_ref().unwrap().id, "b");
        assert!(load_dir(&dir.path().join("missing")).is_err());
    }
}
