//! The kube client ebb uses: every apiserver request it makes is counted by verb and resource
//! (`ebb_apiserver_requests_total`), reads and watches included, so an operator (and the
//! benchmark) sees what ebb costs the apiserver; and a request the apiserver refuses for now
//! (429, 503, 504) is retried a few times within about a second, not for minutes.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kube::client::ClientBuilder;
use kube::client::retry::RetryPolicy;
use tower::buffer::BufferLayer;
use tower::retry::RetryLayer;
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

/// A client for `config`, counting into `metrics`, with [`retry_policy`] in place of kube's.
pub fn counting(
    mut config: kube::Config,
    metrics: Arc<Metrics>,
) -> Result<kube::Client, kube::Error> {
    config.default_retry = false;
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&CountLayer(metrics))
        // Retrying needs a service it can clone; kube's stack is boxed by now.
        .with_layer(&BufferLayer::new(1024))
        .with_layer(&RetryLayer::new(retry_policy()))
        .build())
}

/// At most 3 retries of a 429, 503 or 504, 50 ms apart doubling to 200 ms, or after the
/// `Retry-After` the apiserver asks for (priority and fairness sends 1 s).
///
/// kube's default policy retries 15 times with a backoff growing to 1,000 s: a write refused
/// during an apiserver overload would hold its scale loop for minutes, and `ebb explain` would
/// hang. A scale loop instead fails the write, keeps its state and tries again at its next
/// poll; watches resume through kube-runtime's own backoff. Each attempt is counted in
/// `ebb_apiserver_requests_total`.
pub fn retry_policy() -> RetryPolicy {
    RetryPolicy::new(
        Duration::from_millis(50),
        Duration::from_millis(200),
        3,
        true,
    )
    .unwrap_or_default()
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::api::core::v1::ConfigMap;

    use super::{classify, counting};
    use crate::admin::Metrics;

    /// An apiserver that answers every request with `status`, counting them.
    async fn refusing_apiserver(status: u16) -> (String, Arc<AtomicUsize>) {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { axum::http::StatusCode::from_u16(status).expect("a status") }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    async fn get_config_map(url: &str, metrics: Arc<Metrics>) -> Result<ConfigMap, kube::Error> {
        let config = kube::Config::new(url.parse().expect("url"));
        let client = counting(config, metrics).expect("client");
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "shop");
        // Far longer than the policy's retries take, far shorter than kube's default policy's.
        tokio::time::timeout(std::time::Duration::from_secs(60), api.get("settings"))
            .await
            .expect("the request gives up instead of retrying for minutes")
    }

    #[tokio::test]
    async fn a_busy_apiserver_is_asked_four_times_then_the_error_returns() {
        for status in [429, 503, 504] {
            let (url, seen) = refusing_apiserver(status).await;
            let metrics = Arc::new(Metrics::default());
            let result = get_config_map(&url, metrics.clone()).await;
            assert!(result.is_err(), "{status}: {result:?}");
            assert_eq!(
                seen.load(Ordering::SeqCst),
                4,
                "{status}: 1 request, 3 retries"
            );
            assert_eq!(
                metrics.requests("get", "configmaps"),
                4,
                "{status}: every attempt is counted"
            );
        }
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let (url, seen) = refusing_apiserver(500).await;
        let result = get_config_map(&url, Arc::new(Metrics::default())).await;
        assert!(result.is_err(), "{result:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

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
