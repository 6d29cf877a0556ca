//! `popline`: the PoP node.
//!
//! The node (RTMP ingest and playback, GOP cache, fan-out, relays, admin API) lands with its own issue. Until
//! then the binary says what it is and what this build already carries, and exits successfully.

fn main() {
    println!(
        "popline {}: live-video relay engine for CDN points of presence.\n\
         This build carries the popline transport (protocol version {}) and its link simulator;\n\
         the RTMP node is not in this build yet. Try `popline-bench sim --help` to exercise the transport.",
        env!("CARGO_PKG_VERSION"),
        transport::wire::PROTOCOL_VERSION,
    );
}
