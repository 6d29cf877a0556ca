//! A virtual network for whole-protocol runs: flows of client/server [`Endpoint`] pairs whose client-to-server
//! packets share one forward [`Link`] (the bottleneck) and whose server-to-client packets share one reverse
//! link, all driven in virtual time.

use super::link::{Link, LinkConfig};
use crate::config::EndpointConfig;
use crate::congestion::ControllerKind;
use crate::connection::Event;
use crate::crypto::StaticKeypair;
use crate::endpoint::{ConnectionHandle, Endpoint, EndpointError};
use bytes::BytesMut;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// One client/server pair: the client sends media, the server receives it.
#[derive(Debug)]
pub struct Flow {
    /// The sending endpoint.
    pub client: Endpoint,
    /// The receiving endpoint.
    pub server: Endpoint,
    /// The client's virtual address.
    pub client_addr: SocketAddr,
    /// The server's virtual address.
    pub server_addr: SocketAddr,
    /// The client's connection handle.
    pub conn: ConnectionHandle,
    /// The server's handle for the connection, once accepted.
    pub server_conn: Option<ConnectionHandle>,
    /// When the client saw the handshake complete.
    pub connected_at: Option<Instant>,
}

/// Which end of a flow produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The sending client.
    Client,
    /// The receiving server.
    Server,
}

/// What runs on top of the network: it feeds frames in and consumes events.
pub trait App {
    /// Called every step before transmissions are collected: queue frames that are due.
    fn pump(&mut self, now: Instant, flows: &mut [Flow]);
    /// The next instant `pump` has something to do at, if any.
    fn next_wakeup(&self) -> Option<Instant>;
    /// An event from one end of flow `flow`.
    fn on_event(&mut self, now: Instant, flow: usize, end: End, event: Event);
}

/// Settings for building a [`Net`].
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Client-to-server direction (shared by all flows).
    pub forward: LinkConfig,
    /// Server-to-client direction (shared by all flows).
    pub reverse: LinkConfig,
    /// One congestion controller per flow.
    pub controllers: Vec<ControllerKind>,
    /// Encrypt packets (the default) or run plaintext for experiments.
    pub encryption: bool,
    /// Seed for every random choice of the links.
    pub seed: u64,
}

/// The virtual network.
#[derive(Debug)]
pub struct Net {
    /// Current virtual time.
    pub now: Instant,
    /// When the run started.
    pub start: Instant,
    /// The flows.
    pub flows: Vec<Flow>,
    /// Client-to-server link.
    pub forward: Link<(usize, BytesMut)>,
    /// Server-to-client link.
    pub reverse: Link<(usize, BytesMut)>,
    buf: Vec<u8>,
    /// Loop iterations so far (a cheap measure of simulator work).
    pub steps: u64,
}

fn addr(a: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, a)), port)
}

impl Net {
    /// Builds the network and starts one connection per flow at `start`.
    pub fn new(config: &NetConfig, start: Instant) -> Result<Self, EndpointError> {
        let mut flows = Vec::new();
        for (i, cc) in config.controllers.iter().enumerate() {
            let server_keys = StaticKeypair::generate()?;
            let client_keys = StaticKeypair::generate()?;
            let server_public = server_keys.public;
            let mut sc = EndpointConfig::new(server_keys);
            sc.authorized_peers = vec![client_keys.public];
            sc.connection.congestion = *cc;
            sc.connection.encryption = config.encryption;
            let mut cc_cfg = EndpointConfig::new(client_keys);
            cc_cfg.connection.congestion = *cc;
            cc_cfg.connection.encryption = config.encryption;
            cc_cfg.accept_incoming = false;
            let server = Endpoint::new(sc, start)?;
            let mut client = Endpoint::new(cc_cfg, start)?;
            let client_addr = addr(1, 4000 + i as u16);
            let server_addr = addr(2, 5000 + i as u16);
            let conn = client.connect(start, server_addr, server_public)?;
            flows.push(Flow {
                client,
                server,
                client_addr,
                server_addr,
                conn,
                server_conn: None,
                connected_at: None,
            });
        }
        Ok(Net {
            now: start,
            start,
            flows,
            forward: Link::new(config.forward.clone(), config.seed, start),
            reverse: Link::new(config.reverse.clone(), config.seed ^ 0x005e_ed0f_7e7e, start),
            buf: Vec::with_capacity(2048),
            steps: 0,
        })
    }

    /// Runs until virtual time `end`.
    pub fn run_until(&mut self, end: Instant, app: &mut dyn App) {
        loop {
            self.steps += 1;
            let now = self.now;
            app.pump(now, &mut self.flows);
            self.flush(now, app);
            let mut next = app.next_wakeup();
            let mut consider = |t: Option<Instant>| {
                if let Some(t) = t {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
            };
            consider(self.forward.next_delivery());
            consider(self.reverse.next_delivery());
            for f in &self.flows {
                consider(f.client.poll_timeout());
                consider(f.server.poll_timeout());
            }
            // Nothing left to happen (say, a handshake that gave up): time still passes until `end`, or a
            // caller that steps towards a deadline would call again at the same instant forever.
            let Some(next) = next else {
                self.now = self.now.max(end);
                break;
            };
            if next > end {
                self.now = end;
                break;
            }
            // Never move backwards, and never spin on a timer that is already due: give it one microsecond.
            self.now = if next > now {
                next
            } else {
                now + Duration::from_micros(1)
            };
            let now = self.now;
            while let Some((_, (i, d))) = self.forward.deliver(now) {
                if let Some(f) = self.flows.get_mut(i) {
                    let from = f.client_addr;
                    f.server.handle_datagram(now, from, d);
                }
            }
            while let Some((_, (i, d))) = self.reverse.deliver(now) {
                if let Some(f) = self.flows.get_mut(i) {
                    let from = f.server_addr;
                    f.client.handle_datagram(now, from, d);
                }
            }
            for f in &mut self.flows {
                if f.client.poll_timeout().is_some_and(|t| t <= now) {
                    f.client.handle_timeout(now);
                }
                if f.server.poll_timeout().is_some_and(|t| t <= now) {
                    f.server.handle_timeout(now);
                }
            }
        }
    }

    fn flush(&mut self, now: Instant, app: &mut dyn App) {
        for (i, f) in self.flows.iter_mut().enumerate() {
            while let Some(t) = f.client.poll_transmit(now, &mut self.buf) {
                self.forward
                    .send(now, t.size, (i, BytesMut::from(&self.buf[..t.size])));
            }
            while let Some(t) = f.server.poll_transmit(now, &mut self.buf) {
                self.reverse
                    .send(now, t.size, (i, BytesMut::from(&self.buf[..t.size])));
            }
            while let Some((_, e)) = f.client.poll_event() {
                if matches!(e, Event::Connected { .. }) {
                    f.connected_at = Some(now);
                }
                app.on_event(now, i, End::Client, e);
            }
            while let Some((ch, e)) = f.server.poll_event() {
                if matches!(e, Event::Connected { .. }) {
                    f.server_conn = Some(ch);
                }
                app.on_event(now, i, End::Server, e);
            }
        }
    }
}
