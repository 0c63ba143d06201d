//! The local development cluster: upstream Kubernetes, etcd, kwok, Redis (standalone, TLS,
//! Cluster, Sentinel), RabbitMQ, PostgreSQL, MariaDB, Prometheus (scraping an exporter the
//! tests control), Kafka, NATS JetStream and ElasticMQ (SQS) as plain processes on loopback, each under its own pid file and log in
//! `target/dev-cluster/`.

pub mod binaries;
pub mod certs;
pub mod exporter;
pub mod jvm;
pub mod keda;
pub mod metrics_api;
pub mod packages;
pub mod process;
pub mod services;
pub mod streams;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::workspace_root;

/// Loopback ports, kept below the kernel's ephemeral range and away from the services' defaults
/// so the dev cluster never collides with a Redis or RabbitMQ already on the machine.
pub mod ports {
    /// etcd client port.
    pub const ETCD_CLIENT: u16 = 32379;
    /// etcd peer port.
    pub const ETCD_PEER: u16 = 32380;
    /// kube-apiserver secure port.
    pub const APISERVER: u16 = 32443;
    /// kube-controller-manager health port.
    pub const CONTROLLER_MANAGER: u16 = 32257;
    /// kube-scheduler health port.
    pub const SCHEDULER: u16 = 32259;
    /// kwok health/metrics port.
    pub const KWOK: u16 = 32247;
    /// redis-server.
    pub const REDIS: u16 = 32637;
    /// redis-server speaking TLS only.
    pub const REDIS_TLS: u16 = 32639;
    /// The three masters of the Redis Cluster.
    pub const REDIS_CLUSTER: [u16; 3] = [32640, 32641, 32642];
    /// Their cluster bus ports (set explicitly: the default, port + 10000, is in the
    /// ephemeral range).
    pub const REDIS_CLUSTER_BUS: [u16; 3] = [32650, 32651, 32652];
    /// The replica of the Sentinel-monitored master.
    pub const REDIS_SENTINEL_REPLICA: u16 = 32644;
    /// The master the sentinels monitor (as `mymaster`).
    pub const REDIS_SENTINEL_MASTER: u16 = 32645;
    /// The three sentinels.
    pub const REDIS_SENTINELS: [u16; 3] = [32646, 32647, 32648];
    /// RabbitMQ AMQP listener.
    pub const RABBITMQ_AMQP: u16 = 32672;
    /// RabbitMQ management API (HTTP).
    pub const RABBITMQ_MANAGEMENT: u16 = 32673;
    /// RabbitMQ AMQP over TLS.
    pub const RABBITMQ_AMQPS: u16 = 32675;
    /// RabbitMQ management API over HTTPS.
    pub const RABBITMQ_MANAGEMENT_TLS: u16 = 32676;
    /// RabbitMQ's Erlang distribution port.
    pub const RABBITMQ_DIST: u16 = 32674;
    /// Erlang port mapper used by RabbitMQ.
    pub const EPMD: u16 = 32369;
    /// PostgreSQL (password auth; TLS with the dev CA's server certificate).
    pub const POSTGRES: u16 = 32632;
    /// MariaDB, the MySQL protocol (password auth).
    pub const MARIADB: u16 = 32634;
    /// Prometheus's HTTP API.
    pub const PROMETHEUS: u16 = 32690;
    /// The exporter Prometheus scrapes, whose series the tests set.
    pub const PROMETHEUS_EXPORTER: u16 = 32691;
    /// A second Prometheus on the same series, over TLS only, asking for a client certificate
    /// and basic auth.
    pub const PROMETHEUS_SECURE: u16 = 32692;
    /// Kafka's plaintext listener (no authentication).
    pub const KAFKA: u16 = 32620;
    /// Kafka's KRaft controller listener (the broker is its own controller).
    pub const KAFKA_CONTROLLER: u16 = 32621;
    /// Kafka with SASL (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER) over plaintext.
    pub const KAFKA_SASL: u16 = 32622;
    /// Kafka with SASL over TLS (server certificate of the dev CA; a client certificate is
    /// verified when given).
    pub const KAFKA_SASL_TLS: u16 = 32623;
    /// Kafka over TLS, no SASL: a client certificate of the dev CA is required.
    pub const KAFKA_TLS: u16 = 32627;
    /// Kafka's JMX (RMI) port, for the broker's own metrics (connection counts).
    pub const KAFKA_JMX: u16 = 32628;
    /// nats-server's client port (JetStream enabled).
    pub const NATS: u16 = 32624;
    /// nats-server's HTTP monitoring port (`/jsz`, `/varz`, `/healthz`).
    pub const NATS_MONITORING: u16 = 32625;
    /// The loopback addresses of the three-node NATS JetStream cluster, one per node. Each node
    /// listens on its own address with the same ports, as pods of a StatefulSet do: KEDA finds a
    /// consumer's leader at the endpoint's monitoring port on each node's advertised client host.
    pub const NATS_CLUSTER_HOSTS: [[u8; 4]; 3] = [[127, 0, 0, 2], [127, 0, 0, 3], [127, 0, 0, 4]];
    /// The NATS cluster nodes' client port (JetStream enabled, streams replicated 3 times).
    pub const NATS_CLUSTER: u16 = 32629;
    /// The NATS cluster nodes' HTTP monitoring port.
    pub const NATS_CLUSTER_MONITORING: u16 = 32630;
    /// The NATS cluster nodes' route port (the cluster's own traffic).
    pub const NATS_CLUSTER_ROUTES: u16 = 32631;
    /// Ory Hydra's public port: the OAuth 2.0 token endpoint and the JWKS Kafka verifies with.
    pub const HYDRA_PUBLIC: u16 = 32633;
    /// Ory Hydra's admin API (clients are made there).
    pub const HYDRA_ADMIN: u16 = 32635;
    /// ElasticMQ's SQS API (query and JSON protocols).
    pub const SQS: u16 = 32626;
}

