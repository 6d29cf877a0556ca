//! The HTTP/1.1 client side the egress benchmark needs: a response head read with `httparse` (the HTTP-FLV
//! players), and a blocking `GET` on a connection of its own, body and all, stamped with the time it was
//! complete (the playlist pollers).

use super::chunked::ChunkedDecoder;
use crate::fanout::clock;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest response head accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest response body a `GET` reads (a playlist), in bytes.
const MAX_BODY_BYTES: usize = 4 << 20;
/// Headers a response head may have.
const MAX_HEADERS: usize = 32;

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// `Content-Length`, if given.
    pub content_length: Option<usize>,
    /// Bytes of the head (the body starts there).
    pub len: usize,
}

/// Parses the response head at the start of `buf`: `None` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<ResponseHead>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf).context("a malformed response head")? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() >= MAX_HEAD_BYTES => {
            bail!("a response head longer than {MAX_HEAD_BYTES} bytes")
        }
        httparse::Status::Partial => return Ok(None),
    };
    let mut head = ResponseHead {
        status: response.code.unwrap_or(0),
        reason: response.reason.unwrap_or("").to_string(),
        chunked: false,
        content_length: None,
        len,
    };
    for h in response.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value
                .split(',')
                .any(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(value.trim().parse().context("Content-Length")?);
        }
    }
    Ok(Some(head))
}

/// A whole response to a `GET`.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body (de-chunked).
    pub body: Vec<u8>,
    /// When the request had been written, in microseconds on [`clock`].
    pub sent_us: u64,
    /// When its last byte was read, in microseconds on [`clock`].
    pub done_us: u64,
}

/// `GET path` from `addr` on a new connection (`Connection: close`), within `timeout` for the whole
/// exchange.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response> {
    let deadline = Instant::now() + timeout;
    let mut sock =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting to {addr}"))?;
    sock.set_nodelay(true).context("TCP_NODELAY")?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: popline-bench\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n"
    );
    sock.write_all(request.as_bytes())
        .context("sending the request")?;
    let sent_us = clock::now_us();
    let mut buf = Vec::with_capacity(8 * 1024);
    let mut chunk = [0u8; 8 * 1024];
    let mut read = |sock: &mut TcpStream, buf: &mut Vec<u8>| -> Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no complete answer to GET {path} within {timeout:?}");
        }
        sock.set_read_timeout(Some(left)).context("SO_RCVTIMEO")?;
        let n = sock
            .read(&mut chunk)
            .with_context(|| format!("reading the answer to GET {path}"))?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    };
    let head = loop {
        if let Some(head) = parse_head(&buf)? {
            break head;
        }
        if read(&mut sock, &mut buf)? == 0 {
            bail!("the server closed the connection before answering GET {path}");
        }
    };
    let mut body = Vec::new();
    let mut at = head.len;
    let mut decoder = ChunkedDecoder::new();
    loop {
        let fresh = &buf[at..];
        at = buf.len();
        let complete = if head.chunked {
            decoder.feed(fresh, |data| {
                body.extend_from_slice(data);
                Ok(())
            })?
        } else {
            body.extend_from_slice(fresh);
            head.content_length.is_some_and(|len| body.len() >= len)
        };
        if body.len() > MAX_BODY_BYTES {
            bail!("the answer to GET {path} is larger than {MAX_BODY_BYTES} bytes");
        }
        if complete {
            break;
        }
        if read(&mut sock, &mut buf)? == 0 {
            if head.chunked || head.content_length.is_some() {
                bail!("the server closed the connection in the middle of the answer to GET {path}");
            }
            break;
        }
    }
    if let Some(len) = head.content_length {
        body.truncate(len);
    }
    Ok(Response {
        status: head.status,
        body,
        sent_us,
        done_us: clock::now_us(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_heads_in_pieces() {
        let text =
            b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n\r\nd\r\nFLV";
        for end in 0..text.len() {
            let partial = parse_head(&text[..end]).unwrap();
            assert_eq!(partial.is_some(), end >= text.len() - 6, "{end}");
        }
        let head = parse_head(text).unwrap().unwrap();
        assert_eq!((head.status, head.reason.as_str()), (200, "OK"));
        assert!(head.chunked && head.content_length.is_none());
        assert_eq!(&text[head.len..], b"d\r\nFLV");
        let head = parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (head.status, head.content_length, head.chunked),
            (404, Some(9), false)
        );
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(&vec![b'a'; MAX_HEAD_BYTES]).is_err());
    }

    /// Serves one connection with `answer`, returning the request it got.
    fn serve_once(answer: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = vec![0u8; 4096];
            let n = s.read(&mut request).unwrap();
            for piece in answer.chunks(5) {
                s.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (addr, server)
    }

    #[test]
    fn gets_bodies_by_length_by_chunks_and_to_the_close() {
        let timeout = Duration::from_secs(5);
        let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let r = get(addr, "/a/b/index.m3u8?_HLS_msn=3", timeout).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        assert!(server
            .join()
            .unwrap()
            .starts_with("GET /a/b/index.m3u8?_HLS_msn=3 HTTP/1.1\r\n"));
        let (addr, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        assert_eq!(get(addr, "/x", timeout).unwrap().body, b"abcde");
        server.join().unwrap();
        let (addr, server) = serve_once(b"HTTP/1.0 404 Not Found\r\n\r\nno such stream");
        let r = get(addr, "/x", timeout).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"no such stream"[..]));
        server.join().unwrap();
        let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort");
        assert!(get(addr, "/x", timeout).is_err(), "cut short");
        server.join().unwrap();
    }
}
