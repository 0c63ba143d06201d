//! ebb's replica handling over time, each case on the real apiserver, HPA controller and Redis
//! with ebb in process: restoreToOriginalReplicaCount, minReplicaCount >= 1, idleReplicaCount,
//! and the paused, paused-replicas and paused-scale-in annotations (a paused object's HPA delete
//! included, when the apiserver refuses it).

use std::time::Duration;

use ebb_crds::ScaledObject;
use integration_tests::{TestEnv, deployment, ensure, eventually, setup, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);
/// How long a count is watched to show it does not change.
const OBSERVATION: Duration = Duration::from_secs(5);
/// The Redis database these tests' lists live in.
const DB: i64 = 10;

/// A Redis list for one test, emptied, and a connection to fill it.
struct List {
    name: String,
    conn: redis::aio::MultiplexedConnection,
}

impl List {
    async fn new(env: &TestEnv) -> Self {
        let conn = redis::Client::open(format!("{}/{DB}", env.cluster.redis_url))
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        Self {
            name: unique_name("jobs"),
            conn,
        }
    }

    async fn push(&mut self, n: usize) {
        let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let _: () = redis::cmd("RPUSH")
            .arg(&self.name)
            .arg(items)
            .query_async(&mut self.conn)
            .await
            .expect("RPUSH");
    }
}

/// The manifest of a ScaledObject `name` on Deployment `worker` with a redis trigger on `list`
/// (target 5, activation 2), polled every second, with `spec` merged in and `annotations` set.
fn scaled_object(env: &TestEnv, name: &str, list: &List, spec: Value, annotations: Value) -> Value {
    let mut base = json!({
        "scaleTargetRef": {"name": "worker"},
        "pollingInterval": 1,
        "cooldownPeriod": 1,
        "triggers": [{
            "type": "redis",
            "metadata": {
                "address": env.cluster.redis_url.trim_start_matches("redis://"),
                "listName": list.name,
                "listLength": "5",
                "activationListLength": "2",
                "databaseIndex": DB.to_string()
            }
        }]
    });
    if let (Some(base), Some(extra)) = (base.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "annotations": annotations},
        "spec": base
    })
}

/// Creates Deployment `worker` with `replicas`, then the ScaledObject `so`.
async fn create(env: &TestEnv, replicas: i32, so: Value) {
    let worker = deployment("worker", replicas, &[]);
    env.create::<Deployment>(serde_json::to_value(worker).expect("json"))
        .await;
    env.create::<ScaledObject>(so).await;
}

async fn until_replicas(env: &TestEnv, want: i32, what: &str) {
    eventually(what, DEADLINE, || async {
        let n = env.replicas("worker").await?;
        ensure(n == want, || format!("replicas {n}, want {want}"))
    })
    .await;
}

/// Waits for at least `want` (the HPA may take an active target further).
async fn until_at_least(env: &TestEnv, want: i32, what: &str) {
    eventually(what, DEADLINE, || async {
        let n = env.replicas("worker").await?;
        ensure(n >= want, || format!("replicas {n}, want at least {want}"))
    })
    .await;
}

