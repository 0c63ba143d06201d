//! The dev cluster's services: how each is started, how its health is read, and in which order
//! they start and stop.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::binaries::Binaries;
use super::certs::{FRONT_PROXY_CLIENT_NAME, write_private};
use super::process::{self, wait_until};
use super::{Layout, ports, tail};

/// The fake node kwok keeps Ready, so pods are scheduled, Running and Ready without kubelets.
pub const KWOK_NODE: &str = "kwok-node-0";
/// How often the HPA controller re-evaluates every HPA (production default 15s).
pub const HPA_SYNC_PERIOD: &str = "2s";
/// How long the HPA waits before scaling down (production default 5m).
pub const HPA_DOWNSCALE_STABILIZATION: &str = "10s";

/// The name the sentinels know their master by.
pub const SENTINEL_MASTER_NAME: &str = "mymaster";

/// The Redis Cluster's three masters: one cluster, so they start (and are created) together.
const REDIS_CLUSTER: [&str; 3] = ["redis-cluster-0", "redis-cluster-1", "redis-cluster-2"];
/// The Sentinel set: a master, its replica and three sentinels, started together.
const REDIS_SENTINEL: [&str; 5] = [
    "redis-sentinel-master",
    "redis-sentinel-replica",
    "redis-sentinel-0",
    "redis-sentinel-1",
    "redis-sentinel-2",
];

/// Every service, in start order; `down` stops them in reverse.
const SERVICES: [&str; 18] = [
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
    // Not a process of its own: listed so `status` reports the fake node.
    "kwok-node",
];

/// Services whose state lives in etcd through the apiserver: restarted whenever etcd is.
const CONTROL_PLANE: [&str; 5] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kwok-node",
];

/// The apiserver's URL.
pub fn apiserver_url() -> String {
    format!("https://127.0.0.1:{}", ports::APISERVER)
}

/// Starts every service that is not running, then waits for all to be healthy.
pub fn start_all(layout: &Layout, bin: &Binaries) -> Result<()> {
    // A fresh etcd means an empty cluster: anything still running against the old one restarts.
    if process::running(layout, "etcd").is_none() {
        stop_control_plane(layout)?;
    }
    // RabbitMQ boots slowest; start it first and check on it last.
    ensure_started(layout, "epmd", || epmd(layout))?;
    wait_healthy(layout, "epmd", Duration::from_secs(10))?;
    if ensure_service_tls_certs(layout)? {
        for name in ["rabbitmq", "redis-tls"] {
            if process::stop(layout, name, Duration::from_secs(30))? {
                println!("  stopped {name} (restarting on new certificates)");
            }
        }
    }
    ensure_started(layout, "rabbitmq", || rabbitmq(layout))?;
    ensure_started(layout, "redis", || redis(layout))?;
    ensure_started(layout, "redis-tls", || redis_tls(layout))?;
    ensure_group(layout, &REDIS_CLUSTER, |name| {
        redis_cluster_node(layout, name)
    })?;
    ensure_group(layout, &REDIS_SENTINEL, |name| {
        redis_sentinel_member(layout, name)
    })?;
    ensure_started(layout, "etcd", || etcd(layout, bin))?;
    wait_healthy(layout, "etcd", Duration::from_secs(30))?;
    ensure_started(layout, "kube-apiserver", || apiserver(layout, bin))?;
    wait_healthy(layout, "kube-apiserver", Duration::from_secs(120))?;
    ensure_started(layout, "kube-controller-manager", || {
        controller_manager(layout, bin)
    })?;
    ensure_started(layout, "kube-scheduler", || scheduler(layout, bin))?;
    ensure_started(layout, "kwok", || kwok(layout, bin))?;
    if !healthy(layout, "kwok-node") {
        create_kwok_node(layout, bin)?;
    }
    create_redis_cluster(layout)?;
    let redis_services = ["redis", "redis-tls"]
        .into_iter()
        .chain(REDIS_CLUSTER)
        .chain(REDIS_SENTINEL);
    for name in [
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "kwok-node",
    ]
    .into_iter()
    .chain(redis_services)
    {
        wait_healthy(layout, name, Duration::from_secs(60))?;
    }
    wait_healthy(layout, "rabbitmq", Duration::from_secs(120))?;
    Ok(())
}

