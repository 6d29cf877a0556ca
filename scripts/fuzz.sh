#!/usr/bin/env bash
# Runs the cargo-fuzz targets for a while each (default 60 s): the transport's packet_decoder, handshake,
# endpoint, connection (an established connection under injected packets, test AEAD) and handshake_response
# (the client reading message 2), and the node's rtmp_input (handshake, chunk guard and rml_rtmp's session on
# hostile bytes), chunk_decoder (the RTMP chunk decoder alone, interleaving on, with aborts) and mesh_wire (a
# peer PoP's control messages and carried frames' headers), http_request (the HTTP egress request reader) and
# snapshot_input (a keyframe's conversion for the decoder, and a recording's keyframe search).
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-60}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(packet_decoder handshake endpoint connection handshake_response rtmp_input chunk_decoder mesh_wire http_request snapshot_input)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for t in "${targets[@]}"; do
  case "$t" in rtmp_input | chunk_decoder | mesh_wire | http_request | snapshot_input) dir=relay-bin ;; *) dir=transport ;; esac
  echo "== fuzzing $t for ${secs}s"
  (cd "$root/$dir" && RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$secs")
done
