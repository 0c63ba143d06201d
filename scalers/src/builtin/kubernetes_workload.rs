//! `kubernetes-workload`: the number of Pods matching a label selector, read as KEDA's
//! `kubernetes-workload` scaler reads it.
//!
//! KEDA lists the Pods at every poll. ebb counts them from a watch instead: every trigger with
//! the same namespace and selector shares one watch (a [`SharedPool`] keyed by [`PodScope`]),
//! which the apiserver filters by label and by phase, so a poll reads a number held in memory
//! and 200 triggers on one selector cost one watch, not 200 lists per polling interval.
//!
//! This crate holds no Kubernetes client: the watches come from a [`PodWatches`] the operator
//! gives [`register`]. [`crate::Registry::with_builtins`] registers the type with none, so the
//! trigger parses (for validation and `ebb explain`) but cannot be read.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{ConfigError, ScalerError};
use crate::metric::{MetricSpec, MetricValue, MetricsAndActivity, metric_name};
use crate::pool::{Lease, SharedPool};
use crate::registry::Registry;
use crate::scaler::Scaler;
use crate::trigger::{MetricTargetType, Source, Trigger};

const META: &[Source] = &[Source::Metadata];

/// How long the first list of a new watch may take before the poll fails (and the next poll
/// tries again).
pub const FIRST_LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// The `namespace` value that counts Pods in every namespace.
const ALL_NAMESPACES: &str = "*";

/// Which Pods a watch counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodScope {
    /// The namespace; `None` for every namespace.
    pub namespace: Option<String>,
    /// The label selector in canonical form (see [`LabelSelector`]), for the apiserver's
    /// `labelSelector` parameter.
    pub selector: String,
}

impl fmt::Display for PodScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "pods in {ns} matching {:?}", self.selector),
            None => write!(f, "pods in every namespace matching {:?}", self.selector),
        }
    }
}

/// The live count behind one watch.
pub trait PodCount: Send + Sync {
    /// Pods in scope that are neither Succeeded nor Failed, as of the watch's last event; an
    /// error when the watch has stopped for good (the pool then starts a new one).
    fn count(&self) -> Result<u64, String>;
}

/// Starts the watches `kubernetes-workload` triggers read; the operator implements it.
#[async_trait]
pub trait PodWatches: Send + Sync {
    /// Starts a watch of the Pods in `scope` that are neither Succeeded nor Failed and returns
    /// once its first list is in (never a count before that). Dropping the result stops it.
    async fn watch(&self, scope: &PodScope) -> Result<Box<dyn PodCount>, String>;
}

/// What `with_builtins` registers: parses, but has no cluster to count in.
struct NoCluster;

#[async_trait]
impl PodWatches for NoCluster {
    async fn watch(&self, _scope: &PodScope) -> Result<Box<dyn PodCount>, String> {
        Err("this process has no Kubernetes client to count pods with".into())
    }
}

/// The pool of watches, keyed by namespace and selector.
pub type WatchPool = SharedPool<PodScope, Box<dyn PodCount>>;

/// Registers `kubernetes-workload` without a cluster (see the module's documentation).
pub fn register(registry: &mut Registry) {
    register_with(registry, Arc::new(NoCluster));
}

/// Registers (or replaces) `kubernetes-workload`, counting with `watches`. Every trigger built
/// from the registry shares one pool of watches.
pub fn register_with(registry: &mut Registry, watches: Arc<dyn PodWatches>) {
    let pool = WatchPool::new();
    registry.register("kubernetes-workload", move |t| {
        Ok(Box::new(WorkloadScaler::new(t, &pool, watches.clone())?))
    });
}

/// A parsed Kubernetes label selector (the grammar of `kubectl get -l` and of Go's
/// `labels.Parse`, which KEDA uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    DoesNotExist(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

