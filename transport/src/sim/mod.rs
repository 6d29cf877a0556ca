//! `sim`: a deterministic link simulator in virtual time, for the protocol's tests and the `sim` benchmark.
//!
//! A [`Link`] is one direction of a path with netem's impairments: delay and jitter (with or without
//! reordering), Bernoulli or Gilbert-Elliott loss ([`LossModel`]), duplication, a rate-limited bottleneck with a
//! tail-drop queue, outages and rate changes. Nothing here reads a clock: every call takes `now`, and the same
//! seed with the same calls gives the same result, so a failing scenario is replayed from its seed.
//!
//! - [`rng`]: [`SimRng`], the seeded generator every random choice draws from.
//! - [`loss`]: the random loss models.
//! - [`link`]: the link itself.
//! - [`histogram`]: [`Histogram`], a fixed-memory histogram of durations (queueing delay, latency).

pub mod histogram;
pub mod link;
pub mod loss;
pub mod rng;

pub use histogram::Histogram;
pub use link::{Link, LinkConfig, LinkStats, Outage, RateChange, Verdict};
pub use loss::{LossModel, LossProcess};
pub use rng::SimRng;
pub mod media;
pub mod net;
pub mod scenario;
