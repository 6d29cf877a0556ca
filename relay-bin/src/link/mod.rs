//! The transport on the engine: the glue that runs a sans-IO `transport::Endpoint` over the engine's UDP
//! sockets, as the `quinn` crate sits above quinn-proto and quinn-udp. `engine` knows no protocol; this
//! module is where the two meet.
//!
//! - [`driver`]: [`TransportDriver`], one endpoint on one socket (either backend): GSO batches written by the
//!   endpoint in place, GRO runs split by reference, the endpoint's timers;
//! - [`cores`]: [`TransportCores`], the transport on every core of a shared SO_REUSEPORT port, with a bounded
//!   inbox: on io_uring each core is a [`CoreLink`] on the core's [`engine::uring::CoreIo`] (the node's per-core
//!   runtime), on epoll a [`TransportDriver`];
//! - [`core_link`]: [`CoreLink`], an endpoint on one UDP socket of a core's shared ring
//!   ([`engine::uring::CoreIo`]), run as a non-blocking step of the core's loop (next to its TCP viewers);
//! - [`transmit`]: what both share: GSO batches written by the endpoint in place ([`Transmitter`]) and
//!   GRO runs split by reference ([`transmit::deliver`]).

pub mod core_link;
pub mod cores;
pub mod driver;
pub mod transmit;

pub use core_link::CoreLink;
pub use cores::{Command, CoreReport, CoresConfig, PostError, TransportCores};
pub use driver::{DriverConfig, DriverStats, TransportDriver};
pub use transmit::{CoreUdp, DatagramSink, Transmitter};

/// Gives `endpoint` the wall clock, read here (the transport never reads one): its handshake timestamps must
/// keep growing across a restart of this node, or peers that remember its earlier handshakes refuse it (see
/// `transport::Endpoint::set_unix_time`).
pub(crate) fn give_wall_clock(endpoint: &mut transport::Endpoint) {
    if let Ok(since_epoch) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        endpoint.set_unix_time(std::time::Instant::now(), since_epoch);
    }
}
