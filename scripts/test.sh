#!/usr/bin/env bash
# Runs every test of the workspace (unit, property, simulation and integration tests), after installing
# what they need. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
