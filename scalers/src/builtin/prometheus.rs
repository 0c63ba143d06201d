//! `prometheus`: the value of one PromQL instant query, read as KEDA's `prometheus` scaler
//! reads it.
//!
//! A poll is one GET of `<serverAddress>/api/v1/query` with the query, the evaluation time
//! (now, as KEDA sends it), the optional `namespace` and the `queryParameters`, carrying the
//! `customHeaders` and the trigger's credentials. Every trigger with the same TLS settings
//! (`unsafeSsl` and the `ca`/`cert`/`key` auth parameters) shares one `reqwest::Client` through
//! a [`SharedPool`]; the client keeps its own keep-alive connections per server, so 200
//! triggers on one Prometheus hold a handful of connections. Credentials are per request
//! headers, never part of the pool key. The answer is read by the pure [`read_answer`].

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::metrics_api::DEFAULT_TIMEOUT;
use crate::error::{ConfigError, ScalerError};
use crate::http::{self, pem_certs, sensitive_header};
use crate::metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
use crate::pool::{Lease, SharedPool};
use crate::registry::Registry;
use crate::scaler::Scaler;
use crate::tls::{ClientTls, pem_private_key};
use crate::trigger::{MetricTargetType, Source, Trigger};

const META: &[Source] = &[Source::Metadata];
const AUTH_ONLY: &[Source] = &[Source::Auth];
/// Where KEDA reads `authModes` (or `authMode`).
const METADATA_OR_AUTH: &[Source] = &[Source::Metadata, Source::Auth];

/// Longest piece of Prometheus's own error text quoted in an error.
const MAX_QUOTED_ERROR: usize = 300;

/// The pool `prometheus` triggers share, keyed by TLS settings.
pub type HttpPool = SharedPool<ClientTls, reqwest::Client>;

/// Registers `prometheus`. Every trigger built from one registry shares that registry's pool.
pub fn register(registry: &mut Registry) {
    let pool = HttpPool::new();
    registry.register("prometheus", move |t| {
        Ok(Box::new(PrometheusScaler::new(t, &pool)?))
    });
}

/// The auth modes `authModes` may list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthMode {
    Basic,
    Bearer,
    Tls,
    Custom,
}

impl AuthMode {
    const NAMES: &'static [(&'static str, AuthMode)] = &[
        ("basic", AuthMode::Basic),
        ("bearer", AuthMode::Bearer),
        ("tls", AuthMode::Tls),
        ("custom", AuthMode::Custom),
    ];

    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("?", |(n, _)| n)
    }
}

/// What the `Authorization` header carries. Secret: no `Debug`.
#[derive(Clone, PartialEq, Eq)]
enum Credentials {
    Basic {
        username: String,
        password: Option<String>,
    },
    Bearer(String),
}

/// Parsed `prometheus` trigger. Holds credentials: `Debug` shows none.
#[derive(Clone)]
struct PrometheusConfig {
    /// `<serverAddress>/api/v1/query`, without user info or query.
    endpoint: reqwest::Url,
    /// How errors name the server: scheme, host, port and path only.
    source_name: String,
    query: String,
    namespace: Option<String>,
    /// `queryParameters`, in the order written (a repeated key keeps its last value).
    query_parameters: Vec<(String, String)>,
    threshold: f64,
    activation_threshold: f64,
    ignore_null_values: bool,
    metric_type: MetricTargetType,
    metric_name: String,
    timeout: Duration,
    modes: Vec<AuthMode>,
    tls: ClientTls,
    /// `customHeaders` and the `custom` auth header, all marked sensitive.
    headers: HeaderMap,
    credentials: Option<Credentials>,
    /// Every secret, so an error message that somehow quotes one can be scrubbed.
    secrets: Vec<String>,
}

impl fmt::Debug for PrometheusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self
            .query_parameters
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        let headers: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("PrometheusConfig")
            .field("source_name", &self.source_name)
            .field("query", &self.query)
            .field("namespace", &self.namespace)
            .field("query_parameters", &keys)
            .field("headers", &headers)
            .field("threshold", &self.threshold)
            .field("activation_threshold", &self.activation_threshold)
            .field("ignore_null_values", &self.ignore_null_values)
            .field("metric_type", &self.metric_type)
            .field("metric_name", &self.metric_name)
            .field("timeout", &self.timeout)
            .field(
                "modes",
                &self.modes.iter().map(|m| m.name()).collect::<Vec<_>>(),
            )
            .field("unsafe_ssl", &self.tls.unsafe_ssl)
            .finish_non_exhaustive()
    }
}

/// `key`'s comma-separated `k=v` pairs, as KEDA reads `queryParameters` and `customHeaders`:
/// keys and values trimmed, empty entries skipped, a repeated key keeping its last value. The
/// text is never quoted in errors (a header value may be a credential).
fn parse_pairs(t: &Trigger, key: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(found) = t.lookup(key, META)? else {
        return Ok(Vec::new());
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for entry in found
        .value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (k, v) = entry
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| t.error(key, "expected comma-separated key=value pairs"))?;
        match pairs.iter_mut().find(|(existing, _)| existing == k) {
            Some(pair) => pair.1 = v.to_string(),
            None => pairs.push((k.to_string(), v.to_string())),
        }
    }
    Ok(pairs)
}

fn parse_modes(t: &Trigger) -> Result<Vec<AuthMode>, ConfigError> {
    let (key, found) = match t.lookup("authModes", METADATA_OR_AUTH)? {
        Some(found) => ("authModes", found),
        None => match t.lookup("authMode", METADATA_OR_AUTH)? {
            Some(found) => ("authMode", found),
            None => return Ok(Vec::new()),
        },
    };
    let mut modes = Vec::new();
    for word in found
        .value
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        if word.eq_ignore_ascii_case("oauth") {
            return Err(t.error(key, "the oauth auth mode is not implemented in ebb yet"));
        }
        if word.eq_ignore_ascii_case("apiKey") {
            return Err(t.error(
                key,
                "prometheus triggers send no API key (KEDA accepts apiKey here but never sends it); use custom with customAuthHeader and customAuthValue",
            ));
        }
        let mode = AuthMode::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(word))
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                let got = if found.source == Source::Metadata && word.len() <= 32 {
                    format!(", got {word:?}")
                } else {
                    String::new()
                };
                let names: Vec<&str> = AuthMode::NAMES.iter().map(|(n, _)| *n).collect();
                t.error(
                    key,
                    format!(
                        "expected a comma-separated list of {}{got}",
                        names.join(", ")
                    ),
                )
            })?;
        if !modes.contains(&mode) {
            modes.push(mode);
        }
    }
    if modes.contains(&AuthMode::Basic) && modes.contains(&AuthMode::Bearer) {
        return Err(t.error(
            key,
            "basic and bearer cannot be combined: both set the Authorization header",
        ));
    }
    Ok(modes)
}

