#!/usr/bin/env bash
# Installs what popline's build, run and tests need on a fresh Debian 12 box that has only the Rust toolchain.
# Safe to run any number of times: it installs only what is missing.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# netem-scripts/sysctl/apply.sh uses sysctl(8).
command -v sysctl >/dev/null 2>&1 || need_apt+=(procps)
# The node's integration tests publish and play real media; the fan-out benchmark and interop tests run
# nginx with the RTMP module as the baseline.
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need_apt+=(libnginx-mod-rtmp)
# popline-bench compare's SRT baseline (srt-live-transmit at both ends of the emulated path).
command -v srt-live-transmit >/dev/null 2>&1 || need_apt+=(srt-tools)
# The HLS browser test (relay-bin/tests/hls_browser.rs): headless Chromium (Debian's build plays H.264/AAC
# through Media Source Extensions) runs hls.js from the npm registry.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# The moderation console's test (relay-bin/tests/console.rs) drives Chromium over WebDriver.
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)

if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # Installing nginx must not start it as a service (it would hold port 80): the tests start their own.
  policy_rc_d=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    policy_rc_d=1
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  [ -n "$policy_rc_d" ] && $SUDO rm -f /usr/sbin/policy-rc.d
fi

# hls.js for the HLS browser test, pinned, in a fixed place (POPLINE_TEST_WEB overrides it for the test).
HLSJS_VERSION=1.7.4
web_dir=/opt/popline-test-web
installed=$(node -p "require('$web_dir/node_modules/hls.js/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$HLSJS_VERSION" ]; then
  echo "setup: installing hls.js@$HLSJS_VERSION into $web_dir"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO mkdir -p "$web_dir"
  $SUDO npm install --prefix "$web_dir" --no-audit --no-fund --loglevel=error "hls.js@$HLSJS_VERSION"
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
