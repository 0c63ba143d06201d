//! scalingModifiers with ebb in process against the real apiserver, HPA controller and Redis:
//! the HPA gets one `composite-metric` in place of the triggers' metrics, activation follows the
//! formula's value against activationTarget (not each trigger's own activation), the value is
//! kept for the metrics API, and HPAActive mirrors the HPA controller's ScalingActive condition.

use std::time::Duration;

use ebb_crds::ScaledObject;
use ebb_operator::scale::evaluate::Answer;
use integration_tests::{deployment, ensure, eventually, setup, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_composite_metric_drives_activation_and_the_hpa() {
    let env = setup("operator-modifiers").await;
    let ebb = env.start_ebb();
    let mut redis = env.redis(8).await;
    let (a, b) = (unique_name("a"), unique_name("b"));
    let address = env
        .cluster
        .redis_url
        .trim_start_matches("redis://")
        .to_string();

    env.create::<Deployment>(serde_json::to_value(deployment("worker", 0, &[])).expect("json"))
        .await;
    let trigger = |name: &str, list: &str| {
        json!({"type": "redis", "name": name, "metadata": {
            "address": address, "databaseIndex": "8", "listName": list, "listLength": "5"
        }})
    };
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1,
            "cooldownPeriod": 1,
            "advanced": {"scalingModifiers": {
                "formula": "a + b", "target": "4", "activationTarget": "5"
            }},
            "triggers": [trigger("a", &a), trigger("b", &b)]
        }
    }))
    .await;

    // The HPA: the composite metric only, with its own target.
    let hpa = eventually("the HPA", DEADLINE, || async {
        env.api::<HorizontalPodAutoscaler>()
            .get("keda-hpa-worker")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let metrics = hpa.spec.and_then(|s| s.metrics).unwrap_or_default();
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    let external = metrics[0].external.as_ref().expect("an External metric");
    assert_eq!(external.metric.name, "composite-metric");
    assert_eq!(
        external
            .metric
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .and_then(|l| l.get("scaledobject.keda.sh/name"))
            .map(String::as_str),
        Some("worker")
    );
    assert_eq!(external.target.type_, "AverageValue");
    assert_eq!(
        external.target.average_value.as_ref().map(|q| q.0.as_str()),
        Some("4")
    );

    // 3 + 2 = 5: each trigger would be active on its own (activation 0), the composite is not
    // above its activationTarget. Once the loop has seen it, the target stays at zero.
    redis.rpush(&a, &["1", "2", "3"]).await;
    redis.rpush(&b, &["1", "2"]).await;
    eventually("the composite value 5 is kept", DEADLINE, || async {
        let answer = ebb
            .ctx
            .store
            .get(&env.namespace, "worker", "composite-metric");
        ensure(
            matches!(answer, Some((Answer::Value(v), _)) if v == 5.0),
            || format!("{answer:?}"),
        )
    })
    .await;
    let end = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < end {
        assert_eq!(
            env.replicas("worker").await,
            Ok(0),
            "at the activationTarget"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let so = env.api::<ScaledObject>().get("worker").await.expect("get");
    let activity = so
        .status
        .and_then(|s| s.triggers_activity)
        .unwrap_or_default();
    assert_eq!(
        activity.get("composite-metric").map(|a| a.is_active),
        Some(false),
        "{activity:?}"
    );

    // 3 + 3 = 6: above it.
    redis.rpush(&b, &["3"]).await;
    env.await_replicas(
        "worker",
        "scaled up from zero by the composite",
        DEADLINE,
        |n| n >= 1,
    )
    .await;
    eventually("triggersActivity says why", DEADLINE, || async {
        let so = env
            .api::<ScaledObject>()
            .get("worker")
            .await
            .map_err(|e| e.to_string())?;
        let activity = so
            .status
            .and_then(|s| s.triggers_activity)
            .unwrap_or_default();
        ensure(
            activity.get("composite-metric").map(|a| a.is_active) == Some(true),
            || format!("{activity:?}"),
        )
    })
    .await;

    // HPAActive follows the HPA controller's own ScalingActive condition.
    eventually("HPAActive mirrors ScalingActive", DEADLINE, || async {
        let hpa = env
            .api::<HorizontalPodAutoscaler>()
            .get("keda-hpa-worker")
            .await
            .map_err(|e| e.to_string())?;
        let scaling_active = hpa
            .status
            .and_then(|s| s.conditions)
            .and_then(|c| c.into_iter().find(|c| c.type_ == "ScalingActive"))
            .ok_or("the HPA controller has not reported yet")?;
        let (status, reason, _) = env.condition("worker", "HPAActive").await?;
        ensure(
            status == scaling_active.status && Some(&reason) == scaling_active.reason.as_ref(),
            || {
                format!(
                    "HPAActive {status}/{reason}, ScalingActive {}/{:?}",
                    scaling_active.status, scaling_active.reason
                )
            },
        )
    })
    .await;

    // Drained: back to zero after the cooldown.
    redis.del(&[&a, &b]).await;
    env.await_replicas("worker", "back to zero", DEADLINE, |n| n == 0)
        .await;
    env.delete_scaled_objects().await;
}

#[tokio::test]
async fn a_bad_formula_is_reported_on_the_object() {
    let env = setup("operator-modifiers-bad").await;
    let _ebb = env.start_ebb();
    env.create::<Deployment>(serde_json::to_value(deployment("worker", 0, &[])).expect("json"))
        .await;
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "advanced": {"scalingModifiers": {"formula": "a + c", "target": "4"}},
            "triggers": [{"type": "redis", "name": "a", "metadata": {
                "address": "127.0.0.1:1", "listName": "x"
            }}]
        }
    }))
    .await;
    eventually("Ready=False naming the formula", DEADLINE, || async {
        let (status, _, message) = env.condition("worker", "Ready").await?;
        ensure(
            status == "False"
                && message.contains("spec.advanced.scalingModifiers.formula")
                && message.contains("unknown trigger name \"c\""),
            || format!("Ready={status}: {message}"),
        )
    })
    .await;
    env.delete_scaled_objects().await;
}
