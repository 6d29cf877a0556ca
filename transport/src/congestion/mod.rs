//! Congestion control: the [`Controller`] trait, the default model-based controller and the loss-based ones
//! kept for comparison, the delivery-rate sampler they share, and the pacer.
//!
//! The connection owns the sent-packet records; a controller sees packets only through the small structs
//! below. It never reads a clock: every call carries `now`.

use std::time::{Duration, Instant};

pub mod cubic;
pub mod delivery_rate;
pub mod loss_based;
pub mod new_reno;
pub mod pacer;
pub mod popline;

pub use delivery_rate::RateSnapshot;
pub use pacer::Pacer;

/// Maximum datagram size the controllers assume for their window arithmetic, in bytes.
pub const MAX_DATAGRAM_BYTES: u64 = 1_400;

/// One packet handed to the network.
#[derive(Debug, Clone, Copy)]
pub struct SentPacket {
    /// When it was sent.
    pub now: Instant,
    /// Its size on the wire, in bytes.
    pub bytes: u64,
    /// Bytes in flight *before* this packet was sent.
    pub bytes_in_flight: u64,
    /// True when the sender had nothing more to send (the application, not the window, limited it).
    pub app_limited: bool,
}

/// A packet newly acknowledged by the peer.
#[derive(Debug, Clone, Copy)]
pub struct AckedPacket {
    /// When it was sent.
    pub sent_time: Instant,
    /// Its size on the wire, in bytes.
    pub bytes: u64,
    /// What [`Controller::on_sent`] returned for it.
    pub snapshot: RateSnapshot,
}

/// A packet newly declared lost by loss detection.
#[derive(Debug, Clone, Copy)]
pub struct LostPacket {
    /// When it was sent.
    pub sent_time: Instant,
    /// Its size on the wire, in bytes.
    pub bytes: u64,
}

/// The connection's round-trip-time estimates at the time of an ACK.
#[derive(Debug, Clone, Copy)]
pub struct RttSnapshot {
    /// The RTT measured from the newest acknowledged packet, if this ACK produced a sample.
    pub latest: Option<Duration>,
    /// The smallest RTT seen over the connection's min-RTT window.
    pub min: Duration,
    /// The smoothed RTT (RFC 6298 style).
    pub smoothed: Duration,
}

/// Everything one received ACK changed, delivered to the controller at once.
#[derive(Debug, Clone, Copy)]
pub struct AckEvent<'a> {
    /// When the ACK was processed.
    pub now: Instant,
    /// Packets this ACK newly acknowledged, oldest first.
    pub acked: &'a [AckedPacket],
    /// Packets loss detection declared lost while processing this ACK, oldest first.
    pub lost: &'a [LostPacket],
    /// RTT estimates after this ACK.
    pub rtt: RttSnapshot,
    /// Bytes still in flight after removing the acked and lost packets.
    pub bytes_in_flight: u64,
}

/// Counters and gauges a controller reports for stats.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ControllerStats {
    /// Congestion window, in bytes.
    pub cwnd_bytes: u64,
    /// Pacing rate, in bytes per second.
    pub pacing_rate_bytes_per_s: u64,
    /// The controller's bottleneck-bandwidth estimate in bytes per second (0 when it keeps none).
    pub bandwidth_estimate_bytes_per_s: u64,
    /// The newest delivery-rate sample, in bytes per second.
    pub delivery_rate_bytes_per_s: u64,
    /// Times the controller reduced its window or rate in response to congestion.
    pub congestion_events: u64,
}

/// A congestion controller: decides how many bytes may be in flight and how fast they leave.
pub trait Controller: std::fmt::Debug + Send {
    /// A short name for stats and reports (`"popline"`, `"newreno"`, `"cubic"`).
    fn name(&self) -> &'static str;
    /// Called for every packet sent that counts towards bytes in flight. The returned snapshot is stored with
    /// the packet and handed back in [`AckedPacket::snapshot`].
    fn on_sent(&mut self, packet: &SentPacket) -> RateSnapshot;
    /// Called once per received ACK frame that acknowledged or lost something.
    fn on_ack(&mut self, event: &AckEvent<'_>);
    /// Called when the retransmission timer fired with no ACK at all (the path may be dead).
    fn on_retransmission_timeout(&mut self, now: Instant);
    /// The congestion window in bytes: the connection never has more than this in flight.
    fn window(&self) -> u64;
    /// The pacing rate in bytes per second.
    fn pacing_rate(&self) -> u64;
    /// Stats for reports.
    fn stats(&self) -> ControllerStats;
    /// The controller's state machine phase, for traces (e.g. `"startup"`, `"probe_bw:up"`).
    fn phase(&self) -> &'static str {
        ""
    }
}

/// Which controller a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControllerKind {
    /// The default: model-based (bottleneck bandwidth and min RTT), tolerant of random loss.
    #[default]
    Popline,
    /// RFC 6582 / RFC 9002 NewReno, for comparison.
    NewReno,
    /// RFC 9438 CUBIC, for comparison.
    Cubic,
}

impl ControllerKind {
    /// Builds a fresh controller of this kind.
    pub fn build(self, now: Instant) -> Box<dyn Controller> {
        match self {
            ControllerKind::Popline => Box::new(popline::Popline::new(now)),
            ControllerKind::NewReno => Box::new(new_reno::NewReno::new(now)),
            ControllerKind::Cubic => Box::new(cubic::Cubic::new(now)),
        }
    }

    /// Parses `popline`, `newreno` or `cubic`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "popline" | "bbr" => Some(ControllerKind::Popline),
            "newreno" | "reno" => Some(ControllerKind::NewReno),
            "cubic" => Some(ControllerKind::Cubic),
            _ => None,
        }
    }

    /// The name `parse` accepts.
    pub fn name(self) -> &'static str {
        match self {
            ControllerKind::Popline => "popline",
            ControllerKind::NewReno => "newreno",
            ControllerKind::Cubic => "cubic",
        }
    }
}
