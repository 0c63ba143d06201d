//! The plugin SDK: serve any [`Scaler`] as a KEDA-compatible external scaler
//! (`externalscaler.ExternalScaler` over gRPC), so ebb's `external` / `external-push` triggers
//! (and KEDA's) can use it from another process.
//!
//! ```no_run
//! # async fn run() -> Result<(), ebb_scalers::sdk::ServeError> {
//! // Any constructor of the registry's shape works, e.g. a built-in one.
//! ebb_scalers::sdk::serve("0.0.0.0:6000".parse().expect("address"), |trigger| {
//!     let mut trigger = trigger.clone();
//!     trigger.trigger_type = "cron".into();
//!     ebb_scalers::Registry::with_builtins().build(&trigger)
//! })
//! .await
//! # }
//! ```
//!
//! For every request the server builds a scaler from the request's `scalerMetadata` with the
//! given constructor, and keeps it for later requests with the same ScaledObject and metadata.
//! The constructor sees a [`Trigger`] with index 0, type `external`, the metadata as its
//! `metadata` (a `*FromEnv` key, which the client already resolved, reads back through
//! [`Trigger::lookup`] with [`crate::trigger::Source::Env`]), no authentication parameters, and
//! the ScaledObject's name and namespace.
//!
//! Metric names on the wire are the scaler's External metric names without the `s0-` prefix
//! (the client adds its own trigger index): a scaler naming its metric
//! `metric_name(t.index, "queue-depth")` is served as `queue-depth`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt as _;
use tokio::net::TcpListener;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::error::ScalerError;
use crate::externalscaler::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use crate::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};
use crate::metric::MetricSpec as ScalerMetricSpec;
use crate::registry::Constructor;
use crate::scaler::Scaler;
use crate::trigger::Trigger;

/// How often `StreamIsActive` polls a scaler that cannot push.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Scalers kept for reuse; past this, the oldest-built one is dropped.
pub const MAX_CACHED_SCALERS: usize = 1024;

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The gRPC server failed (bad TLS settings, a listener error).
    #[error("serving the external scaler: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `constructor`'s scalers on `addr` until Ctrl-C: the one call a plugin needs.
pub async fn serve<F>(addr: SocketAddr, constructor: F) -> Result<(), ServeError>
where
    F: Fn(&Trigger) -> Result<Box<dyn Scaler>, ScalerError> + Send + Sync + 'static,
{
    PluginServer::new(constructor).serve(addr).await
}

/// A configurable plugin server; [`serve`] is the short form.
pub struct PluginServer {
    service: PluginService,
    tls: Option<ServerTlsConfig>,
}

impl PluginServer {
    /// A server building its scalers with `constructor`.
    pub fn new<F>(constructor: F) -> Self
    where
        F: Fn(&Trigger) -> Result<Box<dyn Scaler>, ScalerError> + Send + Sync + 'static,
    {
        Self {
            service: PluginService {
                constructor: Arc::new(constructor),
                scalers: Arc::new(Mutex::new(ScalerCache::default())),
                poll_interval: DEFAULT_POLL_INTERVAL,
                shutdown: tokio::sync::watch::Sender::new(false),
            },
            tls: None,
        }
    }

