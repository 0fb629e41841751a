//! A minimal HTTP/1.1 server for `GET /metrics`: one request per connection, answered
//! and closed. Enough for Prometheus and curl without pulling in an HTTP stack.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::stats::Stats;

/// Longest request head (request line and headers) read.
pub const MAX_REQUEST_HEAD: usize = 8 << 10;
/// How long a client may take to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests answered at once; more wait in the listen backlog.
const MAX_CONCURRENT: usize = 16;
/// How long, and how much, unread input is drained before closing: closing a socket
/// with unread input resets the connection, which can destroy the answer in flight.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: u64 = 64 << 10;
/// The only resource.
const METRICS_PATH: &str = "/metrics";

/// Answers requests on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, stats: Arc<Stats>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = accept(&listener, &slots) => accepted,
        };
        match accepted {
            Ok((stream, slot)) => {
                let stats = stats.clone();
                tokio::spawn(async move {
                    answer(stream, &stats).await;
                    drop(slot);
                });
            }
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("metrics: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let slot = slots.clone().acquire_owned().await;
    let slot = slot.expect("the semaphore is never closed");
    let (stream, _) = listener.accept().await?;
    Ok((stream, slot))
}

async fn answer(mut stream: TcpStream, stats: &Stats) {
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Response::error(408, "Request Timeout"),
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::TooLarge)) => Response::error(431, "Request Header Fields Too Large"),
        Ok(Ok(head)) => respond(&head, || metrics::render(&stats.snapshot())),
    };
    let sent = async {
        stream.write_all(&response.encode()).await?;
        stream.shutdown().await?;
        let mut unread = (&mut stream).take(LINGER_BYTES);
        tokio::io::copy(&mut unread, &mut tokio::io::sink()).await
    };
    // The client may have gone; there is nobody left to tell.
    let _ = tokio::time::timeout(LINGER, sent).await;
}

#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    Closed,
    TooLarge,
}

/// Reads up to the blank line that ends the request head, at most [`MAX_REQUEST_HEAD`].
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        let room = MAX_REQUEST_HEAD - head.len();
        if room == 0 {
            return Err(HeadError::TooLarge);
        }
        let limit = room.min(chunk.len());
        match stream.read(&mut chunk[..limit]).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(read) => head.extend_from_slice(&chunk[..read]),
        }
    }
}

/// Where the head ends: at the first empty line (bare `\n` line ends are tolerated).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    crlf.into_iter().chain(lf).min()
}

/// The answer to a complete request head; `body` renders the metrics.
fn respond(head: &[u8], body: impl FnOnce() -> String) -> Response {
    let Some((method, path)) = request_line(head) else {
        return Response::error(400, "Bad Request");
    };
    // A query string selects nothing here.
    let path = path.split('?').next().unwrap_or_default();
    if path != METRICS_PATH {
        return Response::error(404, "Not Found");
    }
    match method {
        "GET" => Response::metrics(body(), true),
        "HEAD" => Response::metrics(body(), false),
        _ => Response {
            allow: true,
            ..Response::error(405, "Method Not Allowed")
        },
    }
}

/// The method and target of `METHOD SP TARGET SP HTTP/1.x`.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let well_formed = parts.next().is_none()
        && !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && target.starts_with('/')
        && version.starts_with("HTTP/1.");
    well_formed.then_some((method, target))
}

#[derive(Debug)]
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
    /// Whether the body is sent (not for `HEAD`); `Content-Length` is given either way.
    send_body: bool,
    /// Whether to list the allowed methods (a 405 must).
    allow: bool,
}

impl Response {
    fn metrics(body: String, send_body: bool) -> Self {
        Self {
            status: 200,
            reason: "OK",
            content_type: metrics::CONTENT_TYPE,
            body,
            send_body,
            allow: false,
        }
    }

    fn error(status: u16, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: format!("{status} {reason}\n"),
            send_body: true,
            allow: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let allow = if self.allow {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}\
             Connection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        let mut bytes = head.into_bytes();
        if self.send_body {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(head: &str) -> u16 {
        respond(head.as_bytes(), || "figures\n".to_string()).status
    }

    #[test]
    fn only_get_and_head_of_metrics_succeed() {
        assert_eq!(status_of("GET /metrics HTTP/1.1\r\nHost: x"), 200);
        assert_eq!(status_of("GET /metrics?x=1 HTTP/1.0"), 200);
        assert_eq!(status_of("HEAD /metrics HTTP/1.1"), 200);
        assert_eq!(status_of("GET / HTTP/1.1"), 404);
        assert_eq!(status_of("GET /metrics/ HTTP/1.1"), 404);
        assert_eq!(status_of("POST /metrics HTTP/1.1"), 405);
        assert_eq!(status_of("DELETE /other HTTP/1.1"), 404);
        for bad in [
            "",
            "GET",
            "GET /metrics",
            "GET /metrics HTTP/2",
            "GET  /metrics HTTP/1.1",
            "get /metrics HTTP/1.1",
            "GET metrics HTTP/1.1",
            "GET /metrics HTTP/1.1 extra",
        ] {
            assert_eq!(status_of(bad), 400, "{bad:?}");
        }
        assert_eq!(respond(b"\xff /metrics HTTP/1.1", String::new).status, 400);
    }

    #[test]
    fn responses_are_complete_http_messages() {
        let ok = respond(b"GET /metrics HTTP/1.1", || "a 1\n".to_string()).encode();
        assert_eq!(
            String::from_utf8(ok).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        let head = respond(b"HEAD /metrics HTTP/1.1", || "a 1\n".to_string()).encode();
        assert!(String::from_utf8(head)
            .unwrap()
            .ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"));
        let refused = respond(b"PUT /metrics HTTP/1.1", String::new).encode();
        let refused = String::from_utf8(refused).unwrap();
        assert!(refused.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(refused.contains("\r\nAllow: GET, HEAD\r\n"), "{refused}");
    }

    #[test]
    fn the_head_ends_at_the_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(20));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }
}
