//! Where a Redis trigger connects and how: the three topologies (a standalone server, a Redis
//! Cluster, a master found through Redis Sentinel), credentials and TLS, parsed from trigger
//! metadata as KEDA reads them, and one shared connection per target.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisFuture, ServerErrorKind, TlsCertificates, Value,
};

use crate::error::{ConfigError, ScalerError};
use crate::pool::{Lease, SharedPool};
use crate::tls::{decrypt_private_key, pem_certificates, pem_private_key};
use crate::trigger::{ANY_SOURCE, Source, Trigger};

/// Limit for connecting and for each query.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// How the Redis deployment is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topology {
    /// One server (`redis`, `redis-streams`).
    Standalone,
    /// A Redis Cluster reached through any of its nodes (`redis-cluster*`).
    Cluster,
    /// A master found by asking Redis Sentinels (`redis-sentinel*`).
    Sentinel,
}

/// TLS settings. Holds a private key: never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    /// PEM CA certificate(s) to trust instead of the system roots.
    ca: Option<String>,
    /// PEM client certificate and key, for servers that ask for one.
    client: Option<(String, String)>,
    /// `unsafeSsl`: skip verifying the server's certificate.
    insecure: bool,
}

/// The master name and credentials for the sentinels. Holds a password: never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SentinelSettings {
    master: String,
    username: Option<String>,
    password: Option<String>,
}

