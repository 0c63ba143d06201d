//! ScaledObjects with extreme values, on the real apiserver and HPA controller with ebb in
//! process: counts and periods at the ends of their range, a thousand triggers, a 64 KiB
//! metadata value, and a metrics-api source answering 1e308, -3 or NaN. Each is refused by the
//! schema naming the field, or runs with a clear condition; none stops ebb or the canary
//! object beside them, and no quantity overflows.

use std::time::Duration;

use ebb_crds::ScaledObject;
use ebb_operator::scale::evaluate::Answer;
use integration_tests::{TestEnv, ensure, eventually, expect_failure, setup, unique_name};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(120);

fn redis_trigger(env: &TestEnv, list: &str) -> Value {
    json!({"type": "redis", "metadata": {
        "address": env.redis_address(), "listName": list, "listLength": "5"
    }})
}

/// Serves `{"value": <body>}` documents: `/big` answers 1e308, `/negative` -3, `/nan` the
/// string "NaN".
async fn odd_values_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let body = if request.starts_with("GET /big") {
                    "{\"value\": 1e308}"
                } else if request.starts_with("GET /negative") {
                    "{\"value\": -3}"
                } else {
                    "{\"value\": \"NaN\"}"
                };
                let _ = socket
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    port
}

async fn condition_is(env: &TestEnv, name: &str, want: &str) -> (String, String) {
    eventually(&format!("{name}: Ready={want}"), DEADLINE, || async {
        let (status, reason, message) = env.condition(name, "Ready").await?;
        ensure(status == want, || {
            format!("Ready={status} {reason}: {message}")
        })
        .map(|()| (reason, message))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_values_get_a_clear_answer_and_stop_nothing() {
    let env = setup("extreme-values").await;
    let ebb = env.start_ebb();
    let mut redis = env.redis(0).await;

    // The canary: an ordinary object that must keep working through all of it.
    let canary_list = unique_name("canary");
    redis.push(&canary_list, 3).await;
    env.create_target(
        "canary",
        0,
        json!({"pollingInterval": 1, "triggers": [redis_trigger(&env, &canary_list)]}),
    )
    .await;
    condition_is(&env, "canary", "True").await;

    // Out of range for the schema: refused at admission, naming the field.
    for (field, value) in [
        ("pollingInterval", json!(0)),
        ("pollingInterval", json!(-5)),
        ("minReplicaCount", json!(-1)),
        ("maxReplicaCount", json!(0)),
        ("cooldownPeriod", json!(-1)),
    ] {
        let mut so = integration_tests::scaled_object_for(
            "refused",
            json!({"triggers": [redis_trigger(&env, "x")]}),
        );
        so["spec"][field] = value.clone();
        let out = env.kubectl_with_stdin(&["create", "-f", "-"], Some(&so.to_string()));
        let err = expect_failure(&out, &format!("{field}: {value}"));
        assert!(
            err.contains(&format!("spec.{field}")),
            "{field}: {value}: {err}"
        );
    }

    // The ends of the range: 2^31-1 replicas at most, a cooldown of 68 years.
    env.create_target(
        "widest",
        1,
        json!({
            "pollingInterval": 1,
            "maxReplicaCount": i32::MAX,
            "cooldownPeriod": i32::MAX,
            "initialCooldownPeriod": i32::MAX,
            "triggers": [redis_trigger(&env, &unique_name("empty"))]
        }),
    )
    .await;
    condition_is(&env, "widest", "True").await;
    let hpa = eventually("widest: its HPA", DEADLINE, || async {
        env.api::<HorizontalPodAutoscaler>()
            .get("keda-hpa-widest")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(hpa.spec.map(|s| s.max_replicas), Some(i32::MAX));
    // Idle, but its cooldown has 68 years to run: it stays up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.replicas("widest").await, Ok(1));

    // A thousand triggers on one ScaledObject: one HPA metric each, one Redis connection.
    const TRIGGERS: usize = 1000;
    let lists: Vec<String> = (0..TRIGGERS).map(|i| format!("many-{i}")).collect();
    env.create_target(
        "many",
        0,
        json!({
            "pollingInterval": 5,
            "triggers": lists.iter().map(|l| redis_trigger(&env, l)).collect::<Vec<_>>()
        }),
    )
    .await;
    condition_is(&env, "many", "True").await;
    let hpa = eventually("many: its HPA", DEADLINE, || async {
        env.api::<HorizontalPodAutoscaler>()
            .get("keda-hpa-many")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(
        hpa.spec.and_then(|s| s.metrics).map(|m| m.len()),
        Some(TRIGGERS)
    );

    // Gone again before the metrics API is served: the HPA would ask for each metric.
    env.api::<ScaledObject>()
        .delete("many", &Default::default())
        .await
        .expect("delete many");
    eventually("many: deleted with its HPA", DEADLINE, || async {
        let hpa = env
            .api::<HorizontalPodAutoscaler>()
            .get_opt("keda-hpa-many")
            .await;
        let so = env.api::<ScaledObject>().get_opt("many").await;
        ensure(matches!((&hpa, &so), (Ok(None), Ok(None))), || {
            format!(
                "HPA {:?}, ScaledObject {:?}",
                hpa.as_ref().map(|h| h.is_some()),
                so.as_ref().map(|s| s.is_some())
            )
        })
    })
    .await;

    // A 64 KiB metadata value: used as written, or refused naming the key.
    let long_list = "l".repeat(64 * 1024);
    env.create_target(
        "long-value",
        0,
        json!({"pollingInterval": 1, "triggers": [redis_trigger(&env, &long_list)]}),
    )
    .await;
    let answer = eventually("long-value: a Ready condition", DEADLINE, || async {
        let (status, reason, message) = env.condition("long-value", "Ready").await?;
        ensure(status == "True" || message.contains("listName"), || {
            format!("Ready={status} {reason}: {message}")
        })
        .map(|()| (status, message))
    })
    .await;
    println!(
        "a 64 KiB listName: Ready={} {}",
        answer.0,
        answer.1.chars().take(200).collect::<String>()
    );

    // A source answering 1e308: read as a number, but no quantity can hold it; the metrics API
    // says so rather than answering a wrapped value. NaN: an error naming it.
    let port = odd_values_server().await;
    for (name, path) in [
        ("huge", "big"),
        ("not-a-number", "nan"),
        ("negative", "negative"),
    ] {
        env.create_target(
            name,
            0,
            json!({
                "pollingInterval": 1,
                "maxReplicaCount": 10,
                "triggers": [{"type": "metrics-api", "metadata": {
                    "url": format!("http://127.0.0.1:{port}/{path}"),
                    "valueLocation": "value",
                    "targetValue": "1"
                }}]
            }),
        )
        .await;
    }
    let metric = "s0-metric-api-value";
    eventually("huge: read as 1e308", DEADLINE, || async {
        let answer = ebb.ctx.store.get(&env.namespace, "huge", metric);
        ensure(
            matches!(answer, Some((Answer::Value(v), _)) if v == 1e308),
            || format!("{answer:?}"),
        )
    })
    .await;
    let (_, message) = condition_is(&env, "not-a-number", "False").await;
    assert!(
        message.contains("NaN") || message.contains("finite"),
        "{message}"
    );
    let api = env.serve_metrics_api(&ebb).await;
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3Dhuge",
        env.namespace
    );
    let err = expect_failure(&env.kubectl(&["get", "--raw", &path]), "reading 1e308");
    assert!(err.contains("quantity"), "{err}");
    // The HPA, denied a value, leaves the count where ebb put it.
    env.await_replicas("huge", "activated by ebb", DEADLINE, |n| n == 1)
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(env.replicas("huge").await, Ok(1));

    // -3: read as 0, as KEDA clamps it, so the HPA gets an answer (not a failed query), with
    // one Warning Event for the object however many polls read it.
    let negative = path.replace("name%3Dhuge", "name%3Dnegative");
    eventually("negative: answered as 0", DEADLINE, || async {
        let out = env.kubectl(&["get", "--raw", &negative]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        ensure(
            out.status.success() && text.contains("\"value\":\"0\""),
            || format!("{text} {}", String::from_utf8_lossy(&out.stderr)),
        )
    })
    .await;
    let warnings = || async {
        env.events_of("negative").await.map(|events| {
            events
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("NegativeMetricValue"))
                .map(|e| (e.count.unwrap_or(1), e.message.unwrap_or_default()))
                .collect::<Vec<_>>()
        })
    };
    eventually(
        "negative: one NegativeMetricValue Event",
        DEADLINE,
        || async {
            let found = warnings().await?;
            ensure(found.len() == 1, || format!("{found:?}"))
        },
    )
    .await;
    // Several more polls (one a second) add nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let found = warnings().await.expect("events");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, 1, "reported once: {found:?}");
    assert!(found[0].1.contains("-3"), "{found:?}");
    drop(api);

    // Through all of it, the canary kept working.
    redis.push(&canary_list, 2).await;
    eventually("the canary reads 5", DEADLINE, || async {
        let answer =
            ebb.ctx
                .store
                .get(&env.namespace, "canary", &format!("s0-redis-{canary_list}"));
        ensure(
            matches!(answer, Some((Answer::Value(v), _)) if v == 5.0),
            || format!("{answer:?}"),
        )
    })
    .await;
    condition_is(&env, "canary", "True").await;
    env.delete_scaled_objects().await;
}
