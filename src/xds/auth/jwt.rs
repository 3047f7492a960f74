//! Verifying service-account tokens without an API server (`--from` mode): the signature against
//! a JWKS or PEM public key file (the cluster's service-account issuer keys, e.g. from
//! `/openid/v1/jwks`), then `exp`/`nbf`, the audience and, when given, the issuer. Asymmetric
//! keys only (RSA, EC, Ed25519): a symmetric key in the file is refused, so a token can never be
//! "signed" with a public value.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::identity::Identity;
use super::kube::TokenError;

/// Errors loading the key file (never the token).
#[derive(Debug, thiserror::Error)]
pub enum JwtKeyError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

/// Signature families we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Ed,
}

fn family_of(alg: Algorithm) -> Option<Family> {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some(Family::Rsa),
        Algorithm::ES256 | Algorithm::ES384 => Some(Family::Ec),
        Algorithm::EdDSA => Some(Family::Ed),
        _ => None,
    }
}

struct Key {
    kid: Option<String>,
    family: Family,
    key: DecodingKey,
}

/// Verifies tokens with the keys of one file.
pub struct JwtVerifier {
    keys: Vec<Key>,
    audiences: Vec<String>,
    issuer: Option<String>,
    trust_domain: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field("audiences", &self.audiences)
            .field("issuer", &self.issuer)
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

impl JwtVerifier {
    /// Reads a JWKS (`{"keys": [...]}`) or PEM public keys (RSA or EC `PUBLIC KEY` blocks).
    pub fn from_file(
        path: &Path,
        audiences: Vec<String>,
        issuer: Option<String>,
        trust_domain: String,
    ) -> Result<JwtVerifier, JwtKeyError> {
        let err = |message: String| JwtKeyError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let keys = parse_keys(&text).map_err(err)?;
        Ok(JwtVerifier {
            keys,
            audiences,
            issuer,
            trust_domain,
        })
    }

