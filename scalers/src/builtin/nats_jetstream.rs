//! `nats-jetstream`: the lag of one JetStream consumer (`num_pending + num_ack_pending`), read
//! from the NATS server's HTTP monitoring endpoint as KEDA's `nats-jetstream` scaler reads it.
//!
//! A poll is one GET of `<scheme>://<natsServerMonitoringEndpoint>/jsz?acc=<account>&config=true
//! &consumers=true`. On a JetStream cluster (`meta_cluster.cluster_size` above 1) only the
//! consumer's leader knows its lag: the scaler finds the leader through `/varz` as KEDA does
//! (the advertised client URLs' hosts, else the route URLs' first labels prefixed to the
//! endpoint) and polls it directly until leadership moves. Every trigger shares one
//! `reqwest::Client` per TLS setting (keep-alive connections per server), so 200 triggers on
//! one server hold a handful of connections. The answers are read by the pure functions
//! [`read_jsz`], [`find_lag`] and [`leader_candidates`].

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;
use serde::Deserialize;

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
/// KEDA reads the endpoint and the account from the TriggerAuthentication first.
const AUTH_THEN_META: &[Source] = &[Source::Auth, Source::Metadata];

/// The pool `nats-jetstream` triggers share: one client (plain HTTP and HTTPS with the system
/// roots).
pub type NatsPool = SharedPool<ClientTls, LimitedClient>;

/// Registers `nats-jetstream`. Every trigger built from one registry shares that registry's pool.
pub fn register(registry: &mut Registry) {
    let pool = NatsPool::new();
    registry.register("nats-jetstream", move |t| {
        Ok(Box::new(NatsJetStreamScaler::new(t, &pool)?))
    });
}

/// Parsed trigger metadata.
#[derive(Clone, PartialEq)]
struct NatsConfig {
    /// `<scheme>://<endpoint>/jsz?...` of the endpoint the trigger names.
    jsz_url: Url,
    account: String,
    account_id: String,
    stream: String,
    consumer: String,
    lag_threshold: f64,
    activation_lag_threshold: f64,
    metric_type: MetricTargetType,
    metric_name: String,
    /// Names the server in errors: the endpoint when it came from the metadata and carries no
    /// credentials, else only the type.
    source_name: String,
    timeout: Duration,
}

impl fmt::Debug for NatsConfig {
    // The endpoint may come from a Secret (and carry user info): left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("lag_threshold", &self.lag_threshold)
            .field("activation_lag_threshold", &self.activation_lag_threshold)
            .field("metric_name", &self.metric_name)
            .finish_non_exhaustive()
    }
}

