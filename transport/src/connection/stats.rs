//! What a connection reports about itself.

use super::reassembly::RecvStats;
use super::send_queue::SendStats;

use crate::congestion::ControllerStats;
use std::time::Duration;

/// A snapshot of one connection's counters and estimates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionStats {
    /// Smoothed RTT.
    pub rtt: Duration,
    /// Minimum RTT seen.
    pub min_rtt: Duration,
    /// Congestion controller gauges (cwnd, pacing rate, bandwidth estimate, delivery rate).
    pub congestion: ControllerStats,
    /// The controller's phase (e.g. `startup`, `cruise`).
    pub congestion_phase: &'static str,
    /// Bytes in flight now.
    pub bytes_in_flight: u64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Bytes sent on the wire (headers, tags and ACK-only packets included).
    pub bytes_sent: u64,
    /// Packets received and authenticated.
    pub packets_received: u64,
    /// Bytes received in authenticated packets.
    pub bytes_received: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Probe timeouts.
    pub probe_timeouts: u64,
    /// Tail probes sent (a TAIL_PROBE after a burst's last packet).
    pub tail_probes: u64,
    /// Packets that failed authentication.
    pub auth_failures: u64,
    /// Packets refused as replays or too old for the replay window.
    pub replays: u64,
    /// Packets that authenticated but carried malformed frames.
    pub malformed: u64,
    /// Key updates performed by this side.
    pub key_updates: u64,
    /// Packets refused because the peer moved to yet another key phase before we acknowledged a packet of
    /// its current one (RFC 9001 section 6.2's consecutive key updates; this bounds key derivations).
    pub peer_key_updates_refused: u64,
    /// Packets refused as malformed for carrying more than one ACK frame (also counted in `malformed`).
    pub extra_ack_frames: u64,
    /// Startup priming packets sent (PING + PADDING while the controller looked for the path's rate).
    pub priming_packets: u64,
    /// Bytes in those packets.
    pub priming_bytes: u64,
    /// Times sending stopped at the anti-amplification limit: to a peer address not yet validated, at most
    /// three times the bytes received from it (before the client's first authenticated packet when no
    /// cookie proved its address, and on a new path until its validation).
    pub amplification_limited: u64,
    /// Times the peer's newest packet came from a new address (a path validation started).
    pub migrations: u64,
    /// New paths validated (our PATH_CHALLENGE answered from them).
    pub path_validations: u64,
    /// New paths that failed validation in time: the connection went back to the last validated address.
    pub path_validation_failures: u64,
    /// Send side: frames by kind (queued, acked, dropped by reason), payload and repair bytes.
    pub send: SendStats,
    /// Receive side: frames delivered, dropped, discarded, gaps.
    pub recv: RecvStats,
}

impl SendStats {
    /// Repair bytes over first-transmission payload bytes.
    pub fn overhead_ratio(&self) -> f64 {
        if self.payload_bytes_first == 0 {
            0.0
        } else {
            self.payload_bytes_repair as f64 / self.payload_bytes_first as f64
        }
    }
}

impl ConnectionStats {
    /// Repair bytes over first-transmission payload bytes.
    pub fn overhead_ratio(&self) -> f64 {
        self.send.overhead_ratio()
    }
}
