//! [`UringLoop`]: the thin IO loop that runs one [`NodeCore`] on an io_uring (the default backend).
//!
//! One ring per core ([`engine::uring::CoreIo`], which PoP links' UDP sockets will share): a multishot
//! accept on the core's SO_REUSEPORT listener,
//! a multishot receive per connection into the ring's provided buffers (the core reads the bytes in place,
//! no copy), the core's waker eventfd watched by a multishot poll (drained only when it fired), and each viewer's queued frames handed to
//! its connection's send queue as the shared `Bytes` themselves (one `writev` per connection and
//! completion, no copy). A connection's send queue is small ([`SEND_QUEUE_BYTES`]): a slow viewer's backlog
//! stays in its viewer queue, where the app's drop policy applies, and the ring reports when the
//! connection can take more. Every decision is the core's; this file only moves bytes and completions.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use engine::uring::{CoreEvent, CoreIo, TcpConnId, TcpEvent, TcpId, UringTcpConfig};
use engine::{Listener, Waker};
use tracing::warn;

use crate::mesh::config::MeshSetup;
use crate::node::clients::Token;
use crate::node::core::{Close, NodeCore, Protocol};
use crate::node::mailbox::CoreMsg;
use crate::node::mesh_runner::MeshRunner;
use crate::node::shared::Shared;

/// Bytes a connection's io_uring send queue holds before the core's viewer queue keeps the rest (one buffer
/// bigger than this, a large keyframe, is always taken by an empty queue).
pub const SEND_QUEUE_BYTES: usize = 256 << 10;

/// One core's IO on its io_uring, around its [`NodeCore`].
pub struct UringLoop {
    core: NodeCore,
    io: CoreIo,
    inbox: Receiver<CoreMsg>,
    waker: Arc<Waker>,
    /// The ring's listeners: RTMP, and HTTP egress when it is on.
    listeners: Listeners,
    /// The core's tokens and the ring's connections (listener, connection id), both ways.
    conns: HashMap<Token, Conn, foldhash::fast::RandomState>,
    tokens_of: HashMap<Conn, Token, foldhash::fast::RandomState>,
    tokens: Vec<Token>,
    closed: Vec<(Token, Close)>,
    refused: Vec<Conn>,
    /// Connections closing once their last bytes are written, closed hard at their deadline (a peer that
    /// stopped reading cannot hold one open).
    flushing: Vec<(Instant, Conn)>,
    /// The PoP mesh, on the mesh core when the mesh is on: its UDP socket shares this ring.
    mesh: Option<Box<MeshRunner>>,
    /// How the ring's waits gather completions (`[engine] wake_batch`), widened for one wait while a peer
    /// PoP is in the middle of sending a frame's train (`WaitBatch::for_train`).
    wait_batch: engine::uring::WaitBatch,
}

/// A connection on the ring: the listener that accepted it and its id there.
type Conn = (TcpId, TcpConnId);

/// Which protocol each of the ring's listeners serves: HTTP egress's, and RTMP for the other.
#[derive(Debug, Clone, Copy)]
struct Listeners {
    http: Option<TcpId>,
}

impl Listeners {
    fn protocol(&self, id: TcpId) -> Protocol {
        if Some(id) == self.http {
            Protocol::Http
        } else {
            Protocol::Rtmp
        }
    }
}

/// How long a closing connection may take to write its last bytes.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// The ring's settings for a node core.
pub fn tcp_config(shared: &Shared) -> UringTcpConfig {
    UringTcpConfig {
        max_queued_bytes: SEND_QUEUE_BYTES,
        max_connections: shared.config.rtmp.max_connections_per_core,
        liveness: shared.config.liveness(),
        ring: engine::uring::RingConfig {
            batch: shared.config.engine.wait_batch(),
            completion_entries: completion_entries(shared.config.rtmp.max_connections_per_core),
            ..engine::uring::RingConfig::default()
        },
        ..UringTcpConfig::default()
    }
}

