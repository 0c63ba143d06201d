//! `rabbitmq`: queue length or message rate over AMQP or the management API.
//!
//! AMQP reads the ready messages of one queue with a passive `queue.declare` on a short-lived
//! channel of a connection shared by every trigger on the same server, vhost and credentials.
//! HTTP asks the management API (`/api/queues/<vhost>/<queue>`, or a regex query over the vhost)
//! through one `reqwest` client per server, credentials and TLS settings; the client pools its
//! HTTP connections itself.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::tcp::{AMQPUriTcpExt, RustlsConnector};
use lapin::types::FieldTable;
use lapin::uri::{
    AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo, SASLMechanism,
};
use lapin::{Connection, ConnectionProperties, ErrorKind};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use reqwest::Url;
use serde_json::Value;

use crate::error::{ConfigError, ScalerError};
use crate::http;
use crate::metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
use crate::pool::{Lease, SharedPool};
use crate::registry::Registry;
use crate::scaler::Scaler;
use crate::tls::{ClientTls, client_config};
use crate::trigger::{MetricTargetType, Source, Trigger};

/// Limit for connecting and for each query, unless the trigger sets `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// The `connection_name` client property of ebb's AMQP connections, shown by RabbitMQ.
pub const CONNECTION_NAME: &str = "ebb";

/// Target when neither `value` nor the deprecated `queueLength` is given (as KEDA).
const DEFAULT_QUEUE_LENGTH: f64 = 20.0;

/// Heartbeat asked of the server, so a dead peer is noticed between polls.
const HEARTBEAT_SECS: u16 = 10;

/// Identity of a shared AMQP connection. Holds credentials: never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AmqpKey {
    host: String,
    port: u16,
    vhost: String,
    username: Option<String>,
    password: Option<String>,
    /// TLS (`amqps://`): the CA and client certificate, if given.
    tls: Option<ClientTls>,
}

impl AmqpKey {
    /// Whether the connection authenticates with SASL EXTERNAL: over TLS with a client
    /// certificate and no username or password, as KEDA 2.20 does.
    fn uses_sasl_external(&self) -> bool {
        self.username.is_none()
            && self.password.is_none()
            && self.tls.as_ref().is_some_and(|tls| tls.cert.is_some())
    }
}

/// Identity of a shared management API client. Holds credentials: never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HttpKey {
    /// `scheme://host:port`, without user info.
    origin: String,
    username: Option<String>,
    password: Option<String>,
    tls: ClientTls,
}

/// The pool AMQP triggers share.
pub type AmqpPool = SharedPool<AmqpKey, Connection>;
/// The pool HTTP triggers share.
pub type HttpPool = SharedPool<HttpKey, reqwest::Client>;

/// Registers `rabbitmq`. Every trigger built from one registry shares that registry's pools.
pub fn register(registry: &mut Registry) {
    let amqp = AmqpPool::new();
    let http = HttpPool::new();
    registry.register("rabbitmq", move |t| {
        Ok(Box::new(RabbitMqScaler::new(t, &amqp, &http)?))
    });
}

/// What the trigger measures (KEDA's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Messages in the queue.
    QueueLength,
    /// Messages published per second (management API only).
    MessageRate,
    /// Messages delivered or fetched per second (management API only).
    DeliverGetRate,
    /// Published per second over delivered per second (management API only).
    PublishedToDeliveredRatio,
    /// Seconds until the queue is drained at the current rates (management API only).
    ExpectedQueueConsumptionTime,
}

impl Mode {
    const NAMES: [&str; 5] = [
        "QueueLength",
        "MessageRate",
        "DeliverGetRate",
        "PublishedToDeliveredRatio",
        "ExpectedQueueConsumptionTime",
    ];

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "QueueLength" => Mode::QueueLength,
            "MessageRate" => Mode::MessageRate,
            "DeliverGetRate" => Mode::DeliverGetRate,
            "PublishedToDeliveredRatio" => Mode::PublishedToDeliveredRatio,
            "ExpectedQueueConsumptionTime" => Mode::ExpectedQueueConsumptionTime,
            _ => return None,
        })
    }
}

/// What one queue (or a regex's queues, combined) reports: the figures every mode reads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct QueueStats {
    /// `messages`, or `messages_ready` with excludeUnacknowledged.
    messages: f64,
    /// Messages published per second.
    publish_rate: f64,
    /// Messages delivered or fetched per second.
    deliver_get_rate: f64,
}

impl QueueStats {
    /// The metric value and activity of `mode`, with KEDA's formulas.
    fn measure(self, mode: Mode, activation: f64) -> (f64, bool) {
        let QueueStats {
            messages,
            publish_rate: published,
            deliver_get_rate: delivered,
        } = self;
        match mode {
            Mode::QueueLength => (messages, messages > activation),
            // Active on the rate or on a backlog: a queue full of messages with no new
            // publishes still has work waiting.
            Mode::MessageRate => (published, published > activation || messages > activation),
            Mode::DeliverGetRate => (delivered, delivered > activation),
            Mode::PublishedToDeliveredRatio => {
                if published > 0.0 && delivered == 0.0 {
                    // Published, nothing consumed: active, at the activation value.
                    (activation, true)
                } else if published > 0.0 {
                    let ratio = published / delivered;
                    (ratio, ratio > activation)
                } else {
                    (0.0, 0.0 > activation)
                }
            }
            Mode::ExpectedQueueConsumptionTime => {
                if delivered == 0.0 {
                    // Nothing consumed: active at the activation value while messages wait;
                    // an empty queue is idle (KEDA 2.20 held even an empty queue active).
                    (activation, messages > 0.0)
                } else {
                    let seconds = (published - delivered) / delivered + messages / delivered;
                    (seconds, seconds > activation)
                }
            }
        }
    }
}

/// How the queues matched by a regex are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Sum,
    Avg,
    Max,
}

/// Where and how the queue is read.
#[derive(Clone, PartialEq)]
enum Endpoint {
    Amqp(AmqpKey),
    Http {
        key: HttpKey,
        /// Origin plus any path prefix before the vhost, no trailing slash, no user info.
        base: String,
        vhost: String,
    },
}

/// Parsed `rabbitmq` trigger metadata.
#[derive(Clone, PartialEq)]
struct RabbitMqConfig {
    endpoint: Endpoint,
    queue_name: String,
    mode: Mode,
    value: f64,
    activation_value: f64,
    use_regex: bool,
    operation: Operation,
    page_size: u32,
    exclude_unacknowledged: bool,
    timeout: Duration,
    metric_type: MetricTargetType,
    metric_name: String,
}

impl fmt::Debug for RabbitMqConfig {
    // Credentials and TLS keys are left out; the server is named by address only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqConfig")
            .field("source", &source_name(&self.endpoint))
            .field("queue_name", &self.queue_name)
            .field("mode", &self.mode)
            .field("value", &self.value)
            .field("activation_value", &self.activation_value)
            .field("use_regex", &self.use_regex)
            .field("operation", &self.operation)
            .field("page_size", &self.page_size)
            .field("exclude_unacknowledged", &self.exclude_unacknowledged)
            .field("timeout", &self.timeout)
            .field("metric_type", &self.metric_type)
            .field("metric_name", &self.metric_name)
            .finish_non_exhaustive()
    }
}

