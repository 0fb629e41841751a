//! Human-readable rendering of arepl status lines, one row per device.

use std::fmt::Write;

use arepl_core::status::Status;

const HEADER: [&str; 10] = [
    "NAME",
    "MODE",
    "LINK",
    "QUEUED",
    "QUEUE-MiB",
    "QUEUE%",
    "LAG-ms",
    "ACKED-SEQ",
    "SPILL-MiB",
    "ERRORS",
];

/// A table from `name: start len arepl key=value...` lines.
pub fn render(lines: &[String]) -> Result<String, String> {
    if lines.is_empty() {
        return Ok("no arepl devices\n".into());
    }
    let mut rows = vec![HEADER.map(String::from)];
    for line in lines {
        let (name, rest) = line
            .split_once(": ")
            .ok_or_else(|| format!("unexpected dmsetup status line '{line}'"))?;
        let fields = rest
            .splitn(4, ' ')
            .nth(3)
            .ok_or_else(|| format!("status line of {name} has no arepl fields: '{rest}'"))?;
        let status = Status::parse(fields).map_err(|err| format!("{name}: {err}"))?;
        let c = status.counters;
        let percent = if c.capacity_bytes == 0 {
            0.0
        } else {
            100.0 * c.queued_bytes as f64 / c.capacity_bytes as f64
        };
        rows.push([
            name.to_string(),
            status.mode.as_str().to_string(),
            match status.active_link {
                arepl_core::status::ActiveLink::None if status.paused => "paused".to_string(),
                arepl_core::status::ActiveLink::None => status.link.as_str().to_string(),
                active => format!("{}:{}", status.link.as_str(), active.as_str()),
            },
            c.queued.to_string(),
            format!("{:.1}", c.queued_bytes as f64 / f64::from(1 << 20)),
            format!("{percent:.0}"),
            c.lag_ms.to_string(),
            c.acked_seq.to_string(),
            format!("{:.1}", c.spill_bytes as f64 / f64::from(1 << 20)),
            format!("w{}/l{}", c.write_errors, c.link_errors),
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
                if col < 3 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end()).expect("writing to a String");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "db: 0 2048 arepl mode=replicating link=connected reads=1 writes=2 \
        flushes=3 discards=4 queued=5 queued_bytes=1048576 capacity_bytes=4194304 sent_seq=9 \
        acked_seq=8 lag_ms=12 write_errors=0 link_errors=1 connects=1 active_link=primary \
        paused=0 primary=connected primary_connects=1 primary_errors=1 primary_last_error=110 \
        backup=none backup_connects=0 backup_errors=0 backup_last_error=0 spill_entries=3 \
        spill_bytes=3145728 spill_capacity_bytes=67108864";

    #[test]
    fn renders_one_aligned_row_per_device() {
        let text = render(&[LINE.to_string(), LINE.replace("db:", "longer-name:")]).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[1].split_whitespace().collect::<Vec<_>>(),
            [
                "db",
                "replicating",
                "connected:primary",
                "5",
                "1.0",
                "25",
                "12",
                "8",
                "3.0",
                "w0/l1"
            ]
        );
        let link_column = rows[0].find("LINK").unwrap();
        assert_eq!(rows[1].find("connected"), Some(link_column));
        assert_eq!(rows[2].find("connected"), Some(link_column));
        let paused = LINE
            .replace("active_link=primary", "active_link=none")
            .replace("paused=0", "paused=1");
        assert!(render(&[paused]).unwrap().contains(" paused "));
    }

    #[test]
    fn rejects_garbage() {
        let err = render(&["db: 0 2048 arepl mode=replicating".to_string()]).unwrap_err();
        assert_eq!(err, "db: status line lacks key reads");
    }
}
