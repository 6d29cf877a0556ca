//! The engine's kernel-tuning knobs as benchmark flags (`--backend`, `--gso`, `--ring-entries`, ...), so a
//! sweep can vary them without recompiling, and the knobs a run used as one JSON object in its report.

use anyhow::{bail, Result};
use clap::Args;
use engine::uring::WaitBatch;
use engine::{BackendChoice, IoConfig, UdpConfig};
use relay::link::DriverConfig;
use serde::Serialize;

/// Engine knobs; each one left out keeps the benchmark variant's own setting.
#[derive(Debug, Clone, Default, Args)]
pub struct EngineArgs {
    /// IO backend: auto (io_uring, epoll where refused), uring, epoll.
    #[arg(long)]
    pub backend: Option<String>,
    /// UDP GSO on send: on or off.
    #[arg(long)]
    pub gso: Option<String>,
    /// UDP GRO on receive: on or off.
    #[arg(long)]
    pub gro: Option<String>,
    /// Most datagrams per GSO send (1..=64).
    #[arg(long)]
    pub gso_segments: Option<usize>,
    /// io_uring submission queue entries.
    #[arg(long)]
    pub ring_entries: Option<u32>,
    /// io_uring provided receive buffers (a power of two).
    #[arg(long)]
    pub buffers: Option<u16>,
    /// io_uring sends in flight at once.
    #[arg(long)]
    pub send_slots: Option<usize>,
    /// io_uring SQPOLL idle time in milliseconds (enables SQPOLL).
    #[arg(long)]
    pub sqpoll_ms: Option<u32>,
    /// SO_BUSY_POLL in microseconds.
    #[arg(long)]
    pub busy_poll_us: Option<u32>,
    /// SO_RCVBUF and SO_SNDBUF requested, in bytes.
    #[arg(long)]
    pub socket_buffer: Option<usize>,
    /// Receives and sends per driver loop iteration.
    #[arg(long)]
    pub loop_batch: Option<usize>,
    /// io_uring: a wait, once a completion is ready, goes on until this many are ready
    /// (`engine::uring::WaitBatch`; 1: off; 16 when only `--wake-batch-us` is given).
    #[arg(long)]
    pub wake_batch: Option<u32>,
    /// io_uring: the longest a wait goes on once a completion is ready, microseconds (0: off; 200 when only
    /// `--wake-batch` is given).
    #[arg(long)]
    pub wake_batch_us: Option<u64>,
}

/// The knobs a run used, as they appear in its JSON report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EngineKnobs {
    /// Backend asked for (`auto`, `uring`, `epoll`).
    pub backend: &'static str,
    /// GSO asked for.
    pub gso: bool,
    /// GRO asked for.
    pub gro: bool,
    /// Most datagrams per GSO send.
    pub gso_segments: usize,
    /// io_uring submission queue entries.
    pub ring_entries: u32,
    /// io_uring provided receive buffers.
    pub buffers: u16,
    /// io_uring sends in flight.
    pub send_slots: usize,
    /// SQPOLL idle ms (null: off).
    pub sqpoll_ms: Option<u32>,
    /// SO_BUSY_POLL microseconds.
    pub busy_poll_us: u32,
    /// Socket buffers requested, bytes.
    pub socket_buffer: usize,
    /// Receives/sends per loop iteration.
    pub batch: usize,
}

fn on_off(v: &str, name: &str) -> Result<bool> {
    match v {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => bail!("--{name} takes on or off, not {v:?}"),
    }
}