/// The parts of a `host` URL, user info and vhost percent-decoded.
#[derive(Debug, Clone, PartialEq)]
struct HostUrl {
    scheme: String,
    host: String,
    port: u16,
    /// Path before the vhost segment (`/path` in `http://h:15672/path/vhost`), or empty.
    prefix: String,
    vhost: String,
    username: Option<String>,
    password: Option<String>,
}

/// Splits a `host` value. Errors describe the problem without repeating the value, which may
/// carry a password.
fn parse_host_url(text: &str) -> Result<HostUrl, String> {
    const EXPECTED: &str =
        "expected a URL such as amqp://user:password@host:5672/vhost or http://host:15672/vhost";
    let url = Url::parse(text.trim()).map_err(|e| format!("{EXPECTED} ({e})"))?;
    let scheme = url.scheme().to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "amqp" => 5672,
        "amqps" => 5671,
        "http" => 80,
        "https" => 443,
        _ => {
            return Err(format!(
                "{EXPECTED}; the scheme must be amqp, amqps, http or https"
            ));
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{EXPECTED}; the host name is missing"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port().unwrap_or(default_port);
    // The last path segment is the vhost; anything before it is a path prefix of the
    // management API (for a reverse proxy). An empty vhost means the default vhost `/`.
    let path = url.path();
    let (prefix, vhost) = match path.rfind('/') {
        Some(i) => (path[..i].trim_end_matches('/'), &path[i + 1..]),
        None => ("", path),
    };
    let vhost = percent_decode(vhost);
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Ok(HostUrl {
        host,
        port,
        prefix: prefix.to_string(),
        vhost: if vhost.is_empty() { "/".into() } else { vhost },
        username: non_empty(percent_decode(url.username())),
        password: url.password().map(percent_decode).and_then(non_empty),
        scheme,
    })
}

fn percent_decode(s: &str) -> String {
    // A `%` not followed by two hex digits stays as it is; bytes that are not UTF-8 become U+FFFD.
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`): what Go's
/// `url.QueryEscape` (KEDA) and RabbitMQ's management API expect encoded. Unlike the `url`
/// crate's path-segment and form sets, it encodes `/` in a vhost (the default vhost `/` is
/// `%2F`) and `*`, `$`, `^` in a regex.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986's unreserved characters: safe in a path segment
/// and in a query value.
fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// The queue name as KEDA puts it in the metric name: query-escaped (space as `+`).
fn query_escape(s: &str) -> String {
    percent_encode(s).replace("%20", "+")
}

/// `GET` URL of one queue.
fn queue_url(base: &str, vhost: &str, queue: &str) -> String {
    format!(
        "{base}/api/queues/{}/{}",
        percent_encode(vhost),
        percent_encode(queue)
    )
}

/// `GET` URL of the first page of the vhost's queues whose name matches `regex`.
fn regex_url(base: &str, vhost: &str, regex: &str, page_size: u32) -> String {
    format!(
        "{base}/api/queues/{}?page=1&use_regex=true&pagination=true&name={}&page_size={page_size}",
        percent_encode(vhost),
        percent_encode(regex)
    )
}

/// One figure of a queue object: absent or null is 0, as KEDA decodes it; anything else but a
/// finite non-negative number is an error.
fn figure(queue: &Value, pointer: &str) -> Result<f64, String> {
    match queue.pointer(pointer) {
        None | Some(Value::Null) => Ok(0.0),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| format!("the management API reported {pointer:?} as {v}, not a count")),
    }
}

/// The figures of one queue object of the management API.
fn queue_stats(queue: &Value, exclude_unacknowledged: bool) -> Result<QueueStats, String> {
    Ok(QueueStats {
        messages: figure(
            queue,
            if exclude_unacknowledged {
                "/messages_ready"
            } else {
                "/messages"
            },
        )?,
        publish_rate: figure(queue, "/message_stats/publish_details/rate")?,
        deliver_get_rate: figure(queue, "/message_stats/deliver_get_details/rate")?,
    })
}

/// The combined figures of a regex query's page (`items`, `page_count`).
fn regex_stats(
    page: &Value,
    exclude_unacknowledged: bool,
    operation: Operation,
) -> Result<QueueStats, String> {
    let items = page
        .get("items")
        .and_then(Value::as_array)
        .ok_or("the management API answered without an \"items\" list")?;
    let pages = page.get("page_count").and_then(Value::as_u64).unwrap_or(1);
    if pages > 1 {
        return Err(format!(
            "the regex matches more queues than one page holds ({pages} pages); raise pageSize or narrow the regex"
        ));
    }
    let each = items
        .iter()
        .map(|q| {
            queue_stats(q, exclude_unacknowledged).map_err(|e| {
                let name = q.get("name").and_then(Value::as_str).unwrap_or("?");
                format!("queue {name:?}: {e}")
            })
        })
        .collect::<Result<Vec<QueueStats>, String>>()?;
    let combined =
        |f: fn(&QueueStats) -> f64| aggregate(&each.iter().map(f).collect::<Vec<_>>(), operation);
    let mut messages = combined(|s| s.messages);
    if operation == Operation::Avg {
        // A count averages to a whole count, as in KEDA.
        messages = messages.floor();
    }
    Ok(QueueStats {
        messages,
        publish_rate: combined(|s| s.publish_rate),
        deliver_get_rate: combined(|s| s.deliver_get_rate),
    })
}

/// Sum, average or maximum; 0 for no queues.
fn aggregate(values: &[f64], operation: Operation) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    match operation {
        Operation::Sum => values.iter().sum(),
        Operation::Avg => values.iter().sum::<f64>() / values.len() as f64,
        Operation::Max => values.iter().copied().fold(f64::MIN, f64::max),
    }
}

impl RabbitMqConfig {
    fn parse(t: &Trigger) -> Result<Self, ConfigError> {
        // KEDA's order for the host: metadata, then authentication, then the environment.
        let host = t.required("host", &[Source::Metadata, Source::Auth, Source::Env])?;
        let url = parse_host_url(&host.value).map_err(|problem| t.error("host", problem))?;
        let is_amqp = matches!(url.scheme.as_str(), "amqp" | "amqps");
        let protocol = match t.one_of_from(
            "protocol",
            &[Source::Metadata, Source::Auth],
            &["auto", "amqp", "http"],
            "auto",
        )? {
            "auto" if is_amqp => "amqp",
            "auto" => "http",
            "amqp" if !is_amqp => {
                return Err(t.error("protocol", "amqp needs an amqp:// host URL"));
            }
            "http" if is_amqp => {
                return Err(t.error("protocol", "http needs an http:// or https:// host URL"));
            }
            p => p,
        };
        let http = protocol == "http";

        let queue_name = t.required("queueName", &[Source::Metadata])?.value;
        let (mode, value) = Self::mode_and_value(t)?;
        let activation_value = t.threshold_or("activationValue", 0.0)?;
        let use_regex = t.bool_or("useRegex", &[Source::Metadata], false)?;
        let operation = match t.one_of("operation", &["sum", "avg", "max"], "sum")? {
            "avg" => Operation::Avg,
            "max" => Operation::Max,
            _ => Operation::Sum,
        };
        let page_size: i64 = t.parse_or("pageSize", &[Source::Metadata], 100, "a whole number")?;
        let page_size = u32::try_from(page_size)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| t.error("pageSize", "expected a whole number >= 1"))?;
        let exclude_unacknowledged =
            t.bool_or("excludeUnacknowledged", &[Source::Metadata], false)?;
        if !http {
            let only_http = "needs the http protocol (the management API); AMQP reads one queue's ready messages";
            if use_regex {
                return Err(t.error("useRegex", only_http));
            }
            if exclude_unacknowledged {
                return Err(t.error("excludeUnacknowledged", only_http));
            }
            if mode != Mode::QueueLength {
                return Err(t.error("mode", format!("{mode:?} {only_http}")));
            }
        }
        let timeout = t.duration_or("timeout", &[Source::Metadata], DEFAULT_TIMEOUT)?;

        // Credentials from the TriggerAuthentication or the environment override the URL's.
        let secrets = [Source::Auth, Source::Env];
        let username = t.lookup("username", &secrets)?.map(|f| f.value);
        let password = t.lookup("password", &secrets)?.map(|f| f.value);
        let (username, password) = match (username, password) {
            (Some(u), Some(p)) => (Some(u), Some(p)),
            (None, None) => (url.username.clone(), url.password.clone()),
            (Some(_), None) => {
                return Err(t.error("password", "required when username is set"));
            }
            (None, Some(_)) => {
                return Err(t.error("username", "required when password is set"));
            }
        };
        let vhost = t
            .lookup("vhostName", &[Source::Metadata, Source::Auth])?
            .map(|f| f.value)
            .unwrap_or_else(|| url.vhost.clone());
        let tls = Self::tls(t)?;

        let endpoint = if http {
            let tls = if url.scheme == "https" {
                tls.unwrap_or_default()
            } else {
                ClientTls::default()
            };
            let origin = format!("{}://{}", url.scheme, authority(&url.host, url.port));
            Endpoint::Http {
                base: format!("{origin}{}", url.prefix),
                key: HttpKey {
                    origin,
                    username,
                    password,
                    tls: ClientTls {
                        unsafe_ssl: t.bool_or("unsafeSsl", &[Source::Metadata], false)?,
                        ..tls
                    },
                },
                vhost,
            }
        } else {
            // As with https, the scheme decides: `tls` settings apply to `amqps://` only.
            // `unsafeSsl` applies with or without `tls: enable` (KEDA reads it only with it).
            let tls = if url.scheme == "amqps" {
                Some(ClientTls {
                    unsafe_ssl: t.bool_or("unsafeSsl", &[Source::Metadata], false)?,
                    ..tls.unwrap_or_default()
                })
            } else {
                None
            };
            Endpoint::Amqp(AmqpKey {
                host: url.host,
                port: url.port,
                vhost,
                username,
                password,
                tls,
            })
        };

        Ok(Self {
            endpoint,
            metric_type: t.metric_type(
                &[MetricTargetType::AverageValue, MetricTargetType::Value],
                MetricTargetType::AverageValue,
            )?,
            metric_name: metric_name(t.index, &format!("rabbitmq-{}", query_escape(&queue_name))),
            queue_name,
            mode,
            value,
            activation_value,
            use_regex,
            operation,
            page_size,
            exclude_unacknowledged,
            timeout,
        })
    }

    /// `mode` + `value`, or the deprecated `queueLength` / `publishRate`; QueueLength 20 when
    /// none is given.
    fn mode_and_value(t: &Trigger) -> Result<(Mode, f64), ConfigError> {
        let present = |key: &str| t.metadata.get(key).is_some_and(|v| !v.trim().is_empty());
        let positive = |key: &str, default: f64| -> Result<f64, ConfigError> {
            let v = t.threshold_or(key, default)?;
            if v == 0.0 {
                return Err(t.error(key, "expected a number above 0"));
            }
            Ok(v)
        };
        let deprecated = ["queueLength", "publishRate"];
        if present("queueLength") && present("publishRate") {
            return Err(t.error(
                "publishRate",
                "cannot be combined with queueLength; use mode and value",
            ));
        }
        if let Some(old) = deprecated.iter().find(|k| present(k)) {
            if present("mode") || present("value") {
                return Err(t.error(
                    old,
                    "is deprecated and cannot be combined with mode or value; use mode and value only",
                ));
            }
            let mode = if *old == "queueLength" {
                Mode::QueueLength
            } else {
                Mode::MessageRate
            };
            return Ok((mode, positive(old, DEFAULT_QUEUE_LENGTH)?));
        }
        let mode = Mode::from_name(t.one_of("mode", &Mode::NAMES, "QueueLength")?)
            .unwrap_or(Mode::QueueLength);
        match (present("mode"), present("value")) {
            (true, false) => Err(t.error("value", "required with mode")),
            (false, true) => Err(t.error(
                "mode",
                format!("required with value: one of {}", Mode::NAMES.join(", ")),
            )),
            _ => Ok((mode, positive("value", DEFAULT_QUEUE_LENGTH)?)),
        }
    }

    /// The auth parameters `tls` (enable|disable), `ca`, `cert`, `key`; `None` when TLS is not
    /// enabled. PEM contents are checked here so a bad certificate fails the trigger at once.
    fn tls(t: &Trigger) -> Result<Option<ClientTls>, ConfigError> {
        let auth = [Source::Auth];
        match t.lookup("tls", &auth)? {
            None => return Ok(None),
            Some(found) => match found.value.trim().to_ascii_lowercase().as_str() {
                "enable" => {}
                "disable" => return Ok(None),
                _ => return Err(t.error("tls", "expected enable or disable")),
            },
        }
        Ok(Some(crate::tls::from_auth_params(t)?))
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// How errors name the server (no credentials).
fn source_name(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Amqp(key) => format!("rabbitmq {}", authority(&key.host, key.port)),
        Endpoint::Http { base, .. } => format!("rabbitmq {base}"),
    }
}

