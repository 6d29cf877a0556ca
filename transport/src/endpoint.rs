//! The endpoint: one UDP socket's worth of connections. Routes datagrams to connections by connection id,
//! runs the stateless cookie exchange and the Noise handshake for new peers, and hands out what to send.
//!
//! Nothing here reads a clock or touches a socket: the caller passes `now` and moves the bytes.

use crate::config::EndpointConfig;
use crate::connection::send_queue::PushError;
use crate::connection::stats::ConnectionStats;
use crate::connection::{CloseReason, Connection, Event};
use crate::crypto::{random_bytes, CookieJar, CryptoError, InitiatorHandshake, ResponderHandshake};
use crate::media::{MediaFrame, StreamId};
use crate::wire::packet::{self, Packet, MIN_INITIAL_SIZE};
use bytes::BytesMut;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Stateless replies (Retry) waiting to be sent are capped at this many; beyond it they are not generated.
const MAX_STATELESS_QUEUE: usize = 256;
/// Rotate the cookie secret this often.
const COOKIE_ROTATION: Duration = Duration::from_secs(60);
/// The protocol version: message 2's payload, and the start of message 1's.
const HANDSHAKE_PAYLOAD: &[u8] = b"popline/1";
/// Bytes of the timestamp that follows the version in message 1: seconds (u64) and nanoseconds (u32), big
/// endian, so that comparing the bytes compares the times (as WireGuard's TAI64N).
const TIMESTAMP_LEN: usize = 12;
/// Sources tracked by the handshake rate limit; when full, sources whose bucket is back to full are
/// forgotten, and a new source is refused while none is.
const MAX_RATE_SOURCES: usize = 65_536;
/// Handshake timestamps remembered per peer key (at least this many; see `Endpoint::peer_timestamps`).
const MIN_TIMESTAMP_ENTRIES: usize = 4096;

/// Refers to a connection of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle {
    index: usize,
    generation: u64,
}

/// A datagram to send, written into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Its length in the buffer.
    pub size: usize,
}

/// Why `connect` or `send_frame` failed.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The handshake could not be built (bad key).
    #[error("handshake setup failed: {0}")]
    Crypto(#[from] CryptoError),
    /// No such connection (closed or never existed).
    #[error("unknown connection {0:?}")]
    UnknownConnection(ConnectionHandle),
    /// The connection limit is reached.
    #[error("too many connections ({0})")]
    TooManyConnections(usize),
    /// The frame was refused.
    #[error(transparent)]
    Push(#[from] PushError),
}

/// Datagrams dropped before reaching a connection, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Did not parse as a popline packet.
    pub malformed: u64,
    /// Addressed to a connection id we do not have.
    pub unknown_connection: u64,
    /// Initial packets refused (too small, bad handshake, not authorized, not accepting).
    pub refused_initials: u64,
    /// Initial packets answered with a Retry (cookie request).
    pub retries_sent: u64,
    /// Initial packets with an invalid or expired cookie.
    pub bad_cookies: u64,
    /// Stateless replies not generated because the queue was full.
    pub stateless_dropped: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Handshake packets (Retry/Handshake) that arrived unexpectedly.
    pub unexpected_handshake: u64,
    /// Initials dropped by the per-source handshake rate limit
    /// (`EndpointConfig::handshake_rate_per_source`), before any DH work; also counted in `refused_initials`.
    pub handshakes_rate_limited: u64,
    /// Initial packets whose message 1 carried a timestamp no later than the last one accepted from the same
    /// peer key (a replayed message 1), or none at all; also counted in `refused_initials`.
    pub replayed_initials: u64,
    /// Initial packets from a peer that authenticated but is not authorized (not on `authorized_peers`,
    /// and no PSK or `accept_any_peer` admits it); also counted in `refused_initials`.
    pub unauthorized_peers: u64,
}

