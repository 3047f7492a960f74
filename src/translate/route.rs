//! Knative Routes with neither a KIngress nor a VirtualService describing their traffic (see
//! [`super::claims::route_is_shadowed`]): translated through the KIngress spec Knative's route
//! controller would build from the Route's status ([`crate::model::knative::ingress_from_route`]).

use crate::model::knative::{self, Route};
use crate::model::ObjectKey;

use super::backend::Backends;
use super::error::TranslateError;
use super::kingress;
use super::Options;
use crate::state::Inputs;

/// The KIngress rules Knative's route controller would build for `route`.
pub(super) fn rules(
    inputs: &Inputs,
    opts: &Options,
    b: &mut Backends<'_>,
    key: &ObjectKey,
    route: &Route,
) -> Result<kingress::Rules, TranslateError> {
    let ropts = knative::RouteOptions {
        domain: kingress::default_domain(inputs),
        cluster_domain: opts.cluster_domain.clone(),
        ..Default::default()
    };
    let spec = knative::ingress_from_route(route, &ropts)?;
    kingress::rules(b, key, &spec, true)
}