/// Stops the apiserver and everything that talks to it, newest first.
pub fn stop_control_plane(layout: &Layout) -> Result<()> {
    for name in CONTROL_PLANE.iter().rev() {
        if *name != "kwok-node" && process::stop(layout, name, Duration::from_secs(10))? {
            println!("  stopped {name} (restarting on the new state)");
        }
    }
    Ok(())
}

/// Stops every service `up` started, newest first.
pub fn stop_all(layout: &Layout) -> Result<()> {
    for name in SERVICES.iter().rev() {
        if *name == "kwok-node" {
            continue;
        }
        // RabbitMQ flushes its state on SIGTERM and needs a few seconds.
        let grace = if *name == "rabbitmq" { 30 } else { 10 };
        if process::stop(layout, name, Duration::from_secs(grace))? {
            println!("  stopped {name}");
        }
    }
    // Every port must be free again: nothing `up` started may linger.
    let still_open: Vec<String> = SERVICES
        .iter()
        .filter_map(|name| {
            service_port(name)
                .into_iter()
                .chain(extra_ports(name))
                .find(|p| tcp_open(*p))
                .map(|p| format!("{name} ({p})"))
        })
        .collect();
    if !still_open.is_empty() {
        bail!("still listening after stop: {}", still_open.join(", "));
    }
    Ok(())
}

/// (service, None when stopped / Some(healthy) when running).
pub fn status(layout: &Layout) -> Vec<(&'static str, Option<bool>)> {
    SERVICES
        .iter()
        .map(|name| {
            let running = if *name == "kwok-node" {
                process::running(layout, "kube-apiserver").is_some()
            } else {
                process::running(layout, name).is_some()
            };
            (*name, running.then(|| healthy(layout, name)))
        })
        .collect()
}

fn ensure_started(
    layout: &Layout,
    name: &str,
    command: impl FnOnce() -> Result<Command>,
) -> Result<()> {
    if let Some(pid) = process::running(layout, name) {
        println!("  {name}: already running (pid {pid})");
        return Ok(());
    }
    if let Some(port) = service_port(name).filter(|p| tcp_open(*p)) {
        bail!(
            "{name} cannot start: 127.0.0.1:{port} is already taken by a process this checkout did \
             not start (a dev cluster of another checkout? stop it with `cargo xtask cluster down` there)"
        );
    }
    let cmd = command()?;
    let pid = process::spawn(layout, name, cmd)?;
    println!(
        "  {name}: started (pid {pid}, log {})",
        layout.log(name).display()
    );
    Ok(())
}

fn wait_healthy(layout: &Layout, name: &str, timeout: Duration) -> Result<()> {
    wait_until(name, timeout, || {
        if name != "kwok-node" && process::running(layout, name).is_none() {
            // Exited: no point waiting for the deadline.
            return true;
        }
        healthy(layout, name)
    })?;
    if !healthy(layout, name) {
        bail!(
            "{name} exited or is unhealthy; last lines of {}:\n{}",
            layout.log(name).display(),
            tail(&layout.log(name), 25)
        );
    }
    Ok(())
}

