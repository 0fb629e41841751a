//! Settings from the command line and an optional TOML file.
//!
//! ```toml
//! listen = "0.0.0.0:7788"
//! target = "/dev/vg0/replica"
//! state_dir = "/var/lib/replicad"
//! metrics_listen = "127.0.0.1:9477" # optional; no metrics server without it
//! before_resync = "/usr/local/sbin/keep-replica" # optional hook before a resync
//! resync_snapshot = "auto"           # or "none": LVM snapshot before a resync
//! resync_snapshot_size = "100%ORIGIN" # lvcreate -l with a %, else -L
//! key_file = "/etc/replicad/db.key"   # optional: senders must prove this key
//! next_key_file = "/etc/replicad/db.next.key" # optional: also accepted, for a rollover
//! metrics_allow_remote = false       # true: metrics_listen may be a non-loopback address
//! ```
//!
//! Command-line flags override the file. Relative paths in the file are relative to the
//! file's directory, so a service can be started from anywhere.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::keys::KeyFiles;
use crate::protection::{ResyncProtection, SnapshotMode, DEFAULT_SNAPSHOT_SIZE};

/// Settings as given, each possibly missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialSettings {
    /// Address to accept replication links on.
    pub listen: Option<SocketAddr>,
    /// File or block device the writes are applied to.
    pub target: Option<PathBuf>,
    /// Directory for the durable state.
    pub state_dir: Option<PathBuf>,
    /// Address to serve Prometheus metrics on.
    pub metrics_listen: Option<SocketAddr>,
    /// Shell command run before a resync overwrites a consistent replica.
    pub before_resync: Option<String>,
    /// Whether a resync snapshots an LVM target first.
    pub resync_snapshot: Option<SnapshotMode>,
    /// The snapshot's size.
    pub resync_snapshot_size: Option<String>,
    /// File with the pre-shared key senders must prove.
    pub key_file: Option<PathBuf>,
    /// File with the next key, accepted too during a rollover.
    pub next_key_file: Option<PathBuf>,
    /// Serve metrics on a non-loopback address.
    pub metrics_allow_remote: Option<bool>,
}

/// Complete settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Address to accept replication links on.
    pub listen: SocketAddr,
    /// File or block device the writes are applied to.
    pub target: PathBuf,
    /// Directory for the durable state.
    pub state_dir: PathBuf,
    /// Address to serve Prometheus metrics on; `None`: no metrics server.
    pub metrics_listen: Option<SocketAddr>,
    /// How a resync protects the replica's last consistent image.
    pub protection: ResyncProtection,
    /// Where the keys senders must prove are read from; `None`: no authentication.
    pub keys: Option<KeyFiles>,
}

/// Why the settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        message: String,
    },
    /// A next key without a current one.
    #[error("next_key_file needs key_file: the next key only joins a current one")]
    NextKeyAlone,
    /// Metrics would be served beyond this host without being asked to.
    #[error(
        "metrics_listen {0} is not a loopback address: /metrics has no authentication; \
         use --metrics-allow-remote (metrics_allow_remote = true) to serve it there anyway"
    )]
    MetricsNotLoopback(SocketAddr),
    /// A required setting is missing everywhere.
    #[error("missing {setting}: use --{flag} or `{setting}` in the config file")]
    Missing {
        /// The setting's name in the file.
        setting: &'static str,
        /// The flag's name.
        flag: &'static str,
    },
}

