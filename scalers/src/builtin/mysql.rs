//! `mysql`: the number a SQL query returns, as KEDA 2.20's MySQL scaler reads it.
//!
//! The server is named by a Go MySQL DSN (`connectionString`, as KEDA's Go driver reads it) or
//! by `host`, `port`, `username`, `password` and `dbName`. Triggers on the same server, database,
//! user, password and TLS settings share one small `mysql_async` pool (at most
//! [`POOL_MAX_CONNECTIONS`] connections, one kept open between polls) through a
//! [`SharedPool`](crate::pool::SharedPool); the pool drops connections the server closed, and a
//! connection that cannot be had, breaks or hangs replaces the whole pool at the next poll, with
//! the shared backoff. Each poll runs the query with the text protocol (as KEDA's driver does for a query
//! without arguments) and reads the first column of the first row as a number: no row, NULL or
//! text that is not a number is an error, never 0.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{DriverError, OptsBuilder, PoolConstraints, PoolOpts, Row, SslOpts};

use crate::error::{ConfigError, ScalerError};
use crate::metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
use crate::pool::{Lease, SharedPool};
use crate::registry::Registry;
use crate::scaler::Scaler;
use crate::tls::pem_certificates;
use crate::trigger::{MetricTargetType, Source, Trigger};

/// Limit for connecting and for each query.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Most connections one shared pool opens at once; further polls wait for a free one.
pub const POOL_MAX_CONNECTIONS: usize = 4;

/// One connection kept open between polls, at most [`POOL_MAX_CONNECTIONS`] at once.
const POOL_CONSTRAINTS: PoolConstraints = match PoolConstraints::new(1, POOL_MAX_CONNECTIONS) {
    Some(constraints) => constraints,
    None => panic!("pool constraints: min above max"),
};

/// MySQL's port, used when a DSN address has none.
const DEFAULT_PORT: u16 = 3306;

/// Connections beyond the one kept open are closed after idling this long.
const IDLE_CONNECTION_TTL: Duration = Duration::from_secs(60);

/// TCP keepalive on every connection, so a dead peer is noticed between polls.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// How a connection is secured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TlsMode {
    /// Plain TCP.
    Off,
    /// TLS, the server's certificate verified against the system roots, the Mozilla roots and
    /// `ca` (PEM), and its name against the host (`tls: enable`, DSN `tls=true`).
    Verify { ca: Option<String> },
    /// TLS without verifying the server's certificate (DSN `tls=skip-verify`).
    SkipVerify,
    /// TLS without verification if the server offers it, plain TCP otherwise (DSN
    /// `tls=preferred`).
    Preferred,
}

impl TlsMode {
    fn name(&self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::Verify { .. } => "verify",
            TlsMode::SkipVerify => "skip-verify",
            TlsMode::Preferred => "preferred",
        }
    }
}

/// Where to connect and as whom: the key of a shared pool. Holds the password: its `Debug`
/// shows the server and settings only.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MySqlKey {
    host: String,
    port: u16,
    /// Empty: no user name is sent (as KEDA's driver does).
    user: String,
    /// Empty: no password.
    password: String,
    /// Empty: no default database.
    db_name: String,
    tls: TlsMode,
    /// DSN `allowCleartextPasswords=true`.
    cleartext_passwords: bool,
    /// `SET name=value` for the DSN's system variables, run on every new connection.
    setup: Vec<String>,
}

impl fmt::Debug for MySqlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlKey")
            .field("server", &self.source_name())
            .field("user", &self.user)
            .field("password", &!self.password.is_empty())
            .field("tls", &self.tls.name())
            .field("cleartext_passwords", &self.cleartext_passwords)
            .field("setup", &self.setup.len())
            .finish()
    }
}

impl MySqlKey {
    /// How errors name the server: `mysql host:port/db`.
    pub fn source_name(&self) -> String {
        format!(
            "mysql {}/{}",
            authority(&self.host, self.port),
            self.db_name
        )
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The pool every `mysql` trigger of one registry shares.
pub type MySqlPool = SharedPool<MySqlKey, mysql_async::Pool>;

/// Registers `mysql`. Every trigger built from one registry shares that registry's pool.
pub fn register(registry: &mut Registry) {
    let pool = MySqlPool::new();
    registry.register("mysql", move |t| Ok(Box::new(MySqlScaler::new(t, &pool)?)));
}

/// A Go MySQL DSN (`[user[:password]@][net[(addr)]]/dbname[?param=value&...]`), read as the
/// Go driver KEDA uses reads it, turned into what ebb connects with. Holds the password: its
/// `Debug` leaves it out.
#[derive(Clone, PartialEq)]
struct Dsn {
    user: String,
    password: String,
    host: String,
    port: u16,
    db_name: String,
    /// The `tls` parameter, if given.
    tls: Option<TlsMode>,
    cleartext_passwords: bool,
    setup: Vec<String>,
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dsn")
            .field("user", &self.user)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db_name", &self.db_name)
            .field("tls", &self.tls.as_ref().map(TlsMode::name))
            .finish_non_exhaustive()
    }
}

/// What every DSN error starts with. No error repeats the DSN, which holds the password.
const DSN_EXPECTED: &str = "expected a Go MySQL DSN such as user:password@tcp(host:3306)/dbname";

/// Parameters of the Go driver that only change its own behaviour (time parsing, timeouts,
/// interpolation, character sets...): accepted and ignored, as they do not change the number a
/// query returns. Every other parameter but `tls` and `allowCleartextPasswords` is a system
/// variable, set on each connection as the Go driver sets it.
const DRIVER_ONLY_PARAMS: &[&str] = &[
    "allowAllFiles",
    "allowFallbackToPlaintext",
    "allowNativePasswords",
    "allowOldPasswords",
    "charset",
    "checkConnLiveness",
    "clientFoundRows",
    "collation",
    "columnsWithAlias",
    "compress",
    "connectionAttributes",
    "interpolateParams",
    "loc",
    "maxAllowedPacket",
    "multiStatements",
    "parseTime",
    "readTimeout",
    "rejectReadOnly",
    "serverPubKey",
    "timeTruncate",
    "timeout",
    "writeTimeout",
];

/// Go's `readBool` for DSN parameters.
fn dsn_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "true" | "TRUE" | "True" => Some(true),
        "0" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; a stray `%` is an error.
fn query_unescape(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `host[:port]` or `[ipv6][:port]` (a bare IPv6 address has no port); the port defaults to
/// 3306.
fn split_host_port(addr: &str) -> Result<(String, u16), String> {
    let bad_port = || format!("{DSN_EXPECTED}; the port in tcp(host:port) is not a port number");
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(bad_port)
    };
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| {
            format!("{DSN_EXPECTED}; the IPv6 address in tcp([address]:port) is not closed with ]")
        })?;
        let port = match &rest[end + 1..] {
            "" => DEFAULT_PORT,
            after => parse_port(after.strip_prefix(':').ok_or_else(bad_port)?)?,
        };
        (&rest[..end], port)
    } else {
        match addr.matches(':').count() {
            0 => (addr, DEFAULT_PORT),
            1 => {
                let (host, port) = addr.split_once(':').unwrap_or((addr, ""));
                (host, parse_port(port)?)
            }
            // A bare IPv6 address.
            _ => (addr, DEFAULT_PORT),
        }
    };
    if host.is_empty() {
        return Err(format!(
            "{DSN_EXPECTED}; the host is missing (ebb connects to the server named in tcp(host:port))"
        ));
    }
    Ok((host.to_string(), port))
}

