//! What a scaler is built from: one trigger of a ScaledObject with its resolved authentication
//! and environment, and typed access to its metadata with precise errors.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::ConfigError;

/// How the HPA compares a metric with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricTargetType {
    /// The metric divided by the replica count is compared with the target (KEDA's default).
    #[default]
    AverageValue,
    /// The metric itself is compared with the target.
    Value,
    /// Percent of the pods' resource requests (cpu and memory only).
    Utilization,
}

impl MetricTargetType {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricTargetType::AverageValue => "AverageValue",
            MetricTargetType::Value => "Value",
            MetricTargetType::Utilization => "Utilization",
        }
    }
}

impl fmt::Display for MetricTargetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One trigger, ready for a scaler constructor.
#[derive(Clone, Default)]
pub struct Trigger {
    /// Position in `spec.triggers`; prefixes metric names (`s0-...`).
    pub index: usize,
    /// The trigger's `type`, e.g. `redis`.
    pub trigger_type: String,
    /// The trigger's optional `name`.
    pub name: Option<String>,
    /// The trigger's `metadata`.
    pub metadata: BTreeMap<String, String>,
    /// `metricType` as written (`None`: the scaler's default).
    pub metric_type: Option<String>,
    /// Parameters from the TriggerAuthentication; treated as secrets.
    pub auth_params: BTreeMap<String, String>,
    /// Environment of the scale target's container, for `*FromEnv` keys; treated as secrets.
    pub resolved_env: BTreeMap<String, String>,
    /// Name of the ScaledObject the trigger belongs to (sent to external scalers; may be empty).
    pub scaled_object_name: String,
    /// Namespace of that ScaledObject (sent to external scalers; may be empty).
    pub scaled_object_namespace: String,
}

impl fmt::Debug for Trigger {
    // Auth parameters and environment values may be credentials: only their keys are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trigger")
            .field("index", &self.index)
            .field("trigger_type", &self.trigger_type)
            .field("name", &self.name)
            // Metadata may carry credentials too (a URL with user info): keys only.
            .field("metadata", &self.metadata.keys().collect::<Vec<_>>())
            .field("metric_type", &self.metric_type)
            .field("auth_params", &self.auth_params.keys().collect::<Vec<_>>())
            .field(
                "resolved_env",
                &self.resolved_env.keys().collect::<Vec<_>>(),
            )
            .field("scaled_object_name", &self.scaled_object_name)
            .field("scaled_object_namespace", &self.scaled_object_namespace)
            .finish()
    }
}

/// Where a configuration value may come from, in the order a key lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `metadata[key]`.
    Metadata,
    /// The target container's env var named by `metadata[keyFromEnv]`.
    Env,
    /// The TriggerAuthentication's parameter `key`.
    Auth,
}

/// Metadata first, then `*FromEnv`, then authentication: the order for ordinary keys.
pub const ANY_SOURCE: &[Source] = &[Source::Metadata, Source::Env, Source::Auth];

/// A value found for a key, and where it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Found {
    /// The value.
    pub value: String,
    /// Where it came from.
    pub source: Source,
}

impl fmt::Debug for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Found")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A metadata value quoted for an error message, unless it may carry credentials (user info,
/// a query string) or is too long to be a plain setting.
fn quoted(value: &str) -> Option<String> {
    let risky = value.contains('@') || value.contains("://") || value.contains('?');
    (!risky && value.len() <= 64).then(|| format!("{value:?}"))
}

