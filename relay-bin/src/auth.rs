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

use ring::hmac;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stream_key::StreamKey;

/// Most bytes of a stream name's query that [`verify_publish`] reads; a longer one is refused.
pub const MAX_QUERY_BYTES: usize = 1024;

/// Most `&`-separated parameters in a stream name's query; more are refused.
pub const MAX_QUERY_PARAMS: usize = 16;

/// Most bytes of the hook's answer read while looking for its status line.
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

/// A parsed `http://host[:port][/path]` URL.
#[derive(Debug, PartialEq, Eq)]
struct HookUrl<'a> {
    /// `host[:port]` as written (for the `Host` header).
    authority: &'a str,
    /// The host to connect to (brackets of an IPv6 literal removed).
    host: &'a str,
    /// The port (80 when not given).
    port: u16,
    /// Path and query (`/` when not given).
    path: String,
}

fn parse_hook_url(url: &str) -> Result<HookUrl<'_>, AuthError> {
    let bad = |reason| AuthError::BadHookUrl {
        url: url.to_string(),
        reason,
    };
    // A space or control character would let the URL inject headers into the request.
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("holds a space or control character"));
    }
    let scheme_end = url.find("://").ok_or_else(|| bad("not an http:// URL"))?;
    let scheme = &url[..scheme_end];
    if scheme.eq_ignore_ascii_case("https") {
        return Err(bad(
            "https is not supported: use http:// (to a local sidecar or a TLS-terminating proxy)",
        ));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(bad("not an http:// URL"));
    }
    let rest = &url[scheme_end + 3..];
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) if rest[at..].starts_with('/') => (&rest[..at], rest[at..].to_string()),
        // A query right after the host (`http://h?x=1`) still needs the `/` of an absolute path.
        Some(at) => (&rest[..at], format!("/{}", &rest[at..])),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("unclosed '[' in the host"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        Some(port) => port
            .parse()
            .map_err(|_| bad("the port is not a number in 1..=65535"))?,
        None => 80,
    };
    if port == 0 {
        return Err(bad("the port is not a number in 1..=65535"));
    }
    Ok(HookUrl {
        authority,
        host,
        port,
        path,
    })
}

/// Checks that `url` can be used as the `on_publish` hook (an `http://host[:port][/path]` URL), for the
/// configuration check at start.
pub fn check_hook_url(url: &str) -> Result<(), AuthError> {
    parse_hook_url(url).map(|_| ())
}

/// Asks the `on_publish` hook at `url` whether `request` may publish: POSTs it as JSON and reads the answer's
/// status line. A 2xx answer allows the publish; any other status is [`AuthError::Rejected`].
///
/// Fails closed: a connect error, a `timeout` (for the whole exchange) or an unreadable answer is
/// [`AuthError::Hook`], which refuses the publish.
pub async fn call_on_publish(
    url: &str,
    request: &OnPublishRequest,
    timeout: Duration,
) -> Result<(), AuthError> {
    let target = parse_hook_url(url)?;
    let body = serde_json::to_vec(request)
        .map_err(|e| AuthError::Hook(format!("cannot encode the request: {e}")))?;
    let status = tokio::time::timeout(timeout, exchange(&target, &body))
        .await
        .map_err(|_| AuthError::Hook(format!("no answer from {url} within {} ms", timeout.as_millis())))?
        .map_err(|e| AuthError::Hook(format!("{url}: {e}")))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(AuthError::Rejected { status })
    }
}

/// Sends the POST and returns the answer's status code.
async fn exchange(target: &HookUrl<'_>, body: &[u8]) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect((target.host, target.port)).await?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: popline/{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        target.authority,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;

    let mut answer = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    let line_end = loop {
        if let Some(end) = answer.windows(2).position(|pair| pair == b"\r\n") {
            break end;
        }
        if answer.len() >= MAX_HOOK_RESPONSE_BYTES {
            return Err(invalid("no status line in the first 8 KiB of the answer"));
        }
        let room = (MAX_HOOK_RESPONSE_BYTES - answer.len()).min(chunk.len());
        let read = stream.read(&mut chunk[..room]).await?;
        if read == 0 {
            return Err(invalid("connection closed before a status line"));
        }
        answer.extend_from_slice(&chunk[..read]);
    };
    parse_status_line(&answer[..line_end]).ok_or_else(|| invalid("malformed status line"))
}

fn invalid(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// `HTTP/1.x NNN reason` -> `NNN`.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok().filter(|code| (100..600).contains(code))
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            parse_hook_url("http://127.0.0.1:9000/hooks/publish?x=1").unwrap(),
            HookUrl {
                authority: "127.0.0.1:9000",
                host: "127.0.0.1",
                port: 9000,
                path: "/hooks/publish?x=1".to_string()
            }
        );
        let plain = parse_hook_url("HTTP://auth.local").unwrap();
        assert_eq!(
            (plain.host, plain.port, plain.path.as_str()),
            ("auth.local", 80, "/")
        );
        let v6 = parse_hook_url("http://[::1]:81/p#frag").unwrap();
        assert_eq!(
            (v6.authority, v6.host, v6.port, v6.path.as_str()),
            ("[::1]:81", "::1", 81, "/p")
        );
        assert_eq!(parse_hook_url("http://h?x=1").unwrap().path, "/?x=1");

        let https = check_hook_url("https://auth.example/publish").unwrap_err();
        assert!(https.to_string().contains("https is not supported"), "{https}");
        for bad in [
            "ftp://x/",
            "auth.local/publish",
            "http://",
            "http://h:0/",
            "http://h:99999/",
            "http://u:p@h/",
            "http://h/a b",
            "http://h/\r\nX-Evil: 1",
            "http://[::1/",
        ] {
            assert!(check_hook_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 403"), Some(403));
        assert_eq!(parse_status_line(b"HTTP/2 200 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line(b"garbage"), None);
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
}