/// Parses a Go MySQL DSN as the Go driver does: the last `/` ends the address part, the last
/// `@` before it ends the credentials, the first `:` splits user from password (so a password
/// may hold `@`, `:` and `/`), the address is in `net(...)`, and parameters follow `?`.
/// Errors say what is wrong without repeating the text.
fn parse_dsn(text: &str) -> Result<Dsn, String> {
    let text = text.trim();
    let slash = text
        .rfind('/')
        .ok_or_else(|| format!("{DSN_EXPECTED}; the slash before the database name is missing"))?;
    let (left, right) = (&text[..slash], &text[slash + 1..]);
    let (credentials, net_addr) = match left.rfind('@') {
        Some(at) => (Some(&left[..at]), &left[at + 1..]),
        None => (None, left),
    };
    let (user, password) = match credentials {
        None => ("", ""),
        Some(c) => c.split_once(':').unwrap_or((c, "")),
    };
    let (net, addr) = match net_addr.find('(') {
        None => (net_addr, ""),
        Some(open) => {
            let inner = &net_addr[open + 1..];
            let Some(addr) = inner.strip_suffix(')') else {
                return Err(if inner.contains(')') {
                    format!(
                        "{DSN_EXPECTED}; text follows the address before the slash (a parameter value with an unescaped /?)"
                    )
                } else {
                    format!("{DSN_EXPECTED}; the address in tcp(...) is not closed with )")
                });
            };
            (&net_addr[..open], addr)
        }
    };
    if !matches!(net, "" | "tcp" | "tcp4" | "tcp6") {
        // Quoted only when it is one of Go's network names: text before `(` may hold part of a
        // password with a `/` in it.
        let known = ["unix", "unixgram", "unixpacket", "udp", "udp4", "udp6"];
        let shown = if known.contains(&net) {
            format!(" {net:?}")
        } else {
            String::new()
        };
        return Err(format!(
            "{DSN_EXPECTED}; network{shown} is not supported: ebb connects over tcp(host:port)"
        ));
    }
    let (host, port) = split_host_port(addr)?;
    let (db_name, params) = match right.split_once('?') {
        Some((db, params)) => (db, params),
        None => (right, ""),
    };

    let mut tls = None;
    let mut cleartext_passwords = false;
    let mut setup = Vec::new();
    for param in params.split('&') {
        // As in the Go driver, a parameter without `=` is skipped.
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        match name {
            "tls" => {
                tls = Some(
                    match (dsn_bool(value), value.to_ascii_lowercase().as_str()) {
                        (Some(true), _) => TlsMode::Verify { ca: None },
                        (Some(false), _) => TlsMode::Off,
                        (None, "skip-verify") => TlsMode::SkipVerify,
                        (None, "preferred") => TlsMode::Preferred,
                        _ => {
                            return Err(
                            "parameter tls: expected true, false, skip-verify or preferred (ebb has no registered TLS configurations; use tls: enable and ca for a CA of your own)"
                                .to_string(),
                        );
                        }
                    },
                );
            }
            "allowCleartextPasswords" => {
                cleartext_passwords = dsn_bool(value).ok_or_else(|| {
                    "parameter allowCleartextPasswords: expected true or false".to_string()
                })?;
            }
            name if DRIVER_ONLY_PARAMS.contains(&name) => {}
            name => {
                let plain = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@'));
                if !plain {
                    return Err(
                        "a parameter name is neither a Go driver option nor a system variable name"
                            .to_string(),
                    );
                }
                let value = query_unescape(value).ok_or_else(|| {
                    format!("parameter {name}: the value is not percent-encoded correctly")
                })?;
                setup.push(format!("SET {name}={value}"));
            }
        }
    }
    Ok(Dsn {
        user: user.to_string(),
        password: password.to_string(),
        host,
        port,
        db_name: db_name.to_string(),
        tls,
        cleartext_passwords,
        setup,
    })
}

/// The metric's database part for a connection string, as KEDA derives it: everything after
/// the last `/` (parameters included).
fn dsn_metric_db(text: &str) -> &str {
    text.trim().rsplit('/').next().unwrap_or("")
}

/// Parsed `mysql` trigger metadata.
#[derive(Clone, PartialEq)]
struct MySqlConfig {
    key: MySqlKey,
    query: String,
    query_value: f64,
    activation_query_value: f64,
    metric_type: MetricTargetType,
    metric_name: String,
}

impl fmt::Debug for MySqlConfig {
    // The key's Debug leaves the password out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlConfig")
            .field("key", &self.key)
            .field("query", &self.query)
            .field("query_value", &self.query_value)
            .field("activation_query_value", &self.activation_query_value)
            .field("metric_type", &self.metric_type)
            .field("metric_name", &self.metric_name)
            .finish()
    }
}

