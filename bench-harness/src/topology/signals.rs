//! SIGINT and SIGTERM as a flag, through tokio's signal handling (no `unsafe` here): [`watch`] registers both
//! before it returns, so from then on neither ends the process, and a thread records which came. No signal is
//! blocked, so the nodes and the command (which inherit this process's signal mask) take their own.

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// The signal that arrived.
#[derive(Clone)]
pub struct Arrived(Arc<AtomicI32>);

impl Arrived {
    /// `SIGINT` or `SIGTERM`, once one arrived.
    pub fn get(&self) -> Option<&'static str> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            2 => Some("SIGINT"),
            _ => Some("SIGTERM"),
        }
    }
}

/// Catches SIGINT and SIGTERM from now on; a thread records the first that arrives.
pub fn watch() -> Result<Arrived> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal runtime")?;
    let (mut interrupt, mut terminate) = {
        let _entered = runtime.enter();
        (
            signal(SignalKind::interrupt()).context("catching SIGINT")?,
            signal(SignalKind::terminate()).context("catching SIGTERM")?,
        )
    };
    let arrived = Arrived(Arc::new(AtomicI32::new(0)));
    let flag = arrived.0.clone();
    std::thread::Builder::new()
        .name("topology-signals".into())
        .spawn(move || {
            let number = runtime.block_on(async {
                tokio::select! {
                    _ = interrupt.recv() => 2,
                    _ = terminate.recv() => 15,
                }
            });
            flag.store(number, Ordering::SeqCst);
        })
        .context("spawning the signal thread")?;
    Ok(arrived)
}
