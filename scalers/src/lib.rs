//! ebb's scalers: the [`Scaler`] trait, the trigger parsing every scaler shares, the registry
//! of trigger types, and the built-in scalers (one file each under `builtin/`).
//!
//! This crate holds no Kubernetes controller code: the operator resolves authentication and
//! environment into a [`Trigger`] and asks the [`Registry`] for a scaler.

pub mod builtin;
pub mod error;
mod http;
pub mod metric;
pub mod pool;
pub mod registry;
pub mod scaler;
pub mod sdk;
mod tls;
pub mod trigger;

/// The external scaler gRPC protocol (`externalscaler.ExternalScaler`), generated from
/// `proto/externalscaler.proto`: the client `external` triggers use and the server the
/// [`sdk`] serves.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod externalscaler {
    tonic::include_proto!("externalscaler");

    impl std::fmt::Debug for ScaledObjectRef {
        // The metadata may carry credentials (a password, a URL with user info): keys only.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ScaledObjectRef")
                .field("name", &self.name)
                .field("namespace", &self.namespace)
                .field(
                    "scaler_metadata",
                    &self.scaler_metadata.keys().collect::<Vec<_>>(),
                )
                .finish()
        }
    }
}

pub use error::{ConfigError, ScalerError};
pub use metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
pub use pool::{Lease, SharedPool};
pub use registry::Registry;
pub use scaler::{ActivityStream, PushScaler, Scaler};
/// PEM parsing shared with the operator's metrics API (its serving certificate and CAs).
pub use tls::{PemError, decrypt_private_key, pem_certificates, pem_private_key};
pub use trigger::{MetricTargetType, Source, Trigger};
