//! Tools for operating and measuring: `diff` (semantic comparison of config dumps), `synth` (a
//! synthetic Knative cluster and a scripted Envoy, for benchmarks), `envoy_bin` (finding stock
//! Envoy for the demo and tests).

pub mod diff;
pub mod envoy_bin;
pub mod synth;
