//! Metric specs a scaler contributes to the HPA, and the values it reads.

use crate::trigger::MetricTargetType;

/// What the HPA reads for one trigger.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricSpec {
    /// An External metric served by ebb's metrics API.
    External {
        /// Full metric name, e.g. `s0-redis-orders`.
        name: String,
        /// Target per replica (AverageValue) or in total (Value).
        target: f64,
        /// How the HPA compares the value with the target.
        target_type: MetricTargetType,
    },
    /// A Resource (or ContainerResource) metric the HPA reads from the metrics server.
    Resource {
        /// `cpu` or `memory`.
        resource: String,
        /// Restricts the metric to one container (ContainerResource).
        container: Option<String>,
        /// Utilization (percent of requests) or AverageValue (a quantity).
        target_type: MetricTargetType,
        /// The target as written: a percentage or a quantity such as `512Mi`.
        target: String,
    },
}

impl MetricSpec {
    /// The External metric's name; None for Resource metrics.
    pub fn external_name(&self) -> Option<&str> {
        match self {
            MetricSpec::External { name, .. } => Some(name),
            MetricSpec::Resource { .. } => None,
        }
    }
}

/// One value read for a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    /// The metric's full name.
    pub name: String,
    /// The value.
    pub value: f64,
}

/// The answer to one poll of a scaler.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsAndActivity {
    /// Values for the asked metric.
    pub values: Vec<MetricValue>,
    /// Whether the trigger is past its activation threshold.
    pub active: bool,
}

/// The External metric name for trigger `index`: `s<index>-<name>`, with the characters
/// `/ . : % ( )` (not allowed in metric names) replaced by `-`.
pub fn metric_name(index: usize, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| match c {
            '/' | '.' | ':' | '%' | '(' | ')' => '-',
            c => c,
        })
        .collect();
    format!("s{index}-{clean}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_carry_the_index_and_replace_forbidden_characters() {
        assert_eq!(metric_name(0, "redis-mylist"), "s0-redis-mylist");
        assert_eq!(metric_name(1, "rabbitmq-orders"), "s1-rabbitmq-orders");
        assert_eq!(
            metric_name(12, "metric-api-http://x.example:80/a(b)%"),
            "s12-metric-api-http---x-example-80-a-b--"
        );
    }
}
