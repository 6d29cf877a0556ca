//! The transport on every core: one thread per core, pinned, each with its own SO_REUSEPORT UDP socket on
//! the shared port, its own `transport::Endpoint` and its own timers (the endpoint's `poll_timeout`, one
//! deadline per core, no syscall per timer). On io_uring a core runs the engine's per-core runtime, the
//! node's: the socket is a driver on the core's one ring ([`CoreIo`]) and the endpoint a [`CoreLink`] stepped
//! by the core's loop; on epoll (io_uring refused, or asked for) a [`TransportDriver`].
//!
//! Steering: the kernel spreads datagrams over a reuseport group by a hash of the 4-tuple, so every datagram
//! of one connection (same peer address and port) reaches the same socket, hence the same core, which is the
//! core that saw its Initial and owns its state. Nothing crosses cores per packet, and no BPF program is
//! needed while the group does not change. (A peer that migrates to a new address lands on another core and
//! reconnects; connection-id steering with a reuseport BPF program is the step after this one.)
//!
//! Other threads talk to a core through its bounded inbox ([`TransportCores::post`]: a closure run on the
//! core with its endpoint) and an eventfd [`Waker`] the core's backend watches, so an idle core sleeps in
//! its wait and wakes at once, without spinning.

use super::core_link::CoreLink;
use super::driver::{DriverConfig, DriverStats, TransportDriver};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use engine::affinity;
use engine::uring::{self, CoreEvent, CoreIo};
use engine::{Backend, BackendChoice, IoStats, UdpConfig, UdpSocket, Waker};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use transport::{ConnectionHandle, Endpoint, EndpointStats, Event};

/// A job for a core: runs on the core's thread with its endpoint.
pub type Command = Box<dyn FnOnce(&mut Endpoint) + Send>;

/// How to run the transport on cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoresConfig {
    /// Number of cores (threads); 0 means one per CPU this process may run on.
    pub cores: usize,
    /// Pin core `i` to the `i`-th allowed CPU.
    pub pin: bool,
    /// Socket options (SO_REUSEPORT is always set).
    pub udp: UdpConfig,
    /// The driver and its backend, per core.
    pub driver: DriverConfig,
    /// Commands each core's inbox holds before [`TransportCores::post`] refuses more.
    pub inbox_capacity: usize,
    /// Longest one wait of an idle core (its waker and its endpoint's timers end a wait sooner).
    pub max_wait: Duration,
}

impl Default for CoresConfig {
    fn default() -> Self {
        CoresConfig {
            cores: 0,
            pin: true,
            udp: UdpConfig::default(),
            driver: DriverConfig::default(),
            inbox_capacity: 1024,
            max_wait: Duration::from_millis(100),
        }
    }
}

/// What a core reports when it stops.
#[derive(Debug, Clone)]
pub struct CoreReport {
    /// The core's index.
    pub core: usize,
    /// The CPU it was pinned to, if it was.
    pub cpu: Option<usize>,
    /// The backend its socket ran on.
    pub backend: Backend,
    /// Its driver's counters.
    pub driver: DriverStats,
    /// Its backend's counters.
    pub io: IoStats,
    /// Its endpoint's counters.
    pub endpoint: EndpointStats,
    /// Commands it ran.
    pub commands: u64,
    /// Time its loop iterations took with work to do (wait excluded), microseconds: p50, p99, max.
    pub iteration_us: [u64; 3],
    /// Why it stopped early, if it failed.
    pub error: Option<String>,
}

/// Why [`TransportCores::post`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// No such core.
    #[error("no core {0}")]
    NoSuchCore(usize),
    /// The core's inbox is full (it is overloaded); the command was not queued.
    #[error("core {0}'s inbox is full")]
    Full(usize),
    /// The core has stopped.
    #[error("core {0} has stopped")]
    Stopped(usize),
}

struct CoreHandle {
    inbox: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<CoreReport>>,
}

/// The transport running on a set of cores that share one UDP port.
pub struct TransportCores {
    local_addr: SocketAddr,
    cores: Vec<CoreHandle>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for TransportCores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportCores")
            .field("local_addr", &self.local_addr)
            .field("cores", &self.cores.len())
            .finish()
    }
}