/// KEDA's order for the connection string: the TriggerAuthentication, then
/// `connectionStringFromEnv`; never plain metadata.
const CONNECTION_STRING_SOURCES: &[Source] = &[Source::Auth, Source::Env];
/// KEDA's order for the password: the TriggerAuthentication, then `passwordFromEnv`.
const PASSWORD_SOURCES: &[Source] = &[Source::Auth, Source::Env];
/// KEDA's order for `host`, `port` and `username`: metadata, authentication, then `*FromEnv`.
const SERVER_SOURCES: &[Source] = &[Source::Metadata, Source::Auth, Source::Env];
/// `dbName`, `tls` and `ca`: metadata or authentication.
const METADATA_OR_AUTH: &[Source] = &[Source::Metadata, Source::Auth];

impl MySqlConfig {
    fn parse(t: &Trigger) -> Result<Self, ConfigError> {
        // KEDA ignores these in plain metadata. Given there alone, they would be lost, so that
        // is an error saying where they belong; given in their place as well, the metadata copy
        // is ignored, as in KEDA, so such a manifest keeps working.
        for (key, sources, instead) in [
            (
                "connectionString",
                CONNECTION_STRING_SOURCES,
                "the authentication parameter connectionString or metadata connectionStringFromEnv",
            ),
            (
                "password",
                PASSWORD_SOURCES,
                "the authentication parameter password or metadata passwordFromEnv",
            ),
        ] {
            // (A lookup that fails is reported below, where the key is read for real.)
            if t.metadata.get(key).is_some_and(|v| !v.trim().is_empty())
                && t.lookup(key, sources).ok().flatten().is_none()
            {
                return Err(t.error(
                    key,
                    format!(
                        "not read from metadata (KEDA does not read it there either: it is a secret); set {instead}"
                    ),
                ));
            }
        }
        let query = t.required("query", &[Source::Metadata])?.value;
        t.required("queryValue", &[Source::Metadata])?;
        let query_value = t.threshold_or("queryValue", 0.0)?;
        if query_value == 0.0 {
            return Err(t.error("queryValue", "expected a number above 0"));
        }
        let activation_query_value = t.threshold_or("activationQueryValue", 0.0)?;
        let metric_type = t.metric_type(
            &[MetricTargetType::AverageValue, MetricTargetType::Value],
            MetricTargetType::AverageValue,
        )?;

        // `tls: enable|disable` (any case) with an optional PEM `ca`.
        let tls_key = match t.lookup("tls", METADATA_OR_AUTH)? {
            None => None,
            Some(_) => {
                Some(t.one_of_from("tls", METADATA_OR_AUTH, &["enable", "disable"], "disable")?)
            }
        };
        let tls_setting = match tls_key {
            None => None,
            Some("enable") => {
                let ca = t.lookup("ca", METADATA_OR_AUTH)?.map(|f| f.value);
                if let Some(ca) = &ca {
                    pem_certificates(ca).map_err(|p| t.error("ca", p.to_string()))?;
                }
                Some(TlsMode::Verify { ca })
            }
            Some(_) => Some(TlsMode::Off),
        };

        let (key, metric_db) = match t.lookup("connectionString", CONNECTION_STRING_SOURCES)? {
            Some(found) => {
                let dsn = parse_dsn(&found.value).map_err(|p| t.error("connectionString", p))?;
                let tls = match (dsn.tls, tls_setting) {
                    (Some(_), Some(_)) => {
                        return Err(t.error(
                            "tls",
                            "set TLS in one place: the connection string's tls= parameter or tls, not both",
                        ));
                    }
                    (Some(mode), None) | (None, Some(mode)) => mode,
                    (None, None) => TlsMode::Off,
                };
                let key = MySqlKey {
                    host: dsn.host,
                    port: dsn.port,
                    user: dsn.user,
                    password: dsn.password,
                    db_name: dsn.db_name,
                    tls,
                    cleartext_passwords: dsn.cleartext_passwords,
                    setup: dsn.setup,
                };
                (key, dsn_metric_db(&found.value).to_string())
            }
            None => {
                let host = t.lookup("host", SERVER_SOURCES)?.ok_or_else(|| {
                    t.error(
                        "host",
                        "required; set the authentication parameter connectionString (or metadata connectionStringFromEnv), or host, port, username and dbName",
                    )
                })?;
                let host = host.value.trim();
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                if host.is_empty()
                    || host
                        .chars()
                        .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '(' | ')' | '?'))
                {
                    return Err(t.error("host", "expected a host name or IP address"));
                }
                let port: u16 = t.parse_required("port", SERVER_SOURCES, "a port number")?;
                if port == 0 {
                    return Err(t.error("port", "expected a port number above 0"));
                }
                let db_name = t
                    .lookup("dbName", METADATA_OR_AUTH)?
                    .map(|f| f.value)
                    .unwrap_or_default();
                let key = MySqlKey {
                    host: host.to_string(),
                    port,
                    user: t
                        .lookup("username", SERVER_SOURCES)?
                        .map(|f| f.value)
                        .unwrap_or_default(),
                    password: t
                        .lookup("password", PASSWORD_SOURCES)?
                        .map(|f| f.value)
                        .unwrap_or_default(),
                    db_name: db_name.clone(),
                    tls: tls_setting.unwrap_or(TlsMode::Off),
                    cleartext_passwords: false,
                    setup: Vec::new(),
                };
                (key, db_name)
            }
        };
        Ok(Self {
            key,
            query,
            query_value,
            activation_query_value,
            metric_type,
            metric_name: metric_name(t.index, &format!("mysql-{metric_db}")),
        })
    }
}

/// The system's trusted roots that rustls accepts, in DER (an unusable one would fail every
/// connect, so it is left out, as the other scalers do).
fn system_roots() -> Vec<Vec<u8>> {
    rustls_native_certs::load_native_certs()
        .certs
        .into_iter()
        .filter(|cert| rustls::RootCertStore::empty().add(cert.clone()).is_ok())
        .map(|cert| cert.to_vec())
        .collect()
}

