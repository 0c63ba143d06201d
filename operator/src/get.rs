//! `ebb get` (`kubectl ebb get` as a kubectl plugin): every ScaledObject of a namespace, or of
//! all of them, in one table: its target and bounds, its trigger types, each metric's reading
//! against its HPA target, its conditions and the decision ebb takes next. The facts are
//! `ebb explain`'s ([`crate::explain::facts`]); reading them does I/O, the table and the
//! documents are pure.

use std::fmt::Write as _;

use ebb_crds::ScaledObject;
use ebb_crds::condition::{CONDITION_ACTIVE, CONDITION_READY};
use futures::StreamExt as _;
use jiff::{SignedDuration, Timestamp};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::explain::{self, Facts};
use crate::scale::decision::Decision;
use crate::target::Kinds;

/// How many objects are read at once (each is a few reads: target, HPA, one per metric).
const CONCURRENT_READS: usize = 8;

/// Which ScaledObjects to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (`-A`).
    All,
    /// One namespace.
    Namespace(String),
    /// Named objects of one namespace.
    Objects {
        /// Their namespace.
        namespace: String,
        /// Their names, in the order given.
        names: Vec<String>,
    },
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => write!(f, "listing ScaledObjects in every namespace"),
            Scope::Namespace(namespace) => {
                write!(f, "listing ScaledObjects in namespace {namespace}")
            }
            Scope::Objects { namespace, names } => {
                write!(
                    f,
                    "reading ScaledObjects {} in namespace {namespace}",
                    names.join(", ")
                )
            }
        }
    }
}

/// Why nothing could be listed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// Named objects do not exist: `namespace/name`, comma-separated.
    #[error("ScaledObject {0} not found")]
    NotFound(String),
    /// The apiserver failed.
    #[error("{scope}: {source}")]
    Api {
        /// What was asked.
        scope: Scope,
        /// Why it failed.
        source: kube::Error,
    },
}

/// One ScaledObject's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its triggers' types, in the spec's order.
    pub triggers: Vec<String>,
    /// When it was created.
    pub created: Option<Timestamp>,
    /// What `ebb explain` knows about it.
    pub facts: Facts,
}

/// Reads the rows of `scope`, sorted by namespace and name as kubectl sorts them.
pub async fn gather(client: &Client, scope: &Scope) -> Result<Vec<Row>, GetError> {
    let failed = |source| GetError::Api {
        scope: scope.clone(),
        source,
    };
    let objects = match scope {
        Scope::All => {
            Api::<ScaledObject>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map_err(failed)?
                .items
        }
        Scope::Namespace(namespace) => {
            Api::<ScaledObject>::namespaced(client.clone(), namespace)
                .list(&ListParams::default())
                .await
                .map_err(failed)?
                .items
        }
        Scope::Objects { namespace, names } => {
            let api = Api::<ScaledObject>::namespaced(client.clone(), namespace);
            let (mut found, mut missing) = (Vec::new(), Vec::new());
            for name in names {
                match api.get_opt(name).await.map_err(failed)? {
                    Some(so) => found.push(so),
                    None => missing.push(format!("{namespace}/{name}")),
                }
            }
            if !missing.is_empty() {
                return Err(GetError::NotFound(missing.join(", ")));
            }
            found
        }
    };
    // One discovery lookup per kind of target, not one per object.
    let kinds = &Kinds::default();
    let mut rows: Vec<Row> = futures::stream::iter(objects)
        .map(|so| async move {
            let facts = explain::facts(client, kinds, &so).await;
            Row {
                namespace: so.namespace().unwrap_or_default(),
                name: so.name_any(),
                triggers: so.spec.triggers.iter().map(|t| t.type_.clone()).collect(),
                created: so.metadata.creation_timestamp.as_ref().map(|t| t.0),
                facts,
            }
        })
        .buffer_unordered(CONCURRENT_READS)
        .collect()
        .await;
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(rows)
}

/// The table, as kubectl prints one: upper-case headers, columns left-aligned and three spaces
/// apart, `NAMESPACE` first with `-A`.
pub fn table(rows: &[Row], all_namespaces: bool) -> String {
    let mut header = vec![
        "NAME", "TARGET", "MIN", "MAX", "REPLICAS", "TRIGGERS", "READINGS", "READY", "ACTIVE",
        "DECISION", "AGE",
    ];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let f = &row.facts;
        let (min, max, _) = f.bounds;
        let mut cells = vec![
            row.name.clone(),
            target_reference(&f.target),
            min.to_string(),
            max.to_string(),
            f.replicas
                .as_ref()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "<unknown>".into()),
            dash_if_empty(row.triggers.join(",")),
            dash_if_empty(readings(f)),
            condition(f, CONDITION_READY),
            condition(f, CONDITION_ACTIVE),
            decision(f),
            row.created
                .map(|c| age(f.now.duration_since(c)))
                .unwrap_or_else(|| "<unknown>".into()),
        ];
        if all_namespaces {
            cells.insert(0, row.namespace.clone());
        }
        lines.push(cells);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}   ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// What kubectl says when a namespace has none.
