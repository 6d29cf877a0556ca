//! Publish authorisation: signed publish tokens and the `on_publish` HTTP callback.
//!
//! A token is an HMAC-SHA256 of `app/stream:expires` under the shared secret (`auth.publish_secret`), carried
//! in the stream name's query: `rtmp://pop/live/cam?expires=1700000000&token=<hex>`. [`sign_publish`] makes
//! one (for a backend that hands out publish URLs); [`verify_publish`] checks one in constant time.
//!
//! The `on_publish` callback ([`call_on_publish`]) asks an HTTP service whether a publish may go ahead. It
//! **fails closed**: a hook that cannot be reached, times out or answers garbage refuses the publish, so an
//! outage of the hook can never let an unauthorised publisher in.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper::http::uri::{Authority, PathAndQuery};
use hyper::{header, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use ring::hmac;
use serde::Serialize;

use crate::stream_key::StreamKey;

/// Most bytes of a stream name's query that [`verify_publish`] reads; a longer one is refused.
pub const MAX_QUERY_BYTES: usize = 1024;

/// Most `&`-separated parameters in a stream name's query; more are refused.
pub const MAX_QUERY_PARAMS: usize = 16;

/// Most bytes of the hook's answer head (status line and headers) read; a longer head fails the call. The
/// body is never read.
pub const MAX_HOOK_RESPONSE_BYTES: usize = 8 << 10;

/// Why a publish was not authorised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The query lacks a parameter the token needs (`expires` or `token`), or there is no query at all.
    #[error("publish token missing: no `{0}` parameter in the stream name's query")]
    Missing(&'static str),
    /// The token is genuine but its expiry time has passed.
    #[error("publish token expired at unix time {expires_unix_s} (now {now_unix_s})")]
    Expired {
        /// When the token expired, in seconds since the Unix epoch.
        expires_unix_s: u64,
        /// The time of the check, in seconds since the Unix epoch.
        now_unix_s: u64,
    },
    /// The token does not match the stream and expiry under the secret (wrong secret, wrong stream, or an
    /// altered query).
    #[error("publish token is not valid for this stream and expiry")]
    BadToken,
    /// The query is malformed or too large.
    #[error("bad publish query: {0}")]
    BadQuery(String),
    /// The `on_publish` hook answered with a non-2xx status.
    #[error("on_publish hook refused the publish (HTTP status {status})")]
    Rejected {
        /// The HTTP status the hook answered.
        status: u16,
    },
    /// The `on_publish` hook could not be asked (connect error, timeout, malformed answer); the publish is
    /// refused (fail closed).
    #[error("on_publish hook failed, publish refused: {0}")]
    Hook(String),
    /// The `on_publish` URL cannot be used.
    #[error("bad on_publish URL {url:?}: {reason}")]
    BadHookUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The message a publish token signs: `app/stream:expires`.
fn signed_message(stream: &StreamKey, expires_unix_s: u64) -> String {
    format!("{}:{expires_unix_s}", stream.as_str())
}

/// Makes the query string that lets `stream` be published until `expires_unix_s` (seconds since the Unix
/// epoch): `expires=<unix s>&token=<lowercase hex HMAC-SHA256(secret, "app/stream:expires")>`.
pub fn sign_publish(secret: &[u8], stream: &StreamKey, expires_unix_s: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, signed_message(stream, expires_unix_s).as_bytes());
    let mut query = format!("expires={expires_unix_s}&token=");
    for byte in tag.as_ref() {
        let _ = write!(query, "{byte:02x}");
    }
    query
}

/// Checks the publish token in `query` (the stream name's `?...` part) for `stream` at `now_unix_s`.
///
/// Reads the `expires` and `token` parameters (others are ignored; each may appear once). The token is
/// checked first, in constant time, so [`AuthError::Expired`] is only ever said of a genuine token. A token
/// is valid up to and including the second `expires`.
pub fn verify_publish(
    secret: &[u8],
    stream: &StreamKey,
    query: Option<&str>,
    now_unix_s: u64,
) -> Result<(), AuthError> {
    let query = query.ok_or(AuthError::Missing("token"))?;
    if query.len() > MAX_QUERY_BYTES {
        return Err(AuthError::BadQuery(format!(
            "query of {} bytes, more than {MAX_QUERY_BYTES}",
            query.len()
        )));
    }
    let mut expires = None;
    let mut token = None;
    for (index, param) in query.split('&').enumerate() {
        if index >= MAX_QUERY_PARAMS {
            return Err(AuthError::BadQuery(format!(
                "more than {MAX_QUERY_PARAMS} parameters"
            )));
        }
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let slot = match name {
            "expires" => &mut expires,
            "token" => &mut token,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(AuthError::BadQuery(format!("`{name}` given more than once")));
        }
    }
    let expires = expires.ok_or(AuthError::Missing("expires"))?;
    let token = token.ok_or(AuthError::Missing("token"))?;
    let expires_unix_s: u64 = expires
        .parse()
        .map_err(|_| AuthError::BadQuery("`expires` is not a unix time in seconds".to_string()))?;
    let tag = decode_hex(token).ok_or(AuthError::BadToken)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, signed_message(stream, expires_unix_s).as_bytes(), &tag)
        .map_err(|_| AuthError::BadToken)?;
    if now_unix_s > expires_unix_s {
        return Err(AuthError::Expired {
            expires_unix_s,
            now_unix_s,
        });
    }
    Ok(())
}