impl EngineArgs {
    /// Applies the flags given on top of `driver` and `udp`.
    pub fn apply(&self, driver: &mut DriverConfig, udp: &mut UdpConfig) -> Result<()> {
        let io: &mut IoConfig = &mut driver.io;
        if let Some(b) = &self.backend {
            io.backend = b.parse::<BackendChoice>().map_err(anyhow::Error::msg)?;
        }
        if let Some(v) = &self.gso {
            io.gso = on_off(v, "gso")?;
        }
        if let Some(v) = &self.gro {
            io.gro = on_off(v, "gro")?;
        }
        if let Some(n) = self.gso_segments {
            if !(1..=engine::offload::MAX_GSO_SEGMENTS).contains(&n) {
                bail!("--gso-segments must be 1..=64");
            }
            driver.gso_max_segments = n;
        }
        if let Some(n) = self.ring_entries {
            io.ring.entries = n;
        }
        if let Some(n) = self.buffers {
            if !n.is_power_of_two() {
                bail!("--buffers must be a power of two");
            }
            io.buffer_count = n;
        }
        if let Some(n) = self.send_slots {
            io.send_slots = n.max(1);
        }
        if let Some(ms) = self.sqpoll_ms {
            io.ring.sqpoll_idle_ms = Some(ms);
        }
        if let Some(batch) = wait_batch(self.wake_batch, self.wake_batch_us) {
            io.ring.batch = batch;
        }
        if let Some(us) = self.busy_poll_us {
            io.busy_poll_us = us;
        }
        if let Some(b) = self.socket_buffer {
            udp.recv_buffer_bytes = b;
            udp.send_buffer_bytes = b;
        }
        if let Some(n) = self.loop_batch {
            driver.max_recv_per_iteration = n.max(1);
            driver.max_send_per_iteration = n.max(1);
        }
        Ok(())
    }
}

/// The wait batching that flags for its completions and its delay ask for: the one not given is the node's
/// default's (`WaitBatch::PACED`); `None` when neither is given.
pub fn wait_batch(completions: Option<u32>, max_delay_us: Option<u64>) -> Option<WaitBatch> {
    if completions.is_none() && max_delay_us.is_none() {
        return None;
    }
    Some(WaitBatch {
        completions: completions.unwrap_or(WaitBatch::PACED.completions).max(1),
        max_delay: max_delay_us.map_or(WaitBatch::PACED.max_delay, std::time::Duration::from_micros),
    })
}

/// The knobs of `driver` and `udp`, for a report.
pub fn knobs(driver: &DriverConfig, udp: &UdpConfig) -> EngineKnobs {
    let io = &driver.io;
    EngineKnobs {
        backend: match io.backend {
            BackendChoice::Auto => "auto",
            BackendChoice::Uring => "uring",
            BackendChoice::Epoll => "epoll",
        },
        gso: io.gso,
        gro: io.gro,
        gso_segments: driver.gso_max_segments,
        ring_entries: io.ring.entries,
        buffers: io.buffer_count,
        send_slots: io.send_slots,
        sqpoll_ms: io.ring.sqpoll_idle_ms,
        busy_poll_us: io.busy_poll_us,
        socket_buffer: udp.recv_buffer_bytes,
        batch: driver.max_recv_per_iteration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_only_what_they_name() {
        let mut d = DriverConfig::default();
        let mut u = UdpConfig::default();
        let before = knobs(&d, &u);
        EngineArgs::default().apply(&mut d, &mut u).unwrap();
        assert_eq!(knobs(&d, &u), before);
        let args = EngineArgs {
            backend: Some("epoll".into()),
            gso: Some("off".into()),
            buffers: Some(64),
            socket_buffer: Some(1 << 20),
            sqpoll_ms: Some(5),
            ..EngineArgs::default()
        };
        args.apply(&mut d, &mut u).unwrap();
        let k = knobs(&d, &u);
        assert_eq!((k.backend, k.gso, k.gro, k.buffers), ("epoll", false, true, 64));
        assert_eq!((k.socket_buffer, k.sqpoll_ms), (1 << 20, Some(5)));
        // One of the two batching flags alone takes the other from the node's default, so it batches.
        EngineArgs {
            wake_batch: Some(4),
            ..EngineArgs::default()
        }
        .apply(&mut d, &mut u)
        .unwrap();
        assert_eq!(
            d.io.ring.batch,
            WaitBatch {
                completions: 4,
                max_delay: WaitBatch::PACED.max_delay
            }
        );
        assert!(d.io.ring.batch.is_on());
        let bad = EngineArgs {
            buffers: Some(100),
            ..EngineArgs::default()
        };
        assert!(bad.apply(&mut d, &mut u).is_err());
        assert!(EngineArgs {
            gso: Some("maybe".into()),
            ..EngineArgs::default()
        }
        .apply(&mut d, &mut u)
        .is_err());
    }
}
