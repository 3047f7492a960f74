//! End-to-end test harness: real Envoy processes, in-process echo backends,
//! HTTP/WebSocket clients and a process wrapper for the knative-pilot binary.
//!
//! Use from an integration test with `mod common; use common::*;`.
//! Async helpers expect a Tokio runtime; prefer
//! `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`.
//!
//! ```ignore
//! mod common;
//! use common::*;
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn hello_through_gateway() {
//!     let v1 = Backend::start("v1").await;
//!     let server = Server::start(&["--some-flag"]).await;
//!     let envoy = Envoy::start(&render_bootstrap(&BootstrapParams::new(server.xds_port()))).await;
//!     envoy.wait_ready(std::time::Duration::from_secs(20)).await;
//!     let port = envoy.listener_port("some-listener").await.unwrap();
//!     let r = http_get(port, "hello.default.example.com", "/", &[]).await;
//!     assert_eq!(r.backend(), Some("v1"));
//! }
//! ```
//!
//! Processes are killed on drop (also while unwinding from a failed
//! assertion, when their logs are printed to stderr). A test binary killed
//! with SIGKILL cannot clean up its children.
#![allow(dead_code)]
#![allow(unused_imports)]

pub mod backend;
pub mod bootstrap;
pub mod client;
pub mod cluster;
pub mod envoy;
pub mod fake_apiserver;
pub mod fixture;
pub mod load;
pub mod node;
pub mod pki;
pub mod server;
pub mod static_bootstrap;
pub mod tls;
pub mod util;

pub use backend::Backend;
pub use bootstrap::{
    fill_template, render_bootstrap, ApiType, BootstrapParams, XdsTls, REGEX_OVER_STRICT_LIMIT,
    STRICT_RE2_RUNTIME,
};
pub use client::{
    backend_spread, http2_get, http_get, http_request, try_http2_get, try_http_get,
    try_http_request, try_ws_echo, ws_echo, HttpClient, HttpVersion, Response,
};
pub use envoy::{envoy_bin, envoy_validate, Envoy};
pub use fixture::{serve_dir, Fixture, Gateways, EXT_POD, LOCAL_POD};
pub use load::Load;
pub use server::Server;
pub use tls::{
    https_get, pem_certs, secret_certificate, testdata_secret_yaml, try_https_get, TlsResponse,
    Trust,
};
pub use util::{cpu_ns, cpu_settled, eventually, free_port, wait_until};
