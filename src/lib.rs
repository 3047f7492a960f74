//! knative-pilot: an xDS control plane that serves Envoy gateways for Knative traffic.
//!
//! Data flows one way, and each stage can be tested without the ones around it:
//!
//! ```text
//! source::files ──> state::Inputs ──> translate (pure) ──> xds::cache / hub::Hub ──> xds::server
//!   manifests        indexed objects    ir -> envoy protos   snapshot per proxy        ADS streams,
//!   (file, doc)      sorted, no I/O     errors name objects  labels (watch channel)    xds::conn state
//!                                                                                       machine each
//! ```
//!
//! - [`model`]: the objects (KIngress, Route/Revision, Istio Gateway/VirtualService, k8s core).
//! - [`source`]: where objects come from; every error names file and document.
//! - [`state`]: the indexed set of objects; no I/O.
//! - [`translate`]: objects in, Envoy resources out, named as istiod names them; no I/O, no clocks.
//!   [`translate::incremental`] keeps the same output up to date per change, with work
//!   proportional to the change.
//! - [`xds`]: snapshots (versioned resources), the I/O-free ADS connection state machine, and
//!   the tonic service around it.
//! - [`hub`]: the xDS cache: sources apply [`state::Change`]s, it translates what they touch and
//!   publishes a snapshot per proxy label set.
//! - [`synth`]: a synthetic Knative cluster of N services and a scripted Envoy, for benchmarks.
//! - [`serve`]: the runtime (file watch, debounce, servers); [`debug`]: the debug HTTP routes.
//! - [`dump`]: Envoy admin `/config_dump` JSON; [`cli`], [`demo`], [`pipeline`]: entry points.
//!
//! See ARCHITECTURE.md for the decisions behind each stage.

pub mod cli;
pub mod debug;
pub mod demo;
pub mod dump;
pub mod hub;
pub mod khash;
pub mod model;
pub mod pipeline;
pub mod serve;
pub mod source;
pub mod state;
pub mod synth;
pub mod translate;
pub mod xds;
