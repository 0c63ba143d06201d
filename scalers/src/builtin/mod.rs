//! The built-in scalers, one file each.

pub mod redis;
pub mod resource;

use crate::registry::Registry;

/// Registers every built-in scaler.
pub fn register(registry: &mut Registry) {
    // One pool per registry: every redis trigger built from it shares connections.
    let redis_pool = self::redis::RedisPool::new();
    registry
        .register("redis", move |t| {
            Ok(Box::new(self::redis::RedisListScaler::new(t, &redis_pool)?))
        })
        .register("cpu", |t| {
            Ok(Box::new(resource::ResourceScaler::new(t, "cpu")?))
        })
        .register("memory", |t| {
            Ok(Box::new(resource::ResourceScaler::new(t, "memory")?))
        });
}