impl Trigger {
    /// A config error for `key` of this trigger.
    pub fn error(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            index: self.index,
            trigger_type: self.trigger_type.clone(),
            key: key.to_string(),
            problem: problem.into(),
        }
    }

    /// The first non-empty value of `key` among `sources`, in their order.
    ///
    /// A `keyFromEnv` naming a variable the container does not define falls through to the
    /// later sources; only when none supplies a value is it an error, since the user asked for
    /// that variable.
    pub fn lookup(&self, key: &str, sources: &[Source]) -> Result<Option<Found>, ConfigError> {
        let mut missing_env: Option<ConfigError> = None;
        for source in sources {
            let value = match source {
                Source::Metadata => self.metadata.get(key).cloned(),
                Source::Auth => self.auth_params.get(key).cloned(),
                Source::Env => {
                    let env_key = format!("{key}FromEnv");
                    match self.metadata.get(&env_key).filter(|v| !v.is_empty()) {
                        None => None,
                        Some(var) => match self.resolved_env.get(var) {
                            Some(v) => Some(v.clone()),
                            None => {
                                missing_env = Some(self.error(
                                    &env_key,
                                    if looks_like_env_name(var) {
                                        format!(
                                            "environment variable {var:?} is not set in the scale target's container"
                                        )
                                    } else {
                                        // A connection string put where its variable's name
                                        // belongs holds a password: not repeated.
                                        "the environment variable it names is not set in the scale target's container (the name is not shown: it is not a variable's name, and may be a connection string with a password)".to_string()
                                    },
                                ));
                                None
                            }
                        },
                    }
                }
            };
            if let Some(value) = value.filter(|v| !v.trim().is_empty()) {
                return Ok(Some(Found {
                    value,
                    source: *source,
                }));
            }
        }
        match missing_env {
            Some(err) => Err(err),
            None => Ok(None),
        }
    }

    /// `key` from any source, or an error saying it is required.
    pub fn required(&self, key: &str, sources: &[Source]) -> Result<Found, ConfigError> {
        self.lookup(key, sources)?.ok_or_else(|| {
            let places: Vec<String> = sources
                .iter()
                .map(|s| match s {
                    Source::Metadata => format!("metadata {key:?}"),
                    Source::Env => format!("metadata \"{key}FromEnv\""),
                    Source::Auth => format!("authentication parameter {key:?}"),
                })
                .collect();
            self.error(key, format!("required; set {}", places.join(" or ")))
        })
    }

    /// `key` parsed as `T`, or `default` when absent. The error shows the value only when it
    /// came from the trigger's own metadata, never from a Secret or the environment.
    pub fn parse_or<T>(
        &self,
        key: &str,
        sources: &[Source],
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError>
    where
        T: FromStr,
    {
        match self.lookup(key, sources)? {
            None => Ok(default),
            Some(found) => self.parse_found(key, &found, expected),
        }
    }

    /// `key` parsed as `T`; required.
    pub fn parse_required<T: FromStr>(
        &self,
        key: &str,
        sources: &[Source],
        expected: &str,
    ) -> Result<T, ConfigError> {
        let found = self.required(key, sources)?;
        self.parse_found(key, &found, expected)
    }

    fn parse_found<T: FromStr>(
        &self,
        key: &str,
        found: &Found,
        expected: &str,
    ) -> Result<T, ConfigError> {
        found.value.trim().parse().map_err(|_| {
            let got = match (found.source, quoted(&found.value)) {
                (Source::Metadata, Some(q)) => format!(", got {q}"),
                _ => String::new(),
            };
            self.error(key, format!("expected {expected}{got}"))
        })
    }

    /// A finite, non-negative number (targets and thresholds), or `default`.
    pub fn threshold_or(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        let value: f64 = self.parse_or(key, &[Source::Metadata], default, "a number")?;
        if !value.is_finite() || value < 0.0 {
            return Err(self.error(key, format!("expected a finite number >= 0, got {value}")));
        }
        Ok(value)
    }

    /// A boolean as KEDA reads one (Go's `strconv.ParseBool`), or `default`.
    pub fn bool_or(
        &self,
        key: &str,
        sources: &[Source],
        default: bool,
    ) -> Result<bool, ConfigError> {
        match self.lookup(key, sources)? {
            None => Ok(default),
            Some(found) => parse_bool(found.value.trim())
                .ok_or_else(|| self.error(key, "expected true or false")),
        }
    }

    /// A duration as KEDA reads one: a Go duration (`5s`, `1m30s`, `1500ms`) or a whole number
    /// of milliseconds; `default` when absent. Zero and negative durations are refused.
    pub fn duration_or(
        &self,
        key: &str,
        sources: &[Source],
        default: std::time::Duration,
    ) -> Result<std::time::Duration, ConfigError> {
        let Some(found) = self.lookup(key, sources)? else {
            return Ok(default);
        };
        let text = found.value.trim();
        let parsed = parse_go_duration(text).or_else(|| {
            text.parse::<u64>()
                .ok()
                .map(std::time::Duration::from_millis)
        });
        match parsed {
            Some(d) if !d.is_zero() => Ok(d),
            _ => {
                let got = match (found.source, quoted(&found.value)) {
                    (Source::Metadata, Some(q)) => format!(", got {q}"),
                    _ => String::new(),
                };
                Err(self.error(
                    key,
                    format!(
                        "expected a duration above 0 (\"5s\", \"1m30s\") or a whole number of milliseconds{got}"
                    ),
                ))
            }
        }
    }

    /// One of `allowed` (matched without regard to case), or `default`; returns the canonical
    /// spelling from `allowed`.
    pub fn one_of(
        &self,
        key: &str,
        allowed: &[&'static str],
        default: &'static str,
    ) -> Result<&'static str, ConfigError> {
        self.one_of_from(key, &[Source::Metadata], allowed, default)
    }

    /// [`Trigger::one_of`], looked up in `sources`.
    pub fn one_of_from(
        &self,
        key: &str,
        sources: &[Source],
        allowed: &[&'static str],
        default: &'static str,
    ) -> Result<&'static str, ConfigError> {
        match self.lookup(key, sources)? {
            None => Ok(default),
            Some(found) => allowed
                .iter()
                .find(|a| a.eq_ignore_ascii_case(found.value.trim()))
                .copied()
                .ok_or_else(|| {
                    let got = quoted(&found.value)
                        .map(|q| format!(", got {q}"))
                        .unwrap_or_default();
                    self.error(key, format!("expected one of {}{got}", allowed.join(", ")))
                }),
        }
    }

    /// The trigger's `metricType`, checked against what this scaler supports.
    pub fn metric_type(
        &self,
        allowed: &[MetricTargetType],
        default: MetricTargetType,
    ) -> Result<MetricTargetType, ConfigError> {
        let Some(text) = self.metric_type.as_deref().filter(|t| !t.is_empty()) else {
            return Ok(default);
        };
        allowed
            .iter()
            .copied()
            .find(|t| t.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = allowed.iter().map(|t| t.as_str()).collect();
                self.error(
                    "metricType",
                    format!(
                        "expected {} for a {} trigger, got {text:?}",
                        names.join(" or "),
                        self.trigger_type
                    ),
                )
            })
    }
}

