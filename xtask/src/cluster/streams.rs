//! The stream and queue servers of the dev cluster: Apache Kafka (KRaft, one node that is its own
//! controller) with Ory Hydra as the OAuth 2.0 server its OAUTHBEARER listener trusts,
//! nats-server with JetStream (alone, and a three-node cluster), and ElasticMQ (the SQS API).
//! Each entry of
//! [`super::services::SERVICES`] points at a start command and a health check here.

use std::fs;
use std::io::{Read, Write};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::binaries::Binaries;
use super::certs::service_tls_file;
use super::jvm::{self, ELASTICMQ, KAFKA};
use super::services::{
    NATS_MONITORING, Service, connect, fresh_dir, http_get, http_get_at, http_post_json, run_to_end,
};
use super::{Layout, dotted, ports};

/// The user every SASL mechanism of the dev Kafka knows (PLAIN and SCRAM-SHA-256/512).
pub const KAFKA_USER: &str = "ebb";
/// That user's password.
pub const KAFKA_PASSWORD: &str = "ebb-dev";
/// The KRaft cluster id the storage is formatted with (any 16 bytes, base64url).
const KAFKA_CLUSTER_ID: &str = "Wgmuz1bSTTudNmmDfyqBeA";
/// The OAuth client Hydra knows (client-credentials grant, scope `kafka`).
pub const OAUTH_CLIENT_ID: &str = "ebb-kafka";
/// Its secret.
pub const OAUTH_CLIENT_SECRET: &str = "ebb-dev-oauth";
/// The account ElasticMQ puts in its queue URLs.
pub const SQS_ACCOUNT: &str = "000000000000";
/// The region ElasticMQ says it is in.
pub const SQS_REGION: &str = "us-east-1";

/// JVM flags for a small test server on two cores: a bounded heap, the serial collector.
fn jvm(heap: &str, classpath: String) -> Command {
    let mut cmd = Command::new(jvm::java());
    cmd.arg(format!("-Xmx{heap}"))
        .args(["-Xms64m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"])
        .arg("-cp")
        .arg(classpath);
    cmd
}

/// The broker's configuration: a plaintext listener, SASL over plaintext and over TLS, TLS
/// alone (which requires a client certificate of the dev CA), and the controller; topics are never created implicitly, and the internal topics have
/// one partition and one replica so a fresh broker serves groups at once.
fn kafka_properties(layout: &Layout, data: &std::path::Path) -> Result<String> {
    let keystore = data.join("keystore.pem");
    // A PEM keystore is the private key (PKCS#8) followed by the certificate chain.
    let key = fs::read_to_string(service_tls_file(layout, "server.key"))?;
    let cert = fs::read_to_string(service_tls_file(layout, "server.crt"))?;
    fs::write(&keystore, format!("{key}{cert}"))?;
    let plain = format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required user_{KAFKA_USER}=\"{KAFKA_PASSWORD}\";"
    );
    let scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
    let oauth = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;";
    // OAUTHBEARER tokens are JWTs signed by Hydra, checked against its published keys.
    let validator =
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler";
    let mut sasl = String::new();
    for listener in ["sasl_plaintext", "sasl_ssl"] {
        sasl.push_str(&format!(
            "listener.name.{listener}.plain.sasl.jaas.config={plain}\n\
             listener.name.{listener}.scram-sha-256.sasl.jaas.config={scram}\n\
             listener.name.{listener}.scram-sha-512.sasl.jaas.config={scram}\n\
             listener.name.{listener}.oauthbearer.sasl.jaas.config={oauth}\n\
             listener.name.{listener}.oauthbearer.sasl.server.callback.handler.class={validator}\n"
        ));
    }
    // Hydra puts an audience in a token only when the request names one, and KEDA's kafka
    // trigger names none: the issuer and the signature are what the broker checks.
    sasl.push_str(&format!(
        "sasl.oauthbearer.jwks.endpoint.url={jwks}\n\
         sasl.oauthbearer.expected.issuer={issuer}\n\
         sasl.oauthbearer.allow.unverified.audience=true\n",
        jwks = hydra_jwks_url(),
        issuer = hydra_issuer(),
    ));
    Ok(format!(
        "process.roles=broker,controller\n\
         node.id=1\n\
         controller.quorum.voters=1@127.0.0.1:{controller}\n\
         controller.listener.names=CONTROLLER\n\
         listeners=PLAINTEXT://127.0.0.1:{plaintext},CONTROLLER://127.0.0.1:{controller},SASL_PLAINTEXT://127.0.0.1:{sasl_port},SASL_SSL://127.0.0.1:{sasl_tls},SSL://127.0.0.1:{tls}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{plaintext},SASL_PLAINTEXT://127.0.0.1:{sasl_port},SASL_SSL://127.0.0.1:{sasl_tls},SSL://127.0.0.1:{tls}\n\
         listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL\n\
         inter.broker.listener.name=PLAINTEXT\n\
         log.dirs={logs}\n\
         num.partitions=1\n\
         auto.create.topics.enable=false\n\
         offsets.topic.replication.factor=1\n\
         offsets.topic.num.partitions=1\n\
         transaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\n\
         share.coordinator.state.topic.replication.factor=1\n\
         share.coordinator.state.topic.min.isr=1\n\
         group.initial.rebalance.delay.ms=0\n\
         sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER\n\
         {sasl}\
         ssl.keystore.type=PEM\n\
         ssl.keystore.location={keystore}\n\
         ssl.truststore.type=PEM\n\
         ssl.truststore.location={ca}\n\
         ssl.client.auth=requested\n\
         listener.name.ssl.ssl.client.auth=required\n",
        controller = ports::KAFKA_CONTROLLER,
        plaintext = ports::KAFKA,
        sasl_port = ports::KAFKA_SASL,
        sasl_tls = ports::KAFKA_SASL_TLS,
        tls = ports::KAFKA_TLS,
        logs = data.join("logs").display(),
        keystore = keystore.display(),
        ca = service_tls_file(layout, "ca.crt").display(),
    ))
}

