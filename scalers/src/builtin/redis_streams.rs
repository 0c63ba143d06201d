//! `redis-streams`, `redis-cluster-streams`, `redis-sentinel-streams`: a stream's length, a
//! consumer group's pending entries, or a consumer group's lag.
//!
//! Which one is read follows KEDA: without `consumerGroup`, the stream length (XLEN); with it
//! and `lagCount`, the group's lag (XINFO GROUPS, Redis 7 or later); with it alone, the
//! group's pending entries (XPENDING). Registered by [`super::redis::register`], so stream and
//! list triggers on one deployment share a connection.

use std::collections::HashMap;

use async_trait::async_trait;
use redis::Value;

use super::redis_conn::{RedisLease, RedisPool, RedisTarget, Topology};
use crate::error::{ConfigError, ScalerError};
use crate::metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
use crate::scaler::Scaler;
use crate::trigger::{MetricTargetType, Source, Trigger};

/// What the trigger measures.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StreamMeasure {
    /// XLEN: entries in the stream.
    Length,
    /// XPENDING: entries delivered to the group and not yet acknowledged.
    Pending { group: String },
    /// XINFO GROUPS `lag`: entries not yet delivered to the group.
    Lag { group: String },
}

/// Parsed streams-trigger metadata.
#[derive(Debug, Clone, PartialEq)]
struct RedisStreamsConfig {
    target: RedisTarget,
    stream: String,
    measure: StreamMeasure,
    /// `streamLength`, `pendingEntriesCount` or `lagCount`, by measure.
    target_value: f64,
    activation: f64,
    metric_type: MetricTargetType,
    metric_name: String,
}

impl RedisStreamsConfig {
    fn parse(t: &Trigger, topology: Topology) -> Result<Self, ConfigError> {
        let target = RedisTarget::parse(t, topology)?;
        let stream = t.required("stream", &[Source::Metadata])?.value;
        let group = t
            .lookup("consumerGroup", &[Source::Metadata])?
            .map(|f| f.value);
        let (measure, key, target_value) = match group {
            None => (
                StreamMeasure::Length,
                "streamLength",
                t.threshold_or("streamLength", 5.0)?,
            ),
            // As KEDA: `lagCount: "0"` selects the pending-entries count, as no lagCount does.
            Some(group) => match t
                .lookup("lagCount", &[Source::Metadata])?
                .filter(|f| f.value.trim().parse::<f64>().ok() != Some(0.0))
            {
                Some(_) => (
                    StreamMeasure::Lag { group },
                    "lagCount",
                    t.threshold_or("lagCount", 0.0)?,
                ),
                None => (
                    StreamMeasure::Pending { group },
                    "pendingEntriesCount",
                    t.threshold_or("pendingEntriesCount", 5.0)?,
                ),
            },
        };
        if target_value == 0.0 {
            return Err(t.error(key, "expected a number above 0"));
        }
        Ok(Self {
            target,
            activation: t.threshold_or("activationLagCount", 0.0)?,
            metric_type: t.metric_type(
                &[MetricTargetType::AverageValue, MetricTargetType::Value],
                MetricTargetType::AverageValue,
            )?,
            metric_name: metric_name(t.index, &format!("redis-streams-{stream}")),
            stream,
            measure,
            target_value,
        })
    }
}

/// A Redis streams trigger of any topology.
pub struct RedisStreamsScaler {
    config: RedisStreamsConfig,
    lease: RedisLease,
}

impl RedisStreamsScaler {
    /// Parses the trigger and takes a lease on its deployment's shared connection.
    pub fn new(
        trigger: &Trigger,
        topology: Topology,
        pool: &RedisPool,
    ) -> Result<Self, ConfigError> {
        let config = RedisStreamsConfig::parse(trigger, topology)?;
        Ok(Self {
            lease: RedisLease::new(pool, config.target.clone()),
            config,
        })
    }

    async fn read(&self) -> Result<f64, ScalerError> {
        let stream = self.config.stream.clone();
        match &self.config.measure {
            StreamMeasure::Length => {
                let n: i64 = self
                    .lease
                    .run(|mut c| async move {
                        redis::cmd("XLEN").arg(&stream).query_async(&mut c).await
                    })
                    .await?;
                Ok(n as f64)
            }
            StreamMeasure::Pending { group } => {
                let group = group.clone();
                // The summary form: [count, smallest id, greatest id, consumers].
                let summary: Vec<Value> = self
                    .lease
                    .run(|mut c| async move {
                        redis::cmd("XPENDING")
                            .arg(&stream)
                            .arg(&group)
                            .query_async(&mut c)
                            .await
                    })
                    .await?;
                match summary.first() {
                    Some(Value::Int(n)) => Ok(*n as f64),
                    _ => Err(self.garbage("XPENDING")),
                }
            }
            StreamMeasure::Lag { group } => self.lag(group).await,
        }
    }

