//! The data plane: one core per CPU, each a sans-IO [`core::NodeCore`] (its clients, its share of the
//! streams, every decision) run by a thin [`io_loop::CoreLoop`] (its listener (SO_REUSEPORT), sockets, inbox);
//! [`Node`] starts them and [`NodeHandle`] is the control plane's way in.

pub mod clients;
pub mod core;
pub mod handle;
pub mod hooks;
pub mod io_loop;
pub mod mailbox;
pub mod shared;
pub mod streams;

pub use handle::{Node, NodeHandle};
