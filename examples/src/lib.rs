//! Runnable examples for ebb. Each example lives in a folder of its own with its manifests and a
//! README; the Rust programs they need are binaries of this crate (`src/bin/`), thin `main`s
//! over the modules here, so the integration tests run the very same code in process.
//!
//! - [`redis_list`]: the Redis list worker (`redis-list-worker`).
//! - [`rabbitmq_queue`]: the RabbitMQ consumer and producer (`rabbitmq-consumer`,
//!   `rabbitmq-producer`).
//! - [`backlog_api`]: the HTTP service whose backlog a `metrics-api` trigger reads
//!   (`backlog-api`).
//! - [`FileQueueScaler`]: the scaler of the external scaler plugin (`file-queue-plugin`): the
//!   "queue depth" is a number kept in a file, so anyone (a test, a shell, a mounted ConfigMap)
//!   can change it.

pub mod backlog_api;
pub mod rabbitmq_queue;
pub mod redis_list;
pub mod settings;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use ebb_scalers::sdk::PluginServer;
use ebb_scalers::trigger::Source;
use ebb_scalers::{
    ConfigError, MetricSpec, MetricTargetType, MetricValue, MetricsAndActivity, Scaler,
    ScalerError, Trigger, metric_name,
};

/// What stops an example program. Messages never carry a password or a broker URL.
#[derive(Debug, thiserror::Error)]
pub enum ExampleError {
    /// An environment variable or argument is missing or malformed.
    #[error("{name}: {problem}")]
    Setting {
        /// The variable or argument.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Redis refused or failed a command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// RabbitMQ refused or failed an operation.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused a message.
    #[error("{0}")]
    Refused(String),
    /// A socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Completes on SIGTERM (what Kubernetes sends a pod it scales in) or Ctrl-C.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// Limit for reading the file.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// A queue whose depth is the number written in a file (an empty file is an empty queue).
///
/// Metadata: `path` (required), `queueLength` (target per replica, default 5),
/// `activationQueueLength` (default 0). Metric: `s<index>-file-queue`.
#[derive(Debug, Clone, PartialEq)]
pub struct FileQueueScaler {
    path: PathBuf,
    queue_length: f64,
    activation_queue_length: f64,
    metric_type: MetricTargetType,
    metric_name: String,
}

impl FileQueueScaler {
    /// Parses the trigger.
    pub fn new(t: &Trigger) -> Result<Self, ConfigError> {
        let path = PathBuf::from(t.required("path", &[Source::Metadata])?.value.trim());
        let queue_length = t.threshold_or("queueLength", 5.0)?;
        if queue_length == 0.0 {
            return Err(t.error("queueLength", "expected a number above 0"));
        }
        Ok(Self {
            path,
            queue_length,
            activation_queue_length: t.threshold_or("activationQueueLength", 0.0)?,
            metric_type: t.metric_type(
                &[MetricTargetType::AverageValue, MetricTargetType::Value],
                MetricTargetType::AverageValue,
            )?,
            metric_name: metric_name(t.index, "file-queue"),
        })
    }

    /// The constructor in the registry's shape, for `Registry::register` and `sdk::serve`.
    pub fn build(t: &Trigger) -> Result<Box<dyn Scaler>, ScalerError> {
        Ok(Box::new(Self::new(t)?))
    }

    async fn depth(&self) -> Result<f64, ScalerError> {
        let source_name = format!("file {}", self.path.display());
        let text = match tokio::time::timeout(TIMEOUT, tokio::fs::read_to_string(&self.path)).await
        {
            Err(_) => {
                return Err(ScalerError::Timeout {
                    source_name,
                    timeout: TIMEOUT,
                });
            }
            Ok(Err(e)) => {
                return Err(ScalerError::Source {
                    source_name,
                    message: format!("cannot read: {}", e.kind()),
                });
            }
            Ok(Ok(text)) => text,
        };
        let text = text.trim();
        if text.is_empty() {
            return Ok(0.0);
        }
        match text.parse::<f64>() {
            Ok(depth) if depth.is_finite() && depth >= 0.0 => Ok(depth),
            _ => Err(ScalerError::Source {
                source_name,
                message: "expected a number >= 0 in the file".into(),
            }),
        }
    }
}

#[async_trait]
impl Scaler for FileQueueScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.metric_name.clone(),
            target: self.queue_length,
            target_type: self.metric_type,
        }]
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        if metric != self.metric_name {
            return Err(ScalerError::UnknownMetric(metric.to_string()));
        }
        let depth = self.depth().await?;
        Ok(MetricsAndActivity {
            values: vec![MetricValue {
                name: self.metric_name.clone(),
                value: depth,
            }],
            active: depth > self.activation_queue_length,
        })
    }
}

/// The plugin: [`FileQueueScaler`] served over the external scaler protocol. Adjust it (poll
/// interval, TLS) and serve it with `serve` or `serve_with_listener`.
pub fn file_queue_plugin() -> PluginServer {
    PluginServer::new(FileQueueScaler::build)
}

#[cfg(test)]
mod tests {
    use ebb_scalers::Registry;

    use super::*;

    fn trigger(trigger_type: &str, meta: &[(&str, &str)]) -> Trigger {
        Trigger {
            index: 1,
            trigger_type: trigger_type.into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn parses_its_metadata() {
        type Case = (
            &'static [(&'static str, &'static str)],
            Result<(f64, f64), (&'static str, &'static str)>,
        );
        let cases: [Case; 4] = [
            (&[("path", "/q")], Ok((5.0, 0.0))),
            (
                &[
                    ("path", "/q"),
                    ("queueLength", "10"),
                    ("activationQueueLength", "2"),
                ],
                Ok((10.0, 2.0)),
            ),
            (&[], Err(("path", "required; set metadata \"path\""))),
            (
                &[("path", "/q"), ("queueLength", "0")],
                Err(("queueLength", "expected a number above 0")),
            ),
        ];
        for (meta, expected) in cases {
            let got = FileQueueScaler::new(&trigger("file-queue", meta))
                .map(|s| (s.queue_length, s.activation_queue_length))
                .map_err(|e| (e.key, e.problem));
            let expected = expected.map_err(|(k, p)| (k.to_string(), p.to_string()));
            assert_eq!(got, expected, "{meta:?}");
        }
    }

    /// Plugin style (a): the scaler compiled into a custom build through the registry.
    #[tokio::test]
    async fn registers_in_process_in_a_custom_build() {
        let dir = std::env::temp_dir().join(format!("ebb-file-queue-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("depth");
        std::fs::write(&path, "7\n").unwrap();

        let mut registry = Registry::with_builtins();
        registry.register("file-queue", FileQueueScaler::build);
        let path_text = path.to_string_lossy().to_string();
        let scaler = registry
            .build(&trigger("file-queue", &[("path", &path_text)]))
            .unwrap();
        assert_eq!(
            scaler.metric_specs()[0].external_name(),
            Some("s1-file-queue")
        );
        let got = scaler.metrics_and_activity("s1-file-queue").await.unwrap();
        assert_eq!((got.values[0].value, got.active), (7.0, true));

        std::fs::write(&path, "many").unwrap();
        let err = scaler
            .metrics_and_activity("s1-file-queue")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("expected a number"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
