//! What `arepl status` reports about one device, built from its table and status lines;
//! rendered as aligned text or as JSON (schema: docs/status-json.md).

use std::fmt::Write;

use arepl_core::status::{ActiveLink, LinkReport, Status};
use arepl_core::table::TableArgs;
use serde::Serialize;

/// Version of the JSON document; bumped only for incompatible changes.
pub const JSON_VERSION: u32 = 1;

/// The JSON document `arepl status --json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    /// [`JSON_VERSION`].
    pub version: u32,
    /// One entry per arepl device, sorted by name.
    pub devices: Vec<DeviceReport>,
}

/// One replicated device.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceReport {
    pub name: String,
    /// `VG/LV` when the device is a converted logical volume.
    pub lv: Option<String>,
    pub volume: String,
    /// Always `primary`: this host sends; replicad is the secondary.
    pub role: &'static str,
    /// `major:minor` of the local device under the target.
    pub local_device: String,
    pub mode: &'static str,
    /// State of the link carrying (or trying to carry) the stream.
    pub link: &'static str,
    /// `primary`, `backup` or `none`.
    pub active_link: &'static str,
    pub paused: bool,
    pub links: Vec<LinkJson>,
    pub lag: Lag,
    pub queue: Queue,
    pub sent_seq: u64,
    pub acked_seq: u64,
    pub spill: Option<Spill>,
    pub initial_sync: InitialSync,
    /// A replication digest check found that the replica's history differs from this
    /// volume's: it may lack or misplace writes and needs a resync.
    pub diverged: bool,
    /// The online verify since the table was loaded, if one ran.
    pub verify: Option<VerifyReport>,
    pub errors: Errors,
    pub io: Io,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkJson {
    /// `primary` or `backup`.
    pub name: &'static str,
    pub address: String,
    pub state: &'static str,
    pub connects: u64,
    pub errors: u64,
    /// errno of the last failure, 0 if none.
    pub last_error: u64,
}

