//! `postgresql`: the number a SQL query returns, as KEDA 2.20 reads it.
//!
//! The server is named by a libpq connection string (`key=value` pairs or a `postgresql://`
//! URL) or by the separate keys `host`, `port`, `userName`, `dbName`, `sslmode` and `password`.
//! Both are reduced to one set of libpq parameters, so triggers that reach the same server,
//! database and user with the same password and TLS settings share one connection through a
//! [`SharedPool`], however they spell it. A poll is one simple-protocol query (no prepared
//! statement, so PgBouncer in transaction mode is fine); its first row's only column is the value.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{ConfigError, ScalerError, error_chain};
use crate::metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
use crate::pool::{Lease, SharedPool};
use crate::registry::Registry;
use crate::scaler::Scaler;
use crate::tls::{ClientTls, client_config, pem_certificates};
use crate::trigger::{Found, MetricTargetType, Source, Trigger};

/// Limit for connecting and for each query.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// `application_name` of ebb's connections (shown in `pg_stat_activity`) unless the
/// connection string sets one.
pub const APPLICATION_NAME: &str = "ebb";

/// Registers `postgresql`. Every trigger built from one registry shares that registry's pool.
pub fn register(registry: &mut Registry) {
    let pool = PgPool::new();
    registry.register("postgresql", move |t| {
        Ok(Box::new(PostgresScaler::new(t, &pool)?))
    });
}

/// `sslmode` with libpq's meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const NAMES: [&'static str; 6] = [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// What is checked of the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Verify {
    /// Nothing: the session is encrypted to whoever answers (libpq's prefer and require).
    Nothing,
    /// The chain, against the system roots plus `ca`; not the host name (verify-ca).
    Chain,
    /// The chain and the host name (verify-full).
    ChainAndName,
}

/// How TLS is negotiated and checked. Holds a private key: never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PgTls {
    /// The mode asked (`sslrootcert=system` asks verify-full); [`PgTls::negotiation`] reads
    /// `allow` as `prefer`.
    mode: SslMode,
    verify: Verify,
    /// `ca`, `cert`, `key` from the TriggerAuthentication (`unsafe_ssl` unused: see `verify`).
    client: ClientTls,
}

impl PgTls {
    /// What tokio-postgres negotiates: plain, TLS if offered, or TLS only.
    fn negotiation(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// Identity of a shared connection: every libpq parameter tokio-postgres connects with
/// (password included) and the TLS settings. Holds credentials: never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PgKey {
    params: BTreeMap<String, String>,
    tls: PgTls,
}

/// The pool `postgresql` triggers share.
pub type PgPool = SharedPool<PgKey, PgConnection>;

/// libpq parameters tokio-postgres reads as they are.
const CLIENT_KEYS: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
    "sslnegotiation",
];

/// Parameters that tell a client to read a file of its own machine. KEDA's driver would read
/// them from KEDA's pod; ebb reads no file of its pod for a namespaced trigger.
const FILE_KEYS: &[&str] = &[
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "passfile",
    "service",
    "servicefile",
];

/// Parameters of KEDA's driver (pgx) that change nothing ebb does: SNI is always sent for host
/// names, Kerberos is not spoken, and statement caches and pool sizes are the driver's own.
const IGNORED_KEYS: &[&str] = &[
    "sslsni",
    "krbsrvname",
    "krbspn",
    "statement_cache_capacity",
    "description_cache_capacity",
    "default_query_exec_mode",
];

/// Where the connection settings came from, for errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A connection string, under this key (`connection` or `connectionFromEnv`).
    ConnectionString(&'static str),
    /// The separate keys.
    Keys,
}

/// Parsed `postgresql` trigger metadata.
#[derive(Clone, PartialEq)]
struct PostgresConfig {
    key: PgKey,
    source_name: String,
    query: String,
    target: f64,
    activation: f64,
    metric_type: MetricTargetType,
    metric_name: String,
}

impl fmt::Debug for PostgresConfig {
    // The server is named by address only; the password, the query and the TLS keys are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("source", &self.source_name)
            .field("sslmode", &self.key.tls.mode)
            .field("verify", &self.key.tls.verify)
            .field("target", &self.target)
            .field("activation", &self.activation)
            .field("metric_type", &self.metric_type)
            .field("metric_name", &self.metric_name)
            .finish_non_exhaustive()
    }
}

impl PostgresConfig {
    fn parse(t: &Trigger) -> Result<Self, ConfigError> {
        let query = t.required("query", &[Source::Metadata])?.value;
        let target: f64 = t.parse_required("targetQueryValue", &[Source::Metadata], "a number")?;
        if !target.is_finite() || target <= 0.0 {
            // KEDA refuses 0 as "no targetQueryValue given".
            return Err(t.error(
                "targetQueryValue",
                format!("expected a number above 0, got {target}"),
            ));
        }
        let activation = t.threshold_or("activationTargetQueryValue", 0.0)?;
        let metric_type = t.metric_type(
            &[MetricTargetType::AverageValue, MetricTargetType::Value],
            MetricTargetType::AverageValue,
        )?;
        let (origin, params) = match t.lookup("connection", &[Source::Auth, Source::Env])? {
            Some(found) => {
                let key = if found.source == Source::Env {
                    "connectionFromEnv"
                } else {
                    "connection"
                };
                let params = parse_conninfo(&found.value).map_err(|p| t.error(key, p))?;
                (Origin::ConnectionString(key), params)
            }
            None => (Origin::Keys, separate_keys(t)?),
        };
        let (params, tls) = settle(t, origin, params)?;
        let source_name = source_name(&params);
        Ok(Self {
            key: PgKey { params, tls },
            source_name,
            query,
            target,
            activation,
            metric_type,
            // KEDA 2.20 names it `s<i>-postgresql`, whatever the server or query.
            metric_name: metric_name(t.index, "postgresql"),
        })
    }
}

