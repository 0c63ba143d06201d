//! `external` and `external-push`: scalers behind KEDA's external scaler gRPC protocol
//! (`externalscaler.ExternalScaler`).
//!
//! The trigger's whole metadata is forwarded to the plugin as `scalerMetadata` (with `*FromEnv`
//! keys resolved, as KEDA does). Triggers pointing at the same address with the same TLS
//! settings share one gRPC channel through a [`SharedPool`]; tonic's channel reconnects by
//! itself after the plugin restarts.
//!
//! Metric specs: a plugin announces its metrics through `GetMetricSpec`, a network call, while
//! [`Scaler::metric_specs`] is synchronous. The scaler therefore fetches the specs once, in the
//! background right after construction (when built inside a Tokio runtime) and at the latest on
//! the first [`Scaler::metrics_and_activity`], and caches them; until then `metric_specs()`
//! is empty. Each plugin metric `m` becomes `s<index>-m`; a poll of a name not yet in the cache
//! fetches the specs first, so a caller may poll `s<index>-m` before the cache is warm.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::{ConfigError, ScalerError, error_chain};
use crate::externalscaler::external_scaler_client::ExternalScalerClient;
use crate::externalscaler::{self as pb, GetMetricsRequest, ScaledObjectRef};
use crate::metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
use crate::pool::{Lease, SharedPool};
use crate::registry::Registry;
use crate::scaler::{ActivityStream, PushScaler, Scaler};
use crate::tls::AnyServerCertificate;
use crate::trigger::{MetricTargetType, Source, Trigger};

/// Limit for connecting and for each call.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// First wait before reopening an `external-push` activity stream that ended or failed.
pub const STREAM_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two attempts to open the activity stream.
pub const STREAM_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest plugin error message passed on; the rest is cut.
const MAX_MESSAGE: usize = 200;

/// Where TLS material comes from: PEM text (as a TriggerAuthentication gives it) or a file.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Pem {
    Inline(String),
    File(PathBuf),
}

impl fmt::Debug for Pem {
    // Inline PEM may be a private key: only a file's path is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::Inline(_) => f.write_str("Pem::Inline(..)"),
            Pem::File(path) => f.debug_tuple("Pem::File").field(path).finish(),
        }
    }
}

impl Pem {
    fn new(value: String) -> Self {
        if value.contains("-----BEGIN") {
            Pem::Inline(value)
        } else {
            Pem::File(PathBuf::from(value.trim()))
        }
    }

    fn read(&self, what: &str) -> Result<Vec<u8>, String> {
        match self {
            Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
            Pem::File(path) => std::fs::read(path)
                .map_err(|e| format!("reading {what} from {}: {}", path.display(), e.kind())),
        }
    }
}

/// TLS settings of a channel. Holds a private key: never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TlsSettings {
    ca_cert: Option<Pem>,
    client_cert: Option<Pem>,
    client_key: Option<Pem>,
    unsafe_ssl: bool,
}

/// Identity of a shared channel: the plugin's address and the TLS settings.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    address: String,
    tls: Option<TlsSettings>,
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelKey")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The pool `external` and `external-push` triggers share.
pub type ChannelPool = SharedPool<ChannelKey, Channel>;

/// Registers `external`, `external-push`. Every trigger built from one registry shares that
/// registry's channels.
pub fn register(registry: &mut Registry) {
    let pool = ChannelPool::new();
    let push_pool = pool.clone();
    registry.register("external", move |t| {
        Ok(Box::new(ExternalScaler::new(t, &pool)?))
    });
    registry.register("external-push", move |t| {
        Ok(Box::new(ExternalPushScaler::new(t, &push_pool)?))
    });
}

/// Parsed `external` / `external-push` trigger.
#[derive(Clone, PartialEq)]
struct ExternalConfig {
    key: ChannelKey,
    index: usize,
    metric_type: MetricTargetType,
    object: ScaledObjectRef,
}