/// Decodes hex (either case); `None` for an odd length, a non-hex digit or more than 64 bytes.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let pairs = text.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() || text.len() > 128 {
        return None;
    }
    pairs
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

/// What the `on_publish` hook is told (POSTed as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnPublishRequest {
    /// The RTMP app.
    pub app: String,
    /// The stream name, without its query.
    pub stream: String,
    /// The publisher's address (`ip:port`).
    pub client_addr: SocketAddr,
    /// The publisher's connection id (as `GET /api/v1/clients` shows it).
    pub client_id: u64,
    /// The stream name's query (`?...` part, without the `?`), if any.
    pub query: Option<String>,
}

/// A checked `http://host[:port][/path][?query]` URL.
#[derive(Debug, PartialEq, Eq)]
struct HookUrl {
    /// `host[:port]` as written (for the `Host` header).
    authority: Authority,
    /// The host to connect to (brackets of an IPv6 literal removed).
    host: String,
    /// The port (80 when not given).
    port: u16,
    /// The request target: path and query (`/` when not given), fragment dropped.
    target: PathAndQuery,
}

fn parse_hook_url(url: &str) -> Result<HookUrl, AuthError> {
    let bad = |reason| AuthError::BadHookUrl {
        url: url.to_string(),
        reason,
    };
    // The parser refuses spaces and control characters, which would let the URL inject headers.
    let uri: Uri = url
        .parse()
        .map_err(|_| bad("not a valid URL (spaces, control characters or a malformed host or port)"))?;
    let scheme = uri.scheme_str().ok_or_else(|| bad("not an http:// URL"))?;
    if scheme.eq_ignore_ascii_case("https") {
        return Err(bad(
            "https is not supported: use http:// (to a local sidecar or a TLS-terminating proxy)",
        ));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(bad("not an http:// URL"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?.clone();
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    // `Authority::port_u16` says `None` both for "no port" and for one that is not a u16: tell them apart.
    let port = match &authority.as_str()[host.len()..] {
        "" => 80,
        after_host => after_host
            .strip_prefix(':')
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u16>().ok())
            .filter(|port| *port != 0)
            .ok_or_else(|| bad("the port is not a number in 1..=65535"))?,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    // A query right after the host (`http://h?x=1`) still needs the `/` of an absolute path.
    let target = match uri.query() {
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_string(),
    };
    let target = PathAndQuery::try_from(target).map_err(|_| bad("malformed path"))?;
    Ok(HookUrl {
        authority,
        host,
        port,
        target,
    })
}

/// Checks that `url` can be used as the `on_publish` hook (an `http://host[:port][/path]` URL), for the
/// configuration check at start.
pub fn check_hook_url(url: &str) -> Result<(), AuthError> {
    parse_hook_url(url).map(|_| ())
}

/// Asks the `on_publish` hook at `url` whether `request` may publish: POSTs it as JSON (HTTP/1.1, hyper's
/// client) and reads the answer's status. A 2xx answer allows the publish; any other status is
/// [`AuthError::Rejected`].
///
/// Fails closed: a connect error, a `timeout` (for the whole exchange) or an unreadable answer (not HTTP/1.x,
/// or a head longer than [`MAX_HOOK_RESPONSE_BYTES`]) is [`AuthError::Hook`], which refuses the publish.
/// The answer's body is never read: the connection is closed once the status is known.
pub async fn call_on_publish(
    url: &str,
    request: &OnPublishRequest,
    timeout: Duration,
) -> Result<(), AuthError> {
    let target = parse_hook_url(url)?;
    let body = serde_json::to_vec(request)
        .map_err(|e| AuthError::Hook(format!("cannot encode the request: {e}")))?;
    let status = tokio::time::timeout(timeout, exchange(&target, body))
        .await
        .map_err(|_| AuthError::Hook(format!("no answer from {url} within {} ms", timeout.as_millis())))?
        .map_err(|e| AuthError::Hook(format!("{url}: {e}")))?;
    if status.is_success() {
        Ok(())
    } else {
        Err(AuthError::Rejected {
            status: status.as_u16(),
        })
    }
}

/// Sends the POST on a fresh connection and returns the answer's status; the connection is dropped (closed)
/// as soon as the status is known.
async fn exchange(target: &HookUrl, body: Vec<u8>) -> Result<StatusCode, String> {
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, connection) = http1::Builder::new()
        // Hooks written against the old hand-made client may match header names case-sensitively.
        .title_case_headers(true)
        .max_header_size(MAX_HOOK_RESPONSE_BYTES)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| describe(&e))?;
    let request = Request::post(target.target.as_str())
        .header(header::HOST, target.authority.as_str())
        .header(header::USER_AGENT, concat!("popline/", env!("CARGO_PKG_VERSION")))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONNECTION, "close")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    // The connection is driven here, not spawned, so that dropping this future (the timeout) closes it.
    let mut response = std::pin::pin!(sender.send_request(request));
    let mut connection = connection;
    let ended = tokio::select! {
        response = &mut response => return response.map(|answer| answer.status()).map_err(|e| describe(&e)),
        ended = &mut connection => ended,
    };
    // The connection ended first, maybe in the very poll that handed the answer over: closing it settles the
    // request, with the answer if one came, else with an error (the connection's, which says more).
    drop(connection);
    response
        .await
        .map(|answer| answer.status())
        .map_err(|e| describe(&ended.err().unwrap_or(e)))
}

