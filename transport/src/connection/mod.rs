//! One connection to a peer: handshake state, packet protection, reliability, congestion control, and the
//! frames it sends and receives. Driven entirely by its [`crate::Endpoint`] with `now` passed in.

pub mod ack_tracker;
pub mod reassembly;
pub mod recovery;
pub mod rtt;
pub mod send_queue;
pub mod stats;
pub mod train;

use self::ack_tracker::AckTracker;
use self::reassembly::{DeliveredFrame, FragmentOutcome, Gap, Reassembler, RecvOutput};
use self::recovery::{Chunk, Recovery, SentRecord};
use self::send_queue::{PathTiming, PushError, SendQueue};
use self::stats::ConnectionStats;
use crate::config::ConnectionConfig;
use crate::congestion::{AckEvent, AckedPacket, Controller, LostPacket, Pacer, RttSnapshot, SentPacket};
use crate::crypto::{InitiatorHandshake, PacketKey, ReplayWindow, SessionKeys};
use crate::media::MediaFrame;
use crate::wire::frame::{
    encode_close, encode_path_challenge, encode_path_response, encode_ping, encode_tail_probe, AckFrame,
    DroppedNotice, Frame, Frames, PATH_FRAME_LEN,
};
use crate::wire::packet::{self, DataHeader, DATA_HEADER_LEN};
use bytes::BytesMut;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Records an ACK's scratch vectors keep between ACKs; more is given back (a one-off huge ACK does not pin
/// its memory for the connection's life).
const ACK_SCRATCH_KEEP: usize = 1024;

/// Vectors an ACK is resolved into, kept from one ACK to the next so that handling one allocates nothing.
#[derive(Debug, Default)]
struct AckScratch {
    outcome: recovery::AckOutcome,
    acked_cc: Vec<AckedPacket>,
    lost_cc: Vec<LostPacket>,
}

impl AckScratch {
    /// Empties the vectors (dropping the records and their chunks), trims oversized ones and forgets the RTT
    /// sample.
    fn recycle(&mut self) {
        fn trim<T>(v: &mut Vec<T>) {
            v.clear();
            if v.capacity() > ACK_SCRATCH_KEEP {
                v.shrink_to(ACK_SCRATCH_KEEP);
            }
        }
        trim(&mut self.outcome.acked);
        trim(&mut self.outcome.lost);
        trim(&mut self.acked_cc);
        trim(&mut self.lost_cc);
        self.outcome.rtt_sample = None;
    }
}

/// The smallest fragment frame (a one-byte fragment of a tiny frame): a packet with less room left than this
/// is full, and is padded to its full size.
const MIN_FRAGMENT_FRAME_LEN: usize = 10;
/// Longest wait between handshake retransmissions.
const MAX_HANDSHAKE_RETRY: Duration = Duration::from_secs(2);
/// Shortest wait before a tail probe (a later frame that leaves sooner makes the probe unnecessary).
const MIN_TAIL_PROBE_DELAY: Duration = Duration::from_millis(2);
/// To an address not yet validated, send at most this many times the bytes received from it (RFC 9000
/// section 8).
const AMPLIFICATION_FACTOR: u64 = 3;
/// PATH_RESPONSEs waiting to be sent are capped at this many (a peer's extra challenges are not answered).
const MAX_PATH_RESPONSES: usize = 4;

/// A path validation in progress (RFC 9000 section 8.2): the peer's newest packet came from a new address.
#[derive(Debug, Clone, Copy)]
struct PathChallenge {
    /// What the peer must echo in a PATH_RESPONSE.
    data: u64,
    /// The address to go back to if validation fails, and whether it was validated.
    prev_remote: SocketAddr,
    prev_validated: bool,
    /// When to send the challenge (again).
    next_send: Instant,
    /// When to give up on the new path.
    deadline: Instant,
}

/// Something the application should know about a connection.
#[derive(Debug, Clone)]
pub enum Event {
    /// The handshake completed; carries the peer's static public key. A client reports it on reading message 2;
    /// a server on the client's first authenticated packet (message 1 alone can be a replay).
    Connected {
        /// The peer's authenticated static public key.
        peer_static: [u8; 32],
    },
    /// A complete, decodable frame arrived.
    Frame(DeliveredFrame),
    /// Frames were lost and decoding resumed after them.
    Gap(Gap),
    /// The connection ended.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Nothing was heard from the peer for the idle timeout.
    IdleTimeout,
    /// The handshake did not complete after every retry.
    HandshakeTimeout,
    /// The peer closed with a code and reason.
    PeerClosed {
        /// Code.
        code: u64,
        /// Reason text.
        reason: String,
    },
    /// This side closed.
    LocalClose,
    /// The client started its handshake over; this half-open connection was replaced by the new one.
    HandshakeRestarted,
}

/// Which side of the handshake this connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The initiator.
    Client,
    /// The responder.
    Server,
}

enum Handshake {
    Client {
        initiator: Option<Box<InitiatorHandshake>>,
        message1: Vec<u8>,
        cookie: Vec<u8>,
        next_send: Instant,
        interval: Duration,
        attempts: u32,
    },
    Server {
        message1: Vec<u8>,
        message2: Vec<u8>,
        resend: bool,
    },
    Done,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handshake::Client { attempts, .. } => write!(f, "Client {{ attempts: {attempts} }}"),
            Handshake::Server { resend, .. } => write!(f, "Server {{ resend: {resend} }}"),
            Handshake::Done => write!(f, "Done"),
        }
    }
}

#[derive(Debug)]
struct Keys {
    send: PacketKey,
    send_phase: bool,
    packets_in_phase: u64,
    acked_in_phase: bool,
    first_pn_in_phase: u64,
    recv: PacketKey,
    recv_prev: Option<PacketKey>,
    recv_next: Option<PacketKey>,
    recv_phase: bool,
    recv_first_pn_in_phase: u64,
    /// Whether we sent an ACK for a packet of the peer's current key phase: until then the peer may not
    /// move to another phase (its sender waits for that ACK, as ours does).
    recv_update_acked: bool,
}