pub fn nothing_found(scope: &Scope) -> String {
    match scope {
        Scope::Namespace(namespace) => format!("No resources found in {namespace} namespace."),
        _ => "No resources found".into(),
    }
}

/// One row as a document: what the table shows, with each metric in full.
pub fn document(row: &Row) -> Value {
    let f = &row.facts;
    let (min, max, idle) = f.bounds;
    let conditions: serde_json::Map<String, Value> = f
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), Value::String(c.status.clone())))
        .collect();
    json!({
        "metadata": {
            "namespace": row.namespace,
            "name": row.name,
            "creationTimestamp": row.created.map(|t| t.to_string()),
        },
        "target": f.target,
        "minReplicaCount": min,
        "maxReplicaCount": max,
        "idleReplicaCount": idle,
        "replicas": f.replicas.as_ref().ok(),
        "replicasError": f.replicas.as_ref().err(),
        "triggers": row.triggers,
        "metrics": f.metrics.iter().map(|m| json!({
            "name": m.name,
            "value": m.value.as_ref().ok(),
            "error": m.value.as_ref().err(),
            "targetType": m.target.as_ref().map(|(t, _)| t),
            "target": m.target.as_ref().map(|(_, q)| q),
            "active": m.active,
            "failures": m.failures.unwrap_or(0),
        })).collect::<Vec<_>>(),
        "conditions": conditions,
        "paused": f.paused,
        "decision": decision(f),
    })
}

/// `-o name`: one `scaledobject.keda.sh/<name>` line per row, as kubectl prints names.
pub fn names(rows: &[Row]) -> String {
    rows.iter()
        .map(|r| format!("scaledobject.keda.sh/{}\n", r.name))
        .collect()
}

/// The documents of `rows` as kubectl prints several objects: a `List` of them, or the item
/// itself when exactly one was named.
pub fn documents(rows: &[Row], scope: &Scope) -> Value {
    match (scope, rows) {
        (Scope::Objects { names, .. }, [row]) if names.len() == 1 => document(row),
        _ => json!({
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": ""},
            "items": rows.iter().map(document).collect::<Vec<_>>(),
        }),
    }
}

/// `apps/v1.Deployment worker` as kubectl names a reference: `Deployment/worker`.
fn target_reference(target: &str) -> String {
    match target.split_once(' ') {
        Some((kind, name)) => {
            let kind = kind.rsplit_once('.').map_or(kind, |(_, k)| k);
            format!("{kind}/{name}")
        }
        None => target.to_string(),
    }
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() { "-".into() } else { text }
}

