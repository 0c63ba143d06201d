//! The fast activation path against the real apiserver and Redis: with
//! `ebb.sh/activation-polling-interval-ms`, an idle object polled once an hour activates within
//! seconds of its first item; a value out of range is reported on the object (Ready=False and an
//! Event naming the annotation) and its neighbour keeps working.

use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use integration_tests::{deployment, ensure, eventually, setup, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

fn scaled_object(name: &str, address: &str, list: &str, fast_ms: &str) -> serde_json::Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "annotations": {"ebb.sh/activation-polling-interval-ms": fast_ms}},
        "spec": {
            "scaleTargetRef": {"name": name},
            // Once an hour: a regular poll is not what activates it within the test.
            "pollingInterval": 3600,
            "triggers": [{"type": "redis", "metadata": {
                "address": address, "listName": list, "listLength": "5", "databaseIndex": "9"
            }}]
        }
    })
}

#[tokio::test]
async fn the_fast_path_activates_an_hourly_object_within_seconds_and_a_bad_value_is_reported() {
    let env = setup("operator-activation").await;
    let _ebb = env.start_ebb();
    let mut redis = env.redis(9).await;
    let list = unique_name("activation");
    redis.del(&[&list]).await;
    let address = env.redis_address().to_string();

    for name in ["fast", "bad"] {
        env.create::<Deployment>(serde_json::to_value(deployment(name, 0, &[])).expect("json"))
            .await;
    }
    env.create::<ScaledObject>(scaled_object("fast", &address, &list, "100"))
        .await;
    env.create::<ScaledObject>(scaled_object("bad", &address, &list, "10"))
        .await;

    // The loop runs once its HPA exists; the list is empty, so nothing activates yet.
    eventually("the HPA keda-hpa-fast", DEADLINE, || async {
        env.api::<HorizontalPodAutoscaler>()
            .get("keda-hpa-fast")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(env.replicas("fast").await, Ok(0));

    redis.rpush(&list, &["job"]).await;
    let pushed = Instant::now();
    env.await_replicas(
        "fast",
        "activated by the fast path",
        Duration::from_secs(10),
        |n| n == 1,
    )
    .await;
    println!(
        "activated {} ms after the push",
        pushed.elapsed().as_millis()
    );

    // 10 ms is below the 50 ms floor: refused with a message naming the annotation.
    let message = eventually("bad: Ready=False", DEADLINE, || async {
        let (status, reason, message) = env.condition("bad", "Ready").await?;
        ensure(
            status == "False" && reason == "ScaledObjectCheckFailed",
            || format!("{status} {reason} {message}"),
        )?;
        Ok(message)
    })
    .await;
    assert!(
        message.contains("ebb.sh/activation-polling-interval-ms")
            && message.contains("from 50 up to the pollingInterval (3600000)")
            && message.contains("\"10\""),
        "{message}"
    );
    eventually("bad: an Event", DEADLINE, || async {
        let events = env.events_of("bad").await?;
        ensure(
            events.iter().any(|e| {
                e.reason.as_deref() == Some("ScaledObjectCheckFailed")
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("activation-polling-interval-ms"))
            }),
            || format!("{} events", events.len()),
        )
    })
    .await;
    assert_eq!(
        env.replicas("bad").await,
        Ok(0),
        "a refused object scales nothing"
    );
    redis.del(&[&list]).await;
}
