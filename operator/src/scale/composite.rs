//! `advanced.scalingModifiers`: one composite metric, computed by a formula over the triggers'
//! values, replaces the triggers' External metrics in the HPA and decides activation. Checked
//! and compiled once per generation of the ScaledObject.

use ebb_crds::ScaledObjectSpec;
use ebb_scalers::{MetricSpec, MetricTargetType};

use crate::scale::formula::Formula;
use crate::validation_error::{ValidationError, error};

/// The name of the composite metric in the HPA and the metrics API (KEDA's name).
pub const COMPOSITE_METRIC: &str = "composite-metric";

/// A checked, compiled `scalingModifiers`.
#[derive(Debug, Clone, PartialEq)]
pub struct Composite {
    /// The formula.
    pub formula: Formula,
    /// `target`: per replica for AverageValue, in total for Value.
    pub target: f64,
    /// `activationTarget` (default 0): active when the composite value is above it.
    pub activation_target: f64,
    /// `metricType` (default AverageValue).
    pub target_type: MetricTargetType,
}

impl Composite {
    /// The object's composite metric, None when it has no `scalingModifiers`.
    pub fn of(spec: &ScaledObjectSpec) -> Result<Option<Self>, ValidationError> {
        let Some(modifiers) = spec
            .advanced
            .as_ref()
            .and_then(|a| a.scaling_modifiers.as_ref())
        else {
            return Ok(None);
        };
        let text = modifiers.formula.as_deref().unwrap_or("").trim();
        if text.is_empty() {
            return Err(error(
                "spec.advanced.scalingModifiers.formula",
                "expected a formula over the triggers' names",
            ));
        }
        let target = modifiers.target.as_deref().unwrap_or("").trim();
        let target = match target.parse::<f64>() {
            Ok(t) if t.is_finite() && t > 0.0 => t,
            _ => {
                return Err(error(
                    "spec.advanced.scalingModifiers.target",
                    format!("expected a number above 0, got {:?}", short(target)),
                ));
            }
        };
        let activation_target = match modifiers.activation_target.as_deref() {
            None => 0.0,
            Some(text) => match text.trim().parse::<f64>() {
                Ok(a) if a.is_finite() && a >= 0.0 => a,
                _ => {
                    return Err(error(
                        "spec.advanced.scalingModifiers.activationTarget",
                        format!("expected a number >= 0, got {:?}", short(text)),
                    ));
                }
            },
        };
        let target_type = match modifiers.metric_type.as_deref() {
            None | Some("AverageValue") => MetricTargetType::AverageValue,
            Some("Value") => MetricTargetType::Value,
            Some(other) => {
                return Err(error(
                    "spec.advanced.scalingModifiers.metricType",
                    format!("expected AverageValue or Value, got {:?}", short(other)),
                ));
            }
        };
        let names: Vec<&str> = spec
            .triggers
            .iter()
            .filter_map(|t| t.name.as_deref())
            .filter(|n| !n.is_empty())
            .collect();
        let formula = Formula::compile(text, &names)
            .map_err(|e| error("spec.advanced.scalingModifiers.formula", e.to_string()))?;
        Ok(Some(Self {
            formula,
            target,
            activation_target,
            target_type,
        }))
    }

    /// The composite metric's spec.
    pub fn metric_spec(&self) -> MetricSpec {
        MetricSpec::External {
            name: COMPOSITE_METRIC.to_string(),
            target: self.target,
            target_type: self.target_type,
        }
    }
}

/// The metrics the HPA gets: the scalers' specs, or with a composite metric, that one metric in
/// place of every External metric (cpu and memory stay, read by the HPA itself).
pub fn hpa_metrics(specs: &[MetricSpec], composite: Option<&Composite>) -> Vec<MetricSpec> {
    let Some(composite) = composite else {
        return specs.to_vec();
    };
    std::iter::once(composite.metric_spec())
        .chain(
            specs
                .iter()
                .filter(|s| matches!(s, MetricSpec::Resource { .. }))
                .cloned(),
        )
        .collect()
}

fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec(yaml: &str) -> ScaledObjectSpec {
        serde_norway::from_str(yaml).expect("spec")
    }

    #[test]
    fn compiles_with_defaults() {
        let composite = Composite::of(&spec(
            "{scaleTargetRef: {name: w}, advanced: {scalingModifiers: {formula: 'a + b', target: '5'}}, triggers: [{type: redis, name: a, metadata: {}}, {type: redis, name: b, metadata: {}}]}",
        ))
        .expect("valid")
        .expect("present");
        assert_eq!(composite.target, 5.0);
        assert_eq!(composite.activation_target, 0.0);
        assert_eq!(composite.target_type, MetricTargetType::AverageValue);
        let values = BTreeMap::from([("a".to_string(), Some(2.0)), ("b".to_string(), Some(3.0))]);
        assert_eq!(composite.formula.evaluate(&values), Ok(5.0));
        assert_eq!(
            Composite::of(&spec("{scaleTargetRef: {name: w}, triggers: []}")),
            Ok(None)
        );
    }

    #[test]
    fn each_problem_names_its_field() {
        for (yaml, expected) in [
            (
                "{scaleTargetRef: {name: w}, advanced: {scalingModifiers: {formula: 'a + c', target: '5'}}, triggers: [{type: redis, name: a, metadata: {}}, {type: redis, name: b, metadata: {}}]}",
                "spec.advanced.scalingModifiers.formula: formula: unknown trigger name \"c\"; the named triggers are: a, b",
            ),
            (
                "{scaleTargetRef: {name: w}, advanced: {scalingModifiers: {formula: 'a +', target: '5'}}, triggers: [{type: redis, name: a, metadata: {}}]}",
                "spec.advanced.scalingModifiers.formula: formula: unexpected end of formula at character 4",
            ),
            (
                "{scaleTargetRef: {name: w}, advanced: {scalingModifiers: {formula: a, target: '5', metricType: Utilization}}, triggers: [{type: redis, name: a, metadata: {}}]}",
                "spec.advanced.scalingModifiers.metricType: expected AverageValue or Value, got \"Utilization\"",
            ),
        ] {
            let err = Composite::of(&spec(yaml)).expect_err(yaml);
            assert_eq!(err.to_string(), expected, "{yaml}");
        }
    }

    #[test]
    fn the_composite_replaces_external_metrics_and_keeps_resources() {
        let composite = Composite::of(&spec(
            "{scaleTargetRef: {name: w}, advanced: {scalingModifiers: {formula: 'a', target: '2.5', metricType: Value}}, triggers: [{type: redis, name: a, metadata: {}}]}",
        ))
        .expect("valid");
        let specs = vec![
            MetricSpec::External {
                name: "s0-redis-a".into(),
                target: 5.0,
                target_type: MetricTargetType::AverageValue,
            },
            MetricSpec::Resource {
                resource: "cpu".into(),
                container: None,
                target_type: MetricTargetType::Utilization,
                target: "50".into(),
            },
        ];
        assert_eq!(hpa_metrics(&specs, None), specs);
        assert_eq!(
            hpa_metrics(&specs, composite.as_ref()),
            vec![
                MetricSpec::External {
                    name: COMPOSITE_METRIC.into(),
                    target: 2.5,
                    target_type: MetricTargetType::Value,
                },
                specs[1].clone(),
            ]
        );
    }
}