impl Requirement {
    fn key(&self) -> &str {
        match self {
            Requirement::Exists(k)
            | Requirement::DoesNotExist(k)
            | Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::GreaterThan(k, _)
            | Requirement::LessThan(k, _) => k,
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |values: &BTreeSet<String>| values.iter().cloned().collect::<Vec<_>>().join(",");
        match self {
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::DoesNotExist(k) => write!(f, "!{k}"),
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", set(vs)),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", set(vs)),
            Requirement::GreaterThan(k, n) => write!(f, "{k}>{n}"),
            Requirement::LessThan(k, n) => write!(f, "{k}<{n}"),
        }
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical form: requirements sorted by key, set values sorted, no spaces but
    /// around `in` and `notin`. Two spellings of one selector print alike.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Comma,
    Open,
    Close,
    Equals,
    DoubleEquals,
    NotEquals,
    Bang,
    Greater,
    Less,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => write!(f, "{w:?}"),
            Token::Comma => f.write_str("','"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::Equals => f.write_str("'='"),
            Token::DoubleEquals => f.write_str("'=='"),
            Token::NotEquals => f.write_str("'!='"),
            Token::Bang => f.write_str("'!'"),
            Token::Greater => f.write_str("'>'"),
            Token::Less => f.write_str("'<'"),
        }
    }
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            ',' | '(' | ')' | '>' | '<' => {
                chars.next();
                out.push(match c {
                    ',' => Token::Comma,
                    '(' => Token::Open,
                    ')' => Token::Close,
                    '>' => Token::Greater,
                    _ => Token::Less,
                });
            }
            '=' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(Token::DoubleEquals);
                } else {
                    out.push(Token::Equals);
                }
            }
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(Token::NotEquals);
                } else {
                    out.push(Token::Bang);
                }
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || ",()=!<>".contains(c) {
                        break;
                    }
                    if c.is_control() {
                        return Err(format!("control character {c:?} in a selector"));
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

/// A label name: `[prefix/]name`, the prefix a DNS subdomain of at most 253 characters, the
/// name at most 63 alphanumerics, `-`, `_` or `.`, beginning and ending alphanumeric.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let subdomain = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !subdomain {
            return Err(format!(
                "label key {key:?}: the prefix must be a DNS subdomain (lower case alphanumerics, '-' and '.')"
            ));
        }
    }
    if name.is_empty() || !label_text(name) {
        return Err(format!(
            "label key {key:?}: expected at most 63 alphanumerics, '-', '_' or '.', beginning and ending with an alphanumeric"
        ));
    }
    Ok(())
}

/// A label value: empty, or what a key's name may be.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || label_text(value) {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?}: expected at most 63 alphanumerics, '-', '_' or '.', beginning and ending with an alphanumeric"
        ))
    }
}

