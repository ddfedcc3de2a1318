//! The HTTP/1.1 exchange of one probe, by hand: a probe needs very little of HTTP, and a
//! general client (hyper: handshake, connection task, request and response types) cost
//! more per probe than the TCP connection itself. The request is one `GET` with
//! `Connection: close`, sent in one write; the answer is judged on its status line, and
//! its head and body are read only as far as the check needs: the headers when a
//! `body` text is configured or an interim (1xx) answer comes first, the body
//! (`Content-Length`, chunked or until close) only for the `body` match.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::decay::ProbeFailure;
use super::probe::HttpCheck;

/// At most this much of a response body is read for the `body` match.
pub const MAX_BODY: usize = 64 * 1024;
/// A status line or header longer than this is not HTTP we can judge.
const MAX_LINE: usize = 16 * 1024;
/// Bytes asked of the kernel per read; a probe's whole answer usually fits.
const READ_CHUNK: usize = 1024;

/// Sends `GET check.path` on `stream` and judges the answer by `check`.
pub async fn exchange(mut stream: TcpStream, check: &HttpCheck<'_>) -> Result<(), ProbeFailure> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: holdfast-probe\r\nConnection: close\r\n\r\n",
        check.path, check.authority
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| request_failed(check, &error))?;
    judge(stream, check).await
}

/// Reads an answer from `stream` and judges it by `check`: the response parser on its
/// own, generic over the reader so the fuzz target (`fuzz/`) can feed it bytes.
pub async fn judge<S: AsyncRead + Unpin>(
    stream: S,
    check: &HttpCheck<'_>,
) -> Result<(), ProbeFailure> {
    let mut answer = Answer {
        stream,
        buf: Vec::with_capacity(READ_CHUNK),
        start: 0,
    };
    let code = answer
        .final_status()
        .await
        .map_err(|error| request_failed(check, &error))?;
    if !check.status.contains(&code) {
        let expected = check.status.clone();
        return Err(ProbeFailure::Status { code, expected });
    }
    let Some(needle) = check.body else {
        return Ok(());
    };
    let body = answer
        .body(code)
        .await
        .map_err(|e| ProbeFailure::ReadBody {
            path: check.path.to_owned(),
            error: e.to_string(),
        })?;
    if String::from_utf8_lossy(&body).contains(needle) {
        Ok(())
    } else {
        let needle = needle.to_owned();
        Err(ProbeFailure::BodyMismatch { code, needle })
    }
}

