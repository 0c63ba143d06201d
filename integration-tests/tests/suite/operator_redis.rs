//! The controller in process against the real apiserver, HPA controller and Redis: a redis list
//! ScaledObject with minReplicaCount 0 scales its Deployment 0 -> 1 past the activation length
//! and back to 0 after the cooldown, gets an HPA in KEDA's shape, and a bad ScaledObject beside
//! it ends in Ready=False with an Event while the healthy one keeps scaling.

use std::time::Duration;

use ebb_crds::ScaledObject;
use integration_tests::{deployment, ensure, eventually, setup, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("{url}/9"))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

#[tokio::test]
async fn redis_list_scales_zero_to_one_and_back_and_bad_objects_are_reported() {
    let env = setup("operator-redis").await;
    let ebb = env.start_ebb();
    // The admin endpoints, on a port of their own.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(ebb_operator::admin::serve(
        listener,
        ebb.ctx.metrics.clone(),
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let http = http.clone();
        let url = format!("{admin}{path}");
        async move {
            let response = http.get(url).send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response.text().await.map_err(|e| e.to_string())?;
            Ok::<(u16, String), String>((status, body))
        }
    };
    assert_eq!(get("/healthz").await, Ok((200, "ok".to_string())));
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

    let worker = deployment("worker", 0, &[("REDIS_ADDRESS", "placeholder")]);
    env.create::<Deployment>(serde_json::to_value(worker).expect("json"))
        .await;
    env.create::<ScaledObject>(json!({
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
    .await;

    // A bad neighbour: two triggers of one name (min above max, the CRD refuses before it is
    // stored). It must be reported, and must not disturb the other. (On a workload of its own:
    // two ScaledObjects on one workload is itself refused.)
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "broken"},
        "spec": {
            "scaleTargetRef": {"name": "other-worker"},
            "triggers": [
                {"type": "redis", "name": "q", "metadata": {"address": address, "listName": list}},
                {"type": "redis", "name": "q", "metadata": {"address": address, "listName": list}}
            ]
        }
    }))
    .await;

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
    eventually("worker Ready=True", DEADLINE, || async {
        let (status, _, message) = env.condition("worker", "Ready").await?;
        ensure(status == "True", || format!("Ready={status}: {message}"))
    })
    .await;
    let status = env
        .api::<ScaledObject>()
        .get("worker")
        .await
        .expect("get worker")
        .status
        .expect("status");
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
        let (status, _, message) = env.condition("broken", "Ready").await?;
        ensure(
            status == "False"
                && message.contains("spec.triggers[1].name: \"q\" is used by another trigger"),
            || format!("Ready={status}: {message}"),
        )
    })
    .await;
    eventually(
        "a ScaledObjectCheckFailed Event for broken",
        DEADLINE,
        || async {
            let events = env.events_of("broken").await?;
            ensure(
                events
                    .iter()
                    .any(|e| e.reason.as_deref() == Some("ScaledObjectCheckFailed")),
                || format!("{:?}", events.iter().map(|e| &e.reason).collect::<Vec<_>>()),
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
        assert_eq!(env.replicas("worker").await, Ok(0), "below activation");
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
        let n = env.replicas("worker").await?;
        ensure(n >= 1, || format!("replicas {n}"))
    })
    .await;
    // KEDA's label on the object itself.
    eventually("the scaledobject.keda.sh/name label", DEADLINE, || async {
        let so = env
            .api::<ScaledObject>()
            .get("worker")
            .await
            .map_err(|e| e.to_string())?;
        let label = so
            .metadata
            .labels
            .unwrap_or_default()
            .get("scaledobject.keda.sh/name")
            .cloned();
        ensure(label.as_deref() == Some("worker"), || format!("{label:?}"))
    })
    .await;
    // The reading is on /metrics under KEDA's name.
    let series = format!(
        "keda_scaler_metrics_value{{namespace=\"{}\",scaledObject=\"worker\",scaler=\"redisScaler\",triggerIndex=\"0\",metric=\"s0-redis-{list}\",type=\"scaledobject\"}} 3.0\n",
        env.namespace
    );
    eventually("the reading on /metrics", DEADLINE, || async {
        let (status, body) = get("/metrics").await?;
        ensure(status == 200 && body.contains(&series), || body.clone())
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
            let n = env.replicas("worker").await?;
            ensure(n == 0, || format!("replicas {n}"))
        },
    )
    .await;
    env.await_event_reasons(
        "worker",
        &["KEDAScaleTargetActivated", "KEDAScaleTargetDeactivated"],
        DEADLINE,
    )
    .await;

    env.delete_scaled_objects().await;
    // Deleted objects leave no series behind.
    let (_, body) = get("/metrics").await.expect("/metrics");
    assert!(!body.contains("scaledObject=\"worker\""), "{body}");
}