/// Files and directories of the running cluster, under `target/dev-cluster/`.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The root directory.
    pub root: PathBuf,
}

impl Layout {
    /// The layout of this checkout's dev cluster, or of the directory named by
    /// `EBB_DEV_CLUSTER_DIR` (so a second worktree can share a running cluster; its ports are
    /// fixed, so two clusters cannot run at once).
    pub fn for_workspace() -> Self {
        let root = std::env::var_os("EBB_DEV_CLUSTER_DIR")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/dev-cluster"));
        Self { root }
    }

    /// Log file of a service.
    pub fn log(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.log"))
    }

    /// Pid file of a service.
    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.root.join("pids").join(format!("{name}.pid"))
    }

    /// Certificates and keys.
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }

    /// Data directory of a service (wiped when the service starts fresh).
    pub fn data(&self, name: &str) -> PathBuf {
        self.root.join("data").join(name)
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    /// Kubeconfig of an internal component (controller-manager, scheduler, kwok).
    pub fn component_kubeconfig(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.kubeconfig"))
    }

    /// The machine-readable description of the running cluster, for tests and tools.
    pub fn info_file(&self) -> PathBuf {
        self.root.join("cluster.json")
    }

    fn create_dirs(&self) -> Result<()> {
        for dir in ["logs", "pids", "pki", "data"] {
            fs::create_dir_all(self.root.join(dir))
                .with_context(|| format!("creating {}", self.root.join(dir).display()))?;
        }
        Ok(())
    }
}