/// Where to connect and as whom: the key of a shared connection. Holds credentials: its Debug
/// shows the addresses and settings only.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisTarget {
    /// The topology.
    pub topology: Topology,
    /// `host:port` of the server, of the cluster's seed nodes or of the sentinels.
    pub addresses: Vec<String>,
    /// Database number (0 for a cluster, which has only one).
    pub database: i64,
    username: Option<String>,
    password: Option<String>,
    sentinel: Option<SentinelSettings>,
    tls: Option<TlsSettings>,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("topology", &self.topology)
            .field("addresses", &self.addresses)
            .field("database", &self.database)
            .field("username", &self.username.is_some())
            .field("password", &self.password.is_some())
            .field(
                "sentinel_master",
                &self.sentinel.as_ref().map(|s| s.master.as_str()),
            )
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl RedisTarget {
    /// Parses the connection keys of a trigger for `topology`.
    pub fn parse(t: &Trigger, topology: Topology) -> Result<Self, ConfigError> {
        let addresses = match topology {
            Topology::Standalone => addresses(t)?.into_iter().take(1).collect(),
            Topology::Cluster | Topology::Sentinel => addresses(t)?,
        };
        let database = match topology {
            // A cluster has database 0 only; KEDA ignores the key there, and so does ebb.
            Topology::Cluster => 0,
            Topology::Standalone | Topology::Sentinel => {
                let db: i64 = t.parse_or("databaseIndex", ANY_SOURCE, 0, "a database number")?;
                if db < 0 {
                    return Err(t.error("databaseIndex", "expected a database number >= 0"));
                }
                db
            }
        };
        let sentinel = match topology {
            Topology::Sentinel => Some(SentinelSettings {
                master: t
                    .required("sentinelMaster", ANY_SOURCE)?
                    .value
                    .trim()
                    .to_string(),
                username: t.lookup("sentinelUsername", ANY_SOURCE)?.map(|f| f.value),
                // KEDA reads it from metadata too.
                password: t
                    .lookup("sentinelPassword", ADDRESS_SOURCES)?
                    .map(|f| f.value),
            }),
            Topology::Standalone | Topology::Cluster => None,
        };
        Ok(Self {
            topology,
            addresses,
            database,
            username: t.lookup("username", ANY_SOURCE)?.map(|f| f.value),
            // KEDA reads it from metadata too (then the environment, then authentication).
            password: t.lookup("password", ANY_SOURCE)?.map(|f| f.value),
            sentinel,
            tls: parse_tls(t)?,
        })
    }

    /// How errors name the deployment, e.g. `redis-cluster 10.0.0.1:6379,10.0.0.2:6379`.
    pub fn source_name(&self) -> String {
        let addresses = self.addresses.join(",");
        match (&self.topology, &self.sentinel) {
            (Topology::Standalone, _) => format!("redis {addresses}"),
            (Topology::Cluster, _) => format!("redis-cluster {addresses}"),
            (Topology::Sentinel, Some(s)) => {
                format!("redis-sentinel {addresses} (master {:?})", s.master)
            }
            (Topology::Sentinel, None) => format!("redis-sentinel {addresses}"),
        }
    }

    /// Whether TLS is used.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// KEDA's order for the addresses: metadata, then authentication, then the environment.
const ADDRESS_SOURCES: &[Source] = &[Source::Metadata, Source::Auth, Source::Env];

/// The first value of any of `keys` (KEDA's alternative spellings) among `sources`, with the key
/// it was found under.
fn first_of<'k>(
    t: &Trigger,
    keys: &[&'k str],
    sources: &[Source],
) -> Result<Option<(&'k str, String)>, ConfigError> {
    for key in keys {
        if let Some(found) = t.lookup(key, sources)? {
            return Ok(Some((key, found.value)));
        }
    }
    Ok(None)
}

/// The addresses as KEDA reads them, for every topology: `address` or `addresses`
/// (comma-separated), followed by the `host`/`hosts` and `port`/`ports` pairs
/// (comma-separated, one port per host). A standalone server uses the first.
fn addresses(t: &Trigger) -> Result<Vec<String>, ConfigError> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    };
    let (list_key, mut addresses) = first_of(t, &["address", "addresses"], ADDRESS_SOURCES)?
        .map_or(("address", Vec::new()), |(key, v)| (key, split(&v)));
    let hosts = first_of(t, &["host", "hosts"], ANY_SOURCE)?;
    let ports = first_of(t, &["port", "ports"], ANY_SOURCE)?;
    if let (Some((_, hosts)), Some((port_key, ports))) = (hosts, ports) {
        let (hosts, ports) = (split(&hosts), split(&ports));
        if hosts.len() != ports.len() {
            return Err(t.error(
                port_key,
                format!(
                    "expected one port per host ({} hosts, {} ports)",
                    hosts.len(),
                    ports.len()
                ),
            ));
        }
        for (host, port) in hosts.iter().zip(&ports) {
            if port.parse::<u16>().is_err() {
                let got = if t.metadata.contains_key(port_key) {
                    format!(", got {port:?}")
                } else {
                    String::new()
                };
                return Err(t.error(
                    port_key,
                    format!("expected comma-separated port numbers{got}"),
                ));
            }
            addresses.push(format!("{host}:{port}"));
        }
    }
    if addresses.is_empty() {
        return Err(t.error(
            "address",
            "required; set address or addresses (host:port, comma-separated), or host(s) and port(s)",
        ));
    }
    if !addresses.iter().all(|a| is_host_port(a)) {
        return Err(t.error(list_key, "expected host:port[,host:port...]"));
    }
    Ok(addresses)
}

fn is_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !address.contains('/')
                && !address.contains('@')
                && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