/// `mysql_async`'s TLS options for `mode`; `None` for plain TCP. Verification uses the
/// system roots and `ca` (PEM) on top of the Mozilla roots built into `mysql_async`.
fn ssl_opts(mode: &TlsMode) -> Option<SslOpts> {
    match mode {
        TlsMode::Off => None,
        TlsMode::Verify { ca } => {
            let mut roots = system_roots();
            if let Some(ca) = ca {
                roots.push(ca.as_bytes().to_vec());
            }
            Some(SslOpts::default().with_root_certs(roots.into_iter().map(Into::into).collect()))
        }
        TlsMode::SkipVerify | TlsMode::Preferred => {
            Some(SslOpts::default().with_danger_accept_invalid_certs(true))
        }
    }
}

/// The connection options for `key` with TLS `mode`.
fn opts(key: &MySqlKey, mode: &TlsMode) -> mysql_async::Opts {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let pool_opts = PoolOpts::default()
        .with_constraints(POOL_CONSTRAINTS)
        .with_inactive_connection_ttl(IDLE_CONNECTION_TTL)
        // Session state is not reset between polls (one round trip less), as database/sql
        // does not reset it either.
        .with_reset_connection(false);
    OptsBuilder::default()
        .ip_or_hostname(key.host.clone())
        .tcp_port(key.port)
        .user(non_empty(&key.user))
        .pass(non_empty(&key.password))
        .db_name(non_empty(&key.db_name))
        // Never switch to a local Unix socket: the server is the one named.
        .prefer_socket(false)
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .enable_cleartext_plugin(key.cleartext_passwords)
        .setup(key.setup.clone())
        .ssl_opts(ssl_opts(mode))
        .pool_opts(pool_opts)
        .into()
}

/// A `mysql_async` error as one line, without the password.
fn describe(e: &mysql_async::Error, password: &str) -> String {
    // mysql_async repeats the kind of I/O errors ("Input/output error: Input/output error: ...").
    let text = crate::error::error_chain(e).replace(
        "Input/output error: Input/output error: ",
        "Input/output error: ",
    );
    if password.is_empty() {
        text
    } else {
        text.replace(password, "<password>")
    }
}

/// A pool for `key`, checked by taking one connection (it stays open, idle, in the pool).
async fn connect(key: MySqlKey, source_name: String) -> Result<mysql_async::Pool, ScalerError> {
    let fail = |e: mysql_async::Error| ScalerError::Source {
        source_name: source_name.clone(),
        message: format!("connecting: {}", describe(&e, &key.password)),
    };
    if key.tls != TlsMode::Off {
        // mysql_async builds its rustls configuration on the process's default provider:
        // ring, as everywhere in ebb (a no-op once a default is installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let first = match &key.tls {
        TlsMode::Preferred => TlsMode::SkipVerify,
        mode => mode.clone(),
    };
    let pool = mysql_async::Pool::new(opts(&key, &first));
    match pool.get_conn().await {
        Ok(conn) => {
            drop(conn);
            Ok(pool)
        }
        // `preferred`: a server without TLS is used in plain TCP, as the Go driver does.
        Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer))
            if key.tls == TlsMode::Preferred =>
        {
            let pool = mysql_async::Pool::new(opts(&key, &TlsMode::Off));
            let conn = pool.get_conn().await.map_err(fail)?;
            drop(conn);
            Ok(pool)
        }
        Err(e) => Err(fail(e)),
    }
}

/// The number in the first column of the first row, as KEDA scans it into a float64; anything
/// else is an error naming what came back.
fn first_value(row: Option<Row>) -> Result<f64, String> {
    let row = row.ok_or_else(|| "the query returned no rows; expected one number".to_string())?;
    let value = row
        .as_ref(0)
        .ok_or_else(|| "the query returned no columns; expected one number".to_string())?;
    value_to_f64(value)
}

/// One column's value as a finite number.
fn value_to_f64(value: &mysql_async::Value) -> Result<f64, String> {
    use mysql_async::Value;
    let number = match value {
        Value::NULL => {
            return Err(
                "the query returned NULL; expected a number (wrap the column in COALESCE(..., 0) for 0)"
                    .to_string(),
            );
        }
        Value::Int(i) => *i as f64,
        Value::UInt(u) => *u as f64,
        Value::Float(f) => f64::from(*f),
        Value::Double(d) => *d,
        // The text protocol sends every value as text: read it as Go's ParseFloat does.
        Value::Bytes(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            text.parse::<f64>().map_err(|_| {
                if text.len() <= 32 && !text.chars().any(char::is_control) {
                    format!("the query returned {text:?}; expected a number")
                } else {
                    "the query returned text that is not a number".to_string()
                }
            })?
        }
        Value::Date(..) | Value::Time(..) => {
            return Err("the query returned a date or time; expected a number".to_string());
        }
    };
    if !number.is_finite() {
        return Err(format!(
            "the query returned {number}; expected a finite number"
        ));
    }
    Ok(number)
}

/// A `mysql` trigger.
pub struct MySqlScaler {
    config: MySqlConfig,
    lease: Lease<MySqlKey, mysql_async::Pool>,
    source_name: String,
}

impl fmt::Debug for MySqlScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlScaler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MySqlScaler {
    /// Parses the trigger and takes a lease on its server's shared pool; nothing connects
    /// until the first poll.
    pub fn new(trigger: &Trigger, pool: &MySqlPool) -> Result<Self, ConfigError> {
        let config = MySqlConfig::parse(trigger)?;
        Ok(Self {
            lease: pool.lease(config.key.clone()),
            source_name: config.key.source_name(),
            config,
        })
    }

    fn source_error(&self, message: String) -> ScalerError {
        ScalerError::Source {
            source_name: self.source_name.clone(),
            message,
        }
    }

    fn timeout_error(&self) -> ScalerError {
        ScalerError::Timeout {
            source_name: self.source_name.clone(),
            timeout: TIMEOUT,
        }
    }

