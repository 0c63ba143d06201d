//! The Kafka client the `kafka` and `apache-kafka` triggers share: the wire protocol's codecs
//! from the `kafka-protocol` crate, and here a small connection layer of ebb's own over Tokio.
//!
//! A [`KafkaCluster`] is one set of bootstrap servers reached with one SASL identity and one
//! TLS setting; every trigger with the same three shares it through a
//! [`SharedPool`](crate::pool::SharedPool), so 200 triggers on one cluster hold one connection
//! per broker they need and one metadata cache. A connection negotiates versions with
//! ApiVersions, authenticates (SASL PLAIN, SCRAM-SHA-256/512 or OAUTHBEARER with the cluster's
//! shared token, over SaslHandshake v1 and SaslAuthenticate), and then carries one request at a
//! time. A read asks:
//! - Metadata (every topic), cached for [`METADATA_TTL`] and refreshed early when a topic or a
//!   leader is missing;
//! - FindCoordinator for the group, cached until the coordinator says it no longer is;
//! - OffsetFetch for the group's committed offsets, at the coordinator;
//! - ListOffsets (latest) at each partition's leader, one request per leader.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, FindCoordinatorRequest, GroupId, ListOffsetsRequest,
    MetadataRequest, OffsetFetchRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::kafka::Sasl;
use super::kafka_oauth::{TokenSource, client_first_message, read_server_answer};
use crate::tls::{ClientTls, client_config};

/// How long the cluster's metadata is reused before it is asked again.
pub const METADATA_TTL: Duration = Duration::from_secs(10);
/// Largest response ebb reads; a larger size prefix is an error (a wrong port, not Kafka).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// The client id brokers see in their request logs and quotas.
const CLIENT_ID: &str = "ebb";

/// The versions ebb speaks of each API it sends: it uses the highest both sides support.
const VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Metadata, 4, 12),
    (ApiKey::FindCoordinator, 1, 3),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// What identifies a shared cluster client: its bootstrap servers, SASL identity and TLS
/// settings. Holds secrets: never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClusterKey {
    /// `host:port` of each bootstrap server, as written.
    pub brokers: Vec<String>,
    /// SASL mechanism and credentials.
    pub sasl: Sasl,
    /// TLS, when enabled.
    pub tls: Option<ClientTls>,
}

/// A byte stream to a broker: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One authenticated connection to one broker.
struct BrokerConn {
    io: tokio::sync::Mutex<(Box<dyn Io>, i32)>,
    /// API key -> the version to send.
    versions: HashMap<i16, i16>,
}

/// Why a call failed: the connection (reconnect) or the broker's answer (do not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaError {
    /// The connection failed or the stream is no longer in step: the cluster client should be
    /// dropped and made again.
    Connection(String),
    /// The broker answered with an error, or something it needs is missing.
    Broker(String),
}

impl std::fmt::Display for KafkaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KafkaError::Connection(m) | KafkaError::Broker(m) => f.write_str(m),
        }
    }
}

fn encode_error(e: impl std::fmt::Display) -> KafkaError {
    KafkaError::Broker(format!("encoding a request: {e}"))
}

fn decode_error(e: impl std::fmt::Display) -> KafkaError {
    KafkaError::Connection(format!("decoding a response: {e}"))
}

fn conn_error(what: &str, e: impl std::fmt::Display) -> KafkaError {
    KafkaError::Connection(format!("{what}: {e}"))
}

/// A Kafka error code's name, for messages.
fn code_name(code: i16) -> String {
    use kafka_protocol::error::ParseResponseErrorCode;
    match code.err() {
        Some(e) => format!("{e:?} ({code})"),
        None => format!("error code {code}"),
    }
}

