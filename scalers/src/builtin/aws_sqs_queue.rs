//! `aws-sqs-queue`: the approximate number of messages in an Amazon SQS queue, read as KEDA's
//! `aws-sqs-queue` scaler reads it.
//!
//! A poll is one `GetQueueAttributes` call in SQS's JSON protocol (what current AWS SDKs send):
//! a POST to the regional endpoint (or `awsEndpoint`) with the queue URL in the body, signed
//! with SigV4 (the `aws-sigv4` crate, service `sqs`). The value is `ApproximateNumberOfMessages`,
//! plus `...NotVisible` (in flight) unless `scaleOnInFlight` is false, plus `...Delayed` when
//! `scaleOnDelayed` is true. Every trigger shares one `reqwest::Client` (keep-alive
//! connections per endpoint); credentials are per request. Only static credentials are
//! implemented: an access key from a TriggerAuthentication (or the container's environment).
//! Roles (`awsRoleArn`), `identityOwner: operator` and pod identities are refused with an error
//! that says so.

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::metrics_api::DEFAULT_TIMEOUT;
use crate::error::{ConfigError, ScalerError};
use crate::http::{self, LimitedClient};
use crate::metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
use crate::pool::{Lease, SharedPool};
use crate::registry::Registry;
use crate::scaler::Scaler;
use crate::tls::ClientTls;
use crate::trigger::{MetricTargetType, Source, Trigger};

const META: &[Source] = &[Source::Metadata];
const META_OR_ENV: &[Source] = &[Source::Metadata, Source::Env];
const META_OR_AUTH: &[Source] = &[Source::Metadata, Source::Auth];
const AUTH: &[Source] = &[Source::Auth];
const ENV: &[Source] = &[Source::Env];

/// The attributes, in the order KEDA asks for them.
const VISIBLE: &str = "ApproximateNumberOfMessages";
const IN_FLIGHT: &str = "ApproximateNumberOfMessagesNotVisible";
const DELAYED: &str = "ApproximateNumberOfMessagesDelayed";

/// The pool `aws-sqs-queue` triggers share.
pub type SqsPool = SharedPool<ClientTls, LimitedClient>;

/// Registers `aws-sqs-queue`. Every trigger built from one registry shares that registry's pool.
pub fn register(registry: &mut Registry) {
    let pool = SqsPool::new();
    registry.register("aws-sqs-queue", move |t| {
        Ok(Box::new(SqsScaler::new(t, &pool)?))
    });
}

/// Static AWS credentials. Secrets: never printed.
#[derive(Clone, PartialEq, Eq)]
struct StaticCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// Parsed trigger metadata.
#[derive(Clone, PartialEq)]
struct SqsConfig {
    /// The queue URL (or bare name) as given; sent as `QueueUrl`.
    queue_url: String,
    queue_name: String,
    region: String,
    /// Where the call goes: `awsEndpoint`, else `https://sqs.<region>.amazonaws.com`.
    endpoint: Url,
    queue_length: f64,
    activation_queue_length: f64,
    attributes: Vec<&'static str>,
    credentials: StaticCredentials,
    metric_type: MetricTargetType,
    metric_name: String,
    source_name: String,
    timeout: Duration,
}

impl fmt::Debug for SqsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsConfig")
            .field("queue_name", &self.queue_name)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint.as_str())
            .field("queue_length", &self.queue_length)
            .field("activation_queue_length", &self.activation_queue_length)
            .field("attributes", &self.attributes)
            .field("metric_name", &self.metric_name)
            .finish_non_exhaustive()
    }
}

