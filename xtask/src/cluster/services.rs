//! The dev cluster's services as one table, [`SERVICES`]: each entry names a service, lists the
//! ports it holds, and says how it starts, how its health is read, when `up` waits for it and
//! what it restarts with. `up` starts the entries in table order, `status` reports them in that
//! order and `down` stops them in reverse.
//!
//! Adding a server is one entry here (with the functions that build its command and read its
//! health, unless existing ones fit) plus its port constants in [`super::ports`].

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::binaries::Binaries;
use super::certs::{FRONT_PROXY_CLIENT_NAME, service_tls_file};
use super::process::{self, wait_until};
use super::{Layout, ports, streams, tail};

/// The fake node kwok keeps Ready, so pods are scheduled, Running and Ready without kubelets.
pub const KWOK_NODE: &str = "kwok-node-0";
/// How often the HPA controller re-evaluates every HPA (production default 15s).
pub const HPA_SYNC_PERIOD: &str = "2s";
/// How long the HPA waits before scaling down (production default 5m).
pub const HPA_DOWNSCALE_STABILIZATION: &str = "10s";

/// The name the sentinels know their master by.
pub const SENTINEL_MASTER_NAME: &str = "mymaster";

/// etcd's service name: when it is not running, it starts with empty data.
const ETCD: &str = "etcd";
/// kube-apiserver's service name.
const APISERVER: &str = "kube-apiserver";
/// What a Redis Cluster node's second port serves.
const CLUSTER_BUS: &str = "cluster bus";

/// How long a service gets to exit on SIGTERM unless its entry says otherwise.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long `up` waits at the end for a service to become healthy unless its entry says
/// otherwise.
const READY_AT_END: Ready = Ready::AtEnd(Duration::from_secs(60));

/// Prepares a service's files (a fresh data directory, a configuration) and returns the command
/// that runs it in the foreground.
pub type StartCommand = fn(&Layout, &Binaries, &Service) -> Result<Command>;
/// Creates (or updates) an object another service keeps (see [`Run::ApiObject`]).
pub type CreateObject = fn(&Layout, &Binaries) -> Result<()>;
/// Whether a running service answers as it should.
pub type HealthCheck = fn(&Layout, &Service) -> bool;
/// Makes one whole of a group's started members (see [`Group::form`]).
pub type FormGroup = fn(&Layout, &[Service]) -> Result<()>;

/// A loopback port a service listens on.
#[derive(Clone, Copy, Debug)]
pub struct Port {
    /// The loopback address it listens on (127.0.0.1 unless the service needs its own).
    pub host: [u8; 4],
    /// The port number on that address.
    pub number: u16,
    /// What is served on it.
    pub serves: &'static str,
}

impl Port {
    /// Port `number` on 127.0.0.1, serving `serves`.
    pub const fn new(number: u16, serves: &'static str) -> Self {
        Self::on([127, 0, 0, 1], number, serves)
    }

    /// Port `number` on the loopback address `host`, serving `serves`.
    pub const fn on(host: [u8; 4], number: u16, serves: &'static str) -> Self {
        Self {
            host,
            number,
            serves,
        }
    }

    /// Its socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.host, self.number))
    }

    /// Whether something accepts connections on it.
    fn open(&self) -> bool {
        connect_to(self.addr()).is_some()
    }
}

/// One service of the dev cluster: an entry of [`SERVICES`].
pub struct Service {
    /// Its name; also the name of its pid file, log and data directory.
    pub name: &'static str,
    /// Every port it listens on, the one clients use first. `up` does not start it while
    /// another process holds one of them; `down` checks that they are all free again.
    pub ports: &'static [Port],
    /// How it runs.
    pub run: Run,
    /// Whether it answers as it should (asked only while it runs).
    pub health: HealthCheck,
    /// When `up` waits for it to be healthy, and for how long.
    pub ready: Ready,
    /// What it is built on besides its own process: when `up` replaces that, the service is
    /// stopped and started again.
    pub built_on: Option<Foundation>,
    /// The group it starts and stops with, if any; a group's members are consecutive entries.
    pub group: Option<&'static Group>,
}

/// How a service runs.
#[derive(Clone, Copy)]
pub enum Run {
    /// A process group of its own, recorded in a pid file and stopped by it.
    Process {
        /// Builds the command that runs it.
        command: StartCommand,
        /// How long it gets to exit on SIGTERM before SIGKILL.
        stop_grace: Duration,
    },
    /// An object another service keeps rather than a process (a Node in the apiserver, a client
    /// in Hydra): created whenever it is not healthy, never stopped, and counted as running
    /// while its host service runs.
    ApiObject {
        /// Creates (or updates) the object.
        create: CreateObject,
        /// The service whose process keeps the object.
        host: &'static str,
    },
}

/// When `up` waits for a service to become healthy.
#[derive(Clone, Copy, Debug)]
pub enum Ready {
    /// Right after starting it, for at most this long: the services after it need it.
    BeforeNext(Duration),
    /// After every service has started, for at most this long, the shortest timeouts first: the
    /// slowest to boot are checked on last.
    AtEnd(Duration),
}

/// State outside a service's process that `up` may replace, restarting what is built on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Foundation {
    /// The cluster's state: etcd's data (empty whenever etcd starts) and the PKI in `pki/`.
    ClusterState,
    /// The TLS services' certificates in `service-tls/`.
    ServiceTls,
}

impl Foundation {
    /// Why a service built on this was stopped, for the message.
    fn restart_reason(self) -> &'static str {
        match self {
            Foundation::ClusterState => "restarting on the new state",
            Foundation::ServiceTls => "restarting on new certificates",
        }
    }
}

/// Services that only work as a whole (one Redis Cluster, one Sentinel set). When some members
/// run and others do not, the running ones are stopped and all start fresh: a half-restarted
/// group would hold stale cluster or replication state.
pub struct Group {
    /// Its name, for messages.
    pub name: &'static str,
    /// Run with the group's members once every service has started, e.g. to join them into one
    /// cluster; it must do nothing when they already form one.
    pub form: Option<FormGroup>,
}

/// The Redis Cluster's three masters: one cluster, joined once all three run.
const REDIS_CLUSTER: Group = Group {
    name: "redis-cluster",
    form: Some(form_redis_cluster),
};

/// The Sentinel set: a master, its replica and three sentinels.
const REDIS_SENTINEL: Group = Group {
    name: "redis-sentinel",
    form: None,
};

/// The NATS JetStream cluster's three nodes: routes join them on their own.
const NATS_CLUSTER: Group = Group {
    name: "nats-cluster",
    form: None,
};

/// A node of the NATS JetStream cluster, on its own loopback address.
const fn nats_cluster_node(name: &'static str, ports: &'static [Port]) -> Service {
    Service::process(
        name,
        ports,
        streams::nats_cluster_node_command,
        streams::nats_cluster_node_ready,
    )
    .group(&NATS_CLUSTER)
}

/// A NATS cluster node's client, monitoring and route ports on `host`.
const fn nats_cluster_ports(host: [u8; 4]) -> [Port; 3] {
    [
        Port::on(host, ports::NATS_CLUSTER, "NATS (JetStream cluster node)"),
        Port::on(host, ports::NATS_CLUSTER_MONITORING, NATS_MONITORING),
        Port::on(host, ports::NATS_CLUSTER_ROUTES, "NATS cluster routes"),
    ]
}

/// What a NATS cluster node's monitoring port serves.
pub const NATS_MONITORING: &str = "NATS monitoring (HTTP)";
/// The ports of each NATS cluster node.
const NATS_CLUSTER_PORTS: [[Port; 3]; 3] = [
    nats_cluster_ports(ports::NATS_CLUSTER_HOSTS[0]),
    nats_cluster_ports(ports::NATS_CLUSTER_HOSTS[1]),
    nats_cluster_ports(ports::NATS_CLUSTER_HOSTS[2]),
];

