//! HTTP/1.1 for media egress, sans-IO: a viewer's request head read with `httparse` (the parser under hyper:
//! no allocation, bounded by the caller) and routed to an output, and the node's answers (status line and
//! headers) as bytes.
//!
//! One request per connection: a media response is endless (or ends the connection), so every answer says
//! `Connection: close`; what a client sends after its request head is read and ignored.

use bytes::Bytes;

use crate::stream_key::{StreamKey, StreamKeyError};

/// Most headers a request may carry.
const MAX_HEADERS: usize = 64;

/// What a viewer asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /APP/STREAM.flv`: the live stream as HTTP-FLV.
    Flv(StreamKey),
    /// `OPTIONS` (a CORS preflight): answered with the allowed methods.
    Preflight,
}

/// A request the node answers with an error status, and why (the reason goes into the body and the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The bytes are not an HTTP/1.x request head.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The request head is over `egress.max_request_bytes`.
    #[error("request head over {0} bytes (egress.max_request_bytes)")]
    TooLarge(usize),
    /// Not GET, HEAD or OPTIONS.
    #[error("method {0} not allowed (GET)")]
    Method(String),
    /// A path no output serves.
    #[error("no such resource: {0} (HTTP-FLV is /APP/STREAM.flv)")]
    NotFound(String),
    /// The path names a stream, but not a valid one.
    #[error("bad stream name in {path}: {error}")]
    BadName {
        /// The request's path.
        path: String,
        /// What is wrong with it.
        error: StreamKeyError,
    },
}

impl RequestError {
    /// The status line's code and reason phrase for this error.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            RequestError::Malformed(_) => (400, "Bad Request"),
            RequestError::TooLarge(_) => (431, "Request Header Fields Too Large"),
            RequestError::Method(_) => (405, "Method Not Allowed"),
            RequestError::NotFound(_) => (404, "Not Found"),
            RequestError::BadName { .. } => (400, "Bad Request"),
        }
    }
}

/// A request head, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What it asks for.
    pub route: Route,
    /// `HEAD`: answer with the head alone.
    pub head_only: bool,
    /// HTTP/1.1: the body goes in chunks (HTTP/1.0: until the connection closes).
    pub chunked: bool,
    /// The path as sent (for logs), query included.
    pub target: String,
}

/// One connection's request head, accumulated until complete (sans-IO: fed the bytes the socket gave).
#[derive(Debug)]
pub struct RequestReader {
    buf: Vec<u8>,
    max_bytes: usize,
    done: bool,
}

impl RequestReader {
    /// A reader that refuses a head longer than `max_bytes`.
    pub fn new(max_bytes: usize) -> RequestReader {
        RequestReader {
            buf: Vec::new(),
            max_bytes,
            done: false,
        }
    }

    /// Feeds what the connection sent. `Ok(None)`: the head is not complete yet (or was read already: what
    /// follows it is ignored). `Ok(Some(request))` once, when it is.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<Request>, RequestError> {
        if self.done {
            return Ok(None);
        }
        let room = self.max_bytes.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let result = match request.parse(&self.buf) {
            Ok(httparse::Status::Complete(_)) => {
                let chunked = request.version == Some(1);
                route(request.method.unwrap_or(""), request.path.unwrap_or("")).map(|mut routed| {
                    routed.chunked = chunked;
                    Some(routed)
                })
            }
            Ok(httparse::Status::Partial) if self.buf.len() >= self.max_bytes => {
                Err(RequestError::TooLarge(self.max_bytes))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => Err(RequestError::Malformed(error.to_string())),
        };
        // Read (or refused): the head's bytes are no longer needed, and nothing after it is kept.
        self.done = true;
        self.buf = Vec::new();
        result
    }
}

/// Routes a request line.
fn route(method: &str, target: &str) -> Result<Request, RequestError> {
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        "OPTIONS" => {
            return Ok(Request {
                route: Route::Preflight,
                head_only: true,
                chunked: false,
                target: target.chars().take(256).collect(),
            })
        }
        other => return Err(RequestError::Method(other.chars().take(32).collect())),
    };
    let shown: String = target.chars().take(256).collect();
    let path = target.split(['?', '#']).next().unwrap_or("");
    let not_found = || RequestError::NotFound(shown.clone());
    let rest = path.strip_prefix('/').ok_or_else(not_found)?;
    let (app, file) = rest.split_once('/').ok_or_else(not_found)?;
    let stream = file.strip_suffix(".flv").ok_or_else(not_found)?;
    let key = StreamKey::new(app, stream).map_err(|error| RequestError::BadName {
        path: shown.clone(),
        error,
    })?;
    Ok(Request {
        route: Route::Flv(key),
        head_only,
        chunked: false,
        target: shown,
    })
}