/// Asserts the count stays `want` for the observation period.
async fn stays(env: &TestEnv, want: i32, what: &str) {
    let end = tokio::time::Instant::now() + OBSERVATION;
    while tokio::time::Instant::now() < end {
        assert_eq!(env.replicas("worker").await, Ok(want), "{what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn annotate(env: &TestEnv, name: &str, annotations: Value) {
    env.api::<ScaledObject>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
        )
        .await
        .expect("annotate");
}

#[tokio::test]
async fn restore_to_original_replica_count_on_delete() {
    let env = setup("operator-restore").await;
    let _ebb = env.start_ebb();
    let list = List::new(&env).await;
    let so = scaled_object(
        &env,
        "worker",
        &list,
        json!({"advanced": {"restoreToOriginalReplicaCount": true}}),
        json!({}),
    );
    create(&env, 2, so).await;
    // Never active, initial cooldown 0: straight to zero.
    until_replicas(&env, 0, "scaled to zero while inactive").await;
    env.delete_scaled_objects().await;
    until_replicas(&env, 2, "the original 2 restored on delete").await;
}

#[tokio::test]
async fn min_replica_count_raises_a_target_at_zero() {
    let env = setup("operator-min").await;
    let _ebb = env.start_ebb();
    let list = List::new(&env).await;
    let so = scaled_object(
        &env,
        "worker",
        &list,
        json!({"minReplicaCount": 2}),
        json!({}),
    );
    create(&env, 0, so).await;
    until_replicas(&env, 2, "raised to minReplicaCount").await;
    stays(&env, 2, "held at min while inactive").await;
    env.delete_scaled_objects().await;
}

#[tokio::test]
async fn idle_replica_count_rests_and_activation_goes_to_min() {
    let env = setup("operator-idle").await;
    let _ebb = env.start_ebb();
    let mut list = List::new(&env).await;
    let so = scaled_object(
        &env,
        "worker",
        &list,
        json!({"idleReplicaCount": 0, "minReplicaCount": 2, "maxReplicaCount": 4}),
        json!({}),
    );
    create(&env, 0, so).await;
    stays(&env, 0, "resting at the idle count while inactive").await;
    list.push(3).await;
    until_replicas(&env, 2, "activated to minReplicaCount").await;
    env.delete_scaled_objects().await;
}

#[tokio::test]
async fn paused_replicas_hold_the_target_without_an_hpa() {
    let env = setup("operator-paused-replicas").await;
    let _ebb = env.start_ebb();
    let list = List::new(&env).await;
    let so = scaled_object(
        &env,
        "worker",
        &list,
        json!({}),
        json!({"autoscaling.keda.sh/paused-replicas": "3"}),
    );
    create(&env, 1, so).await;
    until_replicas(&env, 3, "held at the paused count").await;
    eventually("Paused=True and pausedReplicaCount 3", DEADLINE, || async {
        let so = env
            .api::<ScaledObject>()
            .get("worker")
            .await
            .map_err(|e| e.to_string())?;
        let (paused, _, _) = env.condition("worker", "Paused").await?;
        let count = so.status.and_then(|s| s.paused_replica_count);
        ensure(paused == "True" && count == Some(3), || {
            format!("Paused={paused} pausedReplicaCount={count:?}")
        })
    })
    .await;
    assert!(
        env.api::<HorizontalPodAutoscaler>()
            .get_opt("keda-hpa-worker")
            .await
            .expect("get")
            .is_none(),
        "no HPA while paused"
    );
    stays(&env, 3, "inactive, but paused at 3").await;

    // Unpaused: the HPA appears and the object scales again (inactive: to zero).
    annotate(
        &env,
        "worker",
        json!({"autoscaling.keda.sh/paused-replicas": null}),
    )
    .await;
    until_replicas(&env, 0, "scaled to zero once unpaused").await;
    eventually("the HPA once unpaused", DEADLINE, || async {
        env.api::<HorizontalPodAutoscaler>()
            .get("keda-hpa-worker")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    env.delete_scaled_objects().await;
}

#[tokio::test]
async fn paused_leaves_replicas_alone() {
    let env = setup("operator-paused").await;
    let _ebb = env.start_ebb();
    let mut list = List::new(&env).await;
    list.push(10).await;
    let so = scaled_object(
        &env,
        "worker",
        &list,
        json!({}),
        json!({"autoscaling.keda.sh/paused": "true"}),
    );
    create(&env, 0, so).await;
    eventually("Paused=True", DEADLINE, || async {
        let (paused, _, _) = env.condition("worker", "Paused").await?;
        ensure(paused == "True", || format!("Paused={paused}"))
    })
    .await;
    stays(&env, 0, "active, but paused").await;
    annotate(&env, "worker", json!({"autoscaling.keda.sh/paused": null})).await;
    until_at_least(&env, 1, "activated once unpaused").await;
    env.delete_scaled_objects().await;
}

/// While the apiserver refuses to delete a paused object's HPA (here a ValidatingAdmissionPolicy
/// denies it), ebb does not report the object paused: it counts the failure and tries again, and
/// the HPA goes once the apiserver lets it. Only a 404 (already gone) counts as deleted.
#[tokio::test]
async fn a_refused_hpa_delete_is_retried_until_the_hpa_is_gone() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use kube::api::{Api, DeleteParams, PostParams};

    let env = setup("operator-paused-hpa-refused").await;
    let ebb = env.start_ebb();
    let list = List::new(&env).await;
    create(
        &env,
        0,
        scaled_object(&env, "worker", &list, json!({}), json!({})),
    )
    .await;
    let hpas = env.api::<HorizontalPodAutoscaler>();
    eventually("the HPA", DEADLINE, || async {
        hpas.get("keda-hpa-worker").await.map_err(|e| e.to_string())
    })
    .await;

    // Deny every HPA delete in this namespace.
    let name = unique_name("deny-hpa-delete");
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(env.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(env.client.clone());
    let policy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["autoscaling"], "apiVersions": ["*"],
                "operations": ["DELETE"], "resources": ["horizontalpodautoscalers"]
            }]},
            "validations": [{"expression": "false", "message": "HPA deletes are denied here"}]
        }
    }))
    .expect("policy");
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("create the policy");
    let binding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": env.namespace}
            }}
        }
    }))
    .expect("binding");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the binding");
    // The apiserver loads policies asynchronously: a dry-run delete tells when it enforces it.
    eventually("the policy enforced", DEADLINE, || async {
        match hpas
            .delete("keda-hpa-worker", &DeleteParams::default().dry_run())
            .await
        {
            Err(kube::Error::Api(status)) if status.code != 404 => Ok(()),
            other => Err(format!("a dry-run delete gave {other:?}")),
        }
    })
    .await;

    let failed_before = ebb.ctx.metrics.reconcile_errors("api");
    annotate(
        &env,
        "worker",
        json!({"autoscaling.keda.sh/paused": "true"}),
    )
    .await;
    eventually("the refused delete counted", DEADLINE, || async {
        let failed = ebb.ctx.metrics.reconcile_errors("api");
        ensure(failed >= failed_before + 2, || {
            format!("{failed} failed reconciles (api), {failed_before} before: not retried")
        })
    })
    .await;
    assert!(
        hpas.get_opt("keda-hpa-worker")
            .await
            .expect("get")
            .is_some(),
        "the apiserver refused the delete, so the HPA is still there"
    );
    let paused = env.condition("worker", "Paused").await.map(|c| c.0);
    assert_ne!(
        paused.as_deref(),
        Ok("True"),
        "Paused=True while the HPA still scales the target"
    );

    // Allowed again: the next retry deletes the HPA and the object is paused.
    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete the binding");
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete the policy");
    eventually("the HPA deleted and Paused=True", DEADLINE, || async {
        let hpa = hpas
            .get_opt("keda-hpa-worker")
            .await
            .map_err(|e| e.to_string())?;
        let (paused, _, _) = env.condition("worker", "Paused").await?;
        ensure(hpa.is_none() && paused == "True", || {
            format!("HPA present: {}, Paused={paused}", hpa.is_some())
        })
    })
    .await;
    env.delete_scaled_objects().await;
}

