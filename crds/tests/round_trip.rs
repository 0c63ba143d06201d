//! KEDA objects survive ebb's Rust types and ebb's schema with no field lost.

use ebb_crds::scaled_object::{FallbackBehavior, ScaledObjectStatus};
use ebb_crds::{
    ClusterTriggerAuthentication, ScaledJob, ScaledObject, TriggerAuthentication, crds,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn documents(name: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(&fixture(name))
        .map(|doc| Value::deserialize_from(doc))
        .collect()
}

trait FromYamlDoc {
    fn deserialize_from(doc: serde_norway::Deserializer<'_>) -> Value;
}

impl FromYamlDoc for Value {
    fn deserialize_from(doc: serde_norway::Deserializer<'_>) -> Value {
        serde::Deserialize::deserialize(doc).expect("fixture is valid YAML")
    }
}

/// Deserializes into `T` and serializes back; the JSON must be unchanged.
fn assert_round_trips<T: DeserializeOwned + Serialize>(original: &Value, what: &str) {
    let typed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|e| panic!("{what} does not deserialize: {e}"));
    let back = serde_json::to_value(&typed).expect("serializes");
    assert_eq!(
        &back, original,
        "{what} lost or changed fields in the Rust types"
    );
}

#[test]
fn every_scaled_object_field_survives_the_rust_types() {
    for doc in documents("scaledobject-every-field.yaml") {
        assert_round_trips::<ScaledObject>(&doc, "ScaledObject every-field fixture");
    }
    for doc in documents("keda-redis-list.yaml") {
        match doc["kind"].as_str() {
            Some("ScaledObject") => {
                assert_round_trips::<ScaledObject>(&doc, "KEDA docs ScaledObject")
            }
            Some("TriggerAuthentication") => {
                assert_round_trips::<TriggerAuthentication>(&doc, "KEDA docs TriggerAuthentication")
            }
            other => panic!("unexpected kind {other:?}"),
        }
    }
    let status = documents("scaledobject-status-every-field.yaml").remove(0);
    assert_round_trips::<ScaledObjectStatus>(&status, "ScaledObject status fixture");
}

#[test]
fn every_scaled_job_field_survives_the_rust_types() {
    let sj = documents("scaledjob-every-field.yaml").remove(0);
    assert_round_trips::<ScaledJob>(&sj, "ScaledJob every-field fixture");
    let typed: ScaledJob = serde_json::from_value(sj).expect("deserializes");
    assert_eq!(typed.spec.rollout_strategy(), "gradual");
    assert!(typed.spec.rollout_in_foreground());
    // The deprecated rolloutStrategy is read first, as KEDA reads it.
    let mut spec = typed.spec.clone();
    spec.rollout_strategy = Some("default".into());
    assert_eq!(spec.rollout_strategy(), "default");
    spec.rollout_strategy = None;
    spec.rollout = None;
    assert_eq!(spec.rollout_strategy(), "default");
    assert!(!spec.rollout_in_foreground());
    assert_eq!(
        (
            spec.polling_interval_seconds(),
            spec.min_replicas(),
            spec.max_replicas()
        ),
        (30, 0, 100)
    );
    let status = typed.status.expect("a status");
    assert_eq!(status.paused.as_deref(), Some("false"));
}

#[test]
fn every_trigger_authentication_field_survives_the_rust_types() {
    let ta = documents("triggerauthentication-every-field.yaml").remove(0);
    assert_round_trips::<TriggerAuthentication>(&ta, "TriggerAuthentication fixture");
    let cta = documents("clustertriggerauthentication-every-field.yaml").remove(0);
    assert_round_trips::<ClusterTriggerAuthentication>(
        &cta,
        "ClusterTriggerAuthentication fixture",
    );
}

/// Walks `value` alongside `schema` and records every key the schema does not declare: the
/// apiserver would prune those.
fn undeclared(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
                return;
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                match (props.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) | (None, Some(s)) => undeclared(child, s, &child_path, out),
                    (None, None) => out.push(child_path),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    undeclared(item, item_schema, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn schema_of(kind: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    let json = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema serializes");
    json["openAPIV3Schema"].clone()
}

#[test]
fn every_fixture_field_is_declared_in_the_schema() {
    let cases = [
        (
            "ScaledObject",
            documents("scaledobject-every-field.yaml").remove(0),
        ),
        (
            "ScaledJob",
            documents("scaledjob-every-field.yaml").remove(0),
        ),
        (
            "TriggerAuthentication",
            documents("triggerauthentication-every-field.yaml").remove(0),
        ),
        (
            "ClusterTriggerAuthentication",
            documents("clustertriggerauthentication-every-field.yaml").remove(0),
        ),
    ];
    for (kind, mut doc) in cases {
        // apiVersion, kind and metadata are the apiserver's own schema, not ours.
        let root = doc.as_object_mut().expect("object");
        for key in ["apiVersion", "kind", "metadata"] {
            root.remove(key);
        }
        let mut missing = Vec::new();
        undeclared(&doc, &schema_of(kind), "", &mut missing);
        assert!(missing.is_empty(), "{kind} schema would prune {missing:?}");
    }
    let status = documents("scaledobject-status-every-field.yaml").remove(0);
    let mut missing = Vec::new();
    undeclared(
        &status,
        &schema_of("ScaledObject")["properties"]["status"],
        ".status",
        &mut missing,
    );
    assert!(
        missing.is_empty(),
        "ScaledObject status schema would prune {missing:?}"
    );
}

#[test]
fn schema_declares_no_defaults_beyond_keda_s() {
    // A default in the schema is written into stored objects; KEDA's CRD has exactly these.
    fn defaults(node: &Value, path: &str, out: &mut Vec<String>) {
        if let Some(obj) = node.as_object() {
            if obj.contains_key("default") {
                out.push(path.to_string());
            }
            for (k, v) in obj {
                defaults(v, &format!("{path}/{k}"), out);
            }
        }
    }
    let mut found = Vec::new();
    for crd in crds() {
        let json = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        defaults(&json, &crd.spec.names.kind, &mut found);
    }
    assert_eq!(
        found,
        vec![
            "ScaledObject/openAPIV3Schema/properties/spec/properties/fallback/properties/behavior",
            "TriggerAuthentication/openAPIV3Schema/properties/spec/properties/oauth2/properties/type",
            "ClusterTriggerAuthentication/openAPIV3Schema/properties/spec/properties/oauth2/properties/type",
        ]
    );
}

#[test]
fn accessors_apply_keda_defaults() {
    let doc = documents("keda-redis-list.yaml")
        .into_iter()
        .find(|d| d["kind"] == "ScaledObject")
        .expect("ScaledObject in fixture");
    let mut so: ScaledObject = serde_json::from_value(doc).expect("deserializes");
    so.spec.polling_interval = None;
    so.spec.cooldown_period = None;
    so.spec.min_replica_count = None;
    so.spec.max_replica_count = None;
    assert_eq!(so.spec.polling_interval_seconds(), 30);
    assert_eq!(so.spec.cooldown_period_seconds(), 300);
    assert_eq!(so.spec.initial_cooldown_period_seconds(), 0);
    assert_eq!(so.spec.min_replicas(), 0);
    assert_eq!(so.spec.max_replicas(), 100);
    assert!(!so.spec.restore_to_original_replica_count());
}

#[test]
fn fallback_behavior_parses_every_keda_value_and_reports_others() {
    let so: ScaledObject =
        serde_json::from_value(documents("scaledobject-every-field.yaml").remove(0)).expect("so");
    let mut fallback = so.spec.fallback.expect("fixture has a fallback");
    for (text, parsed) in [
        (None, FallbackBehavior::Static),
        (Some("static"), FallbackBehavior::Static),
        (Some("currentReplicas"), FallbackBehavior::CurrentReplicas),
        (
            Some("currentReplicasIfHigher"),
            FallbackBehavior::CurrentReplicasIfHigher,
        ),
        (
            Some("currentReplicasIfLower"),
            FallbackBehavior::CurrentReplicasIfLower,
        ),
        (Some("scalingModifiers"), FallbackBehavior::ScalingModifiers),
    ] {
        fallback.behavior = text.map(String::from);
        assert_eq!(fallback.behavior(), Ok(parsed), "{text:?}");
    }
    fallback.behavior = Some("sometimes".into());
    assert_eq!(fallback.behavior(), Err("sometimes".to_string()));
}

#[test]
fn unsupported_providers_are_named() {
    let ta: TriggerAuthentication =
        serde_json::from_value(documents("triggerauthentication-every-field.yaml").remove(0))
            .expect("ta");
    assert_eq!(
        ta.spec.unsupported_providers(),
        vec![
            "podIdentity",
            "hashiCorpVault",
            "azureKeyVault",
            "gcpSecretManager",
            "awsSecretManager",
            "oauth2",
            "azureServicePrincipal",
        ]
    );
    let plain: TriggerAuthentication = serde_json::from_value(
        documents("keda-redis-list.yaml")
            .into_iter()
            .find(|d| d["kind"] == "TriggerAuthentication")
            .expect("ta"),
    )
    .expect("ta");
    assert!(plain.spec.unsupported_providers().is_empty());
}
