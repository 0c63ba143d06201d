//! deploy/10-rbac.yaml gives ebb's ServiceAccount what ebb needs and nothing more: checked with
//! `kubectl auth can-i --as`, then by running ebb's controller as that ServiceAccount
//! (impersonated) through a 0 -> 1 -> 0 cycle with credentials in a Secret.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ebb_crds::{ScaledObject, TriggerAuthentication};
use integration_tests::{
    TestEnv, client_as, deployment, ensure, eventually, expect_success, setup, unique_name,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

const SERVICE_ACCOUNT: &str = "system:serviceaccount:ebb-system:ebb";
const DEADLINE: Duration = Duration::from_secs(60);

/// A client acting as ebb's ServiceAccount.
async fn as_ebb(env: &TestEnv) -> kube::Client {
    client_as(
        &env.cluster,
        SERVICE_ACCOUNT,
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:ebb-system",
        ],
    )
    .await
    .expect("impersonating client")
}

/// Applies deploy/00-namespace.yaml and 10-rbac.yaml once per test binary (the tests run side by side, and two
/// concurrent creates of the same objects would race).
async fn apply_rbac(env: &TestEnv) {
    static APPLIED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    APPLIED
        .get_or_init(|| async {
            // Without a namespace flag: the files name their objects' namespaces (ebb-system
            // and kube-system).
            for file in ["00-namespace.yaml", "10-rbac.yaml"] {
                let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../deploy")
                    .join(file);
                let out = std::process::Command::new(&env.cluster.kubectl)
                    .arg(format!("--kubeconfig={}", env.cluster.kubeconfig.display()))
                    .args(["apply", "--server-side", "-f", &path.display().to_string()])
                    .output()
                    .expect("kubectl");
                expect_success(&out, &format!("kubectl apply -f deploy/{file}"));
            }
        })
        .await;
}

