//! `metrics-api`: a number read from an HTTP endpoint (JSON, YAML, XML or Prometheus text).
//!
//! Every trigger with the same TLS settings (`unsafeSsl`, and the `ca`/`cert`/`key` of the
//! `tls` auth mode) shares one `reqwest::Client` through a [`SharedPool`]; the client keeps
//! its own keep-alive connections per server. A poll is one GET with the trigger's
//! credentials, bounded by the trigger's timeout and a 1 MiB body limit; the value is read by
//! the pure functions of [`extract`].

pub mod extract;
pub mod gjson;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName};

use self::extract::{Format, Location};
use crate::error::{ConfigError, ScalerError};
use crate::http::{self, pem_certs, sensitive_header};
use crate::metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
use crate::pool::{Lease, SharedPool};
use crate::registry::Registry;
use crate::scaler::Scaler;
use crate::tls::{ClientTls, pem_private_key};
use crate::trigger::{MetricTargetType, Source, Trigger};

/// Limit for a request (connect, headers and body) when `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest response body read; a bigger one is an error rather than a memory spike.
pub const MAX_BODY_BYTES: usize = http::MAX_BODY_BYTES;

const AUTH_ONLY: &[Source] = &[Source::Auth];
/// Where KEDA reads `authMode`, `apiKey`, `method` and `keyParamName`.
const METADATA_OR_AUTH: &[Source] = &[Source::Metadata, Source::Auth];

/// The TLS settings of a shared HTTP client. Holds a private key: never printed.
pub type TlsKey = ClientTls;

/// The pool `metrics-api` triggers share.
pub type HttpPool = SharedPool<TlsKey, reqwest::Client>;

/// Registers `metrics-api`. Every trigger built from one registry shares that registry's pool.
pub fn register(registry: &mut Registry) {
    let pool = HttpPool::new();
    registry.register("metrics-api", move |t| {
        Ok(Box::new(MetricsApiScaler::new(t, &pool)?))
    });
}

/// The auth modes `authMode` may list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthMode {
    ApiKey,
    Basic,
    Bearer,
    Tls,
    Custom,
}

