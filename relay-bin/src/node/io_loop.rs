//! [`CoreLoop`]: the thin IO loop that runs one [`NodeCore`] on its thread (epoll backend).
//!
//! The loop: wait for readiness (or the core's next deadline), accept, read each readable client and feed
//! its bytes to the core, hand the core its inbox, then write every client the core lists (one `writev`
//! each, of the frames' shared bytes), close the sockets the core closed and wake the cores it posted to (one
//! eventfd write each). Every decision is the core's; this file only moves bytes and readiness.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use engine::{Events, Interest, Listener, Poller, Waker};
use tracing::warn;

use crate::node::clients::Token;
use crate::node::core::{Close, NodeCore, Protocol, Written, TICK};
use crate::node::mailbox::CoreMsg;
use crate::node::shared::Shared;

const LISTENER: Token = u64::MAX;
const WAKER: Token = u64::MAX - 1;
const EGRESS_LISTENER: Token = u64::MAX - 2;
/// Most bytes read from one client per readiness report (fairness between clients).
const READ_BUDGET: usize = 256 << 10;

/// A client's socket and the interest registered for it.
#[derive(Debug)]
struct Socket {
    stream: TcpStream,
    /// Registered for writability (the socket was full).
    want_write: bool,
}

/// One core's IO: its listener, its clients' sockets, its inbox and waker, around its [`NodeCore`].
pub struct CoreLoop {
    core: NodeCore,
    poller: Poller,
    listener: Listener,
    /// The HTTP egress listener, when egress is on.
    egress: Option<Listener>,
    inbox: Receiver<CoreMsg>,
    waker: Arc<Waker>,
    sockets: HashMap<Token, Socket, foldhash::fast::RandomState>,
    read_buf: Vec<u8>,
    tokens: Vec<Token>,
    closed: Vec<(Token, Close)>,
    /// The listener is unregistered after an accept error (out of fds) until this instant.
    accept_paused_until: Option<Instant>,
}

impl CoreLoop {
    /// The loop of core `index` with its (already bound) RTMP listener, HTTP egress listener (when egress is
    /// on), inbox and waker.
    pub fn new(
        index: usize,
        shared: Arc<Shared>,
        listener: Listener,
        egress: Option<Listener>,
        inbox: Receiver<CoreMsg>,
        waker: Arc<Waker>,
    ) -> io::Result<CoreLoop> {
        let poller = Poller::new()?;
        poller.add(listener.as_raw_fd(), LISTENER, Interest::READABLE)?;
        if let Some(egress) = &egress {
            poller.add(egress.as_raw_fd(), EGRESS_LISTENER, Interest::READABLE)?;
        }
        poller.add(waker.as_raw_fd(), WAKER, Interest::READABLE)?;
        Ok(CoreLoop {
            core: NodeCore::new(index, shared, Instant::now()),
            poller,
            listener,
            egress,
            inbox,
            waker,
            sockets: HashMap::default(),
            read_buf: vec![0; 64 << 10],
            tokens: Vec::new(),
            closed: Vec::new(),
            accept_paused_until: None,
        })
    }

    /// Runs until [`CoreMsg::Shutdown`].
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        while !self.core.is_stopped() {
            if let Err(error) = self
                .poller
                .wait_until(&mut events, Some(self.core.poll_timeout()))
            {
                warn!(core = self.core.index(), %error, "poller wait failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            for readiness in events.iter() {
                match readiness.token {
                    LISTENER => self.accept_all(Protocol::Rtmp),
                    EGRESS_LISTENER => self.accept_all(Protocol::Http),
                    WAKER => {
                        self.waker.drain();
                    }
                    token => {
                        if readiness.readable {
                            self.read(token);
                        }
                        if readiness.writable {
                            self.core.writable(token);
                        }
                    }
                }
            }
            let now = Instant::now();
            self.core.drain_inbox(now, &self.inbox);
            self.core.tick(now);
            self.resume_accepts(now);
            self.write(now);
            self.perform();
        }
        self.core.shutdown(Instant::now());
        self.perform();
    }

    fn accept_all(&mut self, protocol: Protocol) {
        loop {
            let listener = match protocol {
                Protocol::Rtmp => &self.listener,
                Protocol::Http => match &self.egress {
                    Some(egress) => egress,
                    None => return,
                },
            };
            match listener.accept() {
                Ok(Some((stream, peer))) => self.accept(stream, peer, protocol),
                Ok(None) => return,
                Err(error) => {
                    // EMFILE and friends: the listeners stay readable, so stop watching them for one tick
                    // instead of spinning on them.
                    warn!(core = self.core.index(), %error, "accept failed; pausing accepts for one tick");
                    let _ = self.poller.delete(self.listener.as_raw_fd());
                    if let Some(egress) = &self.egress {
                        let _ = self.poller.delete(egress.as_raw_fd());
                    }
                    self.accept_paused_until = Some(Instant::now() + TICK);
                    return;
                }
            }
        }
    }