/// The separate keys: `host`, `port`, `userName`, `dbName`, `sslmode` (authentication parameter,
/// then metadata, as in KEDA; all required) and `password` (authentication parameter, then
/// `passwordFromEnv`), as libpq parameters.
fn separate_keys(t: &Trigger) -> Result<BTreeMap<String, String>, ConfigError> {
    let sources = [Source::Auth, Source::Metadata];
    let required = |key: &str| -> Result<Found, ConfigError> {
        t.lookup(key, &sources)?.ok_or_else(|| {
            t.error(
                key,
                format!(
                    "required; set metadata {key:?} or authentication parameter {key:?}, or give a whole connection string (authentication parameter \"connection\" or metadata \"connectionFromEnv\")"
                ),
            )
        })
    };
    let got = |found: &Found| match found.source {
        Source::Metadata if found.value.len() <= 64 => format!(", got {:?}", found.value),
        _ => String::new(),
    };
    let host = required("host")?;
    let port = required("port")?;
    let ports: Vec<&str> = port.value.split(',').map(str::trim).collect();
    if ports.iter().any(|p| p.parse::<u16>().is_err()) {
        return Err(t.error(
            "port",
            format!(
                "expected a port number, or one per host (comma-separated){}",
                got(&port)
            ),
        ));
    }
    let user = required("userName")?;
    let dbname = required("dbName")?;
    let sslmode = required("sslmode")?;
    if SslMode::parse(sslmode.value.trim()).is_none() {
        return Err(t.error(
            "sslmode",
            format!(
                "expected one of {}{}",
                SslMode::NAMES.join(", "),
                got(&sslmode)
            ),
        ));
    }
    let mut params = BTreeMap::from([
        ("host".to_string(), host.value.trim().to_string()),
        ("port".to_string(), ports.join(",")),
        ("user".to_string(), user.value),
        ("dbname".to_string(), dbname.value),
        ("sslmode".to_string(), sslmode.value.trim().to_string()),
    ]);
    // KEDA passes an empty password as none.
    if let Some(password) = t.lookup("password", &[Source::Auth, Source::Env])? {
        params.insert("password".into(), password.value);
    }
    Ok(params)
}

/// The parameters of a libpq connection string: `key=value` pairs (values optionally in single
/// quotes, `\` escaping the next character) or a `postgresql://` / `postgres://` URL
/// (`user:password@host:port,host2:port2/dbname?key=value&...`, percent-encoded). A key given
/// twice keeps its last value. Errors never repeat the text, which holds the password.
fn parse_conninfo(text: &str) -> Result<BTreeMap<String, String>, String> {
    let text = text.trim();
    match text
        .strip_prefix("postgresql://")
        .or_else(|| text.strip_prefix("postgres://"))
    {
        Some(rest) => parse_url(rest),
        None => parse_pairs(text),
    }
}

fn parse_pairs(text: &str) -> Result<BTreeMap<String, String>, String> {
    const EXPECTED: &str = "expected key=value pairs separated by spaces, or a postgresql:// URL";
    let mut params = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if key.is_empty() || chars.next() != Some('=') {
            return Err(EXPECTED.into());
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err("a quoted value is not closed".into()),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        params.insert(key, value);
    }
    if params.is_empty() {
        return Err(EXPECTED.into());
    }
    Ok(params)
}

fn parse_url(rest: &str) -> Result<BTreeMap<String, String>, String> {
    let decode = |part: &str, what: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| format!("the URL's {what} is not UTF-8 once percent-decoded"))
    };
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (netloc, after) = rest.split_at(end);
    let mut params = BTreeMap::new();
    // User info ends at the last `@`, so an unencoded `@` in a password still works.
    let hosts = match netloc.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            let user = decode(user, "user name")?;
            if !user.is_empty() {
                params.insert("user".to_string(), user);
            }
            if let Some(password) = password {
                params.insert("password".to_string(), decode(password, "password")?);
            }
            hosts
        }
        None => netloc,
    };
    if !hosts.is_empty() {
        let (mut names, mut ports) = (Vec::new(), Vec::new());
        for chunk in hosts.split(',') {
            let (host, port) = match chunk.strip_prefix('[') {
                Some(bracketed) => {
                    let (host, after) = bracketed
                        .split_once(']')
                        .ok_or("an IPv6 host in the URL lacks its closing `]`")?;
                    let port = match after {
                        "" => None,
                        p => Some(
                            p.strip_prefix(':')
                                .ok_or("expected `:port` after an IPv6 host in the URL")?,
                        ),
                    };
                    (host, port)
                }
                None => match chunk.split_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (chunk, None),
                },
            };
            let host = decode(host, "host")?;
            if host.is_empty() {
                return Err("the URL has an empty host".into());
            }
            names.push(host);
            ports.push(port.filter(|p| !p.is_empty()).unwrap_or("5432").to_string());
        }
        params.insert("host".to_string(), names.join(","));
        params.insert("port".to_string(), ports.join(","));
    }
    let (path, query) = after.split_once('?').unwrap_or((after, ""));
    if let Some(dbname) = path.strip_prefix('/') {
        let dbname = decode(dbname, "database name")?;
        if !dbname.is_empty() {
            params.insert("dbname".to_string(), dbname);
        }
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or("expected key=value parameters after `?` in the URL")?;
        params.insert(
            decode(key, "parameter name")?,
            decode(value, "parameter value")?,
        );
    }
    Ok(params)
}

