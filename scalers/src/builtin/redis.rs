//! `redis`: the length of a list (or set, sorted set, hash) on a standalone Redis.
//!
//! Triggers on the same server, database and credentials share one auto-reconnecting
//! connection through a [`SharedPool`]. The length is read with one script call that checks the
//! key's type, so a poll is a single round trip.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use crate::error::{ConfigError, ScalerError};
use crate::metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
use crate::pool::{Lease, SharedPool};
use crate::scaler::Scaler;
use crate::trigger::{ANY_SOURCE, MetricTargetType, Source, Trigger};

/// Limit for connecting and for each query.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Returns the length of KEYS[1] by its type; 0 when missing, -1 for an unsupported type.
const LENGTH_SCRIPT: &str = r"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'list' then return redis.call('LLEN', KEYS[1])
elseif t == 'set' then return redis.call('SCARD', KEYS[1])
elseif t == 'zset' then return redis.call('ZCARD', KEYS[1])
elseif t == 'hash' then return redis.call('HLEN', KEYS[1])
elseif t == 'none' then return 0
else return -1 end
";

/// Identity of a shared Redis connection. Holds credentials: never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisKey {
    address: String,
    database: i64,
    username: Option<String>,
    password: Option<String>,
}

/// The pool Redis triggers share.
pub type RedisPool = SharedPool<RedisKey, ConnectionManager>;

/// Registers `redis`. Every trigger built from one registry shares that registry's pool.
pub fn register(registry: &mut crate::registry::Registry) {
    let pool = RedisPool::new();
    registry.register("redis", move |t| {
        Ok(Box::new(RedisListScaler::new(t, &pool)?))
    });
}

/// Parsed `redis` trigger metadata.
#[derive(Clone, PartialEq)]
struct RedisListConfig {
    key: RedisKey,
    list_name: String,
    list_length: f64,
    activation_list_length: f64,
    metric_type: MetricTargetType,
    metric_name: String,
}

impl RedisListConfig {
    fn parse(t: &Trigger) -> Result<Self, ConfigError> {
        let address = match t.lookup("address", ANY_SOURCE)? {
            Some(found) => found.value.trim().to_string(),
            None => {
                let host = t.required("host", ANY_SOURCE)?.value;
                let port: u16 = t.parse_required("port", ANY_SOURCE, "a port number")?;
                format!("{}:{port}", host.trim())
            }
        };
        if !address.contains(':') || address.contains('/') {
            return Err(t.error("address", "expected host:port"));
        }
        if t.bool_or("enableTLS", ANY_SOURCE, false)? {
            return Err(t.error("enableTLS", "TLS to Redis is not implemented in ebb yet"));
        }
        let list_name = t.required("listName", &[Source::Metadata])?.value;
        let database: i64 = t.parse_or("databaseIndex", ANY_SOURCE, 0, "a database number")?;
        if database < 0 {
            return Err(t.error("databaseIndex", "expected a database number >= 0"));
        }
        let list_length = t.threshold_or("listLength", 5.0)?;
        if list_length == 0.0 {
            return Err(t.error("listLength", "expected a number above 0"));
        }
        let secrets = [Source::Auth, Source::Env];
        Ok(Self {
            key: RedisKey {
                address,
                database,
                username: t.lookup("username", &secrets)?.map(|f| f.value),
                password: t.lookup("password", &secrets)?.map(|f| f.value),
            },
            activation_list_length: t.threshold_or("activationListLength", 0.0)?,
            metric_type: t.metric_type(
                &[MetricTargetType::AverageValue, MetricTargetType::Value],
                MetricTargetType::AverageValue,
            )?,
            metric_name: metric_name(t.index, &format!("redis-{list_name}")),
            list_name,
            list_length,
        })
    }
}

/// A `redis` trigger.
pub struct RedisListScaler {
    config: RedisListConfig,
    lease: Lease<RedisKey, ConnectionManager>,
    script: redis::Script,
}

impl RedisListScaler {
    /// Parses the trigger and takes a lease on its server's shared connection.
    pub fn new(trigger: &Trigger, pool: &RedisPool) -> Result<Self, ConfigError> {
        let config = RedisListConfig::parse(trigger)?;
        Ok(Self {
            lease: pool.lease(config.key.clone()),
            config,
            script: redis::Script::new(LENGTH_SCRIPT),
        })
    }

    async fn connect(key: RedisKey) -> Result<ConnectionManager, ScalerError> {
        let source_name = source_name(&key);
        let client =
            redis::Client::open(connection_url(&key)).map_err(|e| ScalerError::Source {
                source_name: source_name.clone(),
                message: format!("invalid address: {:?}", e.kind()),
            })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| redis_error(&source_name, &e))
    }

    async fn length(&self) -> Result<f64, ScalerError> {
        let source_name = source_name(&self.config.key);
        let key = self.config.key.clone();
        let conn: Arc<ConnectionManager> = self
            .lease
            .client(&source_name, TIMEOUT, || Self::connect(key))
            .await?;
        let mut c = (*conn).clone();
        let invocation = self.script.key(&self.config.list_name);
        let query = invocation.invoke_async::<i64>(&mut c);
        let length = match tokio::time::timeout(TIMEOUT, query).await {
            Err(_) => {
                self.lease.invalidate(&conn).await;
                return Err(ScalerError::Timeout {
                    source_name,
                    timeout: TIMEOUT,
                });
            }
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() {
                    self.lease.invalidate(&conn).await;
                }
                return Err(redis_error(&source_name, &e));
            }
            Ok(Ok(n)) => n,
        };
        if length < 0 {
            return Err(ScalerError::Source {
                source_name,
                message: format!(
                    "key {:?} is not a list, set, sorted set or hash",
                    self.config.list_name
                ),
            });
        }
        Ok(length as f64)
    }
}

