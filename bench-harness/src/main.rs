//! `popline-bench`: benchmarks that print popline's numbers side by side with a baseline from the same run.

use clap::{Parser, Subcommand};

/// The binaries' allocator (as in `popline`): the benchmarks measure what the node runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod compare;
mod cpu;
mod egress;
mod emulate;
mod engine_args;
mod fanout;
mod placement_bench;
mod quinn_baseline;
mod relay;
mod sim;
mod snapshot_bench;
mod sweep;
mod topology;
mod transport_bench;
mod udp_bench;
mod units;

/// Benchmarks for popline. Each prints a table, or one JSON object per run with `--json`.
#[derive(Debug, Parser)]
#[command(name = "popline-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant's arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// The transport over the deterministic link simulator, in virtual time.
    Sim(sim::SimArgs),
    /// A userspace link emulator between two network namespaces, from a netem profile.
    Emulate(emulate::EmulateArgs),
    /// UDP blast on loopback: plain sockets, sendmmsg/recvmmsg and the engine, side by side.
    Udp(udp_bench::UdpArgs),
    /// The encrypted popline transport over the engine on loopback, bulk, 1 and N connections.
    Transport(transport_bench::TransportArgs),
    /// popline vs TCP CUBIC/BBR, quinn and SRT across the emulated path: bulk and a live stream, or a matrix.
    Compare(compare::CompareArgs),
    /// One benchmark across engine/socket knobs and sysctl profiles: table, JSON, markdown and SVG.
    Sweep(sweep::SweepArgs),
    /// RTMP fan-out ramp (one publisher, N players) against popline and nginx-rtmp, side by side.
    Fanout(fanout::FanoutArgs),
    /// popline's HTTP egress: HTTP-FLV viewers per core next to RTMP's, and HLS/LL-HLS glass-to-playlist
    /// latency next to nginx-rtmp's HLS, in one run.
    Egress(egress::EgressArgs),
    /// A live stream relayed PoP A -> PoP B across the emulated link: popline's mesh vs nginx-rtmp push (TCP
    /// CUBIC, BBR), frames judged at the viewers; --max-bitrate, --hops.
    Relay(relay::RelayArgs),
    /// What one snapshot costs with each decoder (openh264 worker, ffmpeg per snapshot): latency, CPU,
    /// memory.
    Snapshot(snapshot_bench::SnapshotArgs),
    /// A stream's home by rendezvous hashing: balance, and what moves when a node leaves, next to `hash % n`.
    Placement(placement_bench::PlacementArgs),
    /// N popline nodes in network namespaces joined by the mesh across emulated links (root): prints each
    /// node's namespace and URLs, then waits or runs a command.
    Topology(topology::TopologyArgs),
}

/// Tests that load the CPU (traffic blasts, the emulator's fidelity runs) take this lock, so that on a small
/// machine they measure what they test and not each other.
#[cfg(test)]
pub(crate) static HEAVY_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => sim::run(&args),
        Command::Emulate(args) => emulate::run(&args),
        Command::Udp(args) => udp_bench::run(&args),
        Command::Transport(args) => transport_bench::run(&args),
        Command::Fanout(args) => fanout::run(&args),
        Command::Egress(args) => egress::run(&args),
        Command::Sweep(args) => sweep::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Placement(args) => placement_bench::run(&args),
        Command::Snapshot(args) => snapshot_bench::run(&args),
        Command::Relay(args) => relay::run(&args),
        Command::Topology(args) => topology::run(&args),
    }
}

#[cfg(test)]
mod cli_tests {
    use super::*;

    #[test]
    fn every_subcommand_s_flags_are_consistent() {
        // clap's own checks (unique names, valid defaults) for every subcommand, flattened engine flags included.
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
