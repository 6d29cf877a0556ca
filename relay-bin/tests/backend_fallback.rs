//! The node where io_uring is refused (as under Docker's default seccomp profile): with `engine.backend =
//! "auto"` its cores fall back to epoll, report it, and serve RTMP; with `"uring"` the node refuses to start
//! with a clear error. A child process (this test binary, re-run) installs the seccomp filter first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::rtmp_client;
use relay::bans::BanStore;
use relay::config::{Config, IoBackend};
use relay::control::NodeControl;
use relay::node::Node;

const CHILD_ENV: &str = "POPLINE_NODE_SECCOMP_CHILD";

fn config(backend: IoBackend) -> Config {
    let mut config = Config::default();
    config.rtmp.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.egress.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.engine.cores = 2;
    config.engine.pin = false;
    config.engine.backend = backend;
    config
}

/// Runs only in the child, under the filter.
#[test]
fn child_node_under_seccomp() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    engine::seccomp::deny_io_uring_setup().unwrap();
    let bans = Arc::new(BanStore::open(None).unwrap());

    let forced = Node::start(config(IoBackend::Uring), bans.clone());
    let error = forced
        .err()
        .expect("a node forced onto io_uring must not start without it");
    assert!(error.to_string().contains("uring"), "{error}");

    let node = Node::start(config(IoBackend::Auto), bans).unwrap();
    assert_eq!(node.handle().stats().backend, "epoll");
    let mut publisher = rtmp_client::Client::connect(node.rtmp_addr(), "live", None);
    assert!(publisher.try_publish("fallback"), "publish on the epoll fallback");
    println!("NODE-SECCOMP-CHILD-OK backend={}", node.handle().stats().backend);
    node.shutdown();
}

#[test]
fn the_node_falls_back_to_epoll_where_io_uring_is_refused() {
    let out = engine::seccomp::rerun_test_in_child("child_node_under_seccomp", CHILD_ENV).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    assert!(
        stdout.contains("NODE-SECCOMP-CHILD-OK backend=epoll"),
        "{stdout}\n{stderr}"
    );
    // Outside the filter the same configuration runs on io_uring.
    let node = Node::start(config(IoBackend::Auto), Arc::new(BanStore::open(None).unwrap())).unwrap();
    assert_eq!(node.handle().stats().backend, "uring");
    node.shutdown();
}