impl PartialSettings {
    /// Reads a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parsed = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        Ok(parsed.relative_to(base))
    }

    /// Parses TOML text; the error is the parser's message on one line.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|err| {
            // toml's messages span several lines with a source excerpt; keep the gist.
            err.message().trim().replace('\n', " ")
        })
    }

    fn relative_to(self, base: &Path) -> Self {
        let rebase = |path: PathBuf| {
            if path.is_relative() {
                base.join(path)
            } else {
                path
            }
        };
        Self {
            target: self.target.map(rebase),
            state_dir: self.state_dir.map(rebase),
            key_file: self.key_file.map(rebase),
            next_key_file: self.next_key_file.map(rebase),
            // The hook is a shell command, run from replicad's working directory: it is
            // left as written.
            ..self
        }
    }

    /// These settings, with `overrides` taking precedence, completed.
    pub fn resolve(self, overrides: PartialSettings) -> Result<Settings, ConfigError> {
        let missing = |setting, flag| ConfigError::Missing { setting, flag };
        let keys = match (
            overrides.key_file.or(self.key_file),
            overrides.next_key_file.or(self.next_key_file),
        ) {
            (Some(current), next) => Some(KeyFiles { current, next }),
            (None, Some(_)) => return Err(ConfigError::NextKeyAlone),
            (None, None) => None,
        };
        let metrics_listen = overrides.metrics_listen.or(self.metrics_listen);
        let allow_remote = overrides
            .metrics_allow_remote
            .or(self.metrics_allow_remote)
            .unwrap_or(false);
        if let Some(addr) = metrics_listen.filter(|addr| !addr.ip().is_loopback()) {
            if !allow_remote {
                return Err(ConfigError::MetricsNotLoopback(addr));
            }
        }
        Ok(Settings {
            listen: overrides
                .listen
                .or(self.listen)
                .ok_or(missing("listen", "listen"))?,
            target: overrides
                .target
                .or(self.target)
                .ok_or(missing("target", "target"))?,
            state_dir: overrides
                .state_dir
                .or(self.state_dir)
                .ok_or(missing("state_dir", "state-dir"))?,
            metrics_listen,
            protection: ResyncProtection {
                before_resync: overrides.before_resync.or(self.before_resync),
                snapshot: overrides
                    .resync_snapshot
                    .or(self.resync_snapshot)
                    .unwrap_or_default(),
                snapshot_size: overrides
                    .resync_snapshot_size
                    .or(self.resync_snapshot_size)
                    .unwrap_or_else(|| DEFAULT_SNAPSHOT_SIZE.to_string()),
                ..ResyncProtection::default()
            },
            keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replicad.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7788\"\ntarget = \"disk.img\"\nstate_dir = \"/var/lib/replicad\"\n",
        )
        .unwrap();
        let file = PartialSettings::load(&path).unwrap();
        assert_eq!(file.target, Some(dir.path().join("disk.img")));
        let settings = file
            .resolve(PartialSettings {
                listen: Some("127.0.0.1:9000".parse().unwrap()),
                ..PartialSettings::default()
            })
            .unwrap();
        assert_eq!(settings.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(settings.state_dir, PathBuf::from("/var/lib/replicad"));
        assert_eq!(settings.metrics_listen, None);
    }

    #[test]
    fn metrics_listen_is_optional_and_a_flag_overrides_it() {
        let file = PartialSettings::parse(
            "listen = \"127.0.0.1:7788\"\ntarget = \"/dev/t\"\nstate_dir = \"/s\"\n\
             metrics_listen = \"127.0.0.1:9477\"\n",
        )
        .unwrap();
        assert_eq!(file.metrics_listen, Some("127.0.0.1:9477".parse().unwrap()));
        let settings = file.clone().resolve(PartialSettings::default()).unwrap();
        assert_eq!(
            settings.metrics_listen,
            Some("127.0.0.1:9477".parse().unwrap())
        );
        let settings = file
            .resolve(PartialSettings {
                metrics_listen: Some("[::1]:9100".parse().unwrap()),
                ..PartialSettings::default()
            })
            .unwrap();
        assert_eq!(settings.metrics_listen, Some("[::1]:9100".parse().unwrap()));
        let err = PartialSettings::parse("metrics_listen = \"localhost\"").unwrap_err();
        assert!(err.contains("socket address"), "{err}");
        assert!(PartialSettings::parse("metrics = \"127.0.0.1:9477\"").is_err());
    }

    #[test]
    fn resync_protection_keys_default_and_flags_override_them() {
        let base = "listen = \"127.0.0.1:7788\"\ntarget = \"/dev/t\"\nstate_dir = \"/s\"\n";
        let settings = PartialSettings::parse(base)
            .unwrap()
            .resolve(PartialSettings::default())
            .unwrap();
        assert_eq!(settings.protection, ResyncProtection::default());
        assert_eq!(settings.protection.snapshot, SnapshotMode::Auto);
        assert_eq!(settings.protection.snapshot_size, "100%ORIGIN");
        let file = PartialSettings::parse(&format!(
            "{base}before_resync = \"keep-it --now\"\nresync_snapshot = \"none\"\n\
             resync_snapshot_size = \"20%ORIGIN\"\n"
        ))
        .unwrap();
        let settings = file.clone().resolve(PartialSettings::default()).unwrap();
        assert_eq!(
            settings.protection.before_resync.as_deref(),
            Some("keep-it --now")
        );
        assert_eq!(settings.protection.snapshot, SnapshotMode::Disabled);
        assert_eq!(settings.protection.snapshot_size, "20%ORIGIN");
        let settings = file
            .resolve(PartialSettings {
                resync_snapshot: Some(SnapshotMode::Auto),
                resync_snapshot_size: Some("4G".to_string()),
                ..PartialSettings::default()
            })
            .unwrap();
        assert_eq!(settings.protection.snapshot, SnapshotMode::Auto);
        assert_eq!(settings.protection.snapshot_size, "4G");
        let err = PartialSettings::parse("resync_snapshot = \"always\"").unwrap_err();
        assert!(err.contains("unknown variant"), "{err}");
    }

    #[test]
    fn keys_and_remote_metrics_are_opt_in() {
        let base = "listen = \"127.0.0.1:7788\"\ntarget = \"/dev/t\"\nstate_dir = \"/s\"\n";
        let none = PartialSettings::parse(base).unwrap();
        assert_eq!(
            none.clone()
                .resolve(PartialSettings::default())
                .unwrap()
                .keys,
            None
        );
        let keys = PartialSettings::parse(&format!(
            "{base}key_file = \"/k/cur\"\nnext_key_file = \"/k/next\"\n"
        ))
        .unwrap()
        .resolve(PartialSettings::default())
        .unwrap()
        .keys
        .unwrap();
        assert_eq!(keys.current, PathBuf::from("/k/cur"));
        assert_eq!(keys.next, Some(PathBuf::from("/k/next")));
        let alone = none.clone().resolve(PartialSettings {
            next_key_file: Some("/k/next".into()),
            ..PartialSettings::default()
        });
        assert!(matches!(alone, Err(ConfigError::NextKeyAlone)));
        let remote = PartialSettings {
            metrics_listen: Some("0.0.0.0:9477".parse().unwrap()),
            ..PartialSettings::default()
        };
        let err = none.clone().resolve(remote.clone()).unwrap_err();
        assert!(err.to_string().contains("--metrics-allow-remote"), "{err}");
        let allowed = none
            .resolve(PartialSettings {
                metrics_allow_remote: Some(true),
                ..remote
            })
            .unwrap();
        assert_eq!(
            allowed.metrics_listen,
            Some("0.0.0.0:9477".parse().unwrap())
        );
    }

    #[test]
    fn missing_settings_and_bad_files_are_explained() {
        let err = PartialSettings::default()
            .resolve(PartialSettings {
                listen: Some("127.0.0.1:1".parse().unwrap()),
                target: Some("t".into()),
                ..PartialSettings::default()
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing state_dir: use --state-dir or `state_dir` in the config file"
        );
        let err = PartialSettings::parse("listen = \"nonsense\"").unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        assert!(PartialSettings::parse("bogus = 1").is_err());
        let err = PartialSettings::load(Path::new("/nonexistent/replicad.toml")).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("config file /nonexistent/replicad.toml: "));
    }
}
