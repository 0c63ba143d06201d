//! `ebb explain` (the real binary) on a redis list ScaledObject served by ebb in process, with its
//! metrics API behind the real aggregator: the account is right when idle, when active and while
//! cooling down.

use std::time::Duration;

use ebb_crds::ScaledObject;
use integration_tests::{TestEnv, deployment, ebb_binary, ensure, eventually, setup, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

fn explain(env: &TestEnv) -> Result<String, String> {
    let out = std::process::Command::new(ebb_binary())
        .env("KUBECONFIG", &env.cluster.kubeconfig)
        .args(["explain", &format!("{}/worker", env.namespace)])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_gives_the_right_account_when_idle_active_and_cooling_down() {
    let env = setup("explain").await;
    let ebb = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb).await;
    let mut redis = env.redis(6).await;
    let list = unique_name("jobs");
    let metric = format!("s0-redis-{list}");
    env.create::<Deployment>(serde_json::to_value(deployment("worker", 0, &[])).expect("json"))
        .await;
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1,
            "cooldownPeriod": 20,
            "triggers": [{"type": "redis", "metadata": {
                "address": env.redis_address(),
                "databaseIndex": "6", "listName": list, "listLength": "5"
            }}]
        }
    }))
    .await;

    // Idle: at rest, the metric reads 0 and is inactive.
    eventually("explain: idle", DEADLINE, || async {
        let text = explain(&env)?;
        ensure(
            text.contains(": 0 replicas (min 0, max 100")
                && text.contains(&format!(
                    "{metric}: value 0, target 5 (AverageValue), inactive"
                ))
                && text.contains(
                    "Decision: inactive at rest: ebb scales up when a trigger becomes active",
                ),
            || text.clone(),
        )
    })
    .await;

    // Active: 12 items; ebb and the HPA take it up.
    redis
        .rpush(
            &list,
            &[
                "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
            ],
        )
        .await;
    env.await_replicas("worker", "scaled up", DEADLINE, |n| n >= 1)
        .await;
    eventually("explain: active", DEADLINE, || async {
        let text = explain(&env)?;
        ensure(
            text.contains(&format!(
                "{metric}: value 12, target 5 (AverageValue), active"
            )) && text.contains("Active: True (ScalerActive)")
                && text.contains("HPA keda-hpa-worker: desired 3")
                && text.contains("Decision: active: the HPA sets the count between 1 and 100"),
            || text.clone(),
        )
    })
    .await;

    // Cooling down: empty again, the target is still up until the cooldown ends.
    redis.del(&[&list]).await;
    eventually("explain: cooling down", DEADLINE, || async {
        let text = explain(&env)?;
        ensure(
            text.contains(&format!(
                "{metric}: value 0, target 5 (AverageValue), inactive"
            )) && text.contains("Decision: inactive, cooling down: ebb scales to 0 at"),
            || text.clone(),
        )
    })
    .await;
    // And the account of an unknown object is a clear error.
    let out = std::process::Command::new(ebb_binary())
        .env("KUBECONFIG", &env.cluster.kubeconfig)
        .args(["explain", &format!("{}/nobody", env.namespace)])
        .output()
        .expect("run ebb explain");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "ScaledObject or ScaledJob {}/nobody not found",
            env.namespace
        )),
        "{stderr}"
    );
    env.delete_scaled_objects().await;
}
