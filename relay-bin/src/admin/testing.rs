//! Test helpers: a fake [`NodeControl`] that records what it is asked, and a tiny blocking HTTP client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::control::{ClientId, ClientInfo, ClientRole, NodeControl, NodeStats, StreamInfo};
use crate::stream_key::StreamKey;

/// A node with one stream (`live/cam`, one viewer) and one client (id 7), recording kicks.
#[derive(Default)]
pub struct FakeControl {
    /// Streams passed to `kick_stream`, in order.
    pub kicked_streams: Mutex<Vec<StreamKey>>,
    /// Clients passed to `kick_client`, in order.
    pub kicked_clients: Mutex<Vec<ClientId>>,
    /// When set, `stats` sleeps for two seconds (to test the API's deadline).
    pub stall: AtomicBool,
}

impl NodeControl for FakeControl {
    fn streams(&self) -> Vec<StreamInfo> {
        vec![StreamInfo {
            stream: StreamKey::new("live", "cam").unwrap(),
            owner_core: 1,
            publisher: Some(ClientId(7)),
            origin: None,
            hops: 0,
            home: None,
            viewers: 1,
            hls_sessions: 0,
            bytes_out: 80_000,
            frames_in: 250,
            bytes_in: 100_000,
            gop_cache_frames: 50,
            publishing_ms: 10_000,
            media: Default::default(),
        }]
    }

    fn clients(&self) -> Vec<ClientInfo> {
        vec![ClientInfo {
            id: ClientId(7),
            role: ClientRole::Publisher,
            stream: Some(StreamKey::new("live", "cam").unwrap()),
            peer: "127.0.0.1:50000".parse().unwrap(),
            core: 0,
            connected_ms: 10_500,
            bytes_in: 100_500,
            bytes_out: 3_000,
            frames_dropped: 0,
            queue_bytes: 0,
            protocol: "rtmp",
        }]
    }

    fn stats(&self) -> NodeStats {
        if self.stall.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(2));
        }
        NodeStats {
            backend: "epoll",
            cores: 2,
            uptime_s: 60,
            connections: 2,
            publishers: 1,
            viewers: 1,
            frames_in: 250,
            ..NodeStats::default()
        }
    }

    fn kick_client(&self, id: ClientId) -> bool {
        self.kicked_clients.lock().unwrap().push(id);
        id == ClientId(7)
    }

    fn kick_stream(&self, stream: &StreamKey) -> u64 {
        self.kicked_streams.lock().unwrap().push(stream.clone());
        2
    }
}

/// An HTTP answer: status, headers (names lowercased) and body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body (the server closes the connection after it).
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request (`Connection: close`) and reads the whole answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    if let Some(body) = body {
        stream.write_all(body.as_bytes()).unwrap();
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}
