//! How a TriggerAuthentication's parameters resolve, as in KEDA, with ebb in process against
//! the real apiserver and Redis: a parameter given by both a Secret and a ConfigMap takes the
//! Secret's value, and a Secret key that does not exist resolves to an empty parameter (here an
//! empty Redis password, which the dev cluster's Redis accepts) with one Warning Event naming the
//! Secret and key, instead of refusing the object.

use std::time::Duration;

use ebb_crds::TriggerAuthentication;
use integration_tests::{ensure, eventually, setup, unique_name};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_secret_wins_and_a_missing_key_is_an_empty_parameter() {
    let env = setup("operator-auth-resolution").await;
    let _ebb = env.start_ebb();
    let mut redis = env.redis(0).await;
    let list = unique_name("jobs");
    redis.push(&list, 3).await;
    // Nothing listens here: a trigger that read the ConfigMap's address would fail.
    let dead = integration_tests::dead_address();
    env.create::<Secret>(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "redis"},
        "stringData": {"address": env.redis_address()}
    }))
    .await;
    env.create::<ConfigMap>(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "redis"},
        "data": {"address": dead}
    }))
    .await;
    env.create::<TriggerAuthentication>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "redis"},
        "spec": {
            "secretTargetRef": [
                {"parameter": "address", "name": "redis", "key": "address"},
                {"parameter": "password", "name": "redis", "key": "no-such-key"}
            ],
            "configMapTargetRef": [
                {"parameter": "address", "name": "redis", "key": "address"}
            ]
        }
    }))
    .await;
    env.create_target(
        "worker",
        0,
        json!({
            "pollingInterval": 1,
            "triggers": [{
                "type": "redis",
                "metadata": {"listName": list, "listLength": "5", "activationListLength": "1"},
                "authenticationRef": {"name": "redis"}
            }]
        }),
    )
    .await;

    // The Secret's address, and no password: the list is read and the target activated.
    env.await_replicas(
        "worker",
        "activated through the Secret's address",
        DEADLINE,
        |n| n >= 1,
    )
    .await;
    let (status, reason, message) = env.condition("worker", "Ready").await.expect("Ready");
    assert_eq!(status, "True", "{reason}: {message}");

    // The missing key is reported once, by name, with no value.
    eventually("one AuthenticationValueMissing Event", DEADLINE, || async {
        let events = env.events_of("worker").await?;
        let missing: Vec<String> = events
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("AuthenticationValueMissing"))
            .map(|e| e.message.unwrap_or_default())
            .collect();
        ensure(
            missing.len() == 1
                && missing[0].contains("Secret \"redis\" has no key \"no-such-key\"")
                && !missing[0].contains(env.redis_address()),
            || format!("{missing:?}"),
        )
    })
    .await;
    redis.del(&[&list]).await;
    env.delete_scaled_objects().await;
}

/// After a move from KEDA, TriggerAuthentications and ClusterTriggerAuthentications carry
/// KEDA's `finalizer.keda.sh`; deleting one must not hang in Terminating. ebb removes it, as
/// KEDA's operator did, and leaves any other finalizer alone.
#[tokio::test]
async fn kedas_finalizer_is_released_when_an_authentication_is_deleted() {
    use ebb_crds::ClusterTriggerAuthentication;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

    let env = setup("operator-auth-finalizer").await;
    let _ebb = env.start_ebb();
    let tas = env.api::<TriggerAuthentication>();
    env.create::<TriggerAuthentication>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "from-keda", "finalizers": ["finalizer.keda.sh"]},
        "spec": {"secretTargetRef": [{"parameter": "password", "name": "s", "key": "k"}]}
    }))
    .await;
    env.create::<TriggerAuthentication>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "held", "finalizers": ["finalizer.keda.sh", "example.com/hold"]},
        "spec": {"secretTargetRef": [{"parameter": "password", "name": "s", "key": "k"}]}
    }))
    .await;
    let ctas: Api<ClusterTriggerAuthentication> = Api::all(env.client.clone());
    let cta_name = unique_name("from-keda");
    ctas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ClusterTriggerAuthentication",
            "metadata": {"name": cta_name, "finalizers": ["finalizer.keda.sh"]},
            "spec": {"secretTargetRef": [{"parameter": "password", "name": "s", "key": "k"}]}
        }))
        .expect("a ClusterTriggerAuthentication"),
    )
    .await
    .expect("create the ClusterTriggerAuthentication");

    for name in ["from-keda", "held"] {
        tas.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    ctas.delete(&cta_name, &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the deleted authentications gone", DEADLINE, || async {
        let ta = tas.get_opt("from-keda").await.map_err(|e| e.to_string())?;
        let cta = ctas.get_opt(&cta_name).await.map_err(|e| e.to_string())?;
        ensure(ta.is_none() && cta.is_none(), || {
            format!(
                "TriggerAuthentication left: {}, ClusterTriggerAuthentication left: {}",
                ta.is_some(),
                cta.is_some()
            )
        })
    })
    .await;
    // Another controller's finalizer stays: only KEDA's is released.
    let held = eventually("KEDA's finalizer released from held", DEADLINE, || async {
        let held = tas.get("held").await.map_err(|e| e.to_string())?;
        let finalizers = held.metadata.finalizers.clone().unwrap_or_default();
        ensure(finalizers == ["example.com/hold"], || {
            format!("{finalizers:?}")
        })
        .map(|()| held)
    })
    .await;
    assert!(held.metadata.deletion_timestamp.is_some());
    tas.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release the test's own finalizer");
}
