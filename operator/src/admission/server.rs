//! The validating admission webhook: `POST /validate` over HTTPS, answered from this replica's
//! own caches of the ScaledObjects and HPAs (every replica serves it, leader or not, so a
//! leader hand-over does not make admission fail), with the TLS machinery of the metrics API
//! (a certificate generated at start or loaded from files and reloaded when they change).
//!
//! The server listens only once its caches hold a full list: before that the apiserver gets
//! no answer, and the webhook's `failurePolicy` decides.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ebb_crds::ScaledObject;
use ebb_scalers::Registry;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{LimitRange, PodSpec};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::checks::{Neighbours, Workload, slim_hpa_metadata};
use super::review::{Lookups, answer};
use crate::admin::Metrics;
use crate::metrics_api::tls;

/// How `ebb run` serves the webhook.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub addr: SocketAddr,
    /// Serving certificate chain and key (PEM), reloaded when they change; generated when
    /// absent.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// Names for a generated certificate.
    pub names: Vec<String>,
    /// A Secret (namespace, name) that shares one generated certificate among the replicas:
    /// the first replica to start stores it, the others read it, so the one `caBundle` is
    /// right whichever replica the apiserver reaches. `None`: each process generates its own.
    pub shared_secret: Option<(String, String)>,
    /// ValidatingWebhookConfiguration whose webhooks' `caBundle` is set to a generated
    /// certificate's CA when the server starts and every five minutes after (by every replica:
    /// with a shared Secret they all set the same CA).
    pub webhook_configuration: Option<String>,
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The shared certificate's Secret could not be read or made.
    #[error("the webhook certificate's Secret {namespace}/{name}: {problem}")]
    Secret {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What went wrong.
        problem: String,
    },
}

/// The common name of a generated certificate's CA.
const CA_NAME: &str = "ebb admission webhook CA";

/// The keys of the shared certificate's Secret (those of a `kubernetes.io/tls` Secret, plus
/// the CA).
const SECRET_CHAIN: &str = "tls.crt";
const SECRET_KEY: &str = "tls.key";
const SECRET_CA: &str = "ca.crt";

/// The certificate every replica serves: read from the Secret `namespace/name`, or generated
/// and stored there by the first replica to start. When two start at once, the second's create
/// fails with a conflict and it reads the first's.
pub async fn shared_certificate(
    client: &Client,
    namespace: &str,
    name: &str,
    names: &[String],
) -> Result<tls::GeneratedPem, StartError> {
    use k8s_openapi::api::core::v1::Secret;
    let failed = |problem: String| StartError::Secret {
        namespace: namespace.to_string(),
        name: name.to_string(),
        problem,
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..3 {
        if let Some(secret) = api.get_opt(name).await.map_err(|e| failed(e.to_string()))? {
            let data = secret.data.unwrap_or_default();
            let text = |key: &str| {
                data.get(key)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .ok_or_else(|| failed(format!("no {key}")))
            };
            let pem = tls::GeneratedPem {
                chain: text(SECRET_CHAIN)?,
                key: text(SECRET_KEY)?,
                ca: text(SECRET_CA)?,
            };
            tls::from_pem(&pem.chain, &pem.key, &format!("Secret {namespace}/{name}"))?;
            return Ok(pem);
        }
        let pem = tls::generate_pem(names, CA_NAME)?;
        let bytes = |s: &str| k8s_openapi::ByteString(s.as_bytes().to_vec());
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "ebb".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(
                [
                    (SECRET_CHAIN.to_string(), bytes(&pem.chain)),
                    (SECRET_KEY.to_string(), bytes(&pem.key)),
                    (SECRET_CA.to_string(), bytes(&pem.ca)),
                ]
                .into(),
            ),
            ..Default::default()
        };
        match api.create(&Default::default(), &secret).await {
            Ok(_) => {
                info!(secret = %format!("{namespace}/{name}"), "webhook certificate generated and stored");
                return Ok(pem);
            }
            // Another replica stored one first: read it.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(failed(e.to_string())),
        }
    }
    Err(failed("created and deleted again while starting".into()))
}

