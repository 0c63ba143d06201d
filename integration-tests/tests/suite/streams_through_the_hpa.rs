//! The third wave of scalers end to end, on the real control plane: for kafka, nats-jetstream
//! and aws-sqs-queue, a backlog below activation holds the Deployment at 0, a backlog above it
//! activates the Deployment and the real HPA, reading ebb's metric through the aggregator,
//! scales it out, and once the backlog is consumed it returns to 0. They run side by side in one
//! namespace, under one turn of the metrics API.
//!
//! Each reaches its server the way a user's manifest would: kafka over SASL/SCRAM with its
//! credentials from a Secret, nats-jetstream by its monitoring endpoint in the metadata, aws-sqs-queue with its access key from a Secret through a
//! TriggerAuthentication.

use std::time::Duration;

use integration_tests::{
    ensure, eventually, kafka_commit_to_latest, kafka_produce, kafka_topic, nats_publish,
    nats_pull, nats_stream, setup, sqs_delete, sqs_queue, sqs_receive, sqs_send, unique_name,
};

const DEADLINE: Duration = Duration::from_secs(120);

/// The targets, one per type.
const NAMES: [&str; 3] = ["by-kafka", "by-nats", "by-sqs"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_type_scales_a_deployment_through_the_hpa_and_back_to_zero() {
    let env = setup("third-wave-hpa").await;
    let ebb = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb).await;
    let c = &env.cluster;

    // The sources, each holding 1: below activation (2).
    let stream = unique_name("jobs");
    let (js, consumer) = nats_stream(&c.nats_url, &stream).await;
    nats_publish(&js, &stream, 1).await;
    let queue = sqs_queue(&c.sqs_endpoint, &unique_name("jobs")).await;
    sqs_send(&c.sqs_endpoint, &queue, 1, 0).await;
    let topic = unique_name("jobs");
    let group = unique_name("workers");
    let (b, t) = (c.kafka_bootstrap.clone(), topic.clone());
    tokio::task::spawn_blocking(move || {
        // Four partitions, so the HPA may go to 4. The group has committed nothing: with
        // `offsetResetPolicy: earliest` its lag is every message, 1.
        kafka_topic(&b, &t, 4);
        kafka_produce(&b, &t, 1);
    })
    .await
    .expect("join");

    for name in NAMES {
        env.create::<k8s_openapi::api::apps::v1::Deployment>(
            serde_json::to_value(integration_tests::deployment(name, 0, &[])).expect("json"),
        )
        .await;
    }
    env.create::<k8s_openapi::api::core::v1::Secret>(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "aws"},
        "stringData": {"id": "AKIDEBBTEST", "secret": "hunter2", "kafka-user": c.kafka_user.0, "kafka-password": c.kafka_user.1}
    }))
    .await;
    env.create::<ebb_crds::TriggerAuthentication>(serde_json::json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": "aws"},
        "spec": {"secretTargetRef": [
            {"parameter": "awsAccessKeyID", "name": "aws", "key": "id"},
            {"parameter": "awsSecretAccessKey", "name": "aws", "key": "secret"}
        ]}
    }))
    .await;
    env.create::<ebb_crds::TriggerAuthentication>(serde_json::json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": "kafka"},
        "spec": {"secretTargetRef": [
            {"parameter": "username", "name": "aws", "key": "kafka-user"},
            {"parameter": "password", "name": "aws", "key": "kafka-password"}
        ]}
    }))
    .await;
    let triggers = [
        (
            "by-kafka",
            serde_json::json!({"type": "kafka", "authenticationRef": {"name": "kafka"}, "metadata": {
                "bootstrapServers": c.kafka_sasl_bootstrap,
                "consumerGroup": group,
                "topic": topic,
                "sasl": "scram_sha256",
                "offsetResetPolicy": "earliest",
                "lagThreshold": "5",
                "activationLagThreshold": "2"
            }}),
        ),
        (
            "by-nats",
            serde_json::json!({"type": "nats-jetstream", "metadata": {
                "natsServerMonitoringEndpoint": c.nats_monitoring_endpoint,
                "account": "$G",
                "stream": stream,
                "consumer": "workers",
                "lagThreshold": "5",
                "activationLagThreshold": "2"
            }}),
        ),
        (
            "by-sqs",
            serde_json::json!({"type": "aws-sqs-queue", "authenticationRef": {"name": "aws"}, "metadata": {
                "queueURL": queue,
                "awsRegion": c.sqs_region,
                "awsEndpoint": c.sqs_endpoint,
                "queueLength": "5",
                "activationQueueLength": "2"
            }}),
        ),
    ];
    for (name, trigger) in &triggers {
        env.create::<ebb_crds::ScaledObject>(serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": name},
            "spec": {
                "scaleTargetRef": {"name": name},
                "pollingInterval": 1,
                "cooldownPeriod": 1,
                "maxReplicaCount": 10,
                "triggers": [trigger]
            }
        }))
        .await;
    }

    // Below activation: read without error, inactive, nothing scales.
    for name in NAMES {
        eventually(
            &format!("{name}: Ready and not Active"),
            DEADLINE,
            || async {
                let (ready, _, message) = env.condition(name, "Ready").await?;
                ensure(ready == "True", || format!("Ready={ready}: {message}"))?;
                let (active, _, message) = env.condition(name, "Active").await?;
                ensure(active == "False", || format!("Active={active}: {message}"))
            },
        )
        .await;
        assert_eq!(env.replicas(name).await, Ok(0), "{name} below activation");
    }

    // 20 against a target of 5: 4 replicas.
    nats_publish(&js, &stream, 19).await;
    sqs_send(&c.sqs_endpoint, &queue, 19, 0).await;
    let (b, t) = (c.kafka_bootstrap.clone(), topic.clone());
    tokio::task::spawn_blocking(move || kafka_produce(&b, &t, 19))
        .await
        .expect("join");
    for name in NAMES {
        env.await_replicas(name, "the HPA scales to 4", DEADLINE, |n| n == 4)
            .await;
    }

    // Consumed and acknowledged (deleted): back to 0.
    for message in nats_pull(&consumer, 20).await {
        message.ack().await.expect("ack");
    }
    let handles = sqs_receive(&c.sqs_endpoint, &queue, 20, 300).await;
    assert_eq!(handles.len(), 20);
    sqs_delete(&c.sqs_endpoint, &queue, &handles).await;
    let (b, t, g) = (c.kafka_bootstrap.clone(), topic.clone(), group.clone());
    tokio::task::spawn_blocking(move || kafka_commit_to_latest(&b, &g, &t))
        .await
        .expect("join");
    for name in NAMES {
        env.await_replicas(name, "back to 0", DEADLINE, |n| n == 0)
            .await;
    }

    env.delete_scaled_objects().await;
    js.delete_stream(&stream).await.expect("stream deleted");
}
