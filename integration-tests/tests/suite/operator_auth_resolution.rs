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
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
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