fn label_text(text: &str) -> bool {
    text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

impl std::str::FromStr for LabelSelector {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let tokens = tokens(text)?;
        let mut requirements = Vec::new();
        let mut i = 0;
        let word = |i: usize, what: &str| match tokens.get(i) {
            Some(Token::Word(w)) => Ok(w.clone()),
            Some(t) => Err(format!("expected {what}, found {t}")),
            None => Err(format!("expected {what} at the end")),
        };
        loop {
            let requirement = if tokens.get(i) == Some(&Token::Bang) {
                let key = word(i + 1, "a label key after '!'")?;
                check_key(&key)?;
                i += 2;
                Requirement::DoesNotExist(key)
            } else {
                let key = word(i, "a label key")?;
                check_key(&key)?;
                i += 1;
                match tokens.get(i) {
                    None | Some(Token::Comma) => Requirement::Exists(key),
                    Some(op @ (Token::Equals | Token::DoubleEquals | Token::NotEquals)) => {
                        // `key=` selects an empty value.
                        let value = match tokens.get(i + 1) {
                            Some(Token::Word(w)) => {
                                i += 1;
                                w.clone()
                            }
                            None | Some(Token::Comma) => String::new(),
                            Some(t) => return Err(format!("expected a label value, found {t}")),
                        };
                        check_value(&value)?;
                        i += 1;
                        if *op == Token::NotEquals {
                            Requirement::NotEquals(key, value)
                        } else {
                            Requirement::Equals(key, value)
                        }
                    }
                    Some(op @ (Token::Greater | Token::Less)) => {
                        let value = word(i + 1, "a whole number")?;
                        let n: i64 = value.parse().map_err(|_| {
                            format!(
                                "{key}: expected a whole number after '>' or '<', got {value:?}"
                            )
                        })?;
                        i += 2;
                        if *op == Token::Greater {
                            Requirement::GreaterThan(key, n)
                        } else {
                            Requirement::LessThan(key, n)
                        }
                    }
                    Some(Token::Word(op)) if op == "in" || op == "notin" => {
                        let not = op == "notin";
                        if tokens.get(i + 1) != Some(&Token::Open) {
                            return Err(format!("{key} {op}: expected '(' and a list of values"));
                        }
                        i += 2;
                        let mut values = BTreeSet::new();
                        loop {
                            match tokens.get(i) {
                                Some(Token::Word(w)) => {
                                    check_value(w)?;
                                    values.insert(w.clone());
                                    i += 1;
                                }
                                // An empty value between commas (`(a,,b)`) or at an end.
                                Some(Token::Comma | Token::Close) => {
                                    values.insert(String::new());
                                }
                                Some(t) => return Err(format!("{key} {op}: unexpected {t}")),
                                None => return Err(format!("{key} {op}: missing ')'")),
                            }
                            match tokens.get(i) {
                                Some(Token::Comma) => i += 1,
                                Some(Token::Close) => {
                                    i += 1;
                                    break;
                                }
                                Some(t) => return Err(format!("{key} {op}: unexpected {t}")),
                                None => return Err(format!("{key} {op}: missing ')'")),
                            }
                        }
                        if not {
                            Requirement::NotIn(key, values)
                        } else {
                            Requirement::In(key, values)
                        }
                    }
                    Some(t) => {
                        return Err(format!(
                            "after {key:?}: expected '=', '==', '!=', 'in', 'notin', '>', '<' or ',', found {t}"
                        ));
                    }
                }
            };
            requirements.push(requirement);
            match tokens.get(i) {
                None => break,
                Some(Token::Comma) => i += 1,
                Some(t) => return Err(format!("expected ',' between requirements, found {t}")),
            }
        }
        // Go's parser sorts requirements by key, and so does the canonical form.
        requirements.sort_by(|a, b| a.key().cmp(b.key()));
        Ok(LabelSelector { requirements })
    }
}

/// A parsed `kubernetes-workload` trigger.
#[derive(Debug, Clone, PartialEq)]
struct WorkloadConfig {
    scope: PodScope,
    value: f64,
    activation_value: f64,
    metric_type: MetricTargetType,
    metric_name: String,
    /// What errors name: the namespace and selector.
    source_name: String,
}

impl WorkloadConfig {
    fn parse(t: &Trigger) -> Result<Self, ConfigError> {
        let text = t.required("podSelector", META)?.value;
        let selector: LabelSelector = text
            .parse()
            .map_err(|e: String| t.error("podSelector", format!("not a label selector: {e}")))?;
        let value: f64 = t.parse_required("value", META, "a number")?;
        if !value.is_finite() || value <= 0.0 {
            return Err(t.error("value", format!("expected a number above 0, got {value}")));
        }
        let activation_value = t.threshold_or("activationValue", 0.0)?;
        let metric_type = t.metric_type(
            &[MetricTargetType::AverageValue, MetricTargetType::Value],
            MetricTargetType::AverageValue,
        )?;
        // `namespace` (KEDA 2.17+): another namespace, or `*` for all; by default the
        // ScaledObject's own.
        let namespace = match t.lookup("namespace", META)? {
            Some(found) if found.value.trim() == ALL_NAMESPACES => None,
            Some(found) => Some(found.value.trim().to_string()),
            None => Some(t.scaled_object_namespace.clone()),
        };
        let metric_name = metric_name(
            t.index,
            &format!("workload-{}", namespace.as_deref().unwrap_or("")),
        );
        let scope = PodScope {
            namespace,
            selector: selector.to_string(),
        };
        Ok(Self {
            source_name: scope.to_string(),
            scope,
            value,
            activation_value,
            metric_type,
            metric_name,
        })
    }
}

