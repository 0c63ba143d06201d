//! `kafka` and `apache-kafka`: a consumer group's lag on its topics, as KEDA's two Kafka
//! scalers read it.
//!
//! This file holds what does not touch the network: the triggers' metadata as KEDA 2.20 reads
//! it (the two types differ in small ways: list-valued `topic`, strict booleans and which of
//! `<key>` and `<key>FromEnv` wins for `apache-kafka`), and the lag arithmetic of [`total_lag`]:
//! per partition `latest - committed`, KEDA's handling of a group with no committed offset
//! (`offsetResetPolicy`, `scaleToZeroOnInvalidOffset`), `excludePersistentLag`, and the cap that
//! keeps the HPA from asking for more consumers than there are partitions. The broker client
//! (shared connections per cluster and credentials, one metadata cache) is in [`kafka_conn`].
//!
//! A read: the topics' partitions from the cluster's cached metadata (a topic it does not know
//! makes it ask again once), the group's committed offsets from its coordinator, the latest
//! offsets from the partitions' leaders, then [`total_lag`].
//!
//! [`kafka_conn`]: super::kafka_conn

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::kafka_conn::{ClusterKey, KafkaCluster, KafkaError};
use super::kafka_oauth::{OAuthSettings, parse_extensions};
use crate::error::{ConfigError, ScalerError};
use crate::metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
use crate::pool::{Lease, SharedPool};
use crate::registry::Registry;
use crate::scaler::Scaler;
use crate::tls::{ClientTls, from_auth_params};
use crate::trigger::{MetricTargetType, Source, Trigger};

const META: &[Source] = &[Source::Metadata];
const AUTH: &[Source] = &[Source::Auth];

/// How long one read may take: connecting and authenticating included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The clients `kafka` and `apache-kafka` triggers share, one per cluster and identity.
pub type KafkaPool = SharedPool<ClusterKey, KafkaCluster>;

/// Registers `kafka` and `apache-kafka`; both share one pool.
pub fn register(registry: &mut Registry) {
    let pool = KafkaPool::new();
    for flavor in [Flavor::Kafka, Flavor::ApacheKafka] {
        let pool = pool.clone();
        registry.register(flavor.type_name(), move |t| {
            Ok(Box::new(KafkaScaler::new(t, flavor, &pool)?))
        });
    }
}

/// Which of KEDA's two Kafka triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `kafka` (KEDA's sarama-based scaler).
    Kafka,
    /// `apache-kafka` (KEDA's kafka-go-based scaler, "experimental").
    ApacheKafka,
}

impl Flavor {
    /// The trigger type KEDA names it by.
    pub fn type_name(self) -> &'static str {
        match self {
            Flavor::Kafka => "kafka",
            Flavor::ApacheKafka => "apache-kafka",
        }
    }
}

/// What a partition without a committed offset counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetResetPolicy {
    /// The group would start at the end: 1 (so the target wakes and commits), or 0 with
    /// `scaleToZeroOnInvalidOffset`.
    Latest,
    /// The group would start at the beginning: the whole partition, or 0 with
    /// `scaleToZeroOnInvalidOffset`.
    Earliest,
}

/// SASL credentials. Secrets: never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Sasl {
    /// No SASL.
    None,
    /// SASL/PLAIN.
    Plain {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// SCRAM-SHA-256 or SCRAM-SHA-512 (`sha512`).
    Scram {
        /// SHA-512 rather than SHA-256.
        sha512: bool,
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// SASL/OAUTHBEARER with a token from an OAuth 2.0 endpoint (client credentials).
    OAuthBearer(OAuthSettings),
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sasl::None => "None",
            Sasl::Plain { .. } => "Plain",
            Sasl::Scram { sha512: false, .. } => "ScramSha256",
            Sasl::Scram { sha512: true, .. } => "ScramSha512",
            Sasl::OAuthBearer(_) => "OAuthBearer",
        })
    }
}

/// How the lag of the partitions becomes the metric.
#[derive(Debug, Clone, PartialEq)]
pub struct LagSettings {
    /// `lagThreshold`: the target per replica.
    pub lag_threshold: f64,
    /// `offsetResetPolicy`.
    pub offset_reset_policy: OffsetResetPolicy,
    /// `scaleToZeroOnInvalidOffset`.
    pub scale_to_zero_on_invalid_offset: bool,
    /// `excludePersistentLag`.
    pub exclude_persistent_lag: bool,
    /// `allowIdleConsumers`.
    pub allow_idle_consumers: bool,
    /// `limitToPartitionsWithLag`.
    pub limit_to_partitions_with_lag: bool,
    /// `ensureEvenDistributionOfPartitions`.
    pub ensure_even_distribution: bool,
}

/// Parsed trigger metadata.
#[derive(Clone, PartialEq)]
pub struct KafkaConfig {
    /// Which trigger type.
    pub flavor: Flavor,
    /// `bootstrapServers`, as `host:port`.
    pub brokers: Vec<String>,
    /// `consumerGroup`.
    pub group: String,
    /// `topic`: empty for every topic the group has offsets for (`kafka`); a list for
    /// `apache-kafka`.
    pub topics: Vec<String>,
    /// `partitionLimitation`: the partitions counted, all when `None`.
    pub partitions: Option<Vec<i32>>,
    /// How lag becomes the metric.
    pub lag: LagSettings,
    /// `activationLagThreshold`.
    pub activation_lag_threshold: f64,
    /// SASL mechanism and credentials.
    pub sasl: Sasl,
    /// TLS settings when `tls: enable`.
    pub tls: Option<ClientTls>,
    /// How the HPA compares the metric.
    pub metric_type: MetricTargetType,
    /// `s<i>-kafka-<topic>` or `s<i>-kafka-<group>-topics`.
    pub metric_name: String,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("flavor", &self.flavor)
            .field("brokers", &self.brokers)
            .field("group", &self.group)
            .field("topics", &self.topics)
            .field("partitions", &self.partitions)
            .field("lag", &self.lag)
            .field("activation_lag_threshold", &self.activation_lag_threshold)
            .field("sasl", &self.sasl)
            .field("tls", &self.tls.is_some())
            .field("metric_name", &self.metric_name)
            .finish_non_exhaustive()
    }
}