    /// How often `StreamIsActive` polls a scaler without a push side (default 5 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.service.poll_interval = interval;
        self
    }

    /// Serves TLS (and, with a client CA in `tls`, requires client certificates).
    pub fn tls(mut self, tls: ServerTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The gRPC service alone, to mount on a `tonic` server of one's own.
    pub fn into_service(self) -> ExternalScalerServer<PluginService> {
        ExternalScalerServer::new(self.service)
    }

    /// Binds `addr` and serves until Ctrl-C.
    pub async fn serve(self, addr: SocketAddr) -> Result<(), ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        self.serve_with_listener(listener, async {
            // If the signal cannot be installed, serve until the process is killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await
    }

    /// Serves on an already bound listener until `shutdown` completes.
    pub async fn serve_with_listener<S>(
        self,
        listener: TcpListener,
        shutdown: S,
    ) -> Result<(), ServeError>
    where
        S: Future<Output = ()> + Send,
    {
        let mut builder = Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        // A graceful shutdown waits for open calls: end the activity streams first.
        let streams = self.service.shutdown.clone();
        let shutdown = async move {
            shutdown.await;
            streams.send_replace(true);
        };
        builder
            .add_service(ExternalScalerServer::new(self.service))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        Ok(())
    }
}

/// Identity of a cached scaler: the ScaledObject and the metadata it was built from.
type CacheKey = (String, String, BTreeMap<String, String>);

/// Built scalers by key, with their build order for eviction. Keys hold metadata that may be
/// secret: never printed.
#[derive(Default)]
struct ScalerCache {
    scalers: HashMap<CacheKey, (u64, Arc<dyn Scaler>)>,
    next: u64,
}

/// The `externalscaler.ExternalScaler` implementation behind [`PluginServer`].
pub struct PluginService {
    constructor: Constructor,
    scalers: Arc<Mutex<ScalerCache>>,
    poll_interval: Duration,
    /// Set when serving stops, so open `StreamIsActive` streams end and shutdown completes.
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// The trigger a plugin's constructor sees for `object`.
fn trigger_for(object: &ScaledObjectRef) -> Trigger {
    let mut metadata = BTreeMap::new();
    let mut resolved_env = BTreeMap::new();
    for (key, value) in &object.scaler_metadata {
        if key.ends_with("FromEnv") {
            // The client sent the variable's value; name the "variable" after the key so
            // `lookup` finds it through `Source::Env` (and Debug shows only the key).
            metadata.insert(key.clone(), key.clone());
            resolved_env.insert(key.clone(), value.clone());
        } else {
            metadata.insert(key.clone(), value.clone());
        }
    }
    Trigger {
        index: 0,
        trigger_type: "external".into(),
        metadata,
        resolved_env,
        scaled_object_name: object.name.clone(),
        scaled_object_namespace: object.namespace.clone(),
        ..Default::default()
    }
}

/// A scaler error as a gRPC status. Scaler errors never carry secrets.
pub fn status_of(error: &ScalerError) -> Status {
    let message = error.to_string();
    match error {
        ScalerError::Config(_) | ScalerError::UnknownType { .. } => {
            Status::invalid_argument(message)
        }
        ScalerError::Timeout { .. } => Status::deadline_exceeded(message),
        ScalerError::Source { .. } => Status::unavailable(message),
        ScalerError::UnknownMetric(_) => Status::not_found(message),
    }
}

/// The wire name of a scaler's metric: without the `s0-` prefix of trigger index 0.
fn wire_name(name: &str) -> &str {
    name.strip_prefix("s0-").unwrap_or(name)
}

/// `(wire name, scaler's name, target)` of each External metric of `scaler`.
fn external_metrics(scaler: &dyn Scaler) -> Vec<(String, String, f64)> {
    scaler
        .metric_specs()
        .into_iter()
        .filter_map(|spec| match spec {
            ScalerMetricSpec::External { name, target, .. } => {
                Some((wire_name(&name).to_string(), name, target))
            }
            ScalerMetricSpec::Resource { .. } => None,
        })
        .collect()
}

/// Whether any External metric of `scaler` is active.
async fn activity(scaler: &dyn Scaler) -> Result<bool, Status> {
    let metrics = external_metrics(scaler);
    if metrics.is_empty() {
        return Err(no_external_metric());
    }
    for (_, name, _) in metrics {
        let answer = scaler
            .metrics_and_activity(&name)
            .await
            .map_err(|e| status_of(&e))?;
        if answer.active {
            return Ok(true);
        }
    }
    Ok(false)
}

fn no_external_metric() -> Status {
    Status::failed_precondition("the scaler has no External metric to serve")
}

/// A metric value for the wire: the float, and the integer for clients that read only that.
fn wire_value(name: &str, value: f64) -> MetricValue {
    MetricValue {
        metric_name: name.to_string(),
        metric_value: value.round() as i64,
        metric_value_float: value,
    }
}

impl PluginService {
    /// The cached scaler for `object`, built on first use.
    fn scaler(&self, object: &ScaledObjectRef) -> Result<Arc<dyn Scaler>, Status> {
        let key: CacheKey = (
            object.name.clone(),
            object.namespace.clone(),
            object.scaler_metadata.clone(),
        );
        if let Some((_, scaler)) = self
            .scalers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .scalers
            .get(&key)
        {
            return Ok(scaler.clone());
        }
        // Built outside the lock: a constructor may be slow. Two concurrent first requests may
        // both build; the second insert wins and the first scaler is dropped.
        let scaler: Arc<dyn Scaler> = (self.constructor)(&trigger_for(object))
            .map_err(|e| status_of(&e))?
            .into();
        let mut cache = self.scalers.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.scalers.len() >= MAX_CACHED_SCALERS {
            let oldest = cache
                .scalers
                .iter()
                .min_by_key(|(_, (order, _))| *order)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                cache.scalers.remove(&oldest);
            }
        }
        let order = cache.next;
        cache.next += 1;
        cache.scalers.insert(key, (order, scaler.clone()));
        Ok(scaler)
    }
}

/// The answers of `StreamIsActive`.
pub type ActivityResponses = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for PluginService {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let scaler = self.scaler(request.get_ref())?;
        let result = activity(scaler.as_ref()).await?;
        Ok(Response::new(IsActiveResponse { result }))
    }

    type StreamIsActiveStream = ActivityResponses;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let scaler = self.scaler(request.get_ref())?;
        let mut stopping = self.shutdown.subscribe();
        let stopped = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        if let Some(push) = scaler.as_push() {
            let stream = push.activity().map(|item| match item {
                Ok(result) => Ok(IsActiveResponse { result }),
                Err(e) => Err(status_of(&e)),
            });
            return Ok(Response::new(Box::pin(stream.take_until(stopped))));
        }
        if external_metrics(scaler.as_ref()).is_empty() {
            return Err(no_external_metric());
        }
        // Poll: send the first answer, then each change; an error ends the stream (the client
        // reopens it).
        struct Poll {
            scaler: Arc<dyn Scaler>,
            interval: Duration,
            last: Option<bool>,
            failed: bool,
        }
        let state = Poll {
            scaler,
            interval: self.poll_interval,
            last: None,
            failed: false,
        };
        let stream = futures_util::stream::unfold(state, |mut state| async move {
            if state.failed {
                return None;
            }
            loop {
                if state.last.is_some() {
                    tokio::time::sleep(state.interval).await;
                }
                match activity(state.scaler.as_ref()).await {
                    Ok(active) if state.last == Some(active) => continue,
                    Ok(active) => {
                        state.last = Some(active);
                        return Some((Ok(IsActiveResponse { result: active }), state));
                    }
                    Err(status) => {
                        state.failed = true;
                        return Some((Err(status), state));
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream.take_until(stopped))))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let scaler = self.scaler(request.get_ref())?;
        let metric_specs: Vec<MetricSpec> = external_metrics(scaler.as_ref())
            .into_iter()
            .map(|(wire, _, target)| MetricSpec {
                metric_name: wire,
                target_size: target.round() as i64,
                target_size_float: target,
            })
            .collect();
        if metric_specs.is_empty() {
            return Err(no_external_metric());
        }
        Ok(Response::new(GetMetricSpecResponse { metric_specs }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let request = request.into_inner();
        let object = request
            .scaled_object_ref
            .ok_or_else(|| Status::invalid_argument("scaledObjectRef is required"))?;
        let scaler = self.scaler(&object)?;
        let Some((wire, name, _)) = external_metrics(scaler.as_ref())
            .into_iter()
            .find(|(wire, _, _)| *wire == request.metric_name)
        else {
            return Err(status_of(&ScalerError::UnknownMetric(request.metric_name)));
        };
        let answer = scaler
            .metrics_and_activity(&name)
            .await
            .map_err(|e| status_of(&e))?;
        let metric_values = answer
            .values
            .iter()
            .map(|v| wire_value(&wire, v.value))
            .collect();
        Ok(Response::new(GetMetricsResponse { metric_values }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ConfigError;
    use crate::trigger::{ANY_SOURCE, Source};

    #[test]
    fn the_constructor_sees_metadata_and_resolved_env_values() {
        let object = ScaledObjectRef {
            name: "worker".into(),
            namespace: "shop".into(),
            scaler_metadata: [
                ("queue", "orders"),
                ("passwordFromEnv", "s3cret"),
                ("scalerAddress", "plugin:6000"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        };
        let t = trigger_for(&object);
        assert_eq!((t.index, t.trigger_type.as_str()), (0, "external"));
        assert_eq!(
            (
                t.scaled_object_name.as_str(),
                t.scaled_object_namespace.as_str()
            ),
            ("worker", "shop")
        );
        assert_eq!(t.required("queue", ANY_SOURCE).unwrap().value, "orders");
        let password = t.required("password", ANY_SOURCE).unwrap();
        assert_eq!(
            (password.value.as_str(), password.source),
            ("s3cret", Source::Env)
        );
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(!format!("{object:?}").contains("s3cret"));
    }

    #[test]
    fn errors_map_to_grpc_codes() {
        let config = ScalerError::Config(ConfigError {
            index: 0,
            trigger_type: "external".into(),
            key: "path".into(),
            problem: "required".into(),
        });
        let cases = [
            (config, tonic::Code::InvalidArgument),
            (
                ScalerError::Timeout {
                    source_name: "file".into(),
                    timeout: Duration::from_secs(3),
                },
                tonic::Code::DeadlineExceeded,
            ),
            (
                ScalerError::Source {
                    source_name: "file".into(),
                    message: "gone".into(),
                },
                tonic::Code::Unavailable,
            ),
            (
                ScalerError::UnknownMetric("m".into()),
                tonic::Code::NotFound,
            ),
        ];
        for (error, code) in cases {
            let status = status_of(&error);
            assert_eq!(status.code(), code, "{error}");
            assert_eq!(status.message(), error.to_string());
        }
    }

    /// A scaler whose activity is pushed: true, then false.
    struct Pushing;

    #[async_trait::async_trait]
    impl Scaler for Pushing {
        fn metric_specs(&self) -> Vec<ScalerMetricSpec> {
            vec![ScalerMetricSpec::External {
                name: "s0-pushed".into(),
                target: 2.5,
                target_type: crate::MetricTargetType::AverageValue,
            }]
        }

        async fn metrics_and_activity(
            &self,
            metric: &str,
        ) -> Result<crate::MetricsAndActivity, ScalerError> {
            Err(ScalerError::UnknownMetric(metric.to_string()))
        }

        fn as_push(&self) -> Option<&dyn crate::PushScaler> {
            Some(self)
        }
    }

    impl crate::PushScaler for Pushing {
        fn activity(&self) -> crate::ActivityStream {
            // Then silent, as a push source usually is: shutdown must still complete.
            Box::pin(tokio_stream::iter([Ok(true), Ok(false)]).chain(tokio_stream::pending()))
        }
    }

    #[tokio::test]
    async fn serves_a_push_scaler_on_a_listener_until_shutdown() {
        use crate::externalscaler::external_scaler_client::ExternalScalerClient;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = built.clone();
        let server = tokio::spawn(
            PluginServer::new(move |_| {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(Box::new(Pushing))
            })
            .serve_with_listener(listener, async {
                let _ = stopped.await;
            }),
        );

        let mut client = ExternalScalerClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let object = ScaledObjectRef {
            name: "worker".into(),
            namespace: "shop".into(),
            scaler_metadata: [("k".to_string(), "v".to_string())].into(),
        };
        let specs = client
            .get_metric_spec(object.clone())
            .await
            .unwrap()
            .into_inner()
            .metric_specs;
        assert_eq!(
            specs,
            vec![MetricSpec {
                metric_name: "pushed".into(),
                target_size: 3,
                target_size_float: 2.5
            }]
        );
        let mut stream = client
            .stream_is_active(object.clone())
            .await
            .unwrap()
            .into_inner();
        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.push(stream.message().await.unwrap().unwrap().result);
        }
        assert_eq!(seen, vec![true, false]);
        let err = client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(object),
                metric_name: "other".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(
            built.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one scaler per ScaledObject and metadata"
        );

        // Shutdown ends the open stream and the server, within a bound.
        stop.send(()).unwrap();
        let end = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        assert!(matches!(end, Ok(Ok(None))), "{end:?}");
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn wire_names_drop_the_index_zero_prefix_and_values_carry_both_forms() {
        assert_eq!(wire_name("s0-queue-depth"), "queue-depth");
        assert_eq!(wire_name("queue-depth"), "queue-depth");
        assert_eq!(wire_name("s1-x"), "s1-x");
        let v = wire_value("q", 2.6);
        assert_eq!((v.metric_value, v.metric_value_float), (3, 2.6));
    }
}