/// Refuses the cloud credentials KEDA uses when no `authModes` is set (AWS SigV4 for Amazon
/// Managed Prometheus, a GCP service account for Google Managed Prometheus). Azure's needs a
/// `podIdentity`, which the operator refuses before a trigger is built.
fn refuse_cloud_auth(t: &Trigger) -> Result<(), ConfigError> {
    const AWS: &str =
        "AWS SigV4 signing (Amazon Managed Service for Prometheus) is not implemented in ebb";
    const GCP: &str = "GCP service account credentials (Google Managed Service for Prometheus) are not implemented in ebb";
    for key in ["awsRoleArn", "awsAccessKeyID", "awsAccessKeyId"] {
        if t.auth_params.get(key).is_some_and(|v| !v.trim().is_empty()) {
            return Err(t.error(key, AWS));
        }
    }
    for key in ["awsAccessKeyID", "awsAccessKeyIDFromEnv"] {
        if t.metadata.get(key).is_some_and(|v| !v.trim().is_empty()) {
            return Err(t.error(key, AWS));
        }
    }
    if t.metadata
        .get("identityOwner")
        .is_some_and(|v| v.trim() == "operator")
    {
        return Err(t.error("identityOwner", AWS));
    }
    if t.auth_params
        .get("GoogleApplicationCredentials")
        .is_some_and(|v| !v.trim().is_empty())
    {
        return Err(t.error("GoogleApplicationCredentials", GCP));
    }
    for key in ["credentialsFromEnv", "credentialsFromEnvFile"] {
        if t.metadata.get(key).is_some_and(|v| !v.trim().is_empty()) {
            return Err(t.error(key, GCP));
        }
    }
    Ok(())
}

fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

impl PrometheusConfig {
    fn parse(t: &Trigger) -> Result<Self, ConfigError> {
        let address = t.required("serverAddress", META)?.value;
        let mut server = reqwest::Url::parse(address.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| t.error("serverAddress", "expected an http or https URL"))?;
        if server.query().is_some() || server.fragment().is_some() {
            return Err(t.error(
                "serverAddress",
                "expected a URL without a query or fragment (query parameters go in queryParameters)",
            ));
        }
        let query = t.required("query", META)?.value.trim().to_string();
        let threshold: f64 = t.parse_required("threshold", META, "a number")?;
        if !threshold.is_finite() || threshold <= 0.0 {
            return Err(t.error("threshold", "expected a number above 0"));
        }
        let activation_threshold = t.threshold_or("activationThreshold", 0.0)?;
        let namespace = t
            .lookup("namespace", META)?
            .map(|f| f.value.trim().to_string());
        let query_parameters = parse_pairs(t, "queryParameters")?;
        let mut headers = HeaderMap::new();
        for (name, value) in parse_pairs(t, "customHeaders")? {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                t.error(
                    "customHeaders",
                    format!("{name:?} is not an HTTP header name"),
                )
            })?;
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                t.error(
                    "customHeaders",
                    format!(
                        "the value of {name} contains characters not allowed in an HTTP header"
                    ),
                )
            })?;
            value.set_sensitive(true);
            headers.append(header, value);
        }
        let ignore_null_values = t.bool_or("ignoreNullValues", META, true)?;
        let timeout = t.duration_or("timeout", META, DEFAULT_TIMEOUT)?;
        let metric_type = t.metric_type(
            &[MetricTargetType::AverageValue, MetricTargetType::Value],
            MetricTargetType::AverageValue,
        )?;

        let modes = parse_modes(t)?;
        if modes.is_empty() {
            refuse_cloud_auth(t)?;
        }
        let mut tls = ClientTls {
            unsafe_ssl: t.bool_or("unsafeSsl", META, false)?,
            ..ClientTls::default()
        };
        // A CA is trusted whatever the auth modes, as KEDA's documentation allows.
        if let Some(ca) = t.lookup("ca", AUTH_ONLY)? {
            pem_certs(t, "ca", &ca.value)?;
            tls.ca = Some(ca.value);
        }
        let mut secrets = Vec::new();
        let (mut basic, mut bearer, mut custom) = (None, None, None);
        for mode in &modes {
            match mode {
                AuthMode::Basic => {
                    let username = t.required("username", AUTH_ONLY)?.value;
                    let password = t.lookup("password", AUTH_ONLY)?.map(|f| f.value);
                    secrets.extend(password.clone());
                    basic = Some(Credentials::Basic { username, password });
                }
                AuthMode::Bearer => {
                    let token = match t.lookup("bearerToken", AUTH_ONLY)? {
                        Some(found) => found.value,
                        None => t
                            .lookup("token", AUTH_ONLY)?
                            .ok_or_else(|| {
                                t.error(
                                    "bearerToken",
                                    "required; set authentication parameter \"bearerToken\" (or \"token\")",
                                )
                            })?
                            .value,
                    };
                    // Checked now so a bad token is a config error, not a failing poll.
                    sensitive_header(t, "bearerToken", &format!("Bearer {token}"))?;
                    secrets.push(token.clone());
                    bearer = Some(Credentials::Bearer(token));
                }
                AuthMode::Tls => {
                    let cert = t.required("cert", AUTH_ONLY)?.value;
                    let key = t.required("key", AUTH_ONLY)?.value;
                    pem_certs(t, "cert", &cert)?;
                    if pem_private_key(&key).is_err() {
                        return Err(t.error("key", "expected a PEM private key"));
                    }
                    secrets.push(key.clone());
                    tls.cert = Some(cert);
                    tls.key = Some(key);
                }
                AuthMode::Custom => {
                    let name = t.required("customAuthHeader", AUTH_ONLY)?.value;
                    let value = t.required("customAuthValue", AUTH_ONLY)?.value;
                    let name = HeaderName::from_bytes(name.trim().as_bytes())
                        .map_err(|_| t.error("customAuthHeader", "expected an HTTP header name"))?;
                    let header = sensitive_header(t, "customAuthValue", &value)?;
                    secrets.push(value);
                    custom = Some((name, header));
                }
            }
        }
        // As in KEDA, one kind of credentials goes out: bearer, else basic, else custom; they
        // replace a custom header of the same name.
        let mut credentials = bearer.or(basic);
        if credentials.is_some() {
            headers.remove(AUTHORIZATION);
        } else if let Some((name, value)) = custom {
            headers.insert(name, value);
        }
        // User info in the address is basic auth unless an Authorization header is already
        // set (Go's HTTP client does the same); it is never part of the URL sent or shown.
        if !server.username().is_empty() || server.password().is_some() {
            if let Some(password) = server.password() {
                secrets.push(password.to_string());
                secrets.push(percent_decoded(password));
            }
            if credentials.is_none() && !headers.contains_key(AUTHORIZATION) {
                credentials = Some(Credentials::Basic {
                    username: percent_decoded(server.username()),
                    password: server.password().map(percent_decoded),
                });
            }
            // Cannot fail: the URL is http(s) with a host.
            let _ = server.set_username("");
            let _ = server.set_password(None);
        }
        let path = format!("{}/api/v1/query", server.path().trim_end_matches('/'));
        server.set_path(&path);
        let port = server.port().map(|p| format!(":{p}")).unwrap_or_default();
        let source_name = format!(
            "prometheus {}://{}{port}{}",
            server.scheme(),
            server.host_str().unwrap_or_default(),
            server.path()
        );
        // Secrets too short to be told apart from ordinary text would scrub too much.
        secrets.retain(|s| s.len() >= 4);

        Ok(Self {
            endpoint: server,
            source_name,
            query,
            namespace,
            query_parameters,
            threshold,
            activation_threshold,
            ignore_null_values,
            metric_type,
            // KEDA names every prometheus metric the same; the index tells them apart.
            metric_name: metric_name(t.index, "prometheus"),
            timeout,
            modes,
            tls,
            headers,
            credentials,
            secrets,
        })
    }

    /// The URL of one poll evaluated at `now`: `query`, `time` (RFC 3339, as KEDA sends it),
    /// `namespace` and the `queryParameters`, in that order.
    fn query_url(&self, now: chrono::DateTime<chrono::Utc>) -> reqwest::Url {
        let mut url = self.endpoint.clone();
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("query", &self.query);
            pairs.append_pair(
                "time",
                &now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
            if let Some(namespace) = &self.namespace {
                pairs.append_pair("namespace", namespace);
            }
            for (key, value) in &self.query_parameters {
                pairs.append_pair(key, value);
            }
        }
        url
    }

    /// `message` with any credential of this trigger replaced.
    fn scrub(&self, message: String) -> String {
        self.secrets.iter().fold(message, |m, secret| {
            m.replace(secret.as_str(), "<redacted>")
        })
    }

    fn source_error(&self, message: String) -> ScalerError {
        ScalerError::Source {
            source_name: self.source_name.clone(),
            message: self.scrub(message),
        }
    }
}