/// One connection.
#[derive(Debug)]
pub struct Connection {
    side: Side,
    config: ConnectionConfig,
    local_cid: u64,
    remote_cid: u64,
    remote: SocketAddr,
    peer_static: [u8; 32],
    handshake: Handshake,
    keys: Option<Keys>,
    replay: ReplayWindow,
    next_pn: u64,
    recovery: Recovery,
    cc: Box<dyn Controller>,
    pacer: Pacer,
    acks: AckTracker,
    sendq: SendQueue,
    recv: Reassembler,
    events: VecDeque<Event>,
    stats: ConnectionStats,
    last_heard: Instant,
    last_eliciting_sent: Instant,
    ping_pending: bool,
    closing: Option<(u64, String)>,
    closed: bool,
    next_pacing: Option<Instant>,
    /// When to send a tail probe: a TAIL_PROBE after the last packet of a burst, so that the receiver sees a
    /// gap (and NAKs) at once if that packet was lost, instead of waiting for the next frame. It is not
    /// ack-eliciting: a burst that arrived whole costs no ACK more (and the sender no wake-up for it).
    tail_probe_at: Option<Instant>,
    /// The tail probe is due: the next packet carries it (one with frame data makes it unnecessary).
    tail_probe_pending: bool,
    /// The frame whose fragments are arriving now (see [`train`]).
    incoming_train: train::TrainTracker,
    /// Startup priming (see [`ConnectionConfig::startup_priming`]): `None` until the first packet after the
    /// handshake, then the instant priming stops at the latest.
    priming_until: Option<Instant>,
    /// Reused by every ACK (and loss timer) to resolve what it covers.
    ack_scratch: AckScratch,
    /// Whether `remote` is a validated address: the client's (it chose the server's address); the server's
    /// once a cookie or the client's first authenticated packet proved it; a new path's once it answered our
    /// PATH_CHALLENGE. Until then at most [`AMPLIFICATION_FACTOR`] x what came from it is sent to it.
    path_validated: bool,
    /// Bytes received from and sent to `remote` while it is not validated.
    amp_received: u64,
    amp_sent: u64,
    /// Whether the current stop at the amplification limit was counted.
    amp_limit_counted: bool,
    /// A path validation in progress.
    challenge: Option<PathChallenge>,
    /// PATH_RESPONSEs owed to the peer.
    path_responses: VecDeque<u64>,
}

impl Connection {
    fn new(
        now: Instant,
        side: Side,
        config: ConnectionConfig,
        local_cid: u64,
        remote: SocketAddr,
        handshake: Handshake,
    ) -> Self {
        let room = config.payload_room().max(64) as u32;
        Connection {
            side,
            local_cid,
            remote_cid: 0,
            remote,
            peer_static: [0; 32],
            handshake,
            keys: None,
            replay: ReplayWindow::new(),
            next_pn: 0,
            recovery: Recovery::new(config.initial_rtt),
            cc: config.congestion.build(now),
            pacer: Pacer::new(config.pacer_burst_packets).with_round(config.pacing_round),
            acks: AckTracker::new(config.ack_every, config.max_ack_delay, Duration::from_millis(20))
                .with_ack_interval(config.ack_interval),
            sendq: SendQueue::filling(room, config.max_unsent_bytes),
            recv: Reassembler::new(config.recv_limits),
            events: VecDeque::new(),
            stats: ConnectionStats::default(),
            last_heard: now,
            last_eliciting_sent: now,
            priming_until: None,
            ack_scratch: AckScratch::default(),
            ping_pending: false,
            closing: None,
            closed: false,
            next_pacing: None,
            tail_probe_at: None,
            tail_probe_pending: false,
            incoming_train: train::TrainTracker::default(),
            path_validated: true,
            amp_received: 0,
            amp_sent: 0,
            amp_limit_counted: false,
            challenge: None,
            path_responses: VecDeque::new(),
            config,
        }
    }

    /// A client connection that has built its first handshake message.
    pub(crate) fn client(
        now: Instant,
        config: ConnectionConfig,
        local_cid: u64,
        remote: SocketAddr,
        remote_static: [u8; 32],
        initiator: InitiatorHandshake,
        message1: Vec<u8>,
    ) -> Self {
        let interval = config.handshake_retry;
        let mut c = Connection::new(
            now,
            Side::Client,
            config,
            local_cid,
            remote,
            Handshake::Client {
                initiator: Some(Box::new(initiator)),
                message1,
                cookie: Vec::new(),
                next_send: now,
                interval,
                attempts: 0,
            },
        );
        c.peer_static = remote_static;
        c
    }

