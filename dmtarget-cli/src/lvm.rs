//! LVM names: `VG/LV` as the administrator writes it, and the device-mapper names LVM
//! gives its devices.

use std::fmt;
use std::process::Command;

/// Suffix of the hidden device that takes over an LV's original table. LVM's own
/// layers use `-real`, `-cow`, `_tdata`...; a dash cannot occur unescaped in an LV
/// name, so this never collides with an LV.
pub const REAL_SUFFIX: &str = "-arepl_real";
/// UUID prefix of LVM's devices.
pub const LVM_UUID_PREFIX: &str = "LVM-";

/// A logical volume named `VG/LV`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvName {
    vg: String,
    lv: String,
}

impl LvName {
    /// Parses `VG/LV` (also `/dev/VG/LV`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bare = text.strip_prefix("/dev/").unwrap_or(text);
        match bare.split_once('/') {
            Some((vg, lv)) if valid(vg) && valid(lv) => Ok(Self {
                vg: vg.to_string(),
                lv: lv.to_string(),
            }),
            _ => Err(format!(
                "'{text}' is not a logical volume name: expected VG/LV (letters, digits, \
                 and . _ + -)"
            )),
        }
    }

    /// Whether `text` names an LV rather than a device path or device-mapper name.
    pub fn looks_like(text: &str) -> bool {
        !text.starts_with('/') && text.contains('/')
    }

    /// The device-mapper name LVM gives the LV: dashes in either name doubled.
    pub fn dm_name(&self) -> String {
        format!(
            "{}-{}",
            self.vg.replace('-', "--"),
            self.lv.replace('-', "--")
        )
    }

    /// The hidden device holding the LV's original table while it is converted.
    pub fn real_name(&self) -> String {
        format!("{}{REAL_SUFFIX}", self.dm_name())
    }

    /// Why the LV has no device: inactive or nonexistent, if `lvs` can tell.
    pub fn missing_reason(&self) -> String {
        let listed = Command::new("lvs")
            .args(["--noheadings", "-o", "lv_name"])
            .arg(self.to_string())
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .output();
        match listed {
            Ok(out) if out.status.success() => format!(
                "logical volume {self} is not active: activate it first (lvchange -ay {self})"
            ),
            Ok(_) => format!("logical volume {self} does not exist"),
            Err(_) => format!("logical volume {self} has no device-mapper device (not active?)"),
        }
    }
}

impl fmt::Display for LvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vg, self.lv)
    }
}

/// LVM's name rules: letters, digits and `.` `_` `+` `-`, not starting with `-`.
fn valid(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// The `VG/LV` of an LVM device-mapper name (`vg--a-lv` is `vg-a/lv`).
pub fn lv_of_dm_name(dm_name: &str) -> Option<LvName> {
    let bytes = dm_name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'-' {
            if bytes.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            let (vg, lv) = (&dm_name[..i], &dm_name[i + 1..]);
            return Some(LvName {
                vg: vg.replace("--", "-"),
                lv: lv.replace("--", "-"),
            });
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_like_lvm() {
        let lv = LvName::parse("vg-0/my-data").unwrap();
        assert_eq!(lv.dm_name(), "vg--0-my--data");
        assert_eq!(lv.real_name(), "vg--0-my--data-arepl_real");
        assert_eq!(lv.to_string(), "vg-0/my-data");
        assert_eq!(lv_of_dm_name("vg--0-my--data"), Some(lv));
        assert_eq!(LvName::parse("/dev/vg/lv").unwrap().dm_name(), "vg-lv");
        assert_eq!(lv_of_dm_name("plain"), None);
    }

    #[test]
    fn refuses_what_is_not_vg_lv() {
        for bad in ["vg", "/dev/sdb", "vg/", "/lv", "vg/l v", "vg/-lv", "a/b/c"] {
            let err = LvName::parse(bad).unwrap_err();
            assert!(err.contains("not a logical volume name"), "{bad}: {err}");
        }
        assert!(LvName::looks_like("vg/lv"));
        assert!(!LvName::looks_like("/dev/sdb"));
        assert!(!LvName::looks_like("db"));
    }
}