impl fmt::Debug for ExternalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalConfig")
            .field("key", &self.key)
            .field("index", &self.index)
            .field("metric_type", &self.metric_type)
            .field("object", &self.object)
            .finish()
    }
}

/// Checks `host:port` (a bracketed IPv6 host allowed).
fn valid_address(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let host_ok = !host.is_empty()
        && !host.contains('/')
        && !host.contains('@')
        && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

impl ExternalConfig {
    fn parse(t: &Trigger) -> Result<Self, ConfigError> {
        let address = t
            .required("scalerAddress", &[Source::Metadata])?
            .value
            .trim()
            .to_string();
        if !valid_address(&address) {
            return Err(t.error(
                "scalerAddress",
                "expected host:port (no scheme), e.g. my-scaler.ns:6000",
            ));
        }
        let enable_tls = t.bool_or("enableTLS", &[Source::Metadata], false)?;
        let unsafe_ssl = t.bool_or("unsafeSsl", &[Source::Metadata], false)?;
        // KEDA reads these from the TriggerAuthentication; metadata is accepted as a fallback
        // for the older documented form.
        let tls_sources = [Source::Auth, Source::Metadata];
        let pem = |key: &str| -> Result<Option<Pem>, ConfigError> {
            Ok(t.lookup(key, &tls_sources)?.map(|f| Pem::new(f.value)))
        };
        let ca_cert = pem("caCert")?;
        let client_cert = pem("tlsClientCert")?;
        let client_key = pem("tlsClientKey")?;
        match (&client_cert, &client_key) {
            (Some(_), None) => {
                return Err(t.error("tlsClientKey", "required when tlsClientCert is set"));
            }
            (None, Some(_)) => {
                return Err(t.error("tlsClientCert", "required when tlsClientKey is set"));
            }
            _ => {}
        }
        let tls =
            (enable_tls || ca_cert.is_some() || client_cert.is_some()).then_some(TlsSettings {
                ca_cert,
                client_cert,
                client_key,
                unsafe_ssl,
            });
        Ok(Self {
            key: ChannelKey { address, tls },
            index: t.index,
            metric_type: t.metric_type(
                &[MetricTargetType::AverageValue, MetricTargetType::Value],
                MetricTargetType::AverageValue,
            )?,
            object: ScaledObjectRef {
                name: t.scaled_object_name.clone(),
                namespace: t.scaled_object_namespace.clone(),
                scaler_metadata: forwarded_metadata(t),
            },
        })
    }
}

/// The metadata sent as `scalerMetadata`: every key as written, except that a `*FromEnv` key
/// carries the variable's value (and is left out when the variable is unset), as in KEDA.
fn forwarded_metadata(t: &Trigger) -> BTreeMap<String, String> {
    t.metadata
        .iter()
        .filter_map(|(key, value)| {
            if key.ends_with("FromEnv") {
                t.resolved_env
                    .get(value)
                    .filter(|v| !v.is_empty())
                    .map(|v| (key.clone(), v.clone()))
            } else {
                Some((key.clone(), value.clone()))
            }
        })
        .collect()
}

/// A metric the plugin announced: our name, the plugin's name, the target.
#[derive(Debug, Clone, PartialEq)]
struct PluginMetric {
    name: String,
    plugin_name: String,
    target: f64,
}

/// The target of a plugin metric spec: `targetSizeFloat` when above zero, else `targetSize`.
fn spec_target(spec: &pb::MetricSpec) -> f64 {
    if spec.target_size_float > 0.0 {
        spec.target_size_float
    } else {
        spec.target_size as f64
    }
}

/// A plugin value: `metricValueFloat` when above zero, else `metricValue`.
fn metric_value(value: &pb::MetricValue) -> f64 {
    if value.metric_value_float > 0.0 {
        value.metric_value_float
    } else {
        value.metric_value as f64
    }
}

/// Turns a `GetMetricSpec` answer into cached metrics, refusing what the HPA could not use.
fn plugin_metrics(index: usize, specs: &[pb::MetricSpec]) -> Result<Vec<PluginMetric>, String> {
    if specs.is_empty() {
        return Err("GetMetricSpec returned no metric".into());
    }
    specs
        .iter()
        .map(|spec| {
            if spec.metric_name.trim().is_empty() {
                return Err("GetMetricSpec returned a metric without a name".to_string());
            }
            let target = spec_target(spec);
            if !target.is_finite() || target <= 0.0 {
                return Err(format!(
                    "GetMetricSpec returned target {target} for metric {:?}; expected a number above 0",
                    spec.metric_name
                ));
            }
            Ok(PluginMetric {
                name: metric_name(index, &spec.metric_name),
                plugin_name: spec.metric_name.clone(),
                target,
            })
        })
        .collect()
}

/// What the scaler and its activity streams share.
struct Inner {
    config: ExternalConfig,
    source_name: String,
    lease: Lease<ChannelKey, Channel>,
    metrics: RwLock<Option<Vec<PluginMetric>>>,
    /// Set on close; activity streams end when it changes or the scaler is dropped.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Inner {
    fn new(trigger: &Trigger, pool: &ChannelPool) -> Result<Arc<Self>, ConfigError> {
        let config = ExternalConfig::parse(trigger)?;
        let inner = Arc::new(Self {
            source_name: format!("external scaler {}", config.key.address),
            lease: pool.lease(config.key.clone()),
            config,
            metrics: RwLock::new(None),
            closed: tokio::sync::watch::Sender::new(false),
        });
        // Fetch the metric specs early so `metric_specs()` is filled soon after construction;
        // outside a runtime (or if this fails) the first poll fetches them.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&inner);
            runtime.spawn(async move {
                if let Some(inner) = weak.upgrade() {
                    let _ = inner.metrics().await;
                }
            });
        }
        Ok(inner)
    }

    async fn channel(&self) -> Result<Arc<Channel>, ScalerError> {
        let key = self.config.key.clone();
        let source_name = self.source_name.clone();
        self.lease
            .client(&self.source_name, TIMEOUT, || connect(key, source_name))
            .await
    }

    /// One unary call with the timeout; errors name the call, never the metadata.
    async fn call<T, F, Fut>(&self, rpc: &str, f: F) -> Result<T, ScalerError>
    where
        F: FnOnce(ExternalScalerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let channel = self.channel().await?;
        let client = ExternalScalerClient::new((*channel).clone());
        match tokio::time::timeout(TIMEOUT, f(client)).await {
            Err(_) => Err(ScalerError::Timeout {
                source_name: format!("{} {rpc}", self.source_name),
                timeout: TIMEOUT,
            }),
            Ok(Err(status)) => Err(status_error(&self.source_name, rpc, &status)),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    /// The plugin's metrics, fetched once and cached.
    async fn metrics(&self) -> Result<Vec<PluginMetric>, ScalerError> {
        if let Some(metrics) = self
            .metrics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(metrics.clone());
        }
        let object = self.config.object.clone();
        let response = self
            .call("GetMetricSpec", |mut c| async move {
                c.get_metric_spec(object).await
            })
            .await?;
        let metrics =
            plugin_metrics(self.config.index, &response.metric_specs).map_err(|message| {
                ScalerError::Source {
                    source_name: self.source_name.clone(),
                    message,
                }
            })?;
        *self.metrics.write().unwrap_or_else(PoisonError::into_inner) = Some(metrics.clone());
        Ok(metrics)
    }

    fn metric_specs(&self) -> Vec<MetricSpec> {
        self.metrics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flatten()
            .map(|m| MetricSpec::External {
                name: m.name.clone(),
                target: m.target,
                target_type: self.config.metric_type,
            })
            .collect()
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        let metrics = self.metrics().await?;
        let Some(wanted) = metrics.iter().find(|m| m.name == metric) else {
            return Err(ScalerError::UnknownMetric(metric.to_string()));
        };
        let request = GetMetricsRequest {
            scaled_object_ref: Some(self.config.object.clone()),
            metric_name: wanted.plugin_name.clone(),
        };
        let response = self
            .call(
                "GetMetrics",
                |mut c| async move { c.get_metrics(request).await },
            )
            .await?;
        if response.metric_values.is_empty() {
            return Err(ScalerError::Source {
                source_name: self.source_name.clone(),
                message: format!(
                    "GetMetrics returned no value for metric {:?}",
                    wanted.plugin_name
                ),
            });
        }
        let values = response
            .metric_values
            .iter()
            .map(|v| MetricValue {
                name: wanted.name.clone(),
                value: metric_value(v),
            })
            .collect();
        let object = self.config.object.clone();
        let active = self
            .call("IsActive", |mut c| async move { c.is_active(object).await })
            .await?
            .result;
        Ok(MetricsAndActivity { values, active })
    }

    /// Opens `StreamIsActive`; the open (not the stream's life) is bounded by the timeout.
    async fn open_stream(&self) -> Result<tonic::Streaming<pb::IsActiveResponse>, ScalerError> {
        let object = self.config.object.clone();
        self.call("StreamIsActive", |mut c| async move {
            c.stream_is_active(object).await
        })
        .await
    }
}

/// Connects a channel, with TLS when the trigger asks for it.
async fn connect(key: ChannelKey, source_name: String) -> Result<Channel, ScalerError> {
    let error = |message: String| ScalerError::Source {
        source_name: source_name.clone(),
        message,
    };
    let scheme = if key.tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", key.address))
        .map_err(|_| error("invalid address".into()))?
        .connect_timeout(TIMEOUT);
    if let Some(tls) = &key.tls {
        let mut config = ClientTlsConfig::new();
        if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
            let cert = cert.read("tlsClientCert").map_err(&error)?;
            let key = key.read("tlsClientKey").map_err(&error)?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        endpoint = if tls.unsafe_ssl {
            endpoint.tls_config_with_verifier(config, Arc::new(AnyServerCertificate::new()))
        } else {
            config = match &tls.ca_cert {
                Some(ca) => {
                    config.ca_certificate(Certificate::from_pem(ca.read("caCert").map_err(&error)?))
                }
                None => config.with_native_roots(),
            };
            endpoint.tls_config(config)
        }
        .map_err(|e| error(format!("TLS settings refused: {}", error_chain(&e))))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| error(format!("cannot connect: {}", error_chain(&e))))
}

/// A failed call as a [`ScalerError`]: the gRPC code and the plugin's message, shortened.
fn status_error(source_name: &str, rpc: &str, status: &tonic::Status) -> ScalerError {
    let mut message = status.message().to_string();
    if let Some(source) = std::error::Error::source(status) {
        let chain = error_chain(source);
        message = if chain.starts_with(&message) {
            chain
        } else {
            format!("{message}: {chain}")
        };
    }
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    ScalerError::Source {
        source_name: source_name.to_string(),
        message: format!("{rpc} failed ({:?}): {message}", status.code()),
    }
}

/// An `external` trigger.
pub struct ExternalScaler {
    inner: Arc<Inner>,
}

impl ExternalScaler {
    /// Parses the trigger and takes a lease on its plugin's shared channel.
    pub fn new(trigger: &Trigger, pool: &ChannelPool) -> Result<Self, ConfigError> {
        Ok(Self {
            inner: Inner::new(trigger, pool)?,
        })
    }
}

#[async_trait]
impl Scaler for ExternalScaler {
    /// The plugin's metrics once `GetMetricSpec` has answered; empty before (see the module
    /// documentation).
    fn metric_specs(&self) -> Vec<MetricSpec> {
        self.inner.metric_specs()
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        self.inner.metrics_and_activity(metric).await
    }

    async fn close(&self) {
        self.inner.closed.send_replace(true);
    }
}

/// An `external-push` trigger: an `external` trigger whose activity also arrives through
/// `StreamIsActive`.
pub struct ExternalPushScaler {
    inner: Arc<Inner>,
}

impl ExternalPushScaler {
    /// Parses the trigger and takes a lease on its plugin's shared channel.
    pub fn new(trigger: &Trigger, pool: &ChannelPool) -> Result<Self, ConfigError> {
        Ok(Self {
            inner: Inner::new(trigger, pool)?,
        })
    }
}

#[async_trait]
impl Scaler for ExternalPushScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        self.inner.metric_specs()
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        self.inner.metrics_and_activity(metric).await
    }

    async fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    fn as_push(&self) -> Option<&dyn PushScaler> {
        Some(self)
    }
}