/// A completion queue that holds a completion for each of `max_connections` (a write or a receive each, at
/// once, as when a frame goes to every viewer) and the listeners', so that none waits on the kernel's overflow
/// list behind the others (`RingConfig::completion_entries`): measured at 4000 viewers on one core, the
/// default 512 made each loop pass reap 512 write completions while the publisher's next frame waited.
fn completion_entries(max_connections: usize) -> u32 {
    let wanted = max_connections.saturating_mul(2).saturating_add(1024);
    u32::try_from(wanted)
        .unwrap_or(u32::MAX)
        .min(engine::uring::MAX_COMPLETION_ENTRIES)
}

impl UringLoop {
    /// The loop of core `index`: its ring takes the (already bound) RTMP listener and the HTTP egress one
    /// when there is one; fails where io_uring is refused (the caller falls back to epoll).
    pub fn new(
        index: usize,
        shared: Arc<Shared>,
        listener: Listener,
        egress: Option<Listener>,
        inbox: Receiver<CoreMsg>,
        waker: Arc<Waker>,
        mesh: Option<MeshSetup>,
    ) -> io::Result<UringLoop> {
        let config = tcp_config(&shared);
        let mut io = CoreIo::new(&config.ring)?;
        io.listen(listener.into_std(), config)?;
        let http = match egress {
            // HTTP viewers send one request head: a few small receive buffers serve them all.
            Some(egress) => Some(io.listen(
                egress.into_std(),
                UringTcpConfig {
                    buffer_count: 64,
                    buffer_bytes: 4 << 10,
                    ..config
                },
            )?),
            None => None,
        };
        io.watch(std::os::fd::AsRawFd::as_raw_fd(&*waker));
        let now = Instant::now();
        let mesh = match mesh {
            Some(setup) => Some(Box::new(MeshRunner::open(&mut io, shared.clone(), setup, now)?)),
            None => None,
        };
        Ok(UringLoop {
            wait_batch: io.wait_batch(),
            mesh,
            core: NodeCore::new(index, shared, now),
            io,
            inbox,
            waker,
            listeners: Listeners { http },
            conns: HashMap::default(),
            tokens_of: HashMap::default(),
            tokens: Vec::new(),
            closed: Vec::new(),
            refused: Vec::new(),
            flushing: Vec::new(),
        })
    }

