//! The transport on the engine: the glue that runs a sans-IO `transport::Endpoint` over the engine's UDP
//! sockets, as the `quinn` crate sits above quinn-proto and quinn-udp. `engine` knows no protocol; this
//! module is where the two meet.
//!
//! - [`driver`]: [`TransportDriver`], one endpoint on one socket (either backend): GSO batches written by the
//!   endpoint in place, GRO runs split by reference, the endpoint's timers;
//! - [`cores`]: [`TransportCores`], one driver per core on a shared SO_REUSEPORT port, with a bounded inbox.

pub mod cores;
pub mod driver;

pub use cores::{Command, CoreReport, CoresConfig, PostError, TransportCores};
pub use driver::{DriverConfig, DriverStats, TransportDriver};
