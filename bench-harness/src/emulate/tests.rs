//! Fidelity of the emulator: UDP datagrams sent from namespace A to namespace B through a profile, measured
//! against it. The sender and receiver are this test binary run again inside the namespaces (`ip netns exec`)
//! with `POPLINE_EMU_ROLE` set; without it, [`udp_role`] does nothing.
//!
//! These need root and `ip netns`; without them they print why and pass.

use super::*;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

const ROLE: &str = "POPLINE_EMU_ROLE";
/// IPv4 + UDP headers: what the link charges on top of the payload.
const HEADERS: u64 = 28;

fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name).unwrap().parse().unwrap()
}

/// What the receiver measured.
#[derive(Debug, Default)]
struct Received {
    packets: u64,
    payload_bytes: u64,
    delay_sum_ns: u128,
    delay_min_ns: u64,
    delay_max_ns: u64,
    first_ns: u64,
    last_ns: u64,
    /// Datagrams the receiver's kernel dropped for a full socket buffer (namespace B's `RcvbufErrors`): lost
    /// after the emulator, to a receiver the machine did not schedule in time, not by the link model.
    rcvbuf_errors: u64,
}

impl Received {
    fn mean_delay_ms(&self) -> f64 {
        self.delay_sum_ns as f64 / self.packets.max(1) as f64 / 1e6
    }
}

/// The sender or receiver, when run inside a namespace by a fidelity test.
#[test]
fn udp_role() {
    match std::env::var(ROLE).as_deref() {
        Ok("recv") => receive(),
        Ok("send") => send(),
        _ => {}
    }
}

/// The namespace's UDP `RcvbufErrors` from `/proc/net/snmp` (per network namespace).
fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A UDP socket on ADDR_B with an 8 MiB receive buffer (forced past `rmem_max`: the tests run as root), so a
/// receiver descheduled for a few ms by parallel tests does not lose what the link delivered.
fn receiver_socket() -> UdpSocket {
    let sock = UdpSocket::bind((ADDR_B, 0)).unwrap();
    let size: libc::c_int = 8 << 20;
    // A refusal (not root) leaves the default buffer; the drops are then counted, not hidden.
    let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &(size as usize));
    // Arrival times from the kernel, not from when this process got the CPU.
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimestampns, &true).unwrap();
    sock
}

/// One datagram into `buf`: its length and the kernel's arrival time (wall clock, ns), or `None` on timeout.
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> Option<(usize, u64)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg =
        recvmsg::<SockaddrStorage>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()).ok()?;
    let mut at = None;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            at = Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64);
        }
    }
    Some((msg.bytes, at.unwrap_or_else(wall_ns)))
}

/// Receives on ADDR_B until `COUNT` datagrams came, or none for a second; prints `READY port` then `RESULT ...`.
fn receive() {
    let count = env_u64("COUNT");
    let drops_before = udp_rcvbuf_errors();
    let sock = receiver_socket();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    println!("READY {}", sock.local_addr().unwrap().port());
    let mut r = Received {
        delay_min_ns: u64::MAX,
        ..Received::default()
    };
    let mut buf = vec![0u8; 65_536];
    let give_up = Instant::now() + Duration::from_secs(25);
    let mut last = Instant::now();
    while r.packets < count && Instant::now() < give_up {
        match recv_stamped(&sock, &mut buf) {
            Some((n, now)) if n >= 16 => {
                let sent = u64::from_le_bytes(buf[8..16].try_into().unwrap());
                let d = now.saturating_sub(sent);
                r.packets += 1;
                r.payload_bytes += n as u64;
                r.delay_sum_ns += u128::from(d);
                r.delay_min_ns = r.delay_min_ns.min(d);
                r.delay_max_ns = r.delay_max_ns.max(d);
                if r.first_ns == 0 {
                    r.first_ns = now;
                }
                r.last_ns = now;
                last = Instant::now();
            }
            Some(_) => {}
            None => {
                if r.packets > 0 && last.elapsed() > Duration::from_secs(1) {
                    break;
                }
            }
        }
    }
    r.rcvbuf_errors = udp_rcvbuf_errors().saturating_sub(drops_before);
    println!(
        "RESULT {} {} {} {} {} {} {} {}",
        r.packets,
        r.payload_bytes,
        r.delay_sum_ns,
        r.delay_min_ns,
        r.delay_max_ns,
        r.first_ns,
        r.last_ns,
        r.rcvbuf_errors
    );
}

/// Sends `COUNT` datagrams of `SIZE` bytes to `TARGET` at `PPS`, each carrying its number and send time.
fn send() {
    let (count, size, pps) = (env_u64("COUNT"), env_u64("SIZE") as usize, env_u64("PPS"));
    let target = std::env::var("TARGET").unwrap();
    let sock = UdpSocket::bind((ADDR_A, 0)).unwrap();
    let mut buf = vec![0u8; size.max(16)];
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / pps as f64);
    for seq in 0..count {
        let due = start + interval * seq as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        buf[..8].copy_from_slice(&seq.to_le_bytes());
        buf[8..16].copy_from_slice(&wall_ns().to_le_bytes());
        // ENOBUFS under a blast is a loss before the link: count it as sent, as a real sender would.
        let _ = sock.send_to(&buf, &target);
    }
}

