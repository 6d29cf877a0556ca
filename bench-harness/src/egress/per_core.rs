//! Part `flv`: HTTP-FLV viewers per core next to RTMP viewers per core, by the fanout harness's method
//! ([`crate::fanout::ramp`]: the same publisher, stream, steps and pass rules) against the same popline
//! build and config (HTTP egress on for both), a fresh node for each: first with RTMP players, then with
//! HTTP-FLV players ([`super::flv_player`]).

use super::flv_player::{self, FlvPlayerConfig};
use super::report::ViewersRow;
use crate::fanout::ramp::{RampSettings, SpawnPlayer};
use crate::fanout::server::ServerProcess;
use crate::fanout::{self, popline_server, Setup};
use anyhow::{Context, Result};

/// The RTMP row's name.
pub const RTMP_VARIANT: &str = "popline-rtmp";
/// The HTTP-FLV row's name.
pub const HTTP_FLV_VARIANT: &str = "popline-http-flv";

/// Ramps a popline node with RTMP players, then a fresh one with HTTP-FLV players: the RTMP row and the
/// HTTP-FLV row (which carries the comparison).
pub fn run(setup: &Setup) -> Vec<ViewersRow> {
    let node = setup.popline_node(true, &[]);
    let start = || popline_server::spawn(&setup.servers.popline_bin, &node, &setup.run_info.server_cpus);
    let rtmp = fanout::ramp_server(RTMP_VARIANT, start, fanout::rtmp_players, setup);
    let flv = fanout::ramp_server(HTTP_FLV_VARIANT, start, flv_players, setup);
    ViewersRow::pair(rtmp, flv, setup.servers.cpus.len())
}

/// The HTTP-FLV players of the ramp's stream on `server` (`GET /APP/STREAM.flv` on its HTTP port).
pub fn flv_players(server: &ServerProcess, settings: &RampSettings) -> Result<Box<SpawnPlayer>> {
    let addr = server
        .http
        .with_context(|| format!("{} serves no HTTP", server.name))?;
    Ok(flv_player::spawner(FlvPlayerConfig {
        addr,
        path: format!("/{}/{}.flv", settings.app, settings.stream),
        setup_timeout: settings.join_timeout,
    }))
}