/// `kubectl auth can-i <args> --as <service account>`: true for "yes".
fn can_i(env: &TestEnv, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--as", SERVICE_ACCOUNT]);
    let out = env.kubectl(&all);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[tokio::test]
async fn the_service_account_has_what_ebb_needs_and_no_more() {
    let env = setup("rbac-can-i").await;
    apply_rbac(&env).await;
    let ns = env.namespace.as_str();
    let allowed: &[&[&str]] = &[
        &["watch", "scaledobjects.keda.sh", "--all-namespaces"],
        &[
            "patch",
            "scaledobjects.keda.sh",
            "--subresource=status",
            "-n",
            ns,
        ],
        &[
            "update",
            "scaledobjects.keda.sh",
            "--subresource=finalizers",
            "-n",
            ns,
        ],
        // ScaledJobs, and the Jobs they create and delete.
        &["watch", "scaledjobs.keda.sh", "--all-namespaces"],
        &[
            "patch",
            "scaledjobs.keda.sh",
            "--subresource=status",
            "-n",
            ns,
        ],
        &[
            "update",
            "scaledjobs.keda.sh",
            "--subresource=finalizers",
            "-n",
            ns,
        ],
        &["watch", "jobs.batch", "--all-namespaces"],
        &["create", "jobs.batch", "-n", ns],
        &["delete", "jobs.batch", "-n", ns],
        &["get", "triggerauthentications.keda.sh", "-n", ns],
        &[
            "watch",
            "triggerauthentications.keda.sh",
            "--all-namespaces",
        ],
        &["watch", "clustertriggerauthentications.keda.sh"],
        // To release KEDA's finalizer.keda.sh after a move from KEDA.
        &["patch", "triggerauthentications.keda.sh", "-n", ns],
        &["patch", "clustertriggerauthentications.keda.sh"],
        &["create", "horizontalpodautoscalers.autoscaling", "-n", ns],
        &["patch", "deployments.apps", "--subresource=scale", "-n", ns],
        &[
            "patch",
            "statefulsets.apps",
            "--subresource=scale",
            "-n",
            ns,
        ],
        &["get", "deployments.apps", "-n", ns],
        // The targets' metadata watch, which says when an idle target's count moved.
        &["watch", "deployments.apps", "--all-namespaces"],
        &["watch", "statefulsets.apps", "--all-namespaces"],
        &["get", "secrets", "-n", ns],
        // LimitRange defaults, for cpu and memory triggers on containers without requests.
        &["list", "limitranges", "-n", ns],
        &["get", "configmaps", "-n", ns],
        &["create", "events", "-n", ns],
        &["update", "leases.coordination.k8s.io", "-n", "ebb-system"],
        &["patch", "pods", "-n", "ebb-system"],
        // kubernetes-workload triggers count Pods from a watch, in any namespace.
        &["watch", "pods", "--all-namespaces"],
        &["list", "pods", "-n", ns],
        &["create", "tokenreviews.authentication.k8s.io"],
        &["create", "subjectaccessreviews.authorization.k8s.io"],
        &[
            "get",
            "configmaps/extension-apiserver-authentication",
            "-n",
            "kube-system",
        ],
        &[
            "patch",
            "apiservices.apiregistration.k8s.io/v1beta1.external.metrics.k8s.io",
        ],
        // The admission webhook: its shared certificate's Secret, and its configuration's
        // caBundle.
        &["create", "secrets", "-n", "ebb-system"],
        &[
            "patch",
            "validatingwebhookconfigurations.admissionregistration.k8s.io/ebb",
        ],
    ];
    let denied: &[&[&str]] = &[
        &["list", "secrets", "--all-namespaces"],
        &["watch", "secrets", "--all-namespaces"],
        &["list", "secrets", "-n", ns],
        &["watch", "configmaps", "--all-namespaces"],
        &["get", "pods", "-n", ns],
        &["get", "nodes"],
        &["get", "*.*", "-n", ns],
        &["update", "deployments.apps", "-n", ns],
        &["delete", "scaledobjects.keda.sh", "-n", ns],
        &["delete", "scaledjobs.keda.sh", "-n", ns],
        &["update", "jobs.batch", "-n", ns],
        &["delete", "triggerauthentications.keda.sh", "-n", ns],
        &["update", "triggerauthentications.keda.sh", "-n", ns],
        &["update", "leases.coordination.k8s.io", "-n", ns],
        &["patch", "pods", "-n", ns],
        &["create", "clusterroles.rbac.authorization.k8s.io"],
        &[
            "patch",
            "apiservices.apiregistration.k8s.io/v1beta1.metrics.k8s.io",
        ],
        &["create", "apiservices.apiregistration.k8s.io"],
        &["create", "secrets", "-n", ns],
        &["update", "secrets", "-n", "ebb-system"],
        &[
            "patch",
            "validatingwebhookconfigurations.admissionregistration.k8s.io/other",
        ],
        &[
            "create",
            "validatingwebhookconfigurations.admissionregistration.k8s.io",
        ],
    ];
    for args in allowed {
        assert!(can_i(&env, args), "ebb must be allowed to {args:?}");
    }
    for args in denied {
        assert!(!can_i(&env, args), "ebb must not be allowed to {args:?}");
    }
}

#[tokio::test]
async fn ebb_runs_under_exactly_these_rights() {
    let env = setup("rbac-run").await;
    apply_rbac(&env).await;
    let client = as_ebb(&env).await;

    // A parameter from a Secret behind a TriggerAuthentication (the dev Redis has no password,
    // so the database index stands in for a credential): the list is only seen in database 9
    // if ebb could read the Secret.
    env.create::<Secret>(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "redis"},
        "stringData": {"database": "9"}
    }))
    .await;
    env.create::<TriggerAuthentication>(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": "redis"},
        "spec": {"secretTargetRef": [{"parameter": "databaseIndex", "name": "redis", "key": "database"}]}
    }))
    .await;

    let mut ctx = ebb_operator::controller::Context::new(
        client,
        ebb_scalers::Registry::with_builtins(),
        "ebb-system".into(),
    );
    ctx.watch_namespace = Some(env.namespace.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ebb_operator::run::controllers(Arc::new(ctx), async move {
        let _ = stopped.await;
    }));

    let mut redis = redis::Client::open(format!("{}/9", env.cluster.redis_url))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let list = unique_name("jobs");
    env.create::<Deployment>(serde_json::to_value(deployment("worker", 0, &[])).expect("json"))
        .await;
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "worker"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1,
            "cooldownPeriod": 1,
            "triggers": [{
                "type": "redis",
                "metadata": {"address": env.cluster.redis_url.trim_start_matches("redis://"), "listName": list},
                "authenticationRef": {"name": "redis"}
            }]
        }
    }))
    .await;

    // A kind whose objects ebb may not read (only their /scale): a ReplicaSet.
    env.create::<ReplicaSet>(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "rs-worker"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "rs-worker"}},
            "template": {
                "metadata": {"labels": {"app": "rs-worker"}},
                "spec": {"containers": [{"name": "w", "image": "example.invalid/w:1"}]}
            }
        }
    }))
    .await;
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "rs-worker"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs-worker"},
            "pollingInterval": 1,
            "cooldownPeriod": 1,
            "triggers": [{
                "type": "redis",
                "metadata": {"address": env.cluster.redis_url.trim_start_matches("redis://"), "listName": list},
                "authenticationRef": {"name": "redis"}
            }]
        }
    }))
    .await;
    let rs_replicas = || async {
        env.api::<ReplicaSet>()
            .get("rs-worker")
            .await
            .map(|rs| rs.spec.and_then(|s| s.replicas).unwrap_or(0))
            .map_err(|e| e.to_string())
    };

    for so in ["worker", "rs-worker"] {
        eventually(
            &format!("{so} Ready=True as the ServiceAccount"),
            DEADLINE,
            || async {
                let (status, reason, message) = env.condition(so, "Ready").await?;
                ensure(status == "True", || {
                    format!("Ready={status} ({reason}): {message}")
                })
            },
        )
        .await;
    }
    let _: () = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["1"])
        .query_async(&mut redis)
        .await
        .expect("RPUSH");
    eventually("scaled up as the ServiceAccount", DEADLINE, || async {
        let n = env.replicas("worker").await?;
        let rs = rs_replicas().await?;
        ensure(n >= 1 && rs >= 1, || {
            format!("replicas {n}, ReplicaSet {rs}")
        })
    })
    .await;
    let _: () = redis::cmd("DEL")
        .arg(&list)
        .query_async(&mut redis)
        .await
        .expect("DEL");
    eventually(
        "scaled back to zero as the ServiceAccount",
        DEADLINE,
        || async {
            let n = env.replicas("worker").await?;
            let rs = rs_replicas().await?;
            ensure(n == 0 && rs == 0, || {
                format!("replicas {n}, ReplicaSet {rs}")
            })
        },
    )
    .await;
    for so in ["worker", "rs-worker"] {
        env.api::<ScaledObject>()
            .delete(so, &Default::default())
            .await
            .expect("delete");
        eventually(&format!("{so} released by ebb"), DEADLINE, || async {
            let left = env
                .api::<ScaledObject>()
                .get_opt(so)
                .await
                .map_err(|e| e.to_string())?;
            ensure(left.is_none(), || "still there".into())
        })
        .await;
    }
    drop(stop);
}

