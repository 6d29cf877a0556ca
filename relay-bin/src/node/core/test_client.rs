//! A scripted RTMP client (rml_rtmp's client handshake and session) standing in for a publisher or a player
//! on one core's connection, for the node's sans-IO tests: bytes go in and out through buffers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult};
use rml_rtmp::sessions::{ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult};

use crate::node::clients::Token;

/// An AVC sequence header (AVCDecoderConfigurationRecord with one SPS and one PPS).
pub(crate) const SEQ_HEADER: &[u8] = &[
    0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x04, 0x67, 0x64, 0x00, 0x1f, 0x01, 0x00,
    0x04, 0x68, 0xee, 0x3c, 0x80,
];
/// An IDR frame (one NAL unit, type 5).
pub(crate) const KEYFRAME: &[u8] = &[0x17, 0x01, 0, 0, 0, 0, 0, 0, 5, 0x65, 0x88, 0x84, 0x00, 0x10];
/// A reference P frame (one NAL unit, type 1, nal_ref_idc 2).
pub(crate) const INTER: &[u8] = &[0x27, 0x01, 0, 0, 0, 0, 0, 0, 5, 0x41, 0x9a, 0x00, 0x00, 0x00];

/// A scripted RTMP client on one core's connection.
pub(crate) struct Client {
    pub(crate) core: usize,
    pub(crate) token: Token,
    pub(crate) handshake: Option<Handshake>,
    pub(crate) session: Option<ClientSession>,
    pub(crate) events: Vec<ClientSessionEvent>,
    /// Bytes for the server, not yet delivered.
    pub(crate) outbox: Vec<u8>,
    pub(crate) closed: bool,
    /// Takes what the node writes; `false` stands for a peer that stopped reading (its bytes stay queued).
    pub(crate) reading: bool,
}

impl Client {
    pub(crate) fn receive(&mut self, bytes: &[u8]) {
        if let Some(handshake) = self.handshake.as_mut() {
            match handshake.process_bytes(bytes).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.outbox.extend_from_slice(&response_bytes)
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.outbox.extend_from_slice(&response_bytes);
                    self.handshake = None;
                    let (session, results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
                    self.session = Some(session);
                    self.apply(results);
                    if !remaining_bytes.is_empty() {
                        self.receive(&remaining_bytes);
                    }
                }
            }
            return;
        }
        let results = self.session.as_mut().unwrap().handle_input(bytes).unwrap();
        self.apply(results);
    }

    pub(crate) fn apply(&mut self, results: Vec<ClientSessionResult>) {
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => self.outbox.extend_from_slice(&packet.bytes),
                ClientSessionResult::RaisedEvent(event) => self.events.push(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    pub(crate) fn session(&mut self) -> &mut ClientSession {
        self.session.as_mut().expect("handshake not complete")
    }

    pub(crate) fn saw(&self, check: impl Fn(&ClientSessionEvent) -> bool) -> bool {
        self.events.iter().any(check)
    }

    /// The video messages received so far: (timestamp, first byte of the body).
    pub(crate) fn video(&self) -> Vec<(u32, u8)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientSessionEvent::VideoDataReceived { data, timestamp } => {
                    Some((timestamp.value, data.first().copied().unwrap_or(0)))
                }
                _ => None,
            })
            .collect()
    }
}
