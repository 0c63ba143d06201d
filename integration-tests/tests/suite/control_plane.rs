//! The dev cluster is a real Kubernetes: the pinned apiserver answers, the real controller-manager
//! turns Deployments into ReplicaSets and Pods, the scheduler binds them to kwok's node, and a
//! write to `/scale` takes effect; the real Job controller sees Jobs end as kwok finishes their
//! pods.

use std::time::Duration;

use integration_tests::{deployment, ensure, eventually, expect_success, setup};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

/// Pods of `app` that are Running and Ready on a node.
async fn ready_pods(env: &integration_tests::TestEnv, app: &str) -> Result<Vec<Pod>, String> {
    let pods = env
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map_err(|e| e.to_string())?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| {
            let status = p.status.clone().unwrap_or_default();
            status.phase.as_deref() == Some("Running")
                && status
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .collect())
}

#[tokio::test]
async fn kubectl_reports_the_pinned_server_version() {
    let env = setup("kubectl-version").await;
    let out = expect_success(&env.kubectl(&["version", "-o", "json"]), "kubectl version");
    let version: serde_json::Value = serde_json::from_str(&out).expect("kubectl prints JSON");
    assert_eq!(
        version["serverVersion"]["gitVersion"], env.cluster.kubernetes_version,
        "server version"
    );
    assert_eq!(
        version["clientVersion"]["gitVersion"], env.cluster.kubernetes_version,
        "kubectl version"
    );
}

#[tokio::test]
async fn controller_manager_creates_replicaset_and_pods_that_become_ready() {
    let env = setup("deployment-pods").await;
    let name = "web";
    env.api::<Deployment>()
        .create(&PostParams::default(), &deployment(name, 2, &[]))
        .await
        .expect("create Deployment");

    let rs =
        eventually("a ReplicaSet owned by the Deployment", DEADLINE, || async {
            let list = env
                .api::<ReplicaSet>()
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|rs| {
                    rs.metadata.owner_references.iter().flatten().any(|o| {
                        o.kind == "Deployment" && o.name == name && o.controller == Some(true)
                    })
                })
                .ok_or_else(|| "no owned ReplicaSet".to_string())
        })
        .await;
    assert_eq!(rs.spec.as_ref().and_then(|s| s.replicas), Some(2));

    let pods = eventually(
        "two Running, Ready pods on kwok's node",
        DEADLINE,
        || async {
            let pods = ready_pods(&env, name).await?;
            ensure(pods.len() == 2, || format!("{} ready pods", pods.len()))?;
            Ok(pods)
        },
    )
    .await;
    for pod in pods {
        let spec = pod.spec.expect("pod spec");
        assert_eq!(
            spec.node_name.as_deref(),
            Some(env.cluster.node_name.as_str())
        );
        let owner = &pod.metadata.owner_references.expect("owned")[0];
        assert_eq!(owner.kind, "ReplicaSet");
        assert_eq!(Some(owner.name.clone()), rs.metadata.name);
    }
    eventually(
        "the Deployment reports 2 ready replicas",
        DEADLINE,
        || async {
            let d = env
                .api::<Deployment>()
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            let ready = d.status.and_then(|s| s.ready_replicas);
            ensure(ready == Some(2), || format!("readyReplicas {ready:?}"))
        },
    )
    .await;
}

#[tokio::test]
async fn writing_the_scale_subresource_takes_effect() {
    let env = setup("scale-subresource").await;
    let name = "worker";
    let api = env.api::<Deployment>();
    api.create(&PostParams::default(), &deployment(name, 1, &[]))
        .await
        .expect("create Deployment");

    for target in [3, 0, 1] {
        let patch = json!({"spec": {"replicas": target}});
        let scale = api
            .patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch /scale");
        // The apiserver omits a zero count (Go's omitempty).
        assert_eq!(scale.spec.and_then(|s| s.replicas).unwrap_or(0), target);

        eventually(
            &format!("{target} ready pods after scaling to {target}"),
            DEADLINE,
            || async {
                let spec = env.replicas(name).await?;
                ensure(spec == target, || format!("spec.replicas {spec}"))?;
                let ready = ready_pods(&env, name).await?.len() as i32;
                let all = env
                    .api::<Pod>()
                    .list(&ListParams::default().labels(&format!("app={name}")))
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .len() as i32;
                ensure(ready == target && all == target, || {
                    format!("{ready} ready of {all} pods")
                })?;
                // The Deployment's status follows its pods; /scale reports it.
                let scale = api.get_scale(name).await.map_err(|e| e.to_string())?;
                let observed = scale.status.map(|s| s.replicas);
                ensure(observed == Some(target), || {
                    format!("/scale status.replicas {observed:?}")
                })
            },
        )
        .await;
    }
}

/// The real Job controller sees Jobs run and end: kwok finishes a Job's pods at once, after the
/// time their `ebb.dev/job-runs-for` annotation asks for, and with exit code 1 when annotated
/// `ebb.dev/job-outcome: failed` (`xtask/src/cluster/kwok-stages.yaml`).
#[tokio::test]
async fn jobs_run_and_end_as_their_pods_are_annotated() {
    use k8s_openapi::api::batch::v1::Job;
    let env = setup("cp-jobs").await;
    let job = |name: &str, annotations: serde_json::Value| {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"annotations": annotations},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "example.invalid/c:1"}]}
                }
            }
        })
    };
    let created = tokio::time::Instant::now();
    for (name, annotations) in [
        ("at-once", json!({})),
        ("runs-3s", json!({"ebb.dev/job-runs-for": "3s"})),
        ("fails", json!({"ebb.dev/job-outcome": "failed"})),
    ] {
        env.create::<Job>(job(name, annotations)).await;
    }
    let state = |name: &'static str| {
        let api = env.api::<Job>();
        async move {
            let job = api.get(name).await.map_err(|e| e.to_string())?;
            let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
            Ok::<_, String>(
                conditions
                    .iter()
                    .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
                    .map(|c| c.type_.clone()),
            )
        }
    };
    for (name, wanted) in [("at-once", "Complete"), ("fails", "Failed")] {
        eventually(&format!("{name} ends {wanted}"), DEADLINE, || async {
            let s = state(name).await?;
            ensure(s.as_deref() == Some(wanted), || format!("{s:?}"))
        })
        .await;
    }
    // The 3 s Job runs (Running and Ready) before it completes.
    eventually("runs-3s has a Ready pod", DEADLINE, || async {
        let pods = env
            .api::<Pod>()
            .list(&ListParams::default().labels("job-name=runs-3s"))
            .await
            .map_err(|e| e.to_string())?;
        let phases: Vec<_> = pods
            .items
            .iter()
            .filter_map(|p| p.status.as_ref()?.phase.clone())
            .collect();
        ensure(
            phases.iter().any(|p| p == "Running" || p == "Succeeded"),
            || format!("{phases:?}"),
        )
    })
    .await;
    eventually("runs-3s ends Complete", DEADLINE, || async {
        let s = state("runs-3s").await?;
        ensure(s.as_deref() == Some("Complete"), || format!("{s:?}"))
    })
    .await;
    assert!(
        created.elapsed() >= Duration::from_secs(3),
        "the annotated Job ran at least its 3 s"
    );
}
