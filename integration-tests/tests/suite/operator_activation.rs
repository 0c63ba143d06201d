//! The fast activation path against the real apiserver and Redis: with
//! `ebb.sh/activation-polling-interval-ms`, an idle object polled once an hour activates within
//! seconds of its first item; a value out of range is reported on the object (Ready=False and an
//! Event naming the annotation) and its neighbour keeps working. An `external-push` trigger
//! activates its target within a second of the plugin's push, with pollingInterval 300, and its
//! stream is reopened when the plugin restarts.

use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use integration_tests::{ReplicaLog, deployment, ensure, eventually, setup, unique_name};
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

/// Waits for the HPA of ScaledObject `name` (its loop runs from then on) and checks that the
/// target still rests at 0.
async fn until_resting_with_hpa(env: &integration_tests::TestEnv, name: &str) {
    let hpa = format!("keda-hpa-{name}");
    eventually(&format!("the HPA {hpa}"), DEADLINE, || async {
        env.api::<HorizontalPodAutoscaler>()
            .get(&hpa)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(
        env.replicas(name).await,
        Ok(0),
        "{name} rests before the push"
    );
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
    until_resting_with_hpa(&env, "fast").await;

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

/// The example `file-queue` plugin on `listener`, its activity streamed (checked every 100 ms),
/// until the returned sender fires.
fn serve_file_queue_plugin(listener: tokio::net::TcpListener) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        ebb_examples::file_queue_plugin()
            .poll_interval(Duration::from_millis(100))
            .serve_with_listener(listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("serves");
    });
    stop
}

/// When `name` first took `replicas` at or after `from`, as the watch saw it.
async fn took(
    log: &ReplicaLog,
    name: &str,
    replicas: i32,
    from: tokio::time::Instant,
    deadline: Duration,
) -> Duration {
    eventually(
        &format!("{name}: {replicas} replicas"),
        deadline,
        || async {
            let seen = log.of(name, from);
            seen.iter()
                .find(|(_, n)| *n == replicas)
                .map(|(at, _)| at.duration_since(from))
                .ok_or_else(|| format!("{seen:?}"))
        },
    )
    .await
}

#[tokio::test]
async fn an_external_push_activates_at_once_and_the_stream_survives_a_plugin_restart() {
    let env = setup("operator-push").await;
    let log = ReplicaLog::start(&env);
    let _ebb = env.start_ebb();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("bound address");
    let stop = serve_file_queue_plugin(listener);
    let dir = std::env::temp_dir().join(unique_name("ebb-push"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("depth");
    std::fs::write(&file, "0").expect("writes");

    env.create::<Deployment>(serde_json::to_value(deployment("pushed", 0, &[])).expect("json"))
        .await;
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "pushed"},
        "spec": {
            "scaleTargetRef": {"name": "pushed"},
            // Every 5 minutes: only a push can act within the test's deadlines.
            "pollingInterval": 300,
            "cooldownPeriod": 0,
            "triggers": [{"type": "external-push", "metadata": {
                "scalerAddress": addr.to_string(),
                "path": file.to_string_lossy(),
                "queueLength": "5"
            }}]
        }
    }))
    .await;
    // The stream's first answer (inactive) is pushed as it opens, and the poll it wakes
    // writes the conditions.
    eventually("pushed: Ready=True", DEADLINE, || async {
        let (status, reason, message) = env.condition("pushed", "Ready").await?;
        ensure(status == "True", || format!("{status} {reason} {message}"))
    })
    .await;
    assert_eq!(env.replicas("pushed").await, Ok(0));

    std::fs::write(&file, "7").expect("writes");
    let written = tokio::time::Instant::now();
    let latency = took(&log, "pushed", 1, written, Duration::from_secs(10)).await;
    println!("push: activated {} ms after the write", latency.as_millis());
    assert!(
        latency < Duration::from_secs(1),
        "activated {latency:?} after the push, with pollingInterval 300"
    );

    // The plugin goes away: its stream ends, the scaler retries with backoff, and nothing is
    // scaled meanwhile (a failing read never deactivates).
    stop.send(()).expect("the plugin still serves");
    std::fs::write(&file, "0").expect("writes");
    let stopped = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        log.of("pushed", stopped).iter().all(|(_, n)| *n == 1),
        "{:?}",
        log.of("pushed", stopped)
    );

    // Back on the same port: the reopened stream pushes "inactive", so it deactivates
    // (cooldown 0), and a later push activates it again at once.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("binds again");
    let restarted = tokio::time::Instant::now();
    let _stop = serve_file_queue_plugin(listener);
    let back = took(&log, "pushed", 0, restarted, DEADLINE).await;
    println!(
        "push: deactivated {} ms after the plugin restarted",
        back.as_millis()
    );
    std::fs::write(&file, "7").expect("writes");
    let written = tokio::time::Instant::now();
    let latency = took(&log, "pushed", 1, written, Duration::from_secs(10)).await;
    println!(
        "push: activated again {} ms after the write",
        latency.as_millis()
    );
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without the annotation, a resting object whose triggers are cheap to read (a Redis list) is
/// checked between its polls within the server's budget of adaptive checks: polled once an
/// hour, it activates within seconds of its first item.
#[tokio::test]
async fn adaptive_checks_activate_an_hourly_object_without_the_annotation() {
    let env = setup("operator-adaptive").await;
    let _ebb = env.start_ebb();
    let mut redis = env.redis(9).await;
    let list = unique_name("adaptive");
    redis.del(&[&list]).await;
    let address = env.redis_address().to_string();
    env.create::<Deployment>(serde_json::to_value(deployment("plain", 0, &[])).expect("json"))
        .await;
    let mut so = scaled_object("plain", &address, &list, "");
    so["metadata"]["annotations"] = json!({});
    env.create::<ScaledObject>(so).await;
    until_resting_with_hpa(&env, "plain").await;

    redis.rpush(&list, &["job"]).await;
    let pushed = Instant::now();
    env.await_replicas(
        "plain",
        "activated by an adaptive check",
        Duration::from_secs(10),
        |n| n == 1,
    )
    .await;
    println!(
        "activated {} ms after the push",
        pushed.elapsed().as_millis()
    );
    redis.del(&[&list]).await;
    env.delete_scaled_objects().await;
}
