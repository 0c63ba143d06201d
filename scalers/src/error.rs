//! Errors of scaler construction and of metric reads.

use std::time::Duration;

/// Why a trigger's configuration was refused. Never carries a value that may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trigger {index} ({trigger_type}): {key}: {problem}")]
pub struct ConfigError {
    /// Position of the trigger in `spec.triggers`.
    pub index: usize,
    /// The trigger's `type`.
    pub trigger_type: String,
    /// The metadata key (or auth parameter) at fault.
    pub key: String,
    /// What was wrong and what was expected.
    pub problem: String,
}

/// Errors a scaler reports.
#[derive(Debug, thiserror::Error)]
pub enum ScalerError {
    /// The trigger's metadata or authentication is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No scaler is registered for the trigger type.
    #[error("trigger {index}: unknown trigger type {trigger_type:?}")]
    UnknownType {
        /// Position of the trigger.
        index: usize,
        /// The unknown type.
        trigger_type: String,
    },
    /// The event source did not answer within the timeout.
    #[error("{source_name} did not answer within {timeout:?}")]
    Timeout {
        /// What was asked, e.g. `redis 127.0.0.1:6379`.
        source_name: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The event source could not be reached or refused the request.
    #[error("{source_name}: {message}")]
    Source {
        /// What was asked.
        source_name: String,
        /// What went wrong (never a credential).
        message: String,
    },
    /// The scaler was asked for a metric it does not serve.
    #[error("no metric named {0:?} in this scaler")]
    UnknownMetric(String),
}

impl ScalerError {
    /// A stable, one-word label for metrics and Event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            ScalerError::Config(_) => "config",
            ScalerError::UnknownType { .. } => "unknown_type",
            ScalerError::Timeout { .. } => "timeout",
            ScalerError::Source { .. } => "source",
            ScalerError::UnknownMetric(_) => "unknown_metric",
        }
    }
}

/// An error and its causes on one line; a cause whose text is already there is left out
/// (tonic's and hyper's top-level text often repeats or hides the useful one).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    message
}