/// Every service, in start order.
pub const SERVICES: &[Service] = &[
    Service::process(
        "epmd",
        &[Port::new(ports::EPMD, "Erlang port mapper")],
        epmd_command,
        accepts_connections,
    )
    // RabbitMQ registers with it as it boots.
    .ready(Ready::BeforeNext(Duration::from_secs(10))),
    Service::process(
        "rabbitmq",
        &[
            Port::new(ports::RABBITMQ_AMQP, "AMQP"),
            Port::new(ports::RABBITMQ_MANAGEMENT, "management API (HTTP)"),
            Port::new(ports::RABBITMQ_AMQPS, "AMQP over TLS"),
            Port::new(ports::RABBITMQ_MANAGEMENT_TLS, "management API over HTTPS"),
            Port::new(ports::RABBITMQ_DIST, "Erlang distribution"),
        ],
        rabbitmq_command,
        rabbitmq_healthy,
    )
    // RabbitMQ flushes its state on SIGTERM and needs a few seconds.
    .stop_grace(Duration::from_secs(30))
    // RabbitMQ boots slowest: it starts early and is checked on last.
    .ready(Ready::AtEnd(Duration::from_secs(120)))
    .built_on(Foundation::ServiceTls),
    Service::process(
        "redis",
        &[Port::new(ports::REDIS, "Redis")],
        redis_command,
        redis_answers_ping,
    ),
    Service::process(
        "redis-tls",
        &[Port::new(ports::REDIS_TLS, "Redis over TLS")],
        redis_tls_command,
        redis_tls_answers_ping,
    )
    .built_on(Foundation::ServiceTls),
    Service::process(
        "redis-cluster-0",
        &[
            Port::new(ports::REDIS_CLUSTER[0], "Redis"),
            Port::new(ports::REDIS_CLUSTER_BUS[0], CLUSTER_BUS),
        ],
        redis_cluster_node_command,
        redis_cluster_ok,
    )
    .group(&REDIS_CLUSTER),
    Service::process(
        "redis-cluster-1",
        &[
            Port::new(ports::REDIS_CLUSTER[1], "Redis"),
            Port::new(ports::REDIS_CLUSTER_BUS[1], CLUSTER_BUS),
        ],
        redis_cluster_node_command,
        redis_cluster_ok,
    )
    .group(&REDIS_CLUSTER),
    Service::process(
        "redis-cluster-2",
        &[
            Port::new(ports::REDIS_CLUSTER[2], "Redis"),
            Port::new(ports::REDIS_CLUSTER_BUS[2], CLUSTER_BUS),
        ],
        redis_cluster_node_command,
        redis_cluster_ok,
    )
    .group(&REDIS_CLUSTER),
    Service::process(
        "redis-sentinel-master",
        &[Port::new(
            ports::REDIS_SENTINEL_MASTER,
            "Redis (the monitored master)",
        )],
        sentinel_master_command,
        replicating,
    )
    .group(&REDIS_SENTINEL),
    Service::process(
        "redis-sentinel-replica",
        &[Port::new(
            ports::REDIS_SENTINEL_REPLICA,
            "Redis (the master's replica)",
        )],
        sentinel_replica_command,
        replicating,
    )
    .group(&REDIS_SENTINEL),
    Service::process(
        "redis-sentinel-0",
        &[Port::new(ports::REDIS_SENTINELS[0], "Redis Sentinel")],
        sentinel_command,
        sentinel_has_quorum,
    )
    .group(&REDIS_SENTINEL),
    Service::process(
        "redis-sentinel-1",
        &[Port::new(ports::REDIS_SENTINELS[1], "Redis Sentinel")],
        sentinel_command,
        sentinel_has_quorum,
    )
    .group(&REDIS_SENTINEL),
    Service::process(
        "redis-sentinel-2",
        &[Port::new(ports::REDIS_SENTINELS[2], "Redis Sentinel")],
        sentinel_command,
        sentinel_has_quorum,
    )
    .group(&REDIS_SENTINEL),
    Service::process(
        ETCD,
        &[
            Port::new(ports::ETCD_CLIENT, "etcd clients"),
            Port::new(ports::ETCD_PEER, "etcd peers"),
        ],
        etcd_command,
        etcd_healthy,
    )
    .ready(Ready::BeforeNext(Duration::from_secs(30))),
    Service::process(
        APISERVER,
        &[Port::new(ports::APISERVER, "Kubernetes API (HTTPS)")],
        apiserver_command,
        apiserver_ready,
    )
    .ready(Ready::BeforeNext(Duration::from_secs(120)))
    .built_on(Foundation::ClusterState),
    Service::process(
        "kube-controller-manager",
        &[Port::new(ports::CONTROLLER_MANAGER, "health (HTTPS)")],
        controller_manager_command,
        accepts_connections,
    )
    .built_on(Foundation::ClusterState),
    Service::process(
        "kube-scheduler",
        &[Port::new(ports::SCHEDULER, "health (HTTPS)")],
        scheduler_command,
        accepts_connections,
    )
    .built_on(Foundation::ClusterState),
    Service::process(
        "kwok",
        &[Port::new(ports::KWOK, "health and metrics")],
        kwok_command,
        accepts_connections,
    )
    .built_on(Foundation::ClusterState),
    // Not a process of its own: listed so that `up` creates the fake node and `status`
    // reports it.
    Service::api_object("kwok-node", APISERVER, create_kwok_node, kwok_node_ready),
    Service::process(
        "postgresql",
        &[Port::new(
            ports::POSTGRES,
            "PostgreSQL (password auth, TLS)",
        )],
        postgres_command,
        postgres_ready,
    )
    .built_on(Foundation::ServiceTls),
    Service::process(
        "mariadb",
        &[Port::new(
            ports::MARIADB,
            "MariaDB (MySQL protocol, TLS optional)",
        )],
        mariadb_command,
        mariadb_ready,
    )
    .built_on(Foundation::ServiceTls),
    Service::process(
        "prometheus-exporter",
        &[Port::new(
            ports::PROMETHEUS_EXPORTER,
            "the series the tests set (HTTP)",
        )],
        exporter_command,
        exporter_ready,
    ),
    Service::process(
        "prometheus",
        &[Port::new(ports::PROMETHEUS, "Prometheus API (HTTP)")],
        prometheus_command,
        prometheus_ready,
    ),
    Service::process(
        "prometheus-secure",
        &[Port::new(
            ports::PROMETHEUS_SECURE,
            "Prometheus API (HTTPS, client certificate and basic auth)",
        )],
        prometheus_secure_command,
        prometheus_secure_ready,
    )
    .built_on(Foundation::ServiceTls),
    Service::process(
        "hydra",
        &[
            Port::new(
                ports::HYDRA_PUBLIC,
                "OAuth 2.0 token endpoint and JWKS (HTTP)",
            ),
            Port::new(ports::HYDRA_ADMIN, "Hydra admin API (HTTP)"),
        ],
        streams::hydra_command,
        streams::hydra_ready,
    )
    // Kafka fetches Hydra's signing keys when it starts.
    .ready(Ready::BeforeNext(Duration::from_secs(60))),
    Service::api_object(
        "hydra-client",
        "hydra",
        streams::create_hydra_client,
        streams::hydra_client_ready,
    ),
    Service::process(
        "kafka",
        &[
            Port::new(ports::KAFKA, "Kafka (plaintext)"),
            Port::new(ports::KAFKA_CONTROLLER, "KRaft controller"),
            Port::new(ports::KAFKA_SASL, "Kafka (SASL)"),
            Port::new(ports::KAFKA_SASL_TLS, "Kafka (SASL over TLS)"),
            Port::new(ports::KAFKA_TLS, "Kafka (TLS)"),
            Port::new(ports::KAFKA_JMX, "Kafka JMX (RMI)"),
        ],
        streams::kafka_command,
        streams::kafka_ready,
    )
    .stop_grace(Duration::from_secs(20))
    .ready(Ready::AtEnd(Duration::from_secs(120)))
    .built_on(Foundation::ServiceTls),
    Service::process(
        "nats",
        &[
            Port::new(ports::NATS, "NATS (JetStream)"),
            Port::new(ports::NATS_MONITORING, NATS_MONITORING),
        ],
        streams::nats_command,
        streams::nats_ready,
    ),
    nats_cluster_node("nats-cluster-0", &NATS_CLUSTER_PORTS[0]),
    nats_cluster_node("nats-cluster-1", &NATS_CLUSTER_PORTS[1]),
    nats_cluster_node("nats-cluster-2", &NATS_CLUSTER_PORTS[2]),
    Service::process(
        "elasticmq",
        &[Port::new(ports::SQS, "SQS API (HTTP)")],
        streams::elasticmq_command,
        streams::elasticmq_ready,
    )
    .ready(Ready::AtEnd(Duration::from_secs(90))),
];