impl NatsConfig {
    fn parse(t: &Trigger) -> Result<Self, ConfigError> {
        let key = "natsServerMonitoringEndpoint";
        let endpoint = t.required(key, AUTH_THEN_META)?;
        let account = t.lookup("account", AUTH_THEN_META)?.map(|f| f.value);
        let account_id = t.lookup("accountID", AUTH_THEN_META)?.map(|f| f.value);
        let (account, account_id) = match (account, account_id) {
            (None, None) => {
                return Err(t.error(
                    "account",
                    "required; set metadata \"account\" (or \"accountID\"), or the authentication parameter of that name; \"$G\" is NATS's default account",
                ));
            }
            (Some(name), None) => (name.clone(), name),
            (name, Some(id)) => (name.unwrap_or_default(), id),
        };
        let stream = t.required("stream", META)?.value;
        let consumer = t.required("consumer", META)?.value;
        let https = t.bool_or("useHttps", META, false)?;
        let scheme = if https { "https" } else { "http" };
        let value = endpoint.value.trim();
        let bad_endpoint = || {
            t.error(
                key,
                "expected host:port of the NATS monitoring endpoint, e.g. nats.nats.svc:8222",
            )
        };
        if value.contains('/') {
            return Err(bad_endpoint());
        }
        let mut jsz_url =
            Url::parse(&format!("{scheme}://{value}/jsz")).map_err(|_| bad_endpoint())?;
        if jsz_url.host_str().is_none_or(str::is_empty) {
            return Err(bad_endpoint());
        }
        jsz_url
            .query_pairs_mut()
            .append_pair("acc", &account_id)
            .append_pair("config", "true")
            .append_pair("consumers", "true");
        let lag_threshold = t.threshold_or("lagThreshold", 10.0)?;
        if lag_threshold == 0.0 {
            return Err(t.error("lagThreshold", "expected a number above 0"));
        }
        let shows_endpoint = endpoint.source == Source::Metadata
            && jsz_url.username().is_empty()
            && jsz_url.password().is_none();
        let source_name = if shows_endpoint {
            format!("nats-jetstream {value}")
        } else {
            "nats-jetstream".to_string()
        };
        Ok(Self {
            jsz_url,
            activation_lag_threshold: t.threshold_or("activationLagThreshold", 0.0)?,
            metric_type: t.metric_type(
                &[MetricTargetType::AverageValue, MetricTargetType::Value],
                MetricTargetType::AverageValue,
            )?,
            metric_name: metric_name(t.index, &format!("nats-jetstream-{stream}")),
            account,
            account_id,
            stream,
            consumer,
            lag_threshold,
            source_name,
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

/// The parts of `/jsz` the scaler reads.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Jsz {
    #[serde(default)]
    account_details: Vec<AccountDetail>,
    #[serde(default)]
    meta_cluster: Option<MetaCluster>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct AccountDetail {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    stream_detail: Vec<StreamDetail>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct MetaCluster {
    #[serde(default)]
    cluster_size: i64,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct StreamDetail {
    #[serde(default)]
    name: String,
    #[serde(default)]
    consumer_detail: Vec<ConsumerDetail>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct ConsumerDetail {
    #[serde(default)]
    name: String,
    #[serde(default)]
    num_pending: u64,
    #[serde(default)]
    num_ack_pending: u64,
    #[serde(default)]
    cluster: Option<ConsumerCluster>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct ConsumerCluster {
    #[serde(default)]
    leader: String,
}

/// The parts of `/varz` the leader search reads.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Varz {
    #[serde(default)]
    connect_urls: Vec<String>,
    #[serde(default)]
    cluster: Option<VarzCluster>,
    #[serde(default)]
    server_name: String,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct VarzCluster {
    #[serde(default)]
    urls: Vec<String>,
}

impl Jsz {
    /// Whether the server is part of a JetStream cluster of more than one node.
    pub fn clustered(&self) -> bool {
        self.meta_cluster
            .as_ref()
            .is_some_and(|m| m.cluster_size > 1)
    }
}

/// `/jsz` or `/varz` JSON; anything else is an error.
pub fn read_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "the monitoring endpoint's answer is not the JSON expected: {}",
            one_line_error(&e)
        )
    })
}

/// [`read_json`] for `/jsz`.
pub fn read_jsz(body: &[u8]) -> Result<Jsz, String> {
    read_json(body)
}

fn one_line_error(e: &serde_json::Error) -> String {
    // serde_json's messages quote at most a token of the input; the input is a public
    // monitoring answer.
    e.to_string().chars().take(200).collect()
}

/// What `/jsz` says about the trigger's consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The consumer's lag, and the server that leads it (on a cluster).
    Found { lag: u64, leader: String },
    /// No account with the trigger's name or id, or no stream of that name in it.
    NoStream,
    /// The stream exists; the consumer does not.
    NoConsumer,
}

/// Finds the consumer: the account whose id is `account_id` or whose name is `account`, its
/// stream named `stream`, that stream's consumer named `consumer`. The lag is what the
/// consumer has not yet received plus what it received and has not acknowledged.
pub fn find_lag(
    jsz: &Jsz,
    account: &str,
    account_id: &str,
    stream: &str,
    consumer: &str,
) -> Lookup {
    let streams = jsz
        .account_details
        .iter()
        .filter(|a| a.id == account_id || a.name == account)
        .flat_map(|a| a.stream_detail.iter())
        .filter(|s| s.name == stream);
    let mut seen_stream = false;
    for s in streams {
        seen_stream = true;
        if let Some(c) = s.consumer_detail.iter().find(|c| c.name == consumer) {
            return Lookup::Found {
                lag: c.num_pending.saturating_add(c.num_ack_pending),
                leader: c
                    .cluster
                    .as_ref()
                    .map(|c| c.leader.clone())
                    .unwrap_or_default(),
            };
        }
    }
    if seen_stream {
        Lookup::NoConsumer
    } else {
        Lookup::NoStream
    }
}

/// One server of a cluster that may lead the consumer: its name (`None` until its own `/varz`
/// says it) and the URL its `/varz` and `/jsz` are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The server's name when the cluster's route URLs give it.
    pub name: Option<String>,
    /// Its monitoring base, `<scheme>://<host>[:<port>]`.
    pub base: Url,
}

/// The servers to ask for the consumer's leader, as KEDA finds them from the endpoint's `/varz`:
/// when the servers advertise client URLs, each URL's host with the endpoint's port (the name
/// comes from that server's own `/varz`); otherwise each route URL's first DNS label, which is
/// also the server's name, prefixed to the endpoint's host (`nats-1` and `nats.nats.svc:8222`
/// give `nats-1.nats.nats.svc:8222`, a StatefulSet pod behind a headless Service).
pub fn leader_candidates(varz: &Varz, jsz_url: &Url) -> Vec<Candidate> {
    let scheme = jsz_url.scheme();
    let port = jsz_url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let host = jsz_url.host_str().unwrap_or_default();
    let parse = |text: String| Url::parse(&text).ok();
    if !varz.connect_urls.is_empty() {
        return varz
            .connect_urls
            .iter()
            .filter_map(|u| {
                let node_host = u.split(':').next().unwrap_or_default();
                parse(format!("{scheme}://{node_host}{port}"))
                    .map(|base| Candidate { name: None, base })
            })
            .collect();
    }
    varz.cluster
        .iter()
        .flat_map(|c| c.urls.iter())
        .filter_map(|u| {
            let node = u.split('.').next().unwrap_or_default();
            // A route URL may carry a scheme (`nats-route://`); the node is the host's label.
            let node = node.rsplit('/').next().unwrap_or(node);
            if node.is_empty() {
                return None;
            }
            parse(format!("{scheme}://{node}.{host}{port}")).map(|base| Candidate {
                name: Some(node.to_string()),
                base,
            })
        })
        .collect()
}

/// `base` with `path` and the query of `jsz_url`.
fn with_path(base: &Url, path: &str, jsz_url: &Url) -> Url {
    let mut url = base.clone();
    url.set_path(path);
    url.set_query(if path == "/jsz" {
        jsz_url.query()
    } else {
        None
    });
    url
}

/// A client for plain HTTP and HTTPS (system roots); redirects are not followed.
fn build_client(tls: &ClientTls) -> Result<reqwest::Client, String> {
    http::client(tls, |builder| {
        builder.redirect(reqwest::redirect::Policy::none())
    })
}

/// The leader the scaler polls directly on a cluster: its name and its `/jsz` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leader {
    name: String,
    jsz_url: Url,
}

/// A `nats-jetstream` trigger.
pub struct NatsJetStreamScaler {
    config: NatsConfig,
    lease: Lease<ClientTls, LimitedClient>,
    leader: Mutex<Option<Leader>>,
}

impl fmt::Debug for NatsJetStreamScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsJetStreamScaler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NatsJetStreamScaler {
    /// Parses the trigger and takes a lease on the shared HTTP client.
    pub fn new(trigger: &Trigger, pool: &NatsPool) -> Result<Self, ConfigError> {
        let config = NatsConfig::parse(trigger)?;
        Ok(Self {
            lease: pool.lease(ClientTls::default()),
            config,
            leader: Mutex::new(None),
        })
    }

    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        client: &LimitedClient,
        url: Url,
    ) -> Result<T, ScalerError> {
        let c = &self.config;
        let fetch = async {
            let _turn = client.turn().await;
            let response = client
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| c.error(http::error_message(e)))?;
            let status = response.status();
            let body = http::read_body(response).await.map_err(|e| c.error(e))?;
            if !status.is_success() {
                return Err(c.error(format!("the monitoring endpoint answered HTTP {status}")));
            }
            read_json(&body).map_err(|e| c.error(e))
        };
        tokio::time::timeout(c.timeout, fetch)
            .await
            .map_err(|_| ScalerError::Timeout {
                source_name: c.source_name.clone(),
                timeout: c.timeout,
            })?
    }

    fn lookup(&self, jsz: &Jsz) -> Lookup {
        let c = &self.config;
        find_lag(jsz, &c.account, &c.account_id, &c.stream, &c.consumer)
    }

    fn missing(&self, lookup: &Lookup) -> ScalerError {
        let c = &self.config;
        match lookup {
            Lookup::NoStream => c.error(format!(
                "stream {:?} not found in account {:?}",
                c.stream, c.account_id
            )),
            _ => c.error(format!(
                "consumer {:?} not found in stream {:?}",
                c.consumer, c.stream
            )),
        }
    }

    async fn lag(&self) -> Result<u64, ScalerError> {
        let c = &self.config;
        let client = self
            .lease
            .client(&c.source_name, c.timeout, || async {
                build_client(&ClientTls::default())
                    .map(LimitedClient::new)
                    .map_err(|message| c.error(message))
            })
            .await?;
        let cached = self.leader.lock().map(|l| l.clone()).unwrap_or_default();
        if let Some(leader) = &cached {
            let jsz: Jsz = self.get(&client, leader.jsz_url.clone()).await?;
            match self.lookup(&jsz) {
                Lookup::Found { lag, leader: now } if now == leader.name => return Ok(lag),
                // Leadership moved (or the consumer went): find the leader again.
                _ => self.set_leader(None),
            }
        }
        let jsz: Jsz = self.get(&client, c.jsz_url.clone()).await?;
        let lookup = self.lookup(&jsz);
        if !jsz.clustered() {
            return match lookup {
                Lookup::Found { lag, .. } => Ok(lag),
                missing => Err(self.missing(&missing)),
            };
        }
        let varz: Varz = self
            .get(&client, with_path(&c.jsz_url, "/varz", &c.jsz_url))
            .await?;
        for candidate in leader_candidates(&varz, &c.jsz_url) {
            let name = match &candidate.name {
                Some(name) => name.clone(),
                None => {
                    let node: Varz = self
                        .get(&client, with_path(&candidate.base, "/varz", &c.jsz_url))
                        .await?;
                    node.server_name
                }
            };
            let jsz_url = with_path(&candidate.base, "/jsz", &c.jsz_url);
            let jsz: Jsz = self.get(&client, jsz_url.clone()).await?;
            if let Lookup::Found { lag, leader } = self.lookup(&jsz)
                && leader == name
            {
                self.set_leader(Some(Leader { name, jsz_url }));
                return Ok(lag);
            }
        }
        match lookup {
            Lookup::Found { .. } => Err(c.error(format!(
                "leader node not found for consumer {:?}",
                c.consumer
            ))),
            missing => Err(self.missing(&missing)),
        }
    }

    fn set_leader(&self, leader: Option<Leader>) {
        if let Ok(mut slot) = self.leader.lock() {
            *slot = leader;
        }
    }
}