/// Each metric's value as the metrics API serves it (the total, not `kubectl get hpa`'s average
/// per pod) and its HPA target: `12 (target 5/pod)` for an `AverageValue` target, which the HPA
/// compares with the total divided by the replicas, `12 (target 10)` for a `Value` one;
/// `<unknown>` when the metrics API cannot give the value.
fn readings(f: &Facts) -> String {
    f.metrics
        .iter()
        .map(|m| {
            let value = m.value.as_deref().unwrap_or("<unknown>");
            match &m.target {
                Some((kind, quantity)) if kind == "AverageValue" => {
                    format!("{value} (target {quantity}/pod)")
                }
                Some((_, quantity)) => format!("{value} (target {quantity})"),
                None => value.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn condition(f: &Facts, type_: &str) -> String {
    f.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "Unknown".into())
}

/// The decision in a few words (`ebb explain` says it in full).
fn decision(f: &Facts) -> String {
    if f.paused.is_some() {
        return "paused".into();
    }
    match f.decision {
        None => "<unknown>".into(),
        Some(Decision::Rest) => "at rest".into(),
        Some(Decision::Activate { to }) => format!("activate to {to}"),
        Some(Decision::StayActive) => "active (HPA)".into(),
        Some(Decision::HoldOnError) => "hold (trigger error)".into(),
        Some(Decision::CoolingDown { until }) => {
            format!("cooldown, {} left", age(until.duration_since(f.now)))
        }
        Some(Decision::Deactivate { to }) => format!("deactivate to {to}"),
        Some(Decision::RaiseToMin { to }) => format!("raise to {to}"),
        Some(Decision::Withheld { to, .. }) => format!("withheld ({to})"),
    }
}

/// A duration as kubectl prints ages: `45s`, `3m20s`, `2h5m`, `3d4h`, `1y20d`.
pub fn age(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let (days, years) = (hours / 24, hours / (24 * 365));
    match () {
        _ if seconds < 120 => format!("{seconds}s"),
        _ if minutes < 10 && seconds % 60 == 0 => format!("{minutes}m"),
        _ if minutes < 10 => format!("{minutes}m{}s", seconds % 60),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 && minutes % 60 == 0 => format!("{hours}h"),
        _ if hours < 8 => format!("{hours}h{}m", minutes % 60),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 192 && hours % 24 == 0 => format!("{days}d"),
        _ if hours < 192 => format!("{days}d{}h", hours % 24),
        _ if years < 2 => format!("{days}d"),
        _ if years < 8 && days % 365 == 0 => format!("{years}y"),
        _ if years < 8 => format!("{years}y{}d", days % 365),
        _ => format!("{years}y"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::MetricFacts;
    use ebb_crds::Condition;

    fn facts(decision: Option<Decision>) -> Facts {
        let now: Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        Facts {
            object: "shop/orders".into(),
            target: "apps/v1.Deployment orders-worker".into(),
            replicas: Ok(3),
            bounds: (0, 20, None),
            conditions: vec![
                Condition {
                    type_: CONDITION_READY.into(),
                    status: "True".into(),
                    ..Default::default()
                },
                Condition {
                    type_: CONDITION_ACTIVE.into(),
                    status: "True".into(),
                    ..Default::default()
                },
            ],
            metrics: vec![
                MetricFacts {
                    name: "s0-redis-orders".into(),
                    value: Ok("12".into()),
                    target: Some(("AverageValue".into(), "5".into())),
                    active: Some(true),
                    failures: Some(0),
                },
                MetricFacts {
                    name: "s1-rabbitmq-orders".into(),
                    value: Err("connection refused".into()),
                    target: Some(("Value".into(), "10".into())),
                    active: Some(false),
                    failures: Some(2),
                },
            ],
            hpa: None,
            paused: None,
            last_active: None,
            decision,
            now,
        }
    }

    fn row(namespace: &str, name: &str, decision: Option<Decision>) -> Row {
        Row {
            namespace: namespace.into(),
            name: name.into(),
            triggers: vec!["redis".into(), "rabbitmq".into()],
            created: Some("2026-12-05T11:56:40Z".parse().unwrap()),
            facts: facts(decision),
        }
    }

    #[test]
    fn the_table_aligns_columns_as_kubectl_does() {
        let rows = [
            row("shop", "orders", Some(Decision::StayActive)),
            row("shop", "a-much-longer-name", Some(Decision::Rest)),
        ];
        let table = table(&rows, false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[0].starts_with("NAME                 TARGET   "),
            "{table}"
        );
        // Every column starts at the same offset on every line.
        for header in ["TARGET", "TRIGGERS", "READINGS", "DECISION", "AGE"] {
            let at = lines[0].find(header).unwrap();
            for line in &lines[1..] {
                assert_ne!(&line[at..=at], " ", "{header} misaligned:\n{table}");
                assert_eq!(&line[at - 3..at], "   ", "{header} misaligned:\n{table}");
            }
        }
        assert!(
            lines[1].contains("Deployment/orders-worker")
                && lines[1].contains("redis,rabbitmq")
                && lines[1].contains("12 (target 5/pod), <unknown> (target 10)")
                && lines[1].contains("active (HPA)")
                && lines[1].ends_with("3m20s"),
            "{table}"
        );
        assert!(lines[2].contains("at rest"), "{table}");
    }

    #[test]
    fn all_namespaces_puts_the_namespace_first() {
        let table = table(&[row("shop", "orders", None)], true);
        assert!(table.starts_with("NAMESPACE   NAME     TARGET"), "{table}");
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .starts_with("shop        orders   ")
        );
    }

    #[test]
    fn each_decision_has_a_short_name() {
        let until = "2026-12-05T12:04:30Z".parse().unwrap();
        for (d, text) in [
            (Decision::Activate { to: 1 }, "activate to 1"),
            (Decision::CoolingDown { until }, "cooldown, 4m30s left"),
            (Decision::Deactivate { to: 0 }, "deactivate to 0"),
            (Decision::HoldOnError, "hold (trigger error)"),
            (Decision::RaiseToMin { to: 2 }, "raise to 2"),
        ] {
            assert_eq!(decision(&facts(Some(d))), text);
        }
        let mut paused = facts(Some(Decision::Rest));
        paused.paused = Some("paused".into());
        assert_eq!(decision(&paused), "paused");
    }

    #[test]
    fn documents_carry_every_metric_and_follow_kubectl_list_shape() {
        let rows = [row("shop", "orders", Some(Decision::StayActive))];
        let list = documents(&rows, &Scope::Namespace("shop".into()));
        assert_eq!(list["kind"], "List");
        let item = &list["items"][0];
        assert_eq!(item["metadata"]["name"], "orders");
        assert_eq!(item["metrics"][0]["value"], "12");
        assert_eq!(item["metrics"][1]["error"], "connection refused");
        assert_eq!(item["metrics"][1]["failures"], 2);
        assert_eq!(item["conditions"]["Ready"], "True");
        assert_eq!(item["decision"], "active (HPA)");
        let named = |names: &[&str]| Scope::Objects {
            namespace: "shop".into(),
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        let one = documents(&rows, &named(&["orders"]));
        assert_eq!(one["metadata"]["name"], "orders");
        // Several names give a List, even of one found.
        assert_eq!(
            documents(&rows, &named(&["orders", "orders"]))["kind"],
            "List"
        );
        assert_eq!(names(&rows), "scaledobject.keda.sh/orders\n");
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        for (seconds, text) in [
            (-5, "<invalid>"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (3600, "60m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 300, "3h5m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (40 * 86400, "40d"),
            (3 * 365 * 86400 + 20 * 86400, "3y20d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(age(SignedDuration::from_secs(seconds)), text, "{seconds} s");
        }
    }
}
