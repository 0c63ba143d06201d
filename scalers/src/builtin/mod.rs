//! The built-in scalers, one file each.

pub mod resource;

use crate::registry::Registry;

/// Registers every built-in scaler.
pub fn register(registry: &mut Registry) {
    registry
        .register("cpu", |t| {
            Ok(Box::new(resource::ResourceScaler::new(t, "cpu")?))
        })
        .register("memory", |t| {
            Ok(Box::new(resource::ResourceScaler::new(t, "memory")?))
        });
}
