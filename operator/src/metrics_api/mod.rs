//! The `external.metrics.k8s.io/v1beta1` API the HPA reads, served over TLS behind the
//! apiserver's aggregation layer from the same process as the scale loops: each value is the
//! scale loop's latest answer for the metric (fallback and composite values included), served
//! while it is fresh (two polling intervals plus the poll timeout); an error is never turned
//! into 0.

pub mod auth;
pub mod request;
pub mod tls;

use std::sync::Arc;

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use tracing::debug;

use crate::loops::Loops;
use crate::metric_store::{Answer, Lookup, MetricStore};
use auth::{Claim, Identity, Peer, RequestHeader, Reviewer};
use request::{ApiError, scaled_object_of, value_list};

/// How `ebb run` serves the metrics API.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub addr: std::net::SocketAddr,
    /// Serving certificate chain and key (PEM), reloaded when they change; generated when
    /// absent.
    pub cert_and_key: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Names for a generated certificate.
    pub names: Vec<String>,
    /// APIService whose `caBundle` is set to a generated certificate's CA when the server
    /// starts. Leave it empty and set it later with [`set_ca_bundle`] when only some future
    /// moment (becoming the leader) makes this replica the one the APIService reaches.
    pub apiservice: Option<String>,
}

/// Why the metrics API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The front proxy's settings could not be read.
    #[error("{0}")]
    RequestHeader(String),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The APIService's caBundle could not be set.
    #[error("setting the caBundle of APIService {name}: {source}")]
    ApiService {
        /// The APIService.
        name: String,
        /// Why.
        source: kube::Error,
    },
}

/// Sets `spec.caBundle` of an APIService.
pub async fn set_ca_bundle(
    client: &kube::Client,
    name: &str,
    ca_pem: &str,
) -> Result<(), kube::Error> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService"),
        "apiservices",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let bundle = k8s_openapi::ByteString(ca_pem.as_bytes().to_vec());
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"caBundle": bundle}})),
    )
    .await?;
    Ok(())
}

/// Where the metrics API's answers come from: the scale loops' latest answers and, for a live
/// read, the running loops' scalers. The apiserver client only reviews callers.
#[derive(Clone)]
pub struct Sources {
    /// The apiserver, for TokenReviews, SubjectAccessReviews and the front proxy's settings.
    pub client: kube::Client,
    /// The scale loops' latest answers.
    pub store: Arc<MetricStore>,
    /// The running scale loops, for live reads.
    pub loops: Loops,
}

