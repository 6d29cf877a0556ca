//! `popline-bench`: benchmarks that print popline's numbers side by side with a baseline from the same run.

use clap::{Parser, Subcommand};

mod sim;
mod units;

/// Benchmarks for popline. Each prints a table, or one JSON object per run with `--json`.
#[derive(Debug, Parser)]
#[command(name = "popline-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The transport over the deterministic link simulator, in virtual time.
    Sim(sim::SimArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => sim::run(&args),
    }
}
