//! The built-in scalers, one file each.

pub mod aws_sqs_queue;
pub mod cron;
pub mod external;
pub mod kafka;
pub mod kafka_conn;
pub mod kafka_oauth;
pub mod kubernetes_workload;
pub mod metrics_api;
pub mod mysql;
pub mod nats_jetstream;
pub mod postgresql;
pub mod prometheus;
pub mod rabbitmq;
pub mod redis;
pub mod redis_conn;
pub mod redis_streams;
pub mod resource;

use crate::registry::Registry;

/// Registers every built-in scaler.
pub fn register(registry: &mut Registry) {
    self::aws_sqs_queue::register(registry);
    self::cron::register(registry);
    self::external::register(registry);
    self::kafka::register(registry);
    self::kubernetes_workload::register(registry);
    self::metrics_api::register(registry);
    self::mysql::register(registry);
    self::nats_jetstream::register(registry);
    self::postgresql::register(registry);
    self::prometheus::register(registry);
    self::rabbitmq::register(registry);
    self::redis::register(registry);
    self::resource::register(registry);
}
