//! [`RtmpClient`]: a blocking RTMP client on one TCP connection (rml_rtmp's sans-IO handshake and client
//! session over a `std` socket), for the static relays' worker threads: connect to an app, then publish
//! frames or play a stream. Every wait is bounded by the timeout given.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;

use super::config::RtmpUrl;
use crate::media::{Frame, Track};

/// Why a relay's RTMP connection failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The socket failed (connect, read, write) or the peer closed it.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The RTMP session refused or did not understand something.
    #[error("RTMP: {0}")]
    Rtmp(String),
    /// The server did not answer in time.
    #[error("no answer within {0:?} to {1}")]
    Timeout(Duration, &'static str),
}

fn rtmp(e: impl std::fmt::Debug) -> RelayError {
    RelayError::Rtmp(format!("{e:?}"))
}

/// One outbound RTMP connection.
pub struct RtmpClient {
    socket: TcpStream,
    session: ClientSession,
    events: VecDeque<ClientSessionEvent>,
    read_buf: Vec<u8>,
}

impl std::fmt::Debug for RtmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpClient")
            .field("peer", &self.socket.peer_addr().ok())
            .finish()
    }
}

impl RtmpClient {
    /// Connects to `url`'s server and app: TCP, the RTMP handshake, `connect`.
    pub fn connect(url: &RtmpUrl, timeout: Duration) -> Result<RtmpClient, RelayError> {
        let addr = url
            .authority
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| RelayError::Rtmp(format!("{} resolves to no address", url.authority)))?;
        let mut socket = TcpStream::connect_timeout(&addr, timeout)?;
        socket.set_nodelay(true)?;
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))?;
        let mut handshake = Handshake::new(PeerType::Client);
        socket.write_all(&handshake.generate_outbound_p0_and_p1().map_err(rtmp)?)?;
        let mut buf = vec![0u8; 8192];
        let remaining = loop {
            let n = socket.read(&mut buf)?;
            if n == 0 {
                return Err(RelayError::Io(ErrorKind::UnexpectedEof.into()));
            }
            match handshake.process_bytes(&buf[..n]).map_err(rtmp)? {
                HandshakeProcessResult::InProgress { response_bytes } => socket.write_all(&response_bytes)?,
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    socket.write_all(&response_bytes)?;
                    break remaining_bytes;
                }
            }
        };
        let mut config = ClientSessionConfig::new();
        config.tc_url = Some(format!("rtmp://{}/{}", url.authority, url.app));
        config.chunk_size = 4096;
        let (session, results) = ClientSession::new(config).map_err(rtmp)?;
        let mut client = RtmpClient {
            socket,
            session,
            events: VecDeque::new(),
            read_buf: buf,
        };
        client.apply(results)?;
        if !remaining.is_empty() {
            let results = client.session.handle_input(&remaining).map_err(rtmp)?;
            client.apply(results)?;
        }
        let request = client.session.request_connection(url.app.clone()).map_err(rtmp)?;
        client.apply(vec![request])?;
        client.wait_for(timeout, "connect", |e| match e {
            ClientSessionEvent::ConnectionRequestAccepted => Some(Ok(())),
            ClientSessionEvent::ConnectionRequestRejected { description } => {
                Some(Err(RelayError::Rtmp(format!("connect refused: {description}"))))
            }
            _ => None,
        })?;
        Ok(client)
    }

    /// Asks to publish `stream` (live) and waits for the answer.
    pub fn publish(&mut self, stream: &str, timeout: Duration) -> Result<(), RelayError> {
        let request = self
            .session
            .request_publishing(stream.to_string(), PublishRequestType::Live)
            .map_err(rtmp)?;
        self.apply(vec![request])?;
        self.wait_for(timeout, "publish", |e| {
            matches!(e, ClientSessionEvent::PublishRequestAccepted).then_some(Ok(()))
        })
    }

    /// Asks to play `stream` and waits for the answer.
    pub fn play(&mut self, stream: &str, timeout: Duration) -> Result<(), RelayError> {
        let request = self.session.request_playback(stream.to_string()).map_err(rtmp)?;
        self.apply(vec![request])?;
        self.wait_for(timeout, "play", |e| {
            matches!(e, ClientSessionEvent::PlaybackRequestAccepted).then_some(Ok(()))
        })
    }

    /// Sends one frame of the stream being published (metadata frames are not re-sent: the sequence
    /// headers carry what a decoder needs).
    pub fn send_frame(&mut self, frame: &Frame) -> Result<(), RelayError> {
        let timestamp = RtmpTimestamp::new(frame.dts_ms as u32);
        let result = match frame.track {
            Track::Video => self
                .session
                .publish_video_data(frame.body.clone(), timestamp, false),
            Track::Audio => self
                .session
                .publish_audio_data(frame.body.clone(), timestamp, false),
            Track::Data => return Ok(()),
        }
        .map_err(rtmp)?;
        self.apply(vec![result])
    }

    /// Ends a publication cleanly: `FCUnpublish` and `deleteStream`, then the write side is shut and what the
    /// server still sends is read (at most `wait`) before the socket closes. Closing with unread input would
    /// reset the connection and lose the last frames still in flight.
    pub fn finish_publishing(mut self, wait: Duration) -> Result<(), RelayError> {
        if let Ok(result) = self.session.stop_publishing() {
            self.apply(result)?;
        }
        self.socket.shutdown(std::net::Shutdown::Write)?;
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            self.socket.set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))?;
            match self.socket.read(&mut self.read_buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The next session event, reading for at most `wait` (`None`: nothing came).
    pub fn next_event(&mut self, wait: Duration) -> Result<Option<ClientSessionEvent>, RelayError> {
        if let Some(event) = self.events.pop_front() {
            return Ok(Some(event));
        }
        self.read_once(wait)?;
        Ok(self.events.pop_front())
    }

    /// Reads what the server sent (acknowledgements, pings) without waiting more than `wait`.
    pub fn poll_input(&mut self, wait: Duration) -> Result<(), RelayError> {
        self.read_once(wait)
    }

    fn read_once(&mut self, wait: Duration) -> Result<(), RelayError> {
        self.socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        match self.socket.read(&mut self.read_buf) {
            Ok(0) => Err(RelayError::Io(ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                let results = self.session.handle_input(&self.read_buf[..n]).map_err(rtmp)?;
                self.apply(results)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn apply(&mut self, results: Vec<ClientSessionResult>) -> Result<(), RelayError> {
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => self.socket.write_all(&packet.bytes)?,
                ClientSessionResult::RaisedEvent(event) => self.events.push_back(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    fn wait_for<T>(
        &mut self,
        timeout: Duration,
        what: &'static str,
        mut check: impl FnMut(&ClientSessionEvent) -> Option<Result<T, RelayError>>,
    ) -> Result<T, RelayError> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(event) = self.events.pop_front() {
                if let Some(answer) = check(&event) {
                    return answer;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RelayError::Timeout(timeout, what));
            }
            self.read_once(left)?;
        }
    }
}
