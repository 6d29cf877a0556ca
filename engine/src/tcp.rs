//! TCP for the node's RTMP clients: one SO_REUSEPORT listener per core and non-blocking streams.
//!
//! With one listener per core on the same port, the kernel spreads new connections over the cores
//! (by 4-tuple hash), so no core accepts for another. Streams are std's `TcpStream` in non-blocking mode:
//! reads and vectored writes are plain safe calls; readiness comes from the core's [`crate::Poller`].

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// How to create a [`Listener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Set SO_REUSEPORT before binding (one listener per core on the same port).
    pub reuse_port: bool,
    /// Backlog of not-yet-accepted connections.
    pub backlog: i32,
    /// How accepted connections find out their peer is gone ([`set_liveness`]).
    pub liveness: Liveness,
}

/// How an accepted connection finds out that its peer is gone without a word (power cut, NAT timeout, a
/// crashed phone), instead of holding its descriptor until TCP gives up by itself (about 15 minutes with
/// unacknowledged data, never on an idle connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Liveness {
    /// TCP keepalive: the idle time before the first probe (then a probe every tenth of it, at least 1 s,
    /// 6 probes); `None` leaves keepalive off.
    pub keepalive: Option<Duration>,
    /// TCP_USER_TIMEOUT: the kernel aborts the connection when sent data stays unacknowledged this long;
    /// `None` leaves the kernel's default.
    pub user_timeout: Option<Duration>,
}

/// Sets TCP keepalive and TCP_USER_TIMEOUT on a connected socket, as `liveness` says.
pub fn set_liveness(socket: &impl AsFd, liveness: Liveness) -> io::Result<()> {
    let socket = socket2::SockRef::from(socket);
    if let Some(idle) = liveness.keepalive {
        let interval = (idle / 10).max(Duration::from_secs(1));
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(interval)
            .with_retries(6);
        socket.set_tcp_keepalive(&keepalive)?;
    }
    if let Some(timeout) = liveness.user_timeout {
        socket.set_tcp_user_timeout(Some(timeout))?;
    }
    Ok(())
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            reuse_port: true,
            backlog: 4096,
            liveness: Liveness::default(),
        }
    }
}

/// A non-blocking listening socket.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    liveness: Liveness,
}

impl Listener {
    /// Binds `addr` (SO_REUSEADDR, and SO_REUSEPORT when asked) and listens.
    pub fn bind(addr: SocketAddr, config: ListenerConfig) -> io::Result<Listener> {
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.cloexec(),
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        if config.reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(config.backlog)?;
        Ok(Listener {
            inner: socket.into(),
            liveness: config.liveness,
        })
    }

    /// Accepts one pending connection, non-blocking with TCP_NODELAY and the listener's [`Liveness`] set;
    /// `Ok(None)` when none is pending.
    pub fn accept(&self) -> io::Result<Option<(TcpStream, SocketAddr)>> {
        match self.inner.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(true)?;
                stream.set_nodelay(true)?;
                // Best effort: a peer that reset meanwhile must not pause the listener.
                let _ = set_liveness(&stream, self.liveness);
                Ok(Some((stream, peer)))
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The [`Liveness`] set on accepted connections.
    pub fn liveness(&self) -> Liveness {
        self.liveness
    }

    /// The standard listener inside (to hand to [`crate::uring::UringTcp`]).
    pub fn into_std(self) -> TcpListener {
        self.inner
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

/// Sets a stream's send buffer (SO_SNDBUF), which bounds how much the kernel holds for a slow peer.
pub fn set_send_buffer(stream: &TcpStream, bytes: usize) -> io::Result<()> {
    socket2::SockRef::from(stream).set_send_buffer_size(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn accepted_connections_carry_the_listeners_liveness() {
        let liveness = Liveness {
            keepalive: Some(std::time::Duration::from_secs(7)),
            user_timeout: Some(std::time::Duration::from_millis(4500)),
        };
        let config = ListenerConfig {
            liveness,
            ..ListenerConfig::default()
        };
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut accepted = None;
        for _ in 0..100 {
            accepted = listener.accept().unwrap();
            if accepted.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let (stream, _) = accepted.unwrap();
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.keepalive_time().unwrap(),
            std::time::Duration::from_secs(7)
        );
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(std::time::Duration::from_millis(4500))
        );
        // Without a liveness, neither is set.
        let plain = Listener::bind("127.0.0.1:0".parse().unwrap(), ListenerConfig::default()).unwrap();
        let _client = TcpStream::connect(plain.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (stream, _) = plain.accept().unwrap().unwrap();
        assert!(!socket2::SockRef::from(&stream).keepalive().unwrap());
    }

    #[test]
    fn two_reuseport_listeners_share_a_port_and_accept() {
        let first = Listener::bind("127.0.0.1:0".parse().unwrap(), ListenerConfig::default()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = Listener::bind(addr, ListenerConfig::default()).unwrap();
        let mut clients: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut accepted = Vec::new();
        for listener in [&first, &second] {
            while let Some((stream, _)) = listener.accept().unwrap() {
                accepted.push(stream);
            }
        }
        assert_eq!(accepted.len(), 16);
        clients[0].write_all(b"x").unwrap();
        let mut got = 0;
        for stream in &mut accepted {
            let mut buf = [0u8; 1];
            if let Ok(1) = stream.read(&mut buf) {
                got += 1;
            }
        }
        assert_eq!(got, 1);
        assert!(first.accept().unwrap().is_none());
    }
}