/// The port a service listens on, to detect a foreign process holding it.
fn service_port(name: &str) -> Option<u16> {
    match name {
        "epmd" => Some(ports::EPMD),
        "rabbitmq" => Some(ports::RABBITMQ_AMQP),
        "redis" => Some(ports::REDIS),
        "redis-tls" => Some(ports::REDIS_TLS),
        "redis-sentinel-master" => Some(ports::REDIS_SENTINEL_MASTER),
        "redis-sentinel-replica" => Some(ports::REDIS_SENTINEL_REPLICA),
        "etcd" => Some(ports::ETCD_CLIENT),
        "kube-apiserver" => Some(ports::APISERVER),
        "kube-controller-manager" => Some(ports::CONTROLLER_MANAGER),
        "kube-scheduler" => Some(ports::SCHEDULER),
        "kwok" => Some(ports::KWOK),
        _ => indexed(name, "redis-cluster-", &ports::REDIS_CLUSTER)
            .or_else(|| indexed(name, "redis-sentinel-", &ports::REDIS_SENTINELS)),
    }
}

/// The cluster bus port of a Redis Cluster node.
fn cluster_bus_port(name: &str) -> Option<u16> {
    indexed(name, "redis-cluster-", &ports::REDIS_CLUSTER_BUS)
}

/// Ports a service holds besides its main one.
fn extra_ports(name: &str) -> Vec<u16> {
    match name {
        "rabbitmq" => vec![
            ports::RABBITMQ_MANAGEMENT,
            ports::RABBITMQ_AMQPS,
            ports::RABBITMQ_MANAGEMENT_TLS,
        ],
        _ => cluster_bus_port(name).into_iter().collect(),
    }
}

/// `ports[i]` for a service named `<prefix><i>`.
fn indexed(name: &str, prefix: &str, ports: &[u16]) -> Option<u16> {
    let i: usize = name.strip_prefix(prefix)?.parse().ok()?;
    ports.get(i).copied()
}

