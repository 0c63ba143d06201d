//! What the admission webhook reads: an AdmissionReview body, whole or cut, its object's kind
//! and spec arbitrary. Any body is answered with a review (allowed or denied, the request's
//! uid echoed) or refused as a bad request, never a panic; a denial always carries a message,
//! and a DELETE is never denied.

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use ebb_operator::admission::checks::{Neighbours, PeerHpa, Workload};
use ebb_operator::admission::review::{Lookups, answer};
use ebb_scalers::Registry;
use k8s_openapi::api::core::v1::{LimitRange, PodSpec};
use serde_json::{Value, json};

const KINDS: &[&str] = &[
    "ScaledObject",
    "ScaledJob",
    "TriggerAuthentication",
    "ClusterTriggerAuthentication",
    "Pod",
];

const OPERATIONS: &[&str] = &["CREATE", "UPDATE", "DELETE", "CONNECT", "PATCH"];

const SPECS: &[&str] = &[
    r#"{"scaleTargetRef":{"name":"web"},"triggers":[{"type":"redis","metadata":{"address":"r:6379","listName":"q","listLength":"ten"}}]}"#,
    r#"{"scaleTargetRef":{"name":"web"},"minReplicaCount":0,"triggers":[{"type":"cpu","metricType":"Utilization","metadata":{"value":"50"}}]}"#,
    r#"{"scaleTargetRef":{"name":"web","kind":"StatefulSet"},"advanced":{"scalingModifiers":{"formula":"a +","target":"x"}},"triggers":[{"type":"redis","name":"a","metadata":{}}]}"#,
    r#"{"jobTargetRef":{"template":{"spec":{"containers":[]}}},"triggers":[{"type":"kafka","metadata":{"lagThreshold":"-1"}}]}"#,
    r#"{"podIdentity":{"provider":"azure-workload","identityId":""}}"#,
    r#"{"triggers":null}"#,
];

/// What one run reads from the fuzzer's bytes.
#[derive(Debug, Arbitrary)]
struct Input {
    kind: u8,
    operation: u8,
    spec: u8,
    name: String,
    mutate: Vec<(String, String)>,
    cut: Option<u16>,
    raw: Option<Vec<u8>>,
}

/// Neighbours with one foreign HPA on `web`, and a pod template without requests.
struct World;

#[ebb_operator::admission::review::async_trait]
impl Lookups for World {
    fn neighbours(&self, _: &ebb_crds::ScaledObject, _: &str) -> Neighbours {
        Neighbours {
            scaled_objects: Vec::new(),
            hpas: vec![PeerHpa {
                name: "web-hpa".into(),
                target: Workload::new(None, None, "web"),
                owner: None,
                unchecked: false,
            }],
        }
    }
    async fn pod_template(&self, _: &str, _: &Workload) -> Result<Option<PodSpec>, String> {
        Ok(serde_json::from_value(json!({"containers": [{"name": "app"}]})).ok())
    }
    async fn limit_ranges(&self, _: &str) -> Result<Vec<LimitRange>, String> {
        Ok(Vec::new())
    }
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::with_builtins)
}

/// Drives the webhook's answer with one input.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let kind = KINDS[usize::from(input.kind) % KINDS.len()];
    let operation = OPERATIONS[usize::from(input.operation) % OPERATIONS.len()];
    let mut spec: Value =
        serde_json::from_str(SPECS[usize::from(input.spec) % SPECS.len()]).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut spec {
        for (k, v) in input.mutate.iter().take(4) {
            map.insert(k.clone(), Value::String(v.clone()));
        }
    }
    let body = match input.raw {
        Some(raw) => raw,
        None => {
            let review = json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "u-1",
                    "kind": {"group": "keda.sh", "version": "v1alpha1", "kind": kind},
                    "resource": {"group": "keda.sh", "version": "v1alpha1", "resource": "x"},
                    "name": input.name,
                    "namespace": "shop",
                    "operation": operation,
                    "userInfo": {},
                    "object": {"apiVersion": "keda.sh/v1alpha1", "kind": kind,
                               "metadata": {"name": input.name, "namespace": "shop"}, "spec": spec}
                }
            });
            let mut bytes = serde_json::to_vec(&review).unwrap_or_default();
            if let Some(cut) = input.cut {
                bytes.truncate(usize::from(cut) % (bytes.len() + 1));
            }
            bytes
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build();
    let Ok(runtime) = runtime else {
        return;
    };
    let Ok(review) = runtime.block_on(answer(&body, registry(), &World)) else {
        return;
    };
    let response = review.response.expect("a review answers with a response");
    if !response.allowed {
        assert!(
            !response.result.message.is_empty(),
            "a denial without a message"
        );
        assert_ne!(operation, "DELETE", "a DELETE was denied");
    }
}