#[async_trait]
impl Scaler for NatsJetStreamScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.config.metric_name.clone(),
            target: self.config.lag_threshold,
            target_type: self.config.metric_type,
        }]
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        if metric != self.config.metric_name {
            return Err(ScalerError::UnknownMetric(metric.to_string()));
        }
        let lag = self.lag().await? as f64;
        Ok(MetricsAndActivity {
            values: vec![MetricValue {
                name: self.config.metric_name.clone(),
                value: lag,
            }],
            active: lag > self.config.activation_lag_threshold,
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

    fn trigger(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Trigger {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Trigger {
            index: 0,
            trigger_type: "nats-jetstream".into(),
            metadata: map(meta),
            auth_params: map(auth),
            ..Default::default()
        }
    }

    const EP: (&str, &str) = ("natsServerMonitoringEndpoint", "localhost:8222");

    /// KEDA's parse table (nats_jetstream_scaler_test.go): metadata, auth, whether it parses.
    #[test]
    fn keda_s_parse_rows() {
        let rows: &[(Pairs, Pairs, bool)] = &[
            (
                &[
                    EP,
                    ("account", "$G"),
                    ("accountID", "$G"),
                    ("stream", "mystream"),
                    ("consumer", "pull_consumer"),
                    ("useHttps", "false"),
                ],
                &[],
                true,
            ),
            (
                &[
                    ("natsServerMonitoringEndpoint", "nats.nats:8222"),
                    ("account", "$G"),
                    ("stream", "mystream"),
                    ("consumer", "pull_consumer"),
                    ("useHttps", "true"),
                ],
                &[],
                true,
            ),
            (
                &[
                    EP,
                    ("accountID", "$G"),
                    ("stream", "mystream"),
                    ("consumer", "pull_consumer"),
                    ("useHttps", "false"),
                ],
                &[],
                true,
            ),
            (&[], &[], false),
            (
                &[EP, ("stream", "mystream"), ("consumer", "pull_consumer")],
                &[],
                false,
            ),
            (
                &[EP, ("account", "$G"), ("consumer", "pull_consumer")],
                &[],
                false,
            ),
            (&[EP, ("account", "$G"), ("stream", "mystream")], &[], false),
            (&[("account", "$G"), ("stream", "mystream")], &[], false),
            (
                &[
                    EP,
                    ("account", "$G"),
                    ("stream", "mystream"),
                    ("consumer", "pull_consumer"),
                    ("activationLagThreshold", "10"),
                ],
                &[],
                true,
            ),
            (
                &[
                    EP,
                    ("account", "$G"),
                    ("stream", "mystream"),
                    ("consumer", "pull_consumer"),
                    ("activationLagThreshold", "Y"),
                ],
                &[],
                false,
            ),
            (
                &[
                    ("account", "$G"),
                    ("stream", "mystream"),
                    ("consumer", "pull_consumer"),
                ],
                &[("natsServerMonitoringEndpoint", "nats.nats:8222")],
                true,
            ),
            (
                &[
                    ("account", "$G"),
                    ("stream", "mystream"),
                    ("consumer", "pull_consumer"),
                ],
                &[("natsServerMonitoringEndpoint", "")],
                false,
            ),
            (
                &[
                    EP,
                    ("account", "$G"),
                    ("stream", "mystream"),
                    ("consumer", "pull_consumer"),
                    ("useHttps", "error"),
                ],
                &[],
                false,
            ),
            (
                &[
                    ("account", "$G"),
                    ("stream", "mystream"),
                    ("consumer", "pull_consumer"),
                    ("lagThreshold", "6"),
                ],
                &[("natsServerMonitoringEndpoint", "nats.nats:8222")],
                true,
            ),
            (
                &[
                    ("account", "$G"),
                    ("stream", "mystream"),
                    ("consumer", "pull_consumer"),
                    ("lagThreshold", "Y"),
                ],
                &[("natsServerMonitoringEndpoint", "nats.nats:8222")],
                false,
            ),
            (
                &[("stream", "mystream"), ("consumer", "pull_consumer")],
                &[
                    ("account", "$G"),
                    ("natsServerMonitoringEndpoint", "nats.nats:8222"),
                ],
                true,
            ),
            (
                &[("stream", "mystream"), ("consumer", "pull_consumer")],
                &[("natsServerMonitoringEndpoint", "nats.nats:8222")],
                false,
            ),
        ];
        for (i, (meta, auth, ok)) in rows.iter().enumerate() {
            let parsed = NatsConfig::parse(&trigger(meta, auth));
            assert_eq!(parsed.is_ok(), *ok, "row {}: {parsed:?}", i + 1);
        }
    }

    #[test]
    fn defaults_metric_name_and_url_are_keda_s() {
        let c = NatsConfig::parse(&trigger(
            &[
                EP,
                ("account", "$G"),
                ("stream", "my.stream"),
                ("consumer", "pull"),
            ],
            &[],
        ))
        .unwrap();
        assert_eq!(c.lag_threshold, 10.0);
        assert_eq!(c.activation_lag_threshold, 0.0);
        assert_eq!(c.metric_name, "s0-nats-jetstream-my-stream");
        assert_eq!(
            c.jsz_url.as_str(),
            "http://localhost:8222/jsz?acc=%24G&config=true&consumers=true"
        );
        // The account is one query value, however it is spelled.
        let c = NatsConfig::parse(&trigger(
            &[
                EP,
                ("accountID", "myaccount&consumers=false"),
                ("stream", "s"),
                ("consumer", "c"),
                ("useHttps", "true"),
            ],
            &[],
        ))
        .unwrap();
        assert_eq!(
            c.jsz_url.as_str(),
            "https://localhost:8222/jsz?acc=myaccount%26consumers%3Dfalse&config=true&consumers=true"
        );
    }

    #[test]
    fn errors_name_the_key_and_never_show_an_endpoint_from_a_secret() {
        let e = NatsConfig::parse(&trigger(&[EP, ("stream", "s"), ("consumer", "c")], &[]))
            .unwrap_err();
        assert_eq!(e.key, "account");
        let e = NatsConfig::parse(&trigger(
            &[
                ("account", "$G"),
                ("stream", "s"),
                ("consumer", "c"),
                ("lagThreshold", "0"),
            ],
            &[EP],
        ))
        .unwrap_err();
        assert_eq!(e.key, "lagThreshold");
        let e = NatsConfig::parse(&trigger(
            &[
                ("natsServerMonitoringEndpoint", "http://nats:8222/x"),
                ("account", "$G"),
                ("stream", "s"),
                ("consumer", "c"),
            ],
            &[],
        ))
        .unwrap_err();
        assert_eq!(e.key, "natsServerMonitoringEndpoint");
        let c = NatsConfig::parse(&trigger(
            &[("account", "$G"), ("stream", "s"), ("consumer", "c")],
            &[("natsServerMonitoringEndpoint", "user:hunter2@nats:8222")],
        ))
        .unwrap();
        assert_eq!(c.source_name, "nats-jetstream");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    fn jsz(clustered: bool, consumers: &str) -> Jsz {
        let size = if clustered { 3 } else { 0 };
        read_jsz(
            format!(
                r#"{{"server_id":"x","meta_cluster":{{"cluster_size":{size}}},
                "account_details":[{{"name":"$G","id":"$G","stream_detail":[
                  {{"name":"other","consumer_detail":[{{"name":"pull_consumer","num_pending":5}}]}},
                  {{"name":"mystream","state":{{"messages":1000,"last_seq":1000}},"consumer_detail":[{consumers}]}}]}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn the_lag_is_pending_plus_unacknowledged_and_a_missing_consumer_is_an_error_not_last_seq() {
        let j = jsz(
            false,
            r#"{"name":"pull_consumer","num_pending":7,"num_ack_pending":3,"num_redelivered":1,"cluster":{"leader":"n1"}}"#,
        );
        assert_eq!(
            find_lag(&j, "$G", "$G", "mystream", "pull_consumer"),
            Lookup::Found {
                lag: 10,
                leader: "n1".into()
            }
        );
        assert!(!j.clustered());
        assert_eq!(
            find_lag(&j, "$G", "$G", "mystream", "pull_consumer_bad"),
            Lookup::NoConsumer
        );
        assert_eq!(
            find_lag(&j, "$G", "$G", "mystreamBad", "pull_consumer"),
            Lookup::NoStream
        );
        assert_eq!(
            find_lag(
                &j,
                "other-account",
                "other-account",
                "mystream",
                "pull_consumer"
            ),
            Lookup::NoStream
        );
        // The account matches by id or by name.
        assert!(matches!(
            find_lag(&j, "", "$G", "mystream", "pull_consumer"),
            Lookup::Found { .. }
        ));
        assert!(jsz(true, "").clustered());
        assert!(read_jsz(b"{invalidJSON}").is_err());
        assert_eq!(read_jsz(b"{}").unwrap(), Jsz::default());
    }

    #[test]
    fn leader_candidates_come_from_client_urls_else_route_urls() {
        let url = Url::parse("http://nats.nats.svc:8222/jsz?acc=%24G&config=true&consumers=true")
            .unwrap();
        let varz: Varz = read_json(
            br#"{"server_name":"nats-0","connect_urls":["10.0.0.1:4222","nats-2.nats.nats.svc:4222"],"cluster":{"urls":["x.y:6222"]}}"#,
        )
        .unwrap();
        let found = leader_candidates(&varz, &url);
        assert_eq!(
            found.iter().map(|c| c.base.as_str()).collect::<Vec<_>>(),
            ["http://10.0.0.1:8222/", "http://nats-2.nats.nats.svc:8222/"]
        );
        assert!(found.iter().all(|c| c.name.is_none()));
        let varz: Varz = read_json(
            br#"{"server_name":"leader","cluster":{"urls":["leader.localhost.nats.svc:8222","not-leader-1.localhost.nats.svc:8222"]}}"#,
        )
        .unwrap();
        let found = leader_candidates(&varz, &url);
        assert_eq!(found[0].name.as_deref(), Some("leader"));
        assert_eq!(found[0].base.as_str(), "http://leader.nats.nats.svc:8222/");
        assert_eq!(
            with_path(&found[1].base, "/jsz", &url).as_str(),
            "http://not-leader-1.nats.nats.svc:8222/jsz?acc=%24G&config=true&consumers=true"
        );
        assert!(leader_candidates(&Varz::default(), &url).is_empty());
    }

    const KEYS: &[&str] = &[
        "natsServerMonitoringEndpoint",
        "account",
        "accountID",
        "stream",
        "consumer",
        "lagThreshold",
        "activationLagThreshold",
        "useHttps",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        #[test]
        fn no_metadata_makes_the_parser_panic_or_leak_the_endpoint_secret(
            metadata in proptest::collection::btree_map(
                proptest::sample::select(KEYS).prop_map(String::from), ".{0,24}", 0..8),
            endpoint in "[a-z0-9:@./%-]{0,24}",
        ) {
            use proptest::prelude::*;
            let t = Trigger {
                index: 0,
                trigger_type: "nats-jetstream".into(),
                metadata,
                auth_params: [
                    ("natsServerMonitoringEndpoint".to_string(), format!("u:hunter2@{endpoint}")),
                ].into(),
                ..Default::default()
            };
            match NatsConfig::parse(&t) {
                Ok(c) => {
                    prop_assert!(c.lag_threshold > 0.0);
                    prop_assert!(c.metric_name.starts_with("s0-nats-jetstream-"));
                }
                Err(e) => prop_assert!(!e.to_string().contains("hunter2"), "{e}"),
            }
        }

        #[test]
        fn any_body_reads_as_jsz_or_an_error(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = read_jsz(&body);
            let _ = read_json::<Varz>(&body);
        }
    }
}
