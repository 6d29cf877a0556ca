//! HTTP/1.1 for media egress, sans-IO: a connection's request heads read with `httparse` (the parser under
//! hyper: no allocation, bounded by the caller) and routed to an output, and the node's answers (status line
//! and headers) as bytes.
//!
//! Persistent connections (RFC 9112, section 9.3): a finite answer (an HLS playlist, part, segment or init, an
//! error to a well-formed request, a preflight) leaves the connection open when the client speaks HTTP/1.1
//! without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`, and the next request head is read
//! from it. An HTTP-FLV body is endless: that request owns its connection to the end. A connection serves at
//! most `egress.keepalive_max_requests` requests (the last answer says `Connection: close`); one whose head
//! cannot be read (malformed, too large) or that sent a body (never read here) is closed after its answer.
//!
//! Pipelining: requests are answered one at a time, in order. What a client sends while its request waits
//! for its answer (an LL-HLS blocking reload may wait seconds) is kept, at most `egress.max_request_bytes`,
//! and read once that answer is queued; more than that closes the connection after the answer (the bytes
//! past the bound are dropped, so what follows cannot be read reliably).

use bytes::Bytes;

use crate::stream_key::{StreamKey, StreamKeyError};

/// Most headers a request may carry.
const MAX_HEADERS: usize = 64;

/// What a viewer asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /APP/STREAM.flv`: the live stream as HTTP-FLV.
    Flv(StreamKey),
    /// `GET /APP/STREAM/...`: an HLS resource of the stream.
    Hls(StreamKey, HlsResource),
    /// `OPTIONS` (a CORS preflight): answered with the allowed methods.
    Preflight,
}

/// An HLS resource of a stream, by its file name under `/APP/STREAM/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HlsResource {
    /// `index.m3u8`, with the blocking-reload query (`_HLS_msn`, `_HLS_part`) when given.
    Playlist {
        /// `_HLS_msn`: answer once this segment (or part of it) exists.
        msn: Option<u64>,
        /// `_HLS_part`: the part of `msn`.
        part: Option<usize>,
    },
    /// `init-V.mp4`: the init segment of version V.
    Init(u32),
    /// `seg-N.m4s`: segment N.
    Segment(u64),
    /// `part-N.I.m4s`: part I of segment N.
    Part(u64, usize),
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
    #[error("no such resource: {0} (HTTP-FLV is /APP/STREAM.flv, HLS /APP/STREAM/index.m3u8)")]
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
    /// The viewer's session token: the `session` query parameter, else the `popline_hls` cookie.
    pub session: Option<String>,
}

/// What a connection does after an answer: stay open for the next request, or close once it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// `Connection: keep-alive`: the next request is read from the same connection.
    KeepAlive,
    /// `Connection: close`: the connection closes after the answer.
    Close,
}

impl Persistence {
    /// The `Connection` header line.
    fn header(self) -> &'static str {
        match self {
            Persistence::KeepAlive => "Connection: keep-alive\r\n",
            Persistence::Close => "Connection: close\r\n",
        }
    }
}

/// One connection's request heads, read one at a time (sans-IO: fed the bytes the socket gave). A request
/// read waits for its answer ([`RequestReader::answered`]) before the next one is read from what followed it.
#[derive(Debug)]
pub struct RequestReader {
    /// Bytes not read yet: a head in progress, or what a client sent after the request that waits.
    buf: Vec<u8>,
    max_bytes: usize,
    max_requests: u32,
    /// Requests read on this connection (the one waiting included).
    read: u32,
    /// A request was read (or refused) and its answer is not queued yet.
    waiting: bool,
    /// The answer to the request read last leaves the connection open.
    keep_alive: bool,
    /// Nothing more is read: an HTTP-FLV viewer, a head that could not be read, or bytes past the bound while
    /// a request waited.
    finished: bool,
}

impl RequestReader {
    /// A reader that refuses a head longer than `max_bytes` and reads at most `max_requests` requests (1: one
    /// request per connection).
    pub fn new(max_bytes: usize, max_requests: u32) -> RequestReader {
        RequestReader {
            buf: Vec::new(),
            max_bytes,
            max_requests: max_requests.max(1),
            read: 0,
            waiting: false,
            keep_alive: false,
            finished: false,
        }
    }

    /// A request was read (or refused) and waits for its answer.
    pub fn is_waiting(&self) -> bool {
        self.waiting
    }

    /// Requests read on this connection so far: the number of the one waiting, from 1.
    pub fn requests_read(&self) -> u32 {
        self.read
    }