/// A set of connections sharing one identity and one socket.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    cookies: CookieJar,
    epoch: Instant,
    last_rotation: Instant,
    conns: Vec<Option<Connection>>,
    /// Generation of each slot, bumped when a connection is reaped: a stale handle never reaches a newer peer.
    generations: Vec<u64>,
    /// Our own connection ids (random, so a fast hash is safe; every data packet looks one up).
    by_cid: foldhash::HashMap<u64, usize>,
    by_client: HashMap<(SocketAddr, u64), usize>,
    stateless: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<(ConnectionHandle, Event)>,
    next_rr: usize,
    stats: EndpointStats,
    /// What all connections hold in frames being received, in bytes (see
    /// [`EndpointConfig::max_recv_buffered_bytes`]): updated around each datagram, recounted on timers.
    recv_buffered: u64,
    /// The wall-clock time (since the Unix epoch) at `epoch`, when the caller gave one
    /// ([`Endpoint::set_unix_time`]); without it, handshake timestamps count from the endpoint's start.
    unix_at_epoch: Option<Duration>,
    /// The last timestamp this endpoint put in a message 1 (each later one is strictly greater).
    last_timestamp: [u8; TIMESTAMP_LEN],
    /// The latest message 1 timestamp accepted from each peer key: a message 1 is accepted only with a later
    /// one, so a replayed message 1 never makes a connection (WireGuard's rule). Bounded: when full, the
    /// oldest half of the entries is forgotten.
    peer_timestamps: HashMap<[u8; 32], [u8; TIMESTAMP_LEN]>,
    /// The handshake rate limit's state per source IP (a GCRA bucket: the theoretical arrival time of the
    /// next handshake). SipHash: the keys are what peers choose.
    handshake_buckets: HashMap<IpAddr, Instant>,
}

impl Endpoint {
    /// Creates an endpoint. `now` anchors its cookie clock.
    pub fn new(config: EndpointConfig, now: Instant) -> Result<Self, EndpointError> {
        Ok(Endpoint {
            config,
            cookies: CookieJar::new()?,
            epoch: now,
            last_rotation: now,
            conns: Vec::new(),
            generations: Vec::new(),
            by_cid: foldhash::HashMap::default(),
            by_client: HashMap::new(),
            stateless: VecDeque::new(),
            events: VecDeque::new(),
            next_rr: 0,
            stats: EndpointStats::default(),
            recv_buffered: 0,
            unix_at_epoch: None,
            last_timestamp: [0; TIMESTAMP_LEN],
            peer_timestamps: HashMap::new(),
            handshake_buckets: HashMap::new(),
        })
    }

    /// Tells the endpoint the wall-clock time: `since_unix_epoch` is the time since the Unix epoch at `now`
    /// (the caller reads the clock; the endpoint never does). Handshake message 1 carries a timestamp that
    /// must grow from one handshake to the next of the same key, as the responder refuses any message 1 not
    /// later than the last it accepted from that key (replay protection). Without a wall clock the timestamp
    /// counts from this endpoint's creation, which is monotonic only for this endpoint's life: a node whose
    /// identity outlives a process restart must call this before connecting, or a peer that still remembers
    /// its earlier handshakes refuses it.
    pub fn set_unix_time(&mut self, now: Instant, since_unix_epoch: Duration) {
        let elapsed = now.saturating_duration_since(self.epoch);
        self.unix_at_epoch = Some(since_unix_epoch.saturating_sub(elapsed));
    }

    /// Message 1's payload: the version and a timestamp later than every earlier one of this endpoint.
    fn initiator_payload(&mut self, now: Instant) -> Vec<u8> {
        let t = self.unix_at_epoch.unwrap_or_default() + now.saturating_duration_since(self.epoch);
        let mut ts = [0u8; TIMESTAMP_LEN];
        ts[..8].copy_from_slice(&t.as_secs().to_be_bytes());
        ts[8..].copy_from_slice(&t.subsec_nanos().to_be_bytes());
        if ts <= self.last_timestamp {
            // Same instant (or a clock that stepped back): one nanosecond past the last one.
            let last = &self.last_timestamp;
            let secs = u64::from_be_bytes(last[..8].try_into().unwrap_or_default());
            let nanos = u32::from_be_bytes(last[8..].try_into().unwrap_or_default());
            let (secs, nanos) = if nanos >= 999_999_999 {
                (secs.saturating_add(1), 0)
            } else {
                (secs, nanos + 1)
            };
            ts[..8].copy_from_slice(&secs.to_be_bytes());
            ts[8..].copy_from_slice(&nanos.to_be_bytes());
        }
        self.last_timestamp = ts;
        let mut payload = HANDSHAKE_PAYLOAD.to_vec();
        payload.extend_from_slice(&ts);
        payload
    }

