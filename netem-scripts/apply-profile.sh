#!/usr/bin/env bash
# Applies an impairment profile (netem-scripts/profiles/NAME.profile) between two network namespaces and runs a
# command in the first one, or waits until interrupted.
#
#   netem-scripts/apply-profile.sh PROFILE [-- COMMAND...]
#
# With sch_netem in the kernel: a veth pair, namespace A 169.254.77.1/30 and B 169.254.77.2/30, `tc netem` on each
# end's egress (a2b keys on A's end, b2a keys on B's). Without it (this machine, CI): says so and runs
# `popline-bench emulate` (the userspace emulator, same profile, same addresses) if it can find it.
# Everything created is deleted on every exit path (trap on EXIT, INT, TERM).
#
# Mapping to netem: our jitter is uniform in [0, jitter] (netem's is +-jitter around the delay), so netem gets
# `delay (delay + jitter/2) (jitter/2)`; netem's internal queue reorders jittered packets, ours only with
# reorder=yes. queue (bytes) becomes netem's packet limit at 1500 bytes a packet. outage is done by switching the
# qdisc to 100% loss for its window; profiles with rate_change or trace go to the emulator.
set -euo pipefail

usage() { echo "usage: $0 PROFILE [-- COMMAND...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
profile=$1; shift
[ -f "$profile" ] || profile="$(dirname "$0")/profiles/$profile.profile"
[ -f "$profile" ] || { echo "no such profile: $1" >&2; exit 2; }
if [ $# -gt 0 ]; then [ "$1" = "--" ] || usage; shift; fi

ns_a="popline-tc-$$-a"; ns_b="popline-tc-$$-b"; probe="popline-tc-$$-probe"
bg_pids=()
cleanup() {
    local p
    for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for ns in "$probe" "$ns_a" "$ns_b"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Does this kernel have sch_netem? Try it on loopback in a throwaway namespace.
has_netem() {
    command -v tc >/dev/null || return 1
    ip netns add "$probe" || return 1
    local ok=1
    ip netns exec "$probe" tc qdisc add dev lo root netem delay 0ms 2>/dev/null && ok=0
    ip netns del "$probe" 2>/dev/null || true
    return $ok
}

# tc netem has no trace-driven rate (mahimahi traces) and no rate schedule: such profiles always use the
# userspace emulator, which has both.
needs_emulator=""
grep -Eq '^[[:space:]]*((a2b|b2a)\.)?(trace|rate_change)[[:space:]]*=' "$profile" && needs_emulator=1
if [ -n "$needs_emulator" ] || ! has_netem; then
    if [ -n "$needs_emulator" ]; then
        echo "this profile has a trace or rate_change, which tc netem cannot express: use the userspace emulator," >&2
    else
        echo "sch_netem is not available in this kernel: use the userspace emulator," >&2
    fi
    echo "  popline-bench emulate --profile $profile [--seconds N] [-- COMMAND...]" >&2
    bench=${POPLINE_BENCH:-$(command -v popline-bench || true)}
    if [ -n "$bench" ]; then
        trap - EXIT
        if [ $# -gt 0 ]; then exec "$bench" emulate --profile "$profile" -- "$@"; fi
        exec "$bench" emulate --profile "$profile" --seconds "${SECONDS_TO_RUN:-3600}"
    fi
    exit 1
fi

# key DIRECTION: the value of a2b.KEY / b2a.KEY, else KEY, else empty.
value() {
    local key=$1 dir=$2 v
    v=$(sed -n "s/^[[:space:]]*$dir\.$key[[:space:]]*=[[:space:]]*\([^#]*\).*/\1/p" "$profile" | tail -n1)
    [ -n "$v" ] || v=$(sed -n "s/^[[:space:]]*$key[[:space:]]*=[[:space:]]*\([^#]*\).*/\1/p" "$profile" | tail -n1)
    echo "${v%"${v##*[![:space:]]}"}"
}
# A duration in microseconds ("50ms", "0.5ms", "2s", "300us").
to_us() {
    awk -v d="$1" 'BEGIN { n = d + 0; if (d ~ /us$/) m = 1; else if (d ~ /ms$/) m = 1000; else if (d ~ /s$/) m = 1e6;
                           else m = 1000; printf "%d", n * m }'
}
pct() { # "1%" -> 1, "0.01" -> 1
    case $1 in *%) echo "${1%\%}" ;; *) awk -v p="$1" 'BEGIN { printf "%g", p * 100 }' ;; esac
}
netem_args() {
    local dir=$1 delay jitter loss dup rate queue args=()
    delay=$(to_us "$(value delay "$dir")"); jitter=$(to_us "$(value jitter "$dir")")
    [ -n "$(value delay "$dir")" ] || delay=0
    [ -n "$(value jitter "$dir")" ] || jitter=0
    if [ "$jitter" -gt 0 ]; then
        args+=(delay "$((delay + jitter / 2))us" "$((jitter / 2))us")
    else
        args+=(delay "${delay}us")
    fi
    loss=$(value loss "$dir")
    case $loss in
        ""|none|0) ;;
        GE:*|ge:*)
            IFS=, read -r p r lg lb <<<"${loss#*:}"
            args+=(loss gemodel "$(pct "$p")%" "$(pct "$r")%" "$(pct "${lb:-1}")%" "$(pct "${lg:-0}")%") ;;
        *) args+=(loss random "$(pct "$loss")%") ;;
    esac
    dup=$(value duplicate "$dir"); [ -z "$dup" ] || args+=(duplicate "$(pct "$dup")%")
    rate=$(value rate "$dir")
    if [ -n "$rate" ]; then
        args+=(rate "$rate")
        queue=$(value queue "$dir")
        local bps
        bps=$(awk -v r="$rate" 'BEGIN { n = r + 0; if (r ~ /gbit/) n *= 1e9; else if (r ~ /mbit/) n *= 1e6;
                                         else if (r ~ /kbit/) n *= 1e3; printf "%d", n }')
        case $queue in
            ""|*bdp)
                local k=${queue%bdp} rtt_us
                k=${k:-1}
                rtt_us=$(( $(to_us "$(value delay a2b)") + $(to_us "$(value delay b2a)") ))
                queue=$(awk -v b="$bps" -v t="$rtt_us" -v k="$k" 'BEGIN { q = b / 8 * t / 1e6 * k;
                                                                         if (q < 15000) q = 15000; printf "%d", q }') ;;
        esac
        # netem's limit counts the packets in its delay line too: add this direction's rate x delay.
        local line
        line=$(awk -v b="$bps" -v d="$delay" 'BEGIN { printf "%d", b / 8 * d / 1e6 }')
        args+=(limit "$(( (queue + line) / 1500 + 1 ))")
    else
        args+=(limit "$(value limit x || true)")
        [ -n "${args[-1]}" ] || args[-1]=50000
    fi
    echo "${args[@]}"
}