/// `partitionLimitation` as KEDA reads it: comma-separated partition numbers and inclusive
/// ranges (`1-4,8,10-12`); a reversed range is empty. `None` when the text is not that.
pub fn parse_partitions(text: &str) -> Option<Vec<i32>> {
    let mut out = Vec::new();
    for term in text.split(',') {
        let term = term.trim();
        match term.split('-').collect::<Vec<_>>().as_slice() {
            [one] => out.push(one.trim().parse().ok()?),
            [from, to] => {
                let (from, to): (i32, i32) = (from.trim().parse().ok()?, to.trim().parse().ok()?);
                out.extend(from..=to);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A Kafka version as sarama accepts one (`2.8.0`, `0.10.2.0`); ebb negotiates versions with
/// the broker and only checks the text.
pub fn valid_version(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    let numeric = parts
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    numeric
        && if text.starts_with('0') {
            parts.len() == 4
        } else {
            parts.len() == 3
        }
}

impl KafkaConfig {
    /// Parses a `kafka` or `apache-kafka` trigger.
    pub fn parse(t: &Trigger, flavor: Flavor) -> Result<Self, ConfigError> {
        // `kafka` takes `<key>FromEnv` over `<key>`; `apache-kafka` the other way round.
        let env_first: &[Source] = match flavor {
            Flavor::Kafka => &[Source::Env, Source::Metadata],
            Flavor::ApacheKafka => &[Source::Metadata, Source::Env],
        };
        let split = |text: &str| -> Vec<String> {
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let brokers = split(&t.required("bootstrapServers", env_first)?.value);
        if brokers.is_empty() {
            return Err(t.error("bootstrapServers", "expected host:port[,host:port...]"));
        }
        let group = t
            .required("consumerGroup", env_first)?
            .value
            .trim()
            .to_string();
        let topic = t
            .lookup("topic", env_first)?
            .map(|f| f.value.trim().to_string());
        let topics = match (flavor, topic) {
            (_, None) => Vec::new(),
            (Flavor::Kafka, Some(topic)) => vec![topic],
            (Flavor::ApacheKafka, Some(list)) => split(&list),
        };
        let partitions = match t.lookup("partitionLimitation", META)? {
            Some(found) if !topics.is_empty() => {
                Some(parse_partitions(&found.value).ok_or_else(|| {
                    t.error(
                        "partitionLimitation",
                        "expected partition numbers and ranges, e.g. 1,2,10-12",
                    )
                })?)
            }
            _ => None,
        };
        let boolean = |key: &str| -> Result<bool, ConfigError> {
            match flavor {
                Flavor::Kafka => t.bool_or(key, META, false),
                // Read as JSON by KEDA's typed config: only `true` and `false`.
                Flavor::ApacheKafka => match t.lookup(key, META)? {
                    None => Ok(false),
                    Some(found) => match found.value.trim() {
                        "true" => Ok(true),
                        "false" => Ok(false),
                        _ => Err(t.error(key, "expected true or false")),
                    },
                },
            }
        };
        let lag_threshold = t.threshold_or("lagThreshold", 10.0)?;
        if lag_threshold == 0.0 {
            return Err(t.error("lagThreshold", "expected a number above 0"));
        }
        let offset_reset_policy = match t.lookup("offsetResetPolicy", META)? {
            None => OffsetResetPolicy::Latest,
            Some(found) => match found.value.trim() {
                "latest" => OffsetResetPolicy::Latest,
                "earliest" => OffsetResetPolicy::Earliest,
                _ => return Err(t.error("offsetResetPolicy", "expected latest or earliest")),
            },
        };
        let lag = LagSettings {
            lag_threshold,
            offset_reset_policy,
            scale_to_zero_on_invalid_offset: boolean("scaleToZeroOnInvalidOffset")?,
            exclude_persistent_lag: boolean("excludePersistentLag")?,
            allow_idle_consumers: boolean("allowIdleConsumers")?,
            limit_to_partitions_with_lag: boolean("limitToPartitionsWithLag")?,
            ensure_even_distribution: boolean("ensureEvenDistributionOfPartitions")?,
        };
        if lag.limit_to_partitions_with_lag && lag.allow_idle_consumers {
            return Err(t.error(
                "limitToPartitionsWithLag",
                "cannot be set together with allowIdleConsumers",
            ));
        }
        if lag.limit_to_partitions_with_lag && lag.ensure_even_distribution {
            return Err(t.error(
                "limitToPartitionsWithLag",
                "cannot be set together with ensureEvenDistributionOfPartitions",
            ));
        }
        if topics.is_empty() {
            if lag.limit_to_partitions_with_lag {
                return Err(t.error("limitToPartitionsWithLag", "needs a topic"));
            }
            if lag.ensure_even_distribution && flavor == Flavor::Kafka {
                return Err(t.error("ensureEvenDistributionOfPartitions", "needs a topic"));
            }
        }
        if flavor == Flavor::Kafka
            && let Some(version) = t.lookup("version", META)?
            && !valid_version(version.value.trim())
        {
            return Err(t.error("version", "expected a Kafka version such as 2.8.0"));
        }
        let name = if topics.is_empty() {
            format!("kafka-{group}-topics")
        } else {
            format!("kafka-{}", topics.join(","))
        };
        Ok(Self {
            sasl: parse_sasl(t, flavor)?,
            tls: parse_tls(t, flavor)?,
            activation_lag_threshold: t.threshold_or("activationLagThreshold", 0.0)?,
            metric_type: t.metric_type(
                &[MetricTargetType::AverageValue, MetricTargetType::Value],
                MetricTargetType::AverageValue,
            )?,
            metric_name: metric_name(t.index, &name),
            flavor,
            brokers,
            group,
            topics,
            partitions,
            lag,
        })
    }
}

/// `sasl` from the metadata, else the TriggerAuthentication (KEDA 2.20 documents that the
/// ScaledObject's value wins), with `username` and `password` from the TriggerAuthentication.
fn parse_sasl(t: &Trigger, flavor: Flavor) -> Result<Sasl, ConfigError> {
    let mode = t
        .lookup("sasl", &[Source::Metadata, Source::Auth])?
        .map(|f| f.value.trim().to_string())
        .unwrap_or_else(|| "none".to_string());
    let credentials = || -> Result<(String, String), ConfigError> {
        let username = t.required("username", AUTH)?.value.trim().to_string();
        let password = t.required("password", AUTH)?.value.trim().to_string();
        Ok((username, password))
    };
    let not_implemented = |what: &str| {
        t.error(
            "sasl",
            format!(
                "{what} is not implemented in ebb; use plaintext, scram_sha256 or scram_sha512"
            ),
        )
    };
    match mode.as_str() {
        "none" => Ok(Sasl::None),
        "plaintext" => {
            let (username, password) = credentials()?;
            Ok(Sasl::Plain { username, password })
        }
        "scram_sha256" | "scram_sha512" => {
            let (username, password) = credentials()?;
            Ok(Sasl::Scram {
                sha512: mode == "scram_sha512",
                username,
                password,
            })
        }
        "oauthbearer" if flavor == Flavor::Kafka => parse_oauth(t, credentials),
        "gssapi" => Err(not_implemented("gssapi (Kerberos)")),
        "aws_msk_iam" if flavor == Flavor::ApacheKafka => Err(not_implemented("aws_msk_iam")),
        _ => Err(t.error(
            "sasl",
            "expected none, plaintext, scram_sha256, scram_sha512, oauthbearer or gssapi",
        )),
    }
}

/// `sasl: oauthbearer`: `saslTokenProvider` (`bearer`, the default; `aws_msk_iam` is not
/// implemented), and for a bearer token the client id and secret in `username` and `password`,
/// `oauthTokenEndpointUri` (required), `scopes` and `oauthExtensions`, all from the
/// TriggerAuthentication, as KEDA reads them.
fn parse_oauth(
    t: &Trigger,
    credentials: impl Fn() -> Result<(String, String), ConfigError>,
) -> Result<Sasl, ConfigError> {
    let provider = t
        .lookup("saslTokenProvider", AUTH)?
        .map(|f| f.value.trim().to_string())
        .unwrap_or_else(|| "bearer".into());
    match provider.as_str() {
        "bearer" => {}
        "aws_msk_iam" => {
            return Err(t.error(
                "saslTokenProvider",
                "aws_msk_iam is not implemented in ebb; use bearer",
            ));
        }
        _ => return Err(t.error("saslTokenProvider", "expected bearer or aws_msk_iam")),
    }
    let (client_id, client_secret) = credentials()?;
    let token_url = t
        .required("oauthTokenEndpointUri", AUTH)?
        .value
        .trim()
        .to_string();
    match reqwest::Url::parse(&token_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {}
        _ => {
            return Err(t.error(
                "oauthTokenEndpointUri",
                "expected an http:// or https:// URL",
            ));
        }
    }
    let scopes = t
        .lookup("scopes", AUTH)?
        .map(|f| {
            f.value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let extensions = match t.lookup("oauthExtensions", AUTH)? {
        None => Vec::new(),
        Some(f) => parse_extensions(&f.value).map_err(|e| t.error("oauthExtensions", e))?,
    };
    Ok(Sasl::OAuthBearer(OAuthSettings {
        token_url,
        client_id,
        client_secret,
        scopes,
        extensions,
    }))
}

/// `tls: enable` (metadata, else TriggerAuthentication) with `ca`, `cert`, `key` and
/// `keyPassword` from the TriggerAuthentication and, for `kafka`, `unsafeSsl` from the metadata.
fn parse_tls(t: &Trigger, flavor: Flavor) -> Result<Option<ClientTls>, ConfigError> {
    let enabled = match t.lookup("tls", &[Source::Metadata, Source::Auth])? {
        None => false,
        Some(found) => match found.value.trim() {
            "enable" => true,
            "disable" => false,
            _ => return Err(t.error("tls", "expected enable or disable")),
        },
    };
    if !enabled {
        return Ok(None);
    }
    let mut tls = from_auth_params(t)?;
    if flavor == Flavor::Kafka {
        tls.unsafe_ssl = t.bool_or("unsafeSsl", META, false)?;
    }
    Ok(Some(tls))
}

/// The client side of SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), as Kafka runs it in
/// SaslAuthenticate rounds: client-first, server-first, client-final with the proof,
/// server-final with the server's signature, which is checked.
pub struct Scram {
    sha512: bool,
    password: String,
    nonce: String,
    client_first_bare: String,
    auth_message: String,
    salted: Vec<u8>,
}

impl fmt::Debug for Scram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scram")
            .field("sha512", &self.sha512)
            .finish_non_exhaustive()
    }
}

fn hmac(sha512: bool, key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    if sha512 {
        let mut mac = <Hmac<sha2::Sha512> as KeyInit>::new_from_slice(key).expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    } else {
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }
}

fn hash(sha512: bool, data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    if sha512 {
        sha2::Sha512::digest(data).to_vec()
    } else {
        sha2::Sha256::digest(data).to_vec()
    }
}

impl Scram {
    /// A SCRAM exchange for `username` with a fresh random nonce.
    pub fn new(username: &str, password: &str, sha512: bool) -> Self {
        let mut random = [0u8; 24];
        // The OS's random source; if it fails, the time is no worse than no exchange at all
        // for a nonce that only has to be unique.
        if getrandom::fill(&mut random).is_err() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                .to_le_bytes();
            random[..16].copy_from_slice(&now);
        }
        use base64::Engine;
        let nonce = base64::engine::general_purpose::STANDARD_NO_PAD.encode(random);
        Self::with_nonce(username, password, sha512, &nonce)
    }

    fn with_nonce(username: &str, password: &str, sha512: bool, nonce: &str) -> Self {
        let name = username.replace('=', "=3D").replace(',', "=2C");
        Self {
            sha512,
            password: password.to_string(),
            nonce: nonce.to_string(),
            client_first_bare: format!("n={name},r={nonce}"),
            auth_message: String::new(),
            salted: Vec::new(),
        }
    }

    /// The client-first message.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// The client-final message answering `server_first`, with the proof.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<String, String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let text = std::str::from_utf8(server_first)
            .map_err(|_| "the server's first SCRAM message is not text".to_string())?;
        let field = |name: &str| {
            text.split(',')
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        if let Some(error) = field("e") {
            return Err(format!("the server refused: {error}"));
        }
        let nonce = field("r").ok_or("the server sent no nonce")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err("the server's nonce does not extend ebb's".to_string());
        }
        let salt = field("s")
            .and_then(|s| b64.decode(s).ok())
            .ok_or("the server sent no salt")?;
        let rounds: u32 = field("i")
            .and_then(|i| i.parse().ok())
            .filter(|i| *i > 0)
            .ok_or("the server sent no iteration count")?;
        let mut salted = vec![0u8; if self.sha512 { 64 } else { 32 }];
        if self.sha512 {
            pbkdf2::pbkdf2_hmac::<sha2::Sha512>(
                self.password.as_bytes(),
                &salt,
                rounds,
                &mut salted,
            );
        } else {
            pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                self.password.as_bytes(),
                &salt,
                rounds,
                &mut salted,
            );
        }
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let client_key = hmac(self.sha512, &salted, b"Client Key");
        let stored_key = hash(self.sha512, &client_key);
        let signature = hmac(self.sha512, &stored_key, self.auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.salted = salted;
        Ok(format!("{without_proof},p={}", b64.encode(proof)))
    }

    /// Checks the server's signature in `server_final`: the server knew the password too.
    pub fn verify_server(&self, server_final: &[u8]) -> Result<(), String> {
        use base64::Engine;
        let text = std::str::from_utf8(server_final).unwrap_or_default();
        if let Some(error) = text.strip_prefix("e=") {
            return Err(format!("the server refused: {error}"));
        }
        let server_key = hmac(self.sha512, &self.salted, b"Server Key");
        let expected = hmac(self.sha512, &server_key, self.auth_message.as_bytes());
        let got = text
            .strip_prefix("v=")
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok());
        if got.as_deref() == Some(expected.as_slice()) {
            Ok(())
        } else {
            Err("the server's SCRAM signature is wrong".to_string())
        }
    }
}

/// One partition's offsets, as the broker answered them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset; -1 when it has none.
    pub committed: i64,
    /// The partition's latest offset (its high watermark); `None` when ListOffsets did not
    /// answer for it.
    pub latest: Option<i64>,
}

/// What the partitions add up to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TotalLag {
    /// The metric: the lag, capped as the settings say.
    pub metric: f64,
    /// The lag persistent partitions included: what activation compares.
    pub with_persistent: i64,
}

