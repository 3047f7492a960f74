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
//! - [`source`]: where objects come from (manifest files, or kube watchers); every error names
//!   the object, and the file and document when there is one.
//! - [`status`], [`lease`]: KIngress status written by the one replica holding the Lease.
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
//! - [`envoy_bin`]: finding stock Envoy (demo, tests).
//! - [`dump`]: Envoy admin `/config_dump` JSON; [`cli`], [`demo`], [`pipeline`]: entry points.
//! - Operating it: [`diff`] (semantic comparison of config dumps), [`validate`] (findings about
//!   the inputs), [`metrics`] (Prometheus, istiod's names).
//!
//! See ARCHITECTURE.md for the decisions behind each stage.

pub mod cli;
pub mod hub;
pub mod khash;
pub mod model;
pub mod pipeline;
pub mod runtime;
pub mod source;
pub mod state;
pub mod tools;
pub mod translate;
pub mod validate;
pub mod xds;