impl TransportCores {
    /// Starts the cores on `addr` (port 0: the first core picks one and the others join it). `make(core)`
    /// runs on each core's thread and returns its endpoint and its event handler, which the core calls with
    /// every event of its endpoint.
    pub fn start<M, H>(addr: SocketAddr, config: CoresConfig, make: M) -> io::Result<TransportCores>
    where
        M: Fn(usize) -> io::Result<(Endpoint, H)> + Send + Sync + 'static,
        H: FnMut(&mut Endpoint, ConnectionHandle, Event) + 'static,
    {
        let cpus = affinity::allowed_cpus()?;
        let count = if config.cores == 0 {
            cpus.len().max(1)
        } else {
            config.cores
        };
        let make = Arc::new(make);
        let stop = Arc::new(AtomicBool::new(false));
        let mut cores: Vec<CoreHandle> = Vec::with_capacity(count);
        let mut bind_addr = addr;
        let mut started = TransportCores {
            local_addr: addr,
            cores: Vec::new(),
            stop: stop.clone(),
        };
        for core in 0..count {
            let (inbox, commands) = bounded::<Command>(config.inbox_capacity.max(1));
            let waker = Arc::new(Waker::new()?);
            let (ready_tx, ready_rx) = mpsc::channel::<io::Result<SocketAddr>>();
            let cpu = if config.pin {
                cpus.get(core % cpus.len().max(1)).copied()
            } else {
                None
            };
            let (make, stop, waker2) = (make.clone(), stop.clone(), waker.clone());
            let thread = thread::Builder::new()
                .name(format!("transport-{core}"))
                .spawn(move || {
                    run_core(
                        core, cpu, bind_addr, config, &*make, commands, &waker2, &stop, ready_tx,
                    )
                })?;
            cores.push(CoreHandle {
                inbox,
                waker,
                thread: Some(thread),
            });
            let bound = ready_rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| io::Error::other(format!("core {core} did not start")))
                .and_then(|r| r);
            match bound {
                Ok(a) => bind_addr = a,
                Err(e) => {
                    started.cores = cores;
                    started.stop();
                    return Err(e);
                }
            }
        }
        started.local_addr = bind_addr;
        started.cores = cores;
        tracing::info!(local = %bind_addr, cores = count, pinned = config.pin, "transport cores started");
        Ok(started)
    }

    /// The shared local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Number of cores.
    pub fn len(&self) -> usize {
        self.cores.len()
    }

    /// Whether there are no cores (never, once started).
    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }

    /// Queues `command` for `core` and wakes it. Never blocks: a full inbox is an error for the caller to
    /// count or retry.
    pub fn post(&self, core: usize, command: Command) -> Result<(), PostError> {
        let c = self.cores.get(core).ok_or(PostError::NoSuchCore(core))?;
        match c.inbox.try_send(command) {
            Ok(()) => {
                c.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(PostError::Full(core)),
            Err(TrySendError::Disconnected(_)) => Err(PostError::Stopped(core)),
        }
    }

    /// Stops every core and returns their reports (in core order).
    pub fn stop(&mut self) -> Vec<CoreReport> {
        self.stop.store(true, Ordering::Release);
        for c in &self.cores {
            c.waker.wake();
        }
        let mut reports = Vec::new();
        for c in &mut self.cores {
            if let Some(t) = c.thread.take() {
                match t.join() {
                    Ok(r) => reports.push(r),
                    Err(_) => tracing::error!("a transport core panicked"),
                }
            }
        }
        reports
    }
}

impl Drop for TransportCores {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A core's transport runtime: its endpoint as a [`CoreLink`] on the core's one ring (io_uring), or a
/// [`TransportDriver`] on epoll where io_uring is refused or not asked for.
enum Runtime {
    Ring { io: Box<CoreIo>, link: Box<CoreLink> },
    Epoll(Box<TransportDriver>),
}

impl Runtime {
    /// Opens the backend `config` asks for on the calling (the core's) thread: a ring belongs to the thread
    /// that runs it. `Auto` falls back to epoll where io_uring is refused.
    fn open(
        socket: UdpSocket,
        endpoint: Endpoint,
        config: &DriverConfig,
        waker: &Waker,
    ) -> io::Result<Runtime> {
        let ring = match config.io.backend {
            BackendChoice::Epoll => false,
            BackendChoice::Uring => true,
            BackendChoice::Auto => match uring::probe() {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring is not available; the transport core runs on epoll");
                    false
                }
            },
        };
        if ring {
            let mut io = CoreIo::new(&config.io.ring)?;
            let link = CoreLink::open(&mut io, socket, endpoint, config)?;
            io.watch(waker.as_raw_fd());
            return Ok(Runtime::Ring {
                io: Box::new(io),
                link: Box::new(link),
            });
        }
        let epoll = DriverConfig {
            io: engine::IoConfig {
                backend: BackendChoice::Epoll,
                ..config.io
            },
            ..*config
        };
        let mut driver = TransportDriver::new(endpoint, socket, epoll)?;
        driver.watch(waker.as_raw_fd())?;
        Ok(Runtime::Epoll(Box::new(driver)))
    }

