//! The `aws-sqs-queue` scaler against the dev cluster's real SQS server (ElasticMQ, SQS's JSON
//! protocol): visible, in-flight and delayed messages count as `scaleOnInFlight` and
//! `scaleOnDelayed` say; a missing queue or a dead endpoint is an error, never a 0.

use std::collections::BTreeMap;

use ebb_scalers::{Registry, Trigger};
use integration_tests::{
    dead_address, read_scaler, read_scaler_until, setup, sqs_delete, sqs_queue, sqs_receive,
    sqs_send, unique_name,
};

fn trigger(endpoint: &str, queue_url: &str, extra: &[(&str, &str)]) -> Trigger {
    let mut metadata: BTreeMap<String, String> = [
        ("queueURL", queue_url),
        ("awsRegion", "us-east-1"),
        ("awsEndpoint", endpoint),
        ("queueLength", "5"),
        ("activationQueueLength", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        metadata.insert(k.to_string(), v.to_string());
    }
    Trigger {
        index: 0,
        trigger_type: "aws-sqs-queue".into(),
        metadata,
        auth_params: [
            ("awsAccessKeyID".to_string(), "AKIDEBBTEST".to_string()),
            ("awsSecretAccessKey".to_string(), "hunter2".to_string()),
        ]
        .into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn visible_in_flight_and_delayed_messages_count_as_configured_and_errors_are_never_zero() {
    let env = setup("sqs-scaler").await;
    let endpoint = env.cluster.sqs_endpoint.clone();
    let name = unique_name("orders");
    let queue = sqs_queue(&endpoint, &name).await;
    let registry = Registry::with_builtins();
    let default = registry
        .build(&trigger(&endpoint, &queue, &[]))
        .expect("builds");
    assert_eq!(
        default.metric_specs()[0].external_name(),
        Some(format!("s0-aws-sqs-{name}").as_str())
    );
    let visible_only = registry
        .build(&trigger(&endpoint, &queue, &[("scaleOnInFlight", "false")]))
        .expect("builds");
    let with_delayed = registry
        .build(&trigger(&endpoint, &queue, &[("scaleOnDelayed", "true")]))
        .expect("builds");

    let empty = read_scaler_until(default.as_ref(), "an empty queue", 0.0).await;
    assert!(!empty.active);

    // 2 visible: at the activation threshold, not above it.
    sqs_send(&endpoint, &queue, 2, 0).await;
    assert!(
        !read_scaler_until(default.as_ref(), "2 visible", 2.0)
            .await
            .active
    );
    // 6 visible, then 4 of them received (in flight): 6 with in-flight, 2 without.
    sqs_send(&endpoint, &queue, 4, 0).await;
    assert!(
        read_scaler_until(default.as_ref(), "6 visible", 6.0)
            .await
            .active
    );
    let handles = sqs_receive(&endpoint, &queue, 4, 300).await;
    assert_eq!(handles.len(), 4);
    assert!(
        read_scaler_until(default.as_ref(), "2 visible + 4 in flight", 6.0)
            .await
            .active
    );
    assert!(
        !read_scaler_until(visible_only.as_ref(), "2 visible", 2.0)
            .await
            .active
    );
    // 3 delayed: counted only with scaleOnDelayed.
    sqs_send(&endpoint, &queue, 3, 600).await;
    read_scaler_until(with_delayed.as_ref(), "2 + 4 + 3 delayed", 9.0).await;
    read_scaler_until(default.as_ref(), "delayed not counted", 6.0).await;
    // The received ones deleted (done): 2 visible remain.
    sqs_delete(&endpoint, &queue, &handles).await;
    read_scaler_until(default.as_ref(), "2 visible", 2.0).await;

    // Errors are errors: a queue that does not exist, a dead endpoint. Neither shows the secret.
    let missing = registry
        .build(&trigger(
            &endpoint,
            &format!("{endpoint}/000000000000/{name}-missing"),
            &[],
        ))
        .expect("builds");
    let err = read_scaler(missing.as_ref())
        .await
        .expect_err("a missing queue");
    assert!(err.contains("QueueDoesNotExist"), "{err}");
    let dead = format!("http://{}", dead_address());
    let unreachable = registry
        .build(&trigger(&dead, &queue, &[]))
        .expect("builds");
    let err = read_scaler(unreachable.as_ref())
        .await
        .expect_err("a dead endpoint");
    assert!(!err.contains("hunter2"), "{err}");
}