/// What the replica lacks: the recovery point.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Lag {
    /// Entries not yet acknowledged, in memory and spilled.
    pub writes: u64,
    /// Their bytes (memory queue accounting plus spill log bytes).
    pub bytes: u64,
    /// Memory queue use, percent of its bound.
    pub queue_percent: f64,
    /// Age of the oldest entry in memory, in milliseconds (spilled entries carry no age).
    pub oldest_write_age_ms: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Queue {
    pub entries: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Spill {
    pub entries: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InitialSync {
    pub copied_bytes: u64,
    pub total_bytes: u64,
    /// Whether the replica is a consistent image of the volume at an earlier moment.
    pub consistent: bool,
    /// Bytes per second the copy made over about the last 10 s (0: no copy running, or
    /// not for a second yet, or stalled).
    pub rate_bytes_per_s: u64,
    /// Seconds until the whole volume is copied at that rate; null when no copy runs or
    /// it makes no progress.
    pub eta_s: Option<u64>,
}

impl InitialSync {
    fn new(copied_bytes: u64, total_bytes: u64, consistent: bool, rate: u64) -> Self {
        let left = total_bytes.saturating_sub(copied_bytes);
        Self {
            copied_bytes,
            total_bytes,
            consistent,
            rate_bytes_per_s: rate,
            eta_s: (left > 0 && rate > 0).then(|| left.div_ceil(rate)),
        }
    }

    fn copying(&self) -> bool {
        self.copied_bytes < self.total_bytes
    }
}

/// An online verify: the replica checked chunk by chunk at the same point of the
/// write order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifyReport {
    /// Checks are left to queue, or to be acknowledged.
    pub running: bool,
    pub checked_bytes: u64,
    pub total_bytes: u64,
    /// Chunks the replica had different.
    pub mismatches: u64,
    /// Of those, chunks sent again (`verify repair`).
    pub repaired: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Errors {
    /// Local writes that failed (completed with their error, not replicated).
    pub write: u64,
    /// Failed connection attempts and broken sessions, both links.
    pub link: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Io {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub discards: u64,
}

impl DeviceReport {
    /// Builds the report of device `name` (the converted LV `lv`, if one) from its table
    /// parameters and status words.
    pub fn new(
        name: &str,
        lv: Option<String>,
        table_params: &str,
        status_words: &str,
    ) -> Result<Self, String> {
        let words: Vec<&str> = table_params.split_ascii_whitespace().collect();
        let table = TableArgs::parse(&words).map_err(|err| format!("{name}: table: {err}"))?;
        let status = Status::parse(status_words).map_err(|err| format!("{name}: {err}"))?;
        let c = status.counters;
        let link_json = |link_name, address: std::net::SocketAddr, r: &LinkReport| LinkJson {
            name: link_name,
            address: address.to_string(),
            state: r.state.as_str(),
            connects: r.connects,
            errors: r.errors,
            last_error: r.last_error,
        };
        let mut links = vec![link_json("primary", table.config.primary, &status.links[0])];
        if let Some(backup) = table.config.backup {
            links.push(link_json("backup", backup, &status.links[1]));
        }
        Ok(Self {
            name: name.to_string(),
            lv,
            volume: table
                .config
                .volume
                .map_or_else(|| name.to_string(), |v| v.as_str().to_string()),
            role: "primary",
            local_device: table.local_dev.to_string(),
            mode: status.mode.as_str(),
            link: status.link.as_str(),
            active_link: status.active_link.as_str(),
            paused: status.paused,
            links,
            lag: Lag {
                writes: c.queued + c.spill_entries,
                bytes: c.queued_bytes + c.spill_bytes,
                queue_percent: percent(c.queued_bytes, c.capacity_bytes),
                oldest_write_age_ms: c.lag_ms,
            },
            queue: Queue {
                entries: c.queued,
                bytes: c.queued_bytes,
                capacity_bytes: c.capacity_bytes,
            },
            sent_seq: c.sent_seq,
            acked_seq: c.acked_seq,
            spill: (c.spill_capacity_bytes > 0).then_some(Spill {
                entries: c.spill_entries,
                bytes: c.spill_bytes,
                capacity_bytes: c.spill_capacity_bytes,
            }),
            initial_sync: InitialSync::new(
                c.sync_bytes,
                c.sync_total_bytes,
                c.consistent == 1,
                c.sync_rate,
            ),
            diverged: c.diverged == 1,
            verify: (c.verify_total_bytes > 0).then_some(VerifyReport {
                running: c.verifying == 1,
                checked_bytes: c.verify_bytes,
                total_bytes: c.verify_total_bytes,
                mismatches: c.verify_mismatches,
                repaired: c.verify_repaired,
            }),
            errors: Errors {
                write: c.write_errors,
                link: c.link_errors,
            },
            io: Io {
                reads: c.reads,
                writes: c.writes,
                flushes: c.flushes,
                discards: c.discards,
            },
        })
    }

    /// `LINK` column: the link state, with the active link once connected.
    fn link_cell(&self) -> String {
        match self.active_link {
            _ if self.paused => "paused".to_string(),
            name if name == ActiveLink::None.as_str() => self.link.to_string(),
            name => format!("{}:{name}", self.link),
        }
    }

    /// `SYNC` column: the initial copy's progress, `-` once consistent, `DIVERGED` when the
    /// replica is known to differ.
    fn sync_cell(&self) -> String {
        let s = &self.initial_sync;
        if self.diverged {
            "DIVERGED".into()
        } else if s.consistent {
            "-".into()
        } else {
            format!("{:.0}%", percent(s.copied_bytes, s.total_bytes))
        }
    }

    /// `SYNC-MiB/s` column: the copy's recent rate while it runs.
    fn sync_rate_cell(&self) -> String {
        let s = &self.initial_sync;
        if s.copying() {
            mib(s.rate_bytes_per_s)
        } else {
            "-".into()
        }
    }

    /// `SYNC-ETA` column: time left for the copy at its recent rate; `stalled` when it
    /// runs but did not move.
    fn sync_eta_cell(&self) -> String {
        match self.initial_sync.eta_s {
            Some(seconds) => duration(seconds),
            None if self.initial_sync.copying() && self.initial_sync.rate_bytes_per_s == 0 => {
                "stalled".into()
            }
            None => "-".into(),
        }
    }
}

/// `42s`, `5m07s`, `3h02m`: short enough for a column, precise enough to act on.
fn duration(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (1000.0 * part as f64 / whole as f64).round() / 10.0
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1 << 20))
}

const HEADER: [&str; 14] = [
    "NAME",
    "ROLE",
    "LINK",
    "MODE",
    "SYNC",
    "LAG-WRITES",
    "LAG-MiB",
    "QUEUE%",
    "AGE-ms",
    "SPILL-MiB",
    "ACKED-SEQ",
    "ERRORS",
    "SYNC-MiB/s",
    "SYNC-ETA",
];
/// Columns from here on are numbers, aligned right.
const FIRST_NUMERIC: usize = 5;

/// One aligned row per device, with a header.
pub fn render_text(devices: &[DeviceReport]) -> String {
    if devices.is_empty() {
        return "no arepl devices\n".into();
    }
    let mut rows = vec![HEADER.map(String::from)];
    for d in devices {
        rows.push([
            d.name.clone(),
            d.role.to_string(),
            d.link_cell(),
            d.mode.to_string(),
            d.sync_cell(),
            d.lag.writes.to_string(),
            mib(d.lag.bytes),
            format!("{:.0}", d.lag.queue_percent),
            d.lag.oldest_write_age_ms.to_string(),
            d.spill
                .as_ref()
                .map_or_else(|| "-".into(), |s| mib(s.bytes)),
            d.acked_seq.to_string(),
            format!("w{}/l{}", d.errors.write, d.errors.link),
            d.sync_rate_cell(),
            d.sync_eta_cell(),
        ]);
    }
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|col| rows.iter().map(|row| row[col].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(col, (cell, width))| {
                if col < FIRST_NUMERIC {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end()).expect("writing to a String");
    }
    out
}

/// The JSON document, on one line.
pub fn render_json(devices: Vec<DeviceReport>) -> String {
    let report = Report {
        version: JSON_VERSION,
        devices,
    };
    serde_json::to_string(&report).expect("a report always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "253:1 10.0.0.2:7788 10.0.1.2:7788 3 queue_mb:4 volume:db spill:253:2";
    const STATUS: &str = "mode=replicating link=connected reads=1 writes=2 flushes=3 \
        discards=4 queued=5 queued_bytes=1048576 capacity_bytes=4194304 sent_seq=9 \
        acked_seq=8 lag_ms=12 write_errors=0 link_errors=1 connects=1 active_link=primary \
        paused=0 primary=connected primary_connects=1 primary_errors=1 primary_last_error=110 \
        backup=down backup_connects=0 backup_errors=0 backup_last_error=0 spill_entries=3 \
        spill_bytes=3145728 spill_capacity_bytes=67108864 sync_bytes=0 sync_total_bytes=0 \
        consistent=1 diverged=0 sync_rate=0 receiver_slow=0 slow_drops=0 generation=1 refused=0 resyncs=0 dirty_bytes=0 verifying=0 verify_bytes=0 \
        verify_total_bytes=0 verify_mismatches=0 verify_repaired=0 cow_writes=0 map_copies=0";

    #[test]
    fn report_from_table_and_status() {
        let d = DeviceReport::new("vg0-db", Some("vg0/db".into()), TABLE, STATUS).unwrap();
        assert_eq!(d.lv.as_deref(), Some("vg0/db"));
        assert_eq!(d.volume, "db");
        assert_eq!(d.local_device, "253:1");
        assert_eq!((d.lag.writes, d.lag.bytes), (8, 4 << 20));
        assert_eq!(d.lag.queue_percent, 25.0);
        assert_eq!(d.links.len(), 2);
        assert_eq!(d.links[1].address, "10.0.1.2:7788");
        assert_eq!(d.links[0].last_error, 110);
        assert!(d.initial_sync.consistent);
        let plain = DeviceReport::new("db", None, TABLE, STATUS).unwrap();
        assert_eq!(plain.lv, None);
    }

    #[test]
    fn text_is_aligned_and_complete() {
        let a = DeviceReport::new("vg0-db", Some("vg0/db".into()), TABLE, STATUS).unwrap();
        let syncing = STATUS.replace("mode=replicating", "mode=syncing").replace(
            "sync_bytes=0 sync_total_bytes=0 consistent=1",
            "sync_bytes=1 sync_total_bytes=4 consistent=0",
        );
        let b = DeviceReport::new("a-much-longer-name", None, TABLE, &syncing).unwrap();
        let text = render_text(&[a, b]);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[1].split_whitespace().collect::<Vec<_>>(),
            [
                "vg0-db",
                "primary",
                "connected:primary",
                "replicating",
                "-",
                "8",
                "4.0",
                "25",
                "12",
                "3.0",
                "8",
                "w0/l1",
                "-",
                "-"
            ]
        );
        let syncing_row: Vec<&str> = rows[2].split_whitespace().collect();
        assert_eq!(syncing_row[3..5], ["syncing", "25%"], "{}", rows[2]);
        // Stalled: copying, but nothing moved in the last seconds.
        assert_eq!(syncing_row[12..], ["0.0", "stalled"], "{}", rows[2]);
        // A diverged replica says so where the copy's progress would be.
        let diverged = STATUS.replace("consistent=1 diverged=0", "consistent=0 diverged=1");
        let c = DeviceReport::new("db", None, TABLE, &diverged).unwrap();
        let diverged_text = render_text(&[c]);
        let diverged_row: Vec<&str> = diverged_text
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(diverged_row[3..5], ["replicating", "DIVERGED"]);
        let mode_column = rows[0].find("MODE").unwrap();
        assert_eq!(rows[1].find("replicating"), Some(mode_column));
        assert_eq!(rows[2].find("syncing"), Some(mode_column));
        assert_eq!(render_text(&[]), "no arepl devices\n");
    }

    #[test]
    fn json_has_the_documented_shape() {
        let d = DeviceReport::new("vg0-db", Some("vg0/db".into()), TABLE, STATUS).unwrap();
        let value: serde_json::Value = serde_json::from_str(&render_json(vec![d])).unwrap();
        assert_eq!(value["version"], 1);
        let dev = &value["devices"][0];
        assert_eq!(dev["name"], "vg0-db");
        assert_eq!(dev["lv"], "vg0/db");
        assert_eq!(dev["mode"], "replicating");
        assert_eq!(dev["lag"]["writes"], 8);
        assert_eq!(dev["spill"]["capacity_bytes"], 67108864);
        assert_eq!(dev["initial_sync"]["consistent"], true);
        assert_eq!(dev["diverged"], false);
        assert_eq!(dev["links"][0]["state"], "connected");
        let without_spill =
            STATUS.replace("spill_capacity_bytes=67108864", "spill_capacity_bytes=0");
        let d = DeviceReport::new("db", None, TABLE, &without_spill).unwrap();
        let value: serde_json::Value = serde_json::from_str(&render_json(vec![d])).unwrap();
        assert!(value["devices"][0]["spill"].is_null());
        assert!(value["devices"][0]["verify"].is_null(), "no verify ran");
        let verified = STATUS
            .replace("verifying=0", "verifying=1")
            .replace("verify_total_bytes=0", "verify_total_bytes=1048576")
            .replace("verify_mismatches=0", "verify_mismatches=2");
        let d = DeviceReport::new("db", None, TABLE, &verified).unwrap();
        let value: serde_json::Value = serde_json::from_str(&render_json(vec![d])).unwrap();
        let verify = &value["devices"][0]["verify"];
        assert_eq!(
            (verify["running"].as_bool(), verify["mismatches"].as_u64()),
            (Some(true), Some(2))
        );
        assert!(value["devices"][0]["lv"].is_null());
    }

    #[test]
    fn the_copy_shows_its_rate_and_time_left() {
        let syncing = STATUS
            .replace(
                "sync_bytes=0 sync_total_bytes=0 consistent=1",
                "sync_bytes=104857600 sync_total_bytes=1073741824 consistent=0",
            )
            .replace("sync_rate=0", "sync_rate=2097152");
        let d = DeviceReport::new("db", None, TABLE, &syncing).unwrap();
        assert_eq!(d.initial_sync.rate_bytes_per_s, 2 << 20);
        // 924 MiB left at 2 MiB/s.
        assert_eq!(d.initial_sync.eta_s, Some(462));
        let text = render_text(std::slice::from_ref(&d));
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[12..], ["2.0", "7m42s"]);
        let value: serde_json::Value = serde_json::from_str(&render_json(vec![d])).unwrap();
        assert_eq!(value["devices"][0]["initial_sync"]["eta_s"], 462);
        assert_eq!(
            value["devices"][0]["initial_sync"]["rate_bytes_per_s"],
            2 << 20
        );
        let done = DeviceReport::new("db", None, TABLE, STATUS).unwrap();
        assert_eq!(done.initial_sync.eta_s, None);
        assert_eq!(
            (done.sync_rate_cell(), done.sync_eta_cell()),
            ("-".into(), "-".into())
        );
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3600 * 26 + 61), "26h01m");
    }

    #[test]
    fn bad_lines_are_reported() {
        let err = DeviceReport::new("db", None, TABLE, "mode=replicating").unwrap_err();
        assert_eq!(err, "db: status line lacks key reads");
        let err = DeviceReport::new("db", None, "x", STATUS).unwrap_err();
        assert!(err.starts_with("db: table: missing arguments"), "{err}");
    }
}