/// `enableTLS` (metadata) or auth parameter `tls: enable`, with `ca`, `cert`, `key` and
/// `unsafeSsl`.
fn parse_tls(t: &Trigger) -> Result<Option<TlsSettings>, ConfigError> {
    let from_metadata = match t.lookup("enableTLS", &[Source::Metadata])? {
        None => None,
        Some(_) => Some(t.bool_or("enableTLS", &[Source::Metadata], false)?),
    };
    let from_auth = match t.lookup("tls", &[Source::Auth])? {
        None => None,
        Some(found) => match found.value.trim().to_ascii_lowercase().as_str() {
            "enable" => Some(true),
            "disable" => Some(false),
            _ => return Err(t.error("tls", "expected enable or disable")),
        },
    };
    let enabled = match (from_metadata, from_auth) {
        (Some(_), Some(_)) => {
            return Err(t.error(
                "tls",
                "set either metadata enableTLS or authentication parameter tls, not both",
            ));
        }
        (Some(on), None) | (None, Some(on)) => on,
        (None, None) => false,
    };
    if !enabled {
        return Ok(None);
    }
    let auth = |key: &str| t.lookup(key, &[Source::Auth]).map(|f| f.map(|f| f.value));
    let ca = auth("ca")?;
    if let Some(ca) = &ca
        && pem_certificates(ca).is_err()
    {
        return Err(t.error("ca", "expected one or more PEM certificates"));
    }
    let client = match (auth("cert")?, auth("key")?) {
        (None, None) => None,
        (Some(_), None) => return Err(t.error("key", "required when cert is set")),
        (None, Some(_)) => return Err(t.error("cert", "required when key is set")),
        (Some(cert), Some(key)) => {
            // An encrypted PKCS#8 key, opened once here, as KEDA does.
            let key = match auth("keyPassword")? {
                Some(password) if !password.is_empty() => decrypt_private_key(&key, &password)
                    .map_err(|p| t.error("keyPassword", p.to_string()))?,
                _ => key,
            };
            if pem_certificates(&cert).is_err() {
                return Err(t.error("cert", "expected a PEM certificate"));
            }
            if let Err(problem) = pem_private_key(&key) {
                return Err(t.error("key", problem.to_string()));
            }
            Some((cert, key))
        }
    };
    Ok(Some(TlsSettings {
        ca,
        client,
        insecure: t.bool_or("unsafeSsl", &[Source::Metadata], false)?,
    }))
}

/// A connection to any of the topologies; cheap to clone (clones share the connection).
#[derive(Clone)]
pub enum RedisConnection {
    /// A standalone server, reconnecting by itself.
    Single(ConnectionManager),
    /// A Sentinel-resolved master. It does not reconnect by itself: when it breaks (a sentinel
    /// demoting the master kills its clients), the pool drops it and the next poll asks the
    /// sentinels again, instead of silently reading a demoted master.
    Master(MultiplexedConnection),
    /// A Redis Cluster: commands go to the node owning their key.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Master(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Master(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Master(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// The pool every Redis trigger type of one registry shares.
pub type RedisPool = SharedPool<RedisTarget, RedisConnection>;

/// One trigger's use of a shared connection.
pub struct RedisLease {
    target: RedisTarget,
    lease: Lease<RedisTarget, RedisConnection>,
}

impl RedisLease {
    /// Registers a user of `target`'s connection; nothing connects until [`RedisLease::run`].
    pub fn new(pool: &RedisPool, target: RedisTarget) -> Self {
        Self {
            lease: pool.lease(target.clone()),
            target,
        }
    }

    /// How errors name the deployment.
    pub fn source_name(&self) -> String {
        self.target.source_name()
    }

    /// Runs `query` on the shared connection (connecting first if needed) within [`TIMEOUT`].
    /// A connection that times out, breaks, or turns out to be a read-only replica (the master
    /// moved) is dropped, so the next call connects again (through the sentinels if any).
    pub async fn run<T, F, Fut>(&self, query: F) -> Result<T, ScalerError>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let source_name = self.source_name();
        let target = self.target.clone();
        let conn: Arc<RedisConnection> = self
            .lease
            .client(&source_name, TIMEOUT, || connect(target))
            .await?;
        match tokio::time::timeout(TIMEOUT, query((*conn).clone())).await {
            Err(_) => {
                self.lease.invalidate(&conn).await;
                Err(ScalerError::Timeout {
                    source_name,
                    timeout: TIMEOUT,
                })
            }
            Ok(Err(e)) => {
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
                {
                    self.lease.invalidate(&conn).await;
                }
                Err(redis_error(&source_name, &e))
            }
            Ok(Ok(value)) => Ok(value),
        }
    }
}