    /// Runs until [`CoreMsg::Shutdown`].
    pub fn run(mut self) {
        while !self.core.is_stopped() {
            let now = Instant::now();
            let mut deadline = self.core.poll_timeout();
            if let Some(mesh) = &self.mesh {
                deadline = deadline.min(mesh.poll_timeout(now));
            }
            let timeout = deadline.saturating_duration_since(now);
            let train = self.mesh.as_ref().and_then(|m| m.receive_batch_hint(now));
            self.io.set_wait_batch(self.wait_batch.for_train(train));
            if let Err(error) = self.io.wait(Some(timeout)) {
                warn!(core = self.core.index(), %error, "io_uring wait failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            let now = Instant::now();
            self.reap(now);
            if self.io.take_woken() {
                self.waker.drain();
            }
            self.core.drain_inbox(now, &self.inbox);
            self.core.tick(now);
            if let Some(mesh) = &mut self.mesh {
                mesh.run(now, &mut self.io, &mut self.core);
            }
            self.write(now);
            self.perform(now);
        }
        self.core.shutdown(Instant::now());
        self.perform(Instant::now());
    }

    /// Hands the ring's completions to the core: accepts, bytes (read in place), writability, ends.
    fn reap(&mut self, now: Instant) {
        let UringLoop {
            core,
            io,
            conns,
            tokens_of,
            refused,
            mesh,
            listeners,
            ..
        } = self;
        io.reap(&mut |event| match event {
            CoreEvent::Tcp(listener, event) => {
                let protocol = listeners.protocol(listener);
                on_tcp(core, conns, tokens_of, refused, now, listener, protocol, event)
            }
            CoreEvent::Datagram {
                socket,
                from,
                bytes,
                segment,
            } => {
                if let Some(mesh) = mesh.as_mut().filter(|m| m.socket() == socket) {
                    mesh.on_datagram(now, from, bytes, segment);
                }
            }
        });
        for (listener, id) in self.refused.drain(..) {
            if let Some(tcp) = self.io.tcp(listener) {
                tcp.close(id);
            }
        }
    }

    fn write(&mut self, now: Instant) {
        let mut tokens = std::mem::take(&mut self.tokens);
        self.core.take_due_writes(now, &mut tokens);
        for &token in &tokens {
            let Some(&(listener, id)) = self.conns.get(&token) else {
                continue;
            };
            let Some(tcp) = self.io.tcp(listener) else {
                continue;
            };
            // A refused buffer stays in the viewer queue; the ring reports `Writable` when the connection's
            // queue has drained to half (or `Closed`).
            self.core
                .send_client(now, token, |bytes| tcp.send(id, bytes).is_ok());
        }
        tokens.clear();
        self.tokens = tokens;
    }

    /// Closes the connections the core closed and wakes the cores it posted to.
    fn perform(&mut self, now: Instant) {
        let mut closed = std::mem::take(&mut self.closed);
        self.core.take_closed(&mut closed);
        for &(token, how) in &closed {
            let Some(conn) = self.conns.remove(&token) else {
                continue;
            };
            self.tokens_of.remove(&conn);
            let Some(tcp) = self.io.tcp(conn.0) else {
                continue;
            };
            match how {
                Close::Now => tcp.close(conn.1),
                Close::AfterFlush => {
                    tcp.close_after_flush(conn.1);
                    self.flushing.push((now + CLOSE_FLUSH, conn));
                }
            }
        }
        closed.clear();
        self.closed = closed;
        if self
            .flushing
            .first()
            .is_some_and(|&(deadline, _)| now >= deadline)
        {
            let io = &mut self.io;
            // A connection that finished meanwhile has a dead id: closing it again does nothing.
            self.flushing.retain(|&(deadline, (listener, id))| {
                let due = now >= deadline;
                if due {
                    if let Some(tcp) = io.tcp(listener) {
                        tcp.close(id);
                    }
                }
                !due
            });
        }
        self.core.wake_posted();
    }
}

/// Hands one TCP event of `listener` (which serves `protocol`) to the core: accepts, bytes (read in place),
/// writability, ends.
#[allow(clippy::too_many_arguments)]
fn on_tcp(
    core: &mut NodeCore,
    conns: &mut HashMap<Token, Conn, foldhash::fast::RandomState>,
    tokens_of: &mut HashMap<Conn, Token, foldhash::fast::RandomState>,
    refused: &mut Vec<Conn>,
    now: Instant,
    listener: TcpId,
    protocol: Protocol,
    event: TcpEvent<'_>,
) {
    match event {
        TcpEvent::Accepted(id, peer) => match core.accept_as(now, peer, protocol) {
            Some(token) => {
                conns.insert(token, (listener, id));
                tokens_of.insert((listener, id), token);
            }
            None => refused.push((listener, id)),
        },
        TcpEvent::Data(id, bytes) => {
            if let Some(&token) = tokens_of.get(&(listener, id)) {
                core.input(now, token, bytes);
            }
        }
        TcpEvent::Writable(id) => {
            if let Some(&token) = tokens_of.get(&(listener, id)) {
                core.writable(token);
            }
        }
        TcpEvent::Closed(id, error) => {
            if let Some(token) = tokens_of.remove(&(listener, id)) {
                conns.remove(&token);
                core.connection_lost(now, token, crate::node::io_loop::lost_reason(error.as_ref()));
            }
        }
    }
}