fn request_failed(check: &HttpCheck<'_>, error: &io::Error) -> ProbeFailure {
    ProbeFailure::Request {
        path: check.path.to_owned(),
        error: error.to_string(),
    }
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// The connection being read, with what was read of it and not used yet.
struct Answer<S> {
    stream: S,
    buf: Vec<u8>,
    /// Where the unused part of `buf` starts.
    start: usize,
}

impl<S: AsyncRead + Unpin> Answer<S> {
    /// The status of the final answer: interim (1xx) answers before it are skipped.
    async fn final_status(&mut self) -> io::Result<u16> {
        loop {
            let code = self.status_line().await?;
            // 101 would switch protocols, which a GET without `Upgrade` never asks for:
            // it is judged like any other status.
            if !(100..200).contains(&code) || code == 101 {
                return Ok(code);
            }
            self.framing().await?;
        }
    }

    /// `HTTP/1.x NNN reason`: the code.
    async fn status_line(&mut self) -> io::Result<u16> {
        let line = self.line().await?;
        let line = &self.buf[line];
        let code = line
            .strip_prefix(b"HTTP/1.")
            .and_then(|rest| rest.get(2..5).filter(|_| rest[1] == b' '))
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| digits.parse::<u16>().ok())
            .filter(|code| (100..=999).contains(code));
        code.ok_or_else(|| {
            let shown = String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned();
            invalid(format!("not an HTTP/1 status line: {shown:?}"))
        })
    }

    /// Reads the headers up to the empty line ending them; what they say about the body.
    async fn framing(&mut self) -> io::Result<Framing> {
        let mut framing = Framing::UntilClose;
        loop {
            let line = self.line().await?;
            let line = &self.buf[line];
            if line.is_empty() {
                return Ok(framing);
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // The last coding decides: chunked ends the body, anything else runs
                // until the connection closes.
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                framing = if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    Framing::Chunked
                } else {
                    Framing::UntilClose
                };
            } else if name.eq_ignore_ascii_case(b"content-length") && framing != Framing::Chunked {
                let length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                framing = Framing::Length(length.ok_or_else(|| invalid("bad Content-Length"))?);
            }
        }
    }

    /// The body (its first [`MAX_BODY`] bytes) of an answer with status `code`, whose
    /// status line was just read.
    async fn body(&mut self, code: u16) -> io::Result<Vec<u8>> {
        let framing = self.framing().await?;
        let mut body = Vec::new();
        if code == 204 || code == 304 {
            return Ok(body);
        }
        match framing {
            Framing::Length(length) => {
                let wanted = usize::try_from(length).unwrap_or(usize::MAX).min(MAX_BODY);
                self.take(wanted, &mut body).await?;
            }
            Framing::UntilClose => loop {
                body.extend_from_slice(&self.buf[self.start..]);
                self.start = self.buf.len();
                if body.len() >= MAX_BODY || !self.more().await? {
                    body.truncate(MAX_BODY);
                    break;
                }
            },
            Framing::Chunked => {
                while body.len() < MAX_BODY {
                    let size = self.chunk_size().await?;
                    if size == 0 {
                        break;
                    }
                    self.take(size.min(MAX_BODY - body.len()), &mut body)
                        .await?;
                    if body.len() < MAX_BODY {
                        self.line().await?;
                    }
                }
            }
        }
        Ok(body)
    }

    /// A chunk's size line: hex digits, maybe followed by extensions.
    async fn chunk_size(&mut self) -> io::Result<usize> {
        let line = self.line().await?;
        let line = &self.buf[line];
        let digits = line.split(|&b| b == b';').next().unwrap_or_default();
        std::str::from_utf8(digits.trim_ascii())
            .ok()
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .ok_or_else(|| invalid("bad chunk size"))
    }

    /// Moves the next `n` bytes of the answer to `out`.
    async fn take(&mut self, n: usize, out: &mut Vec<u8>) -> io::Result<()> {
        while self.buf.len() - self.start < n {
            if !self.more().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the body was complete",
                ));
            }
        }
        out.extend_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(())
    }

    /// The next line (without its line end) as a range of `buf`; the line is used up.
    async fn line(&mut self) -> io::Result<std::ops::Range<usize>> {
        loop {
            if let Some(end) = self.buf[self.start..].iter().position(|&b| b == b'\n') {
                let (start, newline) = (self.start, self.start + end);
                self.start = newline + 1;
                let carriage_return = newline > start && self.buf[newline - 1] == b'\r';
                return Ok(start..newline - usize::from(carriage_return));
            }
            if self.buf.len() - self.start > MAX_LINE {
                return Err(invalid("a line of the answer is too long"));
            }
            if !self.more().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the answer was complete",
                ));
            }
        }
    }

    /// Reads what the connection has next into `buf`; false at its end.
    async fn more(&mut self) -> io::Result<bool> {
        // Used bytes are dropped first, so a long body does not grow the buffer.
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.reserve(READ_CHUNK);
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: Option<&'static str>) -> HttpCheck<'static> {
        HttpCheck {
            authority: "127.0.0.1:8080",
            path: "/health",
            status: 200..=299,
            body,
        }
    }

    #[tokio::test]
    async fn a_chunked_answer_after_an_interim_one_passes_the_body_match() {
        let answer: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\
            Transfer-Encoding: chunked\r\n\r\n1;ext=1\r\no\r\n1\r\nk\r\n0\r\n\r\n";
        assert_eq!(judge(answer, &check(Some("ok"))).await, Ok(()));
    }

    #[tokio::test]
    async fn an_answer_that_is_not_http_is_a_request_failure_naming_its_line() {
        let failure = judge(&b"SSH-2.0-OpenSSH\r\n"[..], &check(None)).await;
        let Err(ProbeFailure::Request { error, .. }) = failure else {
            panic!("expected a request failure, got {failure:?}");
        };
        assert!(error.contains("SSH-2.0-OpenSSH"), "{error}");
    }
}
