//! [`MeshRunner`]: the PoP mesh on the mesh core's ring. It owns the mesh's UDP socket as a [`CoreLink`] on
//! the core's [`CoreIo`] (next to that core's RTMP clients) and runs the sans-IO [`MeshNode`] with the
//! link's endpoint, the core's clock and the wall clock. The core's loop hands it the socket's datagrams and
//! calls [`MeshRunner::run`] once per iteration.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use engine::uring::{CoreIo, UdpId};
use engine::{UdpConfig, UdpSocket};
use tracing::{info, warn};
use transport::Endpoint;

use crate::bans::unix_now_ms;
use crate::link::{CoreLink, DriverConfig};
use crate::mesh::config::MeshSetup;
use crate::node::core::NodeCore;
use crate::node::mesh_node::MeshNode;
use crate::node::shared::Shared;

/// The mesh on the mesh core.
#[derive(Debug)]
pub struct MeshRunner {
    node: MeshNode,
    link: CoreLink,
}

impl MeshRunner {
    /// Binds the mesh's UDP socket on `io` (the mesh core's ring) and starts the mesh of `setup`.
    pub fn open(
        io: &mut CoreIo,
        shared: Arc<Shared>,
        setup: MeshSetup,
        now: Instant,
    ) -> io::Result<MeshRunner> {
        let socket = UdpSocket::bind(setup.listen, &UdpConfig::default()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "mesh.listen {}: cannot bind the mesh's UDP socket: {e}",
                    setup.listen
                ),
            )
        })?;
        let endpoint = Endpoint::new(MeshNode::endpoint_config(&setup), now)
            .map_err(|e| io::Error::other(format!("mesh: cannot start the transport endpoint: {e}")))?;
        let link = CoreLink::open(io, socket, endpoint, &DriverConfig::default())?;
        info!(
            id = %setup.params.me,
            listen = %link.local_addr(),
            peers = setup.peers.len(),
            "mesh listening"
        );
        Ok(MeshRunner {
            node: MeshNode::new(shared, setup, now),
            link,
        })
    }

    /// The mesh socket's id on the core's ring: its datagrams go to [`MeshRunner::on_datagram`].
    pub fn socket(&self) -> UdpId {
        self.link.socket()
    }

    /// A receive from the mesh socket (a datagram or a GRO run).
    pub fn on_datagram(
        &mut self,
        now: Instant,
        from: std::net::SocketAddr,
        bytes: BytesMut,
        segment: Option<usize>,
    ) {
        self.link.on_datagram(now, from, bytes, segment);
    }

    /// Datagrams the peer PoPs are in the middle of sending, and how long the core's wait may gather them
    /// (`transport::Endpoint::receive_batch_hint`).
    pub fn receive_batch_hint(&self, now: Instant) -> Option<(u32, Duration)> {
        self.link.endpoint().receive_batch_hint(now)
    }

    /// When [`MeshRunner::run`] must be called at the latest.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        let at = self.node.poll_timeout();
        self.link.poll_timeout(now).map_or(at, |t| t.min(at))
    }

    /// One step: the endpoint's timers, the mesh node's work, and what it queued handed to the ring (the
    /// loop's next wait submits it).
    pub fn run(&mut self, now: Instant, io: &mut CoreIo, core: &mut NodeCore) {
        self.step(now, io);
        self.node.run(now, unix_now_ms(), self.link.endpoint_mut(), core);
        self.step(now, io);
    }

    fn step(&mut self, now: Instant, io: &mut CoreIo) {
        if let Err(error) = self.link.step(io, now) {
            warn!(%error, "mesh: sending on the mesh socket failed");
        }
    }
}
