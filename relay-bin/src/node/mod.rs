//! The data plane: one core per CPU, each a sans-IO [`core::NodeCore`] (its clients, its share of the
//! streams, every decision) run by a thin IO loop (its listener (SO_REUSEPORT), connections, inbox): [`uring_loop::UringLoop`] on io_uring
//! (the default), [`io_loop::CoreLoop`] on epoll where io_uring is refused;
//! [`Node`] starts them and [`NodeHandle`] is the control plane's way in.

pub mod clients;
pub mod core;
pub mod handle;
pub mod hooks;
pub mod io_loop;
pub mod mailbox;
pub mod mesh_node;
pub mod mesh_port;
pub mod mesh_runner;
#[cfg(test)]
mod mesh_sim;
pub mod shared;
pub mod streams;
pub mod uring_loop;

pub use handle::{Node, NodeHandle};