    fn backend(&self) -> Backend {
        match self {
            Runtime::Ring { .. } => Backend::Uring,
            Runtime::Epoll(d) => d.backend(),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        match self {
            Runtime::Ring { link, .. } => link.local_addr(),
            Runtime::Epoll(d) => d.local_addr(),
        }
    }

    fn endpoint_mut(&mut self) -> &mut Endpoint {
        match self {
            Runtime::Ring { link, .. } => link.endpoint_mut(),
            Runtime::Epoll(d) => d.endpoint_mut(),
        }
    }

    fn stats(&self) -> DriverStats {
        match self {
            Runtime::Ring { link, .. } => link.stats(),
            Runtime::Epoll(d) => d.stats(),
        }
    }

    /// One iteration: wait at most `max_wait` (less for a timer of the endpoint; not at all with more to
    /// send), receive, run due timers, send, and hand each event to `handler` (then send what it queued).
    /// Returns the microseconds spent after the wait. The epoll driver drains the waker itself.
    fn iterate<H>(&mut self, max_wait: Duration, waker: &Waker, handler: &mut H) -> io::Result<u64>
    where
        H: FnMut(&mut Endpoint, ConnectionHandle, Event),
    {
        match self {
            Runtime::Ring { io, link } => {
                let now = Instant::now();
                // What commands queued since the last iteration goes out with this wait.
                link.step(io, now)?;
                let deadline = link
                    .poll_timeout(now)
                    .map_or(now + max_wait, |t| t.min(now + max_wait));
                io.wait(Some(deadline.saturating_duration_since(now)))?;
                let now = Instant::now();
                io.reap(&mut |e| {
                    if let CoreEvent::Datagram {
                        from, bytes, segment, ..
                    } = e
                    {
                        link.on_datagram(now, from, bytes, segment);
                    }
                });
                if io.take_woken() {
                    waker.drain();
                }
                link.step(io, now)?;
                let mut handled = false;
                while let Some((ch, e)) = link.poll_event() {
                    handler(link.endpoint_mut(), ch, e);
                    handled = true;
                }
                if handled {
                    // What the handler queued (frames, closes) leaves with this iteration's sends.
                    link.step(io, now)?;
                }
                Ok(now.elapsed().as_micros() as u64)
            }
            Runtime::Epoll(driver) => {
                waker.drain();
                driver.poll(max_wait)?;
                let worked = Instant::now();
                while let Some((ch, e)) = driver.poll_event() {
                    handler(driver.endpoint_mut(), ch, e);
                }
                Ok(worked.elapsed().as_micros() as u64 + driver.last_work_us())
            }
        }
    }

    fn io_stats(&self) -> IoStats {
        match self {
            Runtime::Ring { io, link } => link.io_stats(io),
            Runtime::Epoll(d) => d.io_stats(),
        }
    }

    fn endpoint_stats(&self) -> EndpointStats {
        match self {
            Runtime::Ring { link, .. } => link.endpoint().stats(),
            Runtime::Epoll(d) => d.endpoint().stats(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_core<M, H>(
    core: usize,
    cpu: Option<usize>,
    addr: SocketAddr,
    config: CoresConfig,
    make: &M,
    commands: Receiver<Command>,
    waker: &Waker,
    stop: &AtomicBool,
    ready: mpsc::Sender<io::Result<SocketAddr>>,
) -> CoreReport
where
    M: Fn(usize) -> io::Result<(Endpoint, H)>,
    H: FnMut(&mut Endpoint, ConnectionHandle, Event),
{
    let mut report = CoreReport {
        core,
        cpu,
        backend: Backend::Epoll,
        driver: DriverStats::default(),
        io: IoStats::default(),
        endpoint: EndpointStats::default(),
        commands: 0,
        iteration_us: [0; 3],
        error: None,
    };
    // Loop latency: 1 us to 10 s, 2 significant digits (a few KiB).
    let mut iterations = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000, 2).ok();
    let setup = (|| -> io::Result<(Runtime, H)> {
        if let Some(cpu) = cpu {
            affinity::pin_current_thread(cpu)?;
        }
        let udp = UdpConfig {
            reuse_port: true,
            ..config.udp
        };
        let socket = UdpSocket::bind(addr, &udp)?;
        let (endpoint, handler) = make(core)?;
        let runtime = Runtime::open(socket, endpoint, &config.driver, waker)?;
        Ok((runtime, handler))
    })();
    let (mut runtime, mut handler) = match setup {
        Ok(x) => {
            let _ = ready.send(Ok(x.0.local_addr()));
            x
        }
        Err(e) => {
            report.error = Some(e.to_string());
            let _ = ready.send(Err(e));
            return report;
        }
    };
    report.backend = runtime.backend();
    tracing::debug!(
        core,
        ?cpu,
        backend = runtime.backend().name(),
        "transport core running"
    );
    while !stop.load(Ordering::Acquire) {
        while let Ok(cmd) = commands.try_recv() {
            cmd(runtime.endpoint_mut());
            report.commands += 1;
        }
        // One wait per iteration: a posted command (the waker) or the stop flag ends it.
        let before = runtime.stats();
        let worked_us = match runtime.iterate(config.max_wait, waker, &mut handler) {
            Ok(us) => us,
            Err(e) => {
                tracing::error!(core, error = %e, "transport core stopped");
                report.error = Some(e.to_string());
                break;
            }
        };
        let after = runtime.stats();
        if let Some(h) = iterations.as_mut() {
            if after.datagrams_received > before.datagrams_received
                || after.datagrams_sent > before.datagrams_sent
            {
                let _ = h.record(worked_us.max(1));
            }
        }
    }
    if let Some(h) = &iterations {
        report.iteration_us = [h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()];
    }
    report.driver = runtime.stats();
    report.io = runtime.io_stats();
    report.endpoint = runtime.endpoint_stats();
    report
}
