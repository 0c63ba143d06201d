//! The kube client ebb uses: every apiserver request it makes is counted by verb and resource
//! (`ebb_apiserver_requests_total`), reads and watches included, so an operator (and the
//! benchmark) sees what ebb costs the apiserver.

use std::sync::Arc;
use std::task::{Context, Poll};

use kube::client::ClientBuilder;
use tower::{Layer, Service};

use crate::admin::Metrics;

/// A client from the default configuration (in-cluster or `KUBECONFIG`), counting into
/// `metrics`.
pub async fn counted(metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    counting(config, metrics)
}

/// A client for `config`, counting into `metrics`.
pub fn counting(config: kube::Config, metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&CountLayer(metrics))
        .build())
}

/// Counts requests into [`Metrics`].
#[derive(Clone)]
struct CountLayer(Arc<Metrics>);

impl<S> Layer<S> for CountLayer {
    type Service = Count<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Count {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Count<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<http::Request<B>> for Count<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (verb, resource) = classify(
            request.method().as_str(),
            request.uri().path(),
            request.uri().query().unwrap_or(""),
        );
        self.metrics.count_request(verb, &resource);
        self.inner.call(request)
    }
}

/// The Kubernetes verb and resource (`deployments/scale`, `scaledobjects/status`) of a request.
pub fn classify(method: &str, path: &str, query: &str) -> (&'static str, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest = match parts.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return (verb(method, query, false), "other".to_string()),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    let (resource, named) = match rest {
        [] => ("other".to_string(), false),
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, subresource, ..] => (format!("{resource}/{subresource}"), true),
    };
    (verb(method, query, named), resource)
}

fn verb(method: &str, query: &str, named: bool) -> &'static str {
    let watch = query
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1");
    match method {
        "GET" if watch => "watch",
        "GET" if named => "get",
        "GET" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if named => "delete",
        "DELETE" => "deletecollection",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn requests_are_named_by_verb_and_resource() {
        let cases = [
            (
                "GET",
                "/apis/apps/v1/namespaces/a/deployments/w/scale",
                "",
                "get",
                "deployments/scale",
            ),
            (
                "PATCH",
                "/apis/keda.sh/v1alpha1/namespaces/a/scaledobjects/w/status",
                "",
                "patch",
                "scaledobjects/status",
            ),
            (
                "GET",
                "/apis/keda.sh/v1alpha1/scaledobjects",
                "watch=true&resourceVersion=5",
                "watch",
                "scaledobjects",
            ),
            (
                "GET",
                "/apis/keda.sh/v1alpha1/namespaces/a/scaledobjects",
                "limit=500",
                "list",
                "scaledobjects",
            ),
            (
                "POST",
                "/api/v1/namespaces/a/events",
                "",
                "create",
                "events",
            ),
            ("GET", "/api/v1/namespaces/a", "", "get", "namespaces"),
            ("GET", "/version", "", "list", "other"),
        ];
        for (method, path, query, verb, resource) in cases {
            assert_eq!(
                classify(method, path, query),
                (verb, resource.to_string()),
                "{method} {path}?{query}"
            );
        }
    }
}