impl AuthMode {
    const NAMES: &'static [(&'static str, AuthMode)] = &[
        ("apiKey", AuthMode::ApiKey),
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

/// Parsed `metrics-api` trigger. Holds credentials: `Debug` shows none.
#[derive(Clone)]
struct MetricsApiConfig {
    /// The URL requested, with the API key in its query when `method: query`: secret.
    url: reqwest::Url,
    /// How errors name the endpoint: scheme, host, port and path only.
    source_name: String,
    format: Format,
    value_location: String,
    location: Location,
    target_value: f64,
    activation_target_value: f64,
    metric_type: MetricTargetType,
    metric_name: String,
    timeout: Duration,
    modes: Vec<AuthMode>,
    tls: TlsKey,
    /// API key or custom header, marked sensitive.
    headers: HeaderMap,
    basic: Option<(String, Option<String>)>,
    bearer: Option<String>,
    /// Every secret, so an error message that somehow quotes one can be scrubbed.
    secrets: Vec<String>,
}

impl fmt::Debug for MetricsApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsApiConfig")
            .field("source_name", &self.source_name)
            .field("format", &self.format)
            .field("value_location", &self.value_location)
            .field("target_value", &self.target_value)
            .field("activation_target_value", &self.activation_target_value)
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

/// The endpoint as errors show it: no user info, no query (either may hold a credential).
fn source_name(url: &reqwest::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "metrics-api {}://{}{port}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.path()
    )
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

fn header_name(t: &Trigger, key: &str, value: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(value.trim().as_bytes())
        .map_err(|_| t.error(key, "expected an HTTP header name"))
}

impl MetricsApiConfig {
    fn parse(t: &Trigger) -> Result<Self, ConfigError> {
        let url_text = t.required("url", &[Source::Metadata])?.value;
        let mut url = reqwest::Url::parse(url_text.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| t.error("url", "expected an http or https URL"))?;
        let source_name = source_name(&url);
        let format = match t.one_of("format", &["json", "yaml", "xml", "prometheus"], "json")? {
            "yaml" => Format::Yaml,
            "xml" => Format::Xml,
            "prometheus" => Format::Prometheus,
            _ => Format::Json,
        };
        let value_location = t.required("valueLocation", &[Source::Metadata])?.value;
        let location = Location::parse(value_location.trim(), format)
            .map_err(|problem| t.error("valueLocation", problem))?;
        let target_value: f64 = t.parse_required("targetValue", &[Source::Metadata], "a number")?;
        if !target_value.is_finite() || target_value <= 0.0 {
            return Err(t.error("targetValue", "expected a number above 0"));
        }
        let timeout = t.duration_or("timeout", &[Source::Metadata], DEFAULT_TIMEOUT)?;

        if t.bool_or(
            "aggregateFromKubeServiceEndpoints",
            &[Source::Metadata],
            false,
        )? {
            return Err(t.error(
                "aggregateFromKubeServiceEndpoints",
                "aggregating over a Service's endpoints is not implemented in ebb yet",
            ));
        }

        let modes = parse_modes(t)?;
        let mut tls = TlsKey {
            unsafe_ssl: t.bool_or("unsafeSsl", &[Source::Metadata], false)?,
            ..TlsKey::default()
        };
        let mut headers = HeaderMap::new();
        let mut basic = None;
        let mut bearer = None;
        let mut secrets = Vec::new();
        for mode in &modes {
            match mode {
                AuthMode::ApiKey => {
                    let api_key = t
                        .required("apiKey", &[Source::Auth, Source::Metadata])?
                        .value;
                    let method = match t.lookup("method", METADATA_OR_AUTH)? {
                        None => "header",
                        Some(found) => match found.value.trim().to_ascii_lowercase().as_str() {
                            "header" => "header",
                            "query" => "query",
                            _ => return Err(t.error("method", "expected header or query")),
                        },
                    };
                    let param = t.lookup("keyParamName", METADATA_OR_AUTH)?.map(|f| f.value);
                    if method == "query" {
                        let param = param.unwrap_or_else(|| "api_key".into());
                        let kept: Vec<(String, String)> = url
                            .query_pairs()
                            .filter(|(k, _)| *k != param.as_str())
                            .map(|(k, v)| (k.into_owned(), v.into_owned()))
                            .collect();
                        url.query_pairs_mut()
                            .clear()
                            .extend_pairs(kept)
                            .append_pair(&param, &api_key);
                        // The encoded form is what would show up in a URL.
                        if let Some((_, encoded)) = url
                            .query()
                            .and_then(|q| q.rsplit('&').next())
                            .and_then(|pair| pair.split_once('='))
                        {
                            secrets.push(encoded.to_string());
                        }
                    } else {
                        let name = header_name(
                            t,
                            "keyParamName",
                            param.as_deref().unwrap_or("X-API-KEY"),
                        )?;
                        headers.insert(name, sensitive_header(t, "apiKey", &api_key)?);
                    }
                    secrets.push(api_key);
                }
                AuthMode::Basic => {
                    let username = t.required("username", AUTH_ONLY)?.value;
                    let password = t.lookup("password", AUTH_ONLY)?.map(|f| f.value);
                    secrets.extend(password.clone());
                    basic = Some((username, password));
                }
                AuthMode::Bearer => {
                    let token = match t.lookup("bearerToken", AUTH_ONLY)? {
                        Some(found) => found.value,
                        None => t.required("token", AUTH_ONLY)?.value,
                    };
                    // Checked now so a bad token is a config error, not a failing poll.
                    sensitive_header(t, "token", &format!("Bearer {token}"))?;
                    secrets.push(token.clone());
                    bearer = Some(token);
                }
                AuthMode::Tls => {
                    let cert = t.required("cert", AUTH_ONLY)?.value;
                    let key = t.required("key", AUTH_ONLY)?.value;
                    pem_certs(t, "cert", &cert)?;
                    if pem_private_key(&key).is_err() {
                        return Err(t.error("key", "expected a PEM private key"));
                    }
                    let ca = t.lookup("ca", AUTH_ONLY)?.map(|f| f.value);
                    if let Some(ca) = &ca {
                        pem_certs(t, "ca", ca)?;
                    }
                    secrets.push(key.clone());
                    tls.ca = ca;
                    tls.cert = Some(cert);
                    tls.key = Some(key);
                }
                AuthMode::Custom => {
                    let name = t.required("customAuthHeader", AUTH_ONLY)?.value;
                    let value = t.required("customAuthValue", AUTH_ONLY)?.value;
                    let name = header_name(t, "customAuthHeader", &name)?;
                    headers.insert(name, sensitive_header(t, "customAuthValue", &value)?);
                    secrets.push(value);
                }
            }
        }
        if let Some(password) = url.password() {
            secrets.push(password.to_string());
        }
        // Secrets too short to be told apart from ordinary text would scrub too much.
        secrets.retain(|s| s.len() >= 4);

        Ok(Self {
            url,
            source_name,
            format,
            metric_name: metric_name(t.index, &format!("metric-api-{}", value_location.trim())),
            value_location,
            location,
            target_value,
            activation_target_value: t.threshold_or("activationTargetValue", 0.0)?,
            metric_type: t.metric_type(
                &[MetricTargetType::AverageValue, MetricTargetType::Value],
                MetricTargetType::AverageValue,
            )?,
            timeout,
            modes,
            tls,
            headers,
            basic,
            bearer,
            secrets,
        })
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

/// An HTTP client for `key`'s TLS settings that follows same-origin redirects only.
fn build_client(key: &TlsKey) -> Result<reqwest::Client, String> {
    http::client(key, |builder| {
        builder.redirect(reqwest::redirect::Policy::custom(same_origin_redirects))
    })
}

/// Follows redirects within the first URL's origin (at most 10). A redirect elsewhere is not
/// followed, so an API key or custom header is never sent to another server; the caller sees
/// the 3xx status.
fn same_origin_redirects(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let origin = |u: &reqwest::Url| {
        (
            u.scheme().to_string(),
            u.host_str().map(str::to_string),
            u.port_or_known_default(),
        )
    };
    let same = attempt
        .previous()
        .first()
        .is_some_and(|first| origin(first) == origin(attempt.url()));
    if !same || attempt.previous().len() > 10 {
        attempt.stop()
    } else {
        attempt.follow()
    }
}

/// A `metrics-api` trigger.
pub struct MetricsApiScaler {
    config: MetricsApiConfig,
    lease: Lease<TlsKey, reqwest::Client>,
}

impl fmt::Debug for MetricsApiScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsApiScaler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MetricsApiScaler {
    /// Parses the trigger and takes a lease on the HTTP client for its TLS settings.
    pub fn new(trigger: &Trigger, pool: &HttpPool) -> Result<Self, ConfigError> {
        let config = MetricsApiConfig::parse(trigger)?;
        Ok(Self {
            lease: pool.lease(config.tls.clone()),
            config,
        })
    }

    /// The body of one GET, at most [`MAX_BODY_BYTES`].
    async fn fetch(&self, client: &reqwest::Client) -> Result<Vec<u8>, ScalerError> {
        let c = &self.config;
        let http_error = |e: reqwest::Error| c.source_error(http::error_message(e));
        let mut request = client.get(c.url.clone()).headers(c.headers.clone());
        if let Some((username, password)) = &c.basic {
            request = request.basic_auth(username, password.as_ref());
        }
        if let Some(token) = &c.bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(http_error)?;
        let status = response.status();
        // Only 200 is an answer, as in KEDA (a 204 or 206 has no value to read).
        if status != reqwest::StatusCode::OK {
            return Err(c.source_error(format!("answered HTTP {status}")));
        }
        http::read_body(response)
            .await
            .map_err(|e| c.source_error(e))
    }

    async fn value(&self) -> Result<f64, ScalerError> {
        let c = &self.config;
        let tls = c.tls.clone();
        let client = self
            .lease
            .client(&c.source_name, c.timeout, || async move {
                build_client(&tls).map_err(|message| ScalerError::Source {
                    source_name: "metrics-api".into(),
                    message,
                })
            })
            .await?;
        let body = tokio::time::timeout(c.timeout, self.fetch(&client))
            .await
            .map_err(|_| ScalerError::Timeout {
                source_name: c.source_name.clone(),
                timeout: c.timeout,
            })??;
        c.location
            .extract(&body, c.format)
            .map_err(|e| c.source_error(format!("valueLocation {:?}: {e}", c.value_location)))
    }
}

#[async_trait]
impl Scaler for MetricsApiScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.config.metric_name.clone(),
            target: self.config.target_value,
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
            active: value > self.config.activation_target_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUJ2kq2bqTmZ0Ea4vRkHXH1Yq3FQ8wCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----\n";

    fn trigger(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Trigger {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Trigger {
            index: 1,
            trigger_type: "metrics-api".into(),
            metadata: map(meta),
            auth_params: map(auth),
            ..Default::default()
        }
    }

    const BASE: &[(&str, &str)] = &[
        ("url", "http://api:3232/api/v1/stats"),
        ("valueLocation", "components.worker.tasks"),
        ("targetValue", "8.8"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut meta: Vec<_> = BASE
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .copied()
            .collect();
        meta.extend_from_slice(extra);
        meta
    }

    fn parse(
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> Result<MetricsApiConfig, ConfigError> {
        MetricsApiConfig::parse(&trigger(meta, auth))
    }

    #[test]
    fn defaults() {
        let c = parse(BASE, &[]).unwrap();
        assert_eq!(c.metric_name, "s1-metric-api-components-worker-tasks");
        assert_eq!(c.format, Format::Json);
        assert_eq!((c.target_value, c.activation_target_value), (8.8, 0.0));
        assert_eq!(c.metric_type, MetricTargetType::AverageValue);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert!(c.modes.is_empty() && c.headers.is_empty());
        assert!(c.basic.is_none() && c.bearer.is_none());
        assert!(c.tls == TlsKey::default(), "shares the plain client");
        assert_eq!(c.source_name, "metrics-api http://api:3232/api/v1/stats");
        assert_eq!(c.url.as_str(), "http://api:3232/api/v1/stats");
    }

    #[test]
    fn every_documented_key() {
        let mut t = trigger(
            &with(&[
                ("format", "Prometheus"),
                ("valueLocation", "queue_depth{queue=\"a\"}"),
                ("activationTargetValue", "3.5"),
                ("unsafeSsl", "true"),
                ("timeout", "1500"),
            ]),
            &[],
        );
        t.metric_type = Some("Value".into());
        let c = MetricsApiConfig::parse(&t).unwrap();
        assert_eq!(c.format, Format::Prometheus);
        assert_eq!(c.activation_target_value, 3.5);
        assert!(c.tls.unsafe_ssl);
        assert_eq!(c.timeout, Duration::from_millis(1500));
        assert_eq!(c.metric_type, MetricTargetType::Value);
        assert_eq!(c.metric_name, "s1-metric-api-queue_depth{queue=\"a\"}");
        for (format, expected) in [
            ("yaml", Format::Yaml),
            ("xml", Format::Xml),
            ("JSON", Format::Json),
        ] {
            let c = parse(&with(&[("format", format)]), &[]).unwrap();
            assert_eq!(c.format, expected, "{format}");
        }
    }

    #[test]
    fn auth_modes_and_their_parameters() {
        // apiKey in a header, default and named.
        let c = parse(&with(&[("authMode", "apiKey")]), &[("apiKey", "k-123456")]).unwrap();
        assert_eq!(c.headers["x-api-key"], "k-123456");
        assert!(c.headers["x-api-key"].is_sensitive());
        let c = parse(
            &with(&[("authMode", "apiKey"), ("keyParamName", "X-Token")]),
            &[("apiKey", "k-123456")],
        )
        .unwrap();
        assert_eq!(c.headers["x-token"], "k-123456");
        // apiKey in the query, replacing a parameter of the same name and keeping the others.
        let c = parse(
            &with(&[
                ("url", "https://api/stats?a=1&api_key=old"),
                ("authMode", "apiKey"),
                ("method", "query"),
            ]),
            &[("apiKey", "k 12&34")],
        )
        .unwrap();
        assert_eq!(c.url.as_str(), "https://api/stats?a=1&api_key=k+12%2634");
        assert_eq!(
            c.source_name, "metrics-api https://api/stats",
            "no query in errors"
        );
        assert!(c.headers.is_empty());
        let c = parse(
            &with(&[
                ("authMode", "apiKey"),
                ("method", "query"),
                ("keyParamName", "token"),
            ]),
            &[("apiKey", "k-123456")],
        )
        .unwrap();
        assert_eq!(c.url.query(), Some("token=k-123456"));
        // method and keyParamName may come from the TriggerAuthentication too.
        let c = parse(
            &with(&[("authMode", "apiKey")]),
            &[("apiKey", "k-123456"), ("method", "query")],
        )
        .unwrap();
        assert_eq!(c.url.query(), Some("api_key=k-123456"));

        let c = parse(
            &with(&[("authMode", "basic")]),
            &[("username", "u"), ("password", "pw-1234")],
        )
        .unwrap();
        assert_eq!(c.basic, Some(("u".into(), Some("pw-1234".into()))));
        let c = parse(&with(&[("authMode", "basic")]), &[("username", "u")]).unwrap();
        assert_eq!(c.basic, Some(("u".into(), None)), "password is optional");

        for key in ["token", "bearerToken"] {
            let c = parse(&with(&[("authMode", "bearer")]), &[(key, "tok-1234")]).unwrap();
            assert_eq!(c.bearer.as_deref(), Some("tok-1234"), "{key}");
        }

        let c = parse(
            &with(&[("authMode", "custom")]),
            &[
                ("customAuthHeader", "X-Custom"),
                ("customAuthValue", "v-1234"),
            ],
        )
        .unwrap();
        assert_eq!(c.headers["x-custom"], "v-1234");

        // authMode from the TriggerAuthentication, several modes at once.
        let key_pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBvZ6x0Lg2xwXWk1CJ1Lv4K3kK4oF7q8m0pTqQm1yGJ1\n-----END PRIVATE KEY-----\n";
        let c = parse(
            BASE,
            &[
                ("authModes", "tls, basic"),
                ("cert", CERT),
                ("key", key_pem),
                ("ca", CERT),
                ("username", "u"),
            ],
        )
        .unwrap();
        assert_eq!(c.modes, vec![AuthMode::Tls, AuthMode::Basic]);
        assert_eq!(c.tls.cert.as_deref(), Some(CERT));
        assert_eq!(c.tls.ca.as_deref(), Some(CERT));
        assert!(c.basic.is_some());
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        /// (metadata, auth params, key at fault, problem)
        type Case = (
            Vec<(&'static str, &'static str)>,
            &'static [(&'static str, &'static str)],
            &'static str,
            &'static str,
        );
        let no_url: Vec<_> = BASE.iter().filter(|(k, _)| *k != "url").copied().collect();
        let no_target: Vec<_> = BASE
            .iter()
            .filter(|(k, _)| *k != "targetValue")
            .copied()
            .collect();
        let cases: Vec<Case> = vec![
            (no_url, &[], "url", "required; set metadata \"url\""),
            (
                no_target,
                &[],
                "targetValue",
                "required; set metadata \"targetValue\"",
            ),
            (
                with(&[("url", "ftp://user:pw@api/x")]),
                &[],
                "url",
                "expected an http or https URL",
            ),
            (
                with(&[("url", "not a url")]),
                &[],
                "url",
                "expected an http or https URL",
            ),
            (
                with(&[("format", "csv")]),
                &[],
                "format",
                "expected one of json, yaml, xml, prometheus, got \"csv\"",
            ),
            (
                with(&[("valueLocation", "items.@pretty")]),
                &[],
                "valueLocation",
                "gjson's @pretty modifier is not supported by ebb: it only reformats JSON text, which cannot give a number",
            ),
            (
                with(&[("format", "prometheus"), ("valueLocation", "m{a!=\"b\"}")]),
                &[],
                "valueLocation",
                "only `=` label matchers are supported",
            ),
            (
                with(&[("targetValue", "ten")]),
                &[],
                "targetValue",
                "expected a number, got \"ten\"",
            ),
            (
                with(&[("targetValue", "0")]),
                &[],
                "targetValue",
                "expected a number above 0",
            ),
            (
                with(&[("activationTargetValue", "x")]),
                &[],
                "activationTargetValue",
                "expected a number, got \"x\"",
            ),
            (
                with(&[("aggregateFromKubeServiceEndpoints", "true")]),
                &[],
                "aggregateFromKubeServiceEndpoints",
                "aggregating over a Service's endpoints is not implemented in ebb yet",
            ),
            (
                with(&[("unsafeSsl", "maybe")]),
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
                with(&[("timeout", "3 s")]),
                &[],
                "timeout",
                "expected a duration above 0 (\"5s\", \"1m30s\") or a whole number of milliseconds, got \"3 s\"",
            ),
            (
                with(&[("authMode", "digest")]),
                &[],
                "authMode",
                "expected a comma-separated list of apiKey, basic, bearer, tls, custom, got \"digest\"",
            ),
            (
                with(&[("authMode", "oauth")]),
                &[],
                "authMode",
                "the oauth auth mode is not implemented in ebb yet",
            ),
            (
                with(&[("authMode", "basic,bearer")]),
                &[("username", "u"), ("token", "t")],
                "authMode",
                "basic and bearer cannot be combined: both set the Authorization header",
            ),
            (
                with(&[("authMode", "apiKey")]),
                &[],
                "apiKey",
                "required; set authentication parameter \"apiKey\" or metadata \"apiKey\"",
            ),
            (
                with(&[("authMode", "apiKey"), ("method", "cookie")]),
                &[("apiKey", "k")],
                "method",
                "expected header or query",
            ),
            (
                with(&[("authMode", "apiKey"), ("keyParamName", "bad header")]),
                &[("apiKey", "k")],
                "keyParamName",
                "expected an HTTP header name",
            ),
            (
                with(&[("authMode", "apiKey")]),
                &[("apiKey", "line\nbreak")],
                "apiKey",
                "contains characters not allowed in an HTTP header",
            ),
            (
                with(&[("authMode", "basic")]),
                &[("password", "p")],
                "username",
                "required; set authentication parameter \"username\"",
            ),
            (
                with(&[("authMode", "bearer")]),
                &[],
                "token",
                "required; set authentication parameter \"token\"",
            ),
            (
                with(&[("authMode", "tls")]),
                &[("key", "k")],
                "cert",
                "required; set authentication parameter \"cert\"",
            ),
            (
                with(&[("authMode", "tls")]),
                &[("cert", CERT)],
                "key",
                "required; set authentication parameter \"key\"",
            ),
            (
                with(&[("authMode", "tls")]),
                &[("cert", "not pem"), ("key", "k")],
                "cert",
                "expected one or more PEM certificates",
            ),
            (
                with(&[("authMode", "tls")]),
                &[("cert", CERT), ("key", "secret-not-pem")],
                "key",
                "expected a PEM private key",
            ),
            (
                with(&[("authMode", "custom")]),
                &[("customAuthValue", "v")],
                "customAuthHeader",
                "required; set authentication parameter \"customAuthHeader\"",
            ),
        ];
        for (meta, auth, key, problem) in cases {
            let err = parse(&meta, auth).expect_err("refused");
            assert_eq!(
                (err.key.as_str(), err.problem.as_str()),
                (key, problem),
                "{meta:?}"
            );
            assert!(err.to_string().starts_with("trigger 1 (metrics-api): "));
        }
        // A metricType the HPA cannot use for an External metric.
        let mut t = trigger(BASE, &[]);
        t.metric_type = Some("Utilization".into());
        let err = MetricsApiConfig::parse(&t).expect_err("refused");
        assert_eq!(err.key, "metricType");
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let c = parse(
            &with(&[
                ("url", "https://user:url-pass@api/stats?x=1"),
                ("authMode", "apiKey"),
                ("method", "query"),
            ]),
            &[("apiKey", "key/with+chars")],
        )
        .unwrap();
        let shown = format!("{c:?}");
        for secret in ["url-pass", "key/with+chars", "key%2Fwith%2Bchars", "user:"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(c.source_name, "metrics-api https://api/stats");
        let scrubbed = c.scrub(format!("bad request to {} with key/with+chars", c.url));
        assert!(!scrubbed.contains("url-pass"), "{scrubbed}");
        assert!(!scrubbed.contains("key%2Fwith%2Bchars"), "{scrubbed}");
        assert!(!scrubbed.contains("key/with+chars"), "{scrubbed}");

        let c = parse(
            &with(&[("authMode", "bearer,apiKey")]),
            &[("token", "tok-secret"), ("apiKey", "api-secret")],
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("tok-secret") && !shown.contains("api-secret"),
            "{shown}"
        );
        // A bad value from the TriggerAuthentication is never quoted.
        let err = parse(&with(&[("authMode", "apiKey")]), &[("apiKey", "sec\nret")])
            .expect_err("refused");
        assert!(!err.to_string().contains("sec"), "{err}");
        let err = parse(BASE, &[("authMode", "s3cret-mode")]).expect_err("refused");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn client_setup_for_each_tls_setting() {
        assert!(build_client(&TlsKey::default()).is_ok());
        assert!(
            build_client(&TlsKey {
                unsafe_ssl: true,
                ..TlsKey::default()
            })
            .is_ok()
        );
        let err = build_client(&TlsKey {
            ca: Some(CERT.into()),
            ..TlsKey::default()
        })
        .unwrap_err();
        assert!(err.starts_with("ca: "), "{err}");
    }
}
