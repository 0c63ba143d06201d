//! A rabbitmq ScaledObject, over AMQP and over the management API, scales its Deployment from
//! zero when the queue passes the activation value and back to zero after the cooldown, with
//! ebb in process against the real apiserver and RabbitMQ. Credentials come from a Secret
//! through a TriggerAuthentication.

use std::time::Duration;

use ebb_crds::{ScaledObject, TriggerAuthentication};
use integration_tests::{deployment, setup, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn queue_scales_from_zero_and_back_over_amqp_and_http() {
    let env = setup("operator-rabbitmq").await;
    let _ebb = env.start_ebb();
    let amqp = env.amqp().await;

    // guest's credentials, from a Secret, never in the ScaledObject.
    env.create::<Secret>(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "rabbitmq"},
        "stringData": {"username": "guest", "password": "guest"}
    }))
    .await;
    env.create::<TriggerAuthentication>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "rabbitmq"},
        "spec": {"secretTargetRef": [
            {"parameter": "username", "name": "rabbitmq", "key": "username"},
            {"parameter": "password", "name": "rabbitmq", "key": "password"}
        ]}
    }))
    .await;

    let management = env
        .cluster
        .rabbitmq_management_url
        .replace("guest:guest@", "");
    for (protocol, host) in [
        (
            "amqp",
            env.cluster.rabbitmq_amqp_url.replace("guest:guest@", ""),
        ),
        ("http", format!("{management}/")),
    ] {
        let queue = unique_name(&format!("orders-{protocol}"));
        amqp.declare(&queue).await;
        let worker = format!("worker-{protocol}");
        env.create::<Deployment>(serde_json::to_value(deployment(&worker, 0, &[])).expect("json"))
            .await;
        env.create::<ScaledObject>(json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": worker},
            "spec": {
                "scaleTargetRef": {"name": worker},
                "pollingInterval": 1,
                "cooldownPeriod": 2,
                "triggers": [{
                    "type": "rabbitmq",
                    "metadata": {
                        "host": host,
                        "protocol": protocol,
                        "queueName": queue,
                        "mode": "QueueLength",
                        "value": "5",
                        "activationValue": "2"
                    },
                    "authenticationRef": {"name": "rabbitmq"}
                }]
            }
        }))
        .await;

        // At the activation value: still zero over several polls (the management API's
        // statistics lag a few seconds, so this also covers its catching up).
        amqp.publish(&queue, 2).await;
        let end = tokio::time::Instant::now() + Duration::from_secs(6);
        while tokio::time::Instant::now() < end {
            assert_eq!(
                env.replicas(&worker).await,
                Ok(0),
                "{protocol}: at activation"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        amqp.publish(&queue, 3).await;
        env.await_replicas(
            &worker,
            &format!("{protocol}: scaled up from zero"),
            DEADLINE,
            |n| n >= 1,
        )
        .await;
        amqp.purge(&queue).await;
        env.await_replicas(
            &worker,
            &format!("{protocol}: back to zero"),
            DEADLINE,
            |n| n == 0,
        )
        .await;
    }
    env.delete_scaled_objects().await;
}