/// A `kubernetes-workload` trigger.
pub struct WorkloadScaler {
    config: WorkloadConfig,
    lease: Lease<PodScope, Box<dyn PodCount>>,
    watches: Arc<dyn PodWatches>,
}

impl fmt::Debug for WorkloadScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadScaler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WorkloadScaler {
    /// Parses the trigger and takes a lease on the watch of its namespace and selector (the
    /// watch starts at the first poll).
    pub fn new(
        trigger: &Trigger,
        pool: &WatchPool,
        watches: Arc<dyn PodWatches>,
    ) -> Result<Self, ConfigError> {
        let config = WorkloadConfig::parse(trigger)?;
        Ok(Self {
            lease: pool.lease(config.scope.clone()),
            config,
            watches,
        })
    }

    async fn count(&self) -> Result<u64, ScalerError> {
        let c = &self.config;
        let source_error = |message| ScalerError::Source {
            source_name: c.source_name.clone(),
            message,
        };
        // The closure runs only when there is no watch yet.
        let count = self
            .lease
            .client(&c.source_name, FIRST_LIST_TIMEOUT, || async {
                self.watches.watch(&c.scope).await.map_err(source_error)
            })
            .await?;
        match count.count() {
            Ok(n) => Ok(n),
            Err(message) => {
                self.lease.invalidate(&count).await;
                Err(source_error(message))
            }
        }
    }
}