/// Committed offsets seen at the previous read, for `excludePersistentLag`.
pub type Previous = BTreeMap<(String, i32), i64>;

/// One partition's (lag, lag with persistent partitions included), as KEDA counts them.
fn partition_lag(s: &LagSettings, p: &PartitionOffsets, previous: &mut Previous) -> (i64, i64) {
    if p.committed == -1 {
        if s.scale_to_zero_on_invalid_offset {
            return (0, 0);
        }
        return match (s.offset_reset_policy, p.latest) {
            (OffsetResetPolicy::Latest, _) => (1, 1),
            (OffsetResetPolicy::Earliest, Some(latest)) => (latest, latest),
            (OffsetResetPolicy::Earliest, None) => (0, 0),
        };
    }
    let Some(latest) = p.latest else {
        return (0, 0);
    };
    let lag = latest.saturating_sub(p.committed);
    if s.exclude_persistent_lag {
        let key = (p.topic.clone(), p.partition);
        if previous.get(&key) == Some(&p.committed) {
            return (0, lag);
        }
        previous.insert(key, p.committed);
    }
    (lag, lag)
}

/// The group's total lag over `partitions`, capped unless idle consumers are allowed: the
/// metric asks for at most one replica per partition (per partition with lag, with
/// `limitToPartitionsWithLag`), compared with KEDA's integer division; with
/// `ensureEvenDistributionOfPartitions` it is rounded up to a replica count that divides the
/// partitions evenly.
pub fn total_lag(
    s: &LagSettings,
    partitions: &[PartitionOffsets],
    previous: &mut Previous,
) -> TotalLag {
    let mut lag: i64 = 0;
    let mut with_persistent: i64 = 0;
    let mut with_lag: i64 = 0;
    for p in partitions {
        let (l, w) = partition_lag(s, p, previous);
        lag = lag.saturating_add(l);
        with_persistent = with_persistent.saturating_add(w);
        if l > 0 {
            with_lag += 1;
        }
    }
    let count = partitions.iter().filter(|p| p.latest.is_some()).count() as i64;
    let threshold = s.lag_threshold;
    let mut metric = lag as f64;
    if !s.allow_idle_consumers || s.limit_to_partitions_with_lag || s.ensure_even_distribution {
        let mut upper = count;
        if s.ensure_even_distribution {
            let factor = (1..=count)
                .find(|f| count % f == 0 && *f as f64 * threshold >= metric)
                .unwrap_or(count);
            metric = factor as f64 * threshold;
        }
        if s.limit_to_partitions_with_lag {
            upper = with_lag;
        }
        if (metric / threshold).floor() > upper as f64 {
            metric = upper as f64 * threshold;
        }
    }
    TotalLag {
        metric,
        with_persistent,
    }
}