#[tokio::test]
async fn events_are_published_under_these_rights_and_a_repeat_is_counted_on_the_first() {
    use ebb_operator::events::{EventType, Events, Note};
    use k8s_openapi::api::events::v1::Event;
    use kube::Resource;

    let env = setup("rbac-events").await;
    apply_rbac(&env).await;
    let client = as_ebb(&env).await;
    let so: ScaledObject = env
        .create(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "noisy"},
            "spec": {"scaleTargetRef": {"name": "absent"}, "triggers": [{"type": "cron", "metadata": {}}]}
        }))
        .await;
    let events = Events::new(client, "ebb", Some("ebb-test".into()));
    let failing = Note {
        type_: EventType::Warning,
        reason: "ScaleTargetError",
        action: "Scale",
        note: "writing /scale: forbidden".into(),
    };
    for _ in 0..3 {
        events
            .publish(&failing, &so.object_ref(&()))
            .await
            .expect("publish");
    }
    let other = Note {
        note: "writing /scale: timed out".into(),
        ..failing
    };
    events
        .publish(&other, &so.object_ref(&()))
        .await
        .expect("publish");

    let listed = env
        .api::<Event>()
        .list(&Default::default())
        .await
        .expect("list events")
        .items;
    let mut seen: Vec<(String, Option<i32>, String, String)> = listed
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("noisy"))
        .map(|e| {
            (
                e.note.clone().unwrap_or_default(),
                e.series.as_ref().map(|s| s.count),
                e.reporting_controller.clone().unwrap_or_default(),
                e.type_.clone().unwrap_or_default(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "writing /scale: forbidden".to_string(),
                Some(3),
                "ebb".to_string(),
                "Warning".to_string()
            ),
            (
                "writing /scale: timed out".to_string(),
                None,
                "ebb".to_string(),
                "Warning".to_string()
            ),
        ]
    );
    assert_eq!(events.remembered(), 2);
}
