//! The `Scaler` trait: what every event source implements, in process or behind the external
//! scaler gRPC protocol.

use std::pin::Pin;

use async_trait::async_trait;
use futures_core::Stream;

use crate::error::ScalerError;
use crate::metric::{MetricSpec, MetricsAndActivity};

/// A source of one trigger's metric and activity.
///
/// Implementations parse their configuration when built (so a bad trigger fails before any
/// poll), share connections through the crate's pools, and answer within their timeout: a
/// source that cannot be read yields an error, never a zero.
#[async_trait]
pub trait Scaler: Send + Sync {
    /// The metrics this trigger contributes to the HPA.
    fn metric_specs(&self) -> Vec<MetricSpec>;

    /// Reads `metric` (a name from [`Scaler::metric_specs`]) and decides activity.
    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError>;

    /// Releases what the scaler holds (a pooled connection's reference, a stream).
    async fn close(&self) {}

    /// The server this trigger reads, when one read is cheap enough to be made between polls
    /// while the target rests (adaptive activation: a Redis list's length, a queue's depth
    /// over AMQP). Triggers naming the same server share one budget of such reads a second.
    /// None (the default): only the polls read it.
    fn activation_server(&self) -> Option<String> {
        None
    }

    /// The push side of the scaler, if it can announce activity without being polled.
    fn as_push(&self) -> Option<&dyn PushScaler> {
        None
    }
}

/// A stream of activity changes announced by a push-capable scaler.
pub type ActivityStream = Pin<Box<dyn Stream<Item = Result<bool, ScalerError>> + Send>>;

/// A scaler that can announce activity as it happens (for example `external-push`).
pub trait PushScaler: Scaler {
    /// Activity updates, until the stream ends or the scaler is closed.
    fn activity(&self) -> ActivityStream;
}