/// Renaming the HPA (`advanced.horizontalPodAutoscalerConfig.name`) deletes the HPA of the old
/// name: two HPAs must never scale one workload.
#[tokio::test]
async fn renaming_the_hpa_deletes_the_old_one() {
    let env = setup("operator-hpa-rename").await;
    let _ebb = env.start_ebb();
    let list = List::new(&env).await;
    create(
        &env,
        1,
        scaled_object(
            &env,
            "worker",
            &list,
            json!({"minReplicaCount": 1}),
            json!({}),
        ),
    )
    .await;
    let hpas = env.api::<HorizontalPodAutoscaler>();
    eventually("the HPA", DEADLINE, || async {
        hpas.get("keda-hpa-worker").await.map_err(|e| e.to_string())
    })
    .await;
    env.api::<ScaledObject>()
        .patch(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"advanced": {
                "horizontalPodAutoscalerConfig": {"name": "worker-hpa"}
            }}})),
        )
        .await
        .expect("rename the HPA");
    eventually("only the HPA of the new name", DEADLINE, || async {
        let names: Vec<String> = hpas
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter_map(|h| h.metadata.name)
            .collect();
        ensure(names == ["worker-hpa"], || format!("{names:?}"))
    })
    .await;
    env.delete_scaled_objects().await;
}

/// KEDA's `scaledobject.keda.sh/transfer-hpa-ownership`: a ScaledObject naming a user's
/// existing HPA takes it over (its owner, spec and labels become the object's), no second HPA
/// appears, and deleting the object deletes the HPA it now owns.
#[tokio::test]
async fn an_existing_hpa_is_taken_over_with_transfer_hpa_ownership() {
    let env = setup("operator-hpa-transfer").await;
    let _ebb = env.start_ebb();
    let list = List::new(&env).await;
    let worker = deployment("worker", 2, &[]);
    env.create::<Deployment>(serde_json::to_value(worker).expect("json"))
        .await;
    // The user's HPA, on CPU, made before ebb was installed.
    env.create::<HorizontalPodAutoscaler>(json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "legacy", "labels": {"team": "shop"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}
            }}]
        }
    }))
    .await;
    env.create::<ScaledObject>(scaled_object(
        &env,
        "worker",
        &list,
        json!({
            "minReplicaCount": 1,
            "maxReplicaCount": 7,
            "advanced": {"horizontalPodAutoscalerConfig": {"name": "legacy"}}
        }),
        json!({"scaledobject.keda.sh/transfer-hpa-ownership": "true"}),
    ))
    .await;
    let uid = env
        .api::<ScaledObject>()
        .get("worker")
        .await
        .expect("the ScaledObject")
        .metadata
        .uid
        .expect("a uid");
    let hpas = env.api::<HorizontalPodAutoscaler>();
    eventually("the HPA legacy is the ScaledObject's", DEADLINE, || async {
        let hpa = hpas.get("legacy").await.map_err(|e| e.to_string())?;
        let owned = hpa
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.controller == Some(true));
        let spec = hpa.spec.clone().unwrap_or_default();
        let metric_types: Vec<String> = spec
            .metrics
            .iter()
            .flatten()
            .map(|m| m.type_.clone())
            .collect();
        let labelled = hpa
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("scaledobject.keda.sh/name"))
            .map(String::as_str)
            == Some("worker");
        ensure(
            owned
                && labelled
                && spec.min_replicas == Some(1)
                && spec.max_replicas == 7
                && metric_types == ["External"],
            || format!("owned {owned}, labelled {labelled}, spec {spec:?}"),
        )
    })
    .await;
    let names: Vec<String> = hpas
        .list(&Default::default())
        .await
        .expect("HPAs")
        .items
        .into_iter()
        .filter_map(|h| h.metadata.name)
        .collect();
    assert_eq!(names, ["legacy"], "one HPA for the workload");

    env.delete_scaled_objects().await;
    eventually("the HPA it took over goes with it", DEADLINE, || async {
        match hpas.get_opt("legacy").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("legacy still exists".to_string()),
        }
    })
    .await;
}