#[async_trait]
impl Scaler for WorkloadScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.config.metric_name.clone(),
            target: self.config.value,
            target_type: self.config.metric_type,
        }]
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        if metric != self.config.metric_name {
            return Err(ScalerError::UnknownMetric(metric.to_string()));
        }
        let value = self.count().await? as f64;
        Ok(MetricsAndActivity {
            values: vec![MetricValue {
                name: self.config.metric_name.clone(),
                value,
            }],
            active: value > self.config.activation_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::*;

    fn trigger(meta: &[(&str, &str)]) -> Trigger {
        Trigger {
            index: 0,
            trigger_type: "kubernetes-workload".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            scaled_object_name: "workload-scaledobject".into(),
            scaled_object_namespace: "apps".into(),
            ..Default::default()
        }
    }

    #[test]
    fn keda_documented_examples_parse() {
        // (metadata, namespace, canonical selector, value, activation, metric name)
        type Row<'a> = (
            Vec<(&'a str, &'a str)>,
            Option<&'a str>,
            &'a str,
            f64,
            f64,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            // The trigger specification of KEDA's page.
            (
                vec![
                    ("podSelector", "app=backend"),
                    ("value", "0.5"),
                    ("activationValue", "3.1"),
                ],
                Some("apps"),
                "app=backend",
                0.5,
                3.1,
                "s0-workload-apps",
            ),
            // The page's example ScaledObject: a mix of equality and set-based requirements.
            (
                vec![
                    (
                        "podSelector",
                        "app=backend, deploy notin (critical, monolith)",
                    ),
                    ("value", "3"),
                ],
                Some("apps"),
                "app=backend,deploy notin (critical,monolith)",
                3.0,
                0.0,
                "s0-workload-apps",
            ),
            // Another namespace, and every namespace.
            (
                vec![
                    ("podSelector", "app=backend"),
                    ("value", "1"),
                    ("namespace", "jobs"),
                ],
                Some("jobs"),
                "app=backend",
                1.0,
                0.0,
                "s0-workload-jobs",
            ),
            (
                vec![("podSelector", "app"), ("value", "1"), ("namespace", "*")],
                None,
                "app",
                1.0,
                0.0,
                "s0-workload-",
            ),
        ];
        for (meta, namespace, selector, value, activation, name) in rows {
            let c =
                WorkloadConfig::parse(&trigger(&meta)).unwrap_or_else(|e| panic!("{meta:?}: {e}"));
            assert_eq!(c.scope.namespace.as_deref(), namespace, "{meta:?}");
            assert_eq!(c.scope.selector, selector, "{meta:?}");
            assert_eq!(
                (c.value, c.activation_value),
                (value, activation),
                "{meta:?}"
            );
            assert_eq!(c.metric_name, name, "{meta:?}");
            assert_eq!(c.metric_type, MetricTargetType::AverageValue);
        }
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        /// (metadata, key at fault, problem)
        type Row<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
        let rows: Vec<Row> = vec![
            (
                vec![("value", "1")],
                "podSelector",
                "required; set metadata \"podSelector\"",
            ),
            (
                vec![("podSelector", "app=backend")],
                "value",
                "required; set metadata \"value\"",
            ),
            (
                vec![("podSelector", "app=backend"), ("value", "0")],
                "value",
                "expected a number above 0, got 0",
            ),
            (
                vec![("podSelector", "app=backend"), ("value", "three")],
                "value",
                "expected a number, got \"three\"",
            ),
            (
                vec![
                    ("podSelector", "app=backend"),
                    ("value", "1"),
                    ("activationValue", "-1"),
                ],
                "activationValue",
                "expected a finite number >= 0, got -1",
            ),
            (
                vec![("podSelector", "app in backend"), ("value", "1")],
                "podSelector",
                "not a label selector: app in: expected '(' and a list of values",
            ),
            (
                vec![("podSelector", "app=back end"), ("value", "1")],
                "podSelector",
                "not a label selector: expected ',' between requirements, found \"end\"",
            ),
            (
                vec![("podSelector", "-app=x"), ("value", "1")],
                "podSelector",
                "not a label selector: label key \"-app\": expected at most 63 alphanumerics, '-', '_' or '.', beginning and ending with an alphanumeric",
            ),
        ];
        for (meta, key, problem) in rows {
            let e = WorkloadConfig::parse(&trigger(&meta)).expect_err(&format!("{meta:?}"));
            assert_eq!(
                (e.key.as_str(), e.problem.as_str()),
                (key, problem),
                "{meta:?}"
            );
        }
        let mut t = trigger(&[("podSelector", "app"), ("value", "1")]);
        t.metric_type = Some("Utilization".into());
        let e = WorkloadConfig::parse(&t).expect_err("Utilization");
        assert_eq!(e.key, "metricType");
    }

    #[test]
    fn selectors_parse_as_kubectl_parses_them() {
        let ok = [
            ("app", "app"),
            ("!app", "!app"),
            ("app=a", "app=a"),
            ("app==a", "app=a"),
            ("app = a", "app=a"),
            ("app!=a", "app!=a"),
            ("app=", "app="),
            ("tier in (b, a, a)", "tier in (a,b)"),
            ("tier notin (a)", "tier notin (a)"),
            ("tier in (a,)", "tier in (,a)"),
            ("size>3", "size>3"),
            ("size < -2", "size<-2"),
            ("z=1,a=2", "a=2,z=1"),
            (
                "example.com/team=core,app.kubernetes.io/name=web",
                "app.kubernetes.io/name=web,example.com/team=core",
            ),
            (" app = a ,  !b ", "app=a,!b"),
        ];
        for (text, canonical) in ok {
            let s: LabelSelector = text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(s.to_string(), canonical, "{text:?}");
            // The canonical form reads back as itself.
            let again: LabelSelector = canonical.parse().expect(canonical);
            assert_eq!(again, s, "{text:?}");
        }
        let bad = [
            "",
            ",",
            "app=a,",
            "app in ()x",
            "app in (a",
            "app notin",
            "app > x",
            "app ! b",
            "Example.com/app=a",
            "/app",
            "a=b=c",
            "app=x y",
            "(app)",
            &format!("app={}", "v".repeat(64)),
            &format!("{}=v", "k".repeat(64)),
        ];
        for text in bad {
            assert!(
                text.parse::<LabelSelector>().is_err(),
                "{text:?} should not parse"
            );
        }
    }

    /// Watches that count what the test says and record how many were started.
    #[derive(Default)]
    struct FakeWatches {
        started: AtomicUsize,
        count: Arc<AtomicU64>,
        broken: Arc<Mutex<bool>>,
        refuse: Mutex<Option<String>>,
    }

    struct FakeCount(Arc<AtomicU64>, Arc<Mutex<bool>>);

    impl PodCount for FakeCount {
        fn count(&self) -> Result<u64, String> {
            if *self.1.lock().expect("lock") {
                return Err("the watch stopped".into());
            }
            Ok(self.0.load(Ordering::SeqCst))
        }
    }

    #[async_trait]
    impl PodWatches for FakeWatches {
        async fn watch(&self, _scope: &PodScope) -> Result<Box<dyn PodCount>, String> {
            if let Some(e) = self.refuse.lock().expect("lock").clone() {
                return Err(e);
            }
            self.started.fetch_add(1, Ordering::SeqCst);
            *self.broken.lock().expect("lock") = false;
            Ok(Box::new(FakeCount(self.count.clone(), self.broken.clone())))
        }
    }

    #[tokio::test]
    async fn triggers_on_one_selector_share_one_watch_and_errors_are_never_zero() {
        let watches = Arc::new(FakeWatches::default());
        let mut registry = Registry::new();
        register_with(&mut registry, watches.clone());
        let build = |selector: &str| {
            registry
                .build(&trigger(&[
                    ("podSelector", selector),
                    ("value", "2"),
                    ("activationValue", "1"),
                ]))
                .expect("builds")
        };
        // Two spellings of one selector and one other selector.
        let scalers = [
            build("app=a, tier in (x,y)"),
            build("tier in (y,x),app==a"),
            build("app=b"),
        ];
        watches.count.store(1, Ordering::SeqCst);
        for s in &scalers {
            let m = s
                .metrics_and_activity("s0-workload-apps")
                .await
                .expect("reads");
            assert_eq!(m.values[0].value, 1.0);
            assert!(!m.active, "1 is not above an activation of 1");
        }
        assert_eq!(
            watches.started.load(Ordering::SeqCst),
            2,
            "one watch per selector"
        );
        watches.count.store(5, Ordering::SeqCst);
        let m = scalers[0]
            .metrics_and_activity("s0-workload-apps")
            .await
            .expect("reads");
        assert_eq!((m.values[0].value, m.active), (5.0, true));

        // A stopped watch is an error, and the next poll starts a new one.
        *watches.broken.lock().expect("lock") = true;
        let e = scalers[0]
            .metrics_and_activity("s0-workload-apps")
            .await
            .expect_err("broken");
        assert!(e.to_string().contains("the watch stopped"), "{e}");
        let m = scalers[0]
            .metrics_and_activity("s0-workload-apps")
            .await
            .expect("rewatched");
        assert_eq!(m.values[0].value, 5.0);
        assert_eq!(watches.started.load(Ordering::SeqCst), 3);

        // No watch to be had: an error naming what was counted, never a 0.
        let refusing = Arc::new(FakeWatches::default());
        *refusing.refuse.lock().expect("lock") = Some("pods is forbidden".into());
        let mut registry = Registry::new();
        register_with(&mut registry, refusing);
        let s = registry
            .build(&trigger(&[("podSelector", "app=a"), ("value", "1")]))
            .expect("builds");
        let e = s
            .metrics_and_activity("s0-workload-apps")
            .await
            .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "pods in apps matching \"app=a\": pods is forbidden"
        );
        let e = s
            .metrics_and_activity("s1-other")
            .await
            .expect_err("unknown");
        assert!(matches!(e, ScalerError::UnknownMetric(_)));
    }

    #[tokio::test]
    async fn without_a_cluster_the_trigger_parses_but_cannot_be_read() {
        let registry = Registry::with_builtins();
        let s = registry
            .build(&trigger(&[("podSelector", "app=a"), ("value", "1")]))
            .expect("parses offline");
        assert_eq!(
            s.metric_specs()[0].external_name(),
            Some("s0-workload-apps")
        );
        let e = s
            .metrics_and_activity("s0-workload-apps")
            .await
            .expect_err("no cluster");
        assert!(e.to_string().contains("no Kubernetes client"), "{e}");
    }
}
