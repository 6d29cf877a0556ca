#!/usr/bin/env bash
# Installs what popline's build, run and tests need on a fresh Debian 12 box that has only the Rust toolchain.
# Safe to run any number of times: it installs only what is missing.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)

if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# The impairment lab's TUN devices: load the module and create the device node where they are missing.
if [ "$(id -u)" -eq 0 ] && [ ! -e /dev/net/tun ]; then
  modprobe tun 2>/dev/null || true
  if [ ! -e /dev/net/tun ]; then
    mkdir -p /dev/net && mknod /dev/net/tun c 10 200 2>/dev/null && chmod 0666 /dev/net/tun || true
  fi
fi

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "setup: adding rustup component $component"
    rustup component add "$component"
  fi
done
