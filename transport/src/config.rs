//! Configuration of endpoints and connections. Every field has a default that suits a PoP-to-PoP link.

use crate::congestion::ControllerKind;
use crate::connection::reassembly::RecvLimits;
use crate::crypto::StaticKeypair;
use std::time::Duration;

/// Per-connection settings.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Largest UDP payload sent, in bytes (1400 leaves room for IPv6 and tunnels on a 1500-byte path).
    pub max_datagram_bytes: usize,
    /// Congestion controller.
    pub congestion: ControllerKind,
    /// RTT assumed before the first sample.
    pub initial_rtt: Duration,
    /// Longest the receiver delays an ACK for an in-order packet.
    pub max_ack_delay: Duration,
    /// ACK after this many ack-eliciting packets even within `max_ack_delay` and `ack_interval` (a gap is
    /// reported at once whatever this says). Default 8.
    pub ack_every: u32,
    /// With two or more packets unacknowledged, ACK once this long has passed since the last ACK (default
    /// 1 ms). Slower than a packet per half of it, this is RFC 9000's ACK every second packet; faster, one
    /// ACK per interval or per `ack_every` packets. Each ACK wakes the sender: at 94 Mbit/s an ACK per two
    /// packets was 4,500 a second. Zero: every second packet. An ACK per 8 packets whatever the rate, tried
    /// first, made a squeezed live stream's audio late in the simulator, where ACKs come too seldom at low
    /// rates to show the squeeze (the ACK frequency draft, draft-ietf-quic-ack-frequency, also bounds the
    /// delay, not only the count).
    pub ack_interval: Duration,
    /// Close the connection after this long without hearing from the peer.
    pub idle_timeout: Duration,
    /// Send a PING after this long without sending anything ack-eliciting.
    pub keepalive: Duration,
    /// Bound on frame bytes queued but not yet sent once (the send queue), in bytes.
    pub max_unsent_bytes: u64,
    /// Bounds on what a peer can make the receiver hold.
    pub recv_limits: RecvLimits,
    /// Rotate the sending key after this many packets. Default 2^23: RFC 9001 section 6.6 puts AES-GCM's
    /// confidentiality limit at 2^23 packets per key.
    pub key_update_packets: u64,
    /// Encrypt and authenticate packets. `false` only for experiments, and only by explicit config.
    pub encryption: bool,
    /// Feature `fuzzing` only: with `encryption`, packets carry the test AEAD of
    /// [`crate::crypto::PacketKey::test_mode`] (a fixed tag per key generation, no encryption) instead of
    /// AES-GCM, so that a fuzzer can write packets a connection accepts.
    #[cfg(feature = "fuzzing")]
    pub test_aead: bool,
    /// Largest burst the pacer releases at once, in packets.
    pub pacer_burst_packets: u32,
    /// When a packet must wait for the pacer, wait until this much time's worth of the rate has accrued, so
    /// that packets leave in rounds (default `congestion::pacer::PACING_ROUND`, 500 us: one timer and one GSO
    /// batch per round instead of one per packet). Zero: wait for the packet alone.
    pub pacing_round: Duration,
    /// Time between handshake retransmissions (doubles on each try).
    pub handshake_retry: Duration,
    /// Give up the handshake after this many attempts.
    pub handshake_attempts: u32,
    /// Startup priming: for at most this long after the handshake, while the congestion controller is still
    /// in its startup phase and no frame is waiting, fill the window with PING + PADDING packets, so that the
    /// controller finds the path's rate before a live stream's first keyframes need it (a stream alone is
    /// app-limited and would teach it only its own bitrate). Zero turns it off. Bulk traffic never primes: it
    /// always has frames waiting.
    pub startup_priming: Duration,
    /// Most bytes startup priming may send (bounds its cost where the path is faster than anything the
    /// connection will carry).
    pub startup_priming_bytes: u64,
}

impl ConnectionConfig {
    /// The frame bytes a data packet has room for: the datagram less its header and tag and, when encrypted,
    /// rounded down to whole cipher blocks, so that a full packet seals and opens on the cipher's fast path
    /// (see [`crate::crypto::BLOCK_LEN`]).
    pub fn payload_room(&self) -> usize {
        let room = self
            .max_datagram_bytes
            .saturating_sub(crate::wire::packet::DATA_HEADER_LEN + self.tag_len());
        if self.encryption {
            room - room % crate::crypto::BLOCK_LEN
        } else {
            room
        }
    }

