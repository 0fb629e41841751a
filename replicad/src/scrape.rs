//! Reading a running `replicad`'s metrics, for `replicad status`: a blocking HTTP GET
//! and a reader for the exposition lines [`crate::metrics`] writes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Bound on connecting and on each read or write.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response read; the real one is a few KiB.
const MAX_RESPONSE: u64 = 1 << 20;

/// Why the metrics could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connecting, sending or receiving failed.
    #[error("metrics from {addr}: {source}")]
    Io {
        /// The metrics address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The answer is not a successful HTTP response.
    #[error("metrics from {addr}: {problem}")]
    Response {
        /// The metrics address.
        addr: SocketAddr,
        /// What is wrong with it.
        problem: String,
    },
}

/// Fetches `GET /metrics` from `addr` and returns the body.
pub fn fetch(addr: SocketAddr) -> Result<String, ScrapeError> {
    let io = |source| ScrapeError::Io { addr, source };
    let bad = |problem: &str| ScrapeError::Response {
        addr,
        problem: problem.to_string(),
    };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut response)
        .map_err(io)?;
    let response = String::from_utf8(response).map_err(|_| bad("response is not UTF-8"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("incomplete HTTP response"))?;
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.starts_with("HTTP/1.1 200 ") {
        return Err(bad(&format!("answered {status_line:?}")));
    }
    Ok(body.to_string())
}

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// Its labels, in order.
    pub labels: Vec<(String, String)>,
    /// The value as written.
    pub value: String,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The sample lines of an exposition; comments and lines it cannot read are left out.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(after) => parse_labels(after)?,
        None => (Vec::new(), &line[name_end..]),
    };
    // A timestamp may follow the value.
    let value = rest.split_whitespace().next()?;
    (!name.is_empty()).then(|| Sample {
        name: name.to_string(),
        labels,
        value: value.to_string(),
    })
}

/// Reads `key="value",...}` and returns the labels and what follows the brace.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, after) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (at, '"') => break at,
                (_, '\\') => value.push(match chars.next()?.1 {
                    'n' => '\n',
                    other => other,
                }),
                (_, other) => value.push(other),
            }
        };
        labels.push((key.to_string(), value));
        text = &after[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_with_and_without_labels() {
        let text = "# HELP a An a.\n# TYPE a gauge\na 1\n\
                    b_total{volume=\"db\",kind=\"write\"} 42 1700000000\n\
                    c{v=\"q\\\"u\\\\o\\nte\"} 0.250\n\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "a");
        assert_eq!(samples[0].value, "1");
        assert_eq!(samples[1].label("volume"), Some("db"));
        assert_eq!(samples[1].label("kind"), Some("write"));
        assert_eq!(samples[1].value, "42");
        assert_eq!(samples[2].label("v"), Some("q\"u\\o\nte"));
        assert_eq!(samples[2].value, "0.250");
        assert!(parse("x{unterminated=\"v} 1\n").is_empty());
    }
}
