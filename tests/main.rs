//! Integration tests: the real binary over real sockets, origins in-process
//! on ephemeral ports.

mod support;

mod admin;
mod architecture;
mod browser;
mod cache;
mod calls;
mod cluster;
mod compose;
mod compression;
mod config_check;
mod failures;
mod forms;
mod forwarding;
mod framing;
mod fuzz_regressions;
mod hardening;
mod http_state;
mod jar_props;
mod lifecycle;
mod navigation;
mod origin_h2;
mod origin_tls;
mod origin_wire;
mod remote_apps;
mod rewrite_golden;
mod rewrite_props;
mod scale_out;
mod scoping;
mod security;
mod servers;
mod sessions;
mod soak;
mod split_golden;
mod tls;
mod websockets;