#[tokio::test]
async fn each_bad_scaled_object_gets_a_clear_condition_and_event_while_a_good_one_scales() {
    let env = setup("operator-bad-objects").await;
    let _ebb = env.start_ebb();
    let address = env
        .cluster
        .redis_url
        .trim_start_matches("redis://")
        .to_string();
    let list = unique_name("jobs");
    let mut redis = redis_conn(&env.cluster.redis_url).await;
    env.create::<Deployment>(serde_json::to_value(deployment("worker", 0, &[])).expect("json"))
        .await;
    // Each bad object's own workload: two ScaledObjects on one workload is itself refused.
    let bad_names = [
        "unknown-type",
        "bad-metadata",
        "min-above-max",
        "missing-secret",
        "missing-authentication",
    ];
    for name in bad_names {
        env.create::<Deployment>(
            serde_json::to_value(deployment(&format!("{name}-worker"), 0, &[])).expect("json"),
        )
        .await;
    }
    env.create::<ebb_crds::TriggerAuthentication>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "redis-auth"},
        "spec": {"secretTargetRef": [{"parameter": "address", "name": "missing-secret", "key": "address"}]}
    }))
    .await;

    let redis_trigger = |extra: serde_json::Value| {
        let mut metadata = json!({
            "address": address,
            "listName": list,
            "activationListLength": "0",
            "databaseIndex": "9"
        });
        if let (Some(m), Some(e)) = (metadata.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        metadata
    };
    // (name, spec, what the Ready message must say). A scaler that cannot be built also gets
    // a KEDAScalerFailed Event, as in KEDA; every refusal's reason is ScaledObjectCheckFailed.
    let scaler_failed = [
        "unknown-type",
        "bad-metadata",
        "missing-secret",
        "missing-authentication",
    ];
    let cases = [
        (
            "unknown-type",
            json!({"scaleTargetRef": {"name": "unknown-type-worker"}, "triggers": [{"type": "kafka-ish", "metadata": {}}]}),
            "trigger 0: unknown trigger type \"kafka-ish\"",
        ),
        (
            "bad-metadata",
            json!({"scaleTargetRef": {"name": "bad-metadata-worker"}, "triggers": [{"type": "redis", "metadata": redis_trigger(json!({"listLength": "five"}))}]}),
            "trigger 0 (redis): listLength: expected a number, got \"five\"",
        ),
        (
            "missing-target",
            json!({"scaleTargetRef": {"name": "nope"}, "triggers": [{"type": "redis", "metadata": redis_trigger(json!({}))}]}),
            "spec.scaleTargetRef: Deployment \"nope\" not found",
        ),
        (
            "bad-formula",
            json!({"scaleTargetRef": {"name": "bad-formula-worker"}, "advanced": {"scalingModifiers": {"formula": "q +", "target": "5"}}, "triggers": [{"type": "redis", "name": "q", "metadata": redis_trigger(json!({}))}]}),
            "spec.advanced.scalingModifiers.formula: ",
        ),
        (
            // A missing Secret is an empty parameter, as in KEDA; the address it should have
            // given is then missing.
            "missing-secret",
            json!({"scaleTargetRef": {"name": "missing-secret-worker"}, "triggers": [{"type": "redis", "metadata": {"listName": list}, "authenticationRef": {"name": "redis-auth"}}]}),
            "trigger 0 (redis): address: required",
        ),
        (
            "missing-authentication",
            json!({"scaleTargetRef": {"name": "missing-authentication-worker"}, "triggers": [{"type": "redis", "metadata": redis_trigger(json!({})), "authenticationRef": {"name": "nope"}}]}),
            "spec.triggers[0].authenticationRef: TriggerAuthentication \"nope\" not found",
        ),
    ];
    let create = |name: &str, spec: serde_json::Value| {
        env.create::<ScaledObject>(json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": name},
            "spec": spec
        }))
    };
    for (name, spec, _) in &cases {
        create(name, spec.clone()).await;
    }
    create(
        "good",
        json!({
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1,
            "triggers": [{"type": "redis", "metadata": redis_trigger(json!({}))}]
        }),
    )
    .await;

    for (name, _, message) in &cases {
        eventually(&format!("{name}: Ready=False"), DEADLINE, || async {
            let (status, reason, m) = env.condition(name, "Ready").await?;
            ensure(
                status == "False" && reason == "ScaledObjectCheckFailed" && m.contains(message),
                || format!("Ready={status} {reason}: {m}"),
            )
        })
        .await;
        let mut reasons = vec!["ScaledObjectCheckFailed"];
        if scaler_failed.contains(name) {
            reasons.push("KEDAScalerFailed");
        }
        for reason in reasons {
            eventually(
                &format!("{name}: a Warning Event {reason}"),
                DEADLINE,
                || async {
                    let events = env.events_of(name).await?;
                    ensure(
                        events.iter().any(|e| {
                            e.type_.as_deref() == Some("Warning")
                                && e.reason.as_deref() == Some(reason)
                                && e.message.as_deref().is_some_and(|m| m.contains(message))
                        }),
                        || {
                            format!(
                                "{:?}",
                                events
                                    .iter()
                                    .map(|e| (&e.reason, &e.message))
                                    .collect::<Vec<_>>()
                            )
                        },
                    )
                },
            )
            .await;
        }
    }

    // The good one scales regardless of its broken neighbours.
    let _: () = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["a"])
        .query_async(&mut redis)
        .await
        .expect("RPUSH");
    eventually(
        "worker scaled up by the good ScaledObject",
        DEADLINE,
        || async {
            let n = env.replicas("worker").await?;
            ensure(n >= 1, || format!("replicas {n}"))
        },
    )
    .await;
    let _: () = redis::cmd("DEL")
        .arg(&list)
        .query_async(&mut redis)
        .await
        .expect("DEL");
    env.delete_scaled_objects().await;
}

