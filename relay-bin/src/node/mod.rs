//! The data plane: one [`core::Core`] per CPU, each owning its listener (SO_REUSEPORT), clients and share of
//! the streams; [`Node`] starts them and [`NodeHandle`] is the control plane's way in.

pub mod clients;
pub mod core;
pub mod handle;
pub mod hooks;
pub mod mailbox;
pub mod shared;
pub mod streams;

pub use handle::{Node, NodeHandle};
