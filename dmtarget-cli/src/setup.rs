//! Building an arepl table line and making sure the kernel can take it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use arepl_core::auth::Psk;

use arepl_core::table::{
    SpillFullPolicy, TableArgs, DEFAULT_KO_COUNT, DEFAULT_REGION_KB, DEFAULT_RESYNC_MBPS,
};

use crate::cli::{InitialSync, LinkArgs, Switch};
use crate::dm::{self, DeviceMapper, TargetLine};
use crate::lvm::LvName;

/// The arepl table line (one target over `sectors`) on local device `local`.
pub fn arepl_table(
    local: &str,
    sectors: u64,
    link: &LinkArgs,
    volume: &str,
    spill: Option<&str>,
) -> Result<TargetLine, String> {
    let mut args = vec![local.to_string(), link.primary.to_string()];
    args.extend(link.backup.map(|b| b.to_string()));
    let mut features = vec![
        format!("queue_mb:{}", link.queue_mb),
        format!("volume:{volume}"),
    ];
    features.extend(spill.map(|spill| format!("spill:{spill}")));
    if link.initial_sync == InitialSync::Full {
        features.push("sync:full".into());
    }
    if link.ko_count != DEFAULT_KO_COUNT {
        features.push(format!("ko_count:{}", link.ko_count));
    }
    if link.region_kb != DEFAULT_REGION_KB {
        features.push(format!("region_kb:{}", link.region_kb));
    }
    let on_spill_full = link.on_spill_full.policy();
    if on_spill_full != SpillFullPolicy::default() {
        features.push(format!("on_spill_full:{}", on_spill_full.as_str()));
    }
    if link.resync_mbps != DEFAULT_RESYNC_MBPS {
        features.push(format!("resync_mbps:{}", link.resync_mbps));
    }
    if link.wire_crc == Switch::Off {
        features.push("wire_crc:off".into());
    }
    if link.key_file.is_some() {
        features.push(format!("key:{}", key_description(volume)));
        if link.encrypt == Switch::Off {
            features.push("encrypt:off".into());
        }
    } else if link.encrypt == Switch::Off {
        return Err("--encrypt off needs --key-file: only authenticated links encrypt".into());
    }
    args.push(features.len().to_string());
    args.extend(features);
    // The kernel's own parser: a mistake is reported here, in words, rather than as a
    // bare EINVAL from the table load.
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    TableArgs::parse(&words).map_err(|err| err.to_string())?;
    Ok(TargetLine {
        start: 0,
        length: sectors,
        kind: "arepl".into(),
        params: args.join(" "),
    })
}

/// The logon key a volume's links prove.
pub fn key_description(volume: &str) -> String {
    format!("arepl:{volume}")
}

