//! `proxy-status`: one row per connected Envoy from the server's `/debug/syncz`, as
//! `istioctl proxy-status` prints them. Pure: JSON in, rows and text out.
//!
//! Each type's state is the server's (`SyncState`, computed where the connection state lives):
//! `SYNCED`, `STALE`, `NOT SENT`, `NACKED`; a type the Envoy never asked for is `IGNORED`.

use serde::Serialize;
use serde_json::Value;

use super::table::Table;

/// The columns, in istioctl's order; SRDS only when some Envoy asked for scoped routes.
const TYPES: [&str; 6] = ["cds", "lds", "eds", "rds", "srds", "sds"];

/// One type of one Envoy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeRow {
    pub state: String,
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    /// Envoy's message when `state` is `NACKED`.
    pub error: Option<String>,
    /// Version and nonce of the NACKed response.
    pub nacked_version: Option<String>,
    pub nacked_nonce: Option<String>,
}

/// One connected Envoy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusRow {
    pub name: String,
    pub gateways: Vec<String>,
    pub mode: String,
    /// Short type name (`cds` ...) to its state; only the types the Envoy asked for.
    pub types: std::collections::BTreeMap<String, TypeRow>,
}

/// What `proxy-status -o json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub server_version: String,
    pub generation: u64,
    pub proxies: Vec<StatusRow>,
}

fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// The rows of `/debug/syncz`, sorted by node id (then connection).
pub fn status(syncz: &Value) -> Status {
    let mut conns: Vec<&Value> = syncz["connections"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    conns.sort_by_key(|c| (c["node_id"].as_str().unwrap_or(""), c["conn_id"].as_u64()));
    let proxies = conns
        .into_iter()
        .map(|c| {
            let types = c["types"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(short, t)| {
                    let state = t["state"].as_str().unwrap_or("UNKNOWN").to_string();
                    let nacked = state == "NACKED";
                    let nack = &t["last_nack"];
                    (
                        short.clone(),
                        TypeRow {
                            sent_version: string(&t["last_sent_version"]),
                            acked_version: string(&t["last_acked_version"]),
                            error: nacked.then(|| string(&nack["error"])).flatten(),
                            nacked_version: nacked.then(|| string(&nack["version"])).flatten(),
                            nacked_nonce: nacked.then(|| string(&nack["nonce"])).flatten(),
                            state,
                        },
                    )
                })
                .collect();
            StatusRow {
                name: c["node_id"].as_str().unwrap_or("").to_string(),
                gateways: c["gateways"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(string)
                    .collect(),
                mode: c["mode"].as_str().unwrap_or("").to_string(),
                types,
            }
        })
        .collect();
    Status {
        server_version: syncz["version"].as_str().unwrap_or("unknown").to_string(),
        generation: syncz["generation"].as_u64().unwrap_or(0),
        proxies,
    }
}

/// The table, then one line per NACKed type with Envoy's error.
pub fn render(status: &Status) -> String {
    let scoped = status.proxies.iter().any(|p| p.types.contains_key("srds"));
    let shown: Vec<&str> = TYPES
        .iter()
        .copied()
        .filter(|t| *t != "srds" || scoped)
        .collect();
    let upper: Vec<String> = shown.iter().map(|t| t.to_uppercase()).collect();
    let mut header = vec!["NAME", "GATEWAYS"];
    header.extend(upper.iter().map(String::as_str));
    header.push("VERSION");
    let mut table = Table::new(&header);
    let mut nacks = Vec::new();
    for p in &status.proxies {
        let gateways = if p.gateways.is_empty() {
            "-".to_string()
        } else {
            p.gateways.join(",")
        };
        let mut row = vec![p.name.clone(), gateways];
        for t in &shown {
            match p.types.get(*t) {
                Some(ty) => {
                    row.push(ty.state.clone());
                    if let Some(err) = &ty.error {
                        nacks.push(format!(
                            "{} {} (version {}, nonce {}): {}",
                            p.name,
                            t.to_uppercase(),
                            ty.nacked_version.as_deref().unwrap_or("?"),
                            ty.nacked_nonce.as_deref().unwrap_or("?"),
                            err.trim()
                        ));
                    }
                }
                None => row.push("IGNORED".to_string()),
            }
        }
        row.push(format!("knative-pilot-{}", status.server_version));
        table.push(row);
    }
    let mut out = table.render();
    if !nacks.is_empty() {
        out.push_str("\nNACKED by Envoy:\n");
        for n in nacks {
            out.push_str(&format!("  {n}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn syncz() -> Value {
        json!({
            "version": "0.1.0",
            "generation": 7,
            "connections": [
                {"node_id": "router~127.0.0.1~z-gw.istio-system~istio-system.svc.cluster.local",
                 "conn_id": 2, "mode": "delta", "gateways": [],
                 "types": {"cds": {"state": "STALE", "last_sent_version": "b"}}},
                {"node_id": "router~127.0.0.1~a-gw.istio-system~istio-system.svc.cluster.local",
                 "conn_id": 1, "mode": "sotw",
                 "gateways": ["knative-serving/knative-ingress-gateway"],
                 "types": {
                    "cds": {"state": "SYNCED", "last_sent_version": "a", "last_acked_version": "a"},
                    "eds": {"state": "SYNCED"},
                    "lds": {"state": "NOT SENT"},
                    "rds": {"state": "NACKED", "last_sent_version": "r2", "last_acked_version": "r1",
                            "last_nack": {"error": "regex too big\n", "version": "r2", "nonce": "9"}}
                 }}
            ]
        })
    }

    #[test]
    fn one_row_per_envoy_with_each_state_and_the_nack_error_below() {
        let s = status(&syncz());
        assert_eq!(
            s.proxies[0].name.split('~').nth(2),
            Some("a-gw.istio-system")
        );
        assert_eq!(
            render(&s),
            "\
NAME                                                                GATEWAYS                                  CDS      LDS        EDS       RDS       SDS       VERSION
router~127.0.0.1~a-gw.istio-system~istio-system.svc.cluster.local   knative-serving/knative-ingress-gateway   SYNCED   NOT SENT   SYNCED    NACKED    IGNORED   knative-pilot-0.1.0
router~127.0.0.1~z-gw.istio-system~istio-system.svc.cluster.local   -                                         STALE    IGNORED    IGNORED   IGNORED   IGNORED   knative-pilot-0.1.0

NACKED by Envoy:
  router~127.0.0.1~a-gw.istio-system~istio-system.svc.cluster.local RDS (version r2, nonce 9): regex too big
"
        );
        let rds = &s.proxies[0].types["rds"];
        assert_eq!(rds.error.as_deref(), Some("regex too big\n"));
        assert_eq!(s.proxies[0].types["cds"].error, None);
    }

    #[test]
    fn srds_column_only_when_served() {
        let mut v = syncz();
        assert!(!render(&status(&v)).contains("SRDS"));
        v["connections"][0]["types"]["srds"] = json!({"state": "SYNCED"});
        let text = render(&status(&v));
        let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["NAME", "GATEWAYS", "CDS", "LDS", "EDS", "RDS", "SRDS", "SDS", "VERSION"]
        );
        let z_row: Vec<&str> = text.lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(z_row[6], "SYNCED", "{text}");
    }
}