/// The apiserver requests an in-process ebb made, watches and lists left out (a watch
/// reconnects on its own schedule).
fn requests_made(ebb: &integration_tests::EbbGuard) -> Vec<((String, String), u64)> {
    ebb.apiserver_requests()
        .into_iter()
        .filter(|((verb, _), _)| !matches!(verb.as_str(), "watch" | "list"))
        .collect()
}

#[tokio::test]
async fn an_idle_scaled_object_reconciles_without_requests_and_its_changed_hpa_is_put_back() {
    let env = setup("operator-idle").await;
    let ebb = env.start_ebb();
    let address = env
        .cluster
        .redis_url
        .trim_start_matches("redis://")
        .to_string();
    let list = unique_name("idle");
    let worker = deployment("idle", 0, &[]);
    env.create::<Deployment>(serde_json::to_value(worker).expect("json"))
        .await;
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "idle"},
        "spec": {
            "scaleTargetRef": {"name": "idle"},
            "pollingInterval": 1,
            "maxReplicaCount": 4,
            "triggers": [{
                "type": "redis",
                "metadata": {"address": address, "listName": list, "databaseIndex": "9"}
            }]
        }
    }))
    .await;

    // Settled: Ready, and HPAActive mirrors what the HPA controller said of the HPA.
    eventually("idle Ready=True and HPAActive=False", DEADLINE, || async {
        let (ready, _, message) = env.condition("idle", "Ready").await?;
        ensure(ready == "True", || format!("Ready={ready}: {message}"))?;
        let (active, reason, _) = env.condition("idle", "HPAActive").await?;
        ensure(active == "False", || {
            format!("HPAActive={active} ({reason})")
        })
    })
    .await;
    // ... and no longer writing: three polls in a row without a request.
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut before = requests_made(&ebb);
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = requests_made(&ebb);
        if now == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ebb kept sending requests for an idle ScaledObject: {now:?}"
        );
        before = now;
    }

    // A change ebb does not act on (a new annotation) is reconciled without a single
    // request: no discovery, no read of the Deployment, no HPA apply, no status write.
    let reconciles = ebb.ctx.metrics.reconciles();
    env.api::<ScaledObject>()
        .patch(
            "idle",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {"example.com/owner": "team-a"}}}),
            ),
        )
        .await
        .expect("annotate idle");
    eventually("a reconcile of idle", DEADLINE, || async {
        let now = ebb.ctx.metrics.reconciles();
        ensure(now > reconciles, || format!("{now} reconciles"))
    })
    .await;
    assert_eq!(
        requests_made(&ebb),
        before,
        "requests of a reconcile with nothing to do"
    );

    // An HPA changed by hand is put back.
    env.api::<HorizontalPodAutoscaler>()
        .patch(
            "keda-hpa-idle",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"maxReplicas": 9}})),
        )
        .await
        .expect("change the HPA");
    eventually("the HPA's maxReplicas back at 4", DEADLINE, || async {
        let hpa = env
            .api::<HorizontalPodAutoscaler>()
            .get("keda-hpa-idle")
            .await
            .map_err(|e| e.to_string())?;
        let max = hpa.spec.map(|s| s.max_replicas);
        ensure(max == Some(4), || format!("maxReplicas {max:?}"))
    })
    .await;

    // An idle target scaled up by hand is brought back to rest at a poll soon after: the
    // Deployment's metadata watch says its generation moved, so the trusted resting count is
    // read again (without the watch, only after REPLICAS_REFRESH, five minutes).
    let scale_reads = || {
        ebb.apiserver_requests()
            .get(&("get".to_string(), "deployments/scale".to_string()))
            .copied()
            .unwrap_or(0)
    };
    let reads_before = scale_reads();
    env.api::<Deployment>()
        .patch_scale(
            "idle",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("scale idle by hand");
    eventually("idle brought back to 0", DEADLINE, || async {
        let n = env.replicas("idle").await?;
        ensure(n == 0, || format!("replicas {n}"))
    })
    .await;
    assert!(
        scale_reads() > reads_before,
        "the scale-up was noticed by reading /scale again"
    );
    // At rest again (after one more read: ebb's own write moved the generation), the polls
    // read nothing: three polls in a row without a read of /scale.
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut before = scale_reads();
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = scale_reads();
        if now == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ebb kept reading /scale of a target at rest: {now} reads"
        );
        before = now;
    }
    env.delete_scaled_objects().await;
}

