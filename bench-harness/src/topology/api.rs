//! Requests to a node's admin API from inside its namespace (a thread that enters it, see
//! [`crate::compare::ns_thread`]): HTTP/1.1, one connection per request, the bearer token.

use crate::compare::ns_thread;
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a request may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// `METHOD path` (with a JSON `body`) to the API at `http` in namespace `ns`: the status and the body.
pub fn request(
    ns: &str,
    http: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.map_or(0, str::len),
        body.unwrap_or("")
    );
    let call = ns_thread::spawn_in(ns, "topology-api", move || {
        let mut s = TcpStream::connect_timeout(&http, TIMEOUT).context("connecting to the API")?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.write_all(request.as_bytes())?;
        let mut text = String::new();
        s.read_to_string(&mut text).context("reading the API's answer")?;
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
        Ok((status, body))
    })?;
    Ok(ns_thread::join(call, "admin API request")?.0)
}

/// How many links of a `GET /api/v1/links` answer are `up`.
pub fn links_up(body: &str) -> usize {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v["links"]
                .as_array()
                .map(|links| links.iter().filter(|l| l["state"] == "up").count())
        })
        .unwrap_or(0)
}