/// The shared client a trigger holds a lease on.
enum Backend {
    Amqp(Lease<AmqpKey, Connection>),
    Http(Lease<HttpKey, reqwest::Client>),
}

/// A `rabbitmq` trigger.
pub struct RabbitMqScaler {
    config: RabbitMqConfig,
    backend: Backend,
    source_name: String,
}

impl fmt::Debug for RabbitMqScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqScaler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RabbitMqScaler {
    /// Parses the trigger and takes a lease on its server's shared connection or client.
    pub fn new(trigger: &Trigger, amqp: &AmqpPool, http: &HttpPool) -> Result<Self, ConfigError> {
        let config = RabbitMqConfig::parse(trigger)?;
        let backend = match &config.endpoint {
            Endpoint::Amqp(key) => Backend::Amqp(amqp.lease(key.clone())),
            Endpoint::Http { key, .. } => Backend::Http(http.lease(key.clone())),
        };
        Ok(Self {
            source_name: source_name(&config.endpoint),
            config,
            backend,
        })
    }

    fn source_error(&self, message: impl Into<String>) -> ScalerError {
        ScalerError::Source {
            source_name: self.source_name.clone(),
            message: message.into(),
        }
    }

    fn timeout_error(&self) -> ScalerError {
        ScalerError::Timeout {
            source_name: self.source_name.clone(),
            timeout: self.config.timeout,
        }
    }

