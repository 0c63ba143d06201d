//! A rabbitmq ScaledObject, over AMQP and over the management API, scales its Deployment from
//! zero when the queue passes the activation value and back to zero after the cooldown, with
//! ebb in process against the real apiserver and RabbitMQ. Credentials come from a Secret
//! through a TriggerAuthentication. In MessageRate mode a backlog keeps the target up after the
//! publishes stop.

use std::time::Duration;

use ebb_crds::{ScaledObject, TriggerAuthentication};
use integration_tests::{deployment, ensure, eventually, setup, unique_name};
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

/// KEDA's MessageRate activity counts the backlog as well as the publish rate: a queue holding
/// messages that nobody publishes to any more still has work, so the target stays up; only
/// once the queue is empty does it go back to zero.
#[tokio::test]
async fn message_rate_stays_active_while_messages_wait_with_no_publishes() {
    let env = setup("operator-rabbitmq-rate").await;
    let _ebb = env.start_ebb();
    let amqp = env.amqp().await;
    let (management, (user, password)) = env.rabbitmq_management();
    let queue = unique_name("backlog");
    amqp.declare(&queue).await;
    env.create::<Deployment>(serde_json::to_value(deployment("worker", 0, &[])).expect("json"))
        .await;
    let mut host = management.clone();
    host.set_username(&user).expect("an http URL");
    host.set_password(Some(&password)).expect("an http URL");
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1,
            "cooldownPeriod": 2,
            "triggers": [{
                "type": "rabbitmq",
                "metadata": {
                    "host": host.as_str(),
                    "queueName": queue,
                    "mode": "MessageRate",
                    "value": "5",
                    "activationValue": "1"
                }
            }]
        }
    }))
    .await;

    amqp.publish(&queue, 50).await;
    env.await_replicas("worker", "scaled up from zero", DEADLINE, |n| n >= 1)
        .await;

    // No more publishes: wait until the management API's publish rate has fallen to 0 with
    // the 50 messages still queued...
    let client = reqwest::Client::new();
    let url = management
        .join(&format!("api/queues/%2F/{queue}"))
        .expect("queue URL");
    eventually(
        "the publish rate at 0, 50 messages waiting",
        DEADLINE,
        || async {
            let body: serde_json::Value = client
                .get(url.clone())
                .basic_auth(&user, Some(&password))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let rate = body
                .pointer("/message_stats/publish_details/rate")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            let messages = body.get("messages").and_then(serde_json::Value::as_u64);
            ensure(rate == 0.0 && messages == Some(50), || {
                format!("rate {rate}, messages {messages:?}")
            })
        },
    )
    .await;
    // ... then the target stays up for several cooldown periods.
    let end = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < end {
        let n = env.replicas("worker").await;
        assert!(
            matches!(n, Ok(n) if n >= 1),
            "{n:?} replicas with 50 messages waiting and no publishes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Drained: idle, back to zero.
    amqp.purge(&queue).await;
    env.await_replicas("worker", "back to zero once drained", DEADLINE, |n| n == 0)
        .await;
    env.delete_scaled_objects().await;
}
