//! The CRDs' CEL rules and objects stored before them: such an object stays readable, can be
//! labelled, have its status written and be deleted (its finalizer taken off), because the
//! apiserver ratchets validation over a spec that did not change; a change to its spec must
//! then satisfy the rules. Here because it swaps the cluster's ScaledObject CRD for one without
//! the rules for a moment, which would let the suite's tests store what they expect refused.

use std::time::Duration;

use ebb_crds::ScaledObject;
use integration_tests::{ensure, eventually, setup};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(30);
/// The field manager the test harness installs the CRDs with: applying as it replaces them.
const MANAGER: &str = "ebb-integration-tests";

/// The committed ScaledObject CRD, with or without its `x-kubernetes-validations`.
fn scaled_object_crd(with_rules: bool) -> Value {
    let crd = ebb_crds::crds()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some("scaledobjects.keda.sh"))
        .expect("the ScaledObject CRD");
    let mut value = serde_json::to_value(crd).expect("json");
    fn strip(node: &mut Value) {
        match node {
            Value::Object(map) => {
                map.remove("x-kubernetes-validations");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    if !with_rules {
        strip(&mut value);
    }
    value
}

fn min_above_max(name: &str) -> ScaledObject {
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "finalizers": ["finalizer.keda.sh"]},
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": 5,
            "maxReplicaCount": 2,
            "triggers": [{"type": "redis", "metadata": {"address": "r:6379", "listName": "q"}}]
        }
    }))
    .expect("a ScaledObject")
}

#[tokio::test]
async fn an_object_stored_before_the_cel_rules_can_still_be_labelled_and_deleted() {
    let _serial = crate::serial().await;
    let env = setup("crd-rules").await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let objects: Api<ScaledObject> = env.api();
    let apply = |with_rules: bool| {
        let crds = crds.clone();
        async move {
            crds.patch(
                "scaledobjects.keda.sh",
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(scaled_object_crd(with_rules)),
            )
            .await
            .expect("applying the ScaledObject CRD");
        }
    };

    // Stored under a CRD without the rules (as under an older ebb's, or KEDA's before 2.17).
    apply(false).await;
    eventually("the rule-less CRD to store min > max", DEADLINE, || async {
        objects
            .create(&PostParams::default(), &min_above_max("legacy"))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    objects
        .create(&PostParams::default(), &min_above_max("legacy-2"))
        .await
        .expect("a second one");
    // The rules back: a new such object is refused.
    apply(true).await;
    let refused = eventually("the rules to refuse min > max again", DEADLINE, || async {
        match objects
            .create(&PostParams::default(), &min_above_max("fresh"))
            .await
        {
            Err(kube::Error::Api(e)) => Ok(e.message),
            Ok(_) => {
                let _ = objects.delete("fresh", &DeleteParams::default()).await;
                Err("stored".to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert!(
        refused.contains("minReplicaCount must be less than or equal to maxReplicaCount"),
        "{refused}"
    );

    // The stored one: readable, labelled, its status written.
    let stored = objects.get("legacy").await.expect("readable");
    assert_eq!(stored.spec.min_replica_count, Some(5));
    objects
        .patch(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "orders"}}})),
        )
        .await
        .expect("a label on an object the rules would refuse");
    objects
        .patch_status(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"hpaName": "keda-hpa-legacy"}})),
        )
        .await
        .expect("its status");
    // A change to its spec must satisfy the rules.
    let changed = objects
        .patch(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pollingInterval": 10}})),
        )
        .await
        .expect_err("a spec change keeping min > max");
    assert!(
        changed
            .to_string()
            .contains("minReplicaCount must be less than or equal to maxReplicaCount"),
        "{changed}"
    );
    objects
        .patch(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxReplicaCount": 10}})),
        )
        .await
        .expect("a spec change that satisfies the rules");
    // The other, still breaking the rules, deleted: its finalizer comes off, and it goes.
    objects
        .delete("legacy-2", &DeleteParams::default())
        .await
        .expect("delete");
    objects
        .patch(
            "legacy-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("the finalizer off an object the rules would refuse");
    eventually("the object gone", DEADLINE, || async {
        let left = objects
            .get_opt("legacy-2")
            .await
            .map_err(|e| e.to_string())?;
        ensure(left.is_none(), || format!("{left:?}"))
    })
    .await;
    objects
        .delete("legacy", &DeleteParams::default())
        .await
        .expect("delete");
    objects
        .patch(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("the finalizer off");
}