    /// The identity a token proves (its `sub`, `system:serviceaccount:<ns>:<sa>`).
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let reject = |m: &str| TokenError::Rejected(m.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|_| reject("not a JWT"))?;
        let family =
            family_of(header.alg).ok_or_else(|| reject("signature algorithm not accepted"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&self.audiences);
        validation.validate_nbf = true;
        validation.leeway = 30;
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let mut last = reject("no key of the file matches the token");
        for k in self.keys.iter().filter(|k| {
            k.family == family
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        }) {
            match jsonwebtoken::decode::<Claims>(token, &k.key, &validation) {
                Ok(data) => {
                    return Identity::from_username(&data.claims.sub, &self.trust_domain)
                        .map_err(|e| TokenError::NotServiceAccount(e.to_string()));
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match e.kind() {
                        ErrorKind::InvalidAudience => {
                            TokenError::Audience(self.audiences.join(","))
                        }
                        ErrorKind::ExpiredSignature => reject("expired"),
                        ErrorKind::ImmatureSignature => reject("not valid yet"),
                        ErrorKind::InvalidIssuer => reject("wrong issuer"),
                        ErrorKind::InvalidSignature => reject("bad signature"),
                        _ => reject("invalid token"),
                    };
                    // A bad signature may be another key's; anything else is final.
                    if !matches!(e.kind(), ErrorKind::InvalidSignature) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

fn parse_keys(text: &[u8]) -> Result<Vec<Key>, String> {
    let trimmed = std::str::from_utf8(text)
        .map_err(|_| "not UTF-8".to_string())?
        .trim_start();
    let mut keys = Vec::new();
    if trimmed.starts_with('{') {
        let set: JwkSet = serde_json::from_str(trimmed).map_err(|e| format!("not a JWKS: {e}"))?;
        for jwk in &set.keys {
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                AlgorithmParameters::OctetKey(_) => {
                    return Err("symmetric keys are not accepted".to_string())
                }
                // Unknown key types (non_exhaustive): not ours to use.
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("bad key: {e}"))?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                family,
                key,
            });
        }
    } else {
        for block in trimmed.split_inclusive("-----END PUBLIC KEY-----") {
            let block = block.trim();
            if !block.contains("-----BEGIN") {
                continue;
            }
            let b = block.as_bytes();
            let (family, key) = match DecodingKey::from_rsa_pem(b) {
                Ok(k) => (Family::Rsa, k),
                Err(_) => match DecodingKey::from_ec_pem(b) {
                    Ok(k) => (Family::Ec, k),
                    Err(_) => (
                        Family::Ed,
                        DecodingKey::from_ed_pem(b)
                            .map_err(|_| "a PEM block is no RSA, EC or Ed25519 public key")?,
                    ),
                },
            };
            keys.push(Key {
                kid: None,
                family,
                key,
            });
        }
    }
    if keys.is_empty() {
        return Err("no public key in the file".to_string());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// A P-256 key (PKCS#8 PEM) and its public key PEM, from rcgen.
    fn ec_key() -> (String, String) {
        let kp = rcgen::KeyPair::generate().unwrap();
        (kp.serialize_pem(), kp.public_key_pem())
    }

    fn token(key_pem: &str, kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = kid.map(String::from);
        jsonwebtoken::encode(
            &h,
            &claims,
            &EncodingKey::from_ec_pem(key_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn claims(sub: &str, aud: &str, exp: u64) -> serde_json::Value {
        serde_json::json!({"sub": sub, "aud": [aud], "exp": exp, "iat": now(), "nbf": now() - 10,
                           "iss": "https://kubernetes.default.svc.cluster.local"})
    }

    fn verifier(file: &[u8], issuer: Option<&str>) -> JwtVerifier {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        std::fs::write(&p, file).unwrap();
        JwtVerifier::from_file(
            &p,
            vec!["istio-ca".into()],
            issuer.map(String::from),
            "cluster.local".into(),
        )
        .unwrap()
    }

    const SA: &str = "system:serviceaccount:istio-system:gw";

    #[test]
    fn pem_public_key() {
        let (key, public) = ec_key();
        let v = verifier(public.as_bytes(), None);
        let id = v
            .verify(&token(&key, None, claims(SA, "istio-ca", now() + 600)))
            .unwrap();
        assert_eq!(id.namespace, "istio-system");
        assert_eq!(id.service_account, "gw");
        // Wrong audience, expired, another key, not a service account, garbage.
        assert!(matches!(
            v.verify(&token(&key, None, claims(SA, "other", now() + 600))),
            Err(TokenError::Audience(_))
        ));
        assert!(matches!(
            v.verify(&token(&key, None, claims(SA, "istio-ca", now() - 600))),
            Err(TokenError::Rejected(_))
        ));
        let (other, _) = ec_key();
        assert!(matches!(
            v.verify(&token(&other, None, claims(SA, "istio-ca", now() + 600))),
            Err(TokenError::Rejected(_))
        ));
        assert!(matches!(
            v.verify(&token(&key, None, claims("admin", "istio-ca", now() + 600))),
            Err(TokenError::NotServiceAccount(_))
        ));
        assert!(v.verify("a.b.c").is_err());
        assert!(v.verify("").is_err());
    }

    #[test]
    fn jwks_with_kid_and_issuer() {
        let (key, _) = ec_key();
        let enc = EncodingKey::from_ec_pem(key.as_bytes()).unwrap();
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        let set = serde_json::json!({"keys": [jwk]});
        let v = verifier(
            set.to_string().as_bytes(),
            Some("https://kubernetes.default.svc.cluster.local"),
        );
        let ok = token(&key, Some("k1"), claims(SA, "istio-ca", now() + 600));
        assert!(v.verify(&ok).is_ok());
        let wrong_kid = token(&key, Some("k2"), claims(SA, "istio-ca", now() + 600));
        assert!(v.verify(&wrong_kid).is_err());
        let strict = verifier(set.to_string().as_bytes(), Some("https://other"));
        assert!(strict.verify(&ok).is_err());
    }

    #[test]
    fn symmetric_keys_and_alg_none_are_refused() {
        let set = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        std::fs::write(&p, set.to_string()).unwrap();
        assert!(JwtVerifier::from_file(&p, vec![], None, "td".into()).is_err());
        let (_, public) = ec_key();
        let v = verifier(public.as_bytes(), None);
        // {"alg":"none"}.{"sub":...}.
        let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6aXN0aW8tc3lzdGVtOmd3IiwiYXVkIjoiaXN0aW8tY2EiLCJleHAiOjk5OTk5OTk5OTl9.";
        assert!(v.verify(none).is_err());
    }
}