/// The state of one activity stream between two items.
struct StreamState {
    inner: Weak<Inner>,
    closed: tokio::sync::watch::Receiver<bool>,
    stream: Option<tonic::Streaming<pb::IsActiveResponse>>,
    wait: Option<Duration>,
    backoff: Duration,
}

impl StreamState {
    /// Schedules the next attempt and doubles the following wait.
    fn back_off(&mut self) {
        self.stream = None;
        self.wait = Some(self.backoff);
        self.backoff = (self.backoff * 2).min(STREAM_MAX_BACKOFF);
    }

    /// The next activity update or error; `None` once the scaler is closed or dropped.
    async fn next(&mut self) -> Option<Result<bool, ScalerError>> {
        loop {
            if *self.closed.borrow() {
                return None;
            }
            if let Some(wait) = self.wait.take() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = self.closed.changed() => return None,
                }
            }
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let inner = self.inner.upgrade()?;
                    match inner.open_stream().await {
                        Ok(stream) => self.stream.insert(stream),
                        Err(e) => {
                            self.back_off();
                            return Some(Err(e));
                        }
                    }
                }
            };
            let message = tokio::select! {
                m = stream.message() => m,
                _ = self.closed.changed() => return None,
            };
            match message {
                Ok(Some(response)) => {
                    self.backoff = STREAM_INITIAL_BACKOFF;
                    return Some(Ok(response.result));
                }
                // The plugin ended the stream: open it again after a pause.
                Ok(None) => self.back_off(),
                Err(status) => {
                    let source_name = self.inner.upgrade()?.source_name.clone();
                    self.back_off();
                    return Some(Err(status_error(&source_name, "StreamIsActive", &status)));
                }
            }
        }
    }
}