/// The password of the databases' users: PostgreSQL's `postgres`, MariaDB's [`MARIADB_USER`].
pub const DATABASE_PASSWORD: &str = "ebb-dev";
/// MariaDB's user for the tests (every privilege).
pub const MARIADB_USER: &str = "ebb";
/// MariaDB's database for the tests.
pub const MARIADB_DATABASE: &str = "ebb";
/// How often Prometheus scrapes the exporter.
pub const PROMETHEUS_SCRAPE_INTERVAL_MS: u64 = 1000;
/// The secure Prometheus's basic auth user (password [`DATABASE_PASSWORD`]).
pub const PROMETHEUS_USER: &str = "ebb";
/// bcrypt of [`DATABASE_PASSWORD`] (cost 12), as Prometheus's web configuration wants it.
const PROMETHEUS_PASSWORD_BCRYPT: &str =
    "$2b$12$jPdU2y06zZ8EH8o667zc5.ZRBfj2/3MPLGPuy7xLJvxKW3OVc.rT2";
/// PostgreSQL's programs (Debian's `postgresql-15`).
const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Service {
    /// A process started with `command` and checked with `health`. Unless the methods below say
    /// otherwise, it gets [`STOP_GRACE`] to exit, `up` waits for it at the end for up to a
    /// minute, and it is built on nothing else and in no group.
    pub const fn process(
        name: &'static str,
        ports: &'static [Port],
        command: StartCommand,
        health: HealthCheck,
    ) -> Self {
        Self {
            name,
            ports,
            run: Run::Process {
                command,
                stop_grace: STOP_GRACE,
            },
            health,
            ready: READY_AT_END,
            built_on: None,
            group: None,
        }
    }

    /// An object the process `host` keeps, made by `create` whenever `health` says it is
    /// missing; `up` waits for it at the end for up to a minute.
    pub const fn api_object(
        name: &'static str,
        host: &'static str,
        create: CreateObject,
        health: HealthCheck,
    ) -> Self {
        Self {
            name,
            ports: &[],
            run: Run::ApiObject { create, host },
            health,
            ready: READY_AT_END,
            built_on: None,
            group: None,
        }
    }

    /// The process gets `grace` to exit on SIGTERM before SIGKILL.
    pub const fn stop_grace(mut self, grace: Duration) -> Self {
        if let Run::Process { stop_grace, .. } = &mut self.run {
            *stop_grace = grace;
        }
        self
    }

    /// `up` waits for it as `ready` says.
    pub const fn ready(mut self, ready: Ready) -> Self {
        self.ready = ready;
        self
    }

    /// It restarts whenever `up` replaces `foundation`.
    pub const fn built_on(mut self, foundation: Foundation) -> Self {
        self.built_on = Some(foundation);
        self
    }

    /// It starts and stops with the rest of `group`; the members must be consecutive entries.
    pub const fn group(mut self, group: &'static Group) -> Self {
        self.group = Some(group);
        self
    }

    /// The port clients connect to: the first it lists.
    pub fn client_port(&self) -> Result<u16> {
        self.ports
            .first()
            .map(|port| port.number)
            .with_context(|| format!("{} lists no port", self.name))
    }

    /// The port serving `what`, with its address.
    pub fn port_entry(&self, what: &str) -> Result<&Port> {
        self.ports
            .iter()
            .find(|port| port.serves == what)
            .with_context(|| format!("{} lists no {what} port", self.name))
    }

    /// The port serving `what`.
    fn port_serving(&self, what: &str) -> Result<u16> {
        self.ports
            .iter()
            .find(|port| port.serves == what)
            .map(|port| port.number)
            .with_context(|| format!("{} lists no {what} port", self.name))
    }

    /// Whether it runs: its process group is alive, or, for an API object, its host's.
    fn is_running(&self, layout: &Layout) -> bool {
        let process = match self.run {
            Run::Process { .. } => self.name,
            Run::ApiObject { host, .. } => host,
        };
        process::running(layout, process).is_some()
    }

    fn is_healthy(&self, layout: &Layout) -> bool {
        (self.health)(layout, self)
    }

    /// Stops its process (SIGKILL after its grace period); returns whether it ran. API objects
    /// are left to go with their host.
    fn stop(&self, layout: &Layout) -> Result<bool> {
        match self.run {
            Run::Process { stop_grace, .. } => process::stop(layout, self.name, stop_grace),
            Run::ApiObject { .. } => Ok(false),
        }
    }
}

/// The apiserver's URL.
pub fn apiserver_url() -> String {
    format!("https://127.0.0.1:{}", ports::APISERVER)
}

/// Starts every service that is not running, then waits for all to be healthy.
pub fn start_all(layout: &Layout, bin: &Binaries) -> Result<()> {
    // A fresh etcd means an empty cluster: anything still running against the old one restarts.
    if process::running(layout, ETCD).is_none() {
        stop_built_on(layout, Foundation::ClusterState)?;
    }
    for unit in start_units() {
        match unit {
            [service] if service.group.is_none() => ensure_started(layout, bin, service)?,
            members => ensure_group_started(layout, bin, members)?,
        }
        for service in unit {
            if let Ready::BeforeNext(timeout) = service.ready {
                wait_healthy(layout, service, timeout)?;
            }
        }
    }
    for unit in start_units() {
        if let Some(form) = unit.first().and_then(|s| s.group).and_then(|g| g.form) {
            form(layout, unit)?;
        }
    }
    let mut at_end: Vec<(&Service, Duration)> = SERVICES
        .iter()
        .filter_map(|service| match service.ready {
            Ready::AtEnd(timeout) => Some((service, timeout)),
            Ready::BeforeNext(_) => None,
        })
        .collect();
    at_end.sort_by_key(|&(_, timeout)| timeout);
    for (service, timeout) in at_end {
        wait_healthy(layout, service, timeout)?;
    }
    Ok(())
}

/// Stops, newest first, every service built on `foundation`, so that `up` starts it again on
/// the new one.
pub fn stop_built_on(layout: &Layout, foundation: Foundation) -> Result<()> {
    for service in SERVICES.iter().rev() {
        if service.built_on == Some(foundation) && service.stop(layout)? {
            println!(
                "  stopped {} ({})",
                service.name,
                foundation.restart_reason()
            );
        }
    }
    Ok(())
}

/// Stops every service `up` started, newest first.
pub fn stop_all(layout: &Layout) -> Result<()> {
    for service in SERVICES.iter().rev() {
        if service.stop(layout)? {
            println!("  stopped {}", service.name);
        }
    }
    // Every port must be free again: nothing `up` started may linger.
    let still_open: Vec<String> = SERVICES
        .iter()
        .filter_map(|service| {
            service
                .ports
                .iter()
                .find(|port| port.open())
                .map(|port| format!("{} ({})", service.name, port.addr()))
        })
        .collect();
    if !still_open.is_empty() {
        bail!("still listening after stop: {}", still_open.join(", "));
    }
    Ok(())
}