    fn accept(&mut self, stream: TcpStream, peer: SocketAddr, protocol: Protocol) {
        let Some(token) = self.core.accept_as(Instant::now(), peer, protocol) else {
            return;
        };
        if let Err(error) = self.poller.add(stream.as_raw_fd(), token, Interest::READABLE) {
            warn!(core = self.core.index(), %peer, %error, "cannot register connection");
            self.core
                .connection_lost(Instant::now(), token, "cannot register connection");
            return;
        }
        self.sockets.insert(
            token,
            Socket {
                stream,
                want_write: false,
            },
        );
    }

    fn resume_accepts(&mut self, now: Instant) {
        if self.accept_paused_until.is_none_or(|until| now < until) {
            return;
        }
        self.accept_paused_until = None;
        let mut listeners = vec![(self.listener.as_raw_fd(), LISTENER)];
        if let Some(egress) = &self.egress {
            listeners.push((egress.as_raw_fd(), EGRESS_LISTENER));
        }
        for (fd, token) in listeners {
            let added = self.poller.add(fd, token, Interest::READABLE);
            // Watched already (an earlier try got this one and not the other): nothing to do.
            if let Err(error) = added.or_else(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            }) {
                warn!(core = self.core.index(), %error, "cannot watch a listener again; trying next tick");
                self.accept_paused_until = Some(now + TICK);
            }
        }
    }

    fn read(&mut self, token: Token) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(socket) = self.sockets.get_mut(&token) else {
                return;
            };
            let read = match socket.stream.read(&mut self.read_buf) {
                Ok(0) => return self.lost(token, "peer closed the connection"),
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return self.lost(token, lost_reason(Some(&error))),
            };
            let input = self.read_buf.get(..read).unwrap_or_default();
            self.core.input(Instant::now(), token, input);
            if !self.core.has_client(token) {
                return;
            }
            budget = budget.saturating_sub(read);
            if budget == 0 || read < self.read_buf.len() {
                return;
            }
        }
    }

    /// The socket failed or the peer closed it: the core forgets the client.
    fn lost(&mut self, token: Token, reason: &'static str) {
        self.close_socket(token);
        self.core.connection_lost(Instant::now(), token, reason);
    }

    fn write(&mut self, now: Instant) {
        let mut tokens = std::mem::take(&mut self.tokens);
        self.core.take_due_writes(now, &mut tokens);
        for &token in &tokens {
            let Some(socket) = self.sockets.get_mut(&token) else {
                continue;
            };
            let want_write = match self.core.write_client(now, token, &mut socket.stream) {
                Written::Drained => false,
                Written::Pending => true,
                Written::Closed => continue,
            };
            if want_write != socket.want_write {
                socket.want_write = want_write;
                let interest = if want_write {
                    Interest::BOTH
                } else {
                    Interest::READABLE
                };
                let _ = self.poller.modify(socket.stream.as_raw_fd(), token, interest);
            }
        }
        tokens.clear();
        self.tokens = tokens;
    }

    /// Closes the sockets the core closed and wakes the cores it posted to.
    fn perform(&mut self) {
        let mut closed = std::mem::take(&mut self.closed);
        self.core.take_closed(&mut closed);
        // The bytes a closing client was owed are in its socket already (written before the core closed it).
        for &(token, _) in &closed {
            self.close_socket(token);
        }
        closed.clear();
        self.closed = closed;
        self.core.wake_posted();
    }

    fn close_socket(&mut self, token: Token) {
        if let Some(socket) = self.sockets.remove(&token) {
            let _ = self.poller.delete(socket.stream.as_raw_fd());
            let _ = socket.stream.shutdown(Shutdown::Both);
        }
    }
}

/// Why a connection ended, for the log, from the error its socket gave (`None`: an orderly close). A reset
/// is how most players hang up (they close with unread bytes in their receive buffer, so the kernel sends a
/// RST), so it reads as the peer closing, not as an error.
pub(crate) fn lost_reason(error: Option<&io::Error>) -> &'static str {
    match error.map(io::Error::kind) {
        None => "peer closed the connection",
        Some(
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe,
        ) => "peer closed the connection (reset)",
        Some(io::ErrorKind::TimedOut) => "connection timed out",
        Some(_) => "connection error",
    }
}

#[cfg(test)]
mod lost_reason_tests {
    use super::*;

    #[test]
    fn a_reset_reads_as_the_peer_closing() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(lost_reason(Some(&reset)), "peer closed the connection (reset)");
        assert_eq!(lost_reason(None), "peer closed the connection");
        let other = io::Error::from(io::ErrorKind::InvalidData);
        assert_eq!(lost_reason(Some(&other)), "connection error");
    }
}