/// The status line and headers of an answer, ending with the blank line. `cors` is the
/// `Access-Control-Allow-Origin` value (empty: none); `headers` are whole lines without their CRLF.
pub fn response_head(status: u16, reason: &str, cors: &str, headers: &[&str]) -> Bytes {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nServer: popline\r\nConnection: close\r\n");
    if !cors.is_empty() {
        head.push_str("Access-Control-Allow-Origin: ");
        head.push_str(cors);
        head.push_str("\r\n");
    }
    for line in headers {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    Bytes::from(head)
}

/// A whole error answer: status, `text/plain` body `why` (one line), `Connection: close`.
pub fn error_response(status: u16, reason: &str, cors: &str, why: &str) -> Bytes {
    let body = format!("{why}\n");
    let length = format!("Content-Length: {}", body.len());
    let head = response_head(
        status,
        reason,
        cors,
        &[
            "Content-Type: text/plain; charset=utf-8",
            &length,
            "Cache-Control: no-cache",
        ],
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(body.as_bytes());
    Bytes::from(out)
}

/// The answer to a CORS preflight (`OPTIONS`).
pub fn preflight_response(cors: &str) -> Bytes {
    response_head(
        204,
        "No Content",
        cors,
        &[
            "Access-Control-Allow-Methods: GET, HEAD, OPTIONS",
            "Access-Control-Allow-Headers: *",
            "Access-Control-Max-Age: 86400",
        ],
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn read(bytes: &[u8]) -> Result<Option<Request>, RequestError> {
        RequestReader::new(8_192).feed(bytes)
    }

    #[test]
    fn a_flv_request_names_its_stream_whatever_the_query() {
        let r = read(b"GET /live/cam-1.flv?token=abc HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.route, Route::Flv(StreamKey::new("live", "cam-1").unwrap()));
        assert!(!r.head_only);
        assert!(r.chunked);
        let r = read(b"HEAD /live/a.b.flv HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(r.route, Route::Flv(StreamKey::new("live", "a.b").unwrap()));
        assert!(r.head_only);
        assert!(!r.chunked, "HTTP/1.0 has no chunked encoding");
    }

    #[test]
    fn a_head_in_pieces_is_read_once_it_is_whole_and_what_follows_is_ignored() {
        let mut reader = RequestReader::new(8_192);
        assert_eq!(reader.feed(b"GET /live/x.fl").unwrap(), None);
        assert_eq!(reader.feed(b"v HTTP/1.1\r\nHost: a\r\n").unwrap(), None);
        assert!(reader.feed(b"\r\n").unwrap().is_some());
        assert_eq!(reader.feed(b"GET /live/y.flv HTTP/1.1\r\n\r\n").unwrap(), None);
    }

    #[test]
    fn bad_requests_get_the_status_that_says_why() {
        let status = |bytes: &[u8]| read(bytes).unwrap_err().status().0;
        assert_eq!(status(b"\x03\x00\x00\x00garbage\r\n\r\n"), 400);
        assert_eq!(status(b"POST /live/x.flv HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status(b"GET /live/x.mp4 HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status(b"GET /x.flv HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status(b"GET live/x.flv HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status(b"GET /live/.flv HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET /live/a/b.flv HTTP/1.1\r\n\r\n"), 400);
        let mut reader = RequestReader::new(1_024);
        let mut big = b"GET /live/x.flv HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2_000));
        assert_eq!(reader.feed(&big).unwrap_err().status().0, 431);
    }

    #[test]
    fn answers_close_the_connection_and_carry_cors() {
        let head = response_head(200, "OK", "*", &["Content-Type: video/x-flv"]);
        let text = std::str::from_utf8(&head).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.contains("Access-Control-Allow-Origin: *\r\n"));
        assert!(text.ends_with("Content-Type: video/x-flv\r\n\r\n"));
        let error = error_response(404, "Not Found", "", "stream live/x is not published");
        let text = std::str::from_utf8(&error).unwrap();
        assert!(!text.contains("Access-Control"));
        assert!(text.ends_with("\r\n\r\nstream live/x is not published\n"));
        assert!(text.contains("Content-Length: 31\r\n"));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..8)) {
            let mut reader = RequestReader::new(1_024);
            for chunk in chunks {
                if reader.feed(&chunk).is_err() {
                    break;
                }
            }
        }
    }
}
