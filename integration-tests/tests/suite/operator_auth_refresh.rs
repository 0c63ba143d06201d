//! Credentials that change under a running ScaledObject, with ebb in process against the real
//! apiserver and RabbitMQ: a Secret fixed in place is read again when the failing trigger's
//! scalers are rebuilt (the ScaledObject untouched), and a TriggerAuthentication changed to
//! reference other credentials rebuilds the scalers of the objects that use it, while they
//! were working.

use std::time::Duration;

use ebb_crds::{ScaledObject, TriggerAuthentication};
use ebb_operator::scale::evaluate::Answer;
use integration_tests::{deployment, ensure, eventually, setup, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// Long enough for a rebuild after repeated failures (30 s) plus a few polls.
const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn changed_credentials_take_effect_at_the_next_rebuild() {
    let env = setup("operator-auth-refresh").await;
    let ebb = env.start_ebb();
    let amqp = env.amqp().await;
    let queue = unique_name("refresh");
    amqp.declare(&queue).await;
    amqp.publish(&queue, 3).await;

    let good = env.cluster.rabbitmq_amqp_url.clone();
    let bad = good.replace("guest:guest@", "guest:not-the-password@");
    assert_ne!(
        good, bad,
        "the dev cluster's AMQP URL carries guest's credentials"
    );
    for (name, host) in [("rabbitmq", &bad), ("rabbitmq-other", &bad)] {
        env.create::<Secret>(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"host": host}
        }))
        .await;
    }
    env.create::<TriggerAuthentication>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "rabbitmq"},
        "spec": {"secretTargetRef": [{"parameter": "host", "name": "rabbitmq", "key": "host"}]}
    }))
    .await;
    env.create::<Deployment>(serde_json::to_value(deployment("worker", 1, &[])).expect("json"))
        .await;
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1,
            "minReplicaCount": 1,
            "triggers": [{
                "type": "rabbitmq",
                "metadata": {"protocol": "amqp", "queueName": queue, "mode": "QueueLength", "value": "5"},
                "authenticationRef": {"name": "rabbitmq"}
            }]
        }
    }))
    .await;
    let metric = format!("s0-rabbitmq-{queue}");

    // Refused credentials: Ready=False, and no secret in the message.
    eventually("Ready=False with the wrong password", DEADLINE, || async {
        let (status, reason, message) = env.condition("worker", "Ready").await?;
        ensure(status == "False" && reason == "TriggerError", || {
            format!("Ready={status} {reason}: {message}")
        })
    })
    .await;
    let (_, _, message) = env.condition("worker", "Ready").await.expect("Ready");
    assert!(!message.contains("not-the-password"), "{message}");

    // The Secret is fixed in place; nothing else changes. The failing trigger's scalers are
    // rebuilt, which reads the Secret again.
    env.api::<Secret>()
        .patch(
            "rabbitmq",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"host": good}})),
        )
        .await
        .expect("patch Secret");
    eventually("the fixed Secret is used", DEADLINE, || async {
        let (status, _, message) = env.condition("worker", "Ready").await?;
        let answer = ebb.ctx.store.get(&env.namespace, "worker", &metric);
        ensure(
            status == "True" && matches!(answer, Some((Answer::Value(v), _)) if v == 3.0),
            || format!("Ready={status} ({message}), answer {answer:?}"),
        )
    })
    .await;

    // The TriggerAuthentication now points at other (refused) credentials. The trigger was
    // working, so only the TriggerAuthentication's change can bring them in.
    env.api::<TriggerAuthentication>()
        .patch(
            "rabbitmq",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"secretTargetRef": [
                {"parameter": "host", "name": "rabbitmq-other", "key": "host"}
            ]}})),
        )
        .await
        .expect("patch TriggerAuthentication");
    eventually(
        "the changed TriggerAuthentication is used",
        DEADLINE,
        || async {
            let (status, reason, message) = env.condition("worker", "Ready").await?;
            ensure(status == "False" && reason == "TriggerError", || {
                format!("Ready={status} {reason}: {message}")
            })
        },
    )
    .await;
    // A failing trigger never takes the target down.
    assert_eq!(env.replicas("worker").await, Ok(1));
    env.delete_scaled_objects().await;
}