/// (service, None when stopped / Some(healthy) when running), in table order.
pub fn status(layout: &Layout) -> Vec<(&'static str, Option<bool>)> {
    SERVICES
        .iter()
        .map(|service| {
            let state = service
                .is_running(layout)
                .then(|| service.is_healthy(layout));
            (service.name, state)
        })
        .collect()
}

/// The table cut into what starts as one: a group's members together, any other service alone.
fn start_units() -> impl Iterator<Item = &'static [Service]> {
    SERVICES.chunk_by(|a, b| {
        a.group
            .is_some_and(|g| b.group.is_some_and(|h| g.name == h.name))
    })
}

/// Starts `service` unless it runs (an API object: unless it is healthy).
fn ensure_started(layout: &Layout, bin: &Binaries, service: &Service) -> Result<()> {
    let name = service.name;
    let command = match service.run {
        Run::Process { command, .. } => command,
        Run::ApiObject { create, .. } => {
            if !service.is_healthy(layout) {
                create(layout, bin)?;
            }
            return Ok(());
        }
    };
    if let Some(pid) = process::running(layout, name) {
        println!("  {name}: already running (pid {pid})");
        return Ok(());
    }
    if let Some(port) = service.ports.iter().find(|port| port.open()) {
        bail!(
            "{name} cannot start: {} is already taken by a process this checkout did \
             not start (a dev cluster of another checkout? stop it with `cargo xtask cluster down` there)",
            port.addr()
        );
    }
    let cmd = command(layout, bin, service)?;
    let pid = process::spawn(layout, name, cmd)?;
    println!(
        "  {name}: started (pid {pid}, log {})",
        layout.log(name).display()
    );
    Ok(())
}

/// Starts every member of a group; if only some run, they are stopped first so that the group
/// starts fresh as a whole.
fn ensure_group_started(layout: &Layout, bin: &Binaries, members: &[Service]) -> Result<()> {
    let running: Vec<&Service> = members.iter().filter(|m| m.is_running(layout)).collect();
    if running.len() < members.len() {
        for member in running {
            member.stop(layout)?;
            println!("  stopped {} (its group restarts as a whole)", member.name);
        }
    }
    for member in members {
        ensure_started(layout, bin, member)?;
    }
    Ok(())
}

fn wait_healthy(layout: &Layout, service: &Service, timeout: Duration) -> Result<()> {
    let name = service.name;
    wait_until(name, timeout, || {
        // Exited: no point waiting for the deadline.
        !service.is_running(layout) || service.is_healthy(layout)
    })?;
    if !service.is_healthy(layout) {
        bail!(
            "{name} exited or is unhealthy; last lines of {}:\n{}",
            layout.log(name).display(),
            tail(&layout.log(name), 25)
        );
    }
    Ok(())
}

/// Health of a service that is up once it accepts connections on its client port.
fn accepts_connections(_: &Layout, service: &Service) -> bool {
    service.client_port().is_ok_and(tcp_open)
}

fn epmd_command(_: &Layout, _: &Binaries, service: &Service) -> Result<Command> {
    let mut cmd = Command::new("/usr/bin/epmd");
    cmd.args([
        "-port",
        &service.client_port()?.to_string(),
        "-address",
        "127.0.0.1",
    ]);
    Ok(cmd)
}

fn rabbitmq_command(layout: &Layout, _: &Binaries, service: &Service) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    let home = data.join("home");
    fs::create_dir_all(&home)?;
    fs::create_dir_all(data.join("log"))?;
    let conf = data.join("rabbitmq.conf");
    let file = |f: &str| service_tls_file(layout, f).display().to_string();
    // Plain and TLS listeners for AMQP and the management API. TLS clients may present a
    // certificate signed by the dev CA (verified when they do), or none; over amqps, a client
    // may log in with SASL EXTERNAL as the user its certificate's CN names.
    let tls = |prefix: &str| {
        format!(
            "{prefix}.cacertfile = {}\n{prefix}.certfile = {}\n{prefix}.keyfile = {}\n",
            file("ca.crt"),
            file("server.crt"),
            file("server.key")
        )
    };
    fs::write(
        &conf,
        format!(
            "listeners.tcp.default = 127.0.0.1:{amqp}\n\
             listeners.ssl.default = 127.0.0.1:{amqps}\n\
             {ssl_options}\
             ssl_options.verify = verify_peer\n\
             ssl_options.fail_if_no_peer_cert = false\n\
             auth_mechanisms.1 = PLAIN\n\
             auth_mechanisms.2 = AMQPLAIN\n\
             auth_mechanisms.3 = EXTERNAL\n\
             ssl_cert_login_from = common_name\n\
             management.tcp.ip = 127.0.0.1\n\
             management.tcp.port = {management}\n\
             management.ssl.ip = 127.0.0.1\n\
             management.ssl.port = {management_tls}\n\
             {management_ssl}",
            amqp = ports::RABBITMQ_AMQP,
            amqps = ports::RABBITMQ_AMQPS,
            management = ports::RABBITMQ_MANAGEMENT,
            management_tls = ports::RABBITMQ_MANAGEMENT_TLS,
            ssl_options = tls("ssl_options"),
            management_ssl = tls("management.ssl"),
        ),
    )?;
    let plugins = data.join("enabled_plugins");
    // SASL EXTERNAL (the user named by a client certificate's CN) for the amqps tests.
    fs::write(
        &plugins,
        "[rabbitmq_management,rabbitmq_auth_mechanism_ssl].\n",
    )?;
    // The Debian wrapper in /usr/sbin switches to the rabbitmq user and its fixed paths; the
    // script it wraps takes every location from the environment.
    let mut cmd = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
    cmd.current_dir(&data)
        .env("HOME", &home)
        .env("RABBITMQ_NODENAME", "ebb-dev@localhost")
        .env("RABBITMQ_MNESIA_BASE", data.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", data.join("log"))
        .env("RABBITMQ_LOGS", "-")
        .env("RABBITMQ_CONFIG_FILE", &conf)
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
        .env("RABBITMQ_PID_FILE", data.join("beam.pid"))
        .env("RABBITMQ_DIST_PORT", ports::RABBITMQ_DIST.to_string())
        .env("ERL_EPMD_PORT", ports::EPMD.to_string());
    Ok(cmd)
}

fn rabbitmq_healthy(_: &Layout, _: &Service) -> bool {
    tcp_open(ports::RABBITMQ_AMQP)
        && tcp_open(ports::RABBITMQ_AMQPS)
        && tcp_open(ports::RABBITMQ_MANAGEMENT_TLS)
        && http_get(
            ports::RABBITMQ_MANAGEMENT,
            "/api/overview",
            Some(("guest", "guest")),
        )
        .is_some_and(|(code, _)| code == 200)
}

/// redis-server on 127.0.0.1:`port` (0: no plain TCP listener) with its files in `data`, keeping
/// nothing on disk, and room for a connection per object of KEDA's at 10,000 in the bench
/// (redis lowers the limit itself when the open-file limit is lower); the caller adds the flags
/// particular to the service.
fn redis_server(port: u16, data: &Path) -> Command {
    let mut cmd = Command::new("/usr/bin/redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--maxclients", "16000"])
        .arg("--dir")
        .arg(data);
    cmd
}

fn redis_command(layout: &Layout, _: &Binaries, service: &Service) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    Ok(redis_server(service.client_port()?, &data))
}