    /// Whether `source` may start a handshake now (and takes its share if so): the per-source rate limit.
    fn handshake_allowed(&mut self, now: Instant, source: IpAddr) -> bool {
        let rate = self.config.handshake_rate_per_source;
        if rate == 0 {
            return true;
        }
        let interval = Duration::from_secs(1) / rate;
        let tolerance = interval * self.config.handshake_burst_per_source.saturating_sub(1);
        if self.handshake_buckets.len() >= MAX_RATE_SOURCES && !self.handshake_buckets.contains_key(&source) {
            self.handshake_buckets.retain(|_, tat| *tat > now);
            if self.handshake_buckets.len() >= MAX_RATE_SOURCES {
                return false;
            }
        }
        let tat = self.handshake_buckets.get(&source).map_or(now, |&t| t.max(now));
        if tat.saturating_duration_since(now) > tolerance {
            return false;
        }
        self.handshake_buckets.insert(source, tat + interval);
        true
    }

    /// Message 1's timestamp, if its payload is the version followed by one.
    fn initiator_timestamp(payload: &[u8]) -> Option<[u8; TIMESTAMP_LEN]> {
        payload.strip_prefix(HANDSHAKE_PAYLOAD)?.try_into().ok()
    }

    /// Remembers `peer`'s latest accepted timestamp (bounded: see `peer_timestamps`).
    fn remember_timestamp(&mut self, peer: [u8; 32], ts: [u8; TIMESTAMP_LEN]) {
        let cap = MIN_TIMESTAMP_ENTRIES.max(self.config.authorized_peers.len() * 2);
        if self.peer_timestamps.len() >= cap && !self.peer_timestamps.contains_key(&peer) {
            let mut all: Vec<[u8; TIMESTAMP_LEN]> = self.peer_timestamps.values().copied().collect();
            all.sort_unstable();
            if let Some(&median) = all.get(all.len() / 2) {
                self.peer_timestamps.retain(|_, t| *t > median);
            }
        }
        self.peer_timestamps.insert(peer, ts);
    }