const KAFKA_LOG4J: &str = "status = warn\n\
appender.out.type = Console\n\
appender.out.name = OUT\n\
appender.out.layout.type = PatternLayout\n\
appender.out.layout.pattern = [%d] %p %m (%c)%n\n\
rootLogger.level = INFO\n\
rootLogger.appenderRef.out.ref = OUT\n\
logger.quiet.name = org.apache.kafka.clients\n\
logger.quiet.level = WARN\n";

/// A fresh single-node KRaft cluster: the storage is formatted (with the SCRAM credentials of
/// [`KAFKA_USER`]) every time the broker starts, so it begins with no topic and no group.
pub fn kafka_command(layout: &Layout, _: &Binaries, service: &Service) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    let properties = data.join("server.properties");
    fs::write(&properties, kafka_properties(layout, &data)?)?;
    let log4j = data.join("log4j2.properties");
    fs::write(&log4j, KAFKA_LOG4J)?;
    let log4j_flag = format!("-Dlog4j2.configurationFile={}", log4j.display());
    let mut format = jvm("256m", KAFKA.classpath());
    format
        .arg(&log4j_flag)
        .args([
            "kafka.tools.StorageTool",
            "format",
            "-t",
            KAFKA_CLUSTER_ID,
            "-c",
        ])
        .arg(&properties);
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        format.arg("--add-scram").arg(format!(
            "{mechanism}=[name={KAFKA_USER},password={KAFKA_PASSWORD}]"
        ));
    }
    run_to_end(format, "formatting Kafka's storage")?;
    let mut cmd = jvm("512m", KAFKA.classpath());
    // Kafka fetches OAUTHBEARER keys only from URLs listed here.
    cmd.arg(format!(
        "-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={}",
        hydra_jwks_url()
    ));
    // JMX on loopback, for the broker's own connection counts in the tests.
    let jmx = ports::KAFKA_JMX;
    cmd.arg(&log4j_flag)
        .args([
            "-Dcom.sun.management.jmxremote",
            "-Dcom.sun.management.jmxremote.authenticate=false",
            "-Dcom.sun.management.jmxremote.ssl=false",
            "-Dcom.sun.management.jmxremote.host=127.0.0.1",
            "-Djava.rmi.server.hostname=127.0.0.1",
        ])
        .arg(format!("-Dcom.sun.management.jmxremote.port={jmx}"))
        .arg(format!("-Dcom.sun.management.jmxremote.rmi.port={jmx}"))
        .arg("kafka.Kafka")
        .arg(&properties)
        .current_dir(&data);
    Ok(cmd)
}

/// Kafka serves requests: an ApiVersions (v0) request on the plaintext listener is answered
/// without error. The broker opens its listeners for requests only once it has joined its
/// controller, so this also says that topics can be created.
pub fn kafka_ready(_: &Layout, _: &Service) -> bool {
    api_versions_ok(ports::KAFKA) && connect(ports::KAFKA_SASL_TLS).is_some()
}

fn api_versions_ok(port: u16) -> bool {
    const CORRELATION: i32 = 0x0ebb;
    let client_id = b"ebb-dev-health";
    let mut request = Vec::new();
    let size = 2 + 2 + 4 + 2 + client_id.len();
    request.extend_from_slice(&(size as i32).to_be_bytes());
    request.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    request.extend_from_slice(&0i16.to_be_bytes()); // version 0
    request.extend_from_slice(&CORRELATION.to_be_bytes());
    request.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    request.extend_from_slice(client_id);
    let Some(mut stream) = connect(port) else {
        return false;
    };
    if stream.write_all(&request).is_err() {
        return false;
    }
    // Size (4), correlation id (4), error code (2).
    let mut head = [0u8; 10];
    if stream.read_exact(&mut head).is_err() {
        return false;
    }
    let correlation = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let error = i16::from_be_bytes([head[8], head[9]]);
    correlation == CORRELATION && error == 0
}