/// How errors name the server.
fn source_name(key: &RedisKey) -> String {
    format!("redis {}", key.address)
}

/// An error message from Redis without the connection details (which may hold a password).
fn redis_error(source_name: &str, e: &redis::RedisError) -> ScalerError {
    let message = match e.detail() {
        Some(detail) if !detail.contains('@') => format!("{:?}: {detail}", e.kind()),
        _ => format!("{:?}", e.kind()),
    };
    ScalerError::Source {
        source_name: source_name.to_string(),
        message,
    }
}

/// `redis://[user:password@]host:port/db`, with the credentials percent-encoded.
fn connection_url(key: &RedisKey) -> String {
    let mut url = String::from("redis://");
    if key.username.is_some() || key.password.is_some() {
        url.push_str(&percent_encode(key.username.as_deref().unwrap_or("")));
        if let Some(password) = &key.password {
            url.push(':');
            url.push_str(&percent_encode(password));
        }
        url.push('@');
    }
    let _ = write!(url, "{}/{}", key.address, key.database);
    url
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[async_trait]
impl Scaler for RedisListScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.config.metric_name.clone(),
            target: self.config.list_length,
            target_type: self.config.metric_type,
        }]
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        if metric != self.config.metric_name {
            return Err(ScalerError::UnknownMetric(metric.to_string()));
        }
        let length = self.length().await?;
        Ok(MetricsAndActivity {
            values: vec![MetricValue {
                name: self.config.metric_name.clone(),
                value: length,
            }],
            active: length > self.config.activation_list_length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(meta: &[(&str, &str)]) -> Trigger {
        Trigger {
            index: 0,
            trigger_type: "redis".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            auth_params: [("password".to_string(), "p@ss:w/rd".to_string())].into(),
            resolved_env: [("REDIS_ADDR".to_string(), "redis.prod:6380".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_every_documented_key() {
        let c = RedisListConfig::parse(&trigger(&[("address", "r:6379"), ("listName", "mylist")]))
            .unwrap();
        assert_eq!(c.metric_name, "s0-redis-mylist");
        assert_eq!((c.list_length, c.activation_list_length), (5.0, 0.0));
        assert_eq!(c.key.database, 0);
        assert_eq!(c.metric_type, MetricTargetType::AverageValue);
        assert_eq!(
            c.key.password.as_deref(),
            Some("p@ss:w/rd"),
            "from the TriggerAuthentication"
        );

        let c = RedisListConfig::parse(&trigger(&[
            ("host", "r"),
            ("port", "6380"),
            ("listName", "jobs.high"),
            ("listLength", "10"),
            ("activationListLength", "2"),
            ("databaseIndex", "3"),
        ]))
        .unwrap();
        assert_eq!(c.key.address, "r:6380");
        assert_eq!(c.metric_name, "s0-redis-jobs-high");
        assert_eq!(
            (c.list_length, c.activation_list_length, c.key.database),
            (10.0, 2.0, 3)
        );

        let c = RedisListConfig::parse(&trigger(&[
            ("addressFromEnv", "REDIS_ADDR"),
            ("listName", "l"),
        ]))
        .unwrap();
        assert_eq!(c.key.address, "redis.prod:6380");
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        /// (metadata, key at fault, problem)
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static str,
            &'static str,
        );
        let cases: [Case; 7] = [
            (
                &[("listName", "l")],
                "host",
                "required; set metadata \"host\" or metadata \"hostFromEnv\" or authentication parameter \"host\"",
            ),
            (
                &[("address", "r:6379")],
                "listName",
                "required; set metadata \"listName\"",
            ),
            (
                &[("address", "r"), ("listName", "l")],
                "address",
                "expected host:port",
            ),
            (
                &[("host", "r"), ("port", "http"), ("listName", "l")],
                "port",
                "expected a port number, got \"http\"",
            ),
            (
                &[("address", "r:1"), ("listName", "l"), ("listLength", "0")],
                "listLength",
                "expected a number above 0",
            ),
            (
                &[
                    ("address", "r:1"),
                    ("listName", "l"),
                    ("databaseIndex", "-1"),
                ],
                "databaseIndex",
                "expected a database number >= 0",
            ),
            (
                &[("address", "r:1"), ("listName", "l"), ("enableTLS", "true")],
                "enableTLS",
                "TLS to Redis is not implemented in ebb yet",
            ),
        ];
        for (meta, key, problem) in cases {
            let err = RedisListConfig::parse(&trigger(meta))
                .err()
                .expect("refused");
            assert_eq!(
                (err.key.as_str(), err.problem.as_str()),
                (key, problem),
                "{meta:?}"
            );
        }
    }

    #[test]
    fn credentials_are_encoded_in_the_url() {
        let key = RedisKey {
            address: "r:6379".into(),
            database: 2,
            username: Some("app".into()),
            password: Some("p@ss:w/rd".into()),
        };
        assert_eq!(connection_url(&key), "redis://app:p%40ss%3Aw%2Frd@r:6379/2");
    }
}