/// Opens the connection for `target`.
pub async fn connect(target: RedisTarget) -> Result<RedisConnection, ScalerError> {
    let source_name = target.source_name();
    let fail = |e: redis::RedisError| redis_error(&source_name, &e);
    match target.topology {
        Topology::Standalone => {
            let address = target.addresses.first().map(String::as_str).unwrap_or("");
            let client = client_for(
                address,
                target.username.as_deref(),
                target.password.as_deref(),
                target.database,
                target.tls.as_ref(),
            )
            .map_err(fail)?;
            let manager = client
                .get_connection_manager_with_config(manager_config())
                .await
                .map_err(fail)?;
            Ok(RedisConnection::Single(manager))
        }
        Topology::Cluster => {
            // Seed nodes carry the address and TLS mode only; credentials go to the builder.
            let nodes = target
                .addresses
                .iter()
                .map(|a| connection_info(a, None, None, 0, target.tls.as_ref()))
                .collect::<redis::RedisResult<Vec<_>>>()
                .map_err(fail)?;
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(TIMEOUT)
                .response_timeout(TIMEOUT)
                .retries(1);
            if let Some(username) = &target.username {
                builder = builder.username(username);
            }
            if let Some(password) = &target.password {
                builder = builder.password(password);
            }
            if let Some(tls) = &target.tls {
                let mode = if tls.insecure {
                    redis::TlsMode::Insecure
                } else {
                    redis::TlsMode::Secure
                };
                builder = builder.tls(mode).certs(certificates(tls));
            }
            let client = builder.build().map_err(fail)?;
            let conn = client.get_async_connection().await.map_err(fail)?;
            Ok(RedisConnection::Cluster(conn))
        }
        Topology::Sentinel => {
            let master = resolve_master(&target).await?;
            let client = client_for(
                &master,
                target.username.as_deref(),
                target.password.as_deref(),
                target.database,
                target.tls.as_ref(),
            )
            .map_err(fail)?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(TIMEOUT))
                .set_response_timeout(Some(TIMEOUT));
            let mut manager = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(fail)?;
            // During a failover the sentinels may still name the old master: check its role.
            let role: Vec<Value> = redis::cmd("ROLE")
                .query_async(&mut manager)
                .await
                .map_err(fail)?;
            match role.first() {
                Some(Value::BulkString(r)) if r == b"master" => {}
                _ => {
                    return Err(ScalerError::Source {
                        source_name,
                        message: format!(
                            "the sentinels name {master} as master, but it is not one (failover in progress?)"
                        ),
                    });
                }
            }
            Ok(RedisConnection::Master(manager))
        }
    }
}

/// Asks each sentinel in turn for the master's address; the first answer wins.
async fn resolve_master(target: &RedisTarget) -> Result<String, ScalerError> {
    let source_name = target.source_name();
    let Some(sentinel) = &target.sentinel else {
        return Err(ScalerError::Source {
            source_name,
            message: "no sentinel master name".into(),
        });
    };
    // Each sentinel gets a share of the connect budget, so a dead one does not use it all.
    let per_sentinel = TIMEOUT / (target.addresses.len().max(1) as u32 + 1);
    let mut problems = Vec::new();
    for address in &target.addresses {
        let attempt = async {
            let client = client_for(
                address,
                sentinel.username.as_deref(),
                sentinel.password.as_deref(),
                0,
                target.tls.as_ref(),
            )?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(per_sentinel))
                .set_response_timeout(Some(per_sentinel));
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&sentinel.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        match tokio::time::timeout(per_sentinel, attempt).await {
            // An IPv6 host comes bare (`fd00::1`): bracket it so the address splits again.
            Ok(Ok(Some((host, port)))) if host.contains(':') => {
                return Ok(format!("[{host}]:{port}"));
            }
            Ok(Ok(Some((host, port)))) => return Ok(format!("{host}:{port}")),
            Ok(Ok(None)) => problems.push(format!(
                "{address} does not know master {:?}",
                sentinel.master
            )),
            Ok(Err(e)) => problems.push(format!("{address}: {}", describe(&e))),
            Err(_) => problems.push(format!("{address}: no answer within {per_sentinel:?}")),
        }
    }
    Err(ScalerError::Source {
        source_name,
        message: format!("no sentinel named the master: {}", problems.join("; ")),
    })
}