/// Reduces libpq parameters to what tokio-postgres reads and the TLS settings, and checks them
/// without connecting: `sslmode` and `sslrootcert=system` become [`PgTls`], pgx's own and the
/// Kerberos parameters are dropped, files are refused, every other parameter is sent to the
/// server as a setting (`-c key=value` in `options`, as pgx sends unknown parameters), and
/// tokio-postgres must accept the rest.
fn settle(
    t: &Trigger,
    origin: Origin,
    mut params: BTreeMap<String, String>,
) -> Result<(BTreeMap<String, String>, PgTls), ConfigError> {
    let (key, in_string) = match origin {
        Origin::ConnectionString(key) => (key, " in the connection string"),
        Origin::Keys => ("host", ""),
    };
    let error = |problem: String| t.error(key, problem);
    // pgx's name for dbname.
    if let Some(database) = params.remove("database") {
        params.entry("dbname".into()).or_insert(database);
    }
    let sslmode = match params.remove("sslmode") {
        None => None,
        Some(mode) => Some(SslMode::parse(&mode).ok_or_else(|| {
            // The separate key was checked (and quoted) already; a connection string is a secret.
            error(format!(
                "sslmode{in_string}: expected one of {}",
                SslMode::NAMES.join(", ")
            ))
        })?),
    };
    let system_roots = match params.remove("sslrootcert") {
        Some(root) if root == "system" => true,
        Some(_) => {
            return Err(error(format!(
                "sslrootcert{in_string}: ebb reads no file of its own pod for a trigger; give the CA certificate(s) as PEM in the TriggerAuthentication parameter \"ca\" (or sslrootcert=system for the system's roots)"
            )));
        }
        None => false,
    };
    let mut settings = Vec::new();
    let mut client = BTreeMap::new();
    for (name, value) in params {
        if CLIENT_KEYS.contains(&name.as_str()) {
            client.insert(name, value);
        } else if FILE_KEYS.contains(&name.as_str()) {
            return Err(error(format!(
                "{name}{in_string}: ebb reads no file of its own pod for a trigger; give a client certificate and key as PEM in the TriggerAuthentication parameters \"cert\" and \"key\""
            )));
        } else if IGNORED_KEYS.contains(&name.as_str()) || name.starts_with("pool_") {
        } else if is_setting_name(&name) {
            settings.push(format!("-c {name}={}", escape_option(&value)));
        } else {
            return Err(error(format!(
                "a parameter{in_string} is neither a connection parameter nor a server setting name"
            )));
        }
    }
    if !settings.is_empty() {
        let options = client.entry("options".to_string()).or_default();
        for setting in settings {
            if !options.is_empty() {
                options.push(' ');
            }
            options.push_str(&setting);
        }
    }
    client
        .entry("application_name".into())
        .or_insert_with(|| APPLICATION_NAME.into());
    if client.get("password").is_some_and(String::is_empty) {
        client.remove("password");
    }
    let config = tokio_config(&client).map_err(|e| error(format!("{e}{in_string}")))?;
    check_reachable(&config).map_err(|p| error(format!("{p}{in_string}")))?;

    let mode = match (sslmode, system_roots) {
        // libpq: sslrootcert=system means verify-full, and nothing weaker may be asked.
        (None, true) | (Some(SslMode::VerifyFull), true) => SslMode::VerifyFull,
        (Some(_), true) => {
            return Err(error(format!(
                "sslrootcert=system{in_string} requires sslmode verify-full"
            )));
        }
        (Some(mode), false) => mode,
        // libpq's default.
        (None, false) => SslMode::Prefer,
    };
    let tls = client_tls(t)?;
    let verify = match mode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer => Verify::Nothing,
        // libpq: require with a root certificate checks the chain, as verify-ca.
        SslMode::Require if tls.ca.is_some() => Verify::Chain,
        SslMode::Require => Verify::Nothing,
        SslMode::VerifyCa => Verify::Chain,
        SslMode::VerifyFull => Verify::ChainAndName,
    };
    Ok((
        client,
        PgTls {
            mode,
            verify,
            client: tls,
        },
    ))
}

/// A PostgreSQL setting name (`work_mem`, `myapp.tenant`).
fn is_setting_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && name.len() <= 63
}

/// A value for the server's `options`, which splits on white space and reads `\` as an escape.
fn escape_option(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '\\' || c.is_whitespace() {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// `params` as tokio-postgres reads them. Its errors name the parameter, never its value.
fn tokio_config(params: &BTreeMap<String, String>) -> Result<tokio_postgres::Config, String> {
    let text: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    text.join(" ").parse().map_err(|e: tokio_postgres::Error| {
        let message = error_chain(&e);
        ["invalid connection string: ", "invalid configuration: "]
            .iter()
            .find_map(|prefix| message.strip_prefix(prefix))
            .unwrap_or(&message)
            .to_string()
    })
}

/// Checks that `config` names a user and TCP hosts with a port each, as libpq pairs them.
fn check_reachable(config: &tokio_postgres::Config) -> Result<(), String> {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    if hosts.is_empty() && addrs.is_empty() {
        return Err("no host is named".into());
    }
    if hosts
        .iter()
        .any(|h| !matches!(h, tokio_postgres::config::Host::Tcp(_)))
    {
        return Err("a Unix-domain socket cannot be reached from ebb's pod; name a host".into());
    }
    if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
        return Err(format!(
            "expected one hostaddr per host ({} hosts, {} hostaddrs)",
            hosts.len(),
            addrs.len()
        ));
    }
    let count = hosts.len().max(addrs.len());
    let ports = config.get_ports().len();
    if ports > 1 && ports != count {
        return Err(format!(
            "expected one port, or one per host ({count} hosts, {ports} ports)"
        ));
    }
    if config.get_user().is_none_or(str::is_empty) {
        return Err("no user is named".into());
    }
    Ok(())
}

/// The TriggerAuthentication parameters `ca`, `cert`, `key` and `keyPassword` (PEM; an ebb
/// addition: KEDA's driver reads files instead).
fn client_tls(t: &Trigger) -> Result<ClientTls, ConfigError> {
    crate::tls::from_auth_params(t)
}

/// How errors name the server: `postgresql host:port[,host:port...]/dbname` (libpq's default
/// database is the user's name). Never a credential.
fn source_name(params: &BTreeMap<String, String>) -> String {
    let split = |key: &str| -> Vec<&str> {
        params
            .get(key)
            .map(|v| v.split(',').map(str::trim).collect())
            .unwrap_or_default()
    };
    let (hosts, addrs, ports) = (split("host"), split("hostaddr"), split("port"));
    let count = hosts.len().max(addrs.len());
    let servers: Vec<String> = (0..count)
        .map(|i| {
            let host = hosts.get(i).or(addrs.get(i)).copied().unwrap_or("");
            let port = match ports.len() {
                0 => "5432",
                1 => ports[0],
                _ => ports.get(i).copied().unwrap_or("5432"),
            };
            let port = if port.is_empty() { "5432" } else { port };
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        })
        .collect();
    let db = params
        .get("dbname")
        .or(params.get("user"))
        .map_or("", String::as_str);
    format!("postgresql {}/{db}", servers.join(","))
}

/// An open connection and what cancels its queries. Dropping it closes the connection.
pub struct PgConnection {
    client: Client,
    /// The TLS connector, for cancel requests (`None`: sslmode disable).
    tls: Option<MakeRustlsConnect>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        // The socket closes now, even while the server still owes an answer.
        self.driver.abort();
    }
}