#[tokio::test]
async fn paused_scale_in_blocks_the_step_to_zero() {
    let env = setup("operator-paused-scale-in").await;
    let _ebb = env.start_ebb();
    let list = List::new(&env).await;
    let so = scaled_object(
        &env,
        "worker",
        &list,
        json!({}),
        json!({"autoscaling.keda.sh/paused-scale-in": "true"}),
    );
    create(&env, 3, so).await;
    let hpa = eventually("the HPA", DEADLINE, || async {
        env.api::<HorizontalPodAutoscaler>()
            .get("keda-hpa-worker")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let behavior = serde_json::to_value(hpa.spec.and_then(|s| s.behavior)).expect("json");
    assert_eq!(behavior["scaleDown"]["selectPolicy"], "Disabled");
    // As in KEDA: one paused direction is Paused=True, with its Event.
    eventually("Paused=True ScaledObjectPaused", DEADLINE, || async {
        let (paused, reason, _) = env.condition("worker", "Paused").await?;
        ensure(paused == "True" && reason == "ScaledObjectPaused", || {
            format!("Paused={paused} {reason}")
        })
    })
    .await;
    stays(
        &env,
        3,
        "inactive past the cooldown, but scale-in is paused",
    )
    .await;
    annotate(
        &env,
        "worker",
        json!({"autoscaling.keda.sh/paused-scale-in": null}),
    )
    .await;
    until_replicas(&env, 0, "scaled in once resumed").await;
    let (paused, _, _) = env.condition("worker", "Paused").await.expect("Paused");
    assert_eq!(paused, "False");
    env.delete_scaled_objects().await;
    // KEDA's Events: paused, unpaused once the annotation went, deleted.
    eventually(
        "ScaledObjectPaused, Unpaused and Deleted",
        DEADLINE,
        || async {
            let reasons: Vec<String> = env
                .events_of("worker")
                .await?
                .into_iter()
                .filter_map(|e| e.reason)
                .collect();
            ensure(
                [
                    "ScaledObjectPaused",
                    "ScaledObjectUnpaused",
                    "ScaledObjectDeleted",
                ]
                .iter()
                .all(|r| reasons.iter().filter(|x| x == r).count() == 1),
                || format!("{reasons:?}"),
            )
        },
    )
    .await;
}

#[tokio::test]
async fn paused_scale_out_blocks_the_step_from_zero() {
    let env = setup("operator-paused-scale-out").await;
    let _ebb = env.start_ebb();
    let mut list = List::new(&env).await;
    list.push(10).await;
    let so = scaled_object(
        &env,
        "worker",
        &list,
        json!({}),
        json!({"autoscaling.keda.sh/paused-scale-out": "true"}),
    );
    create(&env, 0, so).await;
    let hpa = eventually("the HPA", DEADLINE, || async {
        env.api::<HorizontalPodAutoscaler>()
            .get("keda-hpa-worker")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let behavior = serde_json::to_value(hpa.spec.and_then(|s| s.behavior)).expect("json");
    assert_eq!(behavior["scaleUp"]["selectPolicy"], "Disabled");
    stays(&env, 0, "active, but scale-out is paused").await;
    annotate(
        &env,
        "worker",
        json!({"autoscaling.keda.sh/paused-scale-out": null}),
    )
    .await;
    until_at_least(&env, 1, "activated once resumed").await;
    env.delete_scaled_objects().await;
}