    /// A server connection whose handshake response is ready to send. `validated`: a cookie proved the
    /// client's address; if not, the Initial's `initial_len` bytes are what the amplification limit allows
    /// three times over until the client's first authenticated packet.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn server(
        now: Instant,
        config: ConnectionConfig,
        local_cid: u64,
        remote_cid: u64,
        remote: SocketAddr,
        peer_static: [u8; 32],
        keys: SessionKeys,
        message1: Vec<u8>,
        message2: Vec<u8>,
        validated: bool,
        initial_len: usize,
    ) -> Self {
        let mut c = Connection::new(
            now,
            Side::Server,
            config,
            local_cid,
            remote,
            Handshake::Server {
                message1,
                message2,
                resend: true,
            },
        );
        c.remote_cid = remote_cid;
        c.peer_static = peer_static;
        c.path_validated = validated;
        c.amp_received = initial_len as u64;
        c.install_keys(keys);
        // Connected only once the client proves it holds the keys (its first authenticated packet): message 1
        // alone proves nothing, as anyone who saw it can replay it.
        c
    }

    fn install_keys(&mut self, keys: SessionKeys) {
        #[cfg(feature = "fuzzing")]
        let keys = if self.config.test_aead {
            SessionKeys {
                send: PacketKey::test_mode(),
                recv: PacketKey::test_mode(),
            }
        } else {
            keys
        };
        let (send, recv) = if self.config.encryption {
            (keys.send, keys.recv)
        } else {
            (PacketKey::plaintext(), PacketKey::plaintext())
        };
        self.keys = Some(Keys {
            send,
            send_phase: false,
            packets_in_phase: 0,
            acked_in_phase: false,
            first_pn_in_phase: 0,
            recv,
            recv_prev: None,
            recv_next: None,
            recv_phase: false,
            recv_first_pn_in_phase: 0,
            recv_update_acked: true,
        });
    }

    /// This side of the handshake.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The peer's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Our connection id (what the peer puts in `dst_cid`).
    pub fn local_cid(&self) -> u64 {
        self.local_cid
    }

    /// The peer's static public key (the one we dialled, or the one that authenticated to us).
    pub fn peer_static(&self) -> [u8; 32] {
        self.peer_static
    }

    /// True once keys are installed and the handshake finished on this side.
    pub fn is_established(&self) -> bool {
        self.keys.is_some() && !self.closed
    }

    /// True once the connection ended and its last packet left.
    pub fn is_closed(&self) -> bool {
        self.closed && self.closing.is_none()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        match self.recv.poll()? {
            RecvOutput::Frame(f) => Some(Event::Frame(f)),
            RecvOutput::Gap(g) => Some(Event::Gap(g)),
        }
    }

    /// Queues a media frame on a stream; returns its sequence number.
    pub fn send_frame(&mut self, stream: u32, frame: MediaFrame) -> Result<u64, PushError> {
        self.sendq.push(stream, frame)
    }

    /// Bytes queued and not yet sent once (for applications that pace their own bulk input).
    pub fn unsent_bytes(&self) -> u64 {
        self.sendq.unsent_bytes()
    }

    /// Starts closing with a code and reason.
    pub fn close(&mut self, code: u64, reason: &str) {
        if !self.closed {
            self.closing = Some((code, reason.to_owned()));
            self.closed = true;
            self.events.push_back(Event::Closed {
                reason: CloseReason::LocalClose,
            });
        }
    }

    fn terminate(&mut self, reason: CloseReason) {
        if !self.closed {
            tracing::info!(remote = %self.remote, ?reason, "connection closed");
            self.closed = true;
            self.events.push_back(Event::Closed { reason });
        }
    }

    /// A snapshot of the stats.
    pub fn stats(&self) -> ConnectionStats {
        let mut s = self.stats.clone();
        s.rtt = self.recovery.rtt.smoothed();
        s.min_rtt = self.recovery.rtt.min();
        s.congestion = self.cc.stats();
        s.congestion_phase = self.cc.phase();
        s.bytes_in_flight = self.recovery.bytes_in_flight();
        s.send = self.sendq.stats.clone();
        s.recv = self.recv.stats;
        s
    }

    /// Bytes charged for frames being received (see [`reassembly::Reassembler::buffered_bytes`]).
    pub fn recv_buffered_bytes(&self) -> u64 {
        self.recv.buffered_bytes()
    }

    /// Sets how much more the endpoint-wide receive budget lets this connection hold.
    pub(crate) fn set_recv_room(&mut self, room: u64) {
        self.recv.set_endpoint_room(room);
    }

    /// One stream's receive-side counters, if the peer has sent on the stream.
    pub fn stream_recv_stats(&self, stream: u32) -> Option<reassembly::RecvStats> {
        self.recv.stream_stats(stream).copied()
    }

    /// One stream's send-side counters, if the stream has sent anything.
    pub fn stream_send_stats(&self, stream: u32) -> Option<send_queue::SendStats> {
        self.sendq.stream_stats(stream).cloned()
    }

    /// Datagrams the peer is in the middle of sending (what is left of the frame whose fragments are
    /// arriving, while its latest fragment came within the ACK interval) and how long until the last should be
    /// in, at most the ACK interval (see [`train`]).
    pub fn train_hint(&self, now: Instant) -> Option<(u32, Duration)> {
        self.incoming_train.hint(now, self.config.ack_interval)
    }

    /// The longest a short train's ACK is held (see [`AckTracker::hold_for_train`]): `max_ack_delay`, which
    /// the sender's timers allow for, and a quarter of the RTT, so that a short path's window is not held up.
    fn max_train_hold(&self) -> Duration {
        self.config.max_ack_delay.min(self.recovery.rtt.smoothed() / 4)
    }

    /// When the arriving train should be in, with an ACK interval's slack (a paced train arrives in rounds,
    /// not evenly), if the whole train fits in `max_hold` ([`Self::max_train_hold`]); `None` for a long train
    /// or none.
    fn short_train_end(&self, now: Instant, max_hold: Duration) -> Option<Instant> {
        let eta = self.incoming_train.eta(now, self.config.ack_interval)?;
        let end = eta.end.checked_add(self.config.ack_interval)?;
        (end.saturating_duration_since(eta.first_at) <= max_hold).then_some(end)
    }

    /// The driver handed over every datagram one wake-up brought (see [`AckTracker::on_receive_batch_end`]).
    pub fn on_receive_batch_end(&mut self, now: Instant) {
        if !self.closed && self.keys.is_some() {
            self.acks.on_receive_batch_end(now);
        }
    }

    fn tail_probe_delay(&self) -> Duration {
        (self.recovery.rtt.min() / 16).max(MIN_TAIL_PROBE_DELAY)
    }

    fn timing(&self) -> PathTiming {
        let rtt = &self.recovery.rtt;
        let srtt = rtt.smoothed();
        // One-way delay: half the RTT, the queueing part included. A repair round is how long after sending a
        // packet we can know it was lost and send its repair: the loss-detection time threshold (RTT plus the
        // reordering allowance),
        // the RTT's variation, the peer's ACK delay, and the tail probe's delay (a frame's last packet is
        // followed by a probe that reveals its loss).
        PathTiming {
            one_way: srtt / 2,
            repair_round: srtt
                + self.recovery.reorder_allowance()
                + rtt.var()
                + self.config.max_ack_delay
                + self.tail_probe_delay(),
        }
    }

    // ----- receiving -----

    /// Handles a Retry packet (client only).
    pub(crate) fn handle_retry(&mut self, now: Instant, cookie: &[u8]) {
        if let Handshake::Client {
            cookie: c, next_send, ..
        } = &mut self.handshake
        {
            // The newest cookie wins (a forged Retry must not pin a bad one), but only the first one makes the
            // Initial leave at once: Retries cannot make the client send faster than its retry schedule.
            let first = c.is_empty();
            *c = cookie.to_vec();
            if first {
                *next_send = now;
            }
        }
    }

    /// Handles a Handshake packet (client only).
    pub(crate) fn handle_handshake(&mut self, now: Instant, src_cid: u64, message: &[u8]) {
        let Handshake::Client { initiator, .. } = &mut self.handshake else {
            return;
        };
        let Some(init) = initiator.take() else { return };
        match init.finish(message) {
            Ok((keys, _payload)) => {
                self.remote_cid = src_cid;
                self.handshake = Handshake::Done;
                self.install_keys(keys);
                self.last_heard = now;
                // Confirm to the server at once so it can drop its handshake state.
                self.ping_pending = true;
                tracing::debug!(remote = %self.remote, "handshake complete");
                let peer_static = self.peer_static;
                self.events.push_back(Event::Connected { peer_static });
            }
            Err(e) => {
                // The initiator state is spent: the endpoint starts a fresh handshake (a forged or corrupted
                // response must not leave the client unable to ever connect).
                tracing::debug!(remote = %self.remote, error = %e, "handshake response refused");
                self.stats.auth_failures += 1;
            }
        }
    }

    /// True when the client's handshake state was spent on a bad response and must be restarted.
    pub(crate) fn wants_new_handshake(&self) -> bool {
        matches!(&self.handshake, Handshake::Client { initiator: None, .. })
    }

    /// Installs a fresh handshake (client only), keeping the cookie and the attempt count.
    pub(crate) fn restart_handshake(&mut self, now: Instant, init: InitiatorHandshake, msg1: Vec<u8>) {
        if let Handshake::Client {
            initiator,
            message1,
            next_send,
            ..
        } = &mut self.handshake
        {
            *initiator = Some(Box::new(init));
            *message1 = msg1;
            *next_send = now;
        }
    }

    /// The client sent an Initial again (server only). The same message means our reply was lost: send it
    /// again and return true. A different one means the client restarted its handshake: return false, and
    /// the endpoint replaces this half-open connection. Once confirmed, Initials are ignored (true).
    pub(crate) fn handle_repeated_initial(&mut self, message: &[u8], datagram_len: usize) -> bool {
        match &mut self.handshake {
            Handshake::Server { message1, resend, .. } if message1.as_slice() == message => {
                *resend = true;
                if !self.path_validated {
                    self.amp_received += datagram_len as u64;
                    self.amp_limit_counted = false;
                }
                true
            }
            Handshake::Server { .. } => false,
            _ => true,
        }
    }

    /// Handles a data packet addressed to this connection. `datagram` holds the whole packet.
    pub(crate) fn handle_data(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        header: DataHeader,
        mut datagram: BytesMut,
    ) {
        let wire_len = datagram.len() as u64;
        let Some(keys) = self.keys.as_mut() else {
            self.stats.auth_failures += 1;
            return;
        };
        let pn = header.packet_number;
        if pn > crate::wire::codec::VARINT_MAX {
            // Never sent by a conforming peer (and not expressible in an ACK).
            self.stats.malformed += 1;
            return;
        }
        let newest = self.replay.highest().is_none_or(|h| pn > h);
        if !self.replay.check(pn) {
            self.stats.replays += 1;
            return;
        }
        let opened = if header.key_phase == keys.recv_phase {
            keys.recv.open(pn, &mut datagram, DATA_HEADER_LEN).ok()
        } else if pn < keys.recv_first_pn_in_phase {
            keys.recv_prev
                .as_ref()
                .and_then(|k| k.open(pn, &mut datagram, DATA_HEADER_LEN).ok())
        } else if !keys.recv_update_acked {
            // A second update before we acknowledged the first: refused (at most one key generation per
            // round trip, whatever the peer sends).
            self.stats.peer_key_updates_refused += 1;
            return;
        } else {
            // The peer moved to the next key generation. The next key is derived once and kept, so forged
            // packets with a flipped phase bit cost one AEAD check each, not a key derivation.
            let next = match keys.recv_next.take() {
                Some(k) => Some(k),
                None => keys.recv.next_generation().ok(),
            };
            match next {
                Some(next) => match next.open(pn, &mut datagram, DATA_HEADER_LEN) {
                    Ok(len) => {
                        let prev = std::mem::replace(&mut keys.recv, next);
                        keys.recv_prev = Some(prev);
                        keys.recv_phase = header.key_phase;
                        keys.recv_first_pn_in_phase = pn;
                        keys.recv_update_acked = false;
                        Some(len)
                    }
                    Err(_) => {
                        keys.recv_next = Some(next);
                        None
                    }
                },
                None => None,
            }
        };
        let Some(len) = opened else {
            self.stats.auth_failures += 1;
            return;
        };
        self.replay.record(pn);
        self.last_heard = now;
        // Follow the peer to a new address (NAT rebinding) only on its newest packet: a replayed or delayed
        // old packet from elsewhere must not redirect the stream. The new path is validated before more
        // than three times what came from it is sent there, and abandoned if it does not answer.
        if remote != self.remote && newest {
            self.migrate(now, remote);
        }
        if remote == self.remote && !self.path_validated {
            self.amp_received += wire_len;
            self.amp_limit_counted = false;
        }
        if let Handshake::Server { .. } = self.handshake {
            // The client has our keys: handshake confirmed, and the peer is real. Its packet from the
            // address its Initial came from also proves that address (it got our message 2 there).
            self.handshake = Handshake::Done;
            if remote == self.remote && self.challenge.is_none() {
                self.path_validated = true;
            }
            let peer_static = self.peer_static;
            self.events.push_back(Event::Connected { peer_static });
        }
        self.stats.packets_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        let payload = datagram.freeze().slice(DATA_HEADER_LEN..DATA_HEADER_LEN + len);
        let mut ack_eliciting = false;
        let mut tail_probe = false;
        let mut refused = false;
        let mut acks = 0u32;
        // Frames act as they are parsed. They are authenticated, so those before a malformed one are the
        // peer's own and stand (as in QUIC); the malformed one ends the packet, which is then not
        // acknowledged (its fragments come again as repairs, and are duplicates where they were taken).
        for f in Frames::new(&payload) {
            let f = match f {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(remote = %self.remote, error = %e, "malformed frame in authenticated packet");
                    self.stats.malformed += 1;
                    return;
                }
            };
            ack_eliciting |= f.is_ack_eliciting();
            match f {
                Frame::Padding | Frame::Ping => {}
                Frame::TailProbe => tail_probe = true,
                Frame::Ack(ack) => {
                    // One ACK frame per packet (ours never carry more): another one ends the packet as
                    // malformed, so a packet cannot make us walk its ranges many times over.
                    acks += 1;
                    if acks > 1 {
                        self.stats.extra_ack_frames += 1;
                        self.stats.malformed += 1;
                        return;
                    }
                    self.on_ack_frame(now, &ack)
                }
                Frame::Fragment(h, range) => {
                    let len = u32::try_from(range.len()).unwrap_or(u32::MAX);
                    if self.recv.on_fragment_in(now, &h, &payload, range) == FragmentOutcome::Refused {
                        refused = true;
                    } else {
                        // Only a fragment the reassembler took (within its limits) informs the next wait.
                        self.incoming_train
                            .on_fragment(now, h.stream, h.seq, h.frame_len, h.offset, len);
                    }
                }
                Frame::Dropped(n) => refused |= !self.recv.on_dropped(now, &n),
                Frame::Close { code, reason } => {
                    self.terminate(CloseReason::PeerClosed { code, reason });
                }
                Frame::PathChallenge(data) => {
                    if self.path_responses.len() < MAX_PATH_RESPONSES {
                        self.path_responses.push_back(data);
                    }
                }
                Frame::PathResponse(data) => self.on_path_response(remote, data),
            }
        }
        // A packet with a refused fragment is not acknowledged, so the sender repairs or drops it.
        if !refused {
            if tail_probe && !ack_eliciting {
                self.acks.on_tail_probe(now, pn);
            } else {
                self.acks.on_packet(now, pn, ack_eliciting);
            }
            let max_hold = self.max_train_hold();
            let train_end = self.short_train_end(now, max_hold);
            self.acks.hold_for_train(now, train_end, max_hold);
        }
    }

    /// The peer's newest packet came from `remote`, not from where it was: go there, and validate the path
    /// (or go straight back to the validated address being validated away from).
    fn migrate(&mut self, now: Instant, remote: SocketAddr) {
        tracing::info!(old = %self.remote, new = %remote, "peer address changed");
        if let Some(c) = self.challenge.filter(|c| c.prev_remote == remote) {
            // Back where it came from: the path we know.
            self.challenge = None;
            self.remote = remote;
            self.path_validated = c.prev_validated;
            self.amp_received = 0;
            self.amp_sent = 0;
            return;
        }
        let (prev_remote, prev_validated) = match self.challenge {
            Some(c) => (c.prev_remote, c.prev_validated),
            None => (self.remote, self.path_validated),
        };
        let data = crate::crypto::random_bytes::<8>()
            .map(u64::from_be_bytes)
            .unwrap_or_else(|_| self.next_pn.rotate_left(17) ^ self.local_cid);
        let pto = self.recovery.rtt.pto_base(self.config.max_ack_delay);
        self.challenge = Some(PathChallenge {
            data,
            prev_remote,
            prev_validated,
            next_send: now,
            deadline: now + (3 * pto).max(6 * self.config.initial_rtt),
        });
        self.remote = remote;
        self.path_validated = false;
        self.amp_received = 0;
        self.amp_sent = 0;
        self.amp_limit_counted = false;
        self.stats.migrations += 1;
    }

    fn on_path_response(&mut self, remote: SocketAddr, data: u64) {
        if remote == self.remote && self.challenge.is_some_and(|c| c.data == data) {
            self.challenge = None;
            self.path_validated = true;
            self.stats.path_validations += 1;
        }
    }

    /// A new path that did not answer its challenge in time: back to the last validated address.
    fn path_validation_failed(&mut self) {
        let Some(c) = self.challenge.take() else { return };
        tracing::info!(new = %self.remote, back_to = %c.prev_remote, "path validation failed");
        self.remote = c.prev_remote;
        self.path_validated = c.prev_validated;
        self.amp_received = 0;
        self.amp_sent = 0;
        self.amp_limit_counted = false;
        self.stats.path_validation_failures += 1;
    }

    /// The size of a packet that carries a PATH_CHALLENGE alone.
    fn path_probe_len(&self) -> u64 {
        let tag = self.keys.as_ref().map_or(0, |k| k.send.tag_len());
        let payload = if tag > 0 {
            crate::crypto::whole_blocks(PATH_FRAME_LEN)
        } else {
            PATH_FRAME_LEN
        };
        (DATA_HEADER_LEN + payload + tag) as u64
    }

    /// Whether a packet with only the due PATH_CHALLENGE fits the amplification budget now.
    fn path_probe_due(&self, now: Instant) -> Option<Instant> {
        let room = (AMPLIFICATION_FACTOR * self.amp_received).saturating_sub(self.amp_sent);
        self.challenge
            .map(|c| c.next_send)
            .filter(|_| room >= self.path_probe_len() && !self.closed)
            .map(|t| t.max(now))
    }

    /// Writes a packet carrying only the due PATH_CHALLENGE, if the amplification budget has room for it.
    fn write_path_probe(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        if self.path_probe_due(now).is_none_or(|t| t > now) {
            return false;
        }
        let pto = self.recovery.rtt.pto_base(self.config.max_ack_delay);
        let (Some(keys), Some(c)) = (self.keys.as_mut(), self.challenge.as_mut()) else {
            return false;
        };
        let pn = self.next_pn;
        let start = buf.len();
        packet::write_data_header(
            buf,
            &DataHeader {
                dst_cid: self.remote_cid,
                packet_number: pn,
                key_phase: keys.send_phase,
            },
        );
        encode_path_challenge(c.data, buf);
        if keys.send.tag_len() > 0 {
            let payload = buf.len() - start - DATA_HEADER_LEN;
            buf.resize(start + DATA_HEADER_LEN + crate::crypto::whole_blocks(payload), 0);
        }
        if keys.send.seal_from(pn, buf, start, DATA_HEADER_LEN).is_err() {
            buf.truncate(start);
            return false;
        }
        keys.packets_in_phase += 1;
        self.next_pn += 1;
        c.next_send = now + pto;
        let bytes = (buf.len() - start) as u64;
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += bytes;
        // Recorded (packet numbers stay contiguous for recovery), but not in flight: it repeats on its own
        // timer, not the congestion controller's.
        self.recovery.on_sent(SentRecord {
            pn,
            sent_time: now,
            bytes,
            in_flight: false,
            snapshot: Default::default(),
            chunks: recovery::Chunks::new(),
        });
        true
    }

    /// Whether the amplification limit stops sending a full datagram to `remote` now.
    fn amplification_limited(&self) -> bool {
        !self.path_validated
            && self.amp_sent + self.config.max_datagram_bytes as u64
                > AMPLIFICATION_FACTOR * self.amp_received
    }

    fn on_ack_frame(&mut self, now: Instant, ack: &AckFrame) {
        let mut scratch = std::mem::take(&mut self.ack_scratch);
        let outcome = &mut scratch.outcome;
        self.recovery
            .on_ack_into(now, ack, self.config.max_ack_delay, outcome);
        if !outcome.acked.is_empty() || !outcome.lost.is_empty() {
            if let Some(keys) = self.keys.as_mut() {
                if outcome.acked.iter().any(|r| r.pn >= keys.first_pn_in_phase) {
                    keys.acked_in_phase = true;
                }
            }
            let srtt = self.recovery.rtt.smoothed();
            self.acks
                .set_nak_interval((srtt / 4).clamp(Duration::from_millis(5), Duration::from_millis(50)));
            self.settle(now, &mut scratch);
        }
        scratch.recycle();
        self.ack_scratch = scratch;
    }

    /// Hands what `scratch.outcome` resolved (and its RTT sample) to the send queue and the controller.
    fn settle(&mut self, now: Instant, scratch: &mut AckScratch) {
        let timing = self.timing();
        let AckScratch {
            outcome,
            acked_cc,
            lost_cc,
        } = scratch;
        for r in &outcome.acked {
            for c in &r.chunks {
                self.sendq.on_acked(c);
            }
        }
        for r in &outcome.lost {
            if r.in_flight {
                self.stats.packets_lost += 1;
            }
            for c in &r.chunks {
                self.sendq.on_lost(c, now, timing);
            }
        }
        acked_cc.clear();
        acked_cc.extend(outcome.acked.iter().filter(|r| r.in_flight).map(|r| AckedPacket {
            sent_time: r.sent_time,
            bytes: r.bytes,
            snapshot: r.snapshot,
        }));
        lost_cc.clear();
        lost_cc.extend(outcome.lost.iter().filter(|r| r.in_flight).map(|r| LostPacket {
            sent_time: r.sent_time,
            bytes: r.bytes,
        }));
        if acked_cc.is_empty() && lost_cc.is_empty() {
            return;
        }
        let est = &self.recovery.rtt;
        self.cc.on_ack(&AckEvent {
            now,
            acked: acked_cc,
            lost: lost_cc,
            rtt: RttSnapshot {
                latest: outcome.rtt_sample,
                min: est.min(),
                smoothed: est.smoothed(),
            },
            bytes_in_flight: self.recovery.bytes_in_flight(),
        });
    }

    // ----- timers -----

    /// The next instant `handle_timeout` wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if self.closed {
            return if self.closing.is_some() {
                Some(self.last_heard)
            } else {
                None
            };
        }
        consider(self.challenge.map(|c| c.deadline));
        if self.amplification_limited() {
            // Nothing but a path probe can be sent until the peer sends more: only the timers that do not
            // send, and the probe's.
            consider(Some(self.last_heard + self.config.idle_timeout));
            consider(self.recv.next_expiry());
            consider(self.challenge.and_then(|c| self.path_probe_due(c.next_send)));
            return t;
        }
        consider(self.challenge.map(|c| c.next_send));
        match &self.handshake {
            Handshake::Client { next_send, .. } => consider(Some(*next_send)),
            Handshake::Server { resend: true, .. } => consider(Some(self.last_heard)),
            _ => {}
        }
        if !matches!(self.handshake, Handshake::Client { .. }) {
            consider(Some(self.last_heard + self.config.idle_timeout));
        }
        if self.keys.is_none() {
            return t;
        }
        consider(self.acks.next_deadline());
        consider(self.recovery.timer(self.config.max_ack_delay));
        consider(self.next_pacing);
        consider(self.tail_probe_at);
        consider(self.recv.next_expiry());
        consider(Some(self.last_eliciting_sent + self.config.keepalive));
        consider(self.sendq.next_expiry(self.timing()));
        t
    }

    /// Runs whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        // The handshake has its own retry budget (and ends with HandshakeTimeout); idleness counts after it.
        let handshaking = matches!(self.handshake, Handshake::Client { .. });
        if !handshaking && now >= self.last_heard + self.config.idle_timeout {
            self.terminate(CloseReason::IdleTimeout);
            return;
        }
        if self.challenge.is_some_and(|c| c.deadline <= now) {
            self.path_validation_failed();
        }
        if self.keys.is_none() {
            return;
        }
        if self
            .recovery
            .timer(self.config.max_ack_delay)
            .is_some_and(|t| t <= now)
        {
            if self.recovery.loss_timer_armed() {
                let mut scratch = std::mem::take(&mut self.ack_scratch);
                self.recovery.detect_lost_into(now, &mut scratch.outcome.lost);
                self.settle(now, &mut scratch);
                scratch.recycle();
                self.ack_scratch = scratch;
            } else {
                // Probe timeout: re-send the oldest outstanding data (or a PING) to provoke an ACK.
                self.recovery.on_pto();
                self.stats.probe_timeouts += 1;
                let chunks = self.recovery.oldest_outstanding(2);
                if chunks.is_empty() {
                    self.ping_pending = true;
                }
                for c in &chunks {
                    self.sendq.probe(c);
                }
                if self.recovery.pto_count >= 2 {
                    self.cc.on_retransmission_timeout(now);
                }
                self.ping_pending = true;
            }
        }
        if now >= self.last_eliciting_sent + self.config.keepalive {
            self.ping_pending = true;
        }
        if self.tail_probe_at.is_some_and(|t| t <= now) {
            self.tail_probe_at = None;
            self.tail_probe_pending = true;
        }
        let timing = self.timing();
        self.sendq.expire(now, timing);
        self.recv.expire(now);
    }

    // ----- sending -----

    /// Appends the next datagram to send to `buf` (what `buf` held stays in front of it, untouched); returns
    /// false, with `buf` as it was, if there is none now.
    ///
    /// Appending lets a driver build a GSO batch in its send buffer directly, with no copy per datagram.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        if self.amplification_limited() && !self.closed {
            // A PATH_CHALLENGE alone is small: it leaves as soon as the budget has room for it, so that a
            // peer that sends only small packets (ACKs) from its new address gets validated.
            let start = buf.len();
            if self.write_path_probe(now, buf) {
                self.amp_sent += (buf.len() - start) as u64;
                return true;
            }
            if !self.amp_limit_counted {
                self.amp_limit_counted = true;
                self.stats.amplification_limited += 1;
            }
            return false;
        }
        let start = buf.len();
        let sent = self.poll_transmit_inner(now, buf);
        if sent && !self.path_validated {
            self.amp_sent += (buf.len() - start) as u64;
        }
        sent
    }

    fn poll_transmit_inner(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        if let Some((code, reason)) = self.closing.take() {
            return self.write_close(code, &reason, buf);
        }
        if self.closed {
            return false;
        }
        match &mut self.handshake {
            Handshake::Client {
                message1,
                cookie,
                next_send,
                interval,
                attempts,
                ..
            } => {
                if now < *next_send {
                    return false;
                }
                *attempts += 1;
                if *attempts > self.config.handshake_attempts {
                    self.terminate(CloseReason::HandshakeTimeout);
                    return false;
                }
                let start = buf.len();
                packet::write_initial(buf, 0, self.local_cid, cookie, message1);
                *next_send = now + *interval;
                *interval = (*interval * 2).min(MAX_HANDSHAKE_RETRY);
                self.stats.packets_sent += 1;
                self.stats.bytes_sent += (buf.len() - start) as u64;
                return true;
            }
            Handshake::Server { message2, resend, .. } if *resend => {
                *resend = false;
                let start = buf.len();
                packet::write_handshake(buf, self.remote_cid, self.local_cid, message2);
                self.stats.packets_sent += 1;
                self.stats.bytes_sent += (buf.len() - start) as u64;
                return true;
            }
            _ => {}
        }
        if self.keys.is_none() {
            return false;
        }
        self.write_data(now, buf)
    }

    fn write_close(&mut self, code: u64, reason: &str, buf: &mut Vec<u8>) -> bool {
        let Some(keys) = self.keys.as_ref() else {
            return false;
        };
        let pn = self.next_pn;
        self.next_pn += 1;
        let start = buf.len();
        packet::write_data_header(
            buf,
            &DataHeader {
                dst_cid: self.remote_cid,
                packet_number: pn,
                key_phase: keys.send_phase,
            },
        );
        encode_close(code, reason, buf);
        if keys.send.seal_from(pn, buf, start, DATA_HEADER_LEN).is_err() {
            buf.truncate(start);
            return false;
        }
        true
    }

    /// Whether to send a priming packet now: within the priming time after the handshake, the controller
    /// still in startup, and no frame waiting.
    fn priming(&mut self, now: Instant) -> bool {
        // Never before the handshake is confirmed and the peer's address validated: priming is many times
        // what an unvalidated address sent.
        if !matches!(self.handshake, Handshake::Done) || !self.path_validated {
            return false;
        }
        let until = *self
            .priming_until
            .get_or_insert(now + self.config.startup_priming);
        now < until
            && self.stats.priming_bytes < self.config.startup_priming_bytes
            && self.cc.phase() == "startup"
            && !self.sendq.has_pending()
            && self.closing.is_none()
    }

    fn write_data(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        let timing = self.timing();
        self.sendq.expire(now, timing);
        let want_ack = self.acks.wants_ack(now);
        let mtu = self.config.max_datagram_bytes;
        let priming = self.priming(now);
        let path_due = self.challenge.is_some_and(|c| c.next_send <= now) || !self.path_responses.is_empty();
        let has_data =
            self.sendq.has_pending() || self.ping_pending || self.tail_probe_pending || priming || path_due;
        // Path frames are tiny and must not wait for the window (as probes).
        let window_open = self.recovery.bytes_in_flight() + mtu as u64 <= self.cc.window()
            || self.recovery.pto_count > 0 && self.ping_pending
            || path_due;
        let mut may_send_data = has_data && window_open;
        self.next_pacing = None;
        if may_send_data {
            if let Some(t) = self.pacer.delay(now, mtu as u64, self.cc.pacing_rate()) {
                if t > now {
                    self.next_pacing = Some(t);
                    may_send_data = false;
                }
            }
        }
        if !want_ack && !may_send_data {
            return false;
        }
        let Some(keys) = self.keys.as_mut() else {
            return false;
        };
        // Key rotation once the peer has acknowledged something under the current key.
        if keys.packets_in_phase >= self.config.key_update_packets && keys.acked_in_phase {
            if let Ok(next) = keys.send.next_generation() {
                keys.send = next;
                keys.send_phase = !keys.send_phase;
                keys.packets_in_phase = 0;
                keys.acked_in_phase = false;
                keys.first_pn_in_phase = self.next_pn;
                self.stats.key_updates += 1;
            }
        }
        let pn = self.next_pn;
        // Everything below measures the packet from `start`: `buf` may already hold datagrams before it.
        let start = buf.len();
        packet::write_data_header(
            buf,
            &DataHeader {
                dst_cid: self.remote_cid,
                packet_number: pn,
                key_phase: keys.send_phase,
            },
        );
        let tag = keys.send.tag_len();
        let limit = DATA_HEADER_LEN + self.config.payload_room();
        if want_ack {
            if let Some(ack) = self.acks.build_ack(now) {
                ack.encode(buf);
                if let Some(k) = self.keys.as_mut() {
                    if ack.largest() >= Some(k.recv_first_pn_in_phase) {
                        k.recv_update_acked = true;
                    }
                }
            }
        }
        let mut chunks = recovery::Chunks::new();
        let mut eliciting = false;
        let mut primed = false;
        if may_send_data {
            while let Some(data) = self.path_responses.pop_front() {
                encode_path_response(data, buf);
                eliciting = true;
            }
            if let Some(c) = self.challenge.as_mut().filter(|c| c.next_send <= now) {
                encode_path_challenge(c.data, buf);
                let pto = self.recovery.rtt.pto_base(self.config.max_ack_delay);
                c.next_send = now + pto;
                eliciting = true;
            }
            while let Some(n) = self.sendq.pop_notice() {
                if buf.len() - start + DroppedNotice::MAX_LEN > limit {
                    self.sendq.unpop_notice(n);
                    break;
                }
                n.encode(buf);
                chunks.push(Chunk::Notice(n));
                eliciting = true;
            }
            loop {
                let space = limit.saturating_sub(buf.len() - start);
                if space < MIN_FRAGMENT_FRAME_LEN {
                    break; // no fragment fits: spare the scheduler a pass
                }
                let Some(chunk) = self.sendq.write_next_fragment(now, space, timing, buf) else {
                    break;
                };
                chunks.push(chunk);
                eliciting = true;
            }
            if !eliciting && self.ping_pending {
                encode_ping(buf);
                eliciting = true;
            }
            if chunks.is_empty() && self.tail_probe_pending {
                encode_tail_probe(buf);
                self.stats.tail_probes += 1;
            }
            // Sent, or unneeded: a packet with frame data reveals a gap as well as a probe would.
            self.tail_probe_pending = false;
            if !eliciting && priming {
                // PING makes it ack-eliciting (a delivery-rate sample); PADDING fills it to full size.
                encode_ping(buf);
                buf.resize(start + limit.max(buf.len() - start), 0);
                eliciting = true;
                primed = true;
                self.stats.priming_packets += 1;
            }
            if eliciting {
                self.ping_pending = false;
            }
        }
        if !chunks.is_empty() && limit.saturating_sub(buf.len() - start) < MIN_FRAGMENT_FRAME_LEN {
            // Full: nothing else fits. Padding it to the exact size lets the packets after it join the
            // same GSO batch (the fragment headers' varints vary by a few bytes).
            buf.resize(start + limit, 0);
        }
        if buf.len() - start == DATA_HEADER_LEN {
            buf.truncate(start);
            return false;
        }
        if tag > 0 {
            // PADDING to whole cipher blocks: a partial last block costs more to seal (and to open) than the
            // bytes it saves. `limit` is itself whole blocks past the header, so this never passes it.
            let payload = buf.len() - start - DATA_HEADER_LEN;
            buf.resize(start + DATA_HEADER_LEN + crate::crypto::whole_blocks(payload), 0);
        }
        debug_assert!(
            buf.len() - start + tag <= mtu,
            "packet of {} bytes over the {mtu}-byte limit",
            buf.len() - start + tag
        );
        let Some(keys) = self.keys.as_mut() else {
            return false;
        };
        if keys.send.seal_from(pn, buf, start, DATA_HEADER_LEN).is_err() {
            buf.truncate(start);
            return false;
        }
        keys.packets_in_phase += 1;
        self.next_pn += 1;
        let bytes = (buf.len() - start) as u64;
        if primed {
            self.stats.priming_bytes += bytes;
        }
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += bytes;
        // A burst of frame data just ended: arm the tail probe (a later packet disarms it).
        let carried_data = !chunks.is_empty();
        self.tail_probe_at = if carried_data && !self.sendq.has_pending() {
            Some(now + self.tail_probe_delay())
        } else if eliciting {
            None
        } else {
            self.tail_probe_at
        };
        let snapshot = if eliciting {
            self.last_eliciting_sent = now;
            self.pacer.on_sent(now, bytes);
            // App-limited (as Linux's tcp_rate_check_app_limited decides): what we have queued and in flight
            // cannot fill the window. A frame burst shorter than the pipe says nothing about the path's rate,
            // so its samples may raise the estimate but never age or lower it.
            let in_flight = self.recovery.bytes_in_flight();
            let backlog = self.sendq.unsent_bytes() + in_flight + bytes;
            self.cc.on_sent(&SentPacket {
                now,
                bytes,
                bytes_in_flight: in_flight,
                // A priming packet fills the window on purpose: its samples measure the path.
                app_limited: !primed && (!self.sendq.has_pending() || backlog < self.cc.window()),
            })
        } else {
            Default::default()
        };
        self.recovery.on_sent(SentRecord {
            pn,
            sent_time: now,
            bytes,
            in_flight: eliciting,
            snapshot,
            chunks,
        });
        true
    }
}
