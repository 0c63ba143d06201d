//! Who is asking, and may they: the aggregator's client certificate (verified against the
//! requestheader CA during the handshake) with the user in its X-Remote-* headers, or a bearer
//! token checked by TokenReview; then a SubjectAccessReview. Answers are cached for a few
//! seconds, so an HPA polling every 15 s costs the apiserver little.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::metrics_api::request::{ApiError, GROUP, VERSION};

/// How long a TokenReview or SubjectAccessReview answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);

/// The front proxy's settings, from `kube-system/extension-apiserver-authentication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// `requestheader-client-ca-file`: the CA of the aggregator's client certificate.
    pub client_ca: String,
    /// `requestheader-allowed-names`: the CommonNames accepted (any, when empty).
    pub allowed_names: Vec<String>,
    /// `requestheader-username-headers`.
    pub username_headers: Vec<String>,
    /// `requestheader-group-headers`.
    pub group_headers: Vec<String>,
}

impl RequestHeader {
    /// Reads the ConfigMap's data.
    pub fn from_config_map(
        data: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let list = |key: &str, default: &[&str]| -> Result<Vec<String>, String> {
            match data.get(key) {
                None => Ok(default.iter().map(|s| s.to_string()).collect()),
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| format!("{key}: expected a JSON list of strings: {e}")),
            }
        };
        Ok(Self {
            client_ca: data
                .get("requestheader-client-ca-file")
                .filter(|s| !s.trim().is_empty())
                .cloned()
                .ok_or("requestheader-client-ca-file is missing: the apiserver runs without an aggregation layer")?,
            allowed_names: list("requestheader-allowed-names", &[])?,
            username_headers: list("requestheader-username-headers", &["X-Remote-User"])?,
            group_headers: list("requestheader-group-headers", &["X-Remote-Group"])?,
        })
    }

    /// Reads it from the cluster.
    pub async fn load(client: &Client) -> Result<Self, String> {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
            .get("extension-apiserver-authentication")
            .await
            .map_err(|e| format!("reading kube-system/extension-apiserver-authentication: {e}"))?;
        Self::from_config_map(&cm.data.unwrap_or_default())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
}

/// Who the TLS handshake proved the peer to be.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// CommonName of a client certificate that chains to the requestheader CA.
    pub front_proxy_cn: Option<String>,
}

/// What the request's connection and headers say, before any apiserver call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The front proxy, speaking for a user.
    Proxied(Identity),
    /// The front proxy itself (its availability checks carry no user).
    FrontProxy,
    /// A bearer token, to be reviewed.
    Token(String),
}

/// Reads the claim of a request (pure).
pub fn claim(config: &RequestHeader, peer: &Peer, headers: &HeaderMap) -> Result<Claim, ApiError> {
    if let Some(cn) = &peer.front_proxy_cn {
        if !config.allowed_names.is_empty() && !config.allowed_names.contains(cn) {
            return Err(ApiError::unauthorized(format!(
                "client certificate {cn:?} is not an allowed front proxy"
            )));
        }
        let user = config
            .username_headers
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()))
            .filter_map(|v| v.to_str().ok())
            .find(|v| !v.is_empty());
        return Ok(match user {
            Some(user) => Claim::Proxied(Identity {
                user: user.to_string(),
                groups: config
                    .group_headers
                    .iter()
                    .flat_map(|h| headers.get_all(h.as_str()))
                    .filter_map(|v| v.to_str().ok())
                    .map(str::to_string)
                    .collect(),
            }),
            None => Claim::FrontProxy,
        });
    }
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match token {
        Some(t) => Ok(Claim::Token(t.to_string())),
        None => Err(ApiError::unauthorized(
            "expected the aggregator's client certificate or a bearer token",
        )),
    }
}

fn fingerprint(value: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Answers kept for [`CACHE_TTL`], by a hash of the question. Expired entries are swept at
/// most once per TTL, not on every request.
struct Cache<T>(Mutex<(Entries<T>, Instant)>);

/// Answers by key, with when they were given.
type Entries<T> = HashMap<u64, (Instant, T)>;

impl<T: Clone> Cache<T> {
    fn new() -> Self {
        Self(Mutex::new((HashMap::new(), Instant::now())))
    }

    fn get(&self, key: u64) -> Option<T> {
        let cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .0
            .get(&key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, v)| v.clone())
    }

    fn insert(&self, key: u64, value: T) {
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (entries, swept) = &mut *cache;
        if swept.elapsed() >= CACHE_TTL {
            entries.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            *swept = Instant::now();
        }
        entries.insert(key, (Instant::now(), value));
    }
}

