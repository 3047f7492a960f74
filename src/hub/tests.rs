use super::*;
use crate::xds::ROUTE;
use std::time::Duration;

fn inputs(yaml: &str) -> Inputs {
    Inputs::from_test_yaml(yaml)
}

fn kingress(percent: i64) -> String {
    format!(
        r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  namespace: default
  annotations: {{networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev}}
spec:
  rules:
  - hosts: [hello.default.example.com]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {{serviceNamespace: default, serviceName: hello-00001, servicePort: 80, percent: {percent}}}
---
apiVersion: v1
kind: Service
metadata: {{name: hello-00001, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8012}}]
"#
    )
}

fn proxy() -> ProxyIdentity {
    ProxyIdentity {
        id: "router~1~gw.istio-system~istio-system.svc.cluster.local".into(),
        namespace: Some("istio-system".into()),
        labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
    }
}

fn route_bytes(rx: &watch::Receiver<Arc<Snapshot>>) -> Vec<u8> {
    rx.borrow()
        .of_type(ROUTE)
        .and_then(|m| m.get("http.80"))
        .map(|r| r.body.value.clone())
        .unwrap_or_default()
}

#[test]
fn not_ready_until_the_first_update() {
    let hub = Hub::new(Options::default());
    assert_eq!(
        hub.subscribe(&proxy()).err(),
        Some(SubscribeError::NotReady)
    );
    hub.update(inputs(&kingress(100)), vec![]);
    assert!(hub.subscribe(&proxy()).is_ok());
}

#[test]
fn a_broken_object_keeps_its_last_good_version_until_deleted() {
    let hub = Hub::new(Options::default());
    hub.update(inputs(&kingress(100)), vec![]);
    let rx = hub.subscribe(&proxy()).unwrap();
    let good = route_bytes(&rx);
    assert!(String::from_utf8_lossy(&good).contains("hello.default.example.com"));

    hub.update(inputs(&kingress(90)), vec![]);
    assert_eq!(
        route_bytes(&rx),
        good,
        "the last good KIngress is still served"
    );
    let errors = hub.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].to_string().contains("sum to 90"), "{}", errors[0]);
    assert!(errors[0]
        .to_string()
        .contains("previous version is still served"));

    // Deleted: gone for real.
    hub.update(Inputs::default(), vec![]);
    assert!(!String::from_utf8_lossy(&route_bytes(&rx)).contains("hello.default.example.com"));
    // A broken object with no good past is simply left out.
    hub.update(inputs(&kingress(90)), vec![]);
    assert!(!String::from_utf8_lossy(&route_bytes(&rx)).contains("hello.default.example.com"));
}

fn labelled(app: &str) -> ProxyIdentity {
    ProxyIdentity {
        id: format!("gw-{app}"),
        namespace: None,
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
    }
}

fn limited(max_label_sets: usize, grace: Duration) -> Arc<Hub> {
    let hub = Hub::with_engine_limits(
        Options::default(),
        EngineLimits {
            max_label_sets,
            grace,
        },
    );
    hub.update(inputs(&kingress(100)), vec![]);
    hub
}

#[test]
fn label_sets_beyond_the_limit_are_refused_but_the_gateways_never() {
    let hub = limited(2, Duration::from_secs(300));
    let gateways = hub.label_sets();
    assert!(
        gateways >= 1,
        "the gateways' engines exist from the first load"
    );
    let _a = hub.subscribe(&labelled("a")).unwrap();
    let _b = hub.subscribe(&labelled("b")).unwrap();
    assert_eq!(hub.label_sets(), gateways + 2);
    assert_eq!(
        hub.subscribe(&labelled("c")).err(),
        Some(SubscribeError::TooManyLabelSets { limit: 2 })
    );
    assert_eq!(
        hub.label_sets(),
        gateways + 2,
        "no engine for the refused one"
    );
    // More Envoys of a label set in use, and of the gateways, are always admitted.
    assert!(hub.subscribe(&labelled("a")).is_ok());
    assert!(hub.subscribe(&proxy()).is_ok());
    assert_eq!(hub.label_sets(), gateways + 2);
}

#[test]
fn an_unused_engine_is_dropped_after_the_grace_period() {
    let grace = Duration::from_secs(300);
    let hub = limited(8, grace);
    let gateways = hub.label_sets();
    let a = hub.subscribe(&labelled("a")).unwrap();
    let b = hub.subscribe(&labelled("b")).unwrap();
    let gw = hub.subscribe(&proxy()).unwrap();
    drop((b, gw));
    let t0 = Instant::now();
    assert_eq!(hub.collect_unused(t0), 0, "first seen unused");
    assert_eq!(
        hub.collect_unused(t0 + grace / 2),
        0,
        "within the grace period"
    );
    assert_eq!(hub.label_sets(), gateways + 2);
    assert_eq!(hub.collect_unused(t0 + grace), 1, "b's engine");
    assert_eq!(
        hub.label_sets(),
        gateways + 1,
        "a (connected) and the gateways' stay"
    );
    // Unused, then used again within the grace period: kept.
    drop(a);
    assert_eq!(hub.collect_unused(t0 + grace), 0);
    let _a = hub.subscribe(&labelled("a")).unwrap();
    assert_eq!(hub.collect_unused(t0 + grace * 3), 0);
    assert_eq!(hub.label_sets(), gateways + 1);
    // A change is still translated for what is left, and b comes back on demand.
    hub.update(inputs(&kingress(100)), vec![]);
    assert!(hub.subscribe(&labelled("b")).is_ok());
    assert_eq!(hub.label_sets(), gateways + 2);
}

#[test]
fn a_new_label_set_at_the_limit_takes_the_slot_of_the_one_unused_longest() {
    let hub = limited(2, Duration::from_secs(300));
    let gateways = hub.label_sets();
    let a = hub.subscribe(&labelled("a")).unwrap();
    let b = hub.subscribe(&labelled("b")).unwrap();
    drop(b);
    let t0 = Instant::now();
    hub.collect_unused(t0);
    drop(a);
    hub.collect_unused(t0 + Duration::from_secs(1));
    // b has been unused the longest: c takes its slot.
    let _c = hub.subscribe(&labelled("c")).unwrap();
    assert_eq!(hub.label_sets(), gateways + 2);
    let _a = hub.subscribe(&labelled("a")).unwrap();
    assert_eq!(
        hub.subscribe(&labelled("b")).err(),
        Some(SubscribeError::TooManyLabelSets { limit: 2 })
    );
}
