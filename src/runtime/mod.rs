//! The runtime: wires the stages into a server (`serve`), and everything that runs beside the
//! ADS streams (debug HTTP, metrics, the KIngress status writer and its Lease).

pub mod config;
pub mod debounce;
pub mod debug;
pub mod lease;
pub mod metrics;
pub mod serve;
pub mod shutdown;
pub mod status;
