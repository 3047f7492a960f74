//! knative-pilot: an xDS control plane that serves Envoy gateways for Knative traffic.
//!
//! Data flows one way, and each stage can be tested without the ones around it. The folders are
//! the stages:
//!
//! ```text
//! model ──> source ──(Batch of state::Change on a channel)──> runtime::debounce ──> hub ──> xds ──> Envoys
//!   │        files, dir, kube                                   quiet / max          │      conn (I/O-free),
//!   │                                                                                │      observe, server
//!   └──> state ──> translate (pure: Inputs in, resources out) ───────────────────────┘
//! runtime (serve, debug, metrics, status, lease) wires the stages; tools and cli sit on top.
//! ```
//!
//! - [`model`]: the objects (KIngress, Route/Revision, Istio Gateway/VirtualService, k8s core).
//! - [`source`]: where objects come from (manifest files and the watched directory, or kube
//!   watchers); every error names the object, and the file and document when there is one.
//!   Running sources send [`source::Batch`]es on a channel; they never call the hub.
//! - [`state`]: the indexed set of objects, and the two input rules every stage shares: first
//!   definition wins ([`state::Inputs::from_sourced`]) and keep the last good version
//!   ([`state::keep_last_good`]); no I/O.
//! - [`translate`]: objects in, Envoy resources out, named as istiod names them; no I/O, no clocks.
//!   [`translate::incremental`] keeps the same output up to date per change, with work
//!   proportional to the change. It imports only [`xds::resource`] of `xds`.
//! - [`hub`]: the xDS cache: it applies [`state::Change`]s, translates what they touch and
//!   publishes a snapshot per proxy label set; objects behind what an Envoy NACKs are
//!   narrowed down and quarantined for that gateway.
//! - [`xds`]: [`xds::resource`] (resources, snapshots, type URLs in push order: the leaf), the
//!   I/O-free ADS connection state machine ([`xds::conn`], which returns responses and events),
//!   the observer interface stream events are reported through ([`xds::observe`]), the tonic
//!   service around them ([`xds::server`]), and [`xds::dump`] (Envoy admin `/config_dump` JSON).
//! - [`runtime`]: plain config structs, serve wiring, the one debouncer, shutdown and drain,
//!   the debug HTTP routes, metrics (Prometheus, istiod's names), KIngress status written by
//!   the one replica holding the Lease.
//! - [`parallel`]: work shared over the cores a budget leaves free (the file loader, the first
//!   load's preparation, an engine's large steps); results in order, whatever the scheduling.
//! - Tools: [`tools`] (diff: semantic comparison of config dumps; synth: a synthetic cluster and
//!   a scripted Envoy for benchmarks; envoy_bin: finding stock Envoy), [`validate`] (findings
//!   about the inputs), [`pipeline`] (the stages glued for one-shot use: `render`, goldens).
//! - [`cli`]: clap structs and commands (and the demo); the only module that knows clap.
//!
//! `tests/layering.rs` holds the imports to these layers; ARCHITECTURE.md lists the allowed
//! edges and the decisions behind each stage.

/// The allocator of the binary, and of the benches that measure what it runs: mimalloc. The
/// first translation allocates millions of small strings and vectors on two threads; glibc's
/// malloc spent 20–30 % of its CPU there (BENCHMARKS.md, "Issue 15: shared object stage and
/// the allocator"). Built without transparent huge pages (`no_thp` in Cargo.toml; the image
/// also sets `MIMALLOC_ALLOW_THP=0`): zeroing fresh 2 MB pages took almost half of that CPU.
pub use mimalloc::MiMalloc as Allocator;

pub mod cli;
pub mod hub;
pub mod khash;
pub mod model;
pub mod parallel;
pub mod pipeline;
pub mod runtime;
pub mod source;
pub mod state;
pub mod tools;
pub mod translate;
pub mod validate;
pub mod xds;