/// What a test or tool needs to reach the running cluster; written to `cluster.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClusterInfo {
    /// Admin kubeconfig path.
    pub kubeconfig: PathBuf,
    /// kubectl built for this cluster.
    pub kubectl: PathBuf,
    /// The apiserver URL.
    pub apiserver: String,
    /// Kubernetes version of the control plane.
    pub kubernetes_version: String,
    /// `redis://` URL of the standalone Redis.
    pub redis_url: String,
    /// `host:port` of the TLS-only Redis (`tls-auth-clients optional`).
    pub redis_tls_address: String,
    /// PEM CA certificate that signed the TLS services' (Redis, RabbitMQ) server certificates
    /// and the client certificate.
    pub tls_ca: PathBuf,
    /// PEM client certificate the TLS services accept.
    pub tls_client_cert: PathBuf,
    /// PEM (PKCS#8) key of that client certificate.
    pub tls_client_key: PathBuf,
    /// `host:port` of each master of the Redis Cluster.
    pub redis_cluster_addresses: Vec<String>,
    /// `host:port` of each Redis Sentinel.
    pub redis_sentinel_addresses: Vec<String>,
    /// The name the sentinels know the monitored master by.
    pub redis_sentinel_master: String,
    /// `amqp://` URL of RabbitMQ (default vhost).
    pub rabbitmq_amqp_url: String,
    /// `http://` URL of RabbitMQ's management API, credentials included.
    pub rabbitmq_management_url: String,
    /// `amqps://` URL of RabbitMQ's TLS listener (server certificate from [`Self::tls_ca`]).
    pub rabbitmq_amqps_url: String,
    /// `https://` URL of RabbitMQ's management API over TLS, credentials included.
    pub rabbitmq_management_https_url: String,
    /// The fake node that kwok keeps Ready.
    pub node_name: String,
    /// `http://` URL of Prometheus (no credentials).
    #[serde(default)]
    pub prometheus_url: String,
    /// `http://` URL of the exporter Prometheus scrapes (`POST /set`, `POST /delete`).
    #[serde(default)]
    pub prometheus_exporter_url: String,
    /// How often Prometheus scrapes the exporter.
    #[serde(default)]
    pub prometheus_scrape_interval_ms: u64,
    /// A folder Prometheus reads scrape targets from (file service discovery, job
    /// `file-targets`): a test writes `<name>.json`, `[{"targets": ["127.0.0.1:port"], "labels":
    /// {...}}]`, and Prometheus scrapes it within a second or two; removing it stops that.
    #[serde(default)]
    pub prometheus_targets_dir: PathBuf,
    /// `https://` URL of the second Prometheus, which scrapes the same exporter and admits a
    /// request only with a client certificate of the dev CA (`tls_client_cert`) and basic auth
    /// ([`ClusterInfo::prometheus_secure_user`]).
    #[serde(default)]
    pub prometheus_secure_url: String,
    /// The secure Prometheus's basic auth user and password.
    #[serde(default)]
    pub prometheus_secure_user: (String, String),
    /// `postgresql://` URL of PostgreSQL as its superuser, credentials included.
    #[serde(default)]
    pub postgres_url: String,
    /// `host:port` of MariaDB.
    #[serde(default)]
    pub mysql_address: String,
    /// MariaDB's user and password for the tests (all privileges), and their database.
    #[serde(default)]
    pub mysql_user: (String, String, String),
    /// `host:port` of Kafka's plaintext listener (no authentication).
    #[serde(default)]
    pub kafka_bootstrap: String,
    /// `host:port` of Kafka's SASL listener over plaintext (PLAIN, SCRAM-SHA-256/512,
    /// OAUTHBEARER with unsecured tokens).
    #[serde(default)]
    pub kafka_sasl_bootstrap: String,
    /// `host:port` of Kafka's SASL listener over TLS (server certificate from [`Self::tls_ca`]).
    #[serde(default)]
    pub kafka_sasl_tls_bootstrap: String,
    /// `host:port` of Kafka's TLS listener without SASL, which requires a client certificate of
    /// the dev CA ([`Self::tls_client_cert`]).
    #[serde(default)]
    pub kafka_tls_bootstrap: String,
    /// The user and password every SASL mechanism of Kafka knows.
    #[serde(default)]
    pub kafka_user: (String, String),
    /// `service:jmx:` URL of the broker's JMX agent (no authentication, loopback only).
    #[serde(default)]
    pub kafka_jmx_url: String,
    /// Hydra's OAuth 2.0 token endpoint, whose tokens Kafka's SASL OAUTHBEARER accepts.
    #[serde(default)]
    pub oauth_token_url: String,
    /// The OAuth client (id, secret) Hydra knows, allowed the client-credentials grant with
    /// scope `kafka`.
    #[serde(default)]
    pub oauth_client: (String, String),
    /// `nats://` URL of nats-server (JetStream enabled).
    #[serde(default)]
    pub nats_url: String,
    /// `host:port` of nats-server's monitoring endpoint, as the `nats-jetstream` trigger takes it.
    #[serde(default)]
    pub nats_monitoring_endpoint: String,
    /// `nats://` URLs of the three-node NATS JetStream cluster, one per node.
    #[serde(default)]
    pub nats_cluster_urls: Vec<String>,
    /// `host:port` of each NATS cluster node's monitoring endpoint, in the order of
    /// `nats_cluster_urls`.
    #[serde(default)]
    pub nats_cluster_monitoring_endpoints: Vec<String>,
    /// `http://` URL of ElasticMQ's SQS API; queue URLs are `<it>/<sqs_account>/<queue>`.
    #[serde(default)]
    pub sqs_endpoint: String,
    /// The account ElasticMQ puts in queue URLs.
    #[serde(default)]
    pub sqs_account: String,
    /// The region ElasticMQ says it is in.
    #[serde(default)]
    pub sqs_region: String,
}