/// Whether a service answers as it should.
fn healthy(layout: &Layout, name: &str) -> bool {
    match name {
        "epmd" => tcp_open(ports::EPMD),
        "etcd" => http_get(ports::ETCD_CLIENT, "/health", None)
            .is_some_and(|(code, body)| code == 200 && body.contains("\"health\":\"true\"")),
        "kube-apiserver" => kubectl_raw(layout, "/readyz").is_some_and(|b| b.trim() == "ok"),
        "kube-controller-manager" => tcp_open(ports::CONTROLLER_MANAGER),
        "kube-scheduler" => tcp_open(ports::SCHEDULER),
        "kwok" => tcp_open(ports::KWOK),
        "kwok-node" => kubectl_raw(layout, &format!("/api/v1/nodes/{KWOK_NODE}"))
            .is_some_and(|body| node_ready(&body)),
        "redis" => redis_ping(),
        "redis-tls" => redis_cli_tls(layout, &["PING"]).is_some_and(|out| out.trim() == "PONG"),
        // After a failover the two swap roles: either is healthy as a master or as a replica
        // whose link to its master is up.
        "redis-sentinel-master" | "redis-sentinel-replica" => {
            service_port(name).is_some_and(|port| {
                redis_cli(port, &["INFO", "replication"]).is_some_and(|out| {
                    out.contains("role:master") || out.contains("master_link_status:up")
                })
            })
        }
        name if name.starts_with("redis-cluster-") => service_port(name).is_some_and(|port| {
            redis_cli(port, &["CLUSTER", "INFO"])
                .is_some_and(|out| out.contains("cluster_state:ok"))
        }),
        name if name.starts_with("redis-sentinel-") => service_port(name).is_some_and(|port| {
            // OK once the sentinels see each other and could authorise a failover.
            redis_cli(port, &["SENTINEL", "CKQUORUM", SENTINEL_MASTER_NAME])
                .is_some_and(|out| out.starts_with("OK"))
        }),
        "rabbitmq" => {
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
        _ => false,
    }
}

fn node_ready(body: &str) -> bool {
    let Ok(node) = serde_json::from_str::<serde_json::Value>(body) else {
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

fn epmd(_layout: &Layout) -> Result<Command> {
    let mut cmd = Command::new("/usr/bin/epmd");
    cmd.args(["-port", &ports::EPMD.to_string(), "-address", "127.0.0.1"]);
    Ok(cmd)
}

fn rabbitmq(layout: &Layout) -> Result<Command> {
    let data = fresh_dir(&layout.data("rabbitmq"))?;
    let home = data.join("home");
    fs::create_dir_all(&home)?;
    fs::create_dir_all(data.join("log"))?;
    let conf = data.join("rabbitmq.conf");
    let file = |f: &str| service_tls_file(layout, f).display().to_string();
    // Plain and TLS listeners for AMQP and the management API. TLS clients may present a
    // certificate signed by the dev CA (verified when they do), or none.
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
    fs::write(&plugins, "[rabbitmq_management].\n")?;
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

fn redis(layout: &Layout) -> Result<Command> {
    let data = fresh_dir(&layout.data("redis"))?;
    let mut cmd = Command::new("/usr/bin/redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port", &ports::REDIS.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&data);
    Ok(cmd)
}

/// Where the TLS Redis's certificates live (outside `pki/`, which is regenerated as a whole).
pub fn service_tls_file(layout: &Layout, name: &str) -> PathBuf {
    layout.root.join("service-tls").join(name)
}

/// Writes a CA, a server certificate for 127.0.0.1/localhost and a client certificate for the
/// TLS Redis unless they exist; returns whether they were (re)generated.
fn ensure_service_tls_certs(layout: &Layout) -> Result<bool> {
    let marker = service_tls_file(layout, ".complete");
    if marker.exists() {
        return Ok(false);
    }
    let dir = service_tls_file(layout, "");
    fs::create_dir_all(&dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "ebb-dev-tls-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    fs::write(
        service_tls_file(layout, "ca.crt"),
        ca.self_signed(&ca_key)?.pem(),
    )?;
    let issuer = Issuer::new(ca, ca_key);
    for (file, purpose, sans) in [
        (
            "server",
            ExtendedKeyUsagePurpose::ServerAuth,
            vec![
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                SanType::DnsName("localhost".try_into()?),
            ],
        ),
        ("client", ExtendedKeyUsagePurpose::ClientAuth, vec![]),
    ] {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("ebb-dev-tls-{file}"));
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![purpose];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &issuer)?;
        fs::write(service_tls_file(layout, &format!("{file}.crt")), cert.pem())?;
        write_private(
            &service_tls_file(layout, &format!("{file}.key")),
            &key.serialize_pem(),
        )?;
    }
    fs::write(&marker, "")?;
    println!(
        "  generated the TLS Redis's certificates in {}",
        dir.display()
    );
    Ok(true)
}

fn redis_tls(layout: &Layout) -> Result<Command> {
    let data = fresh_dir(&layout.data("redis-tls"))?;
    let mut cmd = Command::new("/usr/bin/redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port", "0"])
        .args(["--tls-port", &ports::REDIS_TLS.to_string()])
        .arg("--tls-cert-file")
        .arg(service_tls_file(layout, "server.crt"))
        .arg("--tls-key-file")
        .arg(service_tls_file(layout, "server.key"))
        .arg("--tls-ca-cert-file")
        .arg(service_tls_file(layout, "ca.crt"))
        // Client certificates are checked when presented, not required: tests cover both.
        .args(["--tls-auth-clients", "optional"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&data);
    Ok(cmd)
}

/// Starts every member of a group that must start together (a Redis Cluster, a Sentinel set);
/// returns whether it was started fresh. If only some members run, they are stopped first:
/// a half-restarted group would hold stale cluster or replication state.
fn ensure_group(
    layout: &Layout,
    members: &[&str],
    command: impl Fn(&str) -> Result<Command>,
) -> Result<bool> {
    let running: Vec<&str> = members
        .iter()
        .copied()
        .filter(|m| process::running(layout, m).is_some())
        .collect();
    if running.len() == members.len() {
        for m in members {
            ensure_started(layout, m, || command(m))?;
        }
        return Ok(false);
    }
    for m in running {
        process::stop(layout, m, Duration::from_secs(10))?;
        println!("  stopped {m} (its group restarts as a whole)");
    }
    for m in members {
        ensure_started(layout, m, || command(m))?;
    }
    Ok(true)
}

fn redis_cluster_node(layout: &Layout, name: &str) -> Result<Command> {
    let (Some(port), Some(bus)) = (service_port(name), cluster_bus_port(name)) else {
        bail!("no ports for {name}");
    };
    let data = fresh_dir(&layout.data(name))?;
    let mut cmd = Command::new("/usr/bin/redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &bus.to_string(),
        ])
        .arg("--cluster-config-file")
        .arg(data.join("nodes.conf"))
        .args(["--cluster-node-timeout", "5000"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&data);
    Ok(cmd)
}

/// Joins the nodes into one cluster of three masters unless they already form one (a node that
/// knows only itself has never joined), then waits for `cluster_state:ok`.
fn create_redis_cluster(layout: &Layout) -> Result<()> {
    let mut fresh = true;
    for (name, port) in REDIS_CLUSTER.iter().zip(ports::REDIS_CLUSTER) {
        wait_until(name, Duration::from_secs(30), || {
            redis_cli(port, &["PING"]).is_some_and(|out| out.trim() == "PONG")
        })?;
        fresh &= redis_cli(port, &["CLUSTER", "INFO"])
            .is_some_and(|out| out.contains("cluster_known_nodes:1\r"));
    }
    if !fresh {
        return Ok(());
    }
    let out = Command::new("/usr/bin/redis-cli")
        .args(["--cluster", "create"])
        .args(ports::REDIS_CLUSTER.map(|p| format!("127.0.0.1:{p}")))
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
    for name in REDIS_CLUSTER {
        wait_healthy(layout, name, Duration::from_secs(60))?;
    }
    println!("  redis-cluster: created (3 masters)");
    Ok(())
}

fn redis_sentinel_member(layout: &Layout, name: &str) -> Result<Command> {
    let data = fresh_dir(&layout.data(name))?;
    let master = ports::REDIS_SENTINEL_MASTER.to_string();
    let mut cmd = Command::new("/usr/bin/redis-server");
    match name {
        "redis-sentinel-master" | "redis-sentinel-replica" => {
            let port = service_port(name).unwrap_or_default();
            cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&data);
            if name == "redis-sentinel-replica" {
                cmd.args(["--replicaof", "127.0.0.1", &master]);
            }
        }
        _ => {
            let Some(port) = service_port(name) else {
                bail!("no port for {name}");
            };
            // A sentinel rewrites its configuration file as it learns the topology.
            let conf = data.join("sentinel.conf");
            fs::write(
                &conf,
                format!(
                    "bind 127.0.0.1\nport {port}\ndir {}\n\
                     sentinel monitor {SENTINEL_MASTER_NAME} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_MASTER_NAME} 3000\n\
                     sentinel failover-timeout {SENTINEL_MASTER_NAME} 10000\n",
                    data.display()
                ),
            )?;
            cmd.arg(&conf).arg("--sentinel");
        }
    }
    Ok(cmd)
}

fn etcd(layout: &Layout, bin: &Binaries) -> Result<Command> {
    let data = fresh_dir(&layout.data("etcd"))?;
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

fn apiserver(layout: &Layout, bin: &Binaries) -> Result<Command> {
    let pki = layout.pki();
    let p = |f: &str| pki.join(f).display().to_string();
    let mut cmd = Command::new(bin.path("kube-apiserver"));
    cmd.arg(format!(
        "--etcd-servers=http://127.0.0.1:{}",
        ports::ETCD_CLIENT
    ))
    .arg("--bind-address=127.0.0.1")
    .arg(format!("--secure-port={}", ports::APISERVER))
    .arg("--advertise-address=127.0.0.1")
    .arg("--endpoint-reconciler-type=none")
    .arg(format!(
        "--cert-dir={}",
        layout.data("kube-apiserver").display()
    ))
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
    fs::create_dir_all(layout.data("kube-apiserver"))?;
    Ok(cmd)
}

fn controller_manager(layout: &Layout, bin: &Binaries) -> Result<Command> {
    let mut cmd = Command::new(bin.path("kube-controller-manager"));
    cmd.arg(format!(
        "--kubeconfig={}",
        layout.component_kubeconfig("controller-manager").display()
    ))
    .arg("--leader-elect=false")
    .arg("--bind-address=127.0.0.1")
    .arg(format!("--secure-port={}", ports::CONTROLLER_MANAGER))
    .arg(format!(
        "--cert-dir={}",
        layout.data("kube-controller-manager").display()
    ))
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
    fs::create_dir_all(layout.data("kube-controller-manager"))?;
    Ok(cmd)
}

fn scheduler(layout: &Layout, bin: &Binaries) -> Result<Command> {
    let mut cmd = Command::new(bin.path("kube-scheduler"));
    cmd.arg(format!(
        "--kubeconfig={}",
        layout.component_kubeconfig("scheduler").display()
    ))
    .arg("--leader-elect=false")
    .arg("--bind-address=127.0.0.1")
    .arg(format!("--secure-port={}", ports::SCHEDULER))
    .arg(format!(
        "--cert-dir={}",
        layout.data("kube-scheduler").display()
    ));
    fs::create_dir_all(layout.data("kube-scheduler"))?;
    Ok(cmd)
}

fn kwok(layout: &Layout, bin: &Binaries) -> Result<Command> {
    let mut cmd = Command::new(bin.path("kwok"));
    cmd.arg(format!("--kubeconfig={}", layout.kubeconfig().display()))
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

/// Writes the admin kubeconfig and the components' kubeconfigs.
pub fn write_kubeconfigs(layout: &Layout) -> Result<()> {
    for (file, cert) in [
        (layout.kubeconfig(), "admin"),
        (
            layout.component_kubeconfig("controller-manager"),
            "controller-manager",
        ),
        (layout.component_kubeconfig("scheduler"), "scheduler"),
    ] {
        let pki = layout.pki();
        let read = |f: String| -> Result<String> {
            Ok(BASE64.encode(fs::read(pki.join(&f)).with_context(|| format!("reading {f}"))?))
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: ebb-dev\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: ebb-dev\n  context:\n    cluster: ebb-dev\n    user: {cert}\n    namespace: default\ncurrent-context: ebb-dev\nusers:\n- name: {cert}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            apiserver_url(),
            read("ca.crt".into())?,
            read(format!("{cert}.crt"))?,
            read(format!("{cert}.key"))?,
        );
        write_private(&file, &text)?;
    }
    Ok(())
}

/// Removes and recreates a data directory: every fresh start begins empty.
fn fresh_dir(dir: &Path) -> Result<std::path::PathBuf> {
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

fn connect(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    Some(stream)
}

fn tcp_open(port: u16) -> bool {
    connect(port).is_some()
}

fn redis_ping() -> bool {
    let Some(mut s) = connect(ports::REDIS) else {
        return false;
    };
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// stdout of `redis-cli` against a loopback port, if it succeeded and did not print an error.
fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    run_redis_cli(&["-p".to_string(), port.to_string()], args)
}

/// [`redis_cli`] against the TLS Redis, with the client certificate.
fn redis_cli_tls(layout: &Layout, args: &[&str]) -> Option<String> {
    let file = |f: &str| service_tls_file(layout, f).display().to_string();
    let options = [
        "-p".to_string(),
        ports::REDIS_TLS.to_string(),
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
fn http_get(port: u16, path: &str, basic: Option<(&str, &str)>) -> Option<(u16, String)> {
    let mut s = connect(port)?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some((user, pass)) = basic {
        request.push_str(&format!(
            "Authorization: Basic {}\r\n",
            BASE64.encode(format!("{user}:{pass}"))
        ));
    }
    request.push_str("\r\n");
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