impl PgConnection {
    /// Asks the server, on a connection of its own, to cancel what this connection runs; in
    /// the background, bounded by [`TIMEOUT`].
    fn cancel(&self) {
        let token = self.client.cancel_token();
        let tls = self.tls.clone();
        tokio::spawn(async move {
            let cancel = async {
                match tls {
                    Some(tls) => token.cancel_query(tls).await,
                    None => token.cancel_query(NoTls).await,
                }
            };
            let _ = tokio::time::timeout(TIMEOUT, cancel).await;
        });
    }
}

/// Opens the connection `key` describes.
async fn connect(key: PgKey, source_name: String) -> Result<PgConnection, ScalerError> {
    let fail = |message: String| ScalerError::Source {
        source_name: source_name.clone(),
        message,
    };
    let mut config = tokio_config(&key.params).map_err(fail)?;
    config.ssl_mode(key.tls.negotiation());
    if key.tls.mode == SslMode::Disable {
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| fail(describe(&e)))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        return Ok(PgConnection {
            client,
            tls: None,
            driver,
        });
    }
    let rustls = rustls_config(&key.tls).map_err(|e| fail(format!("TLS settings: {e}")))?;
    let tls = MakeRustlsConnect::new(rustls);
    let (client, connection) = config
        .connect(tls.clone())
        .await
        .map_err(|e| fail(describe(&e)))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(PgConnection {
        client,
        tls: Some(tls),
        driver,
    })
}

/// The rustls configuration for `tls`, on the ring provider with the system roots plus `ca`.
fn rustls_config(tls: &PgTls) -> Result<rustls::ClientConfig, String> {
    match tls.verify {
        Verify::Nothing => client_config(&ClientTls {
            unsafe_ssl: true,
            ..tls.client.clone()
        }),
        Verify::ChainAndName => client_config(&tls.client),
        Verify::Chain => {
            let mut config = client_config(&tls.client)?;
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if let Some(ca) = &tls.client.ca {
                for cert in pem_certificates(ca).map_err(|e| format!("ca: {e}"))? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("ca: unusable certificate: {e}"))?;
                }
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("certificate verification: {e}"))?;
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(ChainOnly(inner)));
            Ok(config)
        }
    }
}

/// libpq's verify-ca: the server's chain must lead to a trusted root, whatever name the
/// certificate is for. rustls checks the name only after the chain, so a name mismatch is
/// the one error forgiven.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A tokio-postgres error on one line: the server's severity, SQLSTATE and message, or the
/// client's chain of causes. Neither holds the password.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => error_chain(e),
    }
}

/// What the query's first row holds, as far as the value is concerned.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// The only column of the first row, as text (`None`: NULL).
    Value(Option<String>),
    /// No statement returned a row.
    NoRow,
    /// The first row has this many columns, not one.
    Columns(usize),
}

/// Runs `query` with the simple query protocol and reads its first row; later rows (and later
/// statements' rows) are not waited for.
async fn first_row(client: &Client, query: &str) -> Result<Answer, tokio_postgres::Error> {
    let messages = client.simple_query_raw(query).await?;
    let mut messages = std::pin::pin!(messages);
    while let Some(message) = messages.try_next().await? {
        if let SimpleQueryMessage::Row(row) = message {
            return Ok(match row.len() {
                1 => Answer::Value(row.get(0).map(str::to_string)),
                n => Answer::Columns(n),
            });
        }
    }
    Ok(Answer::NoRow)
}

/// The metric value of an answer, as KEDA reads it: the one column as a number (integers,
/// floats, numeric, and text holding a number; surrounding spaces are ignored). NULL, no row,
/// more than one column, or anything but a finite number is an error, never 0.
fn value_of(answer: Answer) -> Result<f64, String> {
    let text = match answer {
        Answer::Value(Some(text)) => text,
        Answer::Value(None) => {
            return Err(
                "the query returned NULL, not a number (COALESCE(..., 0) turns NULL into 0)".into(),
            );
        }
        Answer::NoRow => return Err("the query returned no row".into()),
        Answer::Columns(n) => {
            return Err(format!(
                "the query returned {n} columns; it must return exactly one"
            ));
        }
    };
    let shown = || {
        let mut s: String = text.chars().take(40).collect();
        if s.len() < text.len() {
            s.push('…');
        }
        format!("{s:?}")
    };
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!(
            "the query returned {}, not a finite number",
            shown()
        )),
        Err(_) => Err(format!("the query returned {}, not a number", shown())),
    }
}

/// A `postgresql` trigger.
pub struct PostgresScaler {
    config: PostgresConfig,
    lease: Lease<PgKey, PgConnection>,
}

impl fmt::Debug for PostgresScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresScaler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PostgresScaler {
    /// Parses the trigger and takes a lease on its server's shared connection; nothing connects
    /// until the first poll.
    pub fn new(trigger: &Trigger, pool: &PgPool) -> Result<Self, ConfigError> {
        let config = PostgresConfig::parse(trigger)?;
        Ok(Self {
            lease: pool.lease(config.key.clone()),
            config,
        })
    }

    fn source_error(&self, message: String) -> ScalerError {
        ScalerError::Source {
            source_name: self.config.source_name.clone(),
            message,
        }
    }

    /// The shared connection, opened again if the server closed it since the last poll.
    async fn connection(&self) -> Result<Arc<PgConnection>, ScalerError> {
        let source_name = &self.config.source_name;
        let open = || connect(self.config.key.clone(), source_name.clone());
        let conn = self.lease.client(source_name, TIMEOUT, open).await?;
        if !conn.client.is_closed() {
            return Ok(conn);
        }
        self.lease.invalidate(&conn).await;
        let open = || connect(self.config.key.clone(), source_name.clone());
        self.lease.client(source_name, TIMEOUT, open).await
    }