/// `cargo xtask cluster up`: installs, builds and starts whatever is missing; idempotent.
pub fn up() -> Result<ClusterInfo> {
    let layout = Layout::for_workspace();
    layout.create_dirs()?;
    let _lock = lock(&layout)?;
    println!("==> ebb dev cluster: checking Debian packages");
    packages::ensure()?;
    println!("==> ebb dev cluster: Kubernetes binaries");
    let binaries = binaries::ensure()?;
    println!("==> ebb dev cluster: Kafka and ElasticMQ jars (Maven Central)");
    jvm::ensure()?;
    println!("==> ebb dev cluster: certificates and kubeconfigs");
    if certs::ensure(&layout)? {
        // Components still running on an older CA would refuse the new kubeconfigs.
        services::stop_built_on(&layout, services::Foundation::ClusterState)?;
    }
    if certs::ensure_service_tls(&layout)? {
        services::stop_built_on(&layout, services::Foundation::ServiceTls)?;
    }
    certs::write_kubeconfigs(&layout)?;
    println!(
        "==> ebb dev cluster: starting services (logs in {})",
        layout.root.join("logs").display()
    );
    services::start_all(&layout, &binaries)?;
    let info = ClusterInfo {
        kubeconfig: layout.kubeconfig(),
        kubectl: binaries.path("kubectl"),
        apiserver: services::apiserver_url(),
        kubernetes_version: format!("v{}", binaries::KUBERNETES_VERSION),
        redis_url: format!("redis://127.0.0.1:{}", ports::REDIS),
        redis_tls_address: format!("127.0.0.1:{}", ports::REDIS_TLS),
        tls_ca: certs::service_tls_file(&layout, "ca.crt"),
        tls_client_cert: certs::service_tls_file(&layout, "client.crt"),
        tls_client_key: certs::service_tls_file(&layout, "client.key"),
        redis_cluster_addresses: ports::REDIS_CLUSTER
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect(),
        redis_sentinel_addresses: ports::REDIS_SENTINELS
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect(),
        redis_sentinel_master: services::SENTINEL_MASTER_NAME.to_string(),
        rabbitmq_amqp_url: format!("amqp://guest:guest@127.0.0.1:{}/%2f", ports::RABBITMQ_AMQP),
        rabbitmq_management_url: format!(
            "http://guest:guest@127.0.0.1:{}",
            ports::RABBITMQ_MANAGEMENT
        ),
        rabbitmq_amqps_url: format!(
            "amqps://guest:guest@127.0.0.1:{}/%2f",
            ports::RABBITMQ_AMQPS
        ),
        rabbitmq_management_https_url: format!(
            "https://guest:guest@127.0.0.1:{}",
            ports::RABBITMQ_MANAGEMENT_TLS
        ),
        node_name: services::KWOK_NODE.to_string(),
        prometheus_url: format!("http://127.0.0.1:{}", ports::PROMETHEUS),
        prometheus_exporter_url: format!("http://127.0.0.1:{}", ports::PROMETHEUS_EXPORTER),
        prometheus_scrape_interval_ms: services::PROMETHEUS_SCRAPE_INTERVAL_MS,
        prometheus_targets_dir: services::prometheus_targets_dir(&layout),
        prometheus_secure_url: format!("https://127.0.0.1:{}", ports::PROMETHEUS_SECURE),
        prometheus_secure_user: (
            services::PROMETHEUS_USER.to_string(),
            services::DATABASE_PASSWORD.to_string(),
        ),
        postgres_url: format!(
            "postgresql://postgres:{}@127.0.0.1:{}/postgres",
            services::DATABASE_PASSWORD,
            ports::POSTGRES
        ),
        mysql_address: format!("127.0.0.1:{}", ports::MARIADB),
        mysql_user: (
            services::MARIADB_USER.to_string(),
            services::DATABASE_PASSWORD.to_string(),
            services::MARIADB_DATABASE.to_string(),
        ),
        kafka_bootstrap: format!("127.0.0.1:{}", ports::KAFKA),
        kafka_sasl_bootstrap: format!("127.0.0.1:{}", ports::KAFKA_SASL),
        kafka_sasl_tls_bootstrap: format!("127.0.0.1:{}", ports::KAFKA_SASL_TLS),
        kafka_tls_bootstrap: format!("127.0.0.1:{}", ports::KAFKA_TLS),
        kafka_user: (
            streams::KAFKA_USER.to_string(),
            streams::KAFKA_PASSWORD.to_string(),
        ),
        kafka_jmx_url: format!(
            "service:jmx:rmi:///jndi/rmi://127.0.0.1:{}/jmxrmi",
            ports::KAFKA_JMX
        ),
        oauth_token_url: streams::hydra_token_url(),
        oauth_client: (
            streams::OAUTH_CLIENT_ID.to_string(),
            streams::OAUTH_CLIENT_SECRET.to_string(),
        ),
        nats_url: format!("nats://127.0.0.1:{}", ports::NATS),
        nats_monitoring_endpoint: format!("127.0.0.1:{}", ports::NATS_MONITORING),
        nats_cluster_urls: ports::NATS_CLUSTER_HOSTS
            .iter()
            .map(|h| format!("nats://{}:{}", dotted(h), ports::NATS_CLUSTER))
            .collect(),
        nats_cluster_monitoring_endpoints: ports::NATS_CLUSTER_HOSTS
            .iter()
            .map(|h| format!("{}:{}", dotted(h), ports::NATS_CLUSTER_MONITORING))
            .collect(),
        sqs_endpoint: format!("http://127.0.0.1:{}", ports::SQS),
        sqs_account: streams::SQS_ACCOUNT.to_string(),
        sqs_region: streams::SQS_REGION.to_string(),
    };
    fs::write(layout.info_file(), serde_json::to_string_pretty(&info)?)?;
    println!("==> ebb dev cluster is up");
    println!("  kubeconfig: {}", info.kubeconfig.display());
    println!("  export KUBECONFIG={}", info.kubeconfig.display());
    println!("  kubectl:    {}", info.kubectl.display());
    println!("  redis:      {}", info.redis_url);
    println!(
        "  redis tls:  {} (CA {})",
        info.redis_tls_address,
        info.tls_ca.display()
    );
    println!(
        "  redis cluster: {}",
        info.redis_cluster_addresses.join(",")
    );
    println!(
        "  redis sentinels: {} (master {})",
        info.redis_sentinel_addresses.join(","),
        info.redis_sentinel_master
    );
    println!(
        "  rabbitmq:   amqp://127.0.0.1:{} (management http://127.0.0.1:{})",
        ports::RABBITMQ_AMQP,
        ports::RABBITMQ_MANAGEMENT
    );
    println!(
        "  rabbitmq tls: amqps://127.0.0.1:{} (management https://127.0.0.1:{})",
        ports::RABBITMQ_AMQPS,
        ports::RABBITMQ_MANAGEMENT_TLS
    );
    println!(
        "  postgresql: postgresql://postgres@127.0.0.1:{} (TLS too)",
        ports::POSTGRES
    );
    println!(
        "  mariadb:    {} (user {})",
        info.mysql_address, info.mysql_user.0
    );
    println!(
        "  prometheus: {} (scraping {} every {} ms)",
        info.prometheus_url, info.prometheus_exporter_url, info.prometheus_scrape_interval_ms
    );
    println!(
        "  prometheus, client certificate and basic auth: {} (user {})",
        info.prometheus_secure_url, info.prometheus_secure_user.0
    );
    println!(
        "  kafka:      {} (SASL {}, SASL over TLS {}, TLS {}; user {})",
        info.kafka_bootstrap,
        info.kafka_sasl_bootstrap,
        info.kafka_sasl_tls_bootstrap,
        info.kafka_tls_bootstrap,
        info.kafka_user.0
    );
    println!(
        "  oauth:      {} (Ory Hydra, client {}; Kafka's OAUTHBEARER checks its tokens)",
        info.oauth_token_url, info.oauth_client.0
    );
    println!(
        "  nats:       {} (monitoring http://{})",
        info.nats_url, info.nats_monitoring_endpoint
    );
    println!(
        "  nats cluster: {} (monitoring http://{})",
        info.nats_cluster_urls.join(", "),
        info.nats_cluster_monitoring_endpoints.join(", http://")
    );
    println!(
        "  sqs:        {} (ElasticMQ, account {}, region {})",
        info.sqs_endpoint, info.sqs_account, info.sqs_region
    );
    Ok(info)
}