/// Reviews tokens and access through the apiserver, with a short cache.
pub struct Reviewer {
    client: Client,
    tokens: Cache<Result<Identity, ApiError>>,
    access: Cache<Result<(), ApiError>>,
}

impl Reviewer {
    /// A reviewer asking through `client` (ebb needs system:auth-delegator).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            tokens: Cache::new(),
            access: Cache::new(),
        }
    }

    /// The identity behind a bearer token (kept only as a hash).
    pub async fn token(&self, token: &str) -> Result<Identity, ApiError> {
        let key = fingerprint(&token);
        if let Some(answer) = self.tokens.get(key) {
            return answer;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ApiError::internal(format!("TokenReview failed: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        let answer = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => Ok(Identity {
                user: user.username.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
            }),
            _ => Err(ApiError::unauthorized("the bearer token was not accepted")),
        };
        self.tokens.insert(key, answer.clone());
        answer
    }

    /// Whether `who` may read `metric` in `namespace` (verb `list` on resource `<metric>` of
    /// the group, as the apiserver reads the path).
    pub async fn authorize(
        &self,
        who: &Identity,
        namespace: &str,
        metric: &str,
    ) -> Result<(), ApiError> {
        let key = fingerprint(&(who, namespace, metric));
        if let Some(answer) = self.access.get(key) {
            return answer;
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.user.clone()),
                groups: Some(who.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_string()),
                    verb: Some("list".into()),
                    group: Some(GROUP.into()),
                    version: Some(VERSION.into()),
                    resource: Some(metric.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ApiError::internal(format!("SubjectAccessReview failed: {e}")))?;
        let answer = if reviewed.status.is_some_and(|s| s.allowed) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{} may not read external metric {metric} in namespace {namespace}",
                who.user
            )))
        };
        self.access.insert(key, answer.clone());
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config() -> RequestHeader {
        RequestHeader::from_config_map(&BTreeMap::from([
            (
                "requestheader-client-ca-file".to_string(),
                "PEM".to_string(),
            ),
            (
                "requestheader-allowed-names".to_string(),
                r#"["front-proxy-client"]"#.to_string(),
            ),
            (
                "requestheader-username-headers".to_string(),
                r#"["X-Remote-User"]"#.to_string(),
            ),
            (
                "requestheader-group-headers".to_string(),
                r#"["X-Remote-Group"]"#.to_string(),
            ),
        ]))
        .expect("config")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn the_front_proxy_speaks_for_the_user_in_its_headers() {
        let peer = Peer {
            front_proxy_cn: Some("front-proxy-client".into()),
        };
        let h = headers(&[
            ("x-remote-user", "system:kube-controller-manager"),
            ("x-remote-group", "system:authenticated"),
            ("x-remote-group", "ops"),
        ]);
        assert_eq!(
            claim(&config(), &peer, &h),
            Ok(Claim::Proxied(Identity {
                user: "system:kube-controller-manager".into(),
                groups: vec!["system:authenticated".into(), "ops".into()],
            }))
        );
        assert_eq!(
            claim(&config(), &peer, &HeaderMap::new()),
            Ok(Claim::FrontProxy)
        );
    }

    #[test]
    fn headers_count_only_behind_an_allowed_certificate() {
        // Without a certificate, X-Remote-User is ignored: a token is needed.
        let h = headers(&[("x-remote-user", "admin")]);
        assert_eq!(
            claim(&config(), &Peer::default(), &h)
                .expect_err("refused")
                .code,
            401
        );
        // A certificate of the right CA with another name is refused.
        let other = Peer {
            front_proxy_cn: Some("someone".into()),
        };
        let err = claim(&config(), &other, &h).expect_err("refused");
        assert_eq!(err.code, 401);
        assert!(err.message.contains("\"someone\""), "{err}");
        // A bearer token is passed on for review.
        let h = headers(&[("authorization", "Bearer abc")]);
        assert_eq!(
            claim(&config(), &Peer::default(), &h),
            Ok(Claim::Token("abc".into()))
        );
    }

    #[test]
    fn the_config_map_must_carry_the_ca() {
        let err = RequestHeader::from_config_map(&BTreeMap::new()).expect_err("missing");
        assert!(err.contains("requestheader-client-ca-file"), "{err}");
        let bad = RequestHeader::from_config_map(&BTreeMap::from([
            (
                "requestheader-client-ca-file".to_string(),
                "PEM".to_string(),
            ),
            (
                "requestheader-allowed-names".to_string(),
                "front-proxy-client".to_string(),
            ),
        ]))
        .expect_err("not JSON");
        assert!(
            bad.starts_with("requestheader-allowed-names: expected a JSON list"),
            "{bad}"
        );
    }
}