/// The shared client a trigger uses: its servers, SASL identity and TLS settings.
fn cluster_key(config: &KafkaConfig) -> ClusterKey {
    ClusterKey {
        brokers: config.brokers.clone(),
        sasl: config.sasl.clone(),
        tls: config.tls.clone(),
    }
}

/// A `kafka` or `apache-kafka` trigger.
pub struct KafkaScaler {
    config: KafkaConfig,
    lease: Lease<ClusterKey, KafkaCluster>,
    previous: Mutex<Previous>,
    source_name: String,
}

impl fmt::Debug for KafkaScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaScaler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KafkaScaler {
    /// Parses the trigger and takes a lease on its cluster's shared client.
    pub fn new(trigger: &Trigger, flavor: Flavor, pool: &KafkaPool) -> Result<Self, ConfigError> {
        let config = KafkaConfig::parse(trigger, flavor)?;
        let key = cluster_key(&config);
        Ok(Self {
            source_name: format!("kafka {}", config.brokers.join(",")),
            lease: pool.lease(key),
            previous: Mutex::new(Previous::new()),
            config,
        })
    }

    fn error(&self, message: impl Into<String>) -> ScalerError {
        ScalerError::Source {
            source_name: self.source_name.clone(),
            message: message.into(),
        }
    }

