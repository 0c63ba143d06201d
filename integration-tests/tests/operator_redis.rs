//! The controller in process against the real apiserver, HPA controller and Redis: a redis list
//! ScaledObject with minReplicaCount 0 scales its Deployment 0 -> 1 past the activation length
//! and back to 0 after the cooldown, gets an HPA in KEDA's shape, and a bad ScaledObject beside
//! it ends in Ready=False with an Event while the healthy one keeps scaling.

use std::time::Duration;

use ebb_crds::ScaledObject;
use integration_tests::{TestEnv, deployment, ensure, eventually, setup, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, PostParams};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

async fn replicas(env: &TestEnv, name: &str) -> Result<i32, String> {
    let d = env
        .api::<Deployment>()
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    Ok(d.spec.and_then(|s| s.replicas).unwrap_or(-1))
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("{url}/9"))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

fn ready_condition(so: &ScaledObject) -> Option<(String, String)> {
    so.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.message.clone().unwrap_or_default()))
}

#[tokio::test]
async fn redis_list_scales_zero_to_one_and_back_and_bad_objects_are_reported() {
    let env = setup("operator-redis").await;
    let _ebb = env.start_ebb();
    let address = env
        .cluster
        .redis_url
        .trim_start_matches("redis://")
        .to_string();
    let list = unique_name("jobs");
    let mut redis = redis_conn(&env.cluster.redis_url).await;
    let _: () = redis::cmd("DEL")
        .arg(&list)
        .query_async(&mut redis)
        .await
        .expect("DEL");

    env.api::<Deployment>()
        .create(
            &PostParams::default(),
            &deployment("worker", 0, &[("REDIS_ADDRESS", "placeholder")]),
        )
        .await
        .expect("create Deployment");
    let so: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker", "labels": {"team": "jobs"}},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1,
            "cooldownPeriod": 4,
            "minReplicaCount": 0,
            "maxReplicaCount": 5,
            "triggers": [{
                "type": "redis",
                "metadata": {
                    "address": address,
                    "listName": list,
                    "listLength": "5",
                    "activationListLength": "2",
                    "databaseIndex": "9"
                }
            }]
        }
    }))
    .expect("ScaledObject");
    let api = env.api::<ScaledObject>();
    api.create(&PostParams::default(), &so)
        .await
        .expect("create ScaledObject");

    // A bad neighbour: min above max. It must be reported, and must not disturb the other.
    let bad: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "broken"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "minReplicaCount": 5,
            "maxReplicaCount": 2,
            "triggers": [{"type": "redis", "metadata": {"address": address, "listName": list}}]
        }
    }))
    .expect("ScaledObject");
    api.create(&PostParams::default(), &bad)
        .await
        .expect("create bad ScaledObject");

    // The HPA, in KEDA's shape.
    let hpa = eventually("the HPA keda-hpa-worker", DEADLINE, || async {
        env.api::<HorizontalPodAutoscaler>()
            .get("keda-hpa-worker")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let spec = serde_json::to_value(hpa.spec.expect("spec")).expect("json");
    assert_eq!(spec["minReplicas"], 1);
    assert_eq!(spec["maxReplicas"], 5);
    assert_eq!(spec["scaleTargetRef"]["name"], "worker");
    let metric = &spec["metrics"][0]["external"];
    assert_eq!(metric["metric"]["name"], format!("s0-redis-{list}"));
    assert_eq!(
        metric["metric"]["selector"]["matchLabels"]["scaledobject.keda.sh/name"],
        "worker"
    );
    assert_eq!(metric["target"]["type"], "AverageValue");
    assert_eq!(metric["target"]["averageValue"], "5");
    assert_eq!(
        hpa.metadata
            .labels
            .expect("labels")
            .get("team")
            .map(String::as_str),
        Some("jobs")
    );

    // An HPA deleted by hand is put back.
    let first_uid = hpa.metadata.uid.clone();
    env.api::<HorizontalPodAutoscaler>()
        .delete("keda-hpa-worker", &Default::default())
        .await
        .expect("delete HPA");
    eventually("the HPA recreated", DEADLINE, || async {
        let hpa = env
            .api::<HorizontalPodAutoscaler>()
            .get("keda-hpa-worker")
            .await
            .map_err(|e| e.to_string())?;
        ensure(hpa.metadata.uid != first_uid, || "the old HPA".into())
    })
    .await;

    // Ready, with the status KEDA fills in.
    let ready = eventually("worker Ready=True", DEADLINE, || async {
        let so = api.get("worker").await.map_err(|e| e.to_string())?;
        let ready = ready_condition(&so);
        ensure(ready.as_ref().is_some_and(|(s, _)| s == "True"), || {
            format!("{ready:?}")
        })?;
        Ok(so)
    })
    .await;
    let status = ready.status.expect("status");
    assert_eq!(
        status.scale_target_kind.as_deref(),
        Some("apps/v1.Deployment")
    );
    assert_eq!(status.hpa_name.as_deref(), Some("keda-hpa-worker"));
    assert_eq!(status.original_replica_count, Some(0));
    assert_eq!(
        status.external_metric_names,
        Some(vec![format!("s0-redis-{list}")])
    );

    // The bad one: Ready=False naming the field, and an Warning Event.
    eventually("broken Ready=False", DEADLINE, || async {
        let so = api.get("broken").await.map_err(|e| e.to_string())?;
        let ready = ready_condition(&so);
        ensure(
            ready.as_ref().is_some_and(|(s, m)| {
                s == "False" && m.contains("spec.minReplicaCount: 5 is above maxReplicaCount 2")
            }),
            || format!("{ready:?}"),
        )
    })
    .await;
    eventually(
        "a ScaledObjectCheckFailed Event for broken",
        DEADLINE,
        || async {
            let events = env
                .api::<Event>()
                .list(&ListParams::default().fields("involvedObject.name=broken"))
                .await
                .map_err(|e| e.to_string())?;
            ensure(
                events
                    .items
                    .iter()
                    .any(|e| e.reason.as_deref() == Some("ScaledObjectCheckFailed")),
                || {
                    format!(
                        "{:?}",
                        events.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
                    )
                },
            )
        },
    )
    .await;

    // Below activation (2 items, activation 2): stays at 0 over several polls.
    let _: () = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["a", "b"])
        .query_async(&mut redis)
        .await
        .expect("RPUSH");
    let observe_until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < observe_until {
        assert_eq!(replicas(&env, "worker").await, Ok(0), "below activation");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Past activation: 0 -> 1 (then the HPA may take it further).
    let _: () = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["c"])
        .query_async(&mut redis)
        .await
        .expect("RPUSH");
    eventually("worker scaled up from zero", DEADLINE, || async {
        let n = replicas(&env, "worker").await?;
        ensure(n >= 1, || format!("replicas {n}"))
    })
    .await;

    // Empty: back to 0 after the cooldown.
    let _: () = redis::cmd("DEL")
        .arg(&list)
        .query_async(&mut redis)
        .await
        .expect("DEL");
    eventually(
        "worker back to zero after the cooldown",
        DEADLINE,
        || async {
            let n = replicas(&env, "worker").await?;
            ensure(n == 0, || format!("replicas {n}"))
        },
    )
    .await;
    eventually("Activated and Deactivated Events", DEADLINE, || async {
        let events = env
            .api::<Event>()
            .list(&ListParams::default().fields("involvedObject.name=worker"))
            .await
            .map_err(|e| e.to_string())?;
        let reasons: Vec<&str> = events
            .items
            .iter()
            .filter_map(|e| e.reason.as_deref())
            .collect();
        ensure(
            reasons.contains(&"KEDAScaleTargetActivated")
                && reasons.contains(&"KEDAScaleTargetDeactivated"),
            || format!("{reasons:?}"),
        )
    })
    .await;

    env.delete_scaled_objects().await;
}