    async fn read(&self) -> Result<QueueStats, ScalerError> {
        match &self.backend {
            Backend::Amqp(lease) => self.read_amqp(lease).await,
            Backend::Http(lease) => self.read_http(lease).await,
        }
    }

    async fn amqp_connection(
        &self,
        lease: &Lease<AmqpKey, Connection>,
    ) -> Result<Arc<Connection>, ScalerError> {
        let Endpoint::Amqp(key) = &self.config.endpoint else {
            return Err(self.source_error("not an AMQP trigger"));
        };
        let connect = || connect_amqp(key.clone(), self.source_name.clone(), self.config.timeout);
        let conn = lease
            .client(&self.source_name, self.config.timeout, connect)
            .await?;
        if conn.status().connected() {
            return Ok(conn);
        }
        // The server closed it or the socket died since the last poll: connect again (the
        // pool applies its backoff if that fails too).
        lease.invalidate(&conn).await;
        let connect = || connect_amqp(key.clone(), self.source_name.clone(), self.config.timeout);
        lease
            .client(&self.source_name, self.config.timeout, connect)
            .await
    }

    async fn read_amqp(
        &self,
        lease: &Lease<AmqpKey, Connection>,
    ) -> Result<QueueStats, ScalerError> {
        let conn = self.amqp_connection(lease).await?;
        // A channel per poll: a passive declare of a missing queue closes its channel, which
        // must not disturb the other triggers on the connection. Dropping it closes it.
        let declare = async {
            let channel = conn.create_channel().await?;
            channel
                .queue_declare(
                    self.config.queue_name.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
        };
        match tokio::time::timeout(self.config.timeout, declare).await {
            Err(_) => {
                // A half-open connection answers nothing: replace it.
                lease.invalidate(&conn).await;
                Err(self.timeout_error())
            }
            Ok(Ok(queue)) => Ok(QueueStats {
                messages: f64::from(queue.message_count()),
                ..QueueStats::default()
            }),
            Ok(Err(e)) => {
                if let ErrorKind::ProtocolError(amqp) = e.kind()
                    && let AMQPErrorKind::Soft(soft) = amqp.kind()
                {
                    // Channel-level: the connection is fine.
                    return Err(match soft {
                        AMQPSoftError::NOTFOUND => self.source_error(format!(
                            "queue {:?} does not exist in vhost {:?}",
                            self.config.queue_name,
                            match &self.config.endpoint {
                                Endpoint::Amqp(key) => key.vhost.as_str(),
                                Endpoint::Http { vhost, .. } => vhost.as_str(),
                            }
                        )),
                        _ => self.source_error(format!("queue.declare refused: {amqp}")),
                    });
                }
                lease.invalidate(&conn).await;
                Err(self.source_error(e.to_string()))
            }
        }
    }

    async fn read_http(
        &self,
        lease: &Lease<HttpKey, reqwest::Client>,
    ) -> Result<QueueStats, ScalerError> {
        let Endpoint::Http { key, base, vhost } = &self.config.endpoint else {
            return Err(self.source_error("not an HTTP trigger"));
        };
        let timeout = self.config.timeout;
        let client = lease
            .client(&self.source_name, timeout, || async {
                http_client(&key.tls, timeout).map_err(|message| self.source_error(message))
            })
            .await?;
        let url = if self.config.use_regex {
            regex_url(base, vhost, &self.config.queue_name, self.config.page_size)
        } else {
            queue_url(base, vhost, &self.config.queue_name)
        };
        let mut request = client.get(url);
        if key.username.is_some() || key.password.is_some() {
            request = request.basic_auth(
                key.username.as_deref().unwrap_or(""),
                key.password.as_deref(),
            );
        }
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        let (status, body) = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => return Err(self.timeout_error()),
            Ok(Err(e)) => return Err(self.source_error(http::error_message(e))),
            Ok(Ok(answer)) => answer,
        };
        if status == reqwest::StatusCode::NOT_FOUND && !self.config.use_regex {
            return Err(self.source_error(format!(
                "queue {:?} does not exist in vhost {vhost:?}",
                self.config.queue_name
            )));
        }
        if !status.is_success() {
            let reason = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
                .map(|r| format!(": {}", r.chars().take(200).collect::<String>()))
                .unwrap_or_default();
            return Err(self.source_error(format!("the management API answered {status}{reason}")));
        }
        let json: Value = serde_json::from_slice(&body).map_err(|e| {
            self.source_error(format!("the management API answered invalid JSON: {e}"))
        })?;
        let stats = if self.config.use_regex {
            regex_stats(
                &json,
                self.config.exclude_unacknowledged,
                self.config.operation,
            )
        } else {
            queue_stats(&json, self.config.exclude_unacknowledged)
        };
        stats.map_err(|message| self.source_error(message))
    }
}

/// Opens an AMQP connection named [`CONNECTION_NAME`]. Over `amqps://` the TLS session is
/// ebb's own rustls configuration (the system roots plus `ca`, or `unsafeSsl`, and the client
/// certificate); with a client certificate and no credentials it authenticates with SASL
/// EXTERNAL (the broker takes the user from the certificate), otherwise with PLAIN.
async fn connect_amqp(
    key: AmqpKey,
    source_name: String,
    timeout: Duration,
) -> Result<Connection, ScalerError> {
    let source_error = |message: String| ScalerError::Source {
        source_name: source_name.clone(),
        message,
    };
    let defaults = AMQPUserInfo::default();
    let external = key.uses_sasl_external();
    let uri = AMQPUri {
        // The TLS session is set up below: lapin connects plain TCP.
        scheme: AMQPScheme::AMQP,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: key.username.unwrap_or(defaults.username),
                password: key.password.unwrap_or(defaults.password),
            },
            host: key.host.clone(),
            port: key.port,
        },
        vhost: key.vhost,
        query: AMQPQueryString {
            heartbeat: Some(HEARTBEAT_SECS),
            connection_timeout: Some(timeout.as_millis() as u64),
            auth_mechanism: external.then_some(SASLMechanism::External),
            ..Default::default()
        },
    };
    let tls = match &key.tls {
        Some(tls) => Some(RustlsConnector::from(Arc::new(
            client_config(tls).map_err(|e| source_error(format!("TLS settings: {e}")))?,
        ))),
        None => None,
    };
    let host = key.host;
    let runtime =
        lapin::runtime::default_runtime().map_err(|e| source_error(format!("connecting: {e}")))?;
    let properties = ConnectionProperties::default().with_connection_name(CONNECTION_NAME.into());
    // lapin's errors name the failure (refused, ACCESS_REFUSED, a certificate problem), never
    // the password.
    Connection::connector(
        uri,
        runtime,
        async move |uri, runtime| {
            let stream = AMQPUriTcpExt::connect_with_config_async(
                &uri,
                lapin::tcp::TLSConfig::default(),
                &runtime,
            )
            .await?;
            match &tls {
                Some(connector) => Ok(stream.into_rustls(connector, &host).await?),
                None => Ok(stream),
            }
        },
        properties,
    )
    .await
    .map_err(|e| source_error(format!("connecting: {e}")))
}

