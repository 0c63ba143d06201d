//! The `nats-jetstream` scaler against the dev cluster's real nats-server (JetStream, read
//! through its monitoring endpoint): the lag is what the consumer has not received plus what it
//! received and has not acknowledged; a missing consumer or stream, or a dead endpoint, is an
//! error, never a 0 (nor the stream's last sequence, as older KEDA read it).

use std::collections::BTreeMap;

use ebb_scalers::{Registry, Trigger};
use std::time::Duration;

use integration_tests::{
    dead_address, ensure, eventually, nats_publish, nats_pull, nats_stream, nats_stream_replicated,
    read_scaler, read_scaler_until, setup, unique_name,
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

/// On the dev cluster's three-node JetStream cluster, the consumer (replicated on every node) is
/// led by one node, and only the leader's `/jsz` holds its lag (a follower's reads 0: a scaler
/// that trusted the endpoint it was given would never activate). The trigger names a
/// follower's monitoring endpoint, as a Service in front of a StatefulSet gives any node; the
/// scaler finds the leader from that node's `/varz` (its advertised client URLs) as KEDA does,
/// reads the leader, and finds the new leader when leadership moves.
#[tokio::test]
async fn on_a_cluster_the_consumer_s_leader_is_found_and_followed_when_leadership_moves() {
    let env = setup("nats-cluster-scaler").await;
    let endpoints = env.cluster.nats_cluster_monitoring_endpoints.clone();
    assert_eq!(endpoints.len(), 3, "the dev cluster runs three NATS nodes");
    let name = unique_name("clustered");
    let (js, mut consumer) =
        nats_stream_replicated(&env.cluster.nats_cluster_urls.join(","), &name, 3).await;
    let leader = consumer_leader(&mut consumer).await;
    // Node i is `nats-cluster-<i>` with the i-th endpoint.
    let follower = (0..3)
        .find(|i| format!("nats-cluster-{i}") != leader)
        .expect("a follower");
    let scaler = Registry::with_builtins()
        .build(&trigger(&endpoints[follower], &name, "workers"))
        .expect("builds");

    assert!(
        !read_scaler_until(scaler.as_ref(), "an empty stream", 0.0)
            .await
            .active
    );
    nats_publish(&js, &name, 7).await;
    assert!(
        read_scaler_until(scaler.as_ref(), "7 pending, read from the leader", 7.0)
            .await
            .active
    );

    // Leadership moves to another node; the scaler follows it.
    let answer: serde_json::Value = js
        .request(format!("CONSUMER.LEADER.STEPDOWN.{name}.workers"), &())
        .await
        .expect("the step-down request is answered");
    assert_eq!(answer["success"], true, "{answer}");
    let moved = eventually(
        "the consumer's leadership moves",
        Duration::from_secs(30),
        || {
            let mut consumer = consumer.clone();
            let leader = leader.clone();
            async move {
                let now = consumer_leader(&mut consumer).await;
                ensure(now != leader, || format!("still led by {now}"))?;
                Ok(now)
            }
        },
    )
    .await;
    nats_publish(&js, &name, 3).await;
    read_scaler_until(
        scaler.as_ref(),
        &format!("10 pending, led by {moved}"),
        10.0,
    )
    .await;
    for message in nats_pull(&consumer, 4).await {
        message.ack().await.expect("ack");
    }
    read_scaler_until(scaler.as_ref(), "6 pending after 4 acknowledged", 6.0).await;

    js.delete_stream(&name).await.expect("stream deleted");
}

/// The server that leads `consumer` now.
async fn consumer_leader(consumer: &mut integration_tests::NatsConsumer) -> String {
    eventually("the consumer has a leader", Duration::from_secs(30), || {
        let consumer = consumer.clone();
        async move {
            let info = consumer.get_info().await.map_err(|e| e.to_string())?;
            info.cluster
                .and_then(|c| c.leader)
                .ok_or_else(|| "no leader yet".to_string())
        }
    })
    .await
}
