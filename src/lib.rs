//! knative-pilot: an xDS control plane that serves Envoy gateways for Knative traffic.
//!
//! (The data-flow overview is filled in as the stages land; see ARCHITECTURE.md.)

pub mod cli;
pub mod dump;
pub mod khash;
pub mod model;
pub mod pipeline;
pub mod serve;
pub mod source;
pub mod state;
pub mod translate;
pub mod xds;