/// Starts the metrics API over `sources` as `settings` say; the returned future serves until
/// `shutdown` resolves. With a generated certificate, also returns its CA (PEM), the caBundle
/// an APIService needs to trust this server.
pub async fn start(
    sources: Sources,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(impl std::future::Future<Output = ()> + Send, Option<String>), StartError> {
    let requestheader = RequestHeader::load(&sources.client)
        .await
        .map_err(StartError::RequestHeader)?;
    let mut generated_ca = None;
    let serving = match &settings.cert_and_key {
        Some((cert, key)) => tls::serving_files(cert, key)?,
        None => {
            let (key, ca_pem) = tls::generate(&settings.names)?;
            if let Some(name) = &settings.apiservice {
                set_ca_bundle(&sources.client, name, &ca_pem)
                    .await
                    .map_err(|source| StartError::ApiService {
                        name: name.clone(),
                        source,
                    })?;
            }
            generated_ca = Some(ca_pem);
            tls::Serving::new(key)
        }
    };
    let config = Arc::new(tls::server_config(serving, &requestheader.client_ca)?);
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .map_err(|source| StartError::Listen {
            addr: settings.addr,
            source,
        })?;
    let api = Arc::new(MetricsApi {
        reviewer: Reviewer::new(sources.client.clone()),
        store: sources.store,
        loops: sources.loops,
        requestheader,
    });
    Ok((serve(listener, config, api, shutdown), generated_ca))
}

/// What the handlers share.
pub struct MetricsApi {
    /// The scale loops' latest answers.
    pub store: Arc<MetricStore>,
    /// The running scale loops, for live reads.
    pub loops: Loops,
    /// The front proxy's settings.
    pub requestheader: RequestHeader,
    /// TokenReview and SubjectAccessReview.
    pub reviewer: Reviewer,
}

impl MetricsApi {
    /// Who is asking; the front proxy with no user behind it is itself the caller.
    async fn identity(
        &self,
        peer: &Peer,
        headers: &HeaderMap,
    ) -> Result<Option<Identity>, ApiError> {
        match auth::claim(&self.requestheader, peer, headers)? {
            Claim::Proxied(who) => Ok(Some(who)),
            Claim::FrontProxy => Ok(None),
            Claim::Token(token) => self.reviewer.token(&token).await.map(Some),
        }
    }

    /// Answers one metric request.
    pub async fn metric(
        &self,
        peer: &Peer,
        headers: &HeaderMap,
        namespace: &str,
        metric: &str,
        query: Option<&str>,
    ) -> Result<Value, ApiError> {
        let scaled_object = scaled_object_of(query)?;
        let who = self.identity(peer, headers).await?.ok_or_else(|| {
            ApiError::unauthorized("the front proxy named no user for this request")
        })?;
        self.reviewer.authorize(&who, namespace, metric).await?;
        let lookup = self.store.lookup(namespace, &scaled_object, metric);
        // An old plain reading, or none yet from a loop that runs: ask the scaler now.
        if matches!(
            lookup,
            Lookup::Found { reread: true, .. } | Lookup::UnknownObject
        ) && let Some(read) = self
            .loops
            .read_live(namespace, &scaled_object, metric)
            .await
        {
            return match read {
                Ok(value) => {
                    value_list(metric, &scaled_object, value, Time(jiff::Timestamp::now()))
                }
                Err(e) => Err(ApiError::unavailable(format!(
                    "metric {metric} of ScaledObject {namespace}/{scaled_object}: {e}"
                ))),
            };
        }
        match lookup {
            Lookup::Found {
                answer: Answer::Value(value),
                age,
                fresh: true,
                ..
            } => {
                let at = jiff::Timestamp::now()
                    .checked_sub(jiff::SignedDuration::try_from(age).unwrap_or_default())
                    .unwrap_or_else(|_| jiff::Timestamp::now());
                value_list(metric, &scaled_object, value, Time(at))
            }
            Lookup::Found {
                answer: Answer::Value(_),
                age,
                ..
            } => Err(ApiError::unavailable(format!(
                "metric {metric} of ScaledObject {namespace}/{scaled_object} was last read {}s ago",
                age.as_secs()
            ))),
            Lookup::Found {
                answer: Answer::Error(e),
                ..
            } => Err(ApiError::unavailable(format!(
                "metric {metric} of ScaledObject {namespace}/{scaled_object}: {e}"
            ))),
            Lookup::UnknownMetric => Err(ApiError::not_found(format!(
                "ScaledObject {namespace}/{scaled_object} has no metric {metric}"
            ))),
            Lookup::UnknownObject => Err(ApiError::not_found(format!(
                "no readings for ScaledObject {namespace}/{scaled_object}: it does not exist, is paused, or has not been polled yet"
            ))),
        }
    }
}

fn respond(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(body) => (StatusCode::OK, Json(body)).into_response(),
        Err(e) => {
            debug!(code = e.code, message = %e.message, "metrics API refused a request");
            let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, Json(e.status())).into_response()
        }
    }
}

/// Discovery and health: any authenticated caller (the front proxy's own checks included).
async fn discovery(
    api: &MetricsApi,
    peer: &Peer,
    headers: &HeaderMap,
    document: fn() -> Value,
) -> Response {
    respond(api.identity(peer, headers).await.map(|_| document()))
}

/// The router; each connection adds its [`Peer`] as an extension.
pub fn router(api: Arc<MetricsApi>) -> Router {
    Router::new()
        .route(
            "/apis",
            get(|State(api): State<Arc<MetricsApi>>, Extension(peer): Extension<Peer>, headers: HeaderMap| async move {
                discovery(&api, &peer, &headers, request::api_group_list).await
            }),
        )
        .route(
            "/apis/external.metrics.k8s.io",
            get(|State(api): State<Arc<MetricsApi>>, Extension(peer): Extension<Peer>, headers: HeaderMap| async move {
                discovery(&api, &peer, &headers, request::api_group).await
            }),
        )
        .route(
            "/apis/external.metrics.k8s.io/v1beta1",
            get(|State(api): State<Arc<MetricsApi>>, Extension(peer): Extension<Peer>, headers: HeaderMap| async move {
                discovery(&api, &peer, &headers, request::api_resource_list).await
            }),
        )
        .route(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}",
            get(
                |State(api): State<Arc<MetricsApi>>,
                 Extension(peer): Extension<Peer>,
                 Path((namespace, metric)): Path<(String, String)>,
                 RawQuery(query): RawQuery,
                 headers: HeaderMap| async move {
                    respond(api.metric(&peer, &headers, &namespace, &metric, query.as_deref()).await)
                },
            ),
        )
        .route(
            "/openapi/v2",
            get(|| async { Json(json!({"swagger": "2.0", "info": {"title": "ebb external metrics", "version": "v1beta1"}, "paths": {}})) }),
        )
        .route("/openapi/v3", get(|| async { Json(json!({"paths": {}})) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .fallback(|| async {
            respond(Err(ApiError::not_found("the metrics API serves external.metrics.k8s.io/v1beta1 only")))
        })
        .with_state(api)
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves; each request carries the
/// connection's [`Peer`] (a refused client certificate ends the connection in the handshake).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: Arc<MetricsApi>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let router = router(api);
    tls::serve(listener, tls, shutdown, move |session| {
        let peer = Peer {
            front_proxy_cn: session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(tls::common_name),
        };
        router.clone().layer(Extension(peer))
    })
    .await;
}