/// `text` on one line, at most [`MAX_QUOTED_ERROR`] characters.
fn one_line(text: &str) -> String {
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > MAX_QUOTED_ERROR {
        let cut: String = text.chars().take(MAX_QUOTED_ERROR).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// Prometheus's `errorType: error` from an error answer, if the body is one.
fn api_error(json: &Value) -> Option<String> {
    let error = json.get("error").and_then(Value::as_str)?;
    Some(match json.get("errorType").and_then(Value::as_str) {
        Some(kind) if !kind.is_empty() => one_line(&format!("{kind}: {error}")),
        _ => one_line(error),
    })
}

/// What an empty answer (no series, no value, NaN or an infinity) reads as: 0 when
/// `ignoreNullValues` is true (KEDA's default), an error otherwise.
fn null_value(ignore_null_values: bool, what: String) -> Result<f64, String> {
    if ignore_null_values {
        Ok(0.0)
    } else {
        Err(format!(
            "{what}; ignoreNullValues is false, so this is an error rather than 0"
        ))
    }
}

/// The value of a Prometheus query answer (`/api/v1/query` JSON), as KEDA reads it.
///
/// The result must be an instant vector of at most one series, or a scalar. No series, a
/// sample without a value, NaN and infinities follow `ignoreNullValues` (0 or an error); two or
/// more series are an error, as is an answer whose `status` is not `success` (with
/// Prometheus's own error text). Negative values are returned as they are.
pub fn read_answer(body: &[u8], ignore_null_values: bool) -> Result<f64, String> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    match json.get("status").map(|s| s.as_str()) {
        None | Some(Some("success")) => {}
        Some(status) => {
            return Err(match api_error(&json) {
                Some(error) => format!("the query failed: {error}"),
                None => format!(
                    "the answer's status is {:?}, not \"success\"",
                    one_line(status.unwrap_or("?"))
                ),
            });
        }
    }
    let data = json
        .get("data")
        .filter(|d| d.is_object())
        .ok_or("the answer has no data object")?;
    let result = data.get("result").unwrap_or(&Value::Null);
    let sample = match data.get("resultType").and_then(Value::as_str) {
        // KEDA reads every answer as a vector; so does ebb when resultType is missing.
        None | Some("vector") => {
            let series = result
                .as_array()
                .ok_or("the answer's result is not a list of series")?;
            match series.as_slice() {
                [] => {
                    return null_value(
                        ignore_null_values,
                        "the query returned no series (the target may be lost)".into(),
                    );
                }
                [one] => one.get("value").unwrap_or(&Value::Null),
                more => {
                    return Err(format!(
                        "the query returned {} series; it must return one (aggregate them, e.g. with sum(...))",
                        more.len()
                    ));
                }
            }
        }
        Some("scalar") => result,
        Some("matrix") => {
            return Err(
                "the query returned a range vector (matrix); it must return an instant vector or a scalar"
                    .into(),
            );
        }
        Some(other) => {
            return Err(format!(
                "the query returned a {} result; it must return an instant vector or a scalar",
                one_line(other)
            ));
        }
    };
    let pair: &[Value] = match sample {
        Value::Null => &[],
        Value::Array(pair) => pair,
        _ => return Err("the sample is not a [timestamp, value] pair".into()),
    };
    let value = match pair {
        [] => return null_value(ignore_null_values, "the sample has no value".into()),
        [_] => return Err("the sample has a timestamp but no value".into()),
        [_, value, ..] => value,
    };
    let (number, text) = match value {
        Value::String(text) => (text.parse::<f64>().ok(), text.clone()),
        Value::Number(n) => (n.as_f64(), n.to_string()),
        _ => return Err("the sample's value is not a number".into()),
    };
    let Some(number) = number else {
        let shown: String = text.chars().take(64).collect();
        return Err(format!("the sample's value {shown:?} is not a number"));
    };
    if !number.is_finite() {
        return null_value(ignore_null_values, format!("the query returned {text}"));
    }
    Ok(number)
}

/// A client for `tls`. Redirects are not followed: a custom auth header must not reach
/// another server, and Prometheus's query API does not redirect.
fn build_client(tls: &ClientTls) -> Result<reqwest::Client, String> {
    http::client(tls, |builder| {
        builder.redirect(reqwest::redirect::Policy::none())
    })
}

/// A `prometheus` trigger.
pub struct PrometheusScaler {
    config: PrometheusConfig,
    lease: Lease<ClientTls, reqwest::Client>,
}

impl fmt::Debug for PrometheusScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusScaler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PrometheusScaler {
    /// Parses the trigger and takes a lease on the HTTP client for its TLS settings.
    pub fn new(trigger: &Trigger, pool: &HttpPool) -> Result<Self, ConfigError> {
        let config = PrometheusConfig::parse(trigger)?;
        Ok(Self {
            lease: pool.lease(config.tls.clone()),
            config,
        })
    }

    /// One GET: the status and at most [`MAX_BODY_BYTES`] of the body.
    async fn fetch(
        &self,
        client: &reqwest::Client,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), ScalerError> {
        let c = &self.config;
        let http_error = |e: reqwest::Error| c.source_error(http::error_message(e));
        let mut request = client
            .get(c.query_url(chrono::Utc::now()))
            .headers(c.headers.clone());
        match &c.credentials {
            Some(Credentials::Basic { username, password }) => {
                request = request.basic_auth(username, password.as_ref());
            }
            Some(Credentials::Bearer(token)) => request = request.bearer_auth(token),
            None => {}
        }
        let response = request.send().await.map_err(http_error)?;
        let status = response.status();
        let body = http::read_body(response)
            .await
            .map_err(|e| c.source_error(e))?;
        Ok((status, body))
    }

    async fn value(&self) -> Result<f64, ScalerError> {
        let c = &self.config;
        let tls = c.tls.clone();
        let client = self
            .lease
            .client(&c.source_name, c.timeout, || async move {
                build_client(&tls).map_err(|message| ScalerError::Source {
                    source_name: "prometheus".into(),
                    message,
                })
            })
            .await?;
        let (status, body) = tokio::time::timeout(c.timeout, self.fetch(&client))
            .await
            .map_err(|_| ScalerError::Timeout {
                source_name: c.source_name.clone(),
                timeout: c.timeout,
            })??;
        // Any 2xx is an answer, as in KEDA.
        if !status.is_success() {
            let detail = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|json| api_error(&json))
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            return Err(c.source_error(format!("answered HTTP {status}{detail}")));
        }
        read_answer(&body, c.ignore_null_values).map_err(|e| c.source_error(e))
    }
}