fn manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(1)
}

/// A client for one server, with TLS settings applied.
fn client_for(
    address: &str,
    username: Option<&str>,
    password: Option<&str>,
    database: i64,
    tls: Option<&TlsSettings>,
) -> redis::RedisResult<redis::Client> {
    let info = connection_info(address, username, password, database, tls)?;
    match tls {
        None => redis::Client::open(info),
        Some(tls) => redis::Client::build_with_tls(info, certificates(tls)),
    }
}

fn certificates(tls: &TlsSettings) -> TlsCertificates {
    TlsCertificates {
        client_tls: tls
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone().into_bytes(),
                client_key: key.clone().into_bytes(),
            }),
        root_cert: tls.ca.as_ref().map(|ca| ca.clone().into_bytes()),
    }
}

/// Where and how redis-rs connects to one server: `address` (`host:port`, an IPv6 host in
/// brackets), the credentials as they are (no URL, so nothing to percent-encode), the database,
/// and TLS with `unsafeSsl` as `insecure`. The certificates are added by
/// [`redis::Client::build_with_tls`] or the cluster builder. An empty username or password is
/// left out, as it was from a `redis://:@host` URL.
fn connection_info(
    address: &str,
    username: Option<&str>,
    password: Option<&str>,
    database: i64,
    tls: Option<&TlsSettings>,
) -> redis::RedisResult<ConnectionInfo> {
    let (host, port) = split_address(address)?;
    let addr = match tls {
        None => ConnectionAddr::Tcp(host, port),
        Some(tls) => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: tls.insecure,
            tls_params: None,
        },
    };
    let mut redis = RedisConnectionInfo::default().set_db(database);
    if let Some(username) = username.filter(|u| !u.is_empty()) {
        redis = redis.set_username(username);
    }
    if let Some(password) = password.filter(|p| !p.is_empty()) {
        redis = redis.set_password(password);
    }
    Ok(addr.into_connection_info()?.set_redis_settings(redis))
}

