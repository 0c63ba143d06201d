//! `redis`, `redis-cluster`, `redis-sentinel`: the length of a list (or set, sorted set, hash).
//!
//! Triggers on the same deployment, database, credentials and TLS settings share one
//! connection through a [`SharedPool`](crate::pool::SharedPool) (every Redis trigger type of a
//! registry, streams included, uses one pool). The length is read with one script call that
//! checks the key's type, so a poll is a single round trip; on a cluster the script runs on the
//! node that owns the key.

use async_trait::async_trait;

use super::redis_conn::{RedisLease, RedisPool, RedisTarget, Topology};
use super::redis_streams::RedisStreamsScaler;
use crate::error::{ConfigError, ScalerError};
use crate::metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
use crate::scaler::Scaler;
use crate::trigger::{MetricTargetType, Source, Trigger};

pub use super::redis_conn::TIMEOUT;

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

/// The trigger types and the topology each reaches.
const LIST_TYPES: [(&str, Topology); 3] = [
    ("redis", Topology::Standalone),
    ("redis-cluster", Topology::Cluster),
    ("redis-sentinel", Topology::Sentinel),
];
const STREAM_TYPES: [(&str, Topology); 3] = [
    ("redis-streams", Topology::Standalone),
    ("redis-cluster-streams", Topology::Cluster),
    ("redis-sentinel-streams", Topology::Sentinel),
];

/// Registers the six Redis types. Every trigger built from one registry shares that registry's
/// pool.
pub fn register(registry: &mut crate::registry::Registry) {
    let pool = RedisPool::new();
    for (name, topology) in LIST_TYPES {
        let pool = pool.clone();
        registry.register(name, move |t| {
            Ok(Box::new(RedisListScaler::new(t, topology, &pool)?))
        });
    }
    for (name, topology) in STREAM_TYPES {
        let pool = pool.clone();
        registry.register(name, move |t| {
            Ok(Box::new(RedisStreamsScaler::new(t, topology, &pool)?))
        });
    }
}

/// Parsed list-trigger metadata.
#[derive(Debug, Clone, PartialEq)]
struct RedisListConfig {
    target: RedisTarget,
    list_name: String,
    list_length: f64,
    activation_list_length: f64,
    metric_type: MetricTargetType,
    metric_name: String,
}