    /// The group's lag. A stream that does not exist yet has no lag; a group that does not
    /// exist yet (its consumers are scaled to zero) will have to read the whole stream.
    async fn lag(&self, group: &str) -> Result<f64, ScalerError> {
        let stream = self.config.stream.clone();
        let reply: Result<Vec<HashMap<String, Value>>, ScalerError> = self
            .lease
            .run(|mut c| async move {
                match redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&stream)
                    .query_async(&mut c)
                    .await
                {
                    Err(e) if e.detail().is_some_and(|d| d.contains("no such key")) => {
                        Ok(Vec::new())
                    }
                    Ok(groups) => {
                        let groups: Vec<HashMap<String, Value>> = groups;
                        if groups.iter().any(|g| name_of(g) == Some(group)) {
                            return Ok(groups);
                        }
                        // No such group: report the stream length as its lag.
                        let len: i64 = redis::cmd("XLEN").arg(&stream).query_async(&mut c).await?;
                        let mut fake = HashMap::new();
                        fake.insert("name".to_string(), Value::BulkString(group.into()));
                        fake.insert("lag".to_string(), Value::Int(len));
                        Ok(vec![fake])
                    }
                    Err(e) => Err(e),
                }
            })
            .await;
        let groups = reply?;
        let Some(info) = groups.iter().find(|g| name_of(g) == Some(group)) else {
            return Ok(0.0);
        };
        match info.get("lag") {
            Some(Value::Int(n)) => Ok(*n as f64),
            Some(Value::Nil) => Err(ScalerError::Source {
                source_name: self.lease.source_name(),
                message: format!(
                    "Redis cannot tell the lag of group {group:?} on stream {:?} (entries were deleted past its position, or it was created at an arbitrary ID)",
                    self.config.stream
                ),
            }),
            None => Err(ScalerError::Source {
                source_name: self.lease.source_name(),
                message: "XINFO GROUPS reports no lag: lagCount needs Redis 7 or later".into(),
            }),
            Some(_) => Err(self.garbage("XINFO GROUPS")),
        }
    }

    fn garbage(&self, command: &str) -> ScalerError {
        ScalerError::Source {
            source_name: self.lease.source_name(),
            message: format!("unexpected reply to {command}"),
        }
    }
}

fn name_of(group: &HashMap<String, Value>) -> Option<&str> {
    match group.get("name") {
        Some(Value::BulkString(b)) => std::str::from_utf8(b).ok(),
        Some(Value::SimpleString(s)) => Some(s),
        _ => None,
    }
}

#[async_trait]
impl Scaler for RedisStreamsScaler {
    fn activation_server(&self) -> Option<String> {
        Some(self.lease.source_name())
    }

    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.config.metric_name.clone(),
            target: self.config.target_value,
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
            active: value > self.config.activation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(meta: &[(&str, &str)]) -> Trigger {
        Trigger {
            index: 2,
            trigger_type: "redis-streams".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_measure_follows_consumer_group_and_lag_count() {
        /// (metadata besides address and stream, measure, target, activation)
        type Case = (
            &'static [(&'static str, &'static str)],
            StreamMeasure,
            f64,
            f64,
        );
        let group = || "workers".to_string();
        let cases: [Case; 7] = [
            (&[], StreamMeasure::Length, 5.0, 0.0),
            (
                &[("streamLength", "50"), ("activationLagCount", "3")],
                StreamMeasure::Length,
                50.0,
                3.0,
            ),
            (
                // pendingEntriesCount without a group: the length is measured.
                &[("pendingEntriesCount", "7")],
                StreamMeasure::Length,
                5.0,
                0.0,
            ),
            (
                &[("consumerGroup", "workers")],
                StreamMeasure::Pending { group: group() },
                5.0,
                0.0,
            ),
            (
                &[("consumerGroup", "workers"), ("pendingEntriesCount", "10")],
                StreamMeasure::Pending { group: group() },
                10.0,
                0.0,
            ),
            (
                // lagCount 0 is KEDA's pending-entries mode, not an error.
                &[
                    ("consumerGroup", "workers"),
                    ("pendingEntriesCount", "10"),
                    ("lagCount", "0"),
                ],
                StreamMeasure::Pending { group: group() },
                10.0,
                0.0,
            ),
            (
                &[
                    ("consumerGroup", "workers"),
                    ("pendingEntriesCount", "10"),
                    ("lagCount", "4"),
                    ("activationLagCount", "1"),
                ],
                StreamMeasure::Lag { group: group() },
                4.0,
                1.0,
            ),
        ];
        for (extra, measure, target, activation) in cases {
            let mut meta = vec![("address", "r:6379"), ("stream", "orders.v1")];
            meta.extend_from_slice(extra);
            let c = RedisStreamsConfig::parse(&trigger(&meta), Topology::Standalone).unwrap();
            assert_eq!(
                (c.measure, c.target_value, c.activation),
                (measure, target, activation),
                "{extra:?}"
            );
            assert_eq!(c.metric_name, "s2-redis-streams-orders-v1");
            assert_eq!(c.metric_type, MetricTargetType::AverageValue);
        }
    }

    #[test]
    fn bad_streams_input_gets_a_precise_error() {
        /// (metadata, key at fault, problem)
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static str,
            &'static str,
        );
        let cases: [Case; 4] = [
            (
                &[("address", "r:1")],
                "stream",
                "required; set metadata \"stream\"",
            ),
            (
                &[("address", "r:1"), ("stream", "s"), ("streamLength", "0")],
                "streamLength",
                "expected a number above 0",
            ),
            (
                &[
                    ("address", "r:1"),
                    ("stream", "s"),
                    ("consumerGroup", "g"),
                    ("pendingEntriesCount", "many"),
                ],
                "pendingEntriesCount",
                "expected a number, got \"many\"",
            ),
            (
                &[
                    ("address", "r:1"),
                    ("stream", "s"),
                    ("activationLagCount", "-1"),
                ],
                "activationLagCount",
                "expected a finite number >= 0, got -1",
            ),
        ];
        for (meta, key, problem) in cases {
            let err = RedisStreamsConfig::parse(&trigger(meta), Topology::Standalone)
                .expect_err("refused");
            assert_eq!(
                (err.key.as_str(), err.problem.as_str()),
                (key, problem),
                "{meta:?}"
            );
        }
    }
}