/// As in KEDA: one trigger active while another fails leaves Ready Unknown
/// (`PartialTriggerError`), not True; the active trigger still scales the target.
#[tokio::test]
async fn one_trigger_active_while_another_fails_is_ready_unknown() {
    let env = setup("operator-partial").await;
    let _ebb = env.start_ebb();
    let mut redis = env.redis(0).await;
    let list = unique_name("jobs");
    redis.push(&list, 10).await;
    // Nothing listens on this address: the second trigger's every read fails.
    let dead = integration_tests::dead_address();
    env.create_target(
        "worker",
        0,
        json!({
            "pollingInterval": 1,
            "triggers": [
                {"type": "redis", "metadata": {
                    "address": env.redis_address(), "listName": list, "listLength": "5"
                }},
                {"type": "redis", "metadata": {
                    "address": dead, "listName": list, "listLength": "5"
                }}
            ]
        }),
    )
    .await;
    env.await_replicas(
        "worker",
        "activated by the working trigger",
        DEADLINE,
        |n| n >= 1,
    )
    .await;
    eventually("Ready=Unknown PartialTriggerError", DEADLINE, || async {
        let (status, reason, message) = env.condition("worker", "Ready").await?;
        ensure(
            status == "Unknown" && reason == "PartialTriggerError" && message.contains(&dead),
            || format!("Ready={status} {reason}: {message}"),
        )
    })
    .await;
    redis.del(&[&list]).await;
    env.delete_scaled_objects().await;
}