/// The queue's name from its URL as KEDA takes it: the last of exactly two path segments
/// (`https://sqs.eu-west-1.amazonaws.com/<account>/<name>`); text that is neither an absolute
/// URL nor an absolute path is the name itself. The host is not looked at.
pub fn queue_name(queue_url: &str) -> Option<String> {
    let path = if queue_url.starts_with('/') {
        queue_url
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string()
    } else {
        match Url::parse(queue_url) {
            Ok(url) => url.path().to_string(),
            Err(_) => return Some(queue_url.to_string()),
        }
    };
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", _, name] if !name.is_empty() => Some((*name).to_string()),
        _ => None,
    }
}

impl SqsConfig {
    fn parse(t: &Trigger) -> Result<Self, ConfigError> {
        let queue_url = t.required("queueURL", META_OR_ENV)?;
        let queue_name = queue_name(queue_url.value.trim()).ok_or_else(|| {
            t.error(
                "queueURL",
                "cannot get the queue's name from it; expected https://sqs.<region>.amazonaws.com/<account>/<queue>",
            )
        })?;
        let region = t
            .required("awsRegion", META_OR_AUTH)?
            .value
            .trim()
            .to_string();
        let endpoint = match t.lookup("awsEndpoint", META)? {
            Some(found) => Url::parse(found.value.trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    t.error(
                        "awsEndpoint",
                        "expected an http(s) URL, e.g. http://localhost:4566",
                    )
                })?,
            None => Url::parse(&format!("https://sqs.{region}.amazonaws.com"))
                .map_err(|_| t.error("awsRegion", "expected a region name such as eu-west-1"))?,
        };
        let queue_length = t.threshold_or("queueLength", 5.0)?;
        if queue_length == 0.0 {
            return Err(t.error("queueLength", "expected a number above 0"));
        }
        let mut attributes = vec![VISIBLE];
        if t.bool_or("scaleOnInFlight", META, true)? {
            attributes.push(IN_FLIGHT);
        }
        if t.bool_or("scaleOnDelayed", META, false)? {
            attributes.push(DELAYED);
        }
        Ok(Self {
            credentials: parse_credentials(t)?,
            activation_queue_length: t.threshold_or("activationQueueLength", 0.0)?,
            metric_type: t.metric_type(
                &[MetricTargetType::AverageValue, MetricTargetType::Value],
                MetricTargetType::AverageValue,
            )?,
            metric_name: metric_name(t.index, &format!("aws-sqs-{queue_name}")),
            source_name: format!("aws-sqs-queue {queue_name}"),
            queue_url: queue_url.value.trim().to_string(),
            queue_name,
            region,
            endpoint,
            queue_length,
            attributes,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    fn error(&self, message: impl Into<String>) -> ScalerError {
        ScalerError::Source {
            source_name: self.source_name.clone(),
            message: message.into(),
        }
    }
}

/// KEDA's credential order for a trigger without a pod identity: a role, else an access key and
/// secret from the TriggerAuthentication (with an optional session token), else an access key
/// from the metadata or the environment and a secret from the environment. The role and the
/// operator's own identity are refused: ebb signs with static keys only.
fn parse_credentials(t: &Trigger) -> Result<StaticCredentials, ConfigError> {
    const KEYS_INSTEAD: &str =
        "give awsAccessKeyID and awsSecretAccessKey in a TriggerAuthentication instead";
    match t.metadata.get("identityOwner").map(|v| v.trim()) {
        None | Some("") | Some("pod") => {}
        Some("operator") => {
            return Err(t.error(
                "identityOwner",
                format!("\"operator\" (ebb's own AWS identity) is not implemented in ebb; {KEYS_INSTEAD}"),
            ));
        }
        Some(_) => return Err(t.error("identityOwner", "expected pod or operator")),
    }
    if t.lookup("awsRoleArn", AUTH)?.is_some() {
        return Err(t.error(
            "awsRoleArn",
            format!("assuming an IAM role is not implemented in ebb; {KEYS_INSTEAD}"),
        ));
    }
    let auth_key = match t.lookup("awsAccessKeyID", AUTH)? {
        Some(found) => Some(found),
        None => t.lookup("awsAccessKeyId", AUTH)?,
    };
    let auth_secret = t.lookup("awsSecretAccessKey", AUTH)?;
    if let (Some(key), Some(secret)) = (&auth_key, &auth_secret) {
        return Ok(StaticCredentials {
            access_key_id: key.value.trim().to_string(),
            secret_access_key: secret.value.trim().to_string(),
            session_token: t
                .lookup("awsSessionToken", AUTH)?
                .map(|f| f.value.trim().to_string()),
        });
    }
    let key = t.lookup("awsAccessKeyID", META_OR_ENV)?.ok_or_else(|| {
        t.error(
            "awsAccessKeyID",
            "required; set the authentication parameters awsAccessKeyID and awsSecretAccessKey (or metadata awsAccessKeyIDFromEnv and awsSecretAccessKeyFromEnv)",
        )
    })?;
    let secret = t.lookup("awsSecretAccessKey", ENV)?.ok_or_else(|| {
        t.error(
            "awsSecretAccessKey",
            "required; set the authentication parameter awsSecretAccessKey (or metadata awsSecretAccessKeyFromEnv)",
        )
    })?;
    Ok(StaticCredentials {
        access_key_id: key.value.trim().to_string(),
        secret_access_key: secret.value.trim().to_string(),
        session_token: None,
    })
}

/// The JSON body of `GetQueueAttributes` for `queue_url` and `attributes`.
pub fn request_body(queue_url: &str, attributes: &[&str]) -> Vec<u8> {
    serde_json::json!({ "QueueUrl": queue_url, "AttributeNames": attributes })
        .to_string()
        .into_bytes()
}

/// The sum of `attributes` in a `GetQueueAttributes` answer; every one must be there and be a
/// whole number. A failed call's `__type` and message become the error.
pub fn read_answer(success: bool, body: &[u8], attributes: &[&str]) -> Result<u64, String> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|_| "the answer is not the JSON of GetQueueAttributes".to_string())?;
    if !success {
        let kind = json
            .get("__type")
            .and_then(Value::as_str)
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .unwrap_or_else(|| "an error".to_string());
        let message = json
            .get("message")
            .or_else(|| json.get("Message"))
            .and_then(Value::as_str)
            .map(|m| format!(": {}", m.chars().take(300).collect::<String>()))
            .unwrap_or_default();
        return Err(format!("SQS answered {kind}{message}"));
    }
    let found = json.get("Attributes").and_then(Value::as_object);
    let mut sum: u64 = 0;
    for name in attributes {
        let value = found
            .and_then(|a| a.get(*name))
            .ok_or_else(|| format!("metric {name} not found in SQS queue attributes"))?;
        let number = value
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| value.as_u64())
            .ok_or_else(|| format!("{name} is not a whole number"))?;
        sum = sum.saturating_add(number);
    }
    Ok(sum)
}