fn redis_answers_ping(_: &Layout, service: &Service) -> bool {
    let Some(mut s) = service.client_port().ok().and_then(connect) else {
        return false;
    };
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn redis_tls_command(layout: &Layout, _: &Binaries, service: &Service) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    let mut cmd = redis_server(0, &data);
    cmd.args(["--tls-port", &service.client_port()?.to_string()])
        .arg("--tls-cert-file")
        .arg(service_tls_file(layout, "server.crt"))
        .arg("--tls-key-file")
        .arg(service_tls_file(layout, "server.key"))
        .arg("--tls-ca-cert-file")
        .arg(service_tls_file(layout, "ca.crt"))
        // Client certificates are checked when presented, not required: tests cover both.
        .args(["--tls-auth-clients", "optional"]);
    Ok(cmd)
}

fn redis_tls_answers_ping(layout: &Layout, service: &Service) -> bool {
    service.client_port().is_ok_and(|port| {
        redis_cli_tls(layout, port, &["PING"]).is_some_and(|out| out.trim() == "PONG")
    })
}

fn redis_cluster_node_command(layout: &Layout, _: &Binaries, service: &Service) -> Result<Command> {
    let bus = service.port_serving(CLUSTER_BUS)?;
    let data = fresh_dir(&layout.data(service.name))?;
    let mut cmd = redis_server(service.client_port()?, &data);
    cmd.args([
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        &bus.to_string(),
    ])
    .arg("--cluster-config-file")
    .arg(data.join("nodes.conf"))
    .args(["--cluster-node-timeout", "5000"]);
    Ok(cmd)
}

fn redis_cluster_ok(_: &Layout, service: &Service) -> bool {
    service.client_port().is_ok_and(|port| {
        redis_cli(port, &["CLUSTER", "INFO"]).is_some_and(|out| out.contains("cluster_state:ok"))
    })
}

/// Joins the nodes into one cluster of masters unless they already form one (a node that knows
/// only itself has never joined), then waits for `cluster_state:ok`.
fn form_redis_cluster(layout: &Layout, nodes: &[Service]) -> Result<()> {
    let mut addresses = Vec::new();
    let mut fresh = true;
    for node in nodes {
        let port = node.client_port()?;
        wait_until(node.name, Duration::from_secs(30), || {
            redis_cli(port, &["PING"]).is_some_and(|out| out.trim() == "PONG")
        })?;
        fresh &= redis_cli(port, &["CLUSTER", "INFO"])
            .is_some_and(|out| out.contains("cluster_known_nodes:1\r"));
        addresses.push(format!("127.0.0.1:{port}"));
    }
    if !fresh {
        return Ok(());
    }
    let out = Command::new("/usr/bin/redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .context("running redis-cli --cluster create")?;
    if !out.status.success() {
        bail!(
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for node in nodes {
        wait_healthy(layout, node, Duration::from_secs(60))?;
    }
    println!(
        "  {}: created ({} masters)",
        REDIS_CLUSTER.name,
        nodes.len()
    );
    Ok(())
}

fn sentinel_master_command(layout: &Layout, _: &Binaries, service: &Service) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    Ok(redis_server(service.client_port()?, &data))
}

fn sentinel_replica_command(layout: &Layout, bin: &Binaries, service: &Service) -> Result<Command> {
    let mut cmd = sentinel_master_command(layout, bin, service)?;
    cmd.args([
        "--replicaof",
        "127.0.0.1",
        &ports::REDIS_SENTINEL_MASTER.to_string(),
    ]);
    Ok(cmd)
}

/// Health of the monitored master and its replica. After a failover the two swap roles, so
/// either is healthy as a master or as a replica whose link to its master is up.
fn replicating(_: &Layout, service: &Service) -> bool {
    service.client_port().is_ok_and(|port| {
        redis_cli(port, &["INFO", "replication"])
            .is_some_and(|out| out.contains("role:master") || out.contains("master_link_status:up"))
    })
}

fn sentinel_command(layout: &Layout, _: &Binaries, service: &Service) -> Result<Command> {
    let port = service.client_port()?;
    let data = fresh_dir(&layout.data(service.name))?;
    // A sentinel rewrites its configuration file as it learns the topology.
    let conf = data.join("sentinel.conf");
    fs::write(
        &conf,
        format!(
            "bind 127.0.0.1\nport {port}\ndir {}\n\
             sentinel monitor {SENTINEL_MASTER_NAME} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {SENTINEL_MASTER_NAME} 3000\n\
             sentinel failover-timeout {SENTINEL_MASTER_NAME} 10000\n",
            data.display(),
            master = ports::REDIS_SENTINEL_MASTER,
        ),
    )?;
    let mut cmd = Command::new("/usr/bin/redis-server");
    cmd.arg(&conf).arg("--sentinel");
    Ok(cmd)
}

/// OK once the sentinels see each other and could authorise a failover.
fn sentinel_has_quorum(_: &Layout, service: &Service) -> bool {
    service.client_port().is_ok_and(|port| {
        redis_cli(port, &["SENTINEL", "CKQUORUM", SENTINEL_MASTER_NAME])
            .is_some_and(|out| out.starts_with("OK"))
    })
}

fn etcd_command(layout: &Layout, bin: &Binaries, service: &Service) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    let client = format!("http://127.0.0.1:{}", ports::ETCD_CLIENT);
    let peer = format!("http://127.0.0.1:{}", ports::ETCD_PEER);
    let mut cmd = Command::new(bin.path("etcd"));
    cmd.arg("--name=ebb-dev")
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=ebb-dev={peer}"))
        // A throwaway cluster: durability is not worth an fsync per write.
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    Ok(cmd)
}

fn etcd_healthy(_: &Layout, _: &Service) -> bool {
    http_get(ports::ETCD_CLIENT, "/health", None)
        .is_some_and(|(code, body)| code == 200 && body.contains("\"health\":\"true\""))
}

fn apiserver_command(layout: &Layout, bin: &Binaries, service: &Service) -> Result<Command> {
    let pki = layout.pki();
    let p = |f: &str| pki.join(f).display().to_string();
    let cert_dir = layout.data(service.name);
    let mut cmd = Command::new(bin.path("kube-apiserver"));
    cmd.arg(format!(
        "--etcd-servers=http://127.0.0.1:{}",
        ports::ETCD_CLIENT
    ))
    .arg("--bind-address=127.0.0.1")
    .arg(format!("--secure-port={}", ports::APISERVER))
    .arg("--advertise-address=127.0.0.1")
    .arg("--endpoint-reconciler-type=none")
    .arg(format!("--cert-dir={}", cert_dir.display()))
    .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
    .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
    .arg(format!("--client-ca-file={}", p("ca.crt")))
    .arg("--service-cluster-ip-range=10.0.0.0/24")
    .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
    .arg(format!("--service-account-key-file={}", p("sa.pub")))
    .arg(format!(
        "--service-account-signing-key-file={}",
        p("sa.key")
    ))
    .arg("--authorization-mode=RBAC")
    // No token controller runs, so pods must not be required to mount a token; and no
    // node-lifecycle controller runs to lift the not-ready taint this plugin puts on new
    // nodes, so kwok's node would never take pods.
    .arg("--disable-admission-plugins=ServiceAccount,TaintNodesByCondition")
    .arg("--allow-privileged=true")
    .arg("--profiling=false")
    // Aggregation layer, for ebb's external metrics API.
    .arg(format!(
        "--requestheader-client-ca-file={}",
        p("front-proxy-ca.crt")
    ))
    .arg(format!(
        "--requestheader-allowed-names={FRONT_PROXY_CLIENT_NAME}"
    ))
    .arg("--requestheader-username-headers=X-Remote-User")
    .arg("--requestheader-group-headers=X-Remote-Group")
    .arg("--requestheader-extra-headers-prefix=X-Remote-Extra-")
    .arg(format!(
        "--proxy-client-cert-file={}",
        p("front-proxy-client.crt")
    ))
    .arg(format!(
        "--proxy-client-key-file={}",
        p("front-proxy-client.key")
    ));
    fs::create_dir_all(&cert_dir)?;
    Ok(cmd)
}

fn apiserver_ready(layout: &Layout, _: &Service) -> bool {
    kubectl_raw(layout, "/readyz").is_some_and(|body| body.trim() == "ok")
}

fn controller_manager_command(
    layout: &Layout,
    bin: &Binaries,
    service: &Service,
) -> Result<Command> {
    let cert_dir = layout.data(service.name);
    let mut cmd = Command::new(bin.path("kube-controller-manager"));
    cmd.arg(format!(
        "--kubeconfig={}",
        layout.component_kubeconfig("controller-manager").display()
    ))
    .arg("--leader-elect=false")
    .arg("--bind-address=127.0.0.1")
    .arg(format!("--secure-port={}", ports::CONTROLLER_MANAGER))
    .arg(format!("--cert-dir={}", cert_dir.display()))
    .arg(format!(
        "--root-ca-file={}",
        layout.pki().join("ca.crt").display()
    ))
    .arg("--use-service-account-credentials=false")
    .arg(concat!(
        "--controllers=horizontal-pod-autoscaler-controller,deployment-controller,",
        "replicaset-controller,statefulset-controller,job-controller,",
        "garbage-collector-controller,namespace-controller"
    ))
    .arg(format!(
        "--horizontal-pod-autoscaler-sync-period={HPA_SYNC_PERIOD}"
    ))
    .arg(format!(
        "--horizontal-pod-autoscaler-downscale-stabilization={HPA_DOWNSCALE_STABILIZATION}"
    ));
    fs::create_dir_all(&cert_dir)?;
    Ok(cmd)
}

fn scheduler_command(layout: &Layout, bin: &Binaries, service: &Service) -> Result<Command> {
    let cert_dir = layout.data(service.name);
    let mut cmd = Command::new(bin.path("kube-scheduler"));
    cmd.arg(format!(
        "--kubeconfig={}",
        layout.component_kubeconfig("scheduler").display()
    ))
    .arg("--leader-elect=false")
    .arg("--bind-address=127.0.0.1")
    .arg(format!("--secure-port={}", ports::SCHEDULER))
    .arg(format!("--cert-dir={}", cert_dir.display()));
    fs::create_dir_all(&cert_dir)?;
    Ok(cmd)
}

/// kwok's pod lifecycle: Running and Ready at once; a Job's pods finish (succeed, or fail when
/// annotated) after the time their annotation asks for (see the file's comments).
const KWOK_STAGES: &str = include_str!("kwok-stages.yaml");

fn kwok_command(layout: &Layout, bin: &Binaries, _: &Service) -> Result<Command> {
    let stages = layout.root.join("kwok-stages.yaml");
    fs::write(&stages, KWOK_STAGES)?;
    let mut cmd = Command::new(bin.path("kwok"));
    cmd.arg(format!("--config={}", stages.display()))
        .arg(format!("--kubeconfig={}", layout.kubeconfig().display()))
        .arg("--manage-all-nodes=false")
        .arg("--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake")
        .arg("--cidr=10.244.0.1/16")
        .arg("--node-ip=127.0.0.1")
        .arg(format!("--server-address=127.0.0.1:{}", ports::KWOK));
    Ok(cmd)
}

fn create_kwok_node(layout: &Layout, bin: &Binaries) -> Result<()> {
    let manifest = format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{KWOK_NODE}",
"annotations":{{"kwok.x-k8s.io/node":"fake","node.alpha.kubernetes.io/ttl":"0"}},
"labels":{{"kubernetes.io/hostname":"{KWOK_NODE}","kubernetes.io/os":"linux","kubernetes.io/arch":"amd64","type":"kwok"}}}},
"status":{{"allocatable":{{"cpu":"1000","memory":"1Ti","pods":"100000"}},
"capacity":{{"cpu":"1000","memory":"1Ti","pods":"100000"}}}}}}"#
    );
    let path = layout.root.join("kwok-node.json");
    fs::write(&path, manifest)?;
    let out = Command::new(bin.path("kubectl"))
        .arg(format!("--kubeconfig={}", layout.kubeconfig().display()))
        .args(["apply", "-f"])
        .arg(&path)
        .output()
        .context("running kubectl apply for the kwok node")?;
    if !out.status.success() {
        bail!(
            "creating node {KWOK_NODE} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("  kwok-node: created node {KWOK_NODE}");
    Ok(())
}

fn kwok_node_ready(layout: &Layout, _: &Service) -> bool {
    let Some(body) = kubectl_raw(layout, &format!("/api/v1/nodes/{KWOK_NODE}")) else {
        return false;
    };
    let Ok(node) = serde_json::from_str::<serde_json::Value>(&body) else {
        return false;
    };
    node["status"]["conditions"]
        .as_array()
        .is_some_and(|conds| {
            conds
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Removes and recreates a data directory: every fresh start begins empty.
/// `program` run as the system account `account` when this runs as root (PostgreSQL refuses to
/// run as root), else as the current user.
fn as_account(account: &str, program: &str) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut cmd = Command::new("/usr/bin/setpriv");
        cmd.args([
            "--reuid",
            account,
            "--regid",
            account,
            "--init-groups",
            "--",
            program,
        ]);
        cmd
    } else {
        Command::new(program)
    }
}

/// Gives `path` (recursively) to `account` when this runs as root.
fn give_to(account: &str, path: &Path) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let user = nix::unistd::User::from_name(account)?
        .with_context(|| format!("no system account {account:?} (its Debian package makes it)"))?;
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid, user.gid))
        .arg(path)
        .status()?;
    if !status.success() {
        bail!("chown -R {account} {} failed", path.display());
    }
    Ok(())
}