impl BrokerConn {
    /// Connects to `address`, negotiates versions and authenticates.
    async fn open(
        address: &str,
        key: &ClusterKey,
        oauth: Option<&TokenSource>,
    ) -> Result<Self, KafkaError> {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| conn_error(&format!("connecting to {address}"), e))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &key.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let config = client_config(tls).map_err(KafkaError::Connection)?;
                let host = address
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                    .unwrap_or(address);
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|_| {
                        KafkaError::Connection(format!("{host:?} is not a TLS server name"))
                    })?;
                let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| conn_error(&format!("TLS with {address}"), e))?;
                Box::new(stream)
            }
        };
        let mut conn = BrokerConn {
            io: tokio::sync::Mutex::new((io, 0)),
            versions: HashMap::new(),
        };
        // ApiVersions v0: every broker since 0.10 answers it, before authentication too.
        let answer = conn.call(&ApiVersionsRequest::default(), 0).await?;
        if answer.error_code != 0 {
            return Err(KafkaError::Connection(format!(
                "{address} refused ApiVersions: {}",
                code_name(answer.error_code)
            )));
        }
        for (api, ours_min, ours_max) in VERSIONS {
            let key = *api as i16;
            if let Some(theirs) = answer.api_keys.iter().find(|k| k.api_key == key) {
                let version = (*ours_max).min(theirs.max_version);
                if version >= (*ours_min).max(theirs.min_version) {
                    conn.versions.insert(key, version);
                }
            }
        }
        match oauth {
            Some(source) => conn.authenticate_oauth(address, source).await?,
            None => conn.authenticate(address, &key.sasl).await?,
        }
        Ok(conn)
    }

    fn version(&self, api: ApiKey) -> Result<i16, KafkaError> {
        self.versions.get(&(api as i16)).copied().ok_or_else(|| {
            KafkaError::Broker(format!(
                "the broker supports no version of {api:?} that ebb speaks"
            ))
        })
    }

    /// Sends `request` at `version` and reads its response.
    async fn call<R: Request>(&self, request: &R, version: i16) -> Result<R::Response, KafkaError> {
        let mut guard = self.io.lock().await;
        let (io, correlation) = &mut *guard;
        *correlation = correlation.wrapping_add(1);
        let id = *correlation;
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = id;
        header.client_id = Some(StrBytes::from_static_str(CLIENT_ID));
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(encode_error)?;
        request.encode(&mut buf, version).map_err(encode_error)?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        io.write_all(&buf)
            .await
            .map_err(|e| conn_error("sending a request", e))?;
        let size = io
            .read_i32()
            .await
            .map_err(|e| conn_error("reading a response", e))?;
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= MAX_RESPONSE)
            .ok_or_else(|| KafkaError::Connection(format!("a response of {size} bytes")))?;
        let mut body = vec![0u8; size];
        io.read_exact(&mut body)
            .await
            .map_err(|e| conn_error("reading a response", e))?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(
            &mut body,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .map_err(decode_error)?;
        if header.correlation_id != id {
            return Err(KafkaError::Connection(format!(
                "a response to request {} arrived for request {id}",
                header.correlation_id
            )));
        }
        R::Response::decode(&mut body, version).map_err(decode_error)
    }

    async fn authenticate(&self, address: &str, sasl: &Sasl) -> Result<(), KafkaError> {
        let (mechanism, username, password, sha512) = match sasl {
            // OAUTHBEARER needs its token source: see `authenticate_oauth`.
            Sasl::None | Sasl::OAuthBearer(_) => return Ok(()),
            Sasl::Plain { username, password } => ("PLAIN", username, password, false),
            Sasl::Scram {
                sha512,
                username,
                password,
            } => (
                if *sha512 {
                    "SCRAM-SHA-512"
                } else {
                    "SCRAM-SHA-256"
                },
                username,
                password,
                *sha512,
            ),
        };
        self.handshake(address, mechanism).await?;
        let failed = |detail: String| {
            KafkaError::Connection(format!(
                "SASL {mechanism} authentication as {username:?} failed: {detail}"
            ))
        };
        if mechanism == "PLAIN" {
            let token = format!("\0{username}\0{password}");
            self.sasl_round(token.into_bytes()).await.map_err(failed)?;
            return Ok(());
        }
        let mut scram = super::kafka::Scram::new(username, password, sha512);
        let server_first = self
            .sasl_round(scram.client_first().into_bytes())
            .await
            .map_err(failed)?;
        let client_final = scram.client_final(&server_first).map_err(failed)?;
        let server_final = self
            .sasl_round(client_final.into_bytes())
            .await
            .map_err(failed)?;
        scram.verify_server(&server_final).map_err(failed)
    }

    /// SaslHandshake: the broker must accept `mechanism`.
    async fn handshake(&self, address: &str, mechanism: &'static str) -> Result<(), KafkaError> {
        let mut handshake = SaslHandshakeRequest::default();
        handshake.mechanism = StrBytes::from_static_str(mechanism);
        let answer = self
            .call(&handshake, self.version(ApiKey::SaslHandshake)?)
            .await?;
        if answer.error_code != 0 {
            let offered: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(KafkaError::Connection(format!(
                "{address} does not accept SASL {mechanism} (it offers {})",
                offered.join(", ")
            )));
        }
        Ok(())
    }

    /// SASL/OAUTHBEARER: the token in one message; an empty answer is success, anything else
    /// the broker's error status, after which the client sends `0x01` (RFC 7628 section 3.2.3)
    /// and the broker closes the exchange with its error.
    async fn authenticate_oauth(
        &self,
        address: &str,
        source: &TokenSource,
    ) -> Result<(), KafkaError> {
        self.handshake(address, "OAUTHBEARER").await?;
        let failed = |detail: String| {
            KafkaError::Connection(format!(
                "SASL OAUTHBEARER authentication with {address} failed: {detail}"
            ))
        };
        let token = source.token().await.map_err(failed)?;
        let message = client_first_message(&token, source.extensions());
        let answer = self.sasl_round(message).await.map_err(failed)?;
        if let Err(refused) = read_server_answer(&answer) {
            // The broker answers the closing 0x01 with its own message; ours names the status.
            let _ = self.sasl_round(vec![0x01]).await;
            return Err(failed(refused));
        }
        Ok(())
    }

    /// One SaslAuthenticate exchange: the server's bytes, or its error message.
    async fn sasl_round(&self, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut request = SaslAuthenticateRequest::default();
        request.auth_bytes = Bytes::from(bytes);
        let version = self
            .version(ApiKey::SaslAuthenticate)
            .map_err(|e| e.to_string())?;
        let answer = self
            .call(&request, version)
            .await
            .map_err(|e| e.to_string())?;
        if answer.error_code != 0 {
            return Err(answer
                .error_message
                .map(|m| m.to_string())
                .unwrap_or_else(|| code_name(answer.error_code)));
        }
        Ok(answer.auth_bytes.to_vec())
    }
}

