//! A minimal scripted RTMP client (rml_rtmp's sans-IO ClientSession over a blocking socket), for tests that
//! need control ffmpeg does not give: a player that stops reading, a publisher that sends raw bytes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};

/// Runs the client side of the RTMP handshake on `socket`; returns what the server sent after it.
pub fn handshake(socket: &mut TcpStream) -> Vec<u8> {
    let mut handshake = Handshake::new(PeerType::Client);
    socket
        .write_all(&handshake.generate_outbound_p0_and_p1().unwrap())
        .unwrap();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "server closed during handshake");
        match handshake.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).unwrap()
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                socket.write_all(&response_bytes).unwrap();
                return remaining_bytes;
            }
        }
    }
}

/// A connected, handshaken RTMP client.
pub struct Client {
    pub socket: TcpStream,
    pub session: ClientSession,
    pub events: Vec<ClientSessionEvent>,
}

impl Client {
    /// Connects, handshakes and sends `connect(app)`; waits for the server to accept it.
    pub fn connect(addr: SocketAddr, app: &str, recv_buffer: Option<usize>) -> Client {
        let socket = TcpStream::connect(addr).unwrap();
        if let Some(bytes) = recv_buffer {
            socket2::SockRef::from(&socket)
                .set_recv_buffer_size(bytes)
                .unwrap();
        }
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        socket.set_nodelay(true).unwrap();
        let mut socket = socket;
        let remaining = handshake(&mut socket);
        let (session, results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        let mut client = Client {
            socket,
            session,
            events: Vec::new(),
        };
        client.apply(results);
        if !remaining.is_empty() {
            let results = client.session.handle_input(&remaining).unwrap();
            client.apply(results);
        }
        let result = client.session.request_connection(app.to_string()).unwrap();
        client.apply(vec![result]);
        client.wait_for(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted));
        client
    }

    fn apply(&mut self, results: Vec<ClientSessionResult>) {
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => {
                    self.socket.write_all(&packet.bytes).unwrap()
                }
                ClientSessionResult::RaisedEvent(event) => self.events.push(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    /// Reads until an event matching `check` arrives (panics after 10 s or on close).
    pub fn wait_for(&mut self, check: impl Fn(&ClientSessionEvent) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 65536];
        loop {
            if let Some(position) = self.events.iter().position(&check) {
                self.events.drain(..=position);
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for an RTMP event");
            let n = self.socket.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "server closed the connection; events so far: {:?}",
                self.events
            );
            let results = self.session.handle_input(&buf[..n]).unwrap();
            self.apply(results);
        }
    }

    /// Asks to play `stream`; waits for the server to accept.
    pub fn play(&mut self, stream: &str) {
        let results = self.session.request_playback(stream.to_string()).unwrap();
        self.apply(vec![results]);
        self.wait_for(|e| matches!(e, ClientSessionEvent::PlaybackRequestAccepted));
    }

    /// Sends the publish request for `stream` (createStream first: the session sends `publish` once the
    /// server answers it).
    fn request_publish(&mut self, stream: &str) {
        let result = self
            .session
            .request_publishing(stream.to_string(), PublishRequestType::Live)
            .unwrap();
        self.apply(vec![result]);
    }

    /// Asks to publish `stream`; returns whether the server accepted (false if it refused or closed).
    pub fn try_publish(&mut self, stream: &str) -> bool {
        self.request_publish(stream);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if self
                .events
                .iter()
                .any(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
            {
                return true;
            }
            match self.socket.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => match self.session.handle_input(&buf[..n]) {
                    Ok(results) => self.apply(results),
                    Err(_) => return false,
                },
            }
        }
        false
    }

    /// Asks to publish `stream` and reads everything the server sends until it closes the connection (at
    /// most about 5 s); returns those bytes, lossily as text: a refusal's status code and reason are in them.
    pub fn publish_until_closed(&mut self, stream: &str) -> String {
        self.request_publish(stream);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65536];
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.socket.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    // The session sends `publish` once the server answered `createStream`.
                    match self.session.handle_input(&buf[..n]) {
                        Ok(results) => self.apply(results),
                        Err(_) => break,
                    }
                }
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    /// Whether the server closed the connection within `limit` (reading and discarding what it sends).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        super::closed_within(&mut self.socket, limit)
    }

    /// One read (up to 50 ms) fed to the session; `false` once the server closed the connection.
    fn pump(&mut self, buf: &mut [u8]) -> bool {
        self.socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        match self.socket.read(buf) {
            Ok(0) => false,
            Ok(n) => {
                let results = self.session.handle_input(&buf[..n]).unwrap();
                self.apply(results);
                true
            }
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

/// What a player received in a while.
#[derive(Debug, Default, Clone, Copy)]
pub struct Received {
    pub video_frames: usize,
    pub audio_frames: usize,
    /// The first video message after the sequence header was a keyframe.
    pub started_on_key: Option<bool>,
}

impl Client {
    /// Reads media for `duration`, counting frames.
    pub fn read_media(&mut self, duration: Duration) -> Received {
        let deadline = Instant::now() + duration;
        let mut buf = vec![0u8; 65536];
        let mut received = Received::default();
        while Instant::now() < deadline {
            if !self.pump(&mut buf) {
                break;
            }
            for event in self.events.drain(..) {
                match event {
                    ClientSessionEvent::VideoDataReceived { data, .. } => {
                        // AVC: byte 1 == 0 is the sequence header, which is not a frame.
                        if data.get(1) == Some(&0) {
                            continue;
                        }
                        if received.started_on_key.is_none() {
                            received.started_on_key = Some(data.first().is_some_and(|b| b >> 4 == 1));
                        }
                        received.video_frames += 1;
                    }
                    ClientSessionEvent::AudioDataReceived { .. } => received.audio_frames += 1,
                    _ => {}
                }
            }
        }
        received
    }
}

/// One media message a player received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub video: bool,
    pub timestamp: u32,
    pub data: bytes::Bytes,
}

impl Client {
    /// Publishes one video (`video`) or audio message with a raw 32-bit timestamp.
    pub fn send_media(&mut self, video: bool, data: bytes::Bytes, timestamp: u32) {
        let timestamp = rml_rtmp::time::RtmpTimestamp::new(timestamp);
        let result = if video {
            self.session.publish_video_data(data, timestamp, false)
        } else {
            self.session.publish_audio_data(data, timestamp, false)
        };
        self.apply(vec![result.unwrap()]);
    }

    /// Reads media messages until `count` arrived or `limit` passed.
    pub fn collect_media(&mut self, count: usize, limit: Duration) -> Vec<Message> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        let mut messages = Vec::new();
        while messages.len() < count && Instant::now() < deadline {
            if !self.pump(&mut buf) {
                break;
            }
            for event in self.events.drain(..) {
                match event {
                    ClientSessionEvent::VideoDataReceived { data, timestamp } => messages.push(Message {
                        video: true,
                        timestamp: timestamp.value,
                        data,
                    }),
                    ClientSessionEvent::AudioDataReceived { data, timestamp } => messages.push(Message {
                        video: false,
                        timestamp: timestamp.value,
                        data,
                    }),
                    _ => {}
                }
            }
        }
        messages
    }
}