ip netns add "$ns_a"; ip netns add "$ns_b"
ip link add "va$$" netns "$ns_a" type veth peer name "vb$$" netns "$ns_b"
for side in "a $ns_a va$$ 169.254.77.1" "b $ns_b vb$$ 169.254.77.2"; do
    read -r _ ns dev addr <<<"$side"
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$addr/30" dev "$dev"
    ip -n "$ns" link set "$dev" up
done
# shellcheck disable=SC2046
ip netns exec "$ns_a" tc qdisc add dev "va$$" root netem $(netem_args a2b)
# shellcheck disable=SC2046
ip netns exec "$ns_b" tc qdisc add dev "vb$$" root netem $(netem_args b2a)
echo "profile $(basename "$profile" .profile): $ns_a (169.254.77.1) <-> $ns_b (169.254.77.2)" >&2

# Outages: 100% loss for each DURATION@START window, per direction.
for pair in "a2b $ns_a va$$" "b2a $ns_b vb$$"; do
    read -r dir ns dev <<<"$pair"
    outages=$(value outage "$dir")
    [ -n "$outages" ] || continue
    normal=$(netem_args "$dir")
    IFS=, read -ra windows <<<"$outages"
    for w in "${windows[@]}"; do
        dur=$(to_us "${w%@*}"); at=$(to_us "${w#*@}")
        # shellcheck disable=SC2086
        ( sleep "$(awk -v u="$at" 'BEGIN { print u / 1e6 }')"
          ip netns exec "$ns" tc qdisc change dev "$dev" root netem loss 100%
          sleep "$(awk -v u="$dur" 'BEGIN { print u / 1e6 }')"
          ip netns exec "$ns" tc qdisc change dev "$dev" root netem $normal ) &
        bg_pids+=($!)
    done
done
[ -z "$(value rate_change a2b)$(value rate_change b2a)" ] || echo "warning: rate_change is not applied with tc" >&2

if [ $# -gt 0 ]; then
    ip netns exec "$ns_a" "$@"
else
    echo "applied; Ctrl-C to remove" >&2
    while :; do sleep 3600; done
fi
