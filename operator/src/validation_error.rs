//! The error of a ScaledObject spec that ebb will not act on: the field at fault and what was
//! expected. Its own module, so that every check (the spec's, the formula's) can name it
//! without depending on the others.

/// A spec the controller will not act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ValidationError {
    /// The field at fault, as a path: `spec.minReplicaCount`.
    pub field: String,
    /// What is wrong and what was expected.
    pub problem: String,
}

/// A [`ValidationError`] of `field`.
pub(crate) fn error(field: impl Into<String>, problem: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        problem: problem.into(),
    }
}
