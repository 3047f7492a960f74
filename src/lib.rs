//! knative-pilot: an xDS control plane that serves Envoy gateways for Knative traffic.
//!
//! (The data-flow overview is filled in as the stages land; see ARCHITECTURE.md.)

pub mod khash;
pub mod model;
pub mod xds;