    /// Whether the answer to the request waiting leaves the connection open; its head says so.
    pub fn persistence(&self) -> Persistence {
        if self.keep_alive && !self.finished {
            Persistence::KeepAlive
        } else {
            Persistence::Close
        }
    }

    /// Reads nothing more from this connection (it became an HTTP-FLV viewer: its body never ends).
    pub fn finish(&mut self) {
        self.finished = true;
        self.buf = Vec::new();
    }

    /// The answer to the request waiting is queued. Returns whether the connection stays open; if so, the
    /// next request is read by [`RequestReader::feed`] (with no new bytes: what is kept already).
    pub fn answered(&mut self) -> bool {
        if self.persistence() == Persistence::Close {
            self.finish();
            return false;
        }
        self.waiting = false;
        true
    }

    /// Feeds what the connection sent. `Ok(None)`: no request to act on (the head is not complete, a
    /// request waits for its answer, or nothing more is read). `Ok(Some(request))` or `Err(refusal)` once per
    /// request: it then waits for its answer, whose [`RequestReader::persistence`] is decided.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<Request>, RequestError> {
        if self.finished {
            return Ok(None);
        }
        let room = self.max_bytes.saturating_sub(self.buf.len());
        if bytes.len() > room && self.waiting {
            // A client that sends more than a head's worth while its request waits: its answer is the last.
            self.finished = true;
            self.buf = Vec::new();
            return Ok(None);
        }
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if self.waiting || self.buf.is_empty() {
            return Ok(None);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let (len, result) = match request.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => {
                let http_11 = request.version == Some(1);
                let mut cookie = None;
                let mut close = false;
                let mut keep_alive = false;
                let mut body = false;
                for header in request.headers.iter() {
                    let name = header.name;
                    if name.eq_ignore_ascii_case("cookie") {
                        cookie = cookie.or_else(|| session_cookie(header.value));
                    } else if name.eq_ignore_ascii_case("connection") {
                        for option in header.value.split(|&b| b == b',') {
                            let option = option.trim_ascii();
                            close |= option.eq_ignore_ascii_case(b"close");
                            keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                        }
                    } else if name.eq_ignore_ascii_case("transfer-encoding") {
                        body = true;
                    } else if name.eq_ignore_ascii_case("content-length") {
                        body |= header.value.trim_ascii() != b"0";
                    }
                }
                self.read = self.read.saturating_add(1);
                // A body is never read here, so what follows it could not be found: it ends the connection.
                self.keep_alive = !close && (http_11 || keep_alive) && !body && self.read < self.max_requests;
                let routed = route(request.method.unwrap_or(""), request.path.unwrap_or(""));
                let result = routed.map(|mut routed| {
                    routed.chunked = http_11;
                    if routed.session.is_none() {
                        routed.session = cookie;
                    }
                    Some(routed)
                });
                (len, result)
            }
            Ok(httparse::Status::Partial) if self.buf.len() >= self.max_bytes => {
                self.finished = true;
                (0, Err(RequestError::TooLarge(self.max_bytes)))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => {
                self.finished = true;
                (0, Err(RequestError::Malformed(error.to_string())))
            }
        };
        self.waiting = true;
        if self.finished {
            self.read = self.read.saturating_add(1);
            self.buf = Vec::new();
        } else {
            // The head's bytes are read; what follows is the next request's (kept while this one waits).
            self.buf.drain(..len);
        }
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
                session: None,
            })
        }
        other => return Err(RequestError::Method(other.chars().take(32).collect())),
    };
    let shown: String = target.chars().take(256).collect();
    let target = target.split('#').next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let not_found = || RequestError::NotFound(shown.clone());
    let bad_name = |error| RequestError::BadName {
        path: shown.clone(),
        error,
    };
    let rest = path.strip_prefix('/').ok_or_else(not_found)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let route = match parts.as_slice() {
        [app, file] => {
            let stream = file.strip_suffix(".flv").ok_or_else(not_found)?;
            Route::Flv(StreamKey::new(app, stream).map_err(bad_name)?)
        }
        [app, stream, file] => {
            let key = StreamKey::new(app, stream).map_err(bad_name)?;
            let resource = hls_resource(file, query).ok_or_else(not_found)?;
            Route::Hls(key, resource)
        }
        _ => return Err(not_found()),
    };
    let session = query_param(query, "session")
        .filter(|s| valid_session(s))
        .map(str::to_string);
    Ok(Request {
        route,
        head_only,
        chunked: false,
        target: shown,
        session,
    })
}