/// A client that follows no redirects (a signed request goes only where it was signed for).
fn build_client(tls: &ClientTls) -> Result<reqwest::Client, String> {
    http::client(tls, |builder| {
        builder.redirect(reqwest::redirect::Policy::none())
    })
}

/// The SigV4 headers of a POST of `body` to `endpoint` with `headers`, at `time`.
fn signed_headers(
    c: &SqsConfig,
    headers: &[(&'static str, String)],
    body: &[u8],
    time: SystemTime,
) -> Result<HeaderMap, String> {
    let creds = &c.credentials;
    let identity = Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.clone(),
        None,
        "ebb-trigger-authentication",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&c.region)
        .name("sqs")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing the request: {e}"))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        c.endpoint.as_str(),
        headers.iter().map(|(k, v)| (*k, v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("signing the request: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("signing the request: {e}"))?
        .into_parts();
    let mut map = HeaderMap::new();
    for (name, value) in headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(instructions.headers())
    {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| "signing the request: a header name is invalid".to_string())?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| format!("signing the request: {name} holds characters HTTP refuses"))?;
        // The session token is a credential; the signature is derived from one.
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

/// An `aws-sqs-queue` trigger.
pub struct SqsScaler {
    config: SqsConfig,
    lease: Lease<ClientTls, LimitedClient>,
}

impl fmt::Debug for SqsScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsScaler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SqsScaler {
    /// Parses the trigger and takes a lease on the shared HTTP client.
    pub fn new(trigger: &Trigger, pool: &SqsPool) -> Result<Self, ConfigError> {
        let config = SqsConfig::parse(trigger)?;
        Ok(Self {
            lease: pool.lease(ClientTls::default()),
            config,
        })
    }

    async fn messages(&self) -> Result<u64, ScalerError> {
        let c = &self.config;
        let client = self
            .lease
            .client(&c.source_name, c.timeout, || async {
                build_client(&ClientTls::default())
                    .map(LimitedClient::new)
                    .map_err(|message| c.error(message))
            })
            .await?;
        let body = request_body(&c.queue_url, &c.attributes);
        let host = match (c.endpoint.host_str(), c.endpoint.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        };
        let headers = [
            ("host", host),
            ("content-type", "application/x-amz-json-1.0".to_string()),
            ("x-amz-target", "AmazonSQS.GetQueueAttributes".to_string()),
        ];
        let signed =
            signed_headers(c, &headers, &body, SystemTime::now()).map_err(|e| c.error(e))?;
        let call = async {
            let _turn = client.turn().await;
            let response = client
                .client
                .post(c.endpoint.clone())
                .headers(signed)
                .body(body)
                .send()
                .await
                .map_err(|e| c.error(http::error_message(e)))?;
            let success = response.status().is_success();
            let status = response.status();
            let answer = http::read_body(response).await.map_err(|e| c.error(e))?;
            read_answer(success, &answer, &c.attributes).map_err(|e| {
                if success {
                    c.error(e)
                } else {
                    c.error(format!("HTTP {status}: {e}"))
                }
            })
        };
        tokio::time::timeout(c.timeout, call)
            .await
            .map_err(|_| ScalerError::Timeout {
                source_name: c.source_name.clone(),
                timeout: c.timeout,
            })?
    }
}

#[async_trait]
impl Scaler for SqsScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.config.metric_name.clone(),
            target: self.config.queue_length,
            target_type: self.config.metric_type,
        }]
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        if metric != self.config.metric_name {
            return Err(ScalerError::UnknownMetric(metric.to_string()));
        }
        let value = self.messages().await? as f64;
        Ok(MetricsAndActivity {
            values: vec![MetricValue {
                name: self.config.metric_name.clone(),
                value,
            }],
            active: value > self.config.activation_queue_length,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::strategy::Strategy;

    use super::*;

    /// Key-value pairs of a table row.
    type Pairs = &'static [(&'static str, &'static str)];

    const P: &str = "https://sqs.eu-west-1.amazonaws.com/account_id/DeleteArtifactQ";
    const A: &[(&str, &str)] = &[("awsAccessKeyId", "none"), ("awsSecretAccessKey", "none")];

    fn trigger(meta: &[(&str, &str)], auth: &[(&str, &str)], env: &[(&str, &str)]) -> Trigger {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Trigger {
            index: 0,
            trigger_type: "aws-sqs-queue".into(),
            metadata: map(meta),
            auth_params: map(auth),
            resolved_env: map(env),
            ..Default::default()
        }
    }

    /// KEDA's parse table (aws_sqs_queue_scaler_test.go), except its pod identity rows (ebb's
    /// operator refuses pod identities before a trigger is built) and the operator identity
    /// rows (refused: ebb signs with static keys only).
    #[test]
    fn keda_s_parse_rows() {
        const REGION: (&str, &str) = ("awsRegion", "eu-west-1");
        let rows: &[(Pairs, Pairs, Pairs, bool)] = &[
            (&[], A, &[], false),
            (
                &[("queueURL", P), ("queueLength", "1"), REGION],
                A,
                &[],
                true,
            ),
            (
                &[
                    ("queueURL", P),
                    ("queueLength", "1"),
                    REGION,
                    ("awsEndpoint", "http://localhost:4566"),
                ],
                A,
                &[],
                true,
            ),
            (
                &[
                    ("queueURL", "https://sqs.eu-west-1.amazonaws.com/account_id"),
                    ("queueLength", "1"),
                    REGION,
                ],
                A,
                &[],
                false,
            ),
            (
                &[
                    ("queueURL", "https://sqs.eu-west-1.amazonaws.com"),
                    ("queueLength", "1"),
                    REGION,
                ],
                A,
                &[],
                false,
            ),
            (
                &[("queueURL", P), ("queueLength", "1"), ("awsRegion", "")],
                A,
                &[],
                false,
            ),
            (
                &[("queueURL", P), ("queueLength", "1"), REGION],
                A,
                &[],
                true,
            ),
            (
                &[("queueURL", P), ("queueLength", "a"), REGION],
                A,
                &[],
                false,
            ),
            (
                &[("queueURL", P), ("activationQueueLength", "1"), REGION],
                A,
                &[],
                true,
            ),
            (
                &[("queueURL", P), ("activationQueueLength", "a"), REGION],
                A,
                &[],
                false,
            ),
            (
                &[("queueURL", P), REGION],
                &[("awsAccessKeyId", "none"), ("awsSecretAccessKey", "none")],
                &[],
                true,
            ),
            (
                &[("queueURL", P), REGION],
                &[
                    ("awsAccessKeyId", "none"),
                    ("awsSecretAccessKey", "none"),
                    ("awsSessionToken", "none"),
                ],
                &[],
                true,
            ),
            (
                &[("queueURL", P), REGION],
                &[("awsAccessKeyId", ""), ("awsSecretAccessKey", "none")],
                &[],
                false,
            ),
            (
                &[("queueURL", P), REGION],
                &[("awsAccessKeyId", "none"), ("awsSecretAccessKey", "")],
                &[],
                false,
            ),
            (
                &[("queueURL", P), REGION],
                &[
                    ("awsAccessKeyId", ""),
                    ("awsSecretAccessKey", "none"),
                    ("awsSessionToken", "none"),
                ],
                &[],
                false,
            ),
            (
                &[("queueURL", P), REGION],
                &[
                    ("awsAccessKeyId", "none"),
                    ("awsSecretAccessKey", ""),
                    ("awsSessionToken", "none"),
                ],
                &[],
                false,
            ),
            (&[("queueURL", "my-queue"), REGION], A, &[], true),
            (
                &[
                    ("queueURL", "my-queue"),
                    REGION,
                    ("scaleOnInFlight", "false"),
                ],
                A,
                &[],
                true,
            ),
            (
                &[
                    ("queueURL", "my-queue"),
                    REGION,
                    ("scaleOnInFlight", "true"),
                ],
                A,
                &[],
                true,
            ),
            (
                &[("queueURLFromEnv", "QUEUE_URL"), REGION],
                A,
                &[("QUEUE_URL", P)],
                true,
            ),
            (&[REGION], A, &[], false),
            (
                &[("queueURLFromEnv", "QUEUE_URL"), REGION],
                A,
                &[("QUEUE_URL", "")],
                false,
            ),
            (
                &[("queueURLFromEnv", "MISSING_ENV_VAR"), REGION],
                A,
                &[],
                false,
            ),
        ];
        for (i, (meta, auth, env, ok)) in rows.iter().enumerate() {
            let parsed = SqsConfig::parse(&trigger(meta, auth, env));
            assert_eq!(parsed.is_ok(), *ok, "row {}: {parsed:?}", i + 1);
        }
    }

    #[test]
    fn defaults_names_and_attributes_are_keda_s() {
        let c = SqsConfig::parse(&trigger(
            &[("queueURL", P), ("awsRegion", "eu-west-1")],
            A,
            &[],
        ))
        .unwrap();
        assert_eq!(c.queue_length, 5.0);
        assert_eq!(c.activation_queue_length, 0.0);
        assert_eq!(c.metric_name, "s0-aws-sqs-DeleteArtifactQ");
        assert_eq!(c.attributes, [VISIBLE, IN_FLIGHT]);
        assert_eq!(c.endpoint.as_str(), "https://sqs.eu-west-1.amazonaws.com/");
        let c = SqsConfig::parse(&trigger(
            &[
                ("queueURL", P),
                ("awsRegion", "eu-west-1"),
                ("scaleOnInFlight", "false"),
                ("scaleOnDelayed", "true"),
            ],
            A,
            &[],
        ))
        .unwrap();
        assert_eq!(c.attributes, [VISIBLE, DELAYED]);
        for (url, name) in [
            (P, Some("DeleteArtifactQ")),
            ("/acc/q", Some("q")),
            ("http://localhost:4566/000000000000/myq?x=1", Some("myq")),
            ("my-queue", Some("my-queue")),
            ("https://host/acc/q/", None),
            ("foo:bar", None),
        ] {
            assert_eq!(queue_name(url).as_deref(), name, "{url}");
        }
    }

    #[test]
    fn roles_and_the_operator_identity_are_refused_with_what_to_do() {
        let base = [("queueURL", P), ("awsRegion", "eu-west-1")];
        let e = SqsConfig::parse(&trigger(
            &base,
            &[("awsRoleArn", "arn:aws:iam::1:role/x")],
            &[],
        ))
        .unwrap_err();
        assert_eq!(e.key, "awsRoleArn");
        assert!(e.problem.contains("awsAccessKeyID"), "{e}");
        let mut meta = base.to_vec();
        meta.push(("identityOwner", "operator"));
        let e = SqsConfig::parse(&trigger(&meta, &[], &[])).unwrap_err();
        assert_eq!(e.key, "identityOwner");
        // Keys from the metadata and the environment, KEDA's last resort.
        let mut meta = base.to_vec();
        meta.push(("awsAccessKeyIDFromEnv", "KEY"));
        meta.push(("awsSecretAccessKeyFromEnv", "SECRET"));
        let c = SqsConfig::parse(&trigger(
            &meta,
            &[],
            &[("KEY", "AKID"), ("SECRET", "hunter2")],
        ))
        .unwrap();
        assert_eq!(c.credentials.access_key_id, "AKID");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn the_answer_is_the_sum_of_the_asked_attributes() {
        let body = br#"{"Attributes":{"ApproximateNumberOfMessages":"200","ApproximateNumberOfMessagesNotVisible":"100","ApproximateNumberOfMessagesDelayed":"50"}}"#;
        assert_eq!(read_answer(true, body, &[VISIBLE, IN_FLIGHT]), Ok(300));
        assert_eq!(read_answer(true, body, &[VISIBLE]), Ok(200));
        assert_eq!(
            read_answer(true, body, &[VISIBLE, IN_FLIGHT, DELAYED]),
            Ok(350)
        );
        let big = br#"{"Attributes":{"ApproximateNumberOfMessages":"2147483648"}}"#;
        assert_eq!(read_answer(true, big, &[VISIBLE]), Ok(2_147_483_648));
        assert!(read_answer(true, br#"{"Attributes":{}}"#, &[VISIBLE]).is_err());
        assert!(
            read_answer(
                true,
                br#"{"Attributes":{"ApproximateNumberOfMessages":"NotInt"}}"#,
                &[VISIBLE]
            )
            .is_err()
        );
        // AWS spells the message `message`, ElasticMQ `Message`.
        for body in [
            br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#.as_slice(),
            br#"{"Message":"The specified queue does not exist.","__type":"com.amazonaws.sqs#QueueDoesNotExist"}"#,
        ] {
            assert_eq!(
                read_answer(false, body, &[VISIBLE]),
                Err("SQS answered QueueDoesNotExist: The specified queue does not exist.".into())
            );
        }
        assert_eq!(
            String::from_utf8(request_body(P, &[VISIBLE])).unwrap(),
            format!(r#"{{"AttributeNames":["ApproximateNumberOfMessages"],"QueueUrl":"{P}"}}"#)
        );
    }

    /// The signature of a fixed request matches one computed independently of the crate, by
    /// the SigV4 steps AWS documents (canonical request, string to sign, derived key), with
    /// Python's hashlib and hmac.
    #[test]
    fn requests_are_signed_with_sigv4_for_sqs() {
        let c = SqsConfig::parse(&trigger(
            &[("queueURL", P), ("awsRegion", "eu-west-1")],
            &[
                ("awsAccessKeyID", "AKIDEXAMPLE"),
                (
                    "awsSecretAccessKey",
                    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                ),
                ("awsSessionToken", "TOKEN"),
            ],
            &[],
        ))
        .unwrap();
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        let body = request_body(P, &[VISIBLE]);
        let headers = [
            ("host", "sqs.eu-west-1.amazonaws.com".to_string()),
            ("content-type", "application/x-amz-json-1.0".to_string()),
            ("x-amz-target", "AmazonSQS.GetQueueAttributes".to_string()),
        ];
        let signed = signed_headers(&c, &headers, &body, time).unwrap();
        assert_eq!(signed["x-amz-date"], "20150830T123600Z");
        assert_eq!(signed["x-amz-security-token"], "TOKEN");
        let auth = signed["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/sqs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature="),
            "{auth}"
        );
        assert!(
            auth.ends_with(
                "Signature=49e2d941b7c2d3cb3e010853cd2ebc54bece608ec4cd461d8ed7ae0bc03fd279"
            ),
            "{auth}"
        );
        assert!(signed["authorization"].is_sensitive());
    }

    const KEYS: &[&str] = &[
        "queueURL",
        "queueURLFromEnv",
        "queueLength",
        "activationQueueLength",
        "awsRegion",
        "awsEndpoint",
        "scaleOnInFlight",
        "scaleOnDelayed",
        "identityOwner",
        "awsAccessKeyID",
        "awsAccessKeyIDFromEnv",
        "awsSecretAccessKeyFromEnv",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        #[test]
        fn no_metadata_makes_the_parser_panic_or_leak_the_secret(
            metadata in proptest::collection::btree_map(
                proptest::sample::select(KEYS).prop_map(String::from), "[a-zA-Z0-9:/._?#@-]{0,30}", 0..8),
        ) {
            use proptest::prelude::*;
            let t = Trigger {
                index: 0,
                trigger_type: "aws-sqs-queue".into(),
                metadata,
                auth_params: [
                    ("awsAccessKeyID".to_string(), "AKID".to_string()),
                    ("awsSecretAccessKey".to_string(), "hunter2".to_string()),
                ].into(),
                resolved_env: [("E".to_string(), "hunter2".to_string())].into(),
                ..Default::default()
            };
            match SqsConfig::parse(&t) {
                Ok(c) => {
                    prop_assert!(c.queue_length > 0.0 && c.metric_name.starts_with("s0-aws-sqs-"));
                    let shown = format!("{c:?}");
                    prop_assert!(!shown.contains("hunter2"));
                }
                Err(e) => prop_assert!(!e.to_string().contains("hunter2"), "{e}"),
            }
        }

        #[test]
        fn any_body_reads_as_a_count_or_an_error(
            success in proptest::bool::ANY,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            let _ = read_answer(success, &body, &[VISIBLE, IN_FLIGHT, DELAYED]);
        }
    }
}
