//! HTTP/1.1 chunked transfer coding (RFC 9112, section 7.1), decoded incrementally: each chunk's data is
//! handed on as slices of the input, without a copy, however the reads split it.
//!
//! A chunk is `SIZE[;extensions]\r\n DATA \r\n`; a size of 0 is the last chunk, followed by trailer fields
//! and an empty line. Size and trailer lines are bounded ([`MAX_LINE_BYTES`]); extensions and trailers are
//! skipped.

use anyhow::{bail, Context, Result};

/// Longest chunk-size or trailer line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 1024;

/// Where the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// After a chunk's data: bytes of its CRLF seen.
    DataEnd(u8),
    /// After the last chunk: reading trailer lines until an empty one.
    Trailer,
    /// The body is complete.
    Done,
}

/// The incremental decoder of one chunked body.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// The line being read (size or trailer), without its LF.
    line: Vec<u8>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self {
            state: State::Size,
            line: Vec::new(),
        }
    }

    /// Decodes `input`, handing each run of chunk data to `data` in order; stops at the first error `data`
    /// returns. Bytes after the end of the body are ignored. Returns whether the body is complete.
    pub fn feed(&mut self, mut input: &[u8], mut data: impl FnMut(&[u8]) -> Result<()>) -> Result<bool> {
        while !input.is_empty() {
            match self.state {
                State::Size | State::Trailer => {
                    let Some(line) = self.take_line(&mut input)? else {
                        break;
                    };
                    if self.state == State::Size {
                        let size = parse_size_line(&line)?;
                        self.state = if size == 0 {
                            State::Trailer
                        } else {
                            State::Data(size)
                        };
                    } else if line.is_empty() {
                        self.state = State::Done;
                    }
                }
                State::Data(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    data(&input[..n])?;
                    input = &input[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd(0)
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd(seen) => {
                    let expected = b"\r\n"[usize::from(seen)];
                    if input[0] != expected {
                        bail!("chunk data is not followed by CRLF (got byte {:#04x})", input[0]);
                    }
                    input = &input[1..];
                    self.state = if seen == 1 { State::Size } else { State::DataEnd(1) };
                }
                State::Done => break,
            }
        }
        Ok(self.state == State::Done)
    }

    /// The next complete line (CRLF stripped) from `input`, consuming it; `None` when `input` ends first.
    fn take_line(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>> {
        let (part, complete) = match input.iter().position(|&b| b == b'\n') {
            Some(at) => (&input[..at], Some(at + 1)),
            None => (*input, None),
        };
        if self.line.len() + part.len() > MAX_LINE_BYTES {
            bail!("a chunk-size or trailer line is longer than {MAX_LINE_BYTES} bytes");
        }
        self.line.extend_from_slice(part);
        let Some(consumed) = complete else {
            *input = &[];
            return Ok(None);
        };
        *input = &input[consumed..];
        let mut line = std::mem::take(&mut self.line);
        if line.pop() != Some(b'\r') {
            bail!("a chunk-size or trailer line does not end with CRLF");
        }
        Ok(Some(line))
    }
}

/// The size of a chunk-size line (hex digits, optional whitespace and `;extensions`).
fn parse_size_line(line: &[u8]) -> Result<u64> {
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let text = std::str::from_utf8(&line[..end]).context("a chunk size that is not text")?;
    let digits = text.trim_matches([' ', '\t']);
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("bad chunk size {:?}", String::from_utf8_lossy(line));
    }
    u64::from_str_radix(digits, 16).context("chunk size")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `body` fed in pieces of `step` bytes: the data and whether it ended.
    fn decode(body: &[u8], step: usize) -> Result<(Vec<u8>, bool)> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut done = false;
        for piece in body.chunks(step) {
            done = d.feed(piece, |data| {
                out.extend_from_slice(data);
                Ok(())
            })?;
        }
        Ok((out, done))
    }

    #[test]
    fn decodes_however_the_reads_split_it() {
        let body =
            b"5\r\nhello\r\n1A;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nnext";
        for step in 1..=body.len() {
            let (data, done) = decode(body, step).unwrap();
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert!(done, "step {step}");
        }
        let (data, done) = decode(b"3\r\nabc\r\n4\r\nde", 2).unwrap();
        assert_eq!((data.as_slice(), done), (&b"abcde"[..], false));
        assert!(decode(b"0\r\n\r\n", 1).unwrap().1);
        assert!(decode(b"A \t\r\n0123456789\r\n", 3).unwrap().0.len() == 10);
    }

    #[test]
    fn refuses_what_is_not_chunked() {
        assert!(decode(b"zz\r\n", 4).is_err(), "not hex");
        assert!(decode(b"\r\n", 4).is_err(), "no size");
        assert!(decode(b"3\nabc\r\n", 4).is_err(), "bare LF");
        assert!(decode(b"3\r\nabcX\r\n", 4).is_err(), "data longer than its size");
        assert!(decode(b"1000000000000000\r\n", 64).is_err(), "absurd size");
        let long = vec![b'1'; MAX_LINE_BYTES + 1];
        assert!(decode(&long, 7).is_err(), "unbounded size line");
        let mut d = ChunkedDecoder::new();
        let stop = d.feed(b"3\r\nabc\r\n", |_| anyhow::bail!("the consumer refused"));
        assert!(stop.is_err());
    }
}