/// How often the caBundle is written again (a configuration deleted and applied again, or one
/// applied after ebb started, gets it within this long).
const CA_BUNDLE_EVERY: Duration = Duration::from_secs(300);

/// Sets the caBundle of the configuration `name` now and every [`CA_BUNDLE_EVERY`]; a failure
/// (no such configuration yet) is logged and tried again, never fatal: the webhook still
/// serves, and `failurePolicy` decides what the apiserver does meanwhile.
async fn keep_ca_bundle(client: Client, name: String, ca_pem: String) {
    loop {
        match set_ca_bundle(&client, &name, &ca_pem).await {
            Ok(()) => debug!(configuration = %name, "webhook caBundle set"),
            Err(e) => warn!(configuration = %name, error = %e, "setting the webhook caBundle"),
        }
        tokio::time::sleep(CA_BUNDLE_EVERY).await;
    }
}

/// Sets `caBundle` on every webhook of a ValidatingWebhookConfiguration.
pub async fn set_ca_bundle(client: &Client, name: &str, ca_pem: &str) -> Result<(), kube::Error> {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let current = api.get(name).await?;
    let bundle = k8s_openapi::ByteString(ca_pem.as_bytes().to_vec());
    let ops: Vec<serde_json::Value> = (0..current.webhooks.as_ref().map_or(0, Vec::len))
        .map(|i| json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}))
        .collect();
    let patch: json_patch::Patch =
        serde_json::from_value(json!(ops)).map_err(kube::Error::SerdeError)?;
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await?;
    Ok(())
}

/// The caches every replica keeps for the checks: ScaledObjects and HPAs, slimmed.
#[derive(Clone)]
pub struct Caches {
    scaled_objects: Store<ScaledObject>,
    hpas: Store<HorizontalPodAutoscaler>,
}

impl Caches {
    /// Starts the watches (in `watch_namespace`, or all); the caches fill in the background.
    pub fn start(client: &Client, watch_namespace: Option<&str>) -> Self {
        let (objects, hpas): (Api<ScaledObject>, Api<HorizontalPodAutoscaler>) =
            match watch_namespace {
                Some(ns) => (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                ),
                None => (Api::all(client.clone()), Api::all(client.clone())),
            };
        let (so_reader, so_writer) = reflector::store();
        let so_stream = reflector::reflector(
            so_writer,
            watcher(objects, watcher::Config::default()).modify(|so| {
                so.managed_fields_mut().clear();
                so.status = None;
                so.metadata.annotations = None;
            }),
        )
        .default_backoff();
        let (hpa_reader, hpa_writer) = reflector::store();
        let hpa_stream = reflector::reflector(
            hpa_writer,
            watcher(hpas, watcher::Config::default()).modify(|hpa| {
                slim_hpa_metadata(hpa);
                hpa.status = None;
                if let Some(spec) = hpa.spec.as_mut() {
                    spec.metrics = None;
                    spec.behavior = None;
                }
            }),
        )
        .default_backoff();
        tokio::spawn(so_stream.for_each(|_| async {}));
        tokio::spawn(hpa_stream.for_each(|_| async {}));
        Self {
            scaled_objects: so_reader,
            hpas: hpa_reader,
        }
    }

    /// Resolves once both caches hold a full list.
    pub async fn ready(&self) {
        let _ = self.scaled_objects.wait_until_ready().await;
        let _ = self.hpas.wait_until_ready().await;
    }
}

/// The checks' view of the cluster: the caches, and the apiserver for pod templates and
/// LimitRanges (read only for cpu and memory triggers).
struct ClusterLookups {
    client: Client,
    caches: Caches,
}

#[async_trait]
impl Lookups for ClusterLookups {
    fn neighbours(&self, so: &ScaledObject, namespace: &str) -> Neighbours {
        Neighbours::from_caches(
            so,
            namespace,
            Some(&self.caches.scaled_objects),
            Some(&self.caches.hpas),
        )
    }