    /// Runs the query on the shared pool (connecting first if needed); getting a connection
    /// and running the query share one [`TIMEOUT`]. A connection that cannot be had, breaks or
    /// hangs replaces the pool at the next poll (with the pool's backoff); waiting behind other
    /// polls for one of the pool's connections does not.
    async fn read(&self) -> Result<f64, ScalerError> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let key = self.config.key.clone();
        let source_name = self.source_name.clone();
        let pool: Arc<mysql_async::Pool> = self
            .lease
            .client(&self.source_name, TIMEOUT, || connect(key, source_name))
            .await?;
        let password = self.config.key.password.as_str();
        let mut conn = match tokio::time::timeout_at(deadline, pool.get_conn()).await {
            Err(_) => {
                // With none of the pool's connections in use, the time went on connecting.
                if pool.metrics().connections_in_use.load(Ordering::Relaxed) == 0 {
                    self.lease.invalidate(&pool).await;
                }
                return Err(self.timeout_error());
            }
            Ok(Err(e)) => {
                self.lease.invalidate(&pool).await;
                return Err(self.source_error(format!("connecting: {}", describe(&e, password))));
            }
            Ok(Ok(conn)) => conn,
        };
        let query = self.config.query.as_str();
        match tokio::time::timeout_at(deadline, conn.query_first::<Row, _>(query)).await {
            Err(_) => {
                // A half-open connection answers nothing: replace the pool.
                drop(conn);
                self.lease.invalidate(&pool).await;
                Err(self.timeout_error())
            }
            Ok(Err(e)) => {
                if e.is_fatal() {
                    self.lease.invalidate(&pool).await;
                }
                Err(self.source_error(describe(&e, password)))
            }
            Ok(Ok(row)) => first_value(row).map_err(|m| self.source_error(m)),
        }
    }
}

