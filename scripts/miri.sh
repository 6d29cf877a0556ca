#!/usr/bin/env bash
# The engine's tests that run under Miri (Rust's UB checker): those that touch no kernel interface. Miri
# cannot execute io_uring_setup, socket, epoll or eventfd (foreign calls it does not model), so the ring,
# socket and poller tests cannot run under it; what it can check is the memory the engine hands the kernel
# (KernelMemory: bounds, alignment, initialisation, release), the parsers of socket names and control
# messages, GSO/GRO segment arithmetic and the ring's tag routing. Installs the nightly toolchain's miri
# component on first use (needs the Rust dist server).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal --component miri,rust-src
fi
tests=(
    uring::buf_ring::tests::kernel_memory_is_zeroed_bounded_and_freed
    uring::ring::tests::tags_route_and_keep_the_drivers_bits
    offload::tests::socket_names_round_trip_through_the_c_layout
    offload::tests::the_gso_control_message_is_what_the_gro_parser_reads_back
    offload::tests::a_coalesced_buffer_splits_into_its_segments
    uring::tests::refusal_is_told_apart_from_an_unknown_flag
    tests::backend_names_are_the_config_spelling
)
for t in "${tests[@]}"; do
    cargo +nightly miri test -q -p engine --lib -- --exact "$t"
done
echo "miri: ${#tests[@]} engine tests passed"