impl RedisListConfig {
    fn parse(t: &Trigger, topology: Topology) -> Result<Self, ConfigError> {
        let target = RedisTarget::parse(t, topology)?;
        let list_name = t.required("listName", &[Source::Metadata])?.value;
        let list_length = t.threshold_or("listLength", 5.0)?;
        if list_length == 0.0 {
            return Err(t.error("listLength", "expected a number above 0"));
        }
        Ok(Self {
            target,
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

/// A `redis`, `redis-cluster` or `redis-sentinel` trigger.
pub struct RedisListScaler {
    config: RedisListConfig,
    lease: RedisLease,
}

/// The length script, hashed once for every scaler (each held its own copy: 300 bytes an
/// object).
static LENGTH: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(LENGTH_SCRIPT));

impl RedisListScaler {
    /// Parses the trigger and takes a lease on its deployment's shared connection.
    pub fn new(
        trigger: &Trigger,
        topology: Topology,
        pool: &RedisPool,
    ) -> Result<Self, ConfigError> {
        let config = RedisListConfig::parse(trigger, topology)?;
        Ok(Self {
            lease: RedisLease::new(pool, config.target.clone()),
            config,
        })
    }

    async fn length(&self) -> Result<f64, ScalerError> {
        let invocation = LENGTH.key(&self.config.list_name);
        let length: i64 = self
            .lease
            .run(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
            .await?;
        if length < 0 {
            return Err(ScalerError::Source {
                source_name: self.lease.source_name(),
                message: format!(
                    "key {:?} is not a list, set, sorted set or hash",
                    self.config.list_name
                ),
            });
        }
        Ok(length as f64)
    }
}

#[async_trait]
impl Scaler for RedisListScaler {
    fn activation_server(&self) -> Option<String> {
        Some(self.lease.source_name())
    }

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

    fn trigger(trigger_type: &str, meta: &[(&str, &str)]) -> Trigger {
        Trigger {
            index: 0,
            trigger_type: trigger_type.into(),
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
        let c = RedisListConfig::parse(
            &trigger("redis", &[("address", "r:6379"), ("listName", "mylist")]),
            Topology::Standalone,
        )
        .unwrap();
        assert_eq!(c.metric_name, "s0-redis-mylist");
        assert_eq!((c.list_length, c.activation_list_length), (5.0, 0.0));
        assert_eq!(c.target.database, 0);
        assert_eq!(c.metric_type, MetricTargetType::AverageValue);
        assert_eq!(c.target.addresses, ["r:6379"]);

        let c = RedisListConfig::parse(
            &trigger(
                "redis",
                &[
                    ("host", "r"),
                    ("port", "6380"),
                    ("listName", "jobs.high"),
                    ("listLength", "10"),
                    ("activationListLength", "2"),
                    ("databaseIndex", "3"),
                ],
            ),
            Topology::Standalone,
        )
        .unwrap();
        assert_eq!(c.target.addresses, ["r:6380"]);
        assert_eq!(c.metric_name, "s0-redis-jobs-high");
        assert_eq!(
            (c.list_length, c.activation_list_length, c.target.database),
            (10.0, 2.0, 3)
        );

        let c = RedisListConfig::parse(
            &trigger(
                "redis",
                &[("addressFromEnv", "REDIS_ADDR"), ("listName", "l")],
            ),
            Topology::Standalone,
        )
        .unwrap();
        assert_eq!(c.target.addresses, ["redis.prod:6380"]);

        // Cluster and sentinel: same list keys, metric named the same way.
        let c = RedisListConfig::parse(
            &trigger(
                "redis-cluster",
                &[("addresses", "a:1, b:2,c:3"), ("listName", "l")],
            ),
            Topology::Cluster,
        )
        .unwrap();
        assert_eq!(c.target.addresses, ["a:1", "b:2", "c:3"]);
        assert_eq!(c.metric_name, "s0-redis-l");
        let c = RedisListConfig::parse(
            &trigger(
                "redis-sentinel",
                &[
                    ("hosts", "a,b"),
                    ("ports", "26379,26380"),
                    ("sentinelMaster", "mymaster"),
                    ("listName", "l"),
                    ("databaseIndex", "2"),
                ],
            ),
            Topology::Sentinel,
        )
        .unwrap();
        assert_eq!(c.target.addresses, ["a:26379", "b:26380"]);
        assert_eq!(c.target.database, 2);
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        /// (metadata, key at fault, problem)
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static str,
            &'static str,
        );
        let cases: [Case; 6] = [
            (
                &[("listName", "l")],
                "address",
                "required; set address or addresses (host:port, comma-separated), or host(s) and port(s)",
            ),
            (
                &[("address", "r:6379")],
                "listName",
                "required; set metadata \"listName\"",
            ),
            (
                &[("address", "r"), ("listName", "l")],
                "address",
                "expected host:port[,host:port...]",
            ),
            (
                &[("host", "r"), ("port", "http"), ("listName", "l")],
                "port",
                "expected comma-separated port numbers, got \"http\"",
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
        ];
        for (meta, key, problem) in cases {
            let err = RedisListConfig::parse(&trigger("redis", meta), Topology::Standalone)
                .expect_err("refused");
            assert_eq!(
                (err.key.as_str(), err.problem.as_str()),
                (key, problem),
                "{meta:?}"
            );
        }
    }

    #[test]
    fn every_type_is_registered_and_debug_hides_the_password() {
        let registry = crate::registry::Registry::with_builtins();
        for (name, meta) in [
            ("redis", vec![("address", "r:1"), ("listName", "l")]),
            (
                "redis-cluster",
                vec![("addresses", "r:1"), ("listName", "l")],
            ),
            (
                "redis-sentinel",
                vec![
                    ("addresses", "r:1"),
                    ("sentinelMaster", "m"),
                    ("listName", "l"),
                ],
            ),
            ("redis-streams", vec![("address", "r:1"), ("stream", "s")]),
            (
                "redis-cluster-streams",
                vec![("addresses", "r:1"), ("stream", "s")],
            ),
            (
                "redis-sentinel-streams",
                vec![
                    ("addresses", "r:1"),
                    ("sentinelMaster", "m"),
                    ("stream", "s"),
                ],
            ),
        ] {
            let t = trigger(name, &meta);
            let scaler = registry.build(&t).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(scaler.metric_specs().len(), 1, "{name}");
        }
        let c = RedisListConfig::parse(
            &trigger("redis", &[("address", "r:1"), ("listName", "l")]),
            Topology::Standalone,
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("p@ss"), "{shown}");
    }
}