#[async_trait]
impl Scaler for MySqlScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.config.metric_name.clone(),
            target: self.config.query_value,
            target_type: self.config.metric_type,
        }]
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        if metric != self.config.metric_name {
            return Err(ScalerError::UnknownMetric(metric.to_string()));
        }
        let value = self.read().await?;
        Ok(MetricsAndActivity {
            values: vec![MetricValue {
                name: self.config.metric_name.clone(),
                value,
            }],
            active: value > self.config.activation_query_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy;

    use super::*;
    use crate::tls::test_pem;

    const SECRET: &str = "p@ss:w/rd";

    fn trigger(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Trigger {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Trigger {
            index: 0,
            trigger_type: "mysql".into(),
            metadata: map(meta),
            auth_params: map(auth),
            resolved_env: map(&[
                ("MYSQL_CONN_STR", "user@tcp(my.mysql.dev:3306)/stats_db"),
                ("MYSQL_USERNAME", "test_username"),
                ("MYSQL_PASSWORD", SECRET),
                ("MYSQL_HOST", "mysql.env"),
                ("MYSQL_PORT", "3307"),
            ]),
            ..Default::default()
        }
    }

    /// What a parsed trigger connects to and reports, for comparing with a table row.
    #[derive(Debug, PartialEq)]
    struct Parsed {
        server: String,
        user: String,
        password: String,
        tls: &'static str,
        metric: String,
        target: f64,
        activation: f64,
        metric_type: MetricTargetType,
    }

    fn parsed(c: &MySqlConfig) -> Parsed {
        Parsed {
            server: c.key.source_name(),
            user: c.key.user.clone(),
            password: c.key.password.clone(),
            tls: c.key.tls.name(),
            metric: c.metric_name.clone(),
            target: c.query_value,
            activation: c.activation_query_value,
            metric_type: c.metric_type,
        }
    }

    fn want(
        server: &str,
        user: &str,
        password: &str,
        tls: &'static str,
        metric: &str,
        (target, activation): (f64, f64),
    ) -> Parsed {
        Parsed {
            server: server.into(),
            user: user.into(),
            password: password.into(),
            tls,
            metric: metric.into(),
            target,
            activation,
            metric_type: MetricTargetType::AverageValue,
        }
    }

    const Q: (&str, &str) = ("query", "SELECT COUNT(*) FROM jobs");
    const V: (&str, &str) = ("queryValue", "12");

    #[test]
    fn keda_documented_examples_and_bad_input() {
        type Pairs = &'static [(&'static str, &'static str)];
        // KEDA 2.20's documented example (a TriggerAuthentication's connectionString), its
        // other documented spellings, and the rows of KEDA's own parsing test.
        let ok: Vec<(Pairs, Pairs, Parsed)> = vec![
            (
                &[
                    ("queryValue", "4.4"),
                    ("activationQueryValue", "5.4"),
                    (
                        "query",
                        "SELECT CEIL(COUNT(*) / 6) FROM task_instance WHERE state='running' OR state='queued'",
                    ),
                ],
                &[("connectionString", "user:password@tcp(mysql:3306)/stats_db")],
                want(
                    "mysql mysql:3306/stats_db",
                    "user",
                    "password",
                    "off",
                    "s0-mysql-stats_db",
                    (4.4, 5.4),
                ),
            ),
            // A copy in plain metadata beside the real one is ignored, as in KEDA.
            (
                &[Q, V, ("connectionString", "other:secret@tcp(x)/y")],
                &[("connectionString", "user:password@tcp(mysql:3306)/stats_db")],
                want(
                    "mysql mysql:3306/stats_db",
                    "user",
                    "password",
                    "off",
                    "s0-mysql-stats_db",
                    (12.0, 0.0),
                ),
            ),
            (
                &[Q, V, ("connectionStringFromEnv", "MYSQL_CONN_STR")],
                &[],
                want(
                    "mysql my.mysql.dev:3306/stats_db",
                    "user",
                    "",
                    "off",
                    "s0-mysql-stats_db",
                    (12.0, 0.0),
                ),
            ),
            (
                &[
                    Q,
                    V,
                    ("host", "test_host"),
                    ("port", "3306"),
                    ("username", "test_username"),
                    ("passwordFromEnv", "MYSQL_PASSWORD"),
                    ("dbName", "test_dbname"),
                ],
                &[],
                want(
                    "mysql test_host:3306/test_dbname",
                    "test_username",
                    SECRET,
                    "off",
                    "s0-mysql-test_dbname",
                    (12.0, 0.0),
                ),
            ),
            (
                &[
                    Q,
                    V,
                    ("hostFromEnv", "MYSQL_HOST"),
                    ("portFromEnv", "MYSQL_PORT"),
                    ("usernameFromEnv", "MYSQL_USERNAME"),
                    ("passwordFromEnv", "MYSQL_PASSWORD"),
                    ("dbName", "d.b"),
                ],
                &[],
                want(
                    "mysql mysql.env:3307/d.b",
                    "test_username",
                    SECRET,
                    "off",
                    "s0-mysql-d-b",
                    (12.0, 0.0),
                ),
            ),
            (
                &[Q, V],
                &[
                    ("host", "test_host"),
                    ("port", "3306"),
                    ("username", "test_username"),
                    ("password", "MYSQL_PASSWORD"),
                    ("dbName", "test_dbname"),
                ],
                want(
                    "mysql test_host:3306/test_dbname",
                    "test_username",
                    "MYSQL_PASSWORD",
                    "off",
                    "s0-mysql-test_dbname",
                    (12.0, 0.0),
                ),
            ),
            // TLS (`tls` and `ca`, metadata or authentication), and TLS from the DSN.
            (
                &[
                    Q,
                    V,
                    ("host", "h"),
                    ("port", "3306"),
                    ("username", "u"),
                    ("dbName", "d"),
                    ("tls", "Enable"),
                ],
                &[("ca", test_pem::CERT)],
                want(
                    "mysql h:3306/d",
                    "u",
                    "",
                    "verify",
                    "s0-mysql-d",
                    (12.0, 0.0),
                ),
            ),
            (
                &[Q, V, ("ca", "ignored without tls")],
                &[(
                    "connectionString",
                    "u:pw@tcp([fd00::1]:3310)/db?tls=skip-verify",
                )],
                want(
                    "mysql [fd00::1]:3310/db",
                    "u",
                    "pw",
                    "skip-verify",
                    "s0-mysql-db?tls=skip-verify",
                    (12.0, 0.0),
                ),
            ),
            (
                &[Q, V, ("activationQueryValue", "0.5")],
                &[(
                    "connectionString",
                    "app:p@ss:w/rd@tcp(db.prod)/orders?tls=true&parseTime=true",
                )],
                want(
                    "mysql db.prod:3306/orders",
                    "app",
                    SECRET,
                    "verify",
                    "s0-mysql-orders?tls=true&parseTime=true",
                    (12.0, 0.5),
                ),
            ),
        ];
        for (meta, auth, expected) in ok {
            let c = MySqlConfig::parse(&trigger(meta, auth))
                .unwrap_or_else(|e| panic!("{meta:?}: {e}"));
            assert_eq!(parsed(&c), expected, "{meta:?}");
        }
        let mut t = trigger(&[Q, V], &[("connectionString", "u@tcp(h)/d")]);
        t.metric_type = Some("Value".into());
        assert_eq!(
            MySqlConfig::parse(&t).unwrap().metric_type,
            MetricTargetType::Value
        );

        const DSN: (&str, &str) = ("connectionString", "u:hunter2@tcp(h:3306)/d");
        let host_keys = "required; set the authentication parameter connectionString (or metadata connectionStringFromEnv), or host, port, username and dbName";
        // (metadata, authentication, key at fault, problem)
        let bad: Vec<(Pairs, Pairs, &str, &str)> = vec![
            (&[], &[], "query", "required; set metadata \"query\""),
            (
                &[Q],
                &[DSN],
                "queryValue",
                "required; set metadata \"queryValue\"",
            ),
            (
                &[Q, ("queryValue", "four")],
                &[DSN],
                "queryValue",
                "expected a number, got \"four\"",
            ),
            (
                &[Q, ("queryValue", "0")],
                &[DSN],
                "queryValue",
                "expected a number above 0",
            ),
            (
                &[Q, V, ("activationQueryValue", "AA")],
                &[DSN],
                "activationQueryValue",
                "expected a number, got \"AA\"",
            ),
            (&[Q, V], &[], "host", host_keys),
            (
                &[Q, V, ("host", "h"), ("port", "test_port")],
                &[],
                "port",
                "expected a port number, got \"test_port\"",
            ),
            (
                &[Q, V, ("host", "h")],
                &[],
                "port",
                "required; set metadata \"port\" or authentication parameter \"port\" or metadata \"portFromEnv\"",
            ),
            (
                &[Q, V, ("host", "u:p@h"), ("port", "3306")],
                &[],
                "host",
                "expected a host name or IP address",
            ),
            (
                &[Q, V, ("tls", "invalid")],
                &[DSN],
                "tls",
                "expected one of enable, disable, got \"invalid\"",
            ),
            (
                &[Q, V, ("tls", "enable"), ("ca", "hunter2")],
                &[DSN],
                "ca",
                "expected PEM certificates, found none",
            ),
            (
                &[Q, V, ("tls", "enable")],
                &[("connectionString", "u:hunter2@tcp(h)/d?tls=true")],
                "tls",
                "set TLS in one place: the connection string's tls= parameter or tls, not both",
            ),
            (
                &[Q, V, ("connectionString", "u:hunter2@tcp(h)/d")],
                &[],
                "connectionString",
                "not read from metadata (KEDA does not read it there either: it is a secret); set the authentication parameter connectionString or metadata connectionStringFromEnv",
            ),
            (
                &[Q, V, ("host", "h"), ("port", "1"), ("password", "hunter2")],
                &[],
                "password",
                "not read from metadata (KEDA does not read it there either: it is a secret); set the authentication parameter password or metadata passwordFromEnv",
            ),
            (
                &[Q, V],
                &[("connectionString", "u:hunter2@tcp(h:3306)")],
                "connectionString",
                "expected a Go MySQL DSN such as user:password@tcp(host:3306)/dbname; the slash before the database name is missing",
            ),
            (
                &[Q, V],
                &[("connectionString", "u:hunter2@unix(/run/mysqld.sock)/d")],
                "connectionString",
                "expected a Go MySQL DSN such as user:password@tcp(host:3306)/dbname; network \"unix\" is not supported: ebb connects over tcp(host:port)",
            ),
            (
                &[Q, V],
                &[("connectionString", "u:hunter2@tcp(h)/d?tls=custom")],
                "connectionString",
                "parameter tls: expected true, false, skip-verify or preferred (ebb has no registered TLS configurations; use tls: enable and ca for a CA of your own)",
            ),
            (
                &[Q, V, ("connectionStringFromEnv", "NOPE")],
                &[],
                "connectionStringFromEnv",
                "environment variable \"NOPE\" is not set in the scale target's container",
            ),
        ];
        for (meta, auth, key, problem) in bad {
            let err = MySqlConfig::parse(&trigger(meta, auth)).expect_err("refused");
            assert_eq!(
                (err.key.as_str(), err.problem.as_str()),
                (key, problem),
                "{meta:?}"
            );
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let mut t = trigger(&[Q, V], &[DSN]);
        t.metric_type = Some("Utilization".into());
        assert_eq!(
            MySqlConfig::parse(&t).unwrap_err().problem,
            "expected AverageValue or Value for a mysql trigger, got \"Utilization\""
        );
    }

    #[test]
    fn go_mysql_dsns_parse_as_the_go_driver_reads_them() {
        let dsn = |text: &str| parse_dsn(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let d = dsn("user:password@tcp(mysql:3306)/stats_db");
        assert_eq!(
            (
                d.user.as_str(),
                d.password.as_str(),
                d.host.as_str(),
                d.port
            ),
            ("user", "password", "mysql", 3306)
        );
        assert_eq!((d.db_name.as_str(), &d.tls), ("stats_db", &None));

        // (DSN, user, password, host, port, database)
        let cases = [
            // The password may hold @, : and /: the last @ before the last / ends it.
            ("a:p@ss:w/rd@tcp(h:1)/db", "a", SECRET, "h", 1, "db"),
            ("a@tcp(h)/db", "a", "", "h", 3306, "db"),
            ("a:@(h:5)/", "a", "", "h", 5, ""),
            ("tcp(10.0.0.7:3307)/x", "", "", "10.0.0.7", 3307, "x"),
            ("u:p@tcp([::1]:3308)/x", "u", "p", "::1", 3308, "x"),
            ("u:p@tcp([fd00::2])/x", "u", "p", "fd00::2", 3306, "x"),
            ("u:p@tcp(fd00::3)/x", "u", "p", "fd00::3", 3306, "x"),
            ("u:p@tcp6(h:9)/x?", "u", "p", "h", 9, "x"),
            ("  u:p@tcp(h:9)/x\n", "u", "p", "h", 9, "x"),
        ];
        for (text, user, password, host, port, db) in cases {
            let d = dsn(text);
            assert_eq!(
                (
                    d.user.as_str(),
                    d.password.as_str(),
                    d.host.as_str(),
                    d.port,
                    d.db_name.as_str()
                ),
                (user, password, host, port, db),
                "{text}"
            );
        }

        // Parameters: tls, cleartext passwords, ignored driver options, system variables.
        for (value, mode) in [
            ("true", TlsMode::Verify { ca: None }),
            ("1", TlsMode::Verify { ca: None }),
            ("False", TlsMode::Off),
            ("skip-verify", TlsMode::SkipVerify),
            ("SKIP-VERIFY", TlsMode::SkipVerify),
            ("preferred", TlsMode::Preferred),
        ] {
            assert_eq!(dsn(&format!("u@tcp(h)/d?tls={value}")).tls, Some(mode));
        }
        let d = dsn(
            "u@tcp(h)/d?parseTime=true&loc=Local&charset=utf8mb4&allowCleartextPasswords=1&time_zone=%27%2B00:00%27&sql_mode=ANSI+QUOTES&noequals",
        );
        assert!(d.cleartext_passwords);
        assert_eq!(
            d.setup,
            ["SET time_zone='+00:00'", "SET sql_mode=ANSI QUOTES"]
        );

        // Errors say what is wrong and never repeat the DSN.
        let errors = [
            (
                "u:hunter2@tcp(h:3306)",
                "the slash before the database name is missing",
            ),
            (
                "u:hunter2@tcp(h:3306/d",
                "the address in tcp(...) is not closed with )",
            ),
            (
                "u:hunter2@tcp(h:3306)x/d",
                "text follows the address before the slash",
            ),
            (
                "u:hunter2@tcp(h:http)/d",
                "the port in tcp(host:port) is not a port number",
            ),
            (
                "u:hunter2@tcp(h:0)/d",
                "the port in tcp(host:port) is not a port number",
            ),
            (
                "u:hunter2@tcp([::1)/d",
                "the IPv6 address in tcp([address]:port) is not closed",
            ),
            ("u:hunter2@/d", "the host is missing"),
            ("u:hunter2@tcp(:3306)/d", "the host is missing"),
            ("u:hunter2@cloudsql(p:r:i)/d", "; network is not supported"),
            ("u:hun/ter2@tcp(h)", "; network is not supported"),
            (
                "u:hunter2@tcp(h)/d?tls=maybe",
                "parameter tls: expected true, false",
            ),
            (
                "u:hunter2@tcp(h)/d?allowCleartextPasswords=yes",
                "parameter allowCleartextPasswords: expected true or false",
            ),
            (
                "u:hunter2@tcp(h)/d?x=%zz",
                "parameter x: the value is not percent-encoded",
            ),
            (
                "u:hunter2@tcp(h)/d?a;DROP=1",
                "a parameter name is neither a Go driver option nor a system variable name",
            ),
        ];
        for (text, problem) in errors {
            let err = parse_dsn(text).expect_err(text);
            assert!(err.contains(problem), "{text}: {err}");
            assert!(!err.contains("hunter2") && !err.contains("ter2"), "{err}");
        }

        // KEDA names the metric after everything behind the last slash.
        assert_eq!(dsn_metric_db("u:p@tcp(h)/stats_db"), "stats_db");
        assert_eq!(dsn_metric_db("u:p@tcp(h)/db?tls=true"), "db?tls=true");
        assert_eq!(query_unescape("a%2Fb+c"), Some("a/b c".into()));
        assert_eq!(query_unescape("100%"), None);
    }

    #[test]
    fn query_results_convert_to_numbers_or_errors() {
        use mysql_async::Value;
        let bytes = |s: &str| Value::Bytes(s.as_bytes().to_vec());
        for (value, number) in [
            (bytes("42"), 42.0),
            (bytes("12.50"), 12.5),
            (bytes("-3"), -3.0),
            (bytes("1e3"), 1000.0),
            (Value::Int(-7), -7.0),
            (Value::UInt(9), 9.0),
            (Value::Float(0.5), 0.5),
            (Value::Double(2.25), 2.25),
        ] {
            assert_eq!(value_to_f64(&value), Ok(number), "{value:?}");
        }
        for (value, problem) in [
            (
                Value::NULL,
                "the query returned NULL; expected a number (wrap the column in COALESCE(..., 0) for 0)",
            ),
            (
                bytes("abc"),
                "the query returned \"abc\"; expected a number",
            ),
            (bytes(" 5"), "the query returned \" 5\"; expected a number"),
            (bytes(""), "the query returned \"\"; expected a number"),
            (
                bytes("NaN"),
                "the query returned NaN; expected a finite number",
            ),
            (
                bytes("inf"),
                "the query returned inf; expected a finite number",
            ),
            (
                bytes(&"x".repeat(40)),
                "the query returned text that is not a number",
            ),
            (
                Value::Date(2024, 1, 1, 0, 0, 0, 0),
                "the query returned a date or time; expected a number",
            ),
        ] {
            assert_eq!(value_to_f64(&value), Err(problem.to_string()), "{value:?}");
        }
        assert_eq!(
            first_value(None),
            Err("the query returned no rows; expected one number".into())
        );
    }

    #[test]
    fn triggers_on_one_server_share_a_pool_and_debug_hides_the_password() {
        let pool = MySqlPool::new();
        let dsn = [("connectionString", "u:hunter2@tcp(h:3306)/d")];
        let scalers: Vec<_> = (0..200)
            .map(|_| MySqlScaler::new(&trigger(&[Q, V], &dsn), &pool).expect("builds"))
            .collect();
        let other_db = MySqlScaler::new(
            &trigger(&[Q, V], &[("connectionString", "u:hunter2@tcp(h:3306)/e")]),
            &pool,
        )
        .expect("builds");
        let other_tls =
            MySqlScaler::new(&trigger(&[Q, V, ("tls", "enable")], &dsn), &pool).expect("builds");
        assert_eq!(
            pool.len(),
            3,
            "one pool per server, database, user, password, TLS"
        );
        assert_eq!(pool.connected(), 0, "building never connects");
        let shown = format!("{:?} {:?} {pool:?}", scalers[0], other_tls);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("mysql h:3306/d"), "{shown}");
        drop((scalers, other_db, other_tls));
        assert!(pool.is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_naming_it_without_the_password() {
        let registry = Registry::with_builtins();
        let scaler = registry
            .build(&trigger(
                &[Q, V],
                &[("connectionString", "u:hunter2@tcp(127.0.0.1:1)/stats_db")],
            ))
            .expect("builds");
        assert_eq!(
            scaler.metric_specs(),
            vec![MetricSpec::External {
                name: "s0-mysql-stats_db".into(),
                target: 12.0,
                target_type: MetricTargetType::AverageValue,
            }]
        );
        let err = scaler
            .metrics_and_activity("s0-mysql-other")
            .await
            .unwrap_err();
        assert!(matches!(err, ScalerError::UnknownMetric(_)), "{err}");
        let err = scaler
            .metrics_and_activity("s0-mysql-stats_db")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("mysql 127.0.0.1:1/stats_db"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn errors_never_show_the_password() {
        let e = mysql_async::Error::Other("login as u with hunter2 failed".into());
        assert_eq!(
            describe(&e, "hunter2"),
            "Other error: login as u with <password> failed"
        );
    }

    /// The keys a `mysql` trigger reads, for the property test.
    const KEYS: &[&str] = &[
        "query",
        "queryValue",
        "activationQueryValue",
        "connectionString",
        "connectionStringFromEnv",
        "host",
        "hostFromEnv",
        "port",
        "portFromEnv",
        "username",
        "usernameFromEnv",
        "password",
        "passwordFromEnv",
        "dbName",
        "tls",
        "ca",
    ];

    fn any_value() -> impl Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<String>(),
            "[a-z0-9:@/().?&=%\\[\\]-]{0,24}",
            proptest::sample::select(vec![
                "",
                "3306",
                "0",
                "enable",
                "ENV",
                "u:hunter2@tcp(h:3306)/d?tls=true",
                "u:hunter2@tcp([::1])/d?time_zone=%27UTC%27",
                "u:hunter2@unix(/s)/d",
                test_pem::CERT,
            ])
            .prop_map(String::from),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn no_input_makes_the_parser_panic_or_leak_the_password(
            metadata in proptest::collection::btree_map(
                proptest::sample::select(KEYS).prop_map(String::from), any_value(), 0..10),
            auth in proptest::collection::btree_map(
                proptest::sample::select(KEYS).prop_map(String::from), any_value(), 0..6),
            env in any_value(),
        ) {
            use proptest::prelude::*;
            let t = Trigger {
                index: 0,
                trigger_type: "mysql".into(),
                metadata,
                auth_params: auth,
                resolved_env: [("ENV".to_string(), env)].into(),
                ..Default::default()
            };
            match MySqlConfig::parse(&t) {
                Ok(c) => {
                    prop_assert!(c.query_value > 0.0 && c.metric_name.starts_with("s0-mysql-"));
                    prop_assert!(c.key.port > 0 && !c.key.host.is_empty());
                }
                Err(e) => prop_assert!(!e.to_string().contains("hunter2"), "{e}"),
            }
        }
    }
}