/// Puts the key in `link.key_file`, if any, into root's user keyring as the volume's
/// logon key (replacing an older one), where the kernel reads it when the table loads.
pub fn load_key(link: &LinkArgs, volume: &str) -> Result<(), String> {
    let Some(path) = &link.key_file else {
        return Ok(());
    };
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|err| format!("key file {shown}: {err}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "key file {shown} has mode {mode:03o}: a key must be readable by root only \
             (chmod 600)"
        ));
    }
    let text = std::fs::read(path).map_err(|err| format!("key file {shown}: {err}"))?;
    Psk::parse(&text).map_err(|err| format!("key file {shown}: {err}"))?;
    let description = key_description(volume);
    let mut child = Command::new("keyctl")
        .args(["padd", "logon", &description, "@u"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run keyctl (install keyutils): {err}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&text)
        .map_err(|err| format!("keyctl: {err}"))?;
    let out = child
        .wait_with_output()
        .map_err(|err| format!("keyctl: {err}"))?;
    if !out.status.success() {
        return Err(format!(
            "keyctl padd logon {description} @u failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Loads the dm-arepl module unless the kernel already has the target.
pub fn ensure_module(dm: &DeviceMapper) -> Result<(), String> {
    if dm.has_target("arepl")? {
        return Ok(());
    }
    let loaded = Command::new("modprobe").arg("dm_arepl").output();
    if dm.has_target("arepl")? {
        return Ok(());
    }
    let why = match loaded {
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(err) => format!("cannot run modprobe: {err}"),
    };
    Err(format!(
        "the kernel has no arepl target and `modprobe dm_arepl` did not load it ({why}); \
         install the module (make install-module, or DKMS)"
    ))
}

/// `major:minor` of a spill or local device given as `VG/LV` or a path; refuses a
/// missing one before anything changes.
pub fn resolve_device(dm: &DeviceMapper, text: &str, role: &str) -> Result<String, String> {
    if LvName::looks_like(text) {
        let lv = LvName::parse(text)?;
        return match dm.state(&lv.dm_name())? {
            Some(state) => Ok(state.devnum),
            None => Err(format!("{role} device {text}: {}", lv.missing_reason())),
        };
    }
    let path = Path::new(text);
    if !path.exists() {
        return Err(format!("{role} device {text} does not exist"));
    }
    dm::devnum_of(path).map_err(|err| format!("{role} device: {err}"))
}

/// The device-mapper name a command argument means: `VG/LV` or a device-mapper name.
pub fn dm_name_of(text: &str) -> Result<String, String> {
    if LvName::looks_like(text) {
        Ok(LvName::parse(text)?.dm_name())
    } else {
        Ok(text.trim_start_matches("/dev/mapper/").to_string())
    }
}

/// The status words of arepl device `name` (after `start len arepl`).
pub fn arepl_status_words(dm: &DeviceMapper, name: &str) -> Result<String, String> {
    match dm.status(name)?.as_slice() {
        [line] if line.kind == "arepl" => Ok(line.params.clone()),
        _ => Err(format!("{name} is not an arepl device")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::OnSpillFull;

    fn link(ko_count: u32) -> LinkArgs {
        LinkArgs {
            primary: "10.0.0.2:7788".parse().unwrap(),
            backup: None,
            queue_mb: 16,
            volume: None,
            initial_sync: InitialSync::Full,
            ko_count,
            region_kb: DEFAULT_REGION_KB,
            on_spill_full: OnSpillFull::Bitmap,
            resync_mbps: DEFAULT_RESYNC_MBPS,
            wire_crc: Switch::On,
            key_file: None,
            encrypt: Switch::On,
        }
    }

    #[test]
    fn a_key_file_names_the_volumes_logon_key_never_the_key() {
        let mut keyed = link(DEFAULT_KO_COUNT);
        keyed.key_file = Some("/etc/arepl/db.key".into());
        let line = arepl_table("253:1", 8, &keyed, "db", None).unwrap();
        assert_eq!(
            line.params,
            "253:1 10.0.0.2:7788 4 queue_mb:16 volume:db sync:full key:arepl:db"
        );
        keyed.encrypt = Switch::Off;
        let line = arepl_table("253:1", 8, &keyed, "db", None).unwrap();
        assert!(
            line.params.ends_with(" key:arepl:db encrypt:off"),
            "{}",
            line.params
        );
        let mut clear = link(DEFAULT_KO_COUNT);
        clear.encrypt = Switch::Off;
        let err = arepl_table("253:1", 8, &clear, "db", None).unwrap_err();
        assert!(err.contains("needs --key-file"), "{err}");
    }

    #[test]
    fn a_key_file_readable_by_others_or_not_a_key_is_refused_before_keyctl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.key");
        std::fs::write(&path, "00".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut keyed = link(DEFAULT_KO_COUNT);
        keyed.key_file = Some(path.clone());
        let err = load_key(&keyed, "db").unwrap_err();
        assert!(
            err.contains("mode 644") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::write(&path, "not a key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_key(&keyed, "db").unwrap_err();
        assert!(err.contains("64 hex digits"), "{err}");
    }

    #[test]
    fn the_table_carries_ko_count_only_when_not_the_default() {
        let line = arepl_table("253:1", 8, &link(DEFAULT_KO_COUNT), "db", None).unwrap();
        assert_eq!(
            line.params,
            "253:1 10.0.0.2:7788 3 queue_mb:16 volume:db sync:full"
        );
        let line = arepl_table("253:1", 8, &link(0), "db", Some("253:2")).unwrap();
        assert_eq!(
            line.params,
            "253:1 10.0.0.2:7788 5 queue_mb:16 volume:db spill:253:2 sync:full ko_count:0"
        );
        let err = arepl_table("253:1", 8, &link(1 << 20), "db", None).unwrap_err();
        assert!(err.starts_with("invalid ko_count '1048576'"), "{err}");
    }

    #[test]
    fn the_table_carries_region_spill_full_and_resync_only_when_not_the_default() {
        let mut own = link(DEFAULT_KO_COUNT);
        own.region_kb = 256;
        let line = arepl_table("253:1", 8, &own, "db", None).unwrap();
        assert_eq!(
            line.params,
            "253:1 10.0.0.2:7788 4 queue_mb:16 volume:db sync:full region_kb:256"
        );
        own.on_spill_full = OnSpillFull::Block;
        own.resync_mbps = 100;
        own.ko_count = 0;
        own.wire_crc = Switch::Off;
        let line = arepl_table("253:1", 8, &own, "db", Some("253:2")).unwrap();
        assert_eq!(
            line.params,
            "253:1 10.0.0.2:7788 9 queue_mb:16 volume:db spill:253:2 sync:full ko_count:0 \
             region_kb:256 on_spill_full:block resync_mbps:100 wire_crc:off"
        );
        let words: Vec<&str> = line.params.split(' ').collect();
        let parsed = TableArgs::parse(&words).unwrap().config;
        assert_eq!(parsed.region_kb, 256);
        assert_eq!(parsed.on_spill_full, SpillFullPolicy::Block);
        assert_eq!(parsed.resync_mbps, 100);
        assert!(!parsed.wire_crc);

        let mut bad = link(DEFAULT_KO_COUNT);
        bad.region_kb = 100;
        let err = arepl_table("253:1", 8, &bad, "db", None).unwrap_err();
        assert!(err.starts_with("invalid region_kb '100'"), "{err}");
        let mut bad = link(DEFAULT_KO_COUNT);
        bad.resync_mbps = 100_001;
        let err = arepl_table("253:1", 8, &bad, "db", None).unwrap_err();
        assert!(err.starts_with("invalid resync_mbps '100001'"), "{err}");
    }
}
