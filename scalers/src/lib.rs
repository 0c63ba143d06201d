//! ebb's scalers: the [`Scaler`] trait, the trigger parsing every scaler shares, the registry
//! of trigger types, and the built-in scalers (one file each under `builtin/`).
//!
//! This crate holds no Kubernetes controller code: the operator resolves authentication and
//! environment into a [`Trigger`] and asks the [`Registry`] for a scaler.

pub mod builtin;
pub mod error;
pub mod metric;
pub mod pool;
pub mod registry;
pub mod scaler;
pub mod trigger;

pub use error::{ConfigError, ScalerError};
pub use metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
pub use pool::{Lease, SharedPool};
pub use registry::Registry;
pub use scaler::{ActivityStream, PushScaler, Scaler};
pub use trigger::{MetricTargetType, Source, Trigger};