/// Runs `cmd` to completion, failing with its output.
pub(super) fn run_to_end(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A fresh PostgreSQL cluster: `postgres` with [`DATABASE_PASSWORD`] (SCRAM), TLS with the
/// dev CA's server certificate, no fsync (test data only).
fn postgres_command(layout: &Layout, _: &Binaries, service: &Service) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    let pgdata = data.join("pgdata");
    let pwfile = data.join("pwfile");
    fs::write(&pwfile, DATABASE_PASSWORD)?;
    for file in ["server.crt", "server.key"] {
        fs::copy(service_tls_file(layout, file), data.join(file))?;
    }
    fs::set_permissions(
        data.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    give_to("postgres", &data)?;
    let mut initdb = as_account("postgres", &format!("{POSTGRES_BIN}/initdb"));
    initdb
        .arg("-D")
        .arg(&pgdata)
        .args([
            "-U",
            "postgres",
            "--auth",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        ])
        .arg("--pwfile")
        .arg(&pwfile);
    run_to_end(initdb, "initdb")?;
    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(pgdata.join("postgresql.conf"))?;
    writeln!(
        conf,
        concat!(
            "listen_addresses = '127.0.0.1'\n",
            "port = {port}\n",
            "unix_socket_directories = '{dir}'\n",
            "max_connections = 300\n",
            "fsync = off\n",
            "synchronous_commit = off\n",
            "full_page_writes = off\n",
            "ssl = on\n",
            "ssl_cert_file = '{dir}/server.crt'\n",
            "ssl_key_file = '{dir}/server.key'",
        ),
        port = ports::POSTGRES,
        dir = data.display()
    )?;
    let mut cmd = as_account("postgres", &format!("{POSTGRES_BIN}/postgres"));
    cmd.arg("-D").arg(&pgdata);
    Ok(cmd)
}

fn postgres_ready(_: &Layout, _: &Service) -> bool {
    Command::new("/usr/bin/pg_isready")
        .args(["-q", "-h", "127.0.0.1", "-p", &ports::POSTGRES.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// A fresh MariaDB: user [`MARIADB_USER`] with [`DATABASE_PASSWORD`] and every privilege, and
/// database [`MARIADB_DATABASE`], made by an init file at start; TLS (optional for clients)
/// with the dev CA's server certificate.
fn mariadb_command(layout: &Layout, _: &Binaries, service: &Service) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    for file in ["ca.crt", "server.crt", "server.key"] {
        fs::copy(service_tls_file(layout, file), data.join(file))?;
    }
    let datadir = data.join("db");
    // mariadbd runs as root only when told to; otherwise as the current user.
    let user = nix::unistd::geteuid().is_root().then_some("--user=root");
    let mut install = Command::new("/usr/bin/mariadb-install-db");
    install
        .args([
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .arg(format!("--datadir={}", datadir.display()))
        .args(user);
    run_to_end(install, "mariadb-install-db")?;
    let init = data.join("init.sql");
    fs::write(
        &init,
        format!(
            concat!(
                "CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{password}';\n",
                "GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%' WITH GRANT OPTION;\n",
                "CREATE DATABASE IF NOT EXISTS {database};\n",
            ),
            user = MARIADB_USER,
            password = DATABASE_PASSWORD,
            database = MARIADB_DATABASE,
        ),
    )?;
    let mut cmd = Command::new("/usr/sbin/mariadbd");
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg(format!("--port={}", ports::MARIADB))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", data.join("mysqld.sock").display()))
        .arg(format!("--pid-file={}", data.join("mysqld.pid").display()))
        .arg(format!("--init-file={}", init.display()))
        .args(["--max-connections=300", "--innodb-buffer-pool-size=32M"])
        .arg(format!("--ssl-ca={}", data.join("ca.crt").display()))
        .arg(format!("--ssl-cert={}", data.join("server.crt").display()))
        .arg(format!("--ssl-key={}", data.join("server.key").display()))
        .args(user);
    Ok(cmd)
}

fn mariadb_ready(_: &Layout, _: &Service) -> bool {
    Command::new("/usr/bin/mariadb-admin")
        .args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1"])
        .arg(format!("--port={}", ports::MARIADB))
        .arg(format!("--user={MARIADB_USER}"))
        .arg(format!("--password={DATABASE_PASSWORD}"))
        .arg("ping")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The exporter the tests set series on ([`super::exporter`]), built as `ebb-dev-exporter`.
fn exporter_command(_: &Layout, _: &Binaries, _: &Service) -> Result<Command> {
    let root = crate::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "--quiet",
            "--package",
            "xtask",
            "--bin",
            "ebb-dev-exporter",
        ])
        .current_dir(&root);
    run_to_end(build, "building ebb-dev-exporter")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut cmd = Command::new(target.join("debug/ebb-dev-exporter"));
    cmd.arg(ports::PROMETHEUS_EXPORTER.to_string());
    Ok(cmd)
}

fn exporter_ready(_: &Layout, _: &Service) -> bool {
    http_get(ports::PROMETHEUS_EXPORTER, "/metrics", None).is_some_and(|(code, _)| code == 200)
}

/// Prometheus's configuration: the exporter, and for `file_targets` the folder of file
/// service discovery.
fn prometheus_config(file_targets: Option<&Path>) -> String {
    let mut config = format!(
        concat!(
            "global:\n",
            "  scrape_interval: {every}ms\n",
            "  evaluation_interval: {every}ms\n",
            "scrape_configs:\n",
            "  - job_name: ebb-tests\n",
            "    static_configs:\n",
            "      - targets: ['127.0.0.1:{port}']\n",
        ),
        every = PROMETHEUS_SCRAPE_INTERVAL_MS,
        port = ports::PROMETHEUS_EXPORTER,
    );
    if let Some(dir) = file_targets {
        config.push_str(&format!(
            concat!(
                "  - job_name: file-targets\n",
                "    file_sd_configs:\n",
                "      - files: ['{targets}/*.json']\n",
                "        refresh_interval: 1s\n",
            ),
            targets = dir.display()
        ));
    }
    config
}

/// The command line of a Prometheus keeping an hour of data in `data`.
fn prometheus(data: &Path, config: &Path, port: u16) -> Command {
    let mut cmd = Command::new("/usr/bin/prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(["--storage.tsdb.retention.time=1h", "--log.level=warn"]);
    cmd
}

/// A second Prometheus on the exporter, serving HTTPS with the dev CA's server certificate
/// and admitting only a client certificate of the dev CA with basic auth
/// ([`PROMETHEUS_USER`]).
fn prometheus_secure_command(layout: &Layout, _: &Binaries, service: &Service) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    for file in [
        "ca.crt",
        "server.crt",
        "server.key",
        "client.crt",
        "client.key",
    ] {
        fs::copy(service_tls_file(layout, file), data.join(file))?;
    }
    let config = data.join("prometheus.yml");
    // It also scrapes itself, so a test can read how many connections its listener accepted
    // (`net_conntrack_listener_conn_accepted_total`, job `self`).
    let mut scrape = prometheus_config(None);
    scrape.push_str(&format!(
        concat!(
            "  - job_name: self\n",
            "    scheme: https\n",
            "    basic_auth:\n",
            "      username: {user}\n",
            "      password: {password}\n",
            "    tls_config:\n",
            "      ca_file: {dir}/ca.crt\n",
            "      cert_file: {dir}/client.crt\n",
            "      key_file: {dir}/client.key\n",
            "    static_configs:\n",
            "      - targets: ['127.0.0.1:{port}']\n",
        ),
        user = PROMETHEUS_USER,
        password = DATABASE_PASSWORD,
        dir = data.display(),
        port = ports::PROMETHEUS_SECURE,
    ));
    fs::write(&config, scrape)?;
    let web = data.join("web.yml");
    fs::write(
        &web,
        format!(
            concat!(
                "tls_server_config:\n",
                "  cert_file: {dir}/server.crt\n",
                "  key_file: {dir}/server.key\n",
                "  client_auth_type: RequireAndVerifyClientCert\n",
                "  client_ca_file: {dir}/ca.crt\n",
                "basic_auth_users:\n",
                "  {user}: {hash}\n",
            ),
            dir = data.display(),
            user = PROMETHEUS_USER,
            hash = PROMETHEUS_PASSWORD_BCRYPT,
        ),
    )?;
    let mut cmd = prometheus(&data, &config, ports::PROMETHEUS_SECURE);
    cmd.arg(format!("--web.config.file={}", web.display()));
    Ok(cmd)
}

fn prometheus_secure_ready(layout: &Layout, _: &Service) -> bool {
    https_get(
        layout,
        ports::PROMETHEUS_SECURE,
        "/-/ready",
        (PROMETHEUS_USER, DATABASE_PASSWORD),
    )
    .is_some_and(|code| code == 200)
}

/// A GET over TLS with the dev client certificate and basic auth, for health checks only: the
/// status code.
fn https_get(layout: &Layout, port: u16, path: &str, basic: (&str, &str)) -> Option<u16> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(service_tls_file(layout, "ca.crt")).ok()? {
        roots.add(cert.ok()?).ok()?;
    }
    let chain = CertificateDer::pem_file_iter(service_tls_file(layout, "client.crt"))
        .ok()?
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_file(service_tls_file(layout, "client.key")).ok()?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .ok()?;
    let name = ServerName::try_from("127.0.0.1").ok()?;
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).ok()?;
    let mut tls = rustls::StreamOwned::new(connection, connect(port)?);
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {}\r\n\r\n",
        BASE64.encode(format!("{}:{}", basic.0, basic.1))
    );
    tls.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    // A server that closes without close_notify still sent its answer.
    let _ = tls.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The folder of Prometheus's file service discovery (job `file-targets`).
pub fn prometheus_targets_dir(layout: &Layout) -> PathBuf {
    layout.data("prometheus").join("targets")
}

/// Prometheus scraping the exporter, and whatever the tests list in
/// [`prometheus_targets_dir`], every [`PROMETHEUS_SCRAPE_INTERVAL_MS`], keeping an hour.
fn prometheus_command(layout: &Layout, _: &Binaries, service: &Service) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    let targets = prometheus_targets_dir(layout);
    fs::create_dir_all(&targets)?;
    let config = data.join("prometheus.yml");
    fs::write(&config, prometheus_config(Some(&targets)))?;
    Ok(prometheus(&data, &config, ports::PROMETHEUS))
}

fn prometheus_ready(_: &Layout, _: &Service) -> bool {
    http_get(ports::PROMETHEUS, "/-/ready", None).is_some_and(|(code, _)| code == 200)
}

pub(super) fn fresh_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    fs::create_dir_all(dir)?;
    Ok(dir.to_path_buf())
}