/// A client for the management API with `tls`, bounded by `timeout`.
fn http_client(tls: &ClientTls, timeout: Duration) -> Result<reqwest::Client, String> {
    http::client(tls, |builder| {
        builder.connect_timeout(timeout).timeout(timeout)
    })
}

#[async_trait]
impl Scaler for RabbitMqScaler {
    /// Over AMQP only: a passive declare is one round trip on the shared connection, where a
    /// management API read costs the broker a whole HTTP request.
    fn activation_server(&self) -> Option<String> {
        match self.backend {
            Backend::Amqp(_) => Some(self.source_name.clone()),
            Backend::Http(_) => None,
        }
    }

    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.config.metric_name.clone(),
            target: self.config.value,
            target_type: self.config.metric_type,
        }]
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        if metric != self.config.metric_name {
            return Err(ScalerError::UnknownMetric(metric.to_string()));
        }
        let (value, active) = self
            .read()
            .await?
            .measure(self.config.mode, self.config.activation_value);
        Ok(MetricsAndActivity {
            values: vec![MetricValue {
                name: self.config.metric_name.clone(),
                value,
            }],
            active,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::tls::test_pem;

    fn trigger(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Trigger {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Trigger {
            index: 1,
            trigger_type: "rabbitmq".into(),
            metadata: map(meta),
            auth_params: map(auth),
            resolved_env: map(&[
                (
                    "RABBIT_URL",
                    "amqp://envuser:envpass@rabbit.env:5673/envhost",
                ),
                ("RABBIT_PASSWORD", "from-env"),
            ]),
            ..Default::default()
        }
    }

    fn parse(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> RabbitMqConfig {
        match RabbitMqConfig::parse(&trigger(meta, auth)) {
            Ok(c) => c,
            Err(e) => panic!("{meta:?}: {e}"),
        }
    }

    fn amqp(c: &RabbitMqConfig) -> &AmqpKey {
        match &c.endpoint {
            Endpoint::Amqp(key) => key,
            Endpoint::Http { .. } => panic!("expected AMQP"),
        }
    }

    fn http(c: &RabbitMqConfig) -> (&HttpKey, &str, &str) {
        match &c.endpoint {
            Endpoint::Http { key, base, vhost } => (key, base, vhost),
            Endpoint::Amqp(_) => panic!("expected HTTP"),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(
            &[
                ("host", "amqp://u:p@rabbit:5672/%2f"),
                ("queueName", "orders"),
            ],
            &[],
        );
        assert_eq!(c.metric_name, "s1-rabbitmq-orders");
        assert_eq!(
            (c.mode, c.value, c.activation_value),
            (Mode::QueueLength, 20.0, 0.0)
        );
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.metric_type, MetricTargetType::AverageValue);
        assert!(!c.use_regex && !c.exclude_unacknowledged);
        assert_eq!((c.operation, c.page_size), (Operation::Sum, 100));
        let key = amqp(&c);
        assert_eq!(
            (key.host.as_str(), key.port, key.vhost.as_str()),
            ("rabbit", 5672, "/")
        );
        assert_eq!(
            (key.username.as_deref(), key.password.as_deref()),
            (Some("u"), Some("p"))
        );
    }

    #[test]
    fn every_documented_key() {
        let mut t = trigger(
            &[
                ("host", "https://rabbit.example:15671/proxy/mgmt/ignored"),
                ("protocol", "HTTP"),
                ("queueName", "^jobs.*$"),
                ("mode", "MessageRate"),
                ("value", "12.5"),
                ("activationValue", "1.5"),
                ("vhostName", "team/a"),
                ("useRegex", "true"),
                ("operation", "max"),
                ("pageSize", "7"),
                ("excludeUnacknowledged", "true"),
                ("timeout", "1500"),
                ("unsafeSsl", "true"),
            ],
            &[("username", "admin"), ("password", "s3cret")],
        );
        t.metric_type = Some("Value".into());
        let c = RabbitMqConfig::parse(&t).expect("parses");
        assert_eq!(
            (c.mode, c.value, c.activation_value),
            (Mode::MessageRate, 12.5, 1.5)
        );
        assert!(c.use_regex && c.exclude_unacknowledged);
        assert_eq!((c.operation, c.page_size), (Operation::Max, 7));
        assert_eq!(c.timeout, Duration::from_millis(1500));
        assert_eq!(c.metric_type, MetricTargetType::Value);
        // KEDA query-escapes the queue name in the metric name.
        assert_eq!(c.metric_name, "s1-rabbitmq--5Ejobs--2A-24");
        let (key, base, vhost) = http(&c);
        assert_eq!(base, "https://rabbit.example:15671/proxy/mgmt");
        assert_eq!(vhost, "team/a");
        assert_eq!(key.origin, "https://rabbit.example:15671");
        assert_eq!(
            (key.username.as_deref(), key.password.as_deref()),
            (Some("admin"), Some("s3cret"))
        );
        assert!(key.tls.unsafe_ssl);

        for (op, expected) in [("sum", Operation::Sum), ("AVG", Operation::Avg)] {
            let c = parse(
                &[
                    ("host", "http://r:15672/"),
                    ("queueName", "q"),
                    ("operation", op),
                ],
                &[],
            );
            assert_eq!(c.operation, expected);
        }
    }

    #[test]
    fn host_sources_and_credentials() {
        // hostFromEnv, when neither metadata nor the TriggerAuthentication has a host.
        let c = parse(&[("hostFromEnv", "RABBIT_URL"), ("queueName", "q")], &[]);
        let key = amqp(&c);
        assert_eq!(
            (key.host.as_str(), key.port, key.vhost.as_str()),
            ("rabbit.env", 5673, "envhost")
        );
        assert_eq!(key.username.as_deref(), Some("envuser"));

        // KEDA's order: metadata, then the TriggerAuthentication, then the environment.
        let auth_host = [("host", "amqp://rabbit.auth/")];
        let c = parse(
            &[("hostFromEnv", "RABBIT_URL"), ("queueName", "q")],
            &auth_host,
        );
        assert_eq!(amqp(&c).host, "rabbit.auth");
        let c = parse(
            &[("host", "amqp://rabbit.meta"), ("queueName", "q")],
            &auth_host,
        );
        assert_eq!(amqp(&c).host, "rabbit.meta");

        // username/password from auth or env override the URL's; vhostName overrides its vhost.
        let c = parse(
            &[
                ("host", "amqp://u:p@r/one"),
                ("queueName", "q"),
                ("vhostName", "two"),
                ("passwordFromEnv", "RABBIT_PASSWORD"),
            ],
            &[("username", "svc")],
        );
        let key = amqp(&c);
        assert_eq!(
            (key.username.as_deref(), key.password.as_deref()),
            (Some("svc"), Some("from-env"))
        );
        assert_eq!(key.vhost, "two");
        // vhostName may come from the TriggerAuthentication, as in KEDA's examples.
        let c = parse(
            &[("host", "amqp://r"), ("queueName", "q")],
            &[("vhostName", "three")],
        );
        assert_eq!(amqp(&c).vhost, "three");
        // Percent-encoded user info is decoded.
        let c = parse(
            &[
                ("host", "http://a%40b:p%3Aw%2F@r:15672"),
                ("queueName", "q"),
            ],
            &[],
        );
        let (key, base, vhost) = http(&c);
        assert_eq!(
            (key.username.as_deref(), key.password.as_deref()),
            (Some("a@b"), Some("p:w/"))
        );
        assert_eq!((base, vhost), ("http://r:15672", "/"));
    }

    #[test]
    fn protocol_is_detected_from_the_scheme() {
        for (host, is_http) in [
            ("amqp://r:5672/", false),
            ("AMQP://r", false),
            ("http://r:15672/", true),
            ("https://r/", true),
        ] {
            let c = parse(&[("host", host), ("queueName", "q")], &[]);
            assert_eq!(
                matches!(c.endpoint, Endpoint::Http { .. }),
                is_http,
                "{host}"
            );
        }
        // protocol may come from the TriggerAuthentication, as in KEDA.
        let c = parse(
            &[("host", "https://r"), ("queueName", "q")],
            &[("protocol", "http")],
        );
        assert!(matches!(c.endpoint, Endpoint::Http { .. }));
        let c = parse(
            &[("host", "http://r"), ("queueName", "q"), ("timeout", "2s")],
            &[],
        );
        assert_eq!(c.timeout, Duration::from_secs(2));
        let c = parse(&[("host", "https://r"), ("queueName", "q")], &[]);
        assert_eq!(http(&c).0.origin, "https://r:443");
        let c = parse(&[("host", "http://r"), ("queueName", "q")], &[]);
        assert_eq!(http(&c).0.origin, "http://r:80");
    }

    #[test]
    fn deprecated_keys() {
        let c = parse(
            &[
                ("host", "amqp://r"),
                ("queueName", "q"),
                ("queueLength", "7"),
            ],
            &[],
        );
        assert_eq!((c.mode, c.value), (Mode::QueueLength, 7.0));
        let c = parse(
            &[
                ("host", "http://r/"),
                ("queueName", "q"),
                ("publishRate", "3"),
            ],
            &[],
        );
        assert_eq!((c.mode, c.value), (Mode::MessageRate, 3.0));
    }

    #[test]
    fn tls_parameters() {
        let ca = test_pem::CERT;
        let c = parse(
            &[("host", "https://r:15671/"), ("queueName", "q")],
            &[
                ("tls", "enable"),
                ("ca", ca),
                ("cert", ca),
                ("key", test_pem::KEY),
            ],
        );
        let tls = &http(&c).0.tls;
        assert_eq!(tls.ca.as_deref(), Some(ca));
        assert!(tls.cert.is_some() && tls.key.is_some() && !tls.unsafe_ssl);
        http_client(tls, DEFAULT_TIMEOUT).expect("a client with a CA and a client certificate");
        http_client(
            &ClientTls {
                unsafe_ssl: true,
                ..Default::default()
            },
            DEFAULT_TIMEOUT,
        )
        .expect("a client that verifies nothing");
        // `tls: disable` ignores the rest, as KEDA does.
        let c = parse(
            &[("host", "https://r/"), ("queueName", "q")],
            &[("tls", "disable"), ("ca", "junk")],
        );
        assert!(http(&c).0.tls.ca.is_none());

        // AMQP: TLS is on for amqps:// (with the system's roots when no CA is given), off for
        // amqp:// whatever `tls` says, as the scheme decides for https.
        let amqp_tls = |host: &str, auth: &[(&str, &str)]| match parse(
            &[("host", host), ("queueName", "q")],
            auth,
        )
        .endpoint
        {
            Endpoint::Amqp(key) => key.tls,
            Endpoint::Http { .. } => panic!("an AMQP endpoint"),
        };
        let tls = amqp_tls(
            "amqps://r/",
            &[
                ("tls", "enable"),
                ("ca", ca),
                ("cert", ca),
                ("key", test_pem::KEY),
            ],
        )
        .expect("TLS");
        assert_eq!(tls.ca.as_deref(), Some(ca));
        assert!(tls.cert.is_some() && tls.key.is_some());
        // keyPassword opens an encrypted PKCS#8 key once, at parse time.
        let tls = amqp_tls(
            "amqps://r/",
            &[
                ("tls", "enable"),
                ("cert", ca),
                ("key", test_pem::ENCRYPTED_KEY),
                ("keyPassword", test_pem::KEY_PASSWORD),
            ],
        )
        .expect("TLS");
        assert_eq!(
            tls.key
                .as_deref()
                .map(crate::tls::pem_private_key)
                .map(|k| k.is_ok()),
            Some(true)
        );
        assert!(amqp_tls("amqps://r/", &[]) == Some(ClientTls::default()));
        // unsafeSsl over amqps, with or without `tls: enable`.
        let unsafe_ssl = |auth: &[(&str, &str)]| match parse(
            &[
                ("host", "amqps://r/"),
                ("queueName", "q"),
                ("unsafeSsl", "true"),
            ],
            auth,
        )
        .endpoint
        {
            Endpoint::Amqp(key) => key.tls.is_some_and(|tls| tls.unsafe_ssl),
            Endpoint::Http { .. } => panic!("an AMQP endpoint"),
        };
        assert!(unsafe_ssl(&[]) && unsafe_ssl(&[("tls", "enable")]));
        assert!(amqp_tls("amqp://r/", &[("tls", "enable"), ("ca", ca)]).is_none());
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        /// (metadata, auth parameters, key at fault, problem)
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static [(&'static str, &'static str)],
            &'static str,
            &'static str,
        );
        const H: (&str, &str) = ("host", "amqp://u:hunter2@r/");
        const W: (&str, &str) = ("host", "http://u:hunter2@r:15672/");
        const Q: (&str, &str) = ("queueName", "q");
        let only_http =
            "needs the http protocol (the management API); AMQP reads one queue's ready messages";
        let cases: Vec<Case> = vec![
            (
                &[Q],
                &[],
                "host",
                "required; set metadata \"host\" or authentication parameter \"host\" or metadata \"hostFromEnv\"",
            ),
            (
                &[H],
                &[],
                "queueName",
                "required; set metadata \"queueName\"",
            ),
            (
                &[Q, ("host", "redis://u:hunter2@r")],
                &[],
                "host",
                "expected a URL such as amqp://user:password@host:5672/vhost or http://host:15672/vhost; the scheme must be amqp, amqps, http or https",
            ),
            (
                &[Q, ("host", "rabbit:5672")],
                &[],
                "host",
                "expected a URL such as amqp://user:password@host:5672/vhost or http://host:15672/vhost; the scheme must be amqp, amqps, http or https",
            ),
            (
                &[Q, H, ("protocol", "stomp")],
                &[],
                "protocol",
                "expected one of auto, amqp, http, got \"stomp\"",
            ),
            (
                &[Q, H, ("protocol", "http")],
                &[],
                "protocol",
                "http needs an http:// or https:// host URL",
            ),
            (
                &[Q, W, ("protocol", "amqp")],
                &[],
                "protocol",
                "amqp needs an amqp:// host URL",
            ),
            (
                &[Q, H, ("mode", "Length")],
                &[],
                "mode",
                "expected one of QueueLength, MessageRate, DeliverGetRate, PublishedToDeliveredRatio, ExpectedQueueConsumptionTime, got \"Length\"",
            ),
            (
                &[Q, H, ("value", "4")],
                &[],
                "mode",
                "required with value: one of QueueLength, MessageRate, DeliverGetRate, PublishedToDeliveredRatio, ExpectedQueueConsumptionTime",
            ),
            (
                &[Q, H, ("mode", "QueueLength")],
                &[],
                "value",
                "required with mode",
            ),
            (
                &[Q, H, ("mode", "QueueLength"), ("value", "ten")],
                &[],
                "value",
                "expected a number, got \"ten\"",
            ),
            (
                &[Q, H, ("mode", "QueueLength"), ("value", "0")],
                &[],
                "value",
                "expected a number above 0",
            ),
            (
                &[Q, H, ("mode", "QueueLength"), ("value", "-3")],
                &[],
                "value",
                "expected a finite number >= 0, got -3",
            ),
            (
                &[Q, H, ("activationValue", "x")],
                &[],
                "activationValue",
                "expected a number, got \"x\"",
            ),
            (
                &[
                    Q,
                    H,
                    ("queueLength", "5"),
                    ("mode", "QueueLength"),
                    ("value", "5"),
                ],
                &[],
                "queueLength",
                "is deprecated and cannot be combined with mode or value; use mode and value only",
            ),
            (
                &[Q, W, ("queueLength", "5"), ("publishRate", "5")],
                &[],
                "publishRate",
                "cannot be combined with queueLength; use mode and value",
            ),
            (
                &[Q, H, ("mode", "MessageRate"), ("value", "5")],
                &[],
                "mode",
                "MessageRate needs the http protocol (the management API); AMQP reads one queue's ready messages",
            ),
            (
                &[
                    Q,
                    H,
                    ("mode", "ExpectedQueueConsumptionTime"),
                    ("value", "5"),
                ],
                &[],
                "mode",
                "ExpectedQueueConsumptionTime needs the http protocol (the management API); AMQP reads one queue's ready messages",
            ),
            (&[Q, H, ("useRegex", "true")], &[], "useRegex", only_http),
            (
                &[Q, H, ("excludeUnacknowledged", "true")],
                &[],
                "excludeUnacknowledged",
                only_http,
            ),
            (
                &[Q, W, ("useRegex", "yes")],
                &[],
                "useRegex",
                "expected true or false",
            ),
            (
                &[Q, W, ("pageSize", "0")],
                &[],
                "pageSize",
                "expected a whole number >= 1",
            ),
            (
                &[Q, W, ("pageSize", "1.5")],
                &[],
                "pageSize",
                "expected a whole number, got \"1.5\"",
            ),
            (
                &[Q, W, ("operation", "min")],
                &[],
                "operation",
                "expected one of sum, avg, max, got \"min\"",
            ),
            (
                &[Q, W, ("timeout", "0")],
                &[],
                "timeout",
                "expected a duration above 0 (\"5s\", \"1m30s\") or a whole number of milliseconds, got \"0\"",
            ),
            (
                &[Q, W, ("timeout", "3 s")],
                &[],
                "timeout",
                "expected a duration above 0 (\"5s\", \"1m30s\") or a whole number of milliseconds, got \"3 s\"",
            ),
            (
                &[Q, W],
                &[("username", "u")],
                "password",
                "required when username is set",
            ),
            (
                &[Q, W],
                &[("password", "hunter2")],
                "username",
                "required when password is set",
            ),
            (
                &[Q, W],
                &[("tls", "on")],
                "tls",
                "expected enable or disable",
            ),
            (
                &[Q, W],
                &[("tls", "enable"), ("ca", "hunter2")],
                "ca",
                "expected PEM certificates, found none",
            ),
            (
                &[Q, W],
                &[("tls", "enable"), ("cert", test_pem::CERT)],
                "key",
                "required when cert is set",
            ),
            (
                &[Q, W],
                &[
                    ("tls", "enable"),
                    ("cert", test_pem::CERT),
                    ("key", "hunter2"),
                ],
                "key",
                "expected an unencrypted PEM private key",
            ),
            (
                &[Q, W],
                &[
                    ("tls", "enable"),
                    ("cert", test_pem::CERT),
                    ("key", test_pem::ENCRYPTED_KEY),
                    ("keyPassword", "hunter2"),
                ],
                "keyPassword",
                "expected an encrypted PKCS#8 PEM key (BEGIN ENCRYPTED PRIVATE KEY) that keyPassword decrypts",
            ),
            (
                &[Q, ("hostFromEnv", "NOPE")],
                &[],
                "hostFromEnv",
                "environment variable \"NOPE\" is not set in the scale target's container",
            ),
        ];
        for (meta, auth, key, problem) in cases {
            let err = RabbitMqConfig::parse(&trigger(meta, auth))
                .err()
                .unwrap_or_else(|| panic!("{meta:?} {auth:?} was accepted"));
            assert_eq!(
                (err.key.as_str(), err.problem.as_str()),
                (key, problem),
                "{meta:?} {auth:?}"
            );
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let mut t = trigger(&[Q, H], &[]);
        t.metric_type = Some("Utilization".into());
        let err = RabbitMqConfig::parse(&t).expect_err("refused");
        assert_eq!(err.key, "metricType");
    }

    #[test]
    fn debug_output_hides_credentials() {
        let c = parse(
            &[("host", "http://u:hunter2@r:15672/"), ("queueName", "q")],
            &[("tls", "enable")],
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("rabbitmq http://r:15672"), "{shown}");
    }

    #[test]
    fn urls_encode_the_vhost_and_queue() {
        assert_eq!(
            queue_url("http://r:15672", "/", "orders"),
            "http://r:15672/api/queues/%2F/orders"
        );
        assert_eq!(
            queue_url("http://r/prefix", "team a", "jobs/high#1"),
            "http://r/prefix/api/queues/team%20a/jobs%2Fhigh%231"
        );
        assert_eq!(
            regex_url("http://r:15672", "/", "^jobs-.*$", 50),
            "http://r:15672/api/queues/%2F?page=1&use_regex=true&pagination=true&name=%5Ejobs-.%2A%24&page_size=50"
        );
        assert_eq!(query_escape("a b/c"), "a+b%2Fc");
        assert_eq!(percent_decode("%2f%zz%41"), "/%zzA");
        assert_eq!(percent_decode("%C3%A9%ff%4"), "\u{e9}\u{fffd}%4");
    }

    #[test]
    fn only_unreserved_characters_stay_unencoded() {
        for c in (0u8..=127).map(char::from).chain(['\u{e9}', '\u{1f600}']) {
            let expected = if c.is_ascii_alphanumeric() || "-_.~".contains(c) {
                c.to_string()
            } else {
                c.to_string().bytes().map(|b| format!("%{b:02X}")).collect()
            };
            assert_eq!(percent_encode(&c.to_string()), expected, "{c:?}");
            assert_eq!(percent_decode(&expected), c.to_string(), "{c:?}");
        }
    }

    #[test]
    fn host_urls_split_into_parts() {
        let u = parse_host_url("http://u:p@h:15672/a/b/%2F").expect("parses");
        assert_eq!((u.prefix.as_str(), u.vhost.as_str()), ("/a/b", "/"));
        let u = parse_host_url("amqp://h").expect("parses");
        assert_eq!((u.port, u.vhost.as_str(), u.username), (5672, "/", None));
        let u = parse_host_url("amqp://[::1]:5673/v").expect("parses");
        assert_eq!(
            (u.host.as_str(), u.port, u.vhost.as_str()),
            ("::1", 5673, "v")
        );
        assert_eq!(authority(&u.host, u.port), "[::1]:5673");
        let err = parse_host_url("http://u:hunter2@:80/").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn values_from_the_management_api() {
        let q = json!({"name": "q", "messages": 12, "messages_ready": 5,
            "message_stats": {"publish_details": {"rate": 2.5}, "deliver_get_details": {"rate": 0.5}}});
        let stats = |messages, publish_rate, deliver_get_rate| QueueStats {
            messages,
            publish_rate,
            deliver_get_rate,
        };
        // (queue, excludeUnacknowledged, expected)
        let cases: [(&Value, bool, Result<QueueStats, &str>); 6] = [
            (&q, false, Ok(stats(12.0, 2.5, 0.5))),
            (&q, true, Ok(stats(5.0, 2.5, 0.5))),
            (&json!({"messages": 0}), false, Ok(stats(0.0, 0.0, 0.0))),
            // No figures at all (a queue the management plugin has not sampled yet): 0, as
            // KEDA decodes it.
            (&json!({}), false, Ok(stats(0.0, 0.0, 0.0))),
            (&json!({"messages": null}), false, Ok(stats(0.0, 0.0, 0.0))),
            (
                &json!({"messages_ready": "x"}),
                true,
                Err("the management API reported \"/messages_ready\" as \"x\", not a count"),
            ),
        ];
        for (queue, exclude, expected) in cases {
            assert_eq!(
                queue_stats(queue, exclude),
                expected.map_err(String::from),
                "{queue} {exclude}"
            );
        }
    }

    #[test]
    fn each_mode_measures_as_keda_does() {
        let stats = |messages, publish_rate, deliver_get_rate| QueueStats {
            messages,
            publish_rate,
            deliver_get_rate,
        };
        // (mode, figures, activationValue, expected value and activity)
        let cases = [
            (Mode::QueueLength, stats(12.0, 0.0, 0.0), 0.0, (12.0, true)),
            (Mode::QueueLength, stats(3.0, 0.0, 0.0), 3.0, (3.0, false)),
            // A backlog with no new publishes keeps a MessageRate trigger active.
            (Mode::MessageRate, stats(5000.0, 0.0, 0.0), 0.0, (0.0, true)),
            (Mode::MessageRate, stats(0.0, 2.5, 0.0), 1.0, (2.5, true)),
            (Mode::MessageRate, stats(1.0, 1.0, 0.0), 1.0, (1.0, false)),
            (Mode::DeliverGetRate, stats(9.0, 0.0, 4.0), 0.0, (4.0, true)),
            (
                Mode::DeliverGetRate,
                stats(9.0, 0.0, 0.0),
                0.0,
                (0.0, false),
            ),
            (
                Mode::PublishedToDeliveredRatio,
                stats(0.0, 6.0, 2.0),
                1.0,
                (3.0, true),
            ),
            // Published, nothing delivered: active at the activation value.
            (
                Mode::PublishedToDeliveredRatio,
                stats(0.0, 6.0, 0.0),
                2.0,
                (2.0, true),
            ),
            (
                Mode::PublishedToDeliveredRatio,
                stats(50.0, 0.0, 3.0),
                0.0,
                (0.0, false),
            ),
            // (publish - deliver) / deliver + messages / deliver = (2 - 4) / 4 + 10 / 4 = 2.
            (
                Mode::ExpectedQueueConsumptionTime,
                stats(10.0, 2.0, 4.0),
                1.0,
                (2.0, true),
            ),
            (
                Mode::ExpectedQueueConsumptionTime,
                stats(10.0, 0.0, 0.0),
                30.0,
                (30.0, true),
            ),
            (
                Mode::ExpectedQueueConsumptionTime,
                stats(0.0, 0.0, 0.0),
                30.0,
                (30.0, false),
            ),
        ];
        for (mode, figures, activation, expected) in cases {
            assert_eq!(
                figures.measure(mode, activation),
                expected,
                "{mode:?} {figures:?} activation {activation}"
            );
        }
    }

    #[test]
    fn regex_results_are_combined() {
        let page = json!({"page_count": 1, "items": [
            {"name": "a", "messages": 3, "messages_ready": 1, "message_stats": {"publish_details": {"rate": 1.0}}},
            {"name": "b", "messages": 8, "messages_ready": 4},
        ]});
        // (excludeUnacknowledged, operation, messages, publish rate)
        let cases = [
            (false, Operation::Sum, 11.0, 1.0),
            // Counts average to whole counts, as in KEDA; rates do not.
            (false, Operation::Avg, 5.0, 0.5),
            (false, Operation::Max, 8.0, 1.0),
            (true, Operation::Sum, 5.0, 1.0),
        ];
        for (exclude, op, messages, publish_rate) in cases {
            assert_eq!(
                regex_stats(&page, exclude, op),
                Ok(QueueStats {
                    messages,
                    publish_rate,
                    deliver_get_rate: 0.0
                }),
                "{exclude} {op:?}"
            );
        }
        let empty = json!({"page_count": 0, "items": []});
        assert_eq!(
            regex_stats(&empty, false, Operation::Max),
            Ok(QueueStats::default())
        );
        let more = json!({"page_count": 3, "items": []});
        assert!(
            regex_stats(&more, false, Operation::Sum)
                .unwrap_err()
                .contains("more queues than one page holds (3 pages)")
        );
        let bad = json!({"items": [{"name": "c", "messages": -1}]});
        assert_eq!(
            regex_stats(&bad, false, Operation::Sum),
            Err("queue \"c\": the management API reported \"/messages\" as -1, not a count".into())
        );
        assert!(regex_stats(&json!([]), false, Operation::Sum).is_err());
        assert_eq!(aggregate(&[], Operation::Avg), 0.0);
    }

    #[test]
    fn registered_scalers_serve_one_metric() {
        let scaler = Registry::with_builtins()
            .build(&trigger(
                &[("host", "amqp://r"), ("queueName", "jobs.high")],
                &[],
            ))
            .expect("builds");
        assert_eq!(
            scaler.metric_specs(),
            vec![MetricSpec::External {
                name: "s1-rabbitmq-jobs-high".into(),
                target: 20.0,
                target_type: MetricTargetType::AverageValue,
            }]
        );
    }

    #[tokio::test]
    async fn an_unknown_metric_is_refused_without_a_connection() {
        let scaler = Registry::with_builtins()
            .build(&trigger(
                &[("host", "amqp://127.0.0.1:1"), ("queueName", "q")],
                &[],
            ))
            .expect("builds");
        let err = scaler
            .metrics_and_activity("s1-rabbitmq-other")
            .await
            .unwrap_err();
        assert!(matches!(err, ScalerError::UnknownMetric(_)), "{err}");
    }
}