    /// The offsets of every partition the trigger counts.
    async fn offsets(&self, cluster: &KafkaCluster) -> Result<Vec<PartitionOffsets>, KafkaError> {
        let c = &self.config;
        // The topics: as named, or every topic the group has committed offsets for.
        let (topics, committed_all) = if c.topics.is_empty() {
            let committed = cluster.committed(&c.group, None).await?;
            let mut topics: Vec<String> = committed.keys().map(|(t, _)| t.clone()).collect();
            topics.dedup();
            (topics, Some(committed))
        } else {
            (c.topics.clone(), None)
        };
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let mut layout = cluster.topics(false).await?;
        if topics.iter().any(|t| layout.get(t).is_none()) {
            layout = cluster.topics(true).await?;
        }
        let mut wanted: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        let mut leaders = Vec::new();
        for topic in &topics {
            let Some(found) = layout.get(topic) else {
                if c.flavor == Flavor::ApacheKafka {
                    // kafka-go's scaler counts nothing for a topic the cluster does not have.
                    continue;
                }
                return Err(KafkaError::Broker(format!(
                    "topic {topic:?} does not exist"
                )));
            };
            for (partition, leader) in &found.partitions {
                if c.partitions
                    .as_ref()
                    .is_some_and(|only| !only.contains(partition))
                {
                    continue;
                }
                wanted.entry(topic.clone()).or_default().push(*partition);
                leaders.push((topic.clone(), *partition, *leader));
            }
            if !c.topics.is_empty() && !wanted.contains_key(topic) {
                return Err(KafkaError::Broker(format!(
                    "expected at least one active partition within the topic {topic:?}"
                )));
            }
        }
        let committed = match committed_all {
            Some(all) => all,
            None => cluster.committed(&c.group, Some(&wanted)).await?,
        };
        let latest = cluster.latest(&leaders).await?;
        Ok(leaders
            .into_iter()
            .map(|(topic, partition, _)| {
                let key = (topic, partition);
                PartitionOffsets {
                    committed: committed.get(&key).copied().unwrap_or(-1),
                    latest: latest.get(&key).copied(),
                    topic: key.0,
                    partition,
                }
            })
            .collect())
    }

    async fn read(&self) -> Result<TotalLag, ScalerError> {
        let key = cluster_key(&self.config);
        let cluster = self
            .lease
            .client(&self.source_name, TIMEOUT, || async move {
                KafkaCluster::connect(key)
                    .await
                    .map_err(|e| self.error(e.to_string()))
            })
            .await?;
        let offsets = match tokio::time::timeout(TIMEOUT, self.offsets(&cluster)).await {
            Err(_) => {
                // A connection stuck mid-request is out of step: start afresh.
                self.lease.invalidate(&cluster).await;
                return Err(ScalerError::Timeout {
                    source_name: self.source_name.clone(),
                    timeout: TIMEOUT,
                });
            }
            Ok(Err(e @ KafkaError::Connection(_))) => {
                self.lease.invalidate(&cluster).await;
                return Err(self.error(e.to_string()));
            }
            Ok(Err(e)) => return Err(self.error(e.to_string())),
            Ok(Ok(offsets)) => offsets,
        };
        let mut previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(total_lag(&self.config.lag, &offsets, &mut previous))
    }
}

