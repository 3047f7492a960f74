//! Knative Routes with neither a KIngress nor a VirtualService describing their traffic (see
//! [`super::claims::route_is_shadowed`]): translated through the KIngress spec Knative's route
//! controller would build from the Route's status ([`crate::model::knative::ingress_from_route`]).

use crate::model::knative::{self, Route};
use crate::model::ObjectKey;

use super::backend::Backends;
use super::error::TranslateError;
use super::fragment::{ObjectCx, Placement};
use super::kingress;

pub(super) fn placements(
    cx: &ObjectCx<'_>,
    b: &mut Backends<'_>,
    key: &ObjectKey,
    route: &Route,
) -> Result<Vec<Placement>, TranslateError> {
    let ropts = knative::RouteOptions {
        domain: kingress::default_domain(cx.inputs),
        cluster_domain: cx.opts.cluster_domain.clone(),
        ..Default::default()
    };
    let spec = knative::ingress_from_route(route, &ropts)?;
    kingress::placements(cx, b, key, &spec, true)
}