/// An error and its sources, `: `-separated (hyper's errors keep the detail in their sources).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const SECRET: &[u8] = b"s3cret";

    fn key() -> StreamKey {
        StreamKey::new("live", "cam").unwrap()
    }

    #[test]
    fn signed_token_verifies_until_it_expires() {
        let query = sign_publish(SECRET, &key(), 1_000);
        assert!(query.starts_with("expires=1000&token="));
        let token = query.rsplit('=').next().unwrap();
        assert_eq!(token.len(), 64);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));

        assert_eq!(verify_publish(SECRET, &key(), Some(&query), 999), Ok(()));
        assert_eq!(verify_publish(SECRET, &key(), Some(&query), 1_000), Ok(()));
        assert_eq!(
            verify_publish(SECRET, &key(), Some(&query), 1_001),
            Err(AuthError::Expired {
                expires_unix_s: 1_000,
                now_unix_s: 1_001
            })
        );
        // Other parameters, in any order, are ignored.
        let shuffled = format!(
            "foo=bar&{}&x",
            query.split('&').rev().collect::<Vec<_>>().join("&")
        );
        assert_eq!(verify_publish(SECRET, &key(), Some(&shuffled), 10), Ok(()));
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA256("s3cret", "live/cam:1000"), computed independently with Python's hmac module.
        assert_eq!(
            sign_publish(SECRET, &key(), 1_000),
            "expires=1000&token=ca1a101686755ea3e0cef436dc36ed401b1ac23a0a7ad671e2af13a093dd9913"
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_the_reason() {
        let query = sign_publish(SECRET, &key(), 1_000);
        let other = StreamKey::new("live", "other").unwrap();
        assert_eq!(
            verify_publish(SECRET, &other, Some(&query), 0),
            Err(AuthError::BadToken)
        );
        assert_eq!(
            verify_publish(b"wrong", &key(), Some(&query), 0),
            Err(AuthError::BadToken)
        );
        let later = query.replace("expires=1000", "expires=2000");
        assert_eq!(
            verify_publish(SECRET, &key(), Some(&later), 0),
            Err(AuthError::BadToken)
        );
        // A forged token for an expired time says "bad", not "expired".
        assert_eq!(
            verify_publish(SECRET, &key(), Some(&later), 5_000),
            Err(AuthError::BadToken)
        );
        let mangled = format!("{}zz", &query[..query.len() - 2]);
        assert_eq!(
            verify_publish(SECRET, &key(), Some(&mangled), 0),
            Err(AuthError::BadToken)
        );

        assert_eq!(
            verify_publish(SECRET, &key(), None, 0),
            Err(AuthError::Missing("token"))
        );
        assert_eq!(
            verify_publish(SECRET, &key(), Some("token=ab"), 0),
            Err(AuthError::Missing("expires"))
        );
        assert_eq!(
            verify_publish(SECRET, &key(), Some("expires=5"), 0),
            Err(AuthError::Missing("token"))
        );
        assert!(verify_publish(SECRET, &key(), Some("expires=5"), 0)
            .unwrap_err()
            .to_string()
            .contains("`token`"));
        assert!(matches!(
            verify_publish(SECRET, &key(), Some("expires=soon&token=ab"), 0),
            Err(AuthError::BadQuery(_))
        ));
        let twice = format!("{query}&token=00");
        assert!(matches!(
            verify_publish(SECRET, &key(), Some(&twice), 0),
            Err(AuthError::BadQuery(_))
        ));
        let many = format!("{query}{}", "&a=1".repeat(MAX_QUERY_PARAMS));
        assert!(matches!(
            verify_publish(SECRET, &key(), Some(&many), 0),
            Err(AuthError::BadQuery(_))
        ));
        let long = format!("{query}&pad={}", "x".repeat(MAX_QUERY_BYTES));
        assert!(matches!(
            verify_publish(SECRET, &key(), Some(&long), 0),
            Err(AuthError::BadQuery(_))
        ));
    }

    #[test]
    fn hook_urls_are_checked() {
        let parts = |url: &str| {
            let url = parse_hook_url(url).unwrap();
            (
                url.authority.as_str().to_string(),
                url.host,
                url.port,
                url.target.as_str().to_string(),
            )
        };
        assert_eq!(
            parts("http://127.0.0.1:9000/hooks/publish?x=1"),
            (
                "127.0.0.1:9000".to_string(),
                "127.0.0.1".to_string(),
                9000,
                "/hooks/publish?x=1".to_string()
            )
        );
        let (_, host, port, target) = parts("HTTP://auth.local");
        assert_eq!((host.as_str(), port, target.as_str()), ("auth.local", 80, "/"));
        let (authority, host, port, target) = parts("http://[::1]:81/p#frag");
        assert_eq!(
            (authority.as_str(), host.as_str(), port, target.as_str()),
            ("[::1]:81", "::1", 81, "/p")
        );
        assert_eq!(parts("http://h?x=1").3, "/?x=1");

        let https = check_hook_url("https://auth.example/publish").unwrap_err();
        assert!(https.to_string().contains("https is not supported"), "{https}");
        let credentials = check_hook_url("http://u:p@h/").unwrap_err();
        assert!(credentials.to_string().contains("credentials"), "{credentials}");
        for bad in [
            "ftp://x/",
            "auth.local/publish",
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://h:+80/",
            "http://h:/",
            "http://u:p@h/",
            "http://h/a b",
            "http://h/\r\nX-Evil: 1",
            "http://[::1/",
        ] {
            assert!(check_hook_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn status_lines_parse() {
        for (answer, expected) in [
            (&b"HTTP/1.0 403\r\n\r\n"[..], Some(403)),
            (b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", Some(500)),
            (b"HTTP/2 200 OK\r\n\r\n", None),
            (b"HTTP/1.1 20 OK\r\n\r\n", None),
            (b"garbage\r\n\r\n", None),
        ] {
            let (addr, server) = one_shot_server(answer).await;
            let error = call_on_publish(&format!("http://{addr}/"), &request(), Duration::from_secs(5))
                .await
                .unwrap_err();
            match expected {
                Some(status) => assert_eq!(error, AuthError::Rejected { status }),
                None => assert!(matches!(error, AuthError::Hook(_)), "{error}"),
            }
            server.await.unwrap();
        }
    }

    /// Serves one connection: reads the request (head and `Content-Length` body), answers `answer`, and hands
    /// back the request's bytes.
    async fn one_shot_server(answer: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            loop {
                let read = socket.read(&mut chunk).await.unwrap();
                request.extend_from_slice(&chunk[..read]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length: usize = text
                        .lines()
                        .find_map(|line| line.strip_prefix("Content-Length: "))
                        .unwrap()
                        .parse()
                        .unwrap();
                    if request.len() >= head_end + 4 + length {
                        break;
                    }
                }
                assert!(read > 0, "client closed early");
            }
            socket.write_all(answer).await.unwrap();
            request
        });
        (addr, task)
    }

    fn request() -> OnPublishRequest {
        OnPublishRequest {
            app: "live".to_string(),
            stream: "cam".to_string(),
            client_addr: "10.0.0.7:50000".parse().unwrap(),
            client_id: 42,
            query: Some("k=v".to_string()),
        }
    }

    #[tokio::test]
    async fn hook_2xx_allows_and_sends_json() {
        let (addr, server) = one_shot_server(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").await;
        let url = format!("http://{addr}/on_publish");
        call_on_publish(&url, &request(), Duration::from_secs(5))
            .await
            .unwrap();
        let sent = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(sent.starts_with("POST /on_publish HTTP/1.1\r\n"), "{sent}");
        assert!(sent.contains(&format!("\r\nHost: {addr}\r\n")));
        assert!(sent.contains("\r\nContent-Type: application/json\r\n"));
        assert!(sent.contains("\r\nConnection: close\r\n"));
        let body = &sent[sent.find("\r\n\r\n").unwrap() + 4..];
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "app": "live", "stream": "cam", "client_addr": "10.0.0.7:50000", "client_id": 42, "query": "k=v"
            })
        );
    }

    #[tokio::test]
    async fn hook_non_2xx_rejects() {
        let (addr, server) = one_shot_server(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
        let url = format!("http://{addr}/on_publish");
        let error = call_on_publish(&url, &request(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(error, AuthError::Rejected { status: 403 });
        server.await.unwrap();
    }

    #[tokio::test]
    async fn hook_failures_refuse() {
        // Nobody listens on a port we just released: connection refused.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = call_on_publish(&format!("http://{addr}/"), &request(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(error, AuthError::Hook(_)), "{error}");

        // A server that accepts and never answers: the timeout refuses.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let (socket, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        });
        let error = call_on_publish(&format!("http://{addr}/"), &request(), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, AuthError::Hook(text) if text.contains("within 100 ms")),
            "{error}"
        );
        holder.abort();

        // Garbage instead of HTTP.
        let (addr, server) = one_shot_server(b"SSH-2.0-OpenSSH\r\n").await;
        let error = call_on_publish(&format!("http://{addr}/"), &request(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(error, AuthError::Hook(_)), "{error}");
        server.await.unwrap();

        let error = call_on_publish("https://x/", &request(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(error, AuthError::BadHookUrl { .. }));
    }

    /// Serves one connection: answers `head` at once, then writes `filler` until the client goes away.
    async fn endless_server(
        head: &'static [u8],
        filler: &'static [u8],
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.write_all(head).await.unwrap();
            while socket.write_all(filler).await.is_ok() {}
        });
        (addr, task)
    }

    #[tokio::test]
    async fn hook_answers_are_read_no_further_than_needed() {
        // An endless body: the status is all that is read, and the connection is closed after it.
        let (addr, server) = endless_server(
            b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n",
            &[b'x'; 1 << 16],
        )
        .await;
        call_on_publish(&format!("http://{addr}/"), &request(), Duration::from_secs(5))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the client closes the connection")
            .unwrap();

        // Endless headers: refused once the head is longer than MAX_HOOK_RESPONSE_BYTES.
        let (addr, server) = endless_server(
            b"HTTP/1.1 200 OK\r\n",
            b"X-Filler: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n",
        )
        .await;
        let error = call_on_publish(&format!("http://{addr}/"), &request(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, AuthError::Hook(text) if text.contains("too large")),
            "{error}"
        );
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the client closes the connection")
            .unwrap();
    }
}
