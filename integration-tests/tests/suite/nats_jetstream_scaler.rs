//! The `nats-jetstream` scaler against the dev cluster's real nats-server (JetStream, read
//! through its monitoring endpoint): the lag is what the consumer has not received plus what it
//! received and has not acknowledged; a missing consumer or stream, or a dead endpoint, is an
//! error, never a 0 (nor the stream's last sequence, as older KEDA read it).

use std::collections::BTreeMap;

use ebb_scalers::{Registry, Trigger};
use integration_tests::{
    dead_address, nats_publish, nats_pull, nats_stream, read_scaler, read_scaler_until, setup,
    unique_name,
};

fn trigger(endpoint: &str, stream: &str, consumer: &str) -> Trigger {
    let metadata: BTreeMap<String, String> = [
        ("natsServerMonitoringEndpoint", endpoint),
        ("account", "$G"),
        ("stream", stream),
        ("consumer", consumer),
        ("lagThreshold", "5"),
        ("activationLagThreshold", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Trigger {
        index: 0,
        trigger_type: "nats-jetstream".into(),
        metadata,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_lag_is_pending_plus_unacknowledged_and_errors_are_never_zero() {
    let env = setup("nats-scaler").await;
    let endpoint = env.cluster.nats_monitoring_endpoint.clone();
    let name = unique_name("orders");
    let (js, consumer) = nats_stream(&env.cluster.nats_url, &name).await;
    let registry = Registry::with_builtins();
    let scaler = registry
        .build(&trigger(&endpoint, &name, "workers"))
        .expect("builds");
    assert_eq!(
        scaler.metric_specs()[0].external_name(),
        Some(format!("s0-nats-jetstream-{name}").as_str())
    );

    assert!(
        !read_scaler_until(scaler.as_ref(), "an empty stream", 0.0)
            .await
            .active
    );
    nats_publish(&js, &name, 2).await;
    assert!(
        !read_scaler_until(scaler.as_ref(), "2 pending", 2.0)
            .await
            .active
    );
    nats_publish(&js, &name, 4).await;
    assert!(
        read_scaler_until(scaler.as_ref(), "6 pending", 6.0)
            .await
            .active
    );
    // 4 delivered, not acknowledged: still lag (2 pending + 4 awaiting their ack).
    let delivered = nats_pull(&consumer, 4).await;
    assert_eq!(delivered.len(), 4);
    assert!(
        read_scaler_until(scaler.as_ref(), "2 pending + 4 unacknowledged", 6.0)
            .await
            .active
    );
    for message in &delivered[..3] {
        message.ack().await.expect("ack");
    }
    read_scaler_until(scaler.as_ref(), "2 pending + 1 unacknowledged", 3.0).await;

    // A consumer or stream that does not exist is an error naming it, never the stream's size.
    let missing = registry
        .build(&trigger(&endpoint, &name, "nobody"))
        .expect("builds");
    let err = read_scaler(missing.as_ref())
        .await
        .expect_err("a missing consumer");
    assert!(err.contains("\"nobody\"") && err.contains(&name), "{err}");
    let missing = registry
        .build(&trigger(&endpoint, &format!("{name}-gone"), "workers"))
        .expect("builds");
    let err = read_scaler(missing.as_ref())
        .await
        .expect_err("a missing stream");
    assert!(err.contains("stream"), "{err}");
    let unreachable = registry
        .build(&trigger(&dead_address(), &name, "workers"))
        .expect("builds");
    read_scaler(unreachable.as_ref())
        .await
        .expect_err("a dead endpoint");

    js.delete_stream(&name).await.expect("stream deleted");
}
