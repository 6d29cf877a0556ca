//! When received bytes reached the player's socket, not when the player's task got round to reading them.
//!
//! A player's lag measured at its read (`read time - publisher send time`) holds the load generator's own
//! scheduling delay: with thousands of players on one CPU, a task may run tens of milliseconds after its bytes
//! arrived, and that delay grows as the load generator nears saturation, whichever server it measures. So a
//! player asks the kernel to stamp what it receives (`SO_TIMESTAMPNS`) and reads with `recvmsg`: TCP reports the
//! arrival time of the newest segment the read copied from. On loopback a segment is stamped as the server's
//! write hands it to the stack (`netif_rx`), so `arrival - send` is the time the frame spent in the server and
//! its sockets: the server's added latency. For a frame that arrived in an older segment of the same read it
//! is an upper bound (the newest segment's time is used), never an underestimate.
//!
//! The stamp is on the real-time clock; [`StampedReader::read`] turns it into a reading of [`super::clock`]
//! by taking both clocks at the read (the age of the stamp, subtracted from the monotonic now), so a wall
//! clock step between reads does not matter.

use super::clock;
use super::measure::At;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// One read: how many bytes, and when they arrived (on [`super::clock`]; the read time where the kernel gave
/// no stamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes read (0: the peer closed the connection).
    pub bytes: usize,
    /// When the newest of them reached the socket, in microseconds on [`super::clock`].
    pub arrival_us: u64,
    /// When this process read them, in microseconds on [`super::clock`].
    pub read_us: u64,
    /// Whether the kernel stamped them (the kernel turns stamping on a moment after the first socket asks
    /// for it, so a socket's first reads may come without).
    pub stamped: bool,
}

impl Received {
    /// When the bytes arrived and were read, for [`super::measure::FrameMeter`].
    pub fn at(&self) -> At {
        At {
            arrival_us: self.arrival_us,
            read_us: self.read_us,
        }
    }
}

/// Reads a TCP stream with the kernel's receive timestamps.
#[derive(Debug)]
pub struct StampedReader {
    cmsg: Vec<u8>,
}

/// Whether a refused `SO_TIMESTAMPNS` was reported already (once a run is enough).
static REFUSAL_REPORTED: AtomicBool = AtomicBool::new(false);

impl StampedReader {
    /// Turns on receive timestamps for `sock`. Where the kernel refuses them, reads still work and report the
    /// read time as the arrival (said once on stderr).
    pub fn new(sock: &TcpStream) -> Self {
        if let Err(e) = setsockopt(sock, sockopt::ReceiveTimestampns, &true) {
            if !REFUSAL_REPORTED.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "warning: the kernel refused SO_TIMESTAMPNS ({e}): lag is measured at the players' reads, \
                     load generator delay included"
                );
            }
        }
        Self {
            cmsg: nix::cmsg_space!(TimeSpec),
        }
    }

    /// Reads into `buf` once bytes are ready (or the peer closed the connection).
    pub async fn read(&mut self, sock: &TcpStream, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            sock.readable().await?;
            match sock.try_io(Interest::READABLE, || self.recv(sock, buf)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    fn recv(&mut self, sock: &TcpStream, buf: &mut [u8]) -> io::Result<Received> {
        let mut iov = [IoSliceMut::new(buf)];
        let (bytes, stamp_ns) = {
            let msg = recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut self.cmsg),
                MsgFlags::MSG_DONTWAIT,
            )
            .map_err(io::Error::from)?;
            let stamp_ns = msg.cmsgs().ok().and_then(|mut cmsgs| {
                cmsgs.find_map(|c| match c {
                    ControlMessageOwned::ScmTimestampns(ts) => {
                        let ns = i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec());
                        Some(ns)
                    }
                    _ => None,
                })
            });
            (msg.bytes, stamp_ns)
        };
        let read_us = clock::now_us();
        let arrival_us = match stamp_ns {
            Some(stamp_ns) => arrival_on_clock(read_us, real_now_ns(), stamp_ns),
            None => read_us,
        };
        Ok(Received {
            bytes,
            arrival_us,
            read_us,
            stamped: stamp_ns.is_some(),
        })
    }
}

/// The real-time clock now, in nanoseconds since the Unix epoch.
fn real_now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

/// The monotonic reading (`read_us`, taken with `real_now_ns`) less the stamp's age; a stamp from the future
/// (a wall clock stepped back between the two) counts as arriving at the read.
fn arrival_on_clock(read_us: u64, real_now_ns: i128, stamp_ns: i128) -> u64 {
    let age_us = (real_now_ns - stamp_ns).max(0) / 1_000;
    let age_us = u64::try_from(age_us).unwrap_or(u64::MAX);
    read_us.saturating_sub(age_us)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[test]
    fn a_stamps_age_is_taken_off_the_read_time() {
        assert_eq!(arrival_on_clock(10_000, 5_000_000_000, 4_997_000_000), 7_000);
        assert_eq!(
            arrival_on_clock(10_000, 5_000_000_000, 5_001_000_000),
            10_000,
            "future"
        );
        assert_eq!(
            arrival_on_clock(1_000, 5_000_000_000, 0),
            0,
            "older than the clock"
        );
    }

    /// Bytes that wait in the socket while the reader is busy keep the time they arrived.
    #[tokio::test(flavor = "current_thread")]
    async fn bytes_left_waiting_report_when_they_arrived_not_when_read() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut reader = StampedReader::new(&client);
        let mut buf = [0u8; 64];
        // The kernel enables receive stamping from a work item a moment after the first socket asks: wait
        // until a read comes stamped.
        let mut live = false;
        for _ in 0..200 {
            server.write_all(b"x").await.unwrap();
            let got = reader.read(&client, &mut buf).await.unwrap();
            if got.stamped {
                live = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            live,
            "no read came stamped within 2 s: SO_TIMESTAMPNS does not work here"
        );
        let sent_us = clock::now_us();
        server.write_all(b"frame").await.unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let got = reader.read(&client, &mut buf).await.unwrap();
        assert_eq!(&buf[..got.bytes], b"frame");
        assert!(got.stamped);
        assert!(got.read_us >= sent_us + 60_000, "{got:?} sent {sent_us}");
        // The two clocks are read a few microseconds apart at the read: allow 1 ms either side of the send.
        assert!(
            got.arrival_us + 1_000 >= sent_us && got.arrival_us < sent_us + 30_000,
            "arrival {} should be near the send {sent_us}, not the read {}",
            got.arrival_us,
            got.read_us
        );
        drop(server);
        let end = reader.read(&client, &mut buf).await.unwrap();
        assert_eq!(end.bytes, 0, "the peer closed");
    }
}