/// nats-server with JetStream, its store in a fresh directory, and its monitoring port.
pub fn nats_command(layout: &Layout, bin: &Binaries, service: &Service) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    let mut cmd = Command::new(bin.path("nats-server"));
    cmd.args(["--addr", "127.0.0.1", "--port"])
        .arg(ports::NATS.to_string())
        .args(["--http_port"])
        .arg(ports::NATS_MONITORING.to_string())
        .args([
            "--server_name",
            "ebb-dev-nats",
            "--jetstream",
            "--store_dir",
        ])
        .arg(&data);
    Ok(cmd)
}

/// NATS answers `/healthz` with JetStream enabled and current.
pub fn nats_ready(_: &Layout, _: &Service) -> bool {
    http_get(
        ports::NATS_MONITORING,
        "/healthz?js-enabled-only=true",
        None,
    )
    .is_some_and(|(code, _)| code == 200)
}

/// Hydra's issuer: its public port's root.
fn hydra_issuer() -> String {
    format!("http://127.0.0.1:{}/", ports::HYDRA_PUBLIC)
}

/// Where Hydra publishes the keys its tokens are signed with.
fn hydra_jwks_url() -> String {
    format!("{}.well-known/jwks.json", hydra_issuer())
}

/// Hydra's OAuth 2.0 token endpoint.
pub fn hydra_token_url() -> String {
    format!("{}oauth2/token", hydra_issuer())
}

/// Ory Hydra, a real OAuth 2.0 server, with its store in SQLite in memory (no client and fresh
/// signing keys at every start) and JWT access tokens, so Kafka can verify them offline.
/// `--dev` allows its plain-HTTP issuer on loopback.
pub fn hydra_command(layout: &Layout, bin: &Binaries, service: &Service) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    let config = data.join("hydra.yml");
    fs::write(
        &config,
        format!(
            "dsn: memory\n\
             serve:\n  public:\n    host: 127.0.0.1\n    port: {public}\n  \
             admin:\n    host: 127.0.0.1\n    port: {admin}\n\
             urls:\n  self:\n    issuer: {issuer}\n\
             secrets:\n  system:\n    - ebb-dev-hydra-system-secret\n\
             strategies:\n  access_token: jwt\n\
             log:\n  level: warn\n",
            public = ports::HYDRA_PUBLIC,
            admin = ports::HYDRA_ADMIN,
            issuer = hydra_issuer(),
        ),
    )?;
    let mut cmd = Command::new(bin.path("hydra"));
    cmd.args(["serve", "all", "--dev", "--sqa-opt-out", "-c"])
        .arg(&config);
    Ok(cmd)
}

/// Hydra is ready when its public port says so and it publishes signing keys.
pub fn hydra_ready(_: &Layout, _: &Service) -> bool {
    http_get(ports::HYDRA_PUBLIC, "/health/ready", None).is_some_and(|(code, _)| code == 200)
        && http_get(ports::HYDRA_PUBLIC, "/.well-known/jwks.json", None)
            .is_some_and(|(code, body)| code == 200 && body.contains("\"kid\""))
}

/// Makes the OAuth client [`OAUTH_CLIENT_ID`] in Hydra.
pub fn create_hydra_client(_: &Layout, _: &Binaries) -> Result<()> {
    let body = serde_json::json!({
        "client_id": OAUTH_CLIENT_ID,
        "client_secret": OAUTH_CLIENT_SECRET,
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "kafka",
        "access_token_strategy": "jwt",
    });
    match http_post_json(ports::HYDRA_ADMIN, "/admin/clients", &body.to_string()) {
        // 409: made by an earlier `up` while Hydra ran.
        Some((201 | 409, _)) => Ok(()),
        Some((code, answer)) => bail!("Hydra refused the OAuth client ({code}): {answer}"),
        None => bail!("Hydra's admin API did not answer"),
    }
}

/// The OAuth client exists.
pub fn hydra_client_ready(_: &Layout, _: &Service) -> bool {
    http_get(
        ports::HYDRA_ADMIN,
        &format!("/admin/clients/{OAUTH_CLIENT_ID}"),
        None,
    )
    .is_some_and(|(code, _)| code == 200)
}

