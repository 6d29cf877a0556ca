#!/usr/bin/env bash
# N popline nodes in network namespaces joined by the PoP mesh across emulated links (root), then a command
# run with the topology in its environment, or a wait until interrupted. A thin wrapper around
# `popline-bench topology` (found as $POPLINE_BENCH, on the PATH, or in target/{release,debug}/).
#
#   netem-scripts/topology.sh [--nodes N] [--profile NAME] [--link x-y=NAME]... [--origins APP=x,y]... \
#       [popline-bench topology flags...] [-- COMMAND...]
#
# Every pair of nodes is linked (a full mesh) with --profile (default clean) unless --link gives that pair
# another profile (--only-listed: only the listed pairs). Link k is 169.254.(100+k).1/30 <-> .2/30. Each node
# (a, b, c, ...) runs `popline` in namespace popline-topo-PID-N-ID: RTMP on 127.0.0.1:1935+i and the admin
# API on 127.0.0.1:8080+i inside its namespace (reach them with `ip netns exec NS ...`), the mesh on UDP
# port 7000. When every link is up it prints a line per node: `node a: ns=... rtmp=... http=... pid=...`.
# The command runs in this namespace with POPLINE_NODES=a,b,c, POPLINE_LINKS, POPLINE_TOKEN (the admin API's
# bearer token) and per node POPLINE_NS_A, POPLINE_RTMP_A, POPLINE_HTTP_A, POPLINE_PID_A. Everything
# (nodes, namespaces) is removed when the command exits or on SIGINT/SIGTERM.
#
# Example: publish at a, play at c (home b), for 20 s:
#   netem-scripts/topology.sh --nodes 3 --profile lossy-1pct --origins live=b -- sh -c '
#     ip netns exec $POPLINE_NS_A ffmpeg -re -i in.flv -c copy -f flv $POPLINE_RTMP_A/live/s &
#     sleep 3; ip netns exec $POPLINE_NS_C ffmpeg -i $POPLINE_RTMP_C/live/s -t 15 -c copy -y out.flv'
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bench=${POPLINE_BENCH:-$(command -v popline-bench || true)}
if [ -z "$bench" ]; then
    for p in "$here/../target/release/popline-bench" "$here/../target/debug/popline-bench"; do
        if [ -x "$p" ]; then bench=$p; break; fi
    done
fi
if [ -z "$bench" ]; then
    echo "popline-bench not found: cargo build --release -p bench-harness -p relay, or set POPLINE_BENCH" >&2
    exit 1
fi
# A profile NAME is looked up in ./netem-scripts/profiles/ and in this checkout's netem-scripts/profiles/.
exec "$bench" topology "$@"