/// One topic's partitions and their leaders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicLayout {
    /// (partition, leader node id), by partition.
    pub partitions: Vec<(i32, i32)>,
}

/// The topics of one Metadata answer, shared by every reader of the cache (no copy per read).
pub struct Topics(Arc<Metadata>);

impl Topics {
    /// The layout of `topic`, if the cluster has it.
    pub fn get(&self, topic: &str) -> Option<&TopicLayout> {
        self.0.topics.get(topic)
    }
}

/// What Metadata said, when.
struct Metadata {
    at: Instant,
    topics: BTreeMap<String, TopicLayout>,
    brokers: HashMap<i32, String>,
}

/// A shared client of one Kafka cluster (see the module's documentation).
pub struct KafkaCluster {
    key: ClusterKey,
    bootstrap: Arc<BrokerConn>,
    brokers: tokio::sync::Mutex<HashMap<i32, Arc<BrokerConn>>>,
    metadata: tokio::sync::Mutex<Option<Arc<Metadata>>>,
    coordinators: Mutex<HashMap<String, (i32, String)>>,
    /// The OAUTHBEARER token every connection of the cluster presents.
    oauth: Option<TokenSource>,
}

impl KafkaCluster {
    /// Connects to the first bootstrap server that answers.
    pub async fn connect(key: ClusterKey) -> Result<Self, KafkaError> {
        let oauth = match &key.sasl {
            Sasl::OAuthBearer(settings) => {
                Some(TokenSource::new(settings.clone()).map_err(KafkaError::Connection)?)
            }
            _ => None,
        };
        let mut last = KafkaError::Connection("no bootstrap server".into());
        for address in &key.brokers {
            match BrokerConn::open(address, &key, oauth.as_ref()).await {
                Ok(conn) => {
                    return Ok(Self {
                        bootstrap: Arc::new(conn),
                        brokers: tokio::sync::Mutex::new(HashMap::new()),
                        metadata: tokio::sync::Mutex::new(None),
                        coordinators: Mutex::new(HashMap::new()),
                        key,
                        oauth,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The cluster's topics, from the cache unless it is older than [`METADATA_TTL`] or
    /// `refresh` asks for a new answer.
    pub async fn topics(&self, refresh: bool) -> Result<Topics, KafkaError> {
        Ok(Topics(self.metadata(refresh).await?))
    }

    async fn metadata(&self, refresh: bool) -> Result<Arc<Metadata>, KafkaError> {
        let mut cache = self.metadata.lock().await;
        if let Some(m) = cache.as_ref()
            && !refresh
            && m.at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let mut request = MetadataRequest::default();
        // None asks for every topic; the default (an empty list) asks for none.
        request.topics = None;
        request.allow_auto_topic_creation = false;
        let version = self.bootstrap.version(ApiKey::Metadata)?;
        let answer = self.bootstrap.call(&request, version).await?;
        let brokers = answer
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let topics = answer
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| {
                let name = t.name.as_ref()?.0.to_string();
                let mut partitions: Vec<(i32, i32)> = t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.leader_id.0))
                    .collect();
                partitions.sort_unstable();
                Some((name, TopicLayout { partitions }))
            })
            .collect();
        let fresh = Arc::new(Metadata {
            at: Instant::now(),
            topics,
            brokers,
        });
        *cache = Some(fresh.clone());
        Ok(fresh)
    }

    /// The connection to broker `node`, opened on first use.
    async fn broker(
        &self,
        node: i32,
        address: Option<String>,
    ) -> Result<Arc<BrokerConn>, KafkaError> {
        let mut brokers = self.brokers.lock().await;
        if let Some(conn) = brokers.get(&node) {
            return Ok(conn.clone());
        }
        let address = match address {
            Some(a) => a,
            None => self
                .metadata(false)
                .await?
                .brokers
                .get(&node)
                .cloned()
                .ok_or_else(|| {
                    KafkaError::Broker(format!("broker {node} is not in the metadata"))
                })?,
        };
        let conn = Arc::new(BrokerConn::open(&address, &self.key, self.oauth.as_ref()).await?);
        brokers.insert(node, conn.clone());
        Ok(conn)
    }

    /// The group's coordinator: its node id and address.
    async fn coordinator(&self, group: &str) -> Result<(i32, String), KafkaError> {
        if let Some(found) = self
            .coordinators
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
        {
            return Ok(found.clone());
        }
        let mut request = FindCoordinatorRequest::default();
        request.key = StrBytes::from_string(group.to_string());
        request.key_type = 0;
        let version = self.bootstrap.version(ApiKey::FindCoordinator)?;
        let mut answer = self.bootstrap.call(&request, version).await?;
        // A broker that has no offsets topic yet creates it on the first lookup and answers
        // COORDINATOR_NOT_AVAILABLE (or LOAD_IN_PROGRESS) meanwhile: ask again shortly, as
        // Kafka's own clients do.
        for backoff in [100, 200, 400] {
            if !matches!(answer.error_code, 14 | 15) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(backoff)).await;
            answer = self.bootstrap.call(&request, version).await?;
        }
        if answer.error_code != 0 {
            return Err(KafkaError::Broker(format!(
                "no coordinator for group {group:?}: {}",
                code_name(answer.error_code)
            )));
        }
        let found = (
            answer.node_id.0,
            format!("{}:{}", answer.host.as_str(), answer.port),
        );
        self.coordinators
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group.to_string(), found.clone());
        Ok(found)
    }

    /// The group's committed offsets (-1: none) of `partitions` (topic -> partitions), or of
    /// every topic it has committed to when `None`.
    pub async fn committed(
        &self,
        group: &str,
        partitions: Option<&BTreeMap<String, Vec<i32>>>,
    ) -> Result<BTreeMap<(String, i32), i64>, KafkaError> {
        let mut request = OffsetFetchRequest::default();
        request.group_id = GroupId(StrBytes::from_string(group.to_string()));
        request.topics = partitions.map(|topics| {
            topics
                .iter()
                .map(|(topic, indexes)| {
                    let mut t = OffsetFetchRequestTopic::default();
                    t.name = TopicName(StrBytes::from_string(topic.clone()));
                    t.partition_indexes = indexes.clone();
                    t
                })
                .collect()
        });
        // A coordinator that moved answers NOT_COORDINATOR (or is loading): ask again once.
        for attempt in 0..2 {
            let (node, address) = self.coordinator(group).await?;
            let conn = self.broker(node, Some(address)).await?;
            let answer = conn
                .call(&request, conn.version(ApiKey::OffsetFetch)?)
                .await?;
            if matches!(answer.error_code, 14..=16) && attempt == 0 {
                self.coordinators
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(group);
                continue;
            }
            if answer.error_code != 0 {
                return Err(KafkaError::Broker(format!(
                    "committed offsets of group {group:?}: {}",
                    code_name(answer.error_code)
                )));
            }
            let mut out = BTreeMap::new();
            for topic in &answer.topics {
                for p in &topic.partitions {
                    if p.error_code != 0 {
                        return Err(KafkaError::Broker(format!(
                            "committed offset of {}/{}: {}",
                            topic.name.0.as_str(),
                            p.partition_index,
                            code_name(p.error_code)
                        )));
                    }
                    out.insert(
                        (topic.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
            return Ok(out);
        }
        Err(KafkaError::Broker(format!(
            "the coordinator of group {group:?} keeps moving"
        )))
    }

    /// The latest offset (high watermark) of each of `partitions` (topic, partition, leader),
    /// one ListOffsets per leader.
    pub async fn latest(
        &self,
        partitions: &[(String, i32, i32)],
    ) -> Result<BTreeMap<(String, i32), i64>, KafkaError> {
        let mut by_leader: BTreeMap<i32, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
        for (topic, partition, leader) in partitions {
            by_leader
                .entry(*leader)
                .or_default()
                .entry(topic.as_str())
                .or_default()
                .push(*partition);
        }
        let mut out = BTreeMap::new();
        for (leader, topics) in by_leader {
            if leader < 0 {
                return Err(KafkaError::Broker(
                    "a partition has no leader right now".to_string(),
                ));
            }
            let conn = self.broker(leader, None).await?;
            let mut request = ListOffsetsRequest::default();
            // -1: a consumer, not a follower replica.
            request.replica_id = BrokerId(-1);
            request.topics = topics
                .iter()
                .map(|(topic, indexes)| {
                    let mut t = ListOffsetsTopic::default();
                    t.name = TopicName(StrBytes::from_string(topic.to_string()));
                    t.partitions = indexes
                        .iter()
                        .map(|i| {
                            let mut p = ListOffsetsPartition::default();
                            p.partition_index = *i;
                            // -1: the latest offset.
                            p.timestamp = -1;
                            p
                        })
                        .collect();
                    t
                })
                .collect();
            let answer = conn
                .call(&request, conn.version(ApiKey::ListOffsets)?)
                .await?;
            for topic in &answer.topics {
                for p in &topic.partitions {
                    if p.error_code != 0 {
                        // A stale leader: the next read asks for fresh metadata.
                        *self.metadata.lock().await = None;
                        return Err(KafkaError::Broker(format!(
                            "latest offset of {}/{}: {}",
                            topic.name.0.as_str(),
                            p.partition_index,
                            code_name(p.error_code)
                        )));
                    }
                    out.insert((topic.name.0.to_string(), p.partition_index), p.offset);
                }
            }
        }
        Ok(out)
    }

    /// Number of open broker connections (the bootstrap one included).
    pub async fn connections(&self) -> usize {
        1 + self.brokers.lock().await.len()
    }
}