/// Go's `strconv.ParseBool`: `1 t T TRUE true True` and `0 f F FALSE false False`.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration` for non-negative durations: decimal numbers, each with a unit
/// (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), one after another (`1h30m`, `1.5s`); a bare `0`.
pub fn parse_go_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.strip_prefix('+').unwrap_or(text);
    if text == "0" {
        return Some(std::time::Duration::ZERO);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += value * scale;
        rest = after;
    }
    (nanos.is_finite() && nanos < u64::MAX as f64)
        .then(|| std::time::Duration::from_nanos(nanos as u64))
}

/// Whether `name` looks like an environment variable's name (letters, digits, `_`, `.`, `-`),
/// so that an error may quote it.
fn looks_like_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_connection_string_in_a_from_env_field_is_not_repeated_in_the_error() {
        let t = Trigger {
            index: 0,
            trigger_type: "mysql".into(),
            metadata: [(
                "connectionStringFromEnv".to_string(),
                "u:hunter2@tcp(h:3306)/d".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let err = t
            .lookup("connectionString", &[Source::Env])
            .expect_err("not set");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("connectionStringFromEnv"), "{err}");
    }

    #[test]
    fn booleans_and_durations_read_as_go_reads_them() {
        use super::{parse_bool, parse_go_duration};
        use std::time::Duration;
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["tRUE", "yes", "", " true", "2"] {
            assert_eq!(parse_bool(bad), None, "{bad:?}");
        }
        for (text, want) in [
            ("5s", Duration::from_secs(5)),
            ("1500ms", Duration::from_millis(1500)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("2us", Duration::from_micros(2)),
            ("0", Duration::ZERO),
            ("+3s", Duration::from_secs(3)),
        ] {
            assert_eq!(parse_go_duration(text), Some(want), "{text}");
        }
        for bad in ["", "5", "s", "5 s", "-5s", "5d", "1..5s", "1500"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    use super::*;

    fn trigger(meta: &[(&str, &str)]) -> Trigger {
        Trigger {
            index: 2,
            trigger_type: "redis".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            auth_params: [("password".to_string(), "s3cret-from-secret".to_string())].into(),
            resolved_env: [("REDIS_HOST".to_string(), "redis.prod:6379".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn lookup_prefers_metadata_then_env_then_auth() {
        let t = trigger(&[("address", "a:1"), ("addressFromEnv", "REDIS_HOST")]);
        assert_eq!(
            t.lookup("address", ANY_SOURCE).unwrap().unwrap().value,
            "a:1"
        );
        let t = trigger(&[("addressFromEnv", "REDIS_HOST")]);
        let found = t.lookup("address", ANY_SOURCE).unwrap().unwrap();
        assert_eq!(
            (found.value.as_str(), found.source),
            ("redis.prod:6379", Source::Env)
        );
        let found = t.lookup("password", ANY_SOURCE).unwrap().unwrap();
        assert_eq!(found.source, Source::Auth);
        assert_eq!(t.lookup("password", &[Source::Metadata]).unwrap(), None);
    }

    #[test]
    fn empty_values_count_as_absent() {
        let t = trigger(&[("listName", "  ")]);
        assert_eq!(t.lookup("listName", ANY_SOURCE).unwrap(), None);
    }

    #[test]
    fn from_env_naming_a_missing_variable_is_an_error() {
        let t = trigger(&[("addressFromEnv", "NOPE")]);
        let err = t.lookup("address", ANY_SOURCE).unwrap_err();
        assert_eq!(err.key, "addressFromEnv");
        assert_eq!(
            err.to_string(),
            "trigger 2 (redis): addressFromEnv: environment variable \"NOPE\" is not set in the scale target's container"
        );
    }

    #[test]
    fn from_env_naming_a_missing_variable_falls_through_to_later_sources() {
        let mut t = trigger(&[("hostFromEnv", "NOPE")]);
        t.auth_params
            .insert("host".into(), "amqp://u:p@rabbit/".into());
        let found = t.lookup("host", ANY_SOURCE).unwrap().unwrap();
        assert_eq!(found.source, Source::Auth);
        // Per-key order: auth before env, as KEDA reads rabbitmq's host.
        let t = trigger(&[("passwordFromEnv", "REDIS_HOST")]);
        let order = [Source::Metadata, Source::Auth, Source::Env];
        assert_eq!(
            t.lookup("password", &order).unwrap().unwrap().source,
            Source::Auth
        );
    }

    #[test]
    fn values_that_may_carry_credentials_are_never_quoted() {
        let t = trigger(&[
            ("listLength", "redis://user:hunter2@h:6379"),
            ("mode", "https://x/?token=hunter2"),
        ]);
        let err = t
            .parse_or::<f64>("listLength", ANY_SOURCE, 5.0, "a number")
            .unwrap_err();
        assert_eq!(err.problem, "expected a number");
        let err = t
            .one_of("mode", &["QueueLength"], "QueueLength")
            .unwrap_err();
        assert_eq!(err.problem, "expected one of QueueLength");
        let found = t.lookup("listLength", ANY_SOURCE).unwrap().unwrap();
        for shown in [format!("{found:?}"), format!("{t:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn required_names_every_place_it_looked() {
        let err = trigger(&[]).required("listName", ANY_SOURCE).unwrap_err();
        assert_eq!(
            err.to_string(),
            "trigger 2 (redis): listName: required; set metadata \"listName\" or metadata \"listNameFromEnv\" or authentication parameter \"listName\""
        );
    }

    #[test]
    fn parse_errors_show_metadata_values_but_never_secret_ones() {
        let t = trigger(&[("listLength", "five")]);
        let err = t
            .parse_or::<f64>("listLength", ANY_SOURCE, 5.0, "a number")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "trigger 2 (redis): listLength: expected a number, got \"five\""
        );
        let err = t
            .parse_required::<u16>("password", ANY_SOURCE, "a port")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "trigger 2 (redis): password: expected a port"
        );
        assert!(!err.to_string().contains("s3cret"));
        assert!(
            !format!("{t:?}").contains("s3cret"),
            "Debug hides auth values"
        );
        assert!(
            !format!("{t:?}").contains("redis.prod"),
            "Debug hides env values"
        );
    }

    #[test]
    fn thresholds_must_be_finite_and_non_negative() {
        for bad in ["-1", "NaN", "inf", "1e400"] {
            let err = trigger(&[("listLength", bad)])
                .threshold_or("listLength", 5.0)
                .unwrap_err();
            assert!(
                err.problem.starts_with("expected a finite number >= 0"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            trigger(&[("listLength", " 7.5 ")])
                .threshold_or("listLength", 5.0)
                .unwrap(),
            7.5
        );
        assert_eq!(trigger(&[]).threshold_or("listLength", 5.0).unwrap(), 5.0);
    }

    #[test]
    fn booleans_enums_and_metric_types() {
        let t = trigger(&[
            ("enableTLS", "TRUE"),
            ("mode", "queuelength"),
            ("flag", "yes"),
        ]);
        assert!(t.bool_or("enableTLS", ANY_SOURCE, false).unwrap());
        assert_eq!(
            t.bool_or("flag", ANY_SOURCE, false).unwrap_err().problem,
            "expected true or false"
        );
        assert_eq!(
            t.one_of("mode", &["QueueLength", "MessageRate"], "QueueLength")
                .unwrap(),
            "QueueLength"
        );
        let err = trigger(&[("mode", "Rate")])
            .one_of("mode", &["QueueLength", "MessageRate"], "QueueLength")
            .unwrap_err();
        assert_eq!(
            err.problem,
            "expected one of QueueLength, MessageRate, got \"Rate\""
        );

        let mut t = trigger(&[]);
        let allowed = [MetricTargetType::AverageValue, MetricTargetType::Value];
        assert_eq!(
            t.metric_type(&allowed, MetricTargetType::AverageValue)
                .unwrap(),
            MetricTargetType::AverageValue
        );
        t.metric_type = Some("Value".into());
        assert_eq!(
            t.metric_type(&allowed, MetricTargetType::AverageValue)
                .unwrap(),
            MetricTargetType::Value
        );
        t.metric_type = Some("Utilization".into());
        let err = t
            .metric_type(&allowed, MetricTargetType::AverageValue)
            .unwrap_err();
        assert_eq!(
            err.problem,
            "expected AverageValue or Value for a redis trigger, got \"Utilization\""
        );
    }
}