fn kubectl_raw(layout: &Layout, path: &str) -> Option<String> {
    let out = Command::new(Binaries::cached().path("kubectl"))
        .arg(format!("--kubeconfig={}", layout.kubeconfig().display()))
        .args(["get", "--raw", path, "--request-timeout=5s"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn connect(port: u16) -> Option<TcpStream> {
    connect_to(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A connection to `addr` with short timeouts, if it accepts one.
pub(super) fn connect_to(addr: SocketAddr) -> Option<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    Some(stream)
}

pub(super) fn tcp_open(port: u16) -> bool {
    connect(port).is_some()
}

/// stdout of `redis-cli` against a loopback port, if it succeeded and did not print an error.
fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    run_redis_cli(&["-p".to_string(), port.to_string()], args)
}

/// [`redis_cli`] against a TLS port, with the client certificate.
fn redis_cli_tls(layout: &Layout, port: u16, args: &[&str]) -> Option<String> {
    let file = |f: &str| service_tls_file(layout, f).display().to_string();
    let options = [
        "-p".to_string(),
        port.to_string(),
        "--tls".to_string(),
        "--cacert".to_string(),
        file("ca.crt"),
        "--cert".to_string(),
        file("client.crt"),
        "--key".to_string(),
        file("client.key"),
    ];
    run_redis_cli(&options, args)
}

fn run_redis_cli(options: &[String], args: &[&str]) -> Option<String> {
    // redis-cli has no overall timeout: coreutils' bounds a server that hangs.
    let out = Command::new("timeout")
        .args(["5", "/usr/bin/redis-cli", "-h", "127.0.0.1"])
        .args(options)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !text.is_empty() && !text.starts_with("ERR")).then_some(text)
}

/// A minimal HTTP/1.0 GET on loopback, for health checks only.
pub(super) fn http_get(
    port: u16,
    path: &str,
    basic: Option<(&str, &str)>,
) -> Option<(u16, String)> {
    http_get_at(SocketAddr::from(([127, 0, 0, 1], port)), path, basic)
}

/// [`http_get`] from `addr`.
pub(super) fn http_get_at(
    addr: SocketAddr,
    path: &str,
    basic: Option<(&str, &str)>,
) -> Option<(u16, String)> {
    http_call(addr, "GET", path, basic, None)
}

/// A `POST` of the JSON `body` to `path` on a loopback `port`: the status code and the body.
pub(super) fn http_post_json(port: u16, path: &str, body: &str) -> Option<(u16, String)> {
    http_call(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "POST",
        path,
        None,
        Some(body),
    )
}

/// One HTTP/1.0 request (the server closes the connection after its answer).
fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    basic: Option<(&str, &str)>,
    json: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = connect_to(addr)?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some((user, pass)) = basic {
        request.push_str(&format!(
            "Authorization: Basic {}\r\n",
            BASE64.encode(format!("{user}:{pass}"))
        ));
    }
    if let Some(body) = json {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    if let Some(body) = json {
        request.push_str(body);
    }
    s.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn names(services: impl Iterator<Item = &'static Service>) -> Vec<&'static str> {
        services.map(|s| s.name).collect()
    }

    #[test]
    fn services_start_in_the_order_status_reports_them() {
        assert_eq!(
            names(SERVICES.iter()),
            [
                "epmd",
                "rabbitmq",
                "redis",
                "redis-tls",
                "redis-cluster-0",
                "redis-cluster-1",
                "redis-cluster-2",
                "redis-sentinel-master",
                "redis-sentinel-replica",
                "redis-sentinel-0",
                "redis-sentinel-1",
                "redis-sentinel-2",
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kwok",
                "kwok-node",
                "postgresql",
                "mariadb",
                "prometheus-exporter",
                "prometheus",
                "prometheus-secure",
                "hydra",
                "hydra-client",
                "kafka",
                "nats",
                "nats-cluster-0",
                "nats-cluster-1",
                "nats-cluster-2",
                "elasticmq",
            ]
        );
    }

    #[test]
    fn names_and_ports_are_unique() {
        let mut seen_names = HashSet::new();
        let mut seen_ports = HashSet::new();
        for service in SERVICES {
            assert!(
                seen_names.insert(service.name),
                "{} listed twice",
                service.name
            );
            for port in service.ports {
                assert!(
                    seen_ports.insert(port.addr()),
                    "port {} of {} listed twice",
                    port.addr(),
                    service.name
                );
            }
        }
    }

    #[test]
    fn every_process_has_a_client_port_and_every_api_object_an_earlier_host() {
        for (i, service) in SERVICES.iter().enumerate() {
            match service.run {
                Run::Process { .. } => assert!(service.client_port().is_ok(), "{}", service.name),
                Run::ApiObject { host, .. } => assert!(
                    SERVICES[..i]
                        .iter()
                        .any(|s| s.name == host && matches!(s.run, Run::Process { .. })),
                    "{} is kept by {host}, which must be a process started before it",
                    service.name
                ),
            }
        }
    }

    #[test]
    fn a_group_is_one_run_of_consecutive_entries() {
        let mut seen = HashSet::new();
        for unit in start_units() {
            if let Some(group) = unit[0].group {
                assert!(seen.insert(group.name), "{} is split", group.name);
                assert!(
                    unit.iter()
                        .all(|s| s.group.is_some_and(|g| g.name == group.name))
                );
            } else {
                assert_eq!(unit.len(), 1, "services without a group start alone");
            }
        }
        assert_eq!(
            seen,
            HashSet::from([REDIS_CLUSTER.name, REDIS_SENTINEL.name, NATS_CLUSTER.name])
        );
    }

    #[test]
    fn redis_cluster_nodes_list_their_bus_port() {
        for node in SERVICES
            .iter()
            .filter(|s| s.name.starts_with("redis-cluster-"))
        {
            assert!(node.port_serving(CLUSTER_BUS).is_ok(), "{}", node.name);
        }
    }

    #[test]
    fn what_restarts_with_new_state_or_certificates() {
        let built_on = |foundation| {
            names(
                SERVICES
                    .iter()
                    .filter(move |s| s.built_on == Some(foundation)),
            )
        };
        assert_eq!(
            built_on(Foundation::ClusterState),
            [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kwok"
            ]
        );
        assert_eq!(
            built_on(Foundation::ServiceTls),
            [
                "rabbitmq",
                "redis-tls",
                "postgresql",
                "mariadb",
                "prometheus-secure",
                "kafka"
            ]
        );
    }

    #[test]
    fn epmd_etcd_and_the_apiserver_are_healthy_before_what_needs_them_starts() {
        for name in ["epmd", ETCD, APISERVER] {
            let service = SERVICES.iter().find(|s| s.name == name);
            assert!(
                service.is_some_and(|s| matches!(s.ready, Ready::BeforeNext(_))),
                "{name}"
            );
        }
    }
}