#[async_trait]
impl Scaler for PrometheusScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.config.metric_name.clone(),
            target: self.config.threshold,
            target_type: self.config.metric_type,
        }]
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        if metric != self.config.metric_name {
            return Err(ScalerError::UnknownMetric(metric.to_string()));
        }
        let value = self.value().await?;
        Ok(MetricsAndActivity {
            values: vec![MetricValue {
                name: self.config.metric_name.clone(),
                value,
            }],
            active: value > self.config.activation_threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use proptest::strategy::Strategy as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::tls::test_pem::{CERT, KEY};

    fn trigger(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Trigger {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Trigger {
            index: 2,
            trigger_type: "prometheus".into(),
            metadata: map(meta),
            auth_params: map(auth),
            ..Default::default()
        }
    }

    const QUERY: &str = "sum(rate(http_requests_total{deployment=\"my-deployment\"}[2m]))";

    /// The docs' minimal ScaledObject (the `<prometheus-host>` placeholder filled in).
    const BASE: &[(&str, &str)] = &[
        ("serverAddress", "http://prometheus-host:9090"),
        ("threshold", "100"),
        ("query", QUERY),
    ];

    fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut meta: Vec<_> = BASE
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .copied()
            .collect();
        meta.extend_from_slice(extra);
        meta
    }

    fn without(key: &str) -> Vec<(&'static str, &'static str)> {
        BASE.iter().filter(|(k, _)| *k != key).copied().collect()
    }

    fn parse(
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> Result<PrometheusConfig, ConfigError> {
        PrometheusConfig::parse(&trigger(meta, auth))
    }

    fn header<'a>(c: &'a PrometheusConfig, name: &str) -> Option<&'a str> {
        c.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn keda_documented_examples_parse() {
        /// (example, metadata, auth parameters, what the trigger must hold)
        type Row = (
            &'static str,
            Vec<(&'static str, &'static str)>,
            &'static [(&'static str, &'static str)],
            fn(&PrometheusConfig),
        );
        let rows: Vec<Row> = vec![
            ("the minimal ScaledObject", BASE.to_vec(), &[], |c| {
                assert_eq!(
                    c.endpoint.as_str(),
                    "http://prometheus-host:9090/api/v1/query"
                );
                assert_eq!(
                    c.source_name,
                    "prometheus http://prometheus-host:9090/api/v1/query"
                );
                assert_eq!(c.query, QUERY);
                assert_eq!((c.threshold, c.activation_threshold), (100.0, 0.0));
                assert!(c.ignore_null_values, "ignoreNullValues defaults to true");
                assert_eq!(c.timeout, DEFAULT_TIMEOUT);
                assert_eq!(c.metric_type, MetricTargetType::AverageValue);
                assert_eq!(c.metric_name, "s2-prometheus");
                assert!(c.modes.is_empty() && c.headers.is_empty());
                assert!(c.credentials.is_none() && c.namespace.is_none());
                assert!(c.tls == ClientTls::default(), "shares the plain client");
            }),
            (
                "the trigger specification, every optional field",
                with(&[
                    ("threshold", "100.50"),
                    ("activationThreshold", "5.5"),
                    ("namespace", "example-namespace"),
                    (
                        "customHeaders",
                        "X-Client-Id=cid,X-Tenant-Id=tid,X-Organization-Id=oid",
                    ),
                    ("ignoreNullValues", "false"),
                    ("queryParameters", "key-1=value-1,key-2=value-2"),
                    ("unsafeSsl", "false"),
                    ("timeout", "1000"),
                ]),
                &[],
                |c| {
                    assert_eq!((c.threshold, c.activation_threshold), (100.5, 5.5));
                    assert_eq!(c.namespace.as_deref(), Some("example-namespace"));
                    assert_eq!(header(c, "x-client-id"), Some("cid"));
                    assert_eq!(header(c, "x-tenant-id"), Some("tid"));
                    assert_eq!(header(c, "x-organization-id"), Some("oid"));
                    assert_eq!(c.headers.len(), 3);
                    assert!(!c.ignore_null_values);
                    assert_eq!(
                        c.query_parameters,
                        [
                            ("key-1".to_string(), "value-1".to_string()),
                            ("key-2".to_string(), "value-2".to_string())
                        ]
                    );
                    assert!(!c.tls.unsafe_ssl);
                    assert_eq!(c.timeout, Duration::from_millis(1000));
                },
            ),
            (
                "a VictoriaMetrics cluster address, and a human-readable timeout",
                with(&[
                    ("serverAddress", "http://vmselect:8481/select/0/prometheus/"),
                    ("timeout", "30s"),
                    ("unsafeSsl", "true"),
                ]),
                &[],
                |c| {
                    assert_eq!(
                        c.endpoint.as_str(),
                        "http://vmselect:8481/select/0/prometheus/api/v1/query"
                    );
                    assert_eq!(c.timeout, Duration::from_secs(30));
                    assert!(c.tls.unsafe_ssl);
                },
            ),
            (
                "bearer authentication with a custom CA",
                with(&[("authModes", "bearer")]),
                &[("bearerToken", "BEARER_TOKEN"), ("ca", CERT)],
                |c| {
                    assert_eq!(c.modes, [AuthMode::Bearer]);
                    assert!(c.credentials == Some(Credentials::Bearer("BEARER_TOKEN".into())));
                    assert_eq!(c.tls.ca.as_deref(), Some(CERT));
                },
            ),
            (
                "bearer authentication with KEDA's other name, token",
                with(&[("authModes", "bearer")]),
                &[("token", "tok-1234")],
                |c| assert!(c.credentials == Some(Credentials::Bearer("tok-1234".into()))),
            ),
            (
                "basic authentication",
                with(&[("authModes", "basic")]),
                &[("username", "username"), ("password", "password")],
                |c| {
                    assert!(
                        c.credentials
                            == Some(Credentials::Basic {
                                username: "username".into(),
                                password: Some("password".into())
                            })
                    );
                },
            ),
            (
                "basic authentication without a password",
                with(&[("authModes", "basic")]),
                &[("username", "apikey")],
                |c| {
                    assert!(
                        c.credentials
                            == Some(Credentials::Basic {
                                username: "apikey".into(),
                                password: None
                            })
                    );
                },
            ),
            (
                "TLS authentication",
                with(&[("authModes", "tls")]),
                &[("cert", CERT), ("key", KEY), ("ca", CERT)],
                |c| {
                    assert_eq!(c.modes, [AuthMode::Tls]);
                    assert_eq!(c.tls.cert.as_deref(), Some(CERT));
                    assert_eq!(c.tls.key.as_deref(), Some(KEY));
                    assert_eq!(c.tls.ca.as_deref(), Some(CERT));
                    assert!(c.credentials.is_none());
                },
            ),
            (
                "TLS and basic authentication",
                with(&[("authModes", "tls,basic")]),
                &[
                    ("cert", CERT),
                    ("key", KEY),
                    ("ca", CERT),
                    ("username", "username"),
                    ("password", "password"),
                ],
                |c| {
                    assert_eq!(c.modes, [AuthMode::Tls, AuthMode::Basic]);
                    assert!(c.tls.cert.is_some() && c.credentials.is_some());
                },
            ),
            (
                "custom authentication",
                with(&[("authModes", "custom")]),
                &[
                    ("customAuthHeader", "X-AUTH-TOKEN"),
                    ("customAuthValue", "auth-token"),
                ],
                |c| {
                    assert_eq!(header(c, "x-auth-token"), Some("auth-token"));
                    assert!(c.headers["x-auth-token"].is_sensitive());
                },
            ),
            (
                "authModes from the TriggerAuthentication; custom replaces a custom header",
                with(&[("customHeaders", "X-Auth-Token=old, X-Scope-OrgID=t1")]),
                &[
                    ("authModes", "custom"),
                    ("customAuthHeader", "X-Auth-Token"),
                    ("customAuthValue", "v-1234"),
                ],
                |c| {
                    assert_eq!(c.modes, [AuthMode::Custom]);
                    assert_eq!(c.headers.get_all("x-auth-token").iter().count(), 1);
                    assert_eq!(header(c, "x-auth-token"), Some("v-1234"));
                    assert_eq!(header(c, "x-scope-orgid"), Some("t1"));
                },
            ),
            (
                "bearer wins over custom, as in KEDA; an Authorization custom header gives way",
                with(&[
                    ("authModes", "bearer,custom"),
                    ("customHeaders", "Authorization=Basic eA=="),
                ]),
                &[
                    ("bearerToken", "tok-1234"),
                    ("customAuthHeader", "X-Auth"),
                    ("customAuthValue", "v-1234"),
                ],
                |c| {
                    assert!(c.credentials == Some(Credentials::Bearer("tok-1234".into())));
                    assert!(c.headers.is_empty(), "{:?}", c.headers.keys());
                },
            ),
            (
                "user info in serverAddress is basic auth, never in the URL",
                with(&[("serverAddress", "https://user:pa%20ss@prom.example/")]),
                &[],
                |c| {
                    assert_eq!(c.endpoint.as_str(), "https://prom.example/api/v1/query");
                    assert!(
                        c.credentials
                            == Some(Credentials::Basic {
                                username: "user".into(),
                                password: Some("pa ss".into())
                            })
                    );
                },
            ),
            (
                "explicit credentials win over user info",
                with(&[
                    ("serverAddress", "http://user:url-pass@prom:9090"),
                    ("authModes", "basic"),
                ]),
                &[("username", "u"), ("password", "pw-1234")],
                |c| {
                    assert_eq!(c.endpoint.as_str(), "http://prom:9090/api/v1/query");
                    assert!(
                        c.credentials
                            == Some(Credentials::Basic {
                                username: "u".into(),
                                password: Some("pw-1234".into())
                            })
                    );
                },
            ),
            (
                "cloud keys KEDA ignores (awsRegion without credentials, AWS keys with authModes)",
                with(&[("awsRegion", "eu-west-1"), ("authModes", "basic")]),
                &[("username", "u"), ("awsAccessKeyID", "AKIA")],
                |c| assert_eq!(c.modes, [AuthMode::Basic]),
            ),
        ];
        for (example, meta, auth, check) in rows {
            let c = parse(&meta, auth).unwrap_or_else(|e| panic!("{example}: {e}"));
            check(&c);
        }
        let mut t = trigger(BASE, &[]);
        t.metric_type = Some("Value".into());
        let c = PrometheusConfig::parse(&t).unwrap();
        assert_eq!(c.metric_type, MetricTargetType::Value);
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        const AWS: &str =
            "AWS SigV4 signing (Amazon Managed Service for Prometheus) is not implemented in ebb";
        const GCP: &str = "GCP service account credentials (Google Managed Service for Prometheus) are not implemented in ebb";
        /// (metadata, auth params, key at fault, problem)
        type Case = (
            Vec<(&'static str, &'static str)>,
            &'static [(&'static str, &'static str)],
            &'static str,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                without("serverAddress"),
                &[],
                "serverAddress",
                "required; set metadata \"serverAddress\"",
            ),
            (
                without("query"),
                &[],
                "query",
                "required; set metadata \"query\"",
            ),
            (
                without("threshold"),
                &[],
                "threshold",
                "required; set metadata \"threshold\"",
            ),
            (
                with(&[("serverAddress", "prometheus:9090")]),
                &[],
                "serverAddress",
                "expected an http or https URL",
            ),
            (
                with(&[("serverAddress", "ftp://user:pw@prometheus/")]),
                &[],
                "serverAddress",
                "expected an http or https URL",
            ),
            (
                with(&[("serverAddress", "http://prometheus:9090/?dedup=true")]),
                &[],
                "serverAddress",
                "expected a URL without a query or fragment (query parameters go in queryParameters)",
            ),
            (
                with(&[("threshold", "ten")]),
                &[],
                "threshold",
                "expected a number, got \"ten\"",
            ),
            (
                with(&[("threshold", "0")]),
                &[],
                "threshold",
                "expected a number above 0",
            ),
            (
                with(&[("threshold", "NaN")]),
                &[],
                "threshold",
                "expected a number above 0",
            ),
            (
                with(&[("activationThreshold", "x")]),
                &[],
                "activationThreshold",
                "expected a number, got \"x\"",
            ),
            (
                with(&[("activationThreshold", "-1")]),
                &[],
                "activationThreshold",
                "expected a finite number >= 0, got -1",
            ),
            (
                with(&[("ignoreNullValues", "maybe")]),
                &[],
                "ignoreNullValues",
                "expected true or false",
            ),
            (
                with(&[("unsafeSsl", "yes")]),
                &[],
                "unsafeSsl",
                "expected true or false",
            ),
            (
                with(&[("timeout", "0")]),
                &[],
                "timeout",
                "expected a duration above 0 (\"5s\", \"1m30s\") or a whole number of milliseconds, got \"0\"",
            ),
            (
                with(&[("customHeaders", "X-Scope-OrgID")]),
                &[],
                "customHeaders",
                "expected comma-separated key=value pairs",
            ),
            (
                with(&[("customHeaders", "bad header=v")]),
                &[],
                "customHeaders",
                "\"bad header\" is not an HTTP header name",
            ),
            (
                with(&[("customHeaders", "X-A=line\u{7f}break")]),
                &[],
                "customHeaders",
                "the value of X-A contains characters not allowed in an HTTP header",
            ),
            (
                with(&[("queryParameters", "=v")]),
                &[],
                "queryParameters",
                "expected comma-separated key=value pairs",
            ),
            (
                with(&[("authModes", "digest")]),
                &[],
                "authModes",
                "expected a comma-separated list of basic, bearer, tls, custom, got \"digest\"",
            ),
            (
                with(&[("authMode", "oauth")]),
                &[],
                "authMode",
                "the oauth auth mode is not implemented in ebb yet",
            ),
            (
                with(&[("authModes", "apiKey")]),
                &[("apiKey", "k")],
                "authModes",
                "prometheus triggers send no API key (KEDA accepts apiKey here but never sends it); use custom with customAuthHeader and customAuthValue",
            ),
            (
                with(&[("authModes", "basic,bearer")]),
                &[("username", "u"), ("bearerToken", "t")],
                "authModes",
                "basic and bearer cannot be combined: both set the Authorization header",
            ),
            (
                with(&[("authModes", "basic")]),
                &[("password", "p")],
                "username",
                "required; set authentication parameter \"username\"",
            ),
            (
                with(&[("authModes", "bearer")]),
                &[],
                "bearerToken",
                "required; set authentication parameter \"bearerToken\" (or \"token\")",
            ),
            (
                with(&[("authModes", "bearer")]),
                &[("bearerToken", "tok\nen")],
                "bearerToken",
                "contains characters not allowed in an HTTP header",
            ),
            (
                with(&[("authModes", "tls")]),
                &[("key", KEY)],
                "cert",
                "required; set authentication parameter \"cert\"",
            ),
            (
                with(&[("authModes", "tls")]),
                &[("cert", CERT)],
                "key",
                "required; set authentication parameter \"key\"",
            ),
            (
                with(&[("authModes", "tls")]),
                &[("cert", "not pem"), ("key", KEY)],
                "cert",
                "expected one or more PEM certificates",
            ),
            (
                with(&[("authModes", "tls")]),
                &[("cert", CERT), ("key", "secret-not-pem")],
                "key",
                "expected a PEM private key",
            ),
            (
                BASE.to_vec(),
                &[("ca", "not pem")],
                "ca",
                "expected one or more PEM certificates",
            ),
            (
                with(&[("authModes", "custom")]),
                &[("customAuthValue", "v")],
                "customAuthHeader",
                "required; set authentication parameter \"customAuthHeader\"",
            ),
            (
                with(&[("authModes", "custom")]),
                &[("customAuthHeader", "X-A")],
                "customAuthValue",
                "required; set authentication parameter \"customAuthValue\"",
            ),
            (
                with(&[("authModes", "custom")]),
                &[("customAuthHeader", "X A"), ("customAuthValue", "v")],
                "customAuthHeader",
                "expected an HTTP header name",
            ),
            (
                with(&[("awsRegion", "eu-west-1")]),
                &[("awsRoleArn", "arn:aws:iam::1:role/r")],
                "awsRoleArn",
                AWS,
            ),
            (
                BASE.to_vec(),
                &[("awsAccessKeyID", "AKIA"), ("awsSecretAccessKey", "s")],
                "awsAccessKeyID",
                AWS,
            ),
            (
                with(&[("identityOwner", "operator")]),
                &[],
                "identityOwner",
                AWS,
            ),
            (
                BASE.to_vec(),
                &[("GoogleApplicationCredentials", "{}")],
                "GoogleApplicationCredentials",
                GCP,
            ),
            (
                with(&[("credentialsFromEnv", "GOOGLE_CREDS")]),
                &[],
                "credentialsFromEnv",
                GCP,
            ),
        ];
        for (meta, auth, key, problem) in cases {
            let err = parse(&meta, auth).expect_err("refused");
            assert_eq!(
                (err.key.as_str(), err.problem.as_str()),
                (key, problem),
                "{meta:?}"
            );
            assert!(err.to_string().starts_with("trigger 2 (prometheus): "));
        }
        let mut t = trigger(BASE, &[]);
        t.metric_type = Some("Utilization".into());
        let err = PrometheusConfig::parse(&t).expect_err("refused");
        assert_eq!(
            (err.key.as_str(), err.problem.as_str()),
            (
                "metricType",
                "expected AverageValue or Value for a prometheus trigger, got \"Utilization\""
            )
        );
    }

    fn vector(values: &[&str]) -> String {
        let series: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(r#"{{"metric":{{"pod":"p{i}"}},"value":[1700000000.123,"{v}"]}}"#)
            })
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            series.join(",")
        )
    }

    #[test]
    fn answers_are_read_as_keda_reads_them() {
        const NULL: &str = "; ignoreNullValues is false, so this is an error rather than 0";
        let scalar =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"7.25"]}}"#;
        let failed = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\":\n 1:4: parse error: unexpected end of input"}"#;
        let no_value =
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}"#;
        let untyped = r#"{"data":{"result":[{"metric":{},"value":[1,"3"]}]}}"#;
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#;
        let string = r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
        let short = r#"{"status":"success","data":{"resultType":"scalar","result":[1]}}"#;
        let number = r#"{"status":"success","data":{"resultType":"scalar","result":[1,5]}}"#;
        let warned = r#"{"status":"success","warnings":["w"],"data":{"resultType":"vector","result":[{"metric":{},"value":[1,"2"]}]}}"#;
        /// (body, reading with ignoreNullValues true, with it false)
        type Reading = (String, Result<f64, String>, Result<f64, String>);
        let cases: Vec<Reading> = vec![
            (vector(&["42.5"]), Ok(42.5), Ok(42.5)),
            (vector(&["-3"]), Ok(-3.0), Ok(-3.0)),
            (vector(&["1e3"]), Ok(1000.0), Ok(1000.0)),
            (scalar.into(), Ok(7.25), Ok(7.25)),
            (number.into(), Ok(5.0), Ok(5.0)),
            (untyped.into(), Ok(3.0), Ok(3.0)),
            (warned.into(), Ok(2.0), Ok(2.0)),
            (
                vector(&[]),
                Ok(0.0),
                Err(format!(
                    "the query returned no series (the target may be lost){NULL}"
                )),
            ),
            (
                no_value.into(),
                Ok(0.0),
                Err(format!("the sample has no value{NULL}")),
            ),
            (
                vector(&["NaN"]),
                Ok(0.0),
                Err(format!("the query returned NaN{NULL}")),
            ),
            (
                vector(&["+Inf"]),
                Ok(0.0),
                Err(format!("the query returned +Inf{NULL}")),
            ),
            (
                vector(&["-Inf"]),
                Ok(0.0),
                Err(format!("the query returned -Inf{NULL}")),
            ),
        ];
        for (body, lenient, strict) in cases {
            assert_eq!(read_answer(body.as_bytes(), true), lenient, "{body}");
            assert_eq!(read_answer(body.as_bytes(), false), strict, "{body}");
        }
        // Errors whatever ignoreNullValues says.
        let errors: Vec<(String, &str)> = vec![
            (
                vector(&["1", "2"]),
                "the query returned 2 series; it must return one (aggregate them, e.g. with sum(...))",
            ),
            (
                failed.into(),
                "the query failed: bad_data: invalid parameter \"query\": 1:4: parse error: unexpected end of input",
            ),
            (
                r#"{"status":"error"}"#.into(),
                "the answer's status is \"error\", not \"success\"",
            ),
            (
                matrix.into(),
                "the query returned a range vector (matrix); it must return an instant vector or a scalar",
            ),
            (
                string.into(),
                "the query returned a string result; it must return an instant vector or a scalar",
            ),
            (short.into(), "the sample has a timestamp but no value"),
            (
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,null]}}"#.into(),
                "the sample's value is not a number",
            ),
            (
                vector(&["many"]),
                "the sample's value \"many\" is not a number",
            ),
            (
                r#"{"status":"success"}"#.into(),
                "the answer has no data object",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":{}}}"#.into(),
                "the answer's result is not a list of series",
            ),
            (
                r#"{"status":"success","data":{"resultType":"scalar","result":"7"}}"#.into(),
                "the sample is not a [timestamp, value] pair",
            ),
        ];
        for (body, expected) in errors {
            for ignore in [true, false] {
                assert_eq!(
                    read_answer(body.as_bytes(), ignore),
                    Err(expected.to_string()),
                    "{body}"
                );
            }
        }
        let err = read_answer(b"<html>502 Bad Gateway</html>", true).unwrap_err();
        assert!(err.starts_with("the answer is not JSON: "), "{err}");
    }

    #[test]
    fn the_query_url_carries_query_time_namespace_and_parameters() {
        let c = parse(
            &with(&[
                ("serverAddress", "http://thanos-querier:9091/"),
                ("query", "sum(up{job=\"a b\"}) > 0 & 1"),
                ("namespace", "team-a"),
                (
                    "queryParameters",
                    "dedup=true, partial_response = false,dedup=false,",
                ),
            ]),
            &[],
        )
        .unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2024-05-06T07:08:09.750Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let url = c.query_url(now);
        assert_eq!(
            url.as_str(),
            "http://thanos-querier:9091/api/v1/query?query=sum%28up%7Bjob%3D%22a+b%22%7D%29+%3E+0+%26+1\
             &time=2024-05-06T07%3A08%3A09Z&namespace=team-a&dedup=false&partial_response=false"
        );
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs[0],
            ("query".into(), "sum(up{job=\"a b\"}) > 0 & 1".into())
        );
        // Without namespace and parameters, only the query and the time.
        let c = parse(BASE, &[]).unwrap();
        let keys: Vec<String> = c
            .query_url(now)
            .query_pairs()
            .map(|(k, _)| k.into_owned())
            .collect();
        assert_eq!(keys, ["query", "time"]);
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let c = parse(
            &with(&[
                ("serverAddress", "https://user:url%2Fpass@prom:9090/x"),
                ("authModes", "custom"),
            ]),
            &[
                ("customAuthHeader", "X-Auth"),
                ("customAuthValue", "custom-secret"),
                ("ca", CERT),
            ],
        )
        .unwrap();
        let shown = format!("{c:?}");
        for secret in ["url%2Fpass", "url/pass", "custom-secret", "user:"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(c.source_name, "prometheus https://prom:9090/x/api/v1/query");
        let scrubbed = c.scrub("echo url%2Fpass url/pass custom-secret".into());
        assert_eq!(scrubbed, "echo <redacted> <redacted> <redacted>");

        let c = parse(
            &with(&[("authModes", "tls,bearer")]),
            &[("bearerToken", "tok-secret"), ("cert", CERT), ("key", KEY)],
        )
        .unwrap();
        let pool = HttpPool::new();
        let scaler = PrometheusScaler {
            lease: pool.lease(c.tls.clone()),
            config: c,
        };
        let shown = format!("{scaler:?}");
        assert!(
            !shown.contains("tok-secret") && !shown.contains("PRIVATE KEY"),
            "{shown}"
        );
        // A bad value from the TriggerAuthentication is never quoted.
        let err = parse(
            &with(&[("authModes", "bearer")]),
            &[("bearerToken", "sec\nret")],
        )
        .expect_err("refused");
        assert!(!err.to_string().contains("sec"), "{err}");
        let err = parse(BASE, &[("authModes", "s3cret-mode")]).expect_err("refused");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let err = parse(&with(&[("customHeaders", "X-Key")]), &[]).expect_err("refused");
        assert!(!err.to_string().contains("X-Key"), "{err}");
    }

    /// What the test server saw: each request's head, and how many connections it accepted.
    #[derive(Default)]
    struct Seen {
        heads: std::sync::Mutex<Vec<String>>,
        connections: AtomicUsize,
    }

    impl Seen {
        fn last(&self) -> String {
            self.heads
                .lock()
                .unwrap()
                .last()
                .cloned()
                .unwrap_or_default()
                .to_ascii_lowercase()
        }

        /// The last request's decoded query string.
        fn last_query(&self) -> Vec<(String, String)> {
            let head = self.last();
            let target = head.split(' ').nth(1).unwrap_or_default().to_string();
            reqwest::Url::parse(&format!("http://x{target}"))
                .unwrap()
                .query_pairs()
                .into_owned()
                .collect()
        }
    }

    /// The answer for a request head: a status and a body, or `None` to never answer.
    type Responder = Arc<dyn Fn(&str) -> Option<(u16, String)> + Send + Sync>;

    /// A tiny HTTP/1.1 server on 127.0.0.1 with keep-alive; returns its base URL.
    async fn serve(respond: Responder) -> (String, Arc<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let server_seen = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                server_seen.connections.fetch_add(1, Ordering::SeqCst);
                let (seen, respond) = (server_seen.clone(), respond.clone());
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let end = loop {
                            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                        buffer.drain(..end);
                        seen.heads.lock().unwrap().push(head.clone());
                        let Some((status, body)) = respond(&head) else {
                            std::future::pending::<()>().await;
                            return;
                        };
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    async fn poll(scaler: &PrometheusScaler) -> Result<MetricsAndActivity, ScalerError> {
        scaler.metrics_and_activity("s2-prometheus").await
    }

    #[tokio::test]
    async fn polls_a_local_prometheus_with_its_parameters_and_credentials() {
        let (base, seen) = serve(Arc::new(|_: &str| Some((200, vector(&["42"]))))).await;
        let pool = HttpPool::new();
        let query = "sum(up{job=\"a b\"})";
        let meta = [
            ("serverAddress", base.as_str()),
            ("query", query),
            ("threshold", "10"),
            ("activationThreshold", "40"),
            ("namespace", "team-a"),
            ("queryParameters", "dedup=true,partial_response=false"),
            ("customHeaders", "X-Scope-OrgID=tenant-1"),
            ("authModes", "bearer"),
        ];
        let scaler =
            PrometheusScaler::new(&trigger(&meta, &[("bearerToken", "tok-1234")]), &pool).unwrap();
        assert_eq!(
            scaler.metric_specs(),
            [MetricSpec::External {
                name: "s2-prometheus".into(),
                target: 10.0,
                target_type: MetricTargetType::AverageValue,
            }]
        );
        let answer = poll(&scaler).await.unwrap();
        assert_eq!(answer.values[0].value, 42.0);
        assert!(answer.active, "42 > 40");
        let head = seen.last();
        assert!(head.starts_with("get /api/v1/query?"), "{head}");
        assert!(
            head.contains("\r\nauthorization: bearer tok-1234\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nx-scope-orgid: tenant-1\r\n"), "{head}");
        let pairs = seen.last_query();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["query", "time", "namespace", "dedup", "partial_response"]
        );
        assert_eq!(pairs[0].1, query);
        let time = chrono::DateTime::parse_from_rfc3339(&pairs[1].1.to_ascii_uppercase()).unwrap();
        assert!((chrono::Utc::now() - time.with_timezone(&chrono::Utc)).num_seconds() < 60);
        assert_eq!(pairs[2].1, "team-a");
        assert_eq!(
            (pairs[3].1.as_str(), pairs[4].1.as_str()),
            ("true", "false")
        );
        assert!(
            poll(&scaler).await.is_ok() && seen.connections.load(Ordering::SeqCst) == 1,
            "the second poll reuses the connection"
        );
        let err = scaler
            .metrics_and_activity("s0-prometheus")
            .await
            .unwrap_err();
        assert!(matches!(err, ScalerError::UnknownMetric(_)));

        // basic, user info in the address, and custom: each request carries its own.
        /// (serverAddress, more metadata, auth parameters, the header sent)
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a [(&'a str, &'a str)],
            &'a str,
        );
        let cases: [Case; 3] = [
            (
                base.as_str(),
                &[("authModes", "basic")],
                &[("username", "u"), ("password", "pw")],
                "authorization: basic dTpwdw==",
            ),
            (
                &base.replace("http://", "http://user:pa%20ss@"),
                &[],
                &[],
                "authorization: basic dXNlcjpwYSBzcw==",
            ),
            (
                base.as_str(),
                &[("authModes", "custom")],
                &[
                    ("customAuthHeader", "X-Auth-Token"),
                    ("customAuthValue", "tok-5678"),
                ],
                "x-auth-token: tok-5678",
            ),
        ];
        for (address, extra, auth, expected) in cases {
            let mut meta = vec![
                ("serverAddress", address),
                ("query", "up"),
                ("threshold", "1"),
            ];
            meta.extend_from_slice(extra);
            let scaler = PrometheusScaler::new(&trigger(&meta, auth), &pool).unwrap();
            poll(&scaler).await.unwrap();
            let head = seen.last();
            let expected = expected.to_ascii_lowercase();
            assert!(head.contains(&format!("\r\n{expected}\r\n")), "{head}");
            assert_eq!(
                head.matches("authorization:").count(),
                usize::from(expected.starts_with("authorization"))
            );
            assert!(
                !head.contains("pa%20ss") && !head.contains("user@"),
                "{head}"
            );
        }
    }

    #[tokio::test]
    async fn two_hundred_triggers_on_one_server_share_one_client_and_connection() {
        let (base, seen) = serve(Arc::new(|_: &str| Some((200, vector(&["3"]))))).await;
        let pool = HttpPool::new();
        let meta = [
            ("serverAddress", base.as_str()),
            ("query", "up"),
            ("threshold", "1"),
        ];
        let scalers: Vec<PrometheusScaler> = (0..200)
            .map(|i| {
                let user = format!("user-{i}");
                let auth = [("username", user.as_str())];
                let mut meta = meta.to_vec();
                // Credentials differ per trigger; they are headers, not part of the key.
                if i % 2 == 0 {
                    meta.push(("authModes", "basic"));
                }
                PrometheusScaler::new(&trigger(&meta, &auth), &pool).unwrap()
            })
            .collect();
        assert_eq!(pool.len(), 1, "one pool entry for one TLS setting");
        for scaler in &scalers {
            let answer = poll(scaler).await.unwrap();
            assert_eq!(answer.values[0].value, 3.0);
            assert!(answer.active);
        }
        assert_eq!(seen.heads.lock().unwrap().len(), 200);
        assert_eq!(
            seen.connections.load(Ordering::SeqCst),
            1,
            "200 sequential polls over one keep-alive connection"
        );
        let mut insecure = meta.to_vec();
        insecure.push(("unsafeSsl", "true"));
        let other = PrometheusScaler::new(&trigger(&insecure, &[]), &pool).unwrap();
        assert_eq!(pool.len(), 2, "another TLS setting, another client");
        drop(scalers);
        assert_eq!(pool.len(), 1);
        drop(other);
        assert!(pool.is_empty(), "the last trigger closes the client");
    }

    #[tokio::test]
    async fn failed_queries_are_errors_naming_the_server_never_zero() {
        let responder: Responder = Arc::new(|head: &str| {
            let bad = r#"{"status":"error","errorType":"bad_data","error":"1:4: parse error: unexpected end of input"}"#;
            let pick = |word: &str| head.contains(&format!("query={word}&"));
            if pick("bad") {
                Some((400, bad.to_string()))
            } else if pick("down") {
                Some((503, "upstream connect error".to_string()))
            } else if pick("two") {
                Some((200, vector(&["1", "2"])))
            } else if pick("moved") {
                Some((302, String::new()))
            } else if pick("empty") {
                Some((200, vector(&[])))
            } else if pick("nan") {
                Some((200, vector(&["NaN"])))
            } else {
                None
            }
        });
        let (base, _seen) = serve(responder).await;
        let pool = HttpPool::new();
        let source = format!("prometheus {base}/api/v1/query");
        let scaler = |query: &'static str, extra: &[(&'static str, &'static str)]| {
            let mut meta = vec![
                ("serverAddress", base.as_str()),
                ("query", query),
                ("threshold", "5"),
                ("timeout", "300ms"),
            ];
            meta.extend_from_slice(extra);
            PrometheusScaler::new(&trigger(&meta, &[]), &pool).unwrap()
        };
        let cases = [
            (
                "bad",
                "answered HTTP 400 Bad Request: bad_data: 1:4: parse error: unexpected end of input",
            ),
            ("down", "answered HTTP 503 Service Unavailable"),
            ("moved", "answered HTTP 302 Found"),
            (
                "two",
                "the query returned 2 series; it must return one (aggregate them, e.g. with sum(...))",
            ),
        ];
        for (query, message) in cases {
            let err = poll(&scaler(query, &[])).await.unwrap_err();
            assert_eq!(err.to_string(), format!("{source}: {message}"), "{query}");
            assert_eq!(err.label(), "source");
        }
        // An empty answer and NaN: 0 and inactive by default, an error when asked.
        for query in ["empty", "nan"] {
            let answer = poll(&scaler(query, &[])).await.unwrap();
            assert_eq!((answer.values[0].value, answer.active), (0.0, false));
            let err = poll(&scaler(query, &[("ignoreNullValues", "false")]))
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("ignoreNullValues is false"),
                "{err}"
            );
        }
        let err = poll(&scaler("hang", &[])).await.unwrap_err();
        assert!(matches!(err, ScalerError::Timeout { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("{source} did not answer within 300ms")
        );
        // Nobody listening: a connection error naming the server.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let meta = [
            ("serverAddress", address.as_str()),
            ("query", "up"),
            ("threshold", "1"),
        ];
        let err = poll(&PrometheusScaler::new(&trigger(&meta, &[]), &pool).unwrap())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("prometheus {address}/api/v1/query: ")),
            "{err}"
        );
    }

    /// The keys this scaler reads, and values that reach its branches.
    const KEYS: &[&str] = &[
        "serverAddress",
        "query",
        "threshold",
        "activationThreshold",
        "namespace",
        "customHeaders",
        "queryParameters",
        "ignoreNullValues",
        "unsafeSsl",
        "timeout",
        "authModes",
        "authMode",
        "bearerToken",
        "token",
        "username",
        "password",
        "ca",
        "cert",
        "key",
        "customAuthHeader",
        "customAuthValue",
        "awsRegion",
        "awsRoleArn",
        "awsAccessKeyID",
        "identityOwner",
        "GoogleApplicationCredentials",
        "credentialsFromEnv",
    ];

    fn any_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<String>(),
            "[a-zA-Z0-9 =,:/@%?#._-]{0,24}",
            prop::sample::select(vec![
                "http://127.0.0.1:1",
                "https://u:p%zz@h:9090/x/?",
                "basic,bearer,tls,custom",
                "custom",
                "a=b, c = d,,=",
                "X-A=\u{7f}",
                "1e999",
                "-0",
                "operator",
                CERT,
                KEY,
            ])
            .prop_map(String::from),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        #[test]
        fn no_metadata_makes_the_constructor_panic(
            metadata in proptest::collection::btree_map(
                proptest::sample::select(KEYS).prop_map(String::from), any_value(), 0..10),
            auth in proptest::collection::btree_map(
                proptest::sample::select(KEYS).prop_map(String::from), any_value(), 0..6),
        ) {
            use proptest::prelude::*;
            let t = Trigger {
                index: 0,
                trigger_type: "prometheus".into(),
                metadata,
                auth_params: auth,
                ..Default::default()
            };
            if let Ok(c) = PrometheusConfig::parse(&t) {
                prop_assert!(c.threshold > 0.0 && c.endpoint.path().ends_with("/api/v1/query"));
                prop_assert!(c.endpoint.password().is_none() && c.endpoint.username().is_empty());
                let _ = c.query_url(chrono::Utc::now());
            }
        }
    }

    #[test]
    fn the_registry_builds_prometheus_triggers() {
        let registry = Registry::with_builtins();
        let scaler = registry.build(&trigger(BASE, &[])).unwrap();
        assert_eq!(
            scaler.metric_specs()[0].external_name(),
            Some("s2-prometheus")
        );
        let err = registry
            .build(&trigger(&without("query"), &[]))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "trigger 2 (prometheus): query: required; set metadata \"query\""
        );
    }
}
