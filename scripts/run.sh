#!/usr/bin/env bash
# Builds and runs the popline node with its embedded defaults (no config file). Extra arguments go to popline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run --release --locked --bin popline -- "$@"
