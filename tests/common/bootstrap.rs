//! Envoy bootstrap templates (testdata/bootstrap/*.yaml) and filling them.

use std::collections::BTreeMap;

/// ADS-only gateway bootstrap (see [`render_bootstrap`]).
pub const GATEWAY_ADS_TEMPLATE: &str = include_str!("../../testdata/bootstrap/gateway-ads.yaml");

/// Static bootstrap: listener `listener_0` on 127.0.0.1:{listener_port};
/// `a.example.com` -> cluster backend1 (HTTP/1.1, websocket route) on
/// {backend1_port}; `b.example.com` -> cluster backend2 (h2c) on {backend2_port}.
pub const STATIC_TWO_BACKENDS_TEMPLATE: &str =
    include_str!("../../testdata/bootstrap/static-two-backends.yaml");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiType {
    /// State-of-the-world ADS.
    Grpc,
    /// Incremental (delta) ADS.
    DeltaGrpc,
}

impl ApiType {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiType::Grpc => "GRPC",
            ApiType::DeltaGrpc => "DELTA_GRPC",
        }
    }
}

/// Parameters of the ADS gateway bootstrap.
#[derive(Clone, Debug)]
pub struct BootstrapParams {
    /// Port of the ADS server on 127.0.0.1.
    pub xds_port: u16,
    pub pod: String,
    pub namespace: String,
    /// Node metadata LABELS (the gateway pod labels, e.g. istio=ingressgateway).
    pub labels: BTreeMap<String, String>,
    pub api_type: ApiType,
    /// node.cluster; `None` = "istio-ingressgateway.{namespace}".
    pub cluster: Option<String>,
    /// TLS to the control plane (the xds-grpc cluster's transport socket).
    pub xds_tls: Option<XdsTls>,
    /// `authorization: Bearer <token>` on the ADS stream (gRPC initial metadata).
    pub bearer_token: Option<String>,
    /// Run with [`STRICT_RE2_RUNTIME`]: an Envoy that NACKs a regex the server accepts.
    pub strict_re2: bool,
}

/// A bootstrap runtime layer lowering Envoy's RE2 program size limit from 100 (what the server
/// assumes) to 10, so that [`REGEX_OVER_STRICT_LIMIT`] is rejected by this Envoy only: the way
/// to make a real Envoy NACK now that the server leaves out everything a default Envoy rejects.
pub const STRICT_RE2_RUNTIME: &str = "layered_runtime:
  layers:
  - name: strict-re2
    static_layer:
      re2.max_program_size.error_level: 10
";

/// A regex well within Envoy's default program size limit and above the strict one.
pub const REGEX_OVER_STRICT_LIMIT: &str = "/[a-z]{30}";

/// The xds-grpc cluster's TLS: files Envoy reads (PEM).
#[derive(Clone, Debug)]
pub struct XdsTls {
    /// CA that the server certificate must chain to.
    pub ca: String,
    /// The name the server certificate must carry (also sent as SNI).
    pub server_name: String,
    /// Client certificate and key (mTLS), if any.
    pub client_cert: Option<(String, String)>,
}

impl XdsTls {
    fn yaml(&self) -> String {
        let mut certs = String::new();
        if let Some((c, k)) = &self.client_cert {
            certs = format!(
                "          tls_certificates:\n          - certificate_chain: {{filename: \"{c}\"}}\n            private_key: {{filename: \"{k}\"}}\n"
            );
        }
        format!(
            "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        sni: \"{sn}\"\n        common_tls_context:\n          alpn_protocols: [h2]\n{certs}          validation_context:\n            trusted_ca: {{filename: \"{ca}\"}}\n            match_typed_subject_alt_names:\n            - san_type: DNS\n              matcher: {{exact: \"{sn}\"}}\n",
            sn = self.server_name,
            ca = self.ca,
        )
    }
}

impl BootstrapParams {
    /// Defaults: pod `istio-ingressgateway-0`, namespace `istio-system`,
    /// labels `{istio: ingressgateway}`, state-of-the-world GRPC.
    pub fn new(xds_port: u16) -> BootstrapParams {
        BootstrapParams {
            xds_port,
            pod: "istio-ingressgateway-0".to_string(),
            namespace: "istio-system".to_string(),
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
            api_type: ApiType::Grpc,
            cluster: None,
            xds_tls: None,
            bearer_token: None,
            strict_re2: false,
        }
    }

    pub fn strict_re2(mut self, strict: bool) -> Self {
        self.strict_re2 = strict;
        self
    }

    pub fn xds_tls(mut self, tls: XdsTls) -> Self {
        self.xds_tls = Some(tls);
        self
    }

    pub fn bearer_token(mut self, token: &str) -> Self {
        self.bearer_token = Some(token.to_string());
        self
    }

    pub fn api_type(mut self, api_type: ApiType) -> Self {
        self.api_type = api_type;
        self
    }

    pub fn pod(mut self, pod: &str, namespace: &str) -> Self {
        self.pod = pod.to_string();
        self.namespace = namespace.to_string();
        self
    }

    pub fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    /// `router~127.0.0.1~{pod}.{ns}~{ns}.svc.cluster.local`
    pub fn node_id(&self) -> String {
        format!(
            "router~127.0.0.1~{}.{}~{}.svc.cluster.local",
            self.pod, self.namespace, self.namespace
        )
    }
}

/// Render `testdata/bootstrap/gateway-ads.yaml`.
pub fn render_bootstrap(p: &BootstrapParams) -> String {
    let cluster = p
        .cluster
        .clone()
        .unwrap_or_else(|| format!("istio-ingressgateway.{}", p.namespace));
    // JSON is valid YAML flow syntax and quotes every key/value safely.
    let labels = serde_json::to_string(&p.labels).expect("labels to json");
    let mut out = fill_template(
        GATEWAY_ADS_TEMPLATE,
        &[
            ("pod", p.pod.clone()),
            ("ns", p.namespace.clone()),
            ("cluster", cluster),
            ("labels", labels),
            ("api_type", p.api_type.as_str().to_string()),
            ("xds_port", p.xds_port.to_string()),
            (
                "xds_metadata",
                p.bearer_token
                    .as_ref()
                    .map(|t| {
                        format!(
                            "      initial_metadata:\n      - key: authorization\n        value: \"Bearer {t}\""
                        )
                    })
                    .unwrap_or_default(),
            ),
            (
                "xds_tls",
                p.xds_tls.as_ref().map(XdsTls::yaml).unwrap_or_default(),
            ),
        ],
    );
    if p.strict_re2 {
        out.push('\n');
        out.push_str(STRICT_RE2_RUNTIME);
    }
    out
}

/// Replace every `{key}` with its value. Panics if a `{identifier}`
/// placeholder is left over (YAML's `{}` / `{a: b}` are not placeholders).
pub fn fill_template(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    let leftover = placeholders(&out);
    assert!(
        leftover.is_empty(),
        "template has unfilled placeholders {leftover:?}"
    );
    out
}

fn placeholders(s: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        rest = &rest[i + 1..];
        if let Some(j) = rest.find('}') {
            let inner = &rest[..j];
            if !inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                found.push(inner.to_string());
            }
        }
    }
    found
}
