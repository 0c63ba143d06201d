//! 200 triggers of each third-wave type on one server, all read at once, three times over: the
//! connections they hold. Kafka counts its own (its socket server's `connection-count` on the
//! plaintext listener, read over JMX with Kafka's JmxTool); for the HTTP APIs of NATS and SQS
//! the kernel does (this machine's established sockets to the port). KEDA opens a client per
//! trigger. Disruptive because a count of the shared servers' connections would include the
//! suite's.

use ebb_scalers::{Registry, Trigger};
use integration_tests::{
    kafka_produce, kafka_topic, nats_publish, nats_stream, read_scaler, setup, sqs_queue, sqs_send,
    unique_name,
};

const TRIGGERS: usize = 200;

/// Kafka's open connections on its plaintext listener, by its own count.
fn kafka_connections() -> f64 {
    xtask::cluster::streams::kafka_connections().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Established TCP connections to 127.0.0.1:`port` on this machine, from the kernel's table.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

fn trigger(
    kind: &str,
    index: usize,
    metadata: Vec<(&str, String)>,
    auth: &[(&str, &str)],
) -> Trigger {
    Trigger {
        index,
        trigger_type: kind.into(),
        metadata: metadata
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        auth_params: auth
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_triggers_per_server_hold_a_handful_of_connections() {
    let _serial = crate::serial().await;
    let env = setup("shared-connections").await;
    let c = env.cluster.clone();
    let topic = unique_name("shared");
    let (b, t) = (c.kafka_bootstrap.clone(), topic.clone());
    tokio::task::spawn_blocking(move || {
        kafka_topic(&b, &t, 3);
        kafka_produce(&b, &t, 5);
    })
    .await
    .expect("join");
    let stream = unique_name("shared");
    let (js, _consumer) = nats_stream(&c.nats_url, &stream).await;
    nats_publish(&js, &stream, 5).await;
    let mut queues = Vec::new();
    for _ in 0..10 {
        let queue = sqs_queue(&c.sqs_endpoint, &unique_name("shared")).await;
        sqs_send(&c.sqs_endpoint, &queue, 1, 0).await;
        queues.push(queue);
    }
    let kafka_before = tokio::task::spawn_blocking(kafka_connections)
        .await
        .expect("join");
    let (nats_before, sqs_before) = (
        established_to(xtask::cluster::ports::NATS_MONITORING),
        established_to(xtask::cluster::ports::SQS),
    );

    let registry = Registry::with_builtins();
    let mut scalers = Vec::new();
    for i in 0..TRIGGERS {
        // 200 consumer groups of one topic; one consumer, read 200 times; 10 queues, 20 each.
        scalers.push(
            registry
                .build(&trigger(
                    "kafka",
                    i,
                    vec![
                        ("bootstrapServers", c.kafka_bootstrap.clone()),
                        ("consumerGroup", format!("group-{i}")),
                        ("topic", topic.clone()),
                        ("offsetResetPolicy", "earliest".into()),
                    ],
                    &[],
                ))
                .expect("builds"),
        );
        scalers.push(
            registry
                .build(&trigger(
                    "nats-jetstream",
                    i,
                    vec![
                        (
                            "natsServerMonitoringEndpoint",
                            c.nats_monitoring_endpoint.clone(),
                        ),
                        ("account", "$G".into()),
                        ("stream", stream.clone()),
                        ("consumer", "workers".into()),
                    ],
                    &[],
                ))
                .expect("builds"),
        );
        scalers.push(
            registry
                .build(&trigger(
                    "aws-sqs-queue",
                    i,
                    vec![
                        ("queueURL", queues[i % queues.len()].clone()),
                        ("awsRegion", c.sqs_region.clone()),
                        ("awsEndpoint", c.sqs_endpoint.clone()),
                    ],
                    &[
                        ("awsAccessKeyID", "AKIDEBBTEST"),
                        ("awsSecretAccessKey", "hunter2"),
                    ],
                ))
                .expect("builds"),
        );
    }
    for round in 0..3 {
        let reads =
            futures::future::join_all(scalers.iter().map(|s| read_scaler(s.as_ref()))).await;
        let failed: Vec<&String> = reads.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "round {round}: {} failed, e.g. {:?}",
            failed.len(),
            failed.first()
        );
        let values: Vec<f64> = reads
            .iter()
            .map(|r| r.as_ref().map(|m| m.values[0].value).unwrap_or(-1.0))
            .collect();
        assert!(
            values.iter().step_by(3).all(|v| *v == 5.0),
            "kafka lag {values:?}"
        );
    }
    let kafka_after = tokio::task::spawn_blocking(kafka_connections)
        .await
        .expect("join");
    // Idle keep-alive connections stay open after the reads: they are what is counted.
    let nats = established_to(xtask::cluster::ports::NATS_MONITORING).saturating_sub(nats_before);
    let sqs = established_to(xtask::cluster::ports::SQS).saturating_sub(sqs_before);
    let kafka = kafka_after - kafka_before;
    println!(
        "{TRIGGERS} triggers of each type, read 3 times at once: Kafka counts {kafka} new connections, the kernel {nats} to NATS's monitoring port and {sqs} to SQS"
    );
    // Kafka: the bootstrap connection and one to the broker (it is also the coordinator).
    assert!(kafka <= 2.0, "kafka: {kafka} connections");
    // HTTP: at most 4 requests in flight per shared client; a connection goes back to reqwest's
    // pool a moment after its request ends, so the next may open another: a handful, not 200.
    assert!(nats <= 8, "nats: {nats} connections");
    assert!(sqs <= 8, "sqs: {sqs} connections");
    drop(scalers);
    js.delete_stream(&stream).await.expect("stream deleted");
}
