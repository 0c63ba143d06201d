//! A rabbitmq ScaledObject, over AMQP and over the management API, scales its Deployment from
//! zero when the queue passes the activation value and back to zero after the cooldown, with
//! ebb in process against the real apiserver and RabbitMQ. Credentials come from a Secret
//! through a TriggerAuthentication.

use std::time::Duration;

use ebb_crds::{ScaledObject, TriggerAuthentication};
use integration_tests::{deployment, ensure, eventually, setup, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

async fn publish(channel: &Channel, queue: &str, n: usize) {
    for _ in 0..n {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                b"job",
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
}

#[tokio::test]
async fn queue_scales_from_zero_and_back_over_amqp_and_http() {
    let env = setup("operator-rabbitmq").await;
    let _ebb = env.start_ebb();
    let conn = Connection::connect(
        &env.cluster.rabbitmq_amqp_url,
        ConnectionProperties::default(),
    )
    .await
    .expect("AMQP");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirms");

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
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare");
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
        publish(&channel, &queue, 2).await;
        let end = tokio::time::Instant::now() + Duration::from_secs(6);
        while tokio::time::Instant::now() < end {
            assert_eq!(
                env.replicas(&worker).await,
                Ok(0),
                "{protocol}: at activation"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        publish(&channel, &queue, 3).await;
        eventually(
            &format!("{protocol}: scaled up from zero"),
            DEADLINE,
            || async {
                let n = env.replicas(&worker).await?;
                ensure(n >= 1, || format!("replicas {n}"))
            },
        )
        .await;
        channel
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await
            .expect("purge");
        eventually(&format!("{protocol}: back to zero"), DEADLINE, || async {
            let n = env.replicas(&worker).await?;
            ensure(n == 0, || format!("replicas {n}"))
        })
        .await;
    }
    env.delete_scaled_objects().await;
}
