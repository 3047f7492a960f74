//! Core object types: the Kubernetes, Knative and Istio objects we read.

pub mod kingress;
