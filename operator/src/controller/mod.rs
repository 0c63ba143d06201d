//! The ScaledObject controller: validates each object, resolves its target, builds its scalers,
//! keeps its HPA in shape and runs its scale loop. A bad object ends in Ready=False and an
//! Event; it never stops the others.
//!
//! - `watches`: the watches and the controller runtime (`run`), and what wakes a reconcile;
//! - `reconcile`: one reconcile, as a short sequence of named steps;
//! - `owned_hpa`: the HPA ebb owns for each object, applied only when it differs;
//! - `context`: what every reconcile shares.
//!
//! The scale loops themselves live in [`crate::loops`] and [`crate::scale`].

mod context;
mod owned_hpa;
mod reconcile;
mod watches;

use std::time::Duration;

pub use context::Context;
pub use watches::{ControllerEnd, run};

/// The field manager of everything ebb writes.
pub const FIELD_MANAGER: &str = "ebb";

/// Errors of one reconcile that are retried (apiserver trouble); problems with the object itself
/// are reported in its status instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver failed.
    #[error("apiserver: {0}")]
    Api(#[from] kube::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// Writing the scale target failed.
    #[error(transparent)]
    Target(#[from] crate::target::TargetError),
}

impl Error {
    /// A stable one-word label: the `reason` of `ebb_reconcile_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Api(_) => "api",
            Error::Finalizer(_) => "finalizer",
            Error::Target(_) => "target",
        }
    }

    /// How long until the reconcile is tried again.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(5)
    }
}