/// The HLS resource a file name (and the playlist's query) names.
fn hls_resource(file: &str, query: &str) -> Option<HlsResource> {
    if file == "index.m3u8" {
        return Some(HlsResource::Playlist {
            msn: query_param(query, "_HLS_msn").and_then(|v| v.parse().ok()),
            part: query_param(query, "_HLS_part").and_then(|v| v.parse().ok()),
        });
    }
    if let Some(version) = file.strip_prefix("init-").and_then(|f| f.strip_suffix(".mp4")) {
        return version.parse().ok().map(HlsResource::Init);
    }
    if let Some(msn) = file.strip_prefix("seg-").and_then(|f| f.strip_suffix(".m4s")) {
        return msn.parse().ok().map(HlsResource::Segment);
    }
    let (msn, index) = file
        .strip_prefix("part-")
        .and_then(|f| f.strip_suffix(".m4s"))?
        .split_once('.')?;
    Some(HlsResource::Part(msn.parse().ok()?, index.parse().ok()?))
}

/// The value of `name` in a query string (`a=1&b=2`), undecoded.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// The name of the cookie that carries an HLS viewer's session token.
pub const SESSION_COOKIE: &str = "popline_hls";

/// A session token the node made: 1 to 32 hex digits.
fn valid_session(token: &str) -> bool {
    !token.is_empty() && token.len() <= 32 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The session token in a `Cookie` header, if it carries a valid one.
fn session_cookie(header: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(header).ok()?;
    text.split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find_map(|(k, v)| (k == SESSION_COOKIE && valid_session(v)).then(|| v.to_string()))
}

/// The status line and headers of an answer, ending with the blank line. `cors` is the
/// `Access-Control-Allow-Origin` value (empty: none); `persistence` gives the `Connection` header; `headers`
/// are whole lines without their CRLF.
pub fn response_head(
    status: u16,
    reason: &str,
    cors: &str,
    persistence: Persistence,
    headers: &[&str],
) -> Bytes {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nServer: popline\r\n");
    head.push_str(persistence.header());
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

/// A whole error answer: status, `text/plain` body `why` (one line), with a length so the connection may
/// stay open (`persistence`).
pub fn error_response(status: u16, reason: &str, cors: &str, persistence: Persistence, why: &str) -> Bytes {
    let body = format!("{why}\n");
    let length = format!("Content-Length: {}", body.len());
    let head = response_head(
        status,
        reason,
        cors,
        persistence,
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
pub fn preflight_response(cors: &str, persistence: Persistence) -> Bytes {
    response_head(
        204,
        "No Content",
        cors,
        persistence,
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
        RequestReader::new(8_192, 1_000).feed(bytes)
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
    fn hls_resources_route_with_their_query_and_session() {
        let key = StreamKey::new("live", "shop").unwrap();
        let r = read(b"GET /live/shop/index.m3u8?_HLS_msn=12&_HLS_part=3&session=ab12 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        let playlist = HlsResource::Playlist {
            msn: Some(12),
            part: Some(3),
        };
        assert_eq!(r.route, Route::Hls(key.clone(), playlist));
        assert_eq!(r.session.as_deref(), Some("ab12"));
        let r = read(b"GET /live/shop/part-7.2.m4s HTTP/1.1\r\nCookie: a=b; popline_hls=ff00\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.route, Route::Hls(key.clone(), HlsResource::Part(7, 2)));
        assert_eq!(
            r.session.as_deref(),
            Some("ff00"),
            "the cookie when the query has none"
        );
        let r = read(b"GET /live/shop/seg-9.m4s?session=not-hex HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.route, Route::Hls(key.clone(), HlsResource::Segment(9)));
        assert_eq!(r.session, None, "a token the node could not have made is ignored");
        let r = read(b"GET /live/shop/init-0.mp4 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.route, Route::Hls(key, HlsResource::Init(0)));
    }

    #[test]
    fn a_head_in_pieces_is_read_once_it_is_whole_and_the_next_waits_for_its_answer() {
        let mut reader = RequestReader::new(8_192, 1_000);
        assert_eq!(reader.feed(b"GET /live/x.fl").unwrap(), None);
        assert_eq!(reader.feed(b"v HTTP/1.1\r\nHost: a\r\n").unwrap(), None);
        assert!(reader.feed(b"\r\n").unwrap().is_some());
        assert!(reader.is_waiting());
        // A second request sent before the first is answered (pipelined) is kept, not read.
        assert_eq!(
            reader.feed(b"GET /live/y/seg-1.m4s HTTP/1.1\r\n\r\n").unwrap(),
            None
        );
        assert!(reader.answered(), "HTTP/1.1 keeps the connection");
        let next = reader.feed(&[]).unwrap().unwrap();
        assert_eq!(next.target, "/live/y/seg-1.m4s");
        assert_eq!(reader.requests_read(), 2);
        // An HTTP-FLV viewer reads nothing more.
        reader.finish();
        assert_eq!(reader.feed(b"GET /live/z.flv HTTP/1.1\r\n\r\n").unwrap(), None);
        assert_eq!(reader.persistence(), Persistence::Close);
    }

    #[test]
    fn the_connection_stays_open_as_the_client_and_the_bounds_allow() {
        let persistence = |text: &[u8]| {
            let mut reader = RequestReader::new(8_192, 1_000);
            let _ = reader.feed(text);
            reader.persistence()
        };
        use Persistence::{Close, KeepAlive};
        assert_eq!(persistence(b"GET /a/b/index.m3u8 HTTP/1.1\r\n\r\n"), KeepAlive);
        assert_eq!(
            persistence(b"GET /a/b/index.m3u8 HTTP/1.1\r\nConnection: Close\r\n\r\n"),
            Close
        );
        assert_eq!(persistence(b"GET /a/b/index.m3u8 HTTP/1.0\r\n\r\n"), Close);
        assert_eq!(
            persistence(b"GET /a/b/index.m3u8 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"),
            KeepAlive
        );
        // A body is never read: what follows it cannot be found.
        assert_eq!(
            persistence(b"GET /a/b/index.m3u8 HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd"),
            Close
        );
        assert_eq!(
            persistence(b"GET /a/b/index.m3u8 HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            KeepAlive
        );
        // A well-formed request for nothing keeps the connection; a head that cannot be read does not.
        assert_eq!(persistence(b"GET /nothing HTTP/1.1\r\n\r\n"), KeepAlive);
        assert_eq!(persistence(b"\x03\x00garbage\r\n\r\n"), Close);
        // At most `max_requests` requests: the last answer closes.
        let mut reader = RequestReader::new(8_192, 2);
        let request = b"GET /a/b/init-0.mp4 HTTP/1.1\r\n\r\n";
        reader.feed(request).unwrap().unwrap();
        assert_eq!(reader.persistence(), KeepAlive);
        assert!(reader.answered());
        reader.feed(request).unwrap().unwrap();
        assert_eq!(reader.persistence(), Close);
        assert!(!reader.answered());
        assert_eq!(reader.feed(request).unwrap(), None, "nothing more is read");
        // More than a head's worth sent while a request waits: that answer is the last.
        let mut reader = RequestReader::new(1_024, 1_000);
        reader.feed(request).unwrap().unwrap();
        assert_eq!(reader.feed(&[b'a'; 600]).unwrap(), None);
        assert_eq!(reader.persistence(), KeepAlive);
        assert_eq!(reader.feed(&[b'a'; 600]).unwrap(), None);
        assert_eq!(reader.persistence(), Close);
        assert!(!reader.answered());
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
        assert_eq!(status(b"GET /live/a/b.flv HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status(b"GET /live/a/b/c.m4s HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status(b"GET /live/a/seg-x.m4s HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status(b"GET /live/a%/index.m3u8 HTTP/1.1\r\n\r\n"), 400);
        let mut reader = RequestReader::new(1_024, 1_000);
        let mut big = b"GET /live/x.flv HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2_000));
        assert_eq!(reader.feed(&big).unwrap_err().status().0, 431);
    }

    #[test]
    fn answers_say_whether_the_connection_stays_and_carry_cors() {
        let head = response_head(200, "OK", "*", Persistence::Close, &["Content-Type: video/x-flv"]);
        let text = std::str::from_utf8(&head).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.contains("Access-Control-Allow-Origin: *\r\n"));
        assert!(text.ends_with("Content-Type: video/x-flv\r\n\r\n"));
        let error = error_response(
            404,
            "Not Found",
            "",
            Persistence::KeepAlive,
            "stream live/x is not published",
        );
        let text = std::str::from_utf8(&error).unwrap();
        assert!(text.contains("Connection: keep-alive\r\n"));
        assert!(!text.contains("Access-Control"));
        assert!(text.ends_with("\r\n\r\nstream live/x is not published\n"));
        assert!(text.contains("Content-Length: 31\r\n"));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..8)) {
            let mut reader = RequestReader::new(1_024, 1_000);
            for chunk in chunks {
                if reader.feed(&chunk).is_err() || reader.is_waiting() && !reader.answered() {
                    break;
                }
            }
        }
    }
}
