#!/usr/bin/env bash
# Applies a sysctl profile (netem-scripts/sysctl/NAME.conf), runs a command, and restores every value it
# changed on every exit path (normal exit, error, Ctrl-C, TERM).
# Usage: netem-scripts/sysctl/apply.sh NAME -- CMD [ARGS...]     (root)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ $# -ge 3 ] && [ "$2" = "--" ] || { echo "usage: $0 PROFILE -- CMD [ARGS...]" >&2; exit 2; }
profile="$here/$1.conf"
shift 2
[ -r "$profile" ] || { echo "no sysctl profile $profile" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "applying sysctls needs root" >&2; exit 2; }
saved=()
restore() {
  for kv in "${saved[@]}"; do
    sysctl -q -w "$kv" >/dev/null 2>&1 || echo "could not restore $kv" >&2
  done
}
trap restore EXIT INT TERM
while IFS='=' read -r key value; do
  key="$(echo "$key" | xargs)"; value="$(echo "$value" | xargs)"
  case "$key" in ''|\#*) continue ;; esac
  old="$(sysctl -n "$key")"
  saved+=("$key=$old")
  sysctl -q -w "$key=$value"
  echo "sysctl: $key = $value (was $old)" >&2
done < "$profile"
"$@"