/// `cargo xtask cluster down`: stops, by pid, every process `up` started.
pub fn down() -> Result<()> {
    let layout = Layout::for_workspace();
    if !layout.root.exists() {
        println!("ebb dev cluster: nothing to stop");
        return Ok(());
    }
    let _lock = lock(&layout)?;
    services::stop_all(&layout)?;
    let _ = fs::remove_file(layout.info_file());
    println!("ebb dev cluster: stopped");
    Ok(())
}

/// `cargo xtask cluster status`: one line per service.
pub fn status() -> Result<bool> {
    let layout = Layout::for_workspace();
    let mut all = true;
    for (name, healthy) in services::status(&layout) {
        let state = match healthy {
            Some(true) => "running, healthy",
            Some(false) => "running, NOT healthy",
            None => "stopped",
        };
        all &= healthy == Some(true);
        println!("  {name:<24} {state}");
    }
    if all {
        println!("  kubeconfig: {}", layout.kubeconfig().display());
    }
    Ok(all)
}

/// Serialises `up` and `down` between concurrent callers (two test binaries, a shell).
fn lock(layout: &Layout) -> Result<nix::fcntl::Flock<fs::File>> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(layout.root.join("lock"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", layout.root.join("lock").display()))
}

/// The last `lines` lines of a file, for messages.
/// An IPv4 address as `a.b.c.d`.
pub fn dotted(host: &[u8; 4]) -> String {
    std::net::Ipv4Addr::from(*host).to_string()
}

pub fn tail(path: &Path, lines: usize) -> String {
    tail_text(&fs::read_to_string(path).unwrap_or_default(), lines)
}

/// The last `lines` lines of `text`.
pub fn tail_text(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