    /// Endpoint-level counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// The number of open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    fn new_cid(&self) -> Result<u64, CryptoError> {
        loop {
            let cid = u64::from_be_bytes(random_bytes::<8>()?);
            if cid != 0 && !self.by_cid.contains_key(&cid) {
                return Ok(cid);
            }
        }
    }

    fn handle(&self, index: usize) -> ConnectionHandle {
        ConnectionHandle {
            index,
            generation: self.generations.get(index).copied().unwrap_or(0),
        }
    }

    fn retire(&mut self, index: usize) {
        if let Some(g) = self.generations.get_mut(index) {
            *g += 1;
        }
    }

    fn insert(&mut self, conn: Connection) -> Result<ConnectionHandle, EndpointError> {
        if self.connection_count() >= self.config.max_connections {
            return Err(EndpointError::TooManyConnections(self.config.max_connections));
        }
        let cid = conn.local_cid();
        let idx = match self.conns.iter().position(Option::is_none) {
            Some(i) => {
                self.conns[i] = Some(conn);
                i
            }
            None => {
                self.conns.push(Some(conn));
                self.generations.push(0);
                self.conns.len() - 1
            }
        };
        self.by_cid.insert(cid, idx);
        Ok(self.handle(idx))
    }

    /// Starts a connection to `remote`, whose static public key must be `remote_static`.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        remote_static: [u8; 32],
    ) -> Result<ConnectionHandle, EndpointError> {
        let payload = self.initiator_payload(now);
        let (init, msg1) = InitiatorHandshake::start(
            &self.config.keypair,
            &remote_static,
            self.config.psk.as_ref(),
            &payload,
        )?;
        let cid = self.new_cid()?;
        let conn = Connection::client(
            now,
            self.config.connection.clone(),
            cid,
            remote,
            remote_static,
            init,
            msg1,
        );
        tracing::debug!(%remote, cid, "connecting");
        self.insert(conn)
    }

    /// Feeds one received datagram. Anything that is not for a live connection or a valid handshake is
    /// counted and dropped; it never affects other connections.
    pub fn handle_datagram(&mut self, now: Instant, remote: SocketAddr, datagram: BytesMut) {
        self.stats.datagrams_received += 1;
        let parsed = match packet::parse(&datagram) {
            Ok(p) => p,
            Err(e) => {
                tracing::trace!(%remote, error = %e, "malformed datagram");
                self.stats.malformed += 1;
                return;
            }
        };
        match parsed {
            Packet::Data(h) => match self.by_cid.get(&h.dst_cid).and_then(|&i| self.conns.get_mut(i)) {
                Some(Some(c)) => {
                    let before = c.recv_buffered_bytes();
                    let room = self
                        .config
                        .max_recv_buffered_bytes
                        .saturating_sub(self.recv_buffered);
                    c.set_recv_room(room);
                    c.handle_data(now, remote, h, datagram);
                    let after = c.recv_buffered_bytes();
                    self.recv_buffered = (self.recv_buffered + after).saturating_sub(before);
                }
                _ => self.stats.unknown_connection += 1,
            },
            Packet::Retry { header, cookie } => {
                match self
                    .by_cid
                    .get(&header.dst_cid)
                    .and_then(|&i| self.conns.get_mut(i))
                {
                    Some(Some(c)) if c.remote() == remote => c.handle_retry(now, cookie),
                    _ => self.stats.unexpected_handshake += 1,
                }
            }
            Packet::Handshake { header, message } => {
                match self
                    .by_cid
                    .get(&header.dst_cid)
                    .and_then(|&i| self.conns.get_mut(i))
                {
                    Some(Some(c)) if c.remote() == remote => {
                        c.handle_handshake(now, header.src_cid, message);
                        if c.wants_new_handshake() {
                            self.restart_handshake(now, remote, header.dst_cid);
                        }
                    }
                    _ => self.stats.unexpected_handshake += 1,
                }
            }
            Packet::Initial {
                header,
                cookie,
                message,
            } => {
                let len = datagram.len();
                self.handle_initial(now, remote, len, header.src_cid, cookie, message);
            }
        }
    }

    /// Gives the client connection `cid` a fresh message 1 (its handshake state was spent on a bad reply).
    fn restart_handshake(&mut self, now: Instant, remote: SocketAddr, cid: u64) {
        let Some(&idx) = self.by_cid.get(&cid) else { return };
        let Some(Some(remote_static)) = self
            .conns
            .get(idx)
            .map(|c| c.as_ref().map(Connection::peer_static))
        else {
            return;
        };
        let payload = self.initiator_payload(now);
        match InitiatorHandshake::start(
            &self.config.keypair,
            &remote_static,
            self.config.psk.as_ref(),
            &payload,
        ) {
            Ok((init, msg1)) => {
                if let Some(Some(c)) = self.conns.get_mut(idx) {
                    c.restart_handshake(now, init, msg1);
                }
            }
            Err(e) => tracing::warn!(%remote, error = %e, "handshake restart failed"),
        }
    }

    fn handle_initial(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        datagram_len: usize,
        client_cid: u64,
        cookie: &[u8],
        message: &[u8],
    ) {
        if !self.config.accept_incoming || datagram_len < MIN_INITIAL_SIZE {
            self.stats.refused_initials += 1;
            return;
        }
        let existing = self.by_client.get(&(remote, client_cid)).copied();
        if let Some(idx) = existing {
            if let Some(Some(c)) = self.conns.get_mut(idx) {
                if c.handle_repeated_initial(message, datagram_len) {
                    return;
                }
            }
        }
        if now.saturating_duration_since(self.last_rotation) >= COOKIE_ROTATION
            && self.cookies.rotate().is_ok()
        {
            self.last_rotation = now;
        }
        let now_secs = now.saturating_duration_since(self.epoch).as_secs();
        if self.config.require_cookie {
            if cookie.is_empty() {
                if self.stateless.len() >= MAX_STATELESS_QUEUE {
                    self.stats.stateless_dropped += 1;
                    return;
                }
                let c = self.cookies.issue(now_secs, remote, client_cid);
                let mut out = Vec::with_capacity(64);
                packet::write_retry(&mut out, client_cid, &c);
                self.stateless.push_back((remote, out));
                self.stats.retries_sent += 1;
                return;
            }
            if !self.cookies.verify(now_secs, remote, client_cid, cookie) {
                self.stats.bad_cookies += 1;
                return;
            }
        }
        // The cookie (when demanded) proved the source: now it may spend DH work, at its rate.
        if !self.handshake_allowed(now, remote.ip()) {
            self.stats.handshakes_rate_limited += 1;
            self.stats.refused_initials += 1;
            return;
        }
        // A restart replaces the half-open connection, so it does not count against the limit.
        let replaced = existing.is_some_and(|i| matches!(self.conns.get(i), Some(Some(_))));
        if self.connection_count() - usize::from(replaced) >= self.config.max_connections {
            self.stats.refused_initials += 1;
            return;
        }
        let (responder, peer_static, payload) =
            match ResponderHandshake::read_init(&self.config.keypair, self.config.psk.as_ref(), message) {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "handshake refused");
                    self.stats.refused_initials += 1;
                    return;
                }
            };
        if !self.config.is_authorized(&peer_static) {
            tracing::info!(%remote, "handshake from an unauthorized static key refused");
            self.stats.refused_initials += 1;
            self.stats.unauthorized_peers += 1;
            return;
        }
        // A message 1 can be replayed by anyone who saw it: only one later than the last accepted from this
        // key makes a connection.
        let fresh = Self::initiator_timestamp(&payload).filter(|ts| {
            self.peer_timestamps
                .get(&peer_static)
                .is_none_or(|last| ts > last)
        });
        let Some(timestamp) = fresh else {
            tracing::debug!(%remote, "replayed or undated handshake refused");
            self.stats.refused_initials += 1;
            self.stats.replayed_initials += 1;
            return;
        };
        if let Some(idx) = existing {
            // The client restarted its handshake (its address proved again, its new message 1 authentic and
            // later than the last): the half-open connection goes, the new one is built below.
            if let Some(Some(old)) = self.conns.get_mut(idx).map(Option::take) {
                self.by_cid.remove(&old.local_cid());
                let old_handle = self.handle(idx);
                self.events.push_back((
                    old_handle,
                    Event::Closed {
                        reason: CloseReason::HandshakeRestarted,
                    },
                ));
                self.retire(idx);
            }
            self.by_client.remove(&(remote, client_cid));
        }
        let (keys, message2) = match responder.respond(HANDSHAKE_PAYLOAD) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "handshake response failed");
                self.stats.refused_initials += 1;
                return;
            }
        };
        let Ok(cid) = self.new_cid() else { return };
        let conn = Connection::server(
            now,
            self.config.connection.clone(),
            cid,
            client_cid,
            remote,
            peer_static,
            keys,
            message.to_vec(),
            message2,
            self.config.require_cookie,
            datagram_len,
        );
        match self.insert(conn) {
            Ok(h) => {
                self.by_client.insert((remote, client_cid), h.index);
                self.remember_timestamp(peer_static, timestamp);
                self.stats.accepted += 1;
                tracing::debug!(%remote, cid, "connection accepted");
            }
            Err(_) => self.stats.refused_initials += 1,
        }
    }

    /// Writes the next datagram to send into `buf` (cleared first), if any is ready at `now`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        self.poll_transmit_append(now, buf)
    }

    /// Appends the next datagram to send to `buf`, if any is ready at `now`: the datagram is the last
    /// [`Transmit::size`] bytes, and what `buf` held before stays as it was (also when none is ready).
    ///
    /// A driver builds a GSO batch (same destination, same size) in its send buffer with this, with no
    /// copy per datagram.
    pub fn poll_transmit_append(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let start = buf.len();
        if let Some((destination, bytes)) = self.stateless.pop_front() {
            buf.extend_from_slice(&bytes);
            return Some(Transmit {
                destination,
                size: bytes.len(),
            });
        }
        let n = self.conns.len();
        for k in 0..n {
            let idx = (self.next_rr + k) % n;
            if let Some(Some(c)) = self.conns.get_mut(idx) {
                if c.poll_transmit(now, buf) {
                    self.next_rr = (idx + 1) % n;
                    return Some(Transmit {
                        destination: c.remote(),
                        size: buf.len() - start,
                    });
                }
            }
        }
        None
    }

    /// For a driver that gathers several datagrams per wake-up (a batched io_uring wait): call once the
    /// datagrams of a wake-up are handed over. What they brought is acknowledged with the next transmit rather
    /// than on a delayed-ACK timer that would wake the receiver again (the ACK interval still spaces ACKs).
    pub fn on_receive_batch_end(&mut self, now: Instant) {
        for c in self.conns.iter_mut().flatten() {
            c.on_receive_batch_end(now);
        }
    }

    /// A hint for the driver's next wait: datagrams the peers are in the middle of sending (what is left of
    /// the frames whose fragments are arriving, every connection together) and how long until the first of
    /// those frames should be in, at most the ACK interval (see [`crate::connection::train`]). `None` when
    /// none is expected.
    pub fn receive_batch_hint(&self, now: Instant) -> Option<(u32, Duration)> {
        self.conns
            .iter()
            .flatten()
            .filter_map(|c| c.train_hint(now))
            .reduce(|(n, d), (m, e)| (n.saturating_add(m), d.min(e)))
    }

    /// The earliest instant at which `handle_timeout` (or `poll_transmit`) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .iter()
            .flatten()
            .filter_map(Connection::poll_timeout)
            .min()
    }

    /// Runs due timers of every connection, and reaps closed ones.
    pub fn handle_timeout(&mut self, now: Instant) {
        for c in self.conns.iter_mut().flatten() {
            c.handle_timeout(now);
        }
        self.collect_events();
        for idx in 0..self.conns.len() {
            let closed = matches!(self.conns.get(idx), Some(Some(c)) if c.is_closed());
            if closed {
                if let Some(Some(c)) = self.conns.get_mut(idx).map(Option::take) {
                    self.by_cid.remove(&c.local_cid());
                    self.by_client.retain(|_, v| *v != idx);
                    self.retire(idx);
                }
            }
        }
        self.recv_buffered = self
            .conns
            .iter()
            .flatten()
            .map(Connection::recv_buffered_bytes)
            .sum();
    }

    /// Bytes all connections hold in frames being received (bounded by
    /// [`EndpointConfig::max_recv_buffered_bytes`]).
    pub fn recv_buffered_bytes(&self) -> u64 {
        self.recv_buffered
    }

    fn collect_events(&mut self) {
        for (idx, c) in self.conns.iter_mut().enumerate() {
            if let Some(c) = c {
                let generation = self.generations.get(idx).copied().unwrap_or(0);
                let handle = ConnectionHandle {
                    index: idx,
                    generation,
                };
                while let Some(e) = c.poll_event() {
                    self.events.push_back((handle, e));
                }
            }
        }
    }

    /// The next event from any connection.
    pub fn poll_event(&mut self) -> Option<(ConnectionHandle, Event)> {
        if self.events.is_empty() {
            self.collect_events();
        }
        self.events.pop_front()
    }

    /// Queues a frame on a connection's stream; returns its sequence number.
    pub fn send_frame(
        &mut self,
        ch: ConnectionHandle,
        stream: StreamId,
        frame: MediaFrame,
    ) -> Result<u64, EndpointError> {
        let c = self.connection_mut(ch)?;
        Ok(c.send_frame(stream.0, frame)?)
    }

    /// Closes a connection (a CLOSE frame is sent once).
    pub fn close(&mut self, ch: ConnectionHandle, code: u64, reason: &str) -> Result<(), EndpointError> {
        self.connection_mut(ch)?.close(code, reason);
        Ok(())
    }

    /// A connection, for stats and inspection.
    pub fn connection(&self, ch: ConnectionHandle) -> Option<&Connection> {
        if self.generations.get(ch.index) != Some(&ch.generation) {
            return None;
        }
        self.conns.get(ch.index).and_then(Option::as_ref)
    }

    fn connection_mut(&mut self, ch: ConnectionHandle) -> Result<&mut Connection, EndpointError> {
        if self.generations.get(ch.index) != Some(&ch.generation) {
            return Err(EndpointError::UnknownConnection(ch));
        }
        self.conns
            .get_mut(ch.index)
            .and_then(Option::as_mut)
            .ok_or(EndpointError::UnknownConnection(ch))
    }

    /// A connection's stats.
    pub fn connection_stats(&self, ch: ConnectionHandle) -> Option<ConnectionStats> {
        self.connection(ch).map(Connection::stats)
    }
}
