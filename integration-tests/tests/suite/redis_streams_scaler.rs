//! `redis-streams` against the dev cluster's real Redis (7.x): stream length, a consumer
//! group's pending entries and its lag, with activation, metric names and targets.

use std::time::Duration;

use ebb_scalers::{MetricSpec, MetricTargetType, Registry, Scaler, Trigger};
use integration_tests::{setup, unique_name};
use redis::aio::MultiplexedConnection;

fn trigger(address: &str, meta: &[(&str, &str)]) -> Trigger {
    let mut metadata: std::collections::BTreeMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    metadata.insert("address".into(), address.into());
    Trigger {
        index: 0,
        trigger_type: "redis-streams".into(),
        metadata,
        ..Default::default()
    }
}

async fn conn(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

async fn xadd(c: &mut MultiplexedConnection, stream: &str, n: usize) {
    for i in 0..n {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("job")
            .arg(i)
            .query_async(c)
            .await
            .expect("XADD");
    }
}

async fn read_group(c: &mut MultiplexedConnection, stream: &str, group: &str, count: usize) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg("worker-1")
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(c)
        .await
        .expect("XREADGROUP");
}

async fn create_group(c: &mut MultiplexedConnection, stream: &str, group: &str) {
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(c)
        .await
        .expect("XGROUP CREATE");
}

async fn read(scaler: &dyn Scaler) -> (f64, bool) {
    let name = scaler.metric_specs()[0]
        .external_name()
        .expect("external")
        .to_string();
    let got = scaler.metrics_and_activity(&name).await.expect("reads");
    (got.values[0].value, got.active)
}

fn spec(name: String, target: f64) -> Vec<MetricSpec> {
    vec![MetricSpec::External {
        name,
        target,
        target_type: MetricTargetType::AverageValue,
    }]
}

#[tokio::test]
async fn stream_length_without_a_consumer_group() {
    let env = setup("redis-streams-xlen").await;
    let addr = env
        .cluster
        .redis_url
        .trim_start_matches("redis://")
        .to_string();
    let mut c = conn(&env.cluster.redis_url).await;
    let stream = unique_name("events");
    let scaler = Registry::with_builtins()
        .build(&trigger(
            &addr,
            &[
                ("stream", &stream),
                ("streamLength", "5"),
                ("activationLagCount", "2"),
            ],
        ))
        .expect("builds");
    assert_eq!(
        scaler.metric_specs(),
        spec(format!("s0-redis-streams-{stream}"), 5.0)
    );
    // Missing stream, at the activation threshold, past it.
    assert_eq!(read(&*scaler).await, (0.0, false));
    xadd(&mut c, &stream, 2).await;
    assert_eq!(read(&*scaler).await, (2.0, false));
    xadd(&mut c, &stream, 8).await;
    assert_eq!(read(&*scaler).await, (10.0, true));
}

#[tokio::test]
async fn pending_entries_of_a_consumer_group() {
    let env = setup("redis-streams-pending").await;
    let addr = env
        .cluster
        .redis_url
        .trim_start_matches("redis://")
        .to_string();
    let mut c = conn(&env.cluster.redis_url).await;
    let stream = unique_name("orders");
    let group = "workers";
    let scaler = Registry::with_builtins()
        .build(&trigger(
            &addr,
            &[
                ("stream", &stream),
                ("consumerGroup", group),
                ("pendingEntriesCount", "3"),
                ("activationLagCount", "1"),
            ],
        ))
        .expect("builds");
    assert_eq!(
        scaler.metric_specs(),
        spec(format!("s0-redis-streams-{stream}"), 3.0)
    );

    // No group yet: an error, never a zero.
    let name = format!("s0-redis-streams-{stream}");
    let err = scaler
        .metrics_and_activity(&name)
        .await
        .expect_err("no group");
    assert!(err.to_string().contains("NOGROUP"), "{err}");

    create_group(&mut c, &stream, group).await;
    assert_eq!(read(&*scaler).await, (0.0, false));
    // Entries not yet delivered are not pending.
    xadd(&mut c, &stream, 5).await;
    assert_eq!(read(&*scaler).await, (0.0, false));
    // Delivered and never acknowledged: pending.
    read_group(&mut c, &stream, group, 1).await;
    assert_eq!(read(&*scaler).await, (1.0, false));
    read_group(&mut c, &stream, group, 3).await;
    assert_eq!(read(&*scaler).await, (4.0, true));

    // `lagCount: "0"` selects pending entries too, as in KEDA (target: the default 5).
    let zero_lag = Registry::with_builtins()
        .build(&trigger(
            &addr,
            &[
                ("stream", &stream),
                ("consumerGroup", group),
                ("lagCount", "0"),
            ],
        ))
        .expect("builds");
    assert_eq!(
        zero_lag.metric_specs(),
        spec(format!("s0-redis-streams-{stream}"), 5.0)
    );
    assert_eq!(read(&*zero_lag).await, (4.0, true));
}

#[tokio::test]
async fn lag_of_a_consumer_group() {
    let env = setup("redis-streams-lag").await;
    let addr = env
        .cluster
        .redis_url
        .trim_start_matches("redis://")
        .to_string();
    let mut c = conn(&env.cluster.redis_url).await;
    let stream = unique_name("jobs");
    let group = "workers";
    let scaler = Registry::with_builtins()
        .build(&trigger(
            &addr,
            &[
                ("stream", &stream),
                ("consumerGroup", group),
                ("lagCount", "4"),
                ("activationLagCount", "2"),
            ],
        ))
        .expect("builds");
    assert_eq!(
        scaler.metric_specs(),
        spec(format!("s0-redis-streams-{stream}"), 4.0)
    );
    // No stream yet: no lag.
    assert_eq!(read(&*scaler).await, (0.0, false));
    // A stream but no group yet (its consumers are at zero): everything in it is lag.
    xadd(&mut c, &stream, 3).await;
    assert_eq!(read(&*scaler).await, (3.0, true));

    let other = unique_name("jobs");
    create_group(&mut c, &other, group).await;
    let scaler = Registry::with_builtins()
        .build(&trigger(
            &addr,
            &[
                ("stream", &other),
                ("consumerGroup", group),
                ("lagCount", "4"),
                ("activationLagCount", "2"),
            ],
        ))
        .expect("builds");
    assert_eq!(read(&*scaler).await, (0.0, false));
    xadd(&mut c, &other, 2).await;
    assert_eq!(read(&*scaler).await, (2.0, false));
    xadd(&mut c, &other, 3).await;
    assert_eq!(read(&*scaler).await, (5.0, true));
    // Delivered entries leave the lag (they are pending now).
    read_group(&mut c, &other, group, 5).await;
    assert_eq!(read(&*scaler).await, (0.0, false));
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_within_the_timeout() {
    let _env = setup("redis-streams-down").await;
    let scaler = Registry::with_builtins()
        .build(&trigger("127.0.0.1:1", &[("stream", "s")]))
        .expect("builds");
    let outcome = tokio::time::timeout(
        Duration::from_secs(15),
        scaler.metrics_and_activity("s0-redis-streams-s"),
    )
    .await;
    let err = outcome.expect("answers").expect_err("an error");
    assert!(err.to_string().starts_with("redis 127.0.0.1:1"), "{err}");
}