    async fn value(&self) -> Result<f64, ScalerError> {
        let conn = self.connection().await?;
        match tokio::time::timeout(TIMEOUT, first_row(&conn.client, &self.config.query)).await {
            Err(_) => {
                // The server may still be running it: cancel it, and give up the connection,
                // which would answer nothing else until it finishes.
                conn.cancel();
                self.lease.invalidate(&conn).await;
                Err(ScalerError::Timeout {
                    source_name: self.config.source_name.clone(),
                    timeout: TIMEOUT,
                })
            }
            Ok(Err(e)) => {
                // A server error leaves the connection usable, unless it left it in a failed
                // transaction (a query that opened one and failed), which every later query
                // on it would hit too.
                if conn.client.is_closed()
                    || e.as_db_error().is_none()
                    || e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION)
                {
                    self.lease.invalidate(&conn).await;
                }
                Err(self.source_error(describe(&e)))
            }
            Ok(Ok(answer)) => value_of(answer).map_err(|m| self.source_error(m)),
        }
    }
}

#[async_trait]
impl Scaler for PostgresScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.config.metric_name.clone(),
            target: self.config.target,
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
            active: value > self.config.activation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_pem;

    const QUERY: &str = "SELECT ceil(COUNT(*)::decimal / 16) FROM task_instance WHERE state='running' OR state='queued';";

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn trigger(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Trigger {
        Trigger {
            index: 0,
            trigger_type: "postgresql".into(),
            metadata: map(meta),
            auth_params: map(auth),
            resolved_env: map(&[
                ("AIRFLOW_CONN_AIRFLOW_DB", "postgresql://test@localhost"),
                ("PG_PASSWORD", "s3cr3t 'pw'\\"),
                (
                    "PG_URL",
                    "postgresql://app:s3cr3t%20pw@db.prod:6432,db2.prod/orders?sslmode=verify-full",
                ),
                (
                    "PG_PAIRS",
                    "host=db.prod port=6432 user=app password='s3cr3t pw' dbname=orders sslmode=require",
                ),
                ("GARBAGE", "s3cr3t"),
            ]),
            ..Default::default()
        }
    }

    fn parse(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Result<PostgresConfig, ConfigError> {
        PostgresConfig::parse(&trigger(meta, auth))
    }

    /// What a row of the table expects of a trigger that parses.
    #[derive(Debug)]
    struct Want {
        source: &'static str,
        mode: SslMode,
        verify: Verify,
        target: f64,
        activation: f64,
    }

    #[test]
    fn keda_documented_examples_and_bad_input() {
        let doc_params: &[(&str, &str)] = &[
            ("userName", "kedaUser"),
            ("passwordFromEnv", "PG_PASSWORD"),
            ("host", "postgres-svc.namespace.cluster.local"),
            ("port", "5432"),
            ("dbName", "test_db_name"),
            ("sslmode", "disable"),
            ("query", QUERY),
            ("targetQueryValue", "2.2"),
        ];
        /// (metadata, auth parameters, what parses or (key, problem))
        type Row<'a> = (
            Vec<(&'a str, &'a str)>,
            Vec<(&'a str, &'a str)>,
            Result<Want, (&'a str, &'a str)>,
        );
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
            let mut m: BTreeMap<&str, &str> = doc_params.iter().copied().collect();
            for &(k, v) in extra {
                if v.is_empty() {
                    m.remove(k);
                } else {
                    m.insert(k, v);
                }
            }
            m.into_iter().collect()
        };
        let rows: Vec<Row> = vec![
            // KEDA docs: a full connection string from the environment.
            (
                vec![
                    ("connectionFromEnv", "AIRFLOW_CONN_AIRFLOW_DB"),
                    ("query", QUERY),
                    ("targetQueryValue", "1.1"),
                    ("activationTargetQueryValue", "5"),
                ],
                vec![],
                Ok(Want {
                    source: "postgresql localhost:5432/test",
                    mode: SslMode::Prefer,
                    verify: Verify::Nothing,
                    target: 1.1,
                    activation: 5.0,
                }),
            ),
            // KEDA docs: each parameter.
            (
                with(&[]),
                vec![],
                Ok(Want {
                    source: "postgresql postgres-svc.namespace.cluster.local:5432/test_db_name",
                    mode: SslMode::Disable,
                    verify: Verify::Nothing,
                    target: 2.2,
                    activation: 0.0,
                }),
            ),
            // KEDA docs, authentication parameters: connection string authentication.
            (
                vec![("query", QUERY), ("targetQueryValue", "1")],
                vec![(
                    "connection",
                    "postgresql://airflow:pw@airflow-db.airflow:5432/airflow",
                )],
                Ok(Want {
                    source: "postgresql airflow-db.airflow:5432/airflow",
                    mode: SslMode::Prefer,
                    verify: Verify::Nothing,
                    target: 1.0,
                    activation: 0.0,
                }),
            ),
            // KEDA docs, authentication parameters: password authentication.
            (
                vec![("query", QUERY), ("targetQueryValue", "1")],
                vec![
                    ("host", "pg.db.svc.cluster.local"),
                    ("userName", "keda"),
                    ("password", "pw"),
                    ("port", "5432"),
                    ("dbName", "jobs"),
                    ("sslmode", "verify-full"),
                ],
                Ok(Want {
                    source: "postgresql pg.db.svc.cluster.local:5432/jobs",
                    mode: SslMode::VerifyFull,
                    verify: Verify::ChainAndName,
                    target: 1.0,
                    activation: 0.0,
                }),
            ),
            // KEDA docs, the azure-workload example's metadata (the podIdentity itself is
            // refused where the TriggerAuthentication is resolved, before any scaler).
            (
                vec![
                    ("host", "flex.postgres.database.azure.com"),
                    ("port", "5432"),
                    ("userName", "my-uami"),
                    ("dbName", "airflow"),
                    ("sslmode", "require"),
                    ("query", QUERY),
                    ("targetQueryValue", "1"),
                ],
                vec![],
                Ok(Want {
                    source: "postgresql flex.postgres.database.azure.com:5432/airflow",
                    mode: SslMode::Require,
                    verify: Verify::Nothing,
                    target: 1.0,
                    activation: 0.0,
                }),
            ),
            // Several hosts with one port (KEDA passes them to libpq's host list).
            (
                with(&[("host", "host1,host2"), ("port", "1234")]),
                vec![],
                Ok(Want {
                    source: "postgresql host1:1234,host2:1234/test_db_name",
                    mode: SslMode::Disable,
                    verify: Verify::Nothing,
                    target: 2.2,
                    activation: 0.0,
                }),
            ),
            // A URL with several hosts, a percent-encoded password and verify-full.
            (
                vec![
                    ("connectionFromEnv", "PG_URL"),
                    ("query", QUERY),
                    ("targetQueryValue", "10"),
                ],
                vec![],
                Ok(Want {
                    source: "postgresql db.prod:6432,db2.prod:5432/orders",
                    mode: SslMode::VerifyFull,
                    verify: Verify::ChainAndName,
                    target: 10.0,
                    activation: 0.0,
                }),
            ),
            // require with a CA checks the chain, as libpq does.
            (
                with(&[("sslmode", "require")]),
                vec![("ca", test_pem::CERT)],
                Ok(Want {
                    source: "postgresql postgres-svc.namespace.cluster.local:5432/test_db_name",
                    mode: SslMode::Require,
                    verify: Verify::Chain,
                    target: 2.2,
                    activation: 0.0,
                }),
            ),
            (
                with(&[("query", "")]),
                vec![],
                Err(("query", "required; set metadata \"query\"")),
            ),
            (
                with(&[("targetQueryValue", "")]),
                vec![],
                Err((
                    "targetQueryValue",
                    "required; set metadata \"targetQueryValue\"",
                )),
            ),
            (
                with(&[("targetQueryValue", "0")]),
                vec![],
                Err(("targetQueryValue", "expected a number above 0, got 0")),
            ),
            (
                with(&[("targetQueryValue", "five")]),
                vec![],
                Err(("targetQueryValue", "expected a number, got \"five\"")),
            ),
            (
                with(&[("activationTargetQueryValue", "-1")]),
                vec![],
                Err((
                    "activationTargetQueryValue",
                    "expected a finite number >= 0, got -1",
                )),
            ),
            (
                with(&[("host", "")]),
                vec![],
                Err((
                    "host",
                    "required; set metadata \"host\" or authentication parameter \"host\", or give a whole connection string (authentication parameter \"connection\" or metadata \"connectionFromEnv\")",
                )),
            ),
            (
                with(&[("sslmode", "")]),
                vec![],
                Err((
                    "sslmode",
                    "required; set metadata \"sslmode\" or authentication parameter \"sslmode\", or give a whole connection string (authentication parameter \"connection\" or metadata \"connectionFromEnv\")",
                )),
            ),
            (
                with(&[("sslmode", "required")]),
                vec![],
                Err((
                    "sslmode",
                    "expected one of disable, allow, prefer, require, verify-ca, verify-full, got \"required\"",
                )),
            ),
            (
                with(&[("port", "test_port")]),
                vec![],
                Err((
                    "port",
                    "expected a port number, or one per host (comma-separated), got \"test_port\"",
                )),
            ),
            (
                with(&[("host", "a,b,c"), ("port", "1,2")]),
                vec![],
                Err((
                    "host",
                    "expected one port, or one per host (3 hosts, 2 ports)",
                )),
            ),
            (
                with(&[("host", "/var/run/postgresql")]),
                vec![],
                Err((
                    "host",
                    "a Unix-domain socket cannot be reached from ebb's pod; name a host",
                )),
            ),
            (
                vec![
                    ("connectionFromEnv", "GARBAGE"),
                    ("query", QUERY),
                    ("targetQueryValue", "1"),
                ],
                vec![],
                Err((
                    "connectionFromEnv",
                    "expected key=value pairs separated by spaces, or a postgresql:// URL",
                )),
            ),
            (
                vec![
                    ("connectionFromEnv", "UNSET_VAR"),
                    ("query", QUERY),
                    ("targetQueryValue", "1"),
                ],
                vec![],
                Err((
                    "connectionFromEnv",
                    "environment variable \"UNSET_VAR\" is not set in the scale target's container",
                )),
            ),
            (
                vec![("query", QUERY), ("targetQueryValue", "1")],
                vec![("connection", "postgresql://localhost:5432")],
                Err(("connection", "no user is named in the connection string")),
            ),
            (
                vec![("query", QUERY), ("targetQueryValue", "1")],
                vec![("connection", "postgresql://u:s3cr3t@h:99999/db")],
                Err((
                    "connection",
                    "invalid value for option `port` in the connection string",
                )),
            ),
            (
                vec![("query", QUERY), ("targetQueryValue", "1")],
                vec![(
                    "connection",
                    "host=h user=u password=s3cr3t sslmode=required",
                )],
                Err((
                    "connection",
                    "sslmode in the connection string: expected one of disable, allow, prefer, require, verify-ca, verify-full",
                )),
            ),
            (
                vec![("query", QUERY), ("targetQueryValue", "1")],
                vec![("connection", "host=h user=u password='s3cr3t")],
                Err(("connection", "a quoted value is not closed")),
            ),
            (
                vec![("query", QUERY), ("targetQueryValue", "1")],
                vec![(
                    "connection",
                    "host=h user=u password=s3cr3t sslmode=verify-full sslrootcert=/etc/ssl/pg.pem",
                )],
                Err((
                    "connection",
                    "sslrootcert in the connection string: ebb reads no file of its own pod for a trigger; give the CA certificate(s) as PEM in the TriggerAuthentication parameter \"ca\" (or sslrootcert=system for the system's roots)",
                )),
            ),
            (
                vec![("query", QUERY), ("targetQueryValue", "1")],
                vec![(
                    "connection",
                    "host=h user=u password=s3cr3t sslmode=require sslrootcert=system",
                )],
                Err((
                    "connection",
                    "sslrootcert=system in the connection string requires sslmode verify-full",
                )),
            ),
            (
                vec![("query", QUERY), ("targetQueryValue", "1")],
                vec![("connection", "host=h user=u sslkey=/k.pem")],
                Err((
                    "connection",
                    "sslkey in the connection string: ebb reads no file of its own pod for a trigger; give a client certificate and key as PEM in the TriggerAuthentication parameters \"cert\" and \"key\"",
                )),
            ),
            (
                vec![("query", QUERY), ("targetQueryValue", "1")],
                vec![("connection", "host=h user=u s3cr3t-key=1")],
                Err((
                    "connection",
                    "a parameter in the connection string is neither a connection parameter nor a server setting name",
                )),
            ),
            (
                with(&[]),
                vec![("cert", test_pem::CERT)],
                Err(("key", "required when cert is set")),
            ),
            (
                with(&[]),
                vec![("ca", "not a certificate")],
                Err(("ca", "expected PEM certificates, found none")),
            ),
        ];
        for (meta, auth, want) in rows {
            let got = parse(&meta, &auth);
            let label = format!(
                "{meta:?} {:?}",
                auth.iter().map(|(k, _)| k).collect::<Vec<_>>()
            );
            match (got, want) {
                (Ok(c), Ok(want)) => {
                    assert_eq!(c.source_name, want.source, "{label}");
                    assert_eq!(
                        (c.key.tls.mode, c.key.tls.verify),
                        (want.mode, want.verify),
                        "{label}"
                    );
                    assert_eq!((c.target, c.activation), (want.target, want.activation));
                    assert_eq!(c.metric_name, "s0-postgresql");
                    assert_eq!(c.metric_type, MetricTargetType::AverageValue);
                    assert_eq!(c.query, meta.iter().find(|(k, _)| *k == "query").unwrap().1);
                    let shown = format!("{c:?}");
                    assert!(
                        !shown.contains("s3cr3t") && !shown.contains("pw"),
                        "{shown}"
                    );
                }
                (Err(e), Err((key, problem))) => {
                    assert_eq!(
                        (e.key.as_str(), e.problem.as_str()),
                        (key, problem),
                        "{label}"
                    );
                    assert!(!e.to_string().contains("s3cr3t"), "{e}");
                }
                (got, want) => panic!("{label}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn metric_type_and_index_name_the_metric_as_keda() {
        let mut t = trigger(
            &[
                ("connectionFromEnv", "AIRFLOW_CONN_AIRFLOW_DB"),
                ("query", "SELECT 1"),
                ("targetQueryValue", "5"),
            ],
            &[],
        );
        t.index = 1;
        t.metric_type = Some("Value".into());
        let c = PostgresConfig::parse(&t).unwrap();
        assert_eq!(c.metric_name, "s1-postgresql");
        assert_eq!(c.metric_type, MetricTargetType::Value);
        t.metric_type = Some("Utilization".into());
        let e = PostgresConfig::parse(&t).unwrap_err();
        assert_eq!(
            e.problem,
            "expected AverageValue or Value for a postgresql trigger, got \"Utilization\""
        );
    }

    #[test]
    fn connection_strings_read_as_libpq_reads_them() {
        // The URL and key=value forms of one server give the same parameters.
        let url = parse_conninfo(
            "postgresql://app:p%40ss%20w%27rd@db.prod:6432/orders?sslmode=require&application_name=x",
        )
        .unwrap();
        let pairs = parse_conninfo(
            r"host=db.prod port = 6432 user=app password='p@ss w\'rd' dbname=orders sslmode=require application_name=x",
        )
        .unwrap();
        assert_eq!(url, pairs);
        assert_eq!(url["password"], "p@ss w'rd");
        // An unencoded @ in the password, IPv6 hosts with and without a port, no database.
        let url = parse_conninfo("postgres://u:a@b@[::1]:7000,[fd00::2]").unwrap();
        assert_eq!(
            url,
            map(&[
                ("user", "u"),
                ("password", "a@b"),
                ("host", "::1,fd00::2"),
                ("port", "7000,5432"),
            ])
        );
        assert_eq!(
            parse_conninfo(r"host=h password=a\ b user=").unwrap(),
            map(&[("host", "h"), ("password", "a b"), ("user", "")])
        );
        for bad in [
            "",
            "justapassword",
            "=x",
            "host",
            "postgresql://h/db?novalue",
            "postgresql://[::1/db",
        ] {
            assert!(parse_conninfo(bad).is_err(), "{bad:?}");
        }

        // Settling: pgx's `database`, server settings into options, pgx-only keys dropped,
        // application_name defaulted, an empty password dropped.
        let t = trigger(&[], &[]);
        let (params, tls) = settle(
            &t,
            Origin::ConnectionString("connection"),
            parse_conninfo(
                "postgresql://u:@h/?database=jobs&search_path=my schema&statement_cache_capacity=0&pool_max_conns=4&sslsni=1",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            params,
            map(&[
                ("application_name", "ebb"),
                ("dbname", "jobs"),
                ("host", "h"),
                ("options", r"-c search_path=my\ schema"),
                ("port", "5432"),
                ("user", "u"),
            ])
        );
        assert_eq!((tls.mode, tls.verify), (SslMode::Prefer, Verify::Nothing));
        let config = tokio_config(&params).unwrap();
        assert_eq!(config.get_options(), Some(r"-c search_path=my\ schema"));
        assert_eq!(config.get_dbname(), Some("jobs"));

        // Every sslmode as libpq means it, and sslrootcert=system.
        for (conninfo, mode, verify, negotiation) in [
            (
                "sslmode=disable",
                SslMode::Disable,
                Verify::Nothing,
                "Disable",
            ),
            ("sslmode=allow", SslMode::Allow, Verify::Nothing, "Prefer"),
            ("sslmode=prefer", SslMode::Prefer, Verify::Nothing, "Prefer"),
            (
                "sslmode=require",
                SslMode::Require,
                Verify::Nothing,
                "Require",
            ),
            (
                "sslmode=verify-ca",
                SslMode::VerifyCa,
                Verify::Chain,
                "Require",
            ),
            (
                "sslmode=verify-full",
                SslMode::VerifyFull,
                Verify::ChainAndName,
                "Require",
            ),
            (
                "sslrootcert=system",
                SslMode::VerifyFull,
                Verify::ChainAndName,
                "Require",
            ),
        ] {
            let params = parse_conninfo(&format!("host=h user=u {conninfo}")).unwrap();
            let (_, tls) = settle(&t, Origin::ConnectionString("connection"), params).unwrap();
            assert_eq!((tls.mode, tls.verify), (mode, verify), "{conninfo}");
            assert_eq!(
                format!("{:?}", tls.negotiation()),
                negotiation,
                "{conninfo}"
            );
        }
    }

    #[test]
    fn equal_settings_share_a_connection_and_nothing_shows_the_password() {
        let pool = PgPool::new();
        let meta = |conn: &'static str| {
            vec![
                ("connectionFromEnv", conn),
                ("query", "SELECT 1"),
                ("targetQueryValue", "1"),
            ]
        };
        let by_keys = [
            ("host", "db.prod"),
            ("port", "6432"),
            ("userName", "app"),
            ("dbName", "orders"),
            ("sslmode", "require"),
            ("query", "SELECT count(*) FROM jobs"),
            ("targetQueryValue", "3"),
        ];
        let a = PostgresScaler::new(&trigger(&meta("PG_PAIRS"), &[]), &pool).unwrap();
        let b =
            PostgresScaler::new(&trigger(&by_keys, &[("password", "s3cr3t pw")]), &pool).unwrap();
        let url = "postgresql://app:s3cr3t%20pw@db.prod:6432/orders?sslmode=require";
        let c = PostgresScaler::new(
            &trigger(
                &[("query", "SELECT 2"), ("targetQueryValue", "1")],
                &[("connection", url)],
            ),
            &pool,
        )
        .unwrap();
        assert!(a.config.key == b.config.key && b.config.key == c.config.key);
        assert_eq!(pool.len(), 1, "one connection for the three");
        // Another password, another connection; building never connects.
        let _d = PostgresScaler::new(&trigger(&by_keys, &[("password", "other")]), &pool).unwrap();
        assert_eq!((pool.len(), pool.connected()), (2, 0));
        let shown = format!("{a:?} {b:?} {c:?} {pool:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert_eq!(a.config.source_name, "postgresql db.prod:6432/orders");
        // The registry builds it too.
        let registry = Registry::with_builtins();
        let scaler = registry.build(&trigger(&meta("PG_URL"), &[])).unwrap();
        assert_eq!(
            scaler.metric_specs(),
            vec![MetricSpec::External {
                name: "s0-postgresql".into(),
                target: 1.0,
                target_type: MetricTargetType::AverageValue,
            }]
        );
    }

    #[test]
    fn query_answers_convert_like_keda() {
        let value = |text: &str| value_of(Answer::Value(Some(text.to_string())));
        // int2/int4/int8, float4/float8, numeric and text as the server prints them.
        for (text, want) in [
            ("12", 12.0),
            ("-3", -3.0),
            ("9223372036854775807", 9_223_372_036_854_775_807.0),
            ("1.1", 1.1),
            ("1e+20", 1e20),
            ("12.500", 12.5),
            ("0.000001", 0.000_001),
            (" 7 ", 7.0),
        ] {
            assert_eq!(value(text), Ok(want), "{text}");
        }
        for (text, problem) in [
            ("t", "the query returned \"t\", not a number"),
            ("abc", "the query returned \"abc\", not a number"),
            ("", "the query returned \"\", not a number"),
            ("NaN", "the query returned \"NaN\", not a finite number"),
            (
                "Infinity",
                "the query returned \"Infinity\", not a finite number",
            ),
            (
                "-Infinity",
                "the query returned \"-Infinity\", not a finite number",
            ),
            (
                "2024-01-01 00:00:00+00 and a long tail of text",
                "the query returned \"2024-01-01 00:00:00+00 and a long tail o…\", not a number",
            ),
        ] {
            assert_eq!(value(text), Err(problem.to_string()), "{text}");
        }
        assert_eq!(
            value_of(Answer::Value(None)),
            Err(
                "the query returned NULL, not a number (COALESCE(..., 0) turns NULL into 0)".into()
            )
        );
        assert_eq!(
            value_of(Answer::NoRow),
            Err("the query returned no row".into())
        );
        assert_eq!(
            value_of(Answer::Columns(2)),
            Err("the query returned 2 columns; it must return exactly one".into())
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// No connection string or key makes the parser panic, and no error repeats a secret.
        #[test]
        fn no_input_panics_or_leaks(
            conninfo in proptest::prop_oneof![
                proptest::prelude::any::<String>(),
                "(postgres(ql)?://)?[a-z@:/?=&%,\\[\\]' .0-9-]{0,40}",
                "[a-z_]{1,12}=('[^']{0,8}'|[a-z0-9/]{0,8})( [a-z_]{1,12}=[a-z0-9-]{0,12}){0,4}",
            ],
            host in "[a-z0-9,/:.\\[\\] ]{0,16}",
            port in "[0-9,a ]{0,8}",
            sslmode in "(disable|allow|prefer|require|verify-ca|verify-full|x|)",
            use_string in proptest::prelude::any::<bool>(),
        ) {
            let mut auth = vec![("password", "s3cr3t"), ("ca", "x")];
            if use_string {
                auth.push(("connection", conninfo.as_str()));
            }
            let meta = [
                ("host", host.as_str()),
                ("port", port.as_str()),
                ("userName", "u"),
                ("dbName", "d"),
                ("sslmode", sslmode.as_str()),
                ("query", "SELECT 1"),
                ("targetQueryValue", "1"),
            ];
            if let Err(e) = parse(&meta, &auth) {
                proptest::prop_assert!(!e.to_string().contains("s3cr3t"), "{}", e);
            }
            let _ = parse_conninfo(&conninfo);
        }
    }
}