/// This test binary, run in a namespace as `role`.
fn role(mut cmd: Command, role: &str, env: &[(&str, String)]) -> Command {
    cmd.args([
        "emulate::tests::udp_role",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, role);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Sends `count` datagrams of `size` bytes at `pps` from A to B through `profile`; what B received, and the
/// emulator's counters.
fn blast(profile: &str, count: u64, size: usize, pps: u64) -> (Received, Vec<DirectionStats>) {
    // One lab at a time, and no other benchmark test beside it: two blasts at once on a small machine measure
    // the scheduler, not the emulator.
    let _turn = crate::HEAVY_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let profile = Profile::parse("test", profile).unwrap();
    let (lab, ends) = Lab::create(profile.mtu).unwrap();
    let emulator = Emulator::for_profile(ends.a, ends.b, &profile).unwrap();
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();

    let mut receiver = role(lab.command_in_b(exe), "recv", &[("COUNT", count.to_string())])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(receiver.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("the receiver exited before READY").unwrap();
        // libtest prints `test ... ` before the test's own output on the same line.
        if let Some((_, p)) = line.split_once("READY ") {
            break p.trim().to_string();
        }
    };
    let sender = role(
        lab.command_in_a(exe),
        "send",
        &[
            ("COUNT", count.to_string()),
            ("SIZE", size.to_string()),
            ("PPS", pps.to_string()),
            ("TARGET", format!("{ADDR_B}:{port}")),
        ],
    )
    .stdout(Stdio::null())
    .status()
    .unwrap();
    assert!(sender.success(), "sender failed: {sender}");
    let result = loop {
        let line = lines.next().expect("the receiver exited before RESULT").unwrap();
        if let Some((_, r)) = line.split_once("RESULT ") {
            break r.to_string();
        }
    };
    receiver.wait().unwrap();
    let v: Vec<u128> = result.split_whitespace().map(|x| x.parse().unwrap()).collect();
    let received = Received {
        packets: v[0] as u64,
        payload_bytes: v[1] as u64,
        delay_sum_ns: v[2],
        delay_min_ns: v[3] as u64,
        delay_max_ns: v[4] as u64,
        first_ns: v[5] as u64,
        last_ns: v[6] as u64,
        rcvbuf_errors: v[7] as u64,
    };
    let stats = emulator.stop().unwrap();
    drop(lab);
    (received, stats)
}

fn skip() -> bool {
    match netns::unavailable() {
        Some(why) => {
            println!("skipping the emulator fidelity test: {why}");
            true
        }
        None => false,
    }
}

/// Delay 20 ms and 2% loss: of 100,000 datagrams the link model loses 2% within 10% relative, every loss
/// is accounted for (before the emulator, by the model, or by the receiver's full socket buffer, which a
/// loaded CI machine can cause and which is not the emulator's doing), and what arrives is 20 ms late within
/// 0.5 ms on average (never early).
#[test]
fn emulate_fidelity_delay_and_loss() {
    if skip() {
        return;
    }
    let sent = 100_000u64;
    let (r, stats) = blast("delay=20ms\nloss=2%\nseed=7\n", sent, 200, 25_000);
    let loss = 1.0 - r.packets as f64 / sent as f64;
    let delay = r.mean_delay_ms();
    println!(
        "fidelity: sent {sent}, received {}, loss {:.3}% (profile 2%), one-way delay mean {delay:.3} ms \
         min {:.3} max {:.3} (profile 20 ms); emulator {:?}",
        r.packets,
        loss * 100.0,
        r.delay_min_ns as f64 / 1e6,
        r.delay_max_ns as f64 / 1e6,
        stats[0]
    );
    let link = &stats[0].link;
    println!(
        "fidelity: lost before the emulator (TUN queue) {}, by the link model {}, after it (receiver) {}",
        sent - link.offered_packets,
        link.lost_packets,
        link.delivered_packets.saturating_sub(r.packets)
    );
    println!(
        "fidelity: the receiver's kernel dropped {} for a full socket buffer",
        r.rcvbuf_errors
    );
    let model_loss = link.lost_packets as f64 / link.offered_packets.max(1) as f64;
    assert!(
        (model_loss - 0.02).abs() <= 0.02 * 0.10,
        "the link model lost {model_loss} of what it was offered, not within 10% of 2%"
    );
    let before = sent - link.offered_packets;
    assert!(
        before <= sent / 1_000,
        "{before} datagrams were lost before the emulator (over 0.1%)"
    );
    let unexplained = link
        .delivered_packets
        .saturating_sub(r.packets)
        .saturating_sub(r.rcvbuf_errors);
    assert!(
        unexplained == 0,
        "{unexplained} datagrams the link delivered neither arrived nor were dropped by the receiver's buffer"
    );
    assert!(
        r.rcvbuf_errors <= sent / 100,
        "the receiver dropped {} for a full buffer (over 1%): the measurement is the machine's, not the link's",
        r.rcvbuf_errors
    );
    assert!(
        (loss - 0.02).abs() <= 0.02 * 0.10 || r.rcvbuf_errors > 0,
        "loss {loss} not within 10% of 2% with no receiver drops"
    );
    assert!(
        (delay - 20.0).abs() <= 0.5,
        "mean delay {delay} ms not within 0.5 ms of 20 ms"
    );
    assert!(
        r.delay_min_ns >= 20_000_000,
        "a datagram arrived early: {} ns",
        r.delay_min_ns
    );
}

/// Rate 20 Mbit/s offered 30 Mbit/s: what arrives comes at 20 Mbit/s within 2% (IP bytes over the arrival span).
#[test]
fn emulate_fidelity_rate() {
    if skip() {
        return;
    }
    let (size, pps, sent) = (1_200usize, 3_000u64, 9_000u64);
    let (r, stats) = blast("delay=5ms\nrate=20mbit\nqueue=100000\n", sent, size, pps);
    let ip_bytes = r.payload_bytes + HEADERS * r.packets;
    // The first packet's bits are not in the span between the first and last arrival.
    let span_s = (r.last_ns - r.first_ns) as f64 / 1e9;
    let rate = (ip_bytes - (size as u64 + HEADERS)) as f64 * 8.0 / span_s;
    println!(
        "rate fidelity: received {} of {sent}, {:.3} Mbit/s (profile 20 Mbit/s), mean delay {:.2} ms; emulator {:?}",
        r.packets,
        rate / 1e6,
        r.mean_delay_ms(),
        stats[0]
    );
    assert!(
        (rate / 20e6 - 1.0).abs() <= 0.02,
        "rate {rate} not within 2% of 20 Mbit/s"
    );
    assert!(
        stats[0].link.queue_drop_packets > 0,
        "the bottleneck never filled"
    );
}

/// A mahimahi trace (1 opportunity per ms for 50 ms, then 3 per ms for 50 ms: 12 and 36 Mbit/s, a mean of
/// 24 Mbit/s) offered 40 Mbit/s: what arrives comes at the trace's mean rate within 2%.
#[test]
fn emulate_fidelity_trace() {
    if skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("popline-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("two-level.trace");
    let mut text = String::new();
    for ms in 1..=50 {
        text.push_str(&format!("{ms}\n"));
    }
    for ms in 51..=100 {
        text.push_str(&format!("{ms}\n{ms}\n{ms}\n"));
    }
    std::fs::write(&trace, text).unwrap();
    let (size, pps, sent) = (1_200usize, 4_200u64, 14_700u64);
    let profile = format!("delay=5ms\ntrace={}\nqueue=200000\n", trace.display());
    let (r, stats) = blast(&profile, sent, size, pps);
    let ip_bytes = r.payload_bytes + HEADERS * r.packets;
    let span_s = (r.last_ns - r.first_ns) as f64 / 1e9;
    let rate = (ip_bytes - (size as u64 + HEADERS)) as f64 * 8.0 / span_s;
    println!(
        "trace fidelity: received {} of {sent} over {span_s:.3} s, {:.3} Mbit/s (trace mean 24 Mbit/s); emulator {:?}",
        r.packets,
        rate / 1e6,
        stats[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The span covers ~35 periods of 100 ms: a partial period at its ends moves the mean by < 1%.
    assert!(
        (rate / 24e6 - 1.0).abs() <= 0.02,
        "rate {rate} not within 2% of the trace's 24 Mbit/s mean"
    );
    assert!(
        stats[0].link.queue_drop_packets > 0,
        "the bottleneck never filled"
    );
}

/// Every shipped profile parses; `lossy-1pct` means 100 Mbit/s, RTT 100 ms and 1% loss each way.
#[test]
fn shipped_profiles_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../netem-scripts/profiles");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "profile") {
            let p = Profile::load(&path).unwrap();
            names.push(p.name);
        }
    }
    names.sort();
    for want in [
        "burst",
        "intra-region",
        "lossy-1pct",
        "lossy-3pct",
        "outage-500ms",
        "satellite",
        "trans-pacific",
        "cellular",
    ] {
        assert!(names.iter().any(|n| n == want), "no {want}.profile in {names:?}");
    }
    let p = Profile::load(&dir.join("lossy-1pct.profile")).unwrap();
    for c in [&p.a_to_b, &p.b_to_a] {
        assert_eq!(c.rate_bps, Some(100_000_000));
        assert_eq!(c.delay, Duration::from_millis(50));
        assert_eq!(c.loss, transport::sim::LossModel::Bernoulli { p: 0.01 });
        // One BDP: 100 Mbit/s x 100 ms.
        assert_eq!(c.queue_bytes, 1_250_000);
    }
    let s = Profile::load(&dir.join("satellite.profile")).unwrap();
    assert_eq!(s.a_to_b.rate_bps, Some(50_000_000));
    assert_eq!(s.b_to_a.rate_bps, Some(10_000_000));
    assert!(
        Profile::parse("x", "dleay=5ms").is_err(),
        "a typo must be refused"
    );
}
