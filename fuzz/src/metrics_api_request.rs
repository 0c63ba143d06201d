//! What the external metrics API reads from a request before any apiserver call: the query
//! string's `labelSelector` (percent-decoding included), the caller's claim from the TLS peer
//! and the headers, and the answer written for a metric name and value. The path itself is
//! matched by axum's router; what it hands over (namespace and metric name) is arbitrary text
//! here. Each answers a value or a Kubernetes Status error, never a panic; a selector that
//! passes names a ScaledObject in the characters Kubernetes allows.

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use ebb_operator::metrics_api::auth::{Claim, Peer, RequestHeader, claim};
use ebb_operator::metrics_api::request::{scaled_object_of, value_list};

const HEADERS: &[&str] = &[
    "authorization",
    "x-remote-user",
    "x-remote-group",
    "x-remote-extra-scopes",
    "impersonate-user",
    "host",
];

const QUERIES: &[&str] = &[
    "labelSelector=scaledobject.keda.sh%2Fname%3Dorders",
    "labelSelector=scaledobject.keda.sh/name=orders",
    "labelSelector=scaledobject.keda.sh/name==orders,app=x",
    "labelSelector=app+in+(a,b),scaledobject.keda.sh/name=o-1.x_y",
    "labelSelector=scaledobject.keda.sh/name!=orders",
    "labelSelector=%",
    "labelSelector=%zz",
    "labelSelector=%C3%28",
    "labelSelector=",
    "a=b&labelSelector=scaledobject.keda.sh/name=x&labelSelector=y",
    "&&&=",
];

#[derive(Debug, Arbitrary)]
enum Query {
    Known(u8),
    Built(Vec<u8>, String),
    Raw(String),
}

/// What one run reads from the fuzzer's bytes.
#[derive(Debug, Arbitrary)]
struct Input {
    query: Option<Query>,
    front_proxy_cn: Option<String>,
    allowed_names: Vec<String>,
    headers: Vec<(u8, Vec<u8>)>,
    metric: String,
    scaled_object: String,
    value: f64,
}

fn config(allowed_names: Vec<String>) -> RequestHeader {
    RequestHeader {
        client_ca: String::new(),
        allowed_names,
        username_headers: vec!["X-Remote-User".into()],
        group_headers: vec!["X-Remote-Group".into()],
    }
}

fn epoch() -> &'static jiff::Timestamp {
    static AT: OnceLock<jiff::Timestamp> = OnceLock::new();
    AT.get_or_init(jiff::Timestamp::now)
}

/// One input: bytes the fuzzer chose, read as structured [`Input`].
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let query = input.query.map(|q| match q {
        Query::Known(i) => QUERIES[usize::from(i) % QUERIES.len()].to_string(),
        // A chosen prefix followed by arbitrary text, so the decoder sees long tails.
        Query::Built(prefix, tail) => format!(
            "{}{tail}",
            QUERIES[usize::from(prefix.first().copied().unwrap_or(0)) % QUERIES.len()]
        ),
        Query::Raw(s) => s,
    });
    match scaled_object_of(query.as_deref()) {
        Ok(name) => assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)),
            "selector {query:?} gave {name:?}"
        ),
        Err(e) => assert_eq!(e.code, 400, "a selector error is a bad request: {e:?}"),
    }

    let mut headers = http::HeaderMap::new();
    for (name, value) in &input.headers {
        let name = HEADERS[usize::from(*name) % HEADERS.len()];
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let peer = Peer {
        front_proxy_cn: input.front_proxy_cn,
    };
    match claim(&config(input.allowed_names), &peer, &headers) {
        Ok(Claim::Token(token)) => assert!(!token.is_empty() && peer.front_proxy_cn.is_none()),
        Ok(Claim::Proxied(who)) => assert!(!who.user.is_empty() && peer.front_proxy_cn.is_some()),
        Ok(Claim::FrontProxy) => assert!(peer.front_proxy_cn.is_some()),
        Err(e) => assert_eq!(e.code, 401, "a claim error is unauthorized: {e:?}"),
    }

    let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(*epoch());
    match value_list(&input.metric, &input.scaled_object, input.value, at) {
        Ok(list) => {
            assert!(input.value.is_finite() && input.value >= 0.0);
            assert!(list["items"][0]["value"].is_string());
        }
        Err(e) => assert_eq!(e.code, 500, "{e:?}"),
    }
}