#[async_trait]
impl Scaler for KafkaScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.config.metric_name.clone(),
            target: self.config.lag.lag_threshold,
            target_type: self.config.metric_type,
        }]
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        if metric != self.config.metric_name {
            return Err(ScalerError::UnknownMetric(metric.to_string()));
        }
        let lag = self.read().await?;
        Ok(MetricsAndActivity {
            values: vec![MetricValue {
                name: self.config.metric_name.clone(),
                value: lag.metric,
            }],
            active: lag.with_persistent as f64 > self.config.activation_lag_threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key-value pairs of a table row.
    type Pairs = &'static [(&'static str, &'static str)];

    fn trigger(meta: Pairs, auth: Pairs) -> Trigger {
        let map = |pairs: Pairs| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Trigger {
            index: 0,
            trigger_type: "kafka".into(),
            metadata: map(meta),
            auth_params: map(auth),
            ..Default::default()
        }
    }

    const B: (&str, &str) = ("bootstrapServers", "foobar:9092");
    const G: (&str, &str) = ("consumerGroup", "my-group");
    const T: (&str, &str) = ("topic", "my-topic");

    /// KEDA's `kafka` parse table (kafka_scaler_test.go), each row with and without SASL/PLAIN
    /// credentials in the TriggerAuthentication.
    #[test]
    fn keda_s_kafka_parse_rows() {
        let rows: &[(Pairs, bool)] = &[
            (&[], false),
            (&[B], false),
            (&[B, G], true),
            (&[B, G, ("partitionLimitation", "1,2,3,4,5,6")], true),
            (&[B, G, ("partitionLimitation", "           ")], true),
            (&[B, G, ("partitionLimitation", "")], true),
            (&[B, G, T, ("version", "1.2.3.4")], false),
            (&[B, G, T, ("lagThreshold", "-1")], false),
            (&[B, G, T, ("lagThreshold", "0")], false),
            (
                &[
                    B,
                    G,
                    T,
                    ("lagThreshold", "1000000"),
                    ("activationLagThreshold", "0"),
                ],
                true,
            ),
            (
                &[
                    B,
                    G,
                    T,
                    ("lagThreshold", "10"),
                    ("activationLagThreshold", "AA"),
                ],
                false,
            ),
            (
                &[
                    B,
                    G,
                    T,
                    ("lagThreshold", "10"),
                    ("activationLagThreshold", "0"),
                ],
                true,
            ),
            (&[B, G, T], true),
            (&[B, G, T, ("partitionLimitation", "1,2,3,4")], true),
            (&[B, G, T, ("partitionLimitation", "1-4")], true),
            (&[B, G, T, ("partitionLimitation", "1-4,8,10-12")], true),
            (&[B, G, T, ("partitionLimitation", "a,b,c,d")], false),
            (&[("bootstrapServers", "foo:9092,bar:9092"), G, T], true),
            (&[B, G, T, ("offsetResetPolicy", "latest")], true),
            (&[B, G, T, ("offsetResetPolicy", "foo")], false),
            (&[B, G, T, ("offsetResetPolicy", "earliest")], true),
            (&[B, G, T, ("allowIdleConsumers", "notvalid")], false),
            (&[B, G, T, ("allowIdleConsumers", "true")], true),
            (&[B, G, T, ("excludePersistentLag", "notvalid")], false),
            (&[B, G, T, ("excludePersistentLag", "true")], true),
            (
                &[
                    B,
                    G,
                    T,
                    ("allowIdleConsumers", "true"),
                    ("version", "1.0.0"),
                ],
                true,
            ),
            (&[B, G, T, ("limitToPartitionsWithLag", "true")], true),
            (&[B, G, T, ("limitToPartitionsWithLag", "notvalid")], false),
            (
                &[
                    B,
                    G,
                    T,
                    ("allowIdleConsumers", "true"),
                    ("limitToPartitionsWithLag", "true"),
                ],
                false,
            ),
            (
                &[
                    B,
                    G,
                    T,
                    ("allowIdleConsumers", "true"),
                    ("limitToPartitionsWithLag", "false"),
                ],
                true,
            ),
            (&[B, G, ("limitToPartitionsWithLag", "true")], false),
        ];
        for auth in [
            &[
                ("sasl", "plaintext"),
                ("username", "admin"),
                ("password", "admin"),
            ] as Pairs,
            &[],
        ] {
            for (i, (meta, ok)) in rows.iter().enumerate() {
                let parsed = KafkaConfig::parse(&trigger(meta, auth), Flavor::Kafka);
                assert_eq!(parsed.is_ok(), *ok, "row {i} (auth {auth:?}): {parsed:?}");
            }
        }
        let c = KafkaConfig::parse(
            &trigger(&[B, G, T, ("partitionLimitation", "1-4,8,10-12")], &[]),
            Flavor::Kafka,
        )
        .unwrap();
        assert_eq!(c.partitions, Some(vec![1, 2, 3, 4, 8, 10, 11, 12]));
        assert_eq!(c.metric_name, "s0-kafka-my-topic");
        assert_eq!(c.lag.lag_threshold, 10.0);
        assert_eq!(c.lag.offset_reset_policy, OffsetResetPolicy::Latest);
        let c = KafkaConfig::parse(
            &trigger(&[B, G, ("partitionLimitation", "1,2")], &[]),
            Flavor::Kafka,
        )
        .unwrap();
        assert_eq!(
            c.partitions, None,
            "without a topic the limitation is ignored"
        );
        assert_eq!(c.metric_name, "s0-kafka-my-group-topics");
        let c = KafkaConfig::parse(
            &trigger(&[("bootstrapServers", "foo:9092,bar:9092"), G], &[]),
            Flavor::Kafka,
        )
        .unwrap();
        assert_eq!(c.brokers, ["foo:9092", "bar:9092"]);
    }

    /// KEDA's authentication rows for `kafka` (the valid metadata: two brokers, a group, a
    /// topic), except what ebb does not implement: gssapi is refused naming `sasl`, and
    /// oauthbearer's `aws_msk_iam` token provider naming `saslTokenProvider`.
    #[test]
    fn keda_s_kafka_auth_rows() {
        const META: Pairs = &[("bootstrapServers", "broker1:9092,broker2:9092"), G, T];
        let ca = crate::tls::test_pem::CERT;
        let rows: Vec<(Vec<(&str, &str)>, bool)> = vec![
            (
                vec![
                    ("sasl", "plaintext"),
                    ("username", "admin"),
                    ("password", "admin"),
                ],
                true,
            ),
            (
                vec![
                    ("sasl", "scram_sha256"),
                    ("username", "admin"),
                    ("password", "admin"),
                ],
                true,
            ),
            (
                vec![
                    ("sasl", "scram_sha512"),
                    ("username", "admin"),
                    ("password", "admin"),
                ],
                true,
            ),
            (
                vec![
                    ("sasl", "plaintext\n"),
                    ("username", "admin"),
                    ("password", "admin"),
                ],
                true,
            ),
            (vec![("tls", "enable"), ("ca", ca)], true),
            (
                vec![
                    ("sasl", "plaintext"),
                    ("username", "admin"),
                    ("password", "admin"),
                    ("tls", "disable"),
                ],
                true,
            ),
            (vec![("sasl", "none")], true),
            (vec![("sasl", "foo")], false),
            (vec![("sasl", "plaintext"), ("password", "admin")], false),
            (vec![("sasl", "plaintext"), ("username", "admin")], false),
            (vec![("tls", "enable"), ("key", "x")], false),
            (vec![("tls", "enable"), ("cert", ca)], false),
            (vec![("tls", "yes")], false),
            (
                vec![
                    ("sasl", "oauthbearer"),
                    ("username", "admin"),
                    ("password", "admin"),
                    ("scopes", "scope1, scope2"),
                    ("oauthTokenEndpointUri", "https://website.com"),
                ],
                true,
            ),
            (
                vec![
                    ("sasl", "oauthbearer"),
                    ("username", "admin"),
                    ("password", "admin"),
                    ("scopes", "scope1, scope2"),
                ],
                false,
            ),
            (
                vec![
                    ("sasl", "oauthbearer"),
                    ("username", "admin"),
                    ("password", "admin"),
                    ("oauthTokenEndpointUri", "https://website.com"),
                    ("oauthExtensions", "extension_foo=bar"),
                ],
                true,
            ),
            (
                vec![
                    ("sasl", "oauthbearer"),
                    ("username", "admin"),
                    ("password", "admin"),
                    ("oauthTokenEndpointUri", "https://website.com"),
                    ("oauthExtensions", "extension_foo=bar,extension_baz=baz"),
                ],
                true,
            ),
            (
                vec![
                    ("sasl", "oauthbearer"),
                    ("username", "admin"),
                    ("password", "admin"),
                    ("oauthTokenEndpointUri", "https://website.com"),
                    ("oauthExtensions", "extension_foo"),
                ],
                false,
            ),
            (
                vec![
                    ("sasl", "oauthbearer"),
                    ("password", "admin"),
                    ("oauthTokenEndpointUri", "https://website.com"),
                ],
                false,
            ),
            (
                vec![
                    ("sasl", "oauthbearer"),
                    ("saslTokenProvider", "aws_msk_iam"),
                    ("oauthTokenEndpointUri", "https://website.com"),
                ],
                false,
            ),
            (
                vec![("sasl", "gssapi"), ("username", "a"), ("password", "b")],
                false,
            ),
        ];
        for (i, (auth, ok)) in rows.iter().enumerate() {
            let mut t = trigger(META, &[]);
            t.auth_params = auth
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let parsed = KafkaConfig::parse(&t, Flavor::Kafka);
            assert_eq!(parsed.is_ok(), *ok, "row {i}: {parsed:?}");
        }
        // The ScaledObject's value wins over the TriggerAuthentication's (KEDA 2.20's docs).
        let mut t = trigger(
            &[B, G, T, ("sasl", "scram_sha512")],
            &[("username", "u"), ("password", "p")],
        );
        t.auth_params.insert("sasl".into(), "plaintext".into());
        let c = KafkaConfig::parse(&t, Flavor::Kafka).unwrap();
        assert!(matches!(c.sasl, Sasl::Scram { sha512: true, .. }));
        assert!(!format!("{c:?}").contains("\"p\""));
        let e = KafkaConfig::parse(&trigger(&[B, G, T, ("sasl", "gssapi")], &[]), Flavor::Kafka)
            .unwrap_err();
        assert_eq!(e.key, "sasl");
        assert!(e.problem.contains("not implemented"), "{e}");
    }

    /// KEDA's `apache-kafka` rows where it differs from `kafka`.
    #[test]
    fn apache_kafka_reads_topic_lists_and_strict_booleans() {
        let c = KafkaConfig::parse(
            &trigger(&[B, G, ("topic", "a, b")], &[]),
            Flavor::ApacheKafka,
        )
        .unwrap();
        assert_eq!(c.topics, ["a", "b"]);
        assert_eq!(c.metric_name, "s0-kafka-a,b");
        assert!(
            KafkaConfig::parse(
                &trigger(&[B, G, T, ("allowIdleConsumers", "1")], &[]),
                Flavor::ApacheKafka
            )
            .is_err()
        );
        assert!(
            KafkaConfig::parse(
                &trigger(&[B, G, T, ("allowIdleConsumers", "1")], &[]),
                Flavor::Kafka
            )
            .is_ok()
        );
        assert!(
            KafkaConfig::parse(
                &trigger(&[B, G, ("ensureEvenDistributionOfPartitions", "true")], &[]),
                Flavor::ApacheKafka
            )
            .is_ok()
        );
        assert!(
            KafkaConfig::parse(
                &trigger(&[B, G, ("ensureEvenDistributionOfPartitions", "true")], &[]),
                Flavor::Kafka
            )
            .is_err()
        );
        assert!(
            KafkaConfig::parse(
                &trigger(
                    &[
                        B,
                        G,
                        T,
                        ("ensureEvenDistributionOfPartitions", "true"),
                        ("limitToPartitionsWithLag", "true")
                    ],
                    &[]
                ),
                Flavor::ApacheKafka
            )
            .is_err()
        );
        // `bootstrapServersFromEnv` wins for `kafka`, `bootstrapServers` for `apache-kafka`.
        let mut t = trigger(&[B, G, T, ("bootstrapServersFromEnv", "BROKERS")], &[]);
        t.resolved_env.insert("BROKERS".into(), "env:9092".into());
        assert_eq!(
            KafkaConfig::parse(&t, Flavor::Kafka).unwrap().brokers,
            ["env:9092"]
        );
        assert_eq!(
            KafkaConfig::parse(&t, Flavor::ApacheKafka).unwrap().brokers,
            ["foobar:9092"]
        );
    }

    #[test]
    fn versions_are_checked_as_sarama_checks_them() {
        for (text, ok) in [
            ("1.0.0", true),
            ("2.8.1", true),
            ("0.10.2.0", true),
            ("0.10.2", false),
            ("1.2.3.4", false),
            ("1.0", false),
            ("a.b.c", false),
        ] {
            assert_eq!(valid_version(text), ok, "{text}");
        }
    }

    fn settings() -> LagSettings {
        LagSettings {
            lag_threshold: 10.0,
            offset_reset_policy: OffsetResetPolicy::Latest,
            scale_to_zero_on_invalid_offset: false,
            exclude_persistent_lag: false,
            allow_idle_consumers: false,
            limit_to_partitions_with_lag: false,
            ensure_even_distribution: false,
        }
    }

    fn parts(offsets: &[(i64, i64)]) -> Vec<PartitionOffsets> {
        offsets
            .iter()
            .enumerate()
            .map(|(i, (committed, latest))| PartitionOffsets {
                topic: "t".into(),
                partition: i as i32,
                committed: *committed,
                latest: Some(*latest),
            })
            .collect()
    }

    #[test]
    fn invalid_offsets_count_as_keda_counts_them() {
        let p = parts(&[(-1, 500)]);
        let mut prev = Previous::new();
        let mut s = settings();
        assert_eq!(
            total_lag(&s, &p, &mut prev).with_persistent,
            1,
            "latest: 1 wakes the target"
        );
        s.offset_reset_policy = OffsetResetPolicy::Earliest;
        assert_eq!(
            total_lag(&s, &p, &mut prev).with_persistent,
            500,
            "earliest: the whole partition"
        );
        s.scale_to_zero_on_invalid_offset = true;
        assert_eq!(total_lag(&s, &p, &mut prev).with_persistent, 0);
        s.offset_reset_policy = OffsetResetPolicy::Latest;
        assert_eq!(total_lag(&s, &p, &mut prev).with_persistent, 0);
    }

    #[test]
    fn the_metric_is_capped_at_one_replica_per_partition_by_integer_division() {
        // (partitions, total lag spread over them, settings tweak, expected metric).
        let ten = |lag: i64| {
            let mut offsets = vec![(0, 0); 10];
            offsets[0] = (0, lag);
            parts(&offsets)
        };
        let mut prev = Previous::new();
        let s = settings();
        assert_eq!(total_lag(&s, &ten(50), &mut prev).metric, 50.0);
        assert_eq!(
            total_lag(&s, &ten(105), &mut prev).metric,
            105.0,
            "105/10 is 10, not above 10"
        );
        assert_eq!(total_lag(&s, &ten(115), &mut prev).metric, 100.0);
        let idle = LagSettings {
            allow_idle_consumers: true,
            ..settings()
        };
        assert_eq!(total_lag(&idle, &ten(115), &mut prev).metric, 115.0);
        // One partition of ten has lag: at most one replica.
        let limited = LagSettings {
            limit_to_partitions_with_lag: true,
            ..settings()
        };
        assert_eq!(total_lag(&limited, &ten(50), &mut prev).metric, 10.0);
        // KEDA's documented example for ensureEvenDistributionOfPartitions, 10 partitions.
        let even = LagSettings {
            ensure_even_distribution: true,
            ..settings()
        };
        for (lag, want) in [
            (0, 10.0),
            (10, 10.0),
            (11, 20.0),
            (20, 20.0),
            (21, 50.0),
            (50, 50.0),
            (51, 100.0),
            (100, 100.0),
            (250, 100.0),
        ] {
            assert_eq!(
                total_lag(&even, &ten(lag), &mut prev).metric,
                want,
                "lag {lag}"
            );
        }
    }

    #[test]
    fn persistent_lag_is_left_out_of_the_metric_but_keeps_the_trigger_active() {
        let s = LagSettings {
            exclude_persistent_lag: true,
            allow_idle_consumers: true,
            ..settings()
        };
        let mut prev = Previous::new();
        let first = total_lag(&s, &parts(&[(5, 25), (7, 9)]), &mut prev);
        assert_eq!((first.metric, first.with_persistent), (22.0, 22));
        // Partition 0 has not moved: excluded; partition 1 moved.
        let second = total_lag(&s, &parts(&[(5, 30), (9, 12)]), &mut prev);
        assert_eq!((second.metric, second.with_persistent), (3.0, 28));
    }

    /// RFC 7677's SCRAM-SHA-256 example, byte for byte.
    #[test]
    fn scram_sha_256_follows_rfc_7677() {
        let mut scram = Scram::with_nonce("user", "pencil", false, "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(scram.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            scram.client_final(server_first).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(
            scram
                .verify_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_ok()
        );
        assert!(scram.verify_server(b"v=AAAA").is_err());
        assert!(scram.verify_server(b"e=invalid-proof").is_err());
        // A server nonce that does not extend ours is refused.
        let mut other = Scram::with_nonce("user", "pencil", false, "abc");
        assert!(other.client_final(b"r=xyz123,s=AAAA,i=4096").is_err());
        assert_eq!(
            Scram::with_nonce("a=b,c", "p", true, "n").client_first(),
            "n,,n=a=3Db=2Cc,r=n"
        );
    }

    #[test]
    fn partition_lists_parse_as_keda_parses_them() {
        assert_eq!(parse_partitions("1,2,3,4"), Some(vec![1, 2, 3, 4]));
        assert_eq!(
            parse_partitions("1-4,8,10-12"),
            Some(vec![1, 2, 3, 4, 8, 10, 11, 12])
        );
        assert_eq!(parse_partitions("4-1"), Some(vec![]));
        assert_eq!(parse_partitions("a,b,c,d"), None);
        assert_eq!(parse_partitions("1-2-3"), None);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Partitions as a broker may answer: a committed offset of -1 (none) or at most the
        /// latest, and sometimes no latest offset at all.
        fn partitions() -> impl Strategy<Value = Vec<PartitionOffsets>> {
            proptest::collection::vec(
                (
                    0i64..1_000_000,
                    prop_oneof![Just(-1i64), 0i64..1_000_000],
                    any::<bool>(),
                ),
                0..12,
            )
            .prop_map(|rows| {
                rows.into_iter()
                    .enumerate()
                    .map(|(i, (latest, committed, answered))| PartitionOffsets {
                        topic: "t".into(),
                        partition: i as i32,
                        committed: committed.min(latest),
                        latest: answered.then_some(latest),
                    })
                    .collect()
            })
        }

        fn lag_settings() -> impl Strategy<Value = LagSettings> {
            (
                prop_oneof![Just(1.0), Just(5.0), Just(10.0), 0.5f64..1000.0],
                any::<bool>(),
                any::<[bool; 5]>(),
            )
                .prop_map(|(threshold, earliest, b)| LagSettings {
                    lag_threshold: threshold,
                    offset_reset_policy: if earliest {
                        OffsetResetPolicy::Earliest
                    } else {
                        OffsetResetPolicy::Latest
                    },
                    scale_to_zero_on_invalid_offset: b[0],
                    exclude_persistent_lag: b[1],
                    allow_idle_consumers: b[2],
                    limit_to_partitions_with_lag: b[3] && !b[4],
                    ensure_even_distribution: b[4] && !b[3],
                })
        }

        proptest! {
            /// The metric is never negative, never above the lag persistent partitions included
            /// unless rounding up for an even spread, and asks for at most one replica per
            /// partition (per partition with lag, with limitToPartitionsWithLag) unless idle
            /// consumers are allowed.
            #[test]
            fn the_metric_is_bounded_by_the_lag_and_the_partitions(
                s in lag_settings(),
                ps in partitions(),
            ) {
                let total = total_lag(&s, &ps, &mut Previous::new());
                prop_assert!(total.metric >= 0.0);
                prop_assert!(total.with_persistent >= 0);
                let answering = ps.iter().filter(|p| p.latest.is_some()).count() as f64;
                let capped = !s.allow_idle_consumers
                    || s.limit_to_partitions_with_lag
                    || s.ensure_even_distribution;
                // KEDA's bound: the partitions with lag under limitToPartitionsWithLag, else
                // every partition (here: every partition the broker gave a latest offset for).
                let with_lag = ps
                    .iter()
                    .filter(|p| partition_lag(&s, p, &mut Previous::new()).0 > 0)
                    .count() as f64;
                let upper = if s.limit_to_partitions_with_lag { with_lag } else { answering };
                if capped {
                    prop_assert!((total.metric / s.lag_threshold).floor() <= upper);
                }
                if !s.ensure_even_distribution {
                    prop_assert!(total.metric <= total.with_persistent as f64);
                }
                if s.ensure_even_distribution && answering > 0.0 && total.metric > 0.0 {
                    let replicas = (total.metric / s.lag_threshold).round() as i64;
                    prop_assert_eq!(answering as i64 % replicas, 0);
                }
            }

            /// With excludePersistentLag, a second read of the same offsets leaves the partitions
            /// that did not move out of the metric, but not out of activation.
            #[test]
            fn unmoved_partitions_drop_out_of_the_metric_on_the_next_read(
                ps in partitions(),
            ) {
                let mut s = settings();
                s.exclude_persistent_lag = true;
                s.allow_idle_consumers = true;
                let mut previous = Previous::new();
                let first = total_lag(&s, &ps, &mut previous);
                let second = total_lag(&s, &ps, &mut previous);
                prop_assert_eq!(first.with_persistent, second.with_persistent);
                let invalid: i64 = ps
                    .iter()
                    .filter(|p| p.committed == -1)
                    .map(|p| partition_lag(&s, p, &mut Previous::new()).0)
                    .sum();
                prop_assert_eq!(second.metric, invalid as f64);
            }

            /// Whatever the broker says, the arithmetic does not panic (offsets saturate).
            #[test]
            fn any_offsets_add_up_without_a_panic(
                s in lag_settings(),
                rows in proptest::collection::vec((any::<i64>(), any::<i64>(), any::<bool>()), 0..8),
            ) {
                let ps: Vec<PartitionOffsets> = rows
                    .into_iter()
                    .enumerate()
                    .map(|(i, (committed, latest, answered))| PartitionOffsets {
                        topic: "t".into(),
                        partition: i as i32,
                        committed,
                        latest: answered.then_some(latest),
                    })
                    .collect();
                let _ = total_lag(&s, &ps, &mut Previous::new());
            }

            /// A SCRAM server-first message of any shape is read or refused, never a panic.
            #[test]
            fn any_scram_server_answer_is_read_or_refused(answer in proptest::collection::vec(any::<u8>(), 0..120)) {
                let mut scram = Scram::with_nonce("user", "pencil", false, "abc");
                let _ = scram.client_final(&answer);
                let _ = scram.verify_server(&answer);
            }
        }
    }
}
