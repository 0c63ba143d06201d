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
    /// Adding or removing ebb's finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] kube::Error),
    /// kube's finalizer helper could not handle the object (no name; never for a stored object).
    #[error("finalizer: {0}")]
    FinalizerHelper(String),
    /// Writing the scale target failed.
    #[error(transparent)]
    Target(#[from] crate::target::TargetError),
}

/// The reconcile runs inside kube's finalizer helper: the reconcile's own error comes out as
/// it was (an apiserver refusal stays `api`), and only the finalizer's own writes are
/// `finalizer`.
impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match e {
            F::ApplyFailed(e) | F::CleanupFailed(e) => e,
            F::AddFinalizer(e) | F::RemoveFinalizer(e) => Error::Finalizer(e),
            other => Error::FinalizerHelper(other.to_string()),
        }
    }
}

impl Error {
    /// A stable one-word label: the `reason` of `ebb_reconcile_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Api(_) => "api",
            Error::Finalizer(_) | Error::FinalizerHelper(_) => "finalizer",
            Error::Target(_) => "target",
        }
    }

    /// How long until the reconcile is tried again.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::finalizer::Error as F;

    fn refused(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("denied", "Invalid")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn the_reconciles_own_errors_keep_their_label_through_the_finalizer_helper() {
        assert_eq!(
            Error::from(F::ApplyFailed(Error::Api(refused(422)))).label(),
            "api"
        );
        assert_eq!(
            Error::from(F::CleanupFailed(Error::Api(refused(500)))).label(),
            "api"
        );
        assert_eq!(
            Error::from(F::<Error>::AddFinalizer(refused(409))).label(),
            "finalizer"
        );
        assert_eq!(Error::from(F::<Error>::UnnamedObject).label(), "finalizer");
    }
}
