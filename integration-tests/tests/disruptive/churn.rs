//! Churn against the real `ebb` binary: ScaledObjects created, updated and deleted in waves
//! while others scale their targets 0 -> 1 -> 0. Every object reaches Ready in its lifetime and
//! takes an update; every deleted one leaves no HPA, no scale loop, no metric series and no
//! Redis connection behind; ebb's memory comes back near where it started. The suite churns
//! 150 objects in 3 waves; `cargo xtask chaos` sets EBB_CHURN_OBJECTS=1000.

use std::time::Duration;

use ebb_crds::ScaledObject;
use integration_tests::{TestEnv, deployment, ensure, eventually, setup, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(180);
const WAVES: usize = 3;
const STEADY: usize = 4;

fn churned_objects() -> usize {
    std::env::var("EBB_CHURN_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

/// The real `ebb` binary with its admin port, killed on drop.
struct EbbProcess {
    child: std::process::Child,
    admin: u16,
}

impl EbbProcess {
    fn start(env: &TestEnv) -> Self {
        let (mut cmd, admin) = integration_tests::ebb_run_command(env);
        let child = cmd
            .env("RUST_LOG", "warn")
            .args(["--metrics-api-addr", "off"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start ebb");
        Self { child, admin }
    }

    async fn metrics(&self) -> Result<String, String> {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
    }

    async fn loops(&self) -> Result<usize, String> {
        self.metrics()
            .await?
            .lines()
            .find_map(|l| l.strip_prefix("ebb_scale_loops "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| "no ebb_scale_loops in /metrics".to_string())
    }

    /// How many objects whose name starts with `prefix` have been polled: a value series of
    /// theirs is on `/metrics`.
    async fn polled(&self, prefix: &str) -> Result<usize, String> {
        let needle = format!("scaledObject=\"{prefix}");
        Ok(self
            .metrics()
            .await?
            .lines()
            .filter(|l| l.starts_with("keda_scaler_metrics_value{") && l.contains(&needle))
            .count())
    }

    /// Resident memory in KiB, from /proc.
    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for EbbProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scaled_object(
    env: &TestEnv,
    name: &str,
    wave: &str,
    list: &str,
    interval: i32,
) -> serde_json::Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "labels": {"churn-wave": wave}},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": interval,
            "cooldownPeriod": 1,
            "triggers": [{"type": "redis", "metadata": {
                "address": env.redis_address(), "listName": list, "listLength": "5"
            }}]
        }
    })
}

/// How many of a wave's objects are Ready=True.
async fn ready_in_wave(env: &TestEnv, wave: &str) -> Result<usize, String> {
    let objects = env
        .api::<ScaledObject>()
        .list(&ListParams::default().labels(&format!("churn-wave={wave}")))
        .await
        .map_err(|e| e.to_string())?;
    Ok(objects
        .items
        .iter()
        .filter(|so| {
            so.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churned_objects_leave_nothing_behind() {
    let _serial = crate::serial().await;
    let env = setup("churn").await;
    let total = churned_objects();
    let per_wave = total.div_ceil(WAVES);
    let ebb = EbbProcess::start(&env);
    let mut redis = env.redis(0).await;
    let mut conn = {
        let client = redis::Client::open(env.cluster.redis_url.as_str()).expect("url");
        client
            .get_multiplexed_async_connection()
            .await
            .expect("a Redis connection")
    };
    integration_tests::name_as_test(&mut conn).await;

    // The steady objects, scaled 0 -> 1 -> 0 while the churn goes on.
    let steady_list = unique_name("steady");
    for i in 0..STEADY {
        let name = format!("steady-{i}");
        env.create::<Deployment>(serde_json::to_value(deployment(&name, 0, &[])).expect("json"))
            .await;
        env.create::<ScaledObject>(scaled_object(&env, &name, "steady", &steady_list, 1))
            .await;
    }
    eventually(
        "the steady objects are Ready and polled",
        DEADLINE,
        || async {
            let n = ready_in_wave(&env, "steady").await?;
            let loops = ebb.loops().await?;
            let polled = ebb.polled("steady-").await?;
            ensure(n == STEADY && loops == STEADY && polled == STEADY, || {
                format!("{n} Ready, {loops} loops, {polled} polled")
            })
        },
    )
    .await;
    let clients_before = integration_tests::redis_clients_but_tests(&mut conn).await;
    let rss_before = ebb.rss_kib();

    let mut previous: Option<String> = None;
    for w in 0..WAVES {
        let wave = format!("w{w}");
        let list = unique_name(&format!("churn-{wave}"));
        // The steady targets get work in even waves and lose it in odd ones.
        if w % 2 == 0 {
            redis.push(&steady_list, 5).await;
        } else {
            redis.del(&[&steady_list]).await;
        }
        for i in 0..per_wave {
            let name = format!("churn-{wave}-{i}");
            env.create::<Deployment>(
                serde_json::to_value(deployment(&name, 0, &[])).expect("json"),
            )
            .await;
            env.create::<ScaledObject>(scaled_object(&env, &name, &wave, &list, 5))
                .await;
        }
        eventually(
            &format!("wave {wave}: every object Ready and polled"),
            DEADLINE,
            || async {
                let n = ready_in_wave(&env, &wave).await?;
                let polled = ebb.polled(&format!("churn-{wave}-")).await?;
                ensure(n == per_wave && polled == per_wave, || {
                    format!("{n} Ready, {polled} polled, of {per_wave}")
                })
            },
        )
        .await;
        // An update of every other object: a new threshold, which its HPA must carry.
        for i in (0..per_wave).step_by(2) {
            env.api::<ScaledObject>()
                .patch(
                    &format!("churn-{wave}-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"triggers": [{"type": "redis", "metadata": {
                        "address": env.redis_address(), "listName": list, "listLength": "7"
                    }}]}})),
                )
                .await
                .expect("patch");
        }
        eventually(
            &format!("wave {wave}: the updates reach the HPAs"),
            DEADLINE,
            || async {
                let hpas = env
                    .api::<HorizontalPodAutoscaler>()
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let updated = hpas
                    .items
                    .iter()
                    .filter(|h| {
                        h.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("scaledobject.keda.sh/name"))
                            .is_some_and(|n| n.starts_with(&format!("churn-{wave}-")))
                    })
                    .filter(|h| {
                        serde_json::to_value(&h.spec).is_ok_and(|s| {
                            s["metrics"][0]["external"]["target"]["averageValue"] == "7"
                        })
                    })
                    .count();
                ensure(updated == per_wave.div_ceil(2), || {
                    format!("{updated} of {} HPAs updated", per_wave.div_ceil(2))
                })
            },
        )
        .await;
        if let Some(old) = previous.replace(wave.clone()) {
            delete_wave(&env, &old).await;
        }
        // Meanwhile the steady targets followed their work.
        let want = i32::from(w % 2 == 0);
        for i in 0..STEADY {
            env.await_replicas(
                &format!("steady-{i}"),
                &format!("at {want} in wave {wave}"),
                DEADLINE,
                |n| n == want,
            )
            .await;
        }
        println!(
            "wave {wave}: {per_wave} created, Ready and half updated; ebb RSS {} MiB",
            ebb.rss_kib() / 1024
        );
    }
    if let Some(last) = previous {
        delete_wave(&env, &last).await;
    }
    redis.del(&[&steady_list]).await;

    // Nothing of the churned objects is left in ebb or the cluster.
    eventually("no churned object is left anywhere", DEADLINE, || async {
        let objects = env
            .api::<ScaledObject>()
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        ensure(objects.items.len() == STEADY, || {
            format!("{} ScaledObjects", objects.items.len())
        })?;
        let hpas = env
            .api::<HorizontalPodAutoscaler>()
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        ensure(hpas.items.len() == STEADY, || {
            format!("{} HPAs", hpas.items.len())
        })?;
        let loops = ebb.loops().await?;
        ensure(loops == STEADY, || format!("{loops} scale loops"))?;
        let metrics = ebb.metrics().await?;
        let leftover = metrics
            .lines()
            .filter(|l| l.contains("scaledObject=\"churn-"))
            .count();
        ensure(leftover == 0, || {
            format!("{leftover} metric series of deleted objects")
        })?;
        let clients = integration_tests::redis_clients_but_tests(&mut conn.clone()).await;
        ensure(clients == clients_before, || {
            format!("{clients} Redis connections, {clients_before} before")
        })
    })
    .await;
    let rss_after = ebb.rss_kib();
    println!(
        "churned {} objects in {WAVES} waves: ebb RSS {} MiB before, {} MiB after",
        per_wave * WAVES,
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        rss_after <= rss_before + rss_before / 2 + 16 * 1024,
        "ebb's RSS stayed at {} MiB after the churn (baseline {} MiB)",
        rss_after / 1024,
        rss_before / 1024
    );
    env.delete_scaled_objects().await;
}

/// Deletes a wave's ScaledObjects and Deployments and waits until the objects are gone.
async fn delete_wave(env: &TestEnv, wave: &str) {
    let selector = format!("churn-wave={wave}");
    env.api::<ScaledObject>()
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&selector),
        )
        .await
        .expect("delete a wave");
    eventually(&format!("wave {wave} deleted"), DEADLINE, || async {
        let left = env
            .api::<ScaledObject>()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        ensure(left == 0, || format!("{left} left"))
    })
    .await;
    let deployments = env
        .api::<Deployment>()
        .list(&ListParams::default())
        .await
        .expect("list Deployments");
    for d in deployments.items {
        let name = d.metadata.name.unwrap_or_default();
        if name.starts_with(&format!("churn-{wave}-")) {
            let _ = env
                .api::<Deployment>()
                .delete(&name, &DeleteParams::default())
                .await;
        }
    }
}