    /// The UDP payload of a full data packet: at most `max_datagram_bytes`, and less by what
    /// [`ConnectionConfig::payload_room`] rounds off (1393 bytes for the default 1400, encrypted).
    pub fn full_packet_bytes(&self) -> usize {
        (crate::wire::packet::DATA_HEADER_LEN + self.payload_room() + self.tag_len())
            .min(self.max_datagram_bytes)
    }

    /// Bytes the AEAD tag adds to each data packet (none in plaintext mode).
    fn tag_len(&self) -> usize {
        if self.encryption {
            crate::crypto::TAG_LEN
        } else {
            0
        }
    }
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_datagram_bytes: 1400,
            congestion: ControllerKind::Popline,
            initial_rtt: Duration::from_millis(100),
            max_ack_delay: Duration::from_millis(5),
            ack_every: 8,
            ack_interval: Duration::from_millis(1),
            idle_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(5),
            max_unsent_bytes: 64 << 20,
            recv_limits: RecvLimits::default(),
            key_update_packets: 1 << 23,
            encryption: true,
            #[cfg(feature = "fuzzing")]
            test_aead: false,
            pacer_burst_packets: 4,
            pacing_round: crate::congestion::pacer::PACING_ROUND,
            handshake_retry: Duration::from_millis(300),
            handshake_attempts: 8,
            startup_priming: Duration::from_secs(2),
            startup_priming_bytes: 32 << 20,
        }
    }
}

/// Settings of an endpoint: its identity, whom it accepts, and the connection settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// This endpoint's static X25519 key pair (its identity).
    pub keypair: StaticKeypair,
    /// Optional pre-shared key mixed into every handshake (Noise psk2).
    pub psk: Option<[u8; 32]>,
    /// Static public keys allowed to connect (a mesh endpoint lists its peers). When the list is not empty,
    /// only the keys on it are accepted, PSK or not.
    pub authorized_peers: Vec<[u8; 32]>,
    /// Accept a peer that is not on `authorized_peers` (and, with no PSK, any peer at all). `false` (the
    /// default): with an empty list and no PSK nobody can connect; open acceptance is only ever by this
    /// explicit choice. With a PSK and an empty list, knowing the PSK is what authorizes (the server reports
    /// such a peer only once it proved the PSK with its first packet).
    pub accept_any_peer: bool,
    /// Accept incoming connections at all.
    pub accept_incoming: bool,
    /// Always demand a cookie (address validation) before spending any state or DH work on a peer.
    pub require_cookie: bool,
    /// Most connections at once.
    pub max_connections: usize,
    /// Handshakes (Initials that get as far as the Noise DH work) accepted per second from one source IP
    /// address, on average (WireGuard limits handshakes per source the same way). An Initial over the limit
    /// is dropped before any DH and counted in `EndpointStats::handshakes_rate_limited`; the client's retry
    /// comes later. Zero: no limit. Default 50.
    pub handshake_rate_per_source: u32,
    /// Handshakes one source IP may start at once above that rate (the bucket's depth). Default 50.
    pub handshake_burst_per_source: u32,
    /// Bytes all connections together may hold in frames being received (the sum of what each charges
    /// against its `RecvLimits::max_buffered_bytes`): a bound on the memory peers can make this endpoint hold,
    /// whatever their number. A fragment that would pass it is refused (counted in each connection's
    /// `RecvStats::refused_over_endpoint_budget`) and repaired later by its sender. Default 1 GiB.
    pub max_recv_buffered_bytes: u64,
    /// Settings for each connection.
    pub connection: ConnectionConfig,
}

impl EndpointConfig {
    /// Whether a peer that authenticated with `peer_static` may connect (see `authorized_peers`,
    /// `accept_any_peer` and `psk`).
    pub fn is_authorized(&self, peer_static: &[u8; 32]) -> bool {
        if self.authorized_peers.contains(peer_static) || self.accept_any_peer {
            return true;
        }
        self.authorized_peers.is_empty() && self.psk.is_some()
    }

    /// A config with the given identity and defaults for the rest: it accepts nobody until peers are listed in
    /// `authorized_peers`, a PSK is set, or `accept_any_peer` is chosen.
    pub fn new(keypair: StaticKeypair) -> Self {
        EndpointConfig {
            keypair,
            psk: None,
            authorized_peers: Vec::new(),
            accept_any_peer: false,
            accept_incoming: true,
            require_cookie: true,
            max_connections: 1024,
            handshake_rate_per_source: 50,
            handshake_burst_per_source: 50,
            max_recv_buffered_bytes: 1 << 30,
            connection: ConnectionConfig::default(),
        }
    }
}