/// A node of the three-node NATS JetStream cluster: its client, monitoring and route ports on
/// its own loopback address, routes to the other two, and a fresh store (the cluster begins
/// with no stream at every start).
pub fn nats_cluster_node_command(
    layout: &Layout,
    bin: &Binaries,
    service: &Service,
) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    let host = dotted(&service.ports[0].host);
    let routes: Vec<String> = ports::NATS_CLUSTER_HOSTS
        .iter()
        .map(dotted)
        .filter(|other| *other != host)
        .map(|other| format!("\"nats-route://{other}:{}\"", ports::NATS_CLUSTER_ROUTES))
        .collect();
    let config = data.join("nats.conf");
    fs::write(
        &config,
        format!(
            "server_name: {name}\n\
             listen: \"{host}:{client}\"\n\
             http: \"{host}:{monitoring}\"\n\
             jetstream {{ store_dir: \"{store}\" }}\n\
             cluster {{\n  name: ebb-dev-nats\n  listen: \"{host}:{routes_port}\"\n  routes: [{routes}]\n}}\n",
            name = service.name,
            client = ports::NATS_CLUSTER,
            monitoring = ports::NATS_CLUSTER_MONITORING,
            store = data.join("store").display(),
            routes_port = ports::NATS_CLUSTER_ROUTES,
            routes = routes.join(", "),
        ),
    )?;
    let mut cmd = Command::new(bin.path("nats-server"));
    cmd.arg("-c").arg(&config);
    Ok(cmd)
}

/// A cluster node is healthy when `/healthz` says JetStream is current: the cluster has a
/// meta leader and this node follows it.
pub fn nats_cluster_node_ready(_: &Layout, service: &Service) -> bool {
    service
        .port_entry(NATS_MONITORING)
        .ok()
        .and_then(|port| http_get_at(port.addr(), "/healthz", None))
        .is_some_and(|(code, _)| code == 200)
}

/// ElasticMQ with its SQS API on loopback, in-memory queues (empty at every start), the
/// statistics UI off, and queue URLs that name [`SQS_ACCOUNT`].
pub fn elasticmq_command(layout: &Layout, _: &Binaries, service: &Service) -> Result<Command> {
    let data = fresh_dir(&layout.data(service.name))?;
    let config = data.join("elasticmq.conf");
    fs::write(
        &config,
        format!(
            "include classpath(\"application.conf\")\n\
             node-address {{\n  protocol = http\n  host = 127.0.0.1\n  port = {port}\n  context-path = \"\"\n}}\n\
             rest-sqs {{\n  enabled = true\n  bind-port = {port}\n  bind-hostname = \"127.0.0.1\"\n  sqs-limits = strict\n}}\n\
             rest-stats {{\n  enabled = false\n}}\n\
             aws {{\n  region = {SQS_REGION}\n  accountId = {SQS_ACCOUNT}\n}}\n",
            port = ports::SQS,
        ),
    )?;
    let mut cmd = jvm("256m", ELASTICMQ.classpath());
    cmd.arg(format!("-Dconfig.file={}", config.display()))
        .arg("org.elasticmq.server.Main")
        .current_dir(&data);
    Ok(cmd)
}

/// ElasticMQ answers a ListQueues (query protocol).
pub fn elasticmq_ready(_: &Layout, _: &Service) -> bool {
    http_get(ports::SQS, "/?Action=ListQueues", None).is_some_and(|(code, _)| code == 200)
}

/// Runs one of Kafka's own command-line tools (`org.apache.kafka.tools.*`, from the broker's
/// jars) with `stdin`; its stdout.
pub fn kafka_tool(class: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new(jvm::java())
        .args(["-Xmx256m", "-XX:+UseSerialGC", "-cp"])
        .arg(KAFKA.classpath())
        .arg(class)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {class}"))?;
    if let Some(text) = stdin
        && let Some(mut input) = child.stdin.take()
    {
        input.write_all(text.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{class} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The broker's open connections on its plaintext listener, by its own count
/// (`connection-count` of its socket server, summed over the network threads, read over JMX).
pub fn kafka_connections() -> Result<f64> {
    let url = format!(
        "service:jmx:rmi:///jndi/rmi://127.0.0.1:{}/jmxrmi",
        ports::KAFKA_JMX
    );
    let out = kafka_tool(
        "org.apache.kafka.tools.JmxTool",
        &[
            "--jmx-url",
            &url,
            "--object-name",
            "kafka.server:type=socket-server-metrics,listener=PLAINTEXT,networkProcessor=*",
            "--attributes",
            "connection-count",
            "--one-time",
            "true",
        ],
        None,
    )?;
    let last = out.lines().last().unwrap_or_default();
    last.split(',')
        .skip(1)
        .map(|v| {
            v.trim_matches('"')
                .parse::<f64>()
                .with_context(|| format!("reading JmxTool's answer {out:?}"))
        })
        .sum()
}