/// `host:port` as a host (brackets of an IPv6 address removed) and a port.
fn split_address(address: &str) -> redis::RedisResult<(String, u16)> {
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .ok_or((ErrorKind::InvalidClientConfig, "expected host:port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok((host.to_string(), port))
}

/// A Redis error without connection details (which may hold a password).
fn describe(e: &redis::RedisError) -> String {
    let safe = |text: &str| !text.contains('@') && !text.contains("://");
    if e.code().is_none() {
        // Client-side errors (I/O, TLS): their text says what failed, e.g. an untrusted
        // certificate; the crate does not put URLs in it, but check anyway.
        let text = e.to_string();
        if safe(&text) {
            return text;
        }
    }
    let kind = match e.code() {
        Some(code) => code.to_string(),
        None => format!("{:?}", e.kind()),
    };
    match e.detail() {
        Some(detail) if safe(detail) => format!("{kind}: {detail}"),
        _ => kind,
    }
}

/// A [`ScalerError`] for a Redis error, never carrying credentials.
pub fn redis_error(source_name: &str, e: &redis::RedisError) -> ScalerError {
    ScalerError::Source {
        source_name: source_name.to_string(),
        message: describe(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway self-signed certificate and its key, for parsing only.
    fn pem_pair() -> (String, String) {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIBQDCB56ADAgECAgEBMAoGCCqGSM49BAMCMBExDzANBgNVBAMMBmVidGVzdDAe\nFw0yNDAxMDEwMDAwMDBaFw0zNDAxMDEwMDAwMDBaMBExDzANBgNVBAMMBmVidGVz\ndDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABA==\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
        (cert.to_string(), key.to_string())
    }

    fn trigger(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Trigger {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Trigger {
            index: 1,
            trigger_type: "redis-sentinel".into(),
            metadata: map(meta),
            auth_params: map(auth),
            resolved_env: [
                ("PASS".to_string(), "env-secret".to_string()),
                ("SENTINELS".to_string(), "s1:26379,s2:26379".to_string()),
            ]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn connection_keys_from_every_source() {
        // Sentinel: addresses from env, master, credentials for both the sentinels and Redis.
        let t = trigger(
            &[
                ("addressesFromEnv", "SENTINELS"),
                ("sentinelMaster", "mymaster"),
                ("sentinelUsername", "watcher"),
                ("username", "app"),
                ("passwordFromEnv", "PASS"),
            ],
            &[("sentinelPassword", "sentinel-secret")],
        );
        let target = RedisTarget::parse(&t, Topology::Sentinel).unwrap();
        assert_eq!(target.addresses, ["s1:26379", "s2:26379"]);
        let sentinel = target.sentinel.clone().unwrap();
        assert_eq!(sentinel.master, "mymaster");
        assert_eq!(sentinel.username.as_deref(), Some("watcher"));
        assert_eq!(sentinel.password.as_deref(), Some("sentinel-secret"));
        assert_eq!(target.username.as_deref(), Some("app"));
        assert_eq!(target.password.as_deref(), Some("env-secret"));
        assert!(!target.uses_tls());
        let shown = format!("{target:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(
            target.source_name(),
            "redis-sentinel s1:26379,s2:26379 (master \"mymaster\")"
        );

        // Cluster: addresses from an auth parameter; databaseIndex ignored as KEDA does.
        let t = trigger(
            &[("databaseIndex", "4")],
            &[("addresses", "n1:7000,n2:7001")],
        );
        let target = RedisTarget::parse(&t, Topology::Cluster).unwrap();
        assert_eq!(target.addresses, ["n1:7000", "n2:7001"]);
        assert_eq!(target.database, 0);

        // A password in plain metadata is read, as KEDA reads it (a Secret is the better place).
        let t = trigger(&[("address", "r:1"), ("password", "plain")], &[]);
        let target = RedisTarget::parse(&t, Topology::Standalone).unwrap();
        assert_eq!(target.password.as_deref(), Some("plain"));
        // Every spelling for every topology: addresses then the host/port pairs.
        let t = trigger(
            &[
                ("addresses", "a:1, b:2"),
                ("hosts", "c,d"),
                ("ports", "3,4"),
            ],
            &[],
        );
        for (topology, want) in [
            (Topology::Cluster, vec!["a:1", "b:2", "c:3", "d:4"]),
            (Topology::Standalone, vec!["a:1"]),
        ] {
            assert_eq!(RedisTarget::parse(&t, topology).unwrap().addresses, want);
        }
        let t = trigger(
            &[("host", "h"), ("port", "6379"), ("sentinelMaster", "m")],
            &[],
        );
        assert_eq!(
            RedisTarget::parse(&t, Topology::Sentinel)
                .unwrap()
                .addresses,
            ["h:6379"]
        );
    }

    #[test]
    fn tls_from_metadata_or_auth_with_ca_and_client_certificate() {
        let (cert, key) = pem_pair();
        let t = trigger(&[("address", "r:1"), ("enableTLS", "true")], &[]);
        let tls = RedisTarget::parse(&t, Topology::Standalone)
            .unwrap()
            .tls
            .unwrap();
        assert_eq!((tls.ca, tls.client, tls.insecure), (None, None, false));

        let t = trigger(
            &[("address", "r:1"), ("unsafeSsl", "true")],
            &[
                ("tls", "enable"),
                ("ca", &cert),
                ("cert", &cert),
                ("key", &key),
            ],
        );
        let target = RedisTarget::parse(&t, Topology::Standalone).unwrap();
        let tls = target.tls.clone().unwrap();
        assert_eq!(tls.ca.as_deref(), Some(cert.as_str()));
        assert_eq!(tls.client, Some((cert.clone(), key.clone())));
        assert!(tls.insecure);
        assert!(!format!("{target:?}").contains("PRIVATE"));

        // keyPassword opens an encrypted PKCS#8 key once, at parse time.
        let t = trigger(
            &[("address", "r:1"), ("enableTLS", "true")],
            &[
                ("cert", &cert),
                ("key", crate::tls::test_pem::ENCRYPTED_KEY),
                ("keyPassword", crate::tls::test_pem::KEY_PASSWORD),
            ],
        );
        let (_, opened) = RedisTarget::parse(&t, Topology::Standalone)
            .unwrap()
            .tls
            .unwrap()
            .client
            .unwrap();
        assert!(opened.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(
            pem_private_key(&opened).map(|k| k.secret_der().to_vec()),
            pem_private_key(crate::tls::test_pem::KEY).map(|k| k.secret_der().to_vec())
        );

        // Disabled: certificates are ignored.
        let t = trigger(&[("address", "r:1")], &[("tls", "disable"), ("ca", "x")]);
        assert!(
            !RedisTarget::parse(&t, Topology::Standalone)
                .unwrap()
                .uses_tls()
        );
    }

    #[test]
    fn bad_connection_input_gets_a_precise_error() {
        let (cert, key) = pem_pair();
        /// (topology, metadata, auth, key at fault, problem)
        type Case<'a> = (
            Topology,
            Vec<(&'a str, &'a str)>,
            Vec<(&'a str, &'a str)>,
            &'a str,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                Topology::Cluster,
                vec![],
                vec![],
                "address",
                "required; set address or addresses (host:port, comma-separated), or host(s) and port(s)",
            ),
            (
                Topology::Cluster,
                vec![("hosts", "a,b"), ("ports", "1")],
                vec![],
                "ports",
                "expected one port per host (2 hosts, 1 ports)",
            ),
            (
                Topology::Cluster,
                vec![("hosts", "a"), ("ports", "x")],
                vec![],
                "ports",
                "expected comma-separated port numbers, got \"x\"",
            ),
            (
                Topology::Cluster,
                vec![("addresses", "a:1,b")],
                vec![],
                "addresses",
                "expected host:port[,host:port...]",
            ),
            (
                Topology::Sentinel,
                vec![("addresses", "a:1")],
                vec![],
                "sentinelMaster",
                "required; set metadata \"sentinelMaster\" or metadata \"sentinelMasterFromEnv\" or authentication parameter \"sentinelMaster\"",
            ),
            (
                Topology::Standalone,
                vec![("address", "a:1"), ("enableTLS", "yes")],
                vec![],
                "enableTLS",
                "expected true or false",
            ),
            (
                Topology::Standalone,
                vec![("address", "a:1")],
                vec![("tls", "on")],
                "tls",
                "expected enable or disable",
            ),
            (
                Topology::Standalone,
                vec![("address", "a:1"), ("enableTLS", "true")],
                vec![("tls", "enable")],
                "tls",
                "set either metadata enableTLS or authentication parameter tls, not both",
            ),
            (
                Topology::Standalone,
                vec![("address", "a:1"), ("enableTLS", "true")],
                vec![("ca", "not a pem")],
                "ca",
                "expected one or more PEM certificates",
            ),
            (
                Topology::Standalone,
                vec![("address", "a:1"), ("enableTLS", "true")],
                vec![("cert", &cert)],
                "key",
                "required when cert is set",
            ),
            (
                Topology::Standalone,
                vec![("address", "a:1"), ("enableTLS", "true")],
                vec![("key", &key)],
                "cert",
                "required when key is set",
            ),
            (
                Topology::Standalone,
                vec![("address", "a:1"), ("enableTLS", "true")],
                vec![("cert", &cert), ("key", "garbage")],
                "key",
                "expected an unencrypted PEM private key",
            ),
            (
                Topology::Standalone,
                vec![("address", "a:1"), ("enableTLS", "true")],
                vec![("cert", &cert), ("key", &key), ("keyPassword", "k")],
                "keyPassword",
                "expected an encrypted PKCS#8 PEM key (BEGIN ENCRYPTED PRIVATE KEY) that keyPassword decrypts",
            ),
            (
                Topology::Standalone,
                vec![("address", "user:pw@host:1")],
                vec![],
                "address",
                "expected host:port[,host:port...]",
            ),
        ];
        for (topology, meta, auth, key, problem) in cases {
            let err = RedisTarget::parse(&trigger(&meta, &auth), topology)
                .err()
                .unwrap_or_else(|| panic!("accepted {meta:?}"));
            assert_eq!(
                (err.key.as_str(), err.problem.as_str()),
                (key, problem),
                "{meta:?} {:?}",
                auth.iter().map(|(k, _)| k).collect::<Vec<_>>()
            );
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
    }

    /// The parts redis-rs connects with, to compare two [`ConnectionInfo`]s.
    fn parts(
        info: &ConnectionInfo,
    ) -> (
        ConnectionAddr,
        i64,
        Option<String>,
        Option<String>,
        redis::ProtocolVersion,
    ) {
        let redis = info.redis_settings();
        (
            info.addr().clone(),
            redis.db(),
            redis.username().map(str::to_string),
            redis.password().map(str::to_string),
            redis.protocol(),
        )
    }

    #[test]
    fn credentials_reach_redis_as_they_are() {
        let insecure = TlsSettings {
            ca: None,
            client: None,
            insecure: true,
        };
        let secure = TlsSettings {
            insecure: false,
            ..insecure.clone()
        };
        /// (address, username, password, database, TLS, the URL ebb used to build)
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            i64,
            Option<&'a TlsSettings>,
            &'a str,
        );
        // Each case connects exactly as the URL ebb used to build for it did.
        let cases: &[Case] = &[
            (
                "r:6379",
                Some("app"),
                Some("p@ss:w/rd"),
                2,
                None,
                "redis://app:p%40ss%3Aw%2Frd@r:6379/2",
            ),
            (
                "r:6379",
                None,
                Some("x"),
                0,
                Some(&insecure),
                "rediss://:x@r:6379/0#insecure",
            ),
            (
                "r:6380",
                Some("a b%"),
                None,
                1,
                Some(&secure),
                "rediss://a%20b%25@r:6380/1",
            ),
            (
                "[::1]:7000",
                Some(""),
                Some(""),
                3,
                None,
                "redis://:@[::1]:7000/3",
            ),
        ];
        for &(address, username, password, db, tls, url) in cases {
            let info = connection_info(address, username, password, db, tls).expect("builds");
            let from_url = url.into_connection_info().expect("parses");
            assert_eq!(parts(&info), parts(&from_url), "{url}");
        }
        let info =
            connection_info("r:6379", Some("app"), Some("p@ss:w/rd"), 2, None).expect("builds");
        assert_eq!(info.redis_settings().password(), Some("p@ss:w/rd"));
        assert_eq!(
            connection_info("fd00::1:6379", None, None, 0, None)
                .expect("builds")
                .addr(),
            &ConnectionAddr::Tcp("fd00::1".into(), 6379)
        );
        assert!(connection_info("r", None, None, 0, None).is_err());
    }
}