    async fn pod_template(
        &self,
        namespace: &str,
        target: &Workload,
    ) -> Result<Option<PodSpec>, String> {
        let template = match target.kind.as_str() {
            "Deployment" => Api::<Deployment>::namespaced(self.client.clone(), namespace)
                .get_opt(&target.name)
                .await
                .map(|d| d.and_then(|d| d.spec).map(|s| s.template)),
            "StatefulSet" => Api::<StatefulSet>::namespaced(self.client.clone(), namespace)
                .get_opt(&target.name)
                .await
                .map(|s| s.and_then(|s| s.spec).map(|s| s.template)),
            _ => return Ok(None),
        };
        template
            .map(|t| t.and_then(|t| t.spec))
            .map_err(|e| e.to_string())
    }

    async fn limit_ranges(&self, namespace: &str) -> Result<Vec<LimitRange>, String> {
        Api::<LimitRange>::namespaced(self.client.clone(), namespace)
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .map_err(|e| e.to_string())
    }
}

struct Webhook {
    registry: Registry,
    lookups: ClusterLookups,
    metrics: Arc<Metrics>,
}

/// Starts the webhook as `settings` say, once `caches` are full; the returned future serves
/// until `shutdown` resolves. With a generated certificate, also returns its CA (PEM).
pub async fn start(
    client: Client,
    registry: Registry,
    metrics: Arc<Metrics>,
    caches: Caches,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(impl std::future::Future<Output = ()> + Send, Option<String>), StartError> {
    let mut generated_ca = None;
    let serving = match &settings.cert_and_key {
        Some((cert, key)) => tls::serving_files(cert, key)?,
        None => {
            let pem = match &settings.shared_secret {
                Some((namespace, name)) => {
                    shared_certificate(&client, namespace, name, &settings.names).await?
                }
                None => tls::generate_pem(&settings.names, CA_NAME)?,
            };
            let key = tls::from_pem(&pem.chain, &pem.key, "the webhook certificate")?;
            let ca_pem = pem.ca;
            if let Some(name) = settings.webhook_configuration.clone() {
                tokio::spawn(keep_ca_bundle(client.clone(), name, ca_pem.clone()));
            }
            generated_ca = Some(ca_pem);
            tls::Serving::new(key)
        }
    };
    let config = Arc::new(tls::server_config_without_client_auth(serving)?);
    let webhook = Arc::new(Webhook {
        registry,
        metrics,
        lookups: ClusterLookups {
            client,
            caches: caches.clone(),
        },
    });
    let addr = settings.addr;
    let server = async move {
        caches.ready().await;
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "the admission webhook cannot listen");
                return;
            }
        };
        info!(%addr, "admission webhook serving");
        serve(listener, config, webhook, shutdown).await;
    };
    Ok((server, generated_ca))
}

/// Runs `server` on a thread and a single-threaded runtime of its own, and resolves when it
/// ends. The apiserver waits on every review while a user waits on `kubectl apply`; on the
/// main runtime a review queues behind whatever the controller and the scale loops have to do
/// (a thousand new objects reconciled at once), on its own thread only behind the other
/// reviews. The caches it reads are filled by watches on the main runtime.
pub fn on_own_thread(
    server: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("ebb-admission".into())
        .spawn(move || {
            runtime.block_on(server);
            let _ = done.send(());
        })?;
    Ok(async move {
        let _ = ended.await;
    })
}

fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(webhook)
}

async fn validate(State(webhook): State<Arc<Webhook>>, body: Bytes) -> Response {
    let started = Instant::now();
    let (verdict, response) = match answer(&body, &webhook.registry, &webhook.lookups).await {
        Ok(review) => {
            let allowed = review.response.as_ref().is_some_and(|r| r.allowed);
            let verdict = if allowed { "allowed" } else { "denied" };
            (verdict, Json(review).into_response())
        }
        Err(e) => (
            "malformed",
            (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        ),
    };
    webhook
        .metrics
        .record_admission_review(verdict, started.elapsed());
    response
}

async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    webhook: Arc<Webhook>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let router = router(webhook);
    tls::serve(listener, tls, shutdown, move |_| router.clone()).await;
}
