//! Human-readable rendering of arepl status lines.

use std::fmt::Write;

use arepl_core::status::Status;

/// One row per device from `name: start len arepl key=value...` lines.
pub fn render(lines: &[String]) -> Result<String, String> {
    let mut out = String::new();
    if lines.is_empty() {
        return Ok("no arepl devices\n".into());
    }
    writeln!(
        out,
        "{:<20} {:<12} {:>10} {:>10} {:>8} {:>8}",
        "NAME", "MODE", "READS", "WRITES", "FLUSHES", "DISCARDS"
    )
    .unwrap();
    for line in lines {
        let (name, rest) = line
            .split_once(": ")
            .ok_or_else(|| format!("unexpected dmsetup status line '{line}'"))?;
        let fields = rest
            .splitn(4, ' ')
            .nth(3)
            .ok_or_else(|| format!("status line of {name} has no arepl fields: '{rest}'"))?;
        let status = Status::parse(fields).map_err(|err| format!("{name}: {err}"))?;
        writeln!(
            out,
            "{:<20} {:<12} {:>10} {:>10} {:>8} {:>8}",
            name,
            status.mode.as_str(),
            status.reads,
            status.writes,
            status.flushes,
            status.discards
        )
        .unwrap();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_row_per_device() {
        let lines = vec![
            "db: 0 2048 arepl mode=passthrough reads=1 writes=2 flushes=3 discards=4".to_string(),
        ];
        let text = render(&lines).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1].split_whitespace().collect::<Vec<_>>(),
            ["db", "passthrough", "1", "2", "3", "4"]
        );
    }

    #[test]
    fn rejects_garbage() {
        let err = render(&["db: 0 2048 arepl mode=passthrough".to_string()]).unwrap_err();
        assert_eq!(err, "db: status line lacks key reads");
    }
}