impl PushScaler for ExternalPushScaler {
    /// Activity from `StreamIsActive`. When the stream fails, the error is yielded and the
    /// stream is reopened after a backoff (1 s doubling up to 30 s, reset by a message); when
    /// the plugin ends it, it is reopened the same way without an error. Ends on close.
    fn activity(&self) -> ActivityStream {
        let state = StreamState {
            inner: Arc::downgrade(&self.inner),
            closed: self.inner.closed.subscribe(),
            stream: None,
            wait: None,
            backoff: STREAM_INITIAL_BACKOFF,
        };
        Box::pin(futures_util::stream::unfold(
            state,
            |mut state| async move {
                let item = state.next().await?;
                Some((item, state))
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nhunter2\n-----END PRIVATE KEY-----\n";

    fn trigger(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Trigger {
        Trigger {
            index: 1,
            trigger_type: "external".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            auth_params: auth
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            resolved_env: [("QUEUE_PASSWORD".to_string(), "s3cret".to_string())].into(),
            scaled_object_name: "worker".into(),
            scaled_object_namespace: "shop".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_every_documented_key() {
        /// (metadata, auth params, TLS expected, CA, client cert, unsafeSsl)
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static [(&'static str, &'static str)],
            bool,
            Option<Pem>,
            bool,
            bool,
        );
        let cases: [Case; 6] = [
            (
                &[("scalerAddress", "plugin.ns:6000")],
                &[],
                false,
                None,
                false,
                false,
            ),
            (
                &[("scalerAddress", "plugin.ns:6000"), ("enableTLS", "true")],
                &[],
                true,
                None,
                false,
                false,
            ),
            (
                &[("scalerAddress", "plugin.ns:6000")],
                &[("caCert", CA_PEM)],
                true,
                Some(Pem::Inline(CA_PEM.into())),
                false,
                false,
            ),
            (
                &[
                    ("scalerAddress", "plugin.ns:6000"),
                    ("caCert", "/etc/tls/ca.pem"),
                ],
                &[],
                true,
                Some(Pem::File("/etc/tls/ca.pem".into())),
                false,
                false,
            ),
            (
                &[("scalerAddress", "[::1]:6000")],
                &[("tlsClientCert", CA_PEM), ("tlsClientKey", KEY_PEM)],
                true,
                None,
                true,
                false,
            ),
            (
                &[
                    ("scalerAddress", "10.0.0.1:6000"),
                    ("enableTLS", "TRUE"),
                    ("unsafeSsl", "true"),
                ],
                &[],
                true,
                None,
                false,
                true,
            ),
        ];
        for (meta, auth, tls, ca, client, unsafe_ssl) in cases {
            let c = ExternalConfig::parse(&trigger(meta, auth)).expect("parses");
            assert_eq!(c.key.tls.is_some(), tls, "{meta:?}");
            if let Some(t) = &c.key.tls {
                assert_eq!(t.ca_cert, ca, "{meta:?}");
                assert_eq!(t.client_cert.is_some() && t.client_key.is_some(), client);
                assert_eq!(t.unsafe_ssl, unsafe_ssl);
            }
            assert_eq!(c.metric_type, MetricTargetType::AverageValue);
            assert_eq!(
                (c.object.name.as_str(), c.object.namespace.as_str()),
                ("worker", "shop")
            );
        }
        let mut t = trigger(&[("scalerAddress", "p:1")], &[]);
        t.metric_type = Some("Value".into());
        assert_eq!(
            ExternalConfig::parse(&t).unwrap().metric_type,
            MetricTargetType::Value
        );
    }

    #[test]
    fn the_whole_metadata_is_forwarded_with_from_env_keys_resolved() {
        let c = ExternalConfig::parse(&trigger(
            &[
                ("scalerAddress", "p:6000"),
                ("queue", "orders"),
                ("passwordFromEnv", "QUEUE_PASSWORD"),
                ("tokenFromEnv", "UNSET"),
            ],
            &[("caCert", CA_PEM)],
        ))
        .unwrap();
        let expected: BTreeMap<String, String> = [
            ("passwordFromEnv", "s3cret"),
            ("queue", "orders"),
            ("scalerAddress", "p:6000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(c.object.scaler_metadata, expected);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        /// (metadata, auth params, key at fault, problem)
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static [(&'static str, &'static str)],
            &'static str,
            &'static str,
        );
        let address_problem = "expected host:port (no scheme), e.g. my-scaler.ns:6000";
        let cases: [Case; 9] = [
            (
                &[],
                &[],
                "scalerAddress",
                "required; set metadata \"scalerAddress\"",
            ),
            (
                &[("scalerAddress", "plugin")],
                &[],
                "scalerAddress",
                address_problem,
            ),
            (
                &[("scalerAddress", "http://plugin:6000")],
                &[],
                "scalerAddress",
                address_problem,
            ),
            (
                &[("scalerAddress", "plugin:http")],
                &[],
                "scalerAddress",
                address_problem,
            ),
            (
                &[("scalerAddress", "plugin:0")],
                &[],
                "scalerAddress",
                address_problem,
            ),
            (
                &[("scalerAddress", "::1:6000")],
                &[],
                "scalerAddress",
                address_problem,
            ),
            (
                &[("scalerAddress", "p:1"), ("enableTLS", "yes")],
                &[],
                "enableTLS",
                "expected true or false",
            ),
            (
                &[("scalerAddress", "p:1")],
                &[("tlsClientCert", CA_PEM)],
                "tlsClientKey",
                "required when tlsClientCert is set",
            ),
            (
                &[("scalerAddress", "p:1")],
                &[("tlsClientKey", KEY_PEM)],
                "tlsClientCert",
                "required when tlsClientKey is set",
            ),
        ];
        for (meta, auth, key, problem) in cases {
            let err = ExternalConfig::parse(&trigger(meta, auth)).expect_err("refused");
            assert_eq!(
                (err.key.as_str(), err.problem.as_str()),
                (key, problem),
                "{meta:?}"
            );
            assert!(!err.to_string().contains("hunter2"));
        }
        let mut t = trigger(&[("scalerAddress", "p:1")], &[]);
        t.metric_type = Some("Utilization".into());
        assert_eq!(ExternalConfig::parse(&t).unwrap_err().key, "metricType");
    }

    #[test]
    fn floats_win_over_integers_when_above_zero() {
        // (targetSize, targetSizeFloat, expected target)
        let targets: [(i64, f64, f64); 4] = [
            (5, 0.0, 5.0),
            (5, 2.5, 2.5),
            (0, 0.25, 0.25),
            (7, -1.0, 7.0),
        ];
        for (size, float, expected) in targets {
            let spec = pb::MetricSpec {
                metric_name: "m".into(),
                target_size: size,
                target_size_float: float,
            };
            assert_eq!(spec_target(&spec), expected, "{size} {float}");
        }
        // (metricValue, metricValueFloat, expected value)
        let values: [(i64, f64, f64); 4] =
            [(3, 0.0, 3.0), (3, 3.5, 3.5), (0, 0.0, 0.0), (9, 0.5, 0.5)];
        for (value, float, expected) in values {
            let v = pb::MetricValue {
                metric_name: "m".into(),
                metric_value: value,
                metric_value_float: float,
            };
            assert_eq!(metric_value(&v), expected, "{value} {float}");
        }
    }

    #[test]
    fn plugin_metric_names_get_the_trigger_prefix_and_bad_specs_are_refused() {
        let spec = |name: &str, size: i64, float: f64| pb::MetricSpec {
            metric_name: name.into(),
            target_size: size,
            target_size_float: float,
        };
        let metrics =
            plugin_metrics(2, &[spec("queue.depth", 10, 0.0), spec("lag", 0, 1.5)]).unwrap();
        assert_eq!(
            metrics,
            vec![
                PluginMetric {
                    name: "s2-queue-depth".into(),
                    plugin_name: "queue.depth".into(),
                    target: 10.0
                },
                PluginMetric {
                    name: "s2-lag".into(),
                    plugin_name: "lag".into(),
                    target: 1.5
                },
            ]
        );
        assert_eq!(
            plugin_metrics(0, &[]).unwrap_err(),
            "GetMetricSpec returned no metric"
        );
        assert_eq!(
            plugin_metrics(0, &[spec("", 1, 0.0)]).unwrap_err(),
            "GetMetricSpec returned a metric without a name"
        );
        assert_eq!(
            plugin_metrics(0, &[spec("q", 0, 0.0)]).unwrap_err(),
            "GetMetricSpec returned target 0 for metric \"q\"; expected a number above 0"
        );
    }

    #[test]
    fn status_errors_are_short_and_name_the_call() {
        let long = "x".repeat(500);
        let err = status_error(
            "external scaler p:1",
            "GetMetrics",
            &tonic::Status::unavailable(long),
        );
        let text = err.to_string();
        assert!(
            text.starts_with("external scaler p:1: GetMetrics failed (Unavailable): xxx"),
            "{text}"
        );
        assert!(text.len() < 300, "{text}");
    }

    #[test]
    fn debug_of_a_channel_key_hides_tls_material() {
        let c = ExternalConfig::parse(&trigger(
            &[("scalerAddress", "p:1")],
            &[("tlsClientCert", CA_PEM), ("tlsClientKey", KEY_PEM)],
        ))
        .unwrap();
        let shown = format!("{:?}", c.key);
        assert_eq!(shown, "ChannelKey { address: \"p:1\", tls: true }");
    }
}
