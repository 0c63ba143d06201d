//! The `kubernetes-workload` scaler on the real apiserver: it counts the Pods matching its
//! selector that are neither Succeeded nor Failed, follows them as they come and go, and 200
//! triggers on one selector cost one list and one watch, as ebb's own request counter sees
//! them; a selector the user may not list is an error, never a 0.

use std::sync::Arc;
use std::time::Duration;

use ebb_operator::workload_pods::WorkloadPods;
use ebb_scalers::builtin::kubernetes_workload::register_with;
use ebb_scalers::{Registry, Scaler, Trigger};
use integration_tests::{ensure, eventually, expect_success, setup};

const DEADLINE: Duration = Duration::from_secs(30);

fn trigger(namespace: &str, meta: &[(&str, &str)]) -> Trigger {
    Trigger {
        index: 0,
        trigger_type: "kubernetes-workload".into(),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        scaled_object_namespace: namespace.into(),
        ..Default::default()
    }
}

async fn count(scaler: &dyn Scaler) -> Result<(f64, bool), String> {
    let name = scaler.metric_specs()[0]
        .external_name()
        .expect("an external metric")
        .to_string();
    let m = scaler
        .metrics_and_activity(&name)
        .await
        .map_err(|e| e.to_string())?;
    Ok((m.values[0].value, m.active))
}

/// A Pod bound to a node nobody runs, so that only the test sets its phase.
fn pod(name: &str, labels: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": "ebb-test-no-such-node",
            "containers": [{"name": "c", "image": "example.invalid/c:1"}]
        }
    })
}

#[tokio::test]
async fn pods_are_counted_from_one_shared_watch_without_finished_ones() {
    let env = setup("workload-scaler").await;
    let ns = env.namespace.clone();
    let metrics = Arc::new(ebb_operator::admin::Metrics::default());
    let client =
        ebb_operator::client::counting(env.config.clone(), metrics.clone()).expect("a client");
    let mut registry = Registry::new();
    register_with(&mut registry, Arc::new(WorkloadPods::new(client)));

    for (name, labels) in [
        ("web-1", serde_json::json!({"app": "web", "tier": "front"})),
        ("web-2", serde_json::json!({"app": "web", "tier": "front"})),
        ("web-3", serde_json::json!({"app": "web", "tier": "back"})),
        ("db-1", serde_json::json!({"app": "db"})),
    ] {
        env.create::<k8s_openapi::api::core::v1::Pod>(pod(name, labels))
            .await;
    }
    let front = registry
        .build(&trigger(
            &ns,
            &[
                ("podSelector", "app=web, tier notin (back)"),
                ("value", "1"),
                ("activationValue", "1"),
            ],
        ))
        .expect("builds");
    assert_eq!(count(front.as_ref()).await, Ok((2.0, true)));

    // A finished Pod no longer counts, a Failed one neither; a new one does.
    for (name, phase) in [("web-1", "Succeeded"), ("web-2", "Failed")] {
        expect_success(
            &env.kubectl(&[
                "patch",
                "pod",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &format!("{{\"status\":{{\"phase\":\"{phase}\"}}}}"),
            ]),
            "setting a phase",
        );
    }
    eventually("finished pods leave the count", DEADLINE, || async {
        let got = count(front.as_ref()).await?;
        ensure(got == (0.0, false), || format!("{got:?}"))
    })
    .await;
    env.create::<k8s_openapi::api::core::v1::Pod>(pod(
        "web-4",
        serde_json::json!({"app": "web", "tier": "front"}),
    ))
    .await;
    eventually("a new pod joins the count", DEADLINE, || async {
        let got = count(front.as_ref()).await?;
        ensure(got == (1.0, false), || format!("{got:?}"))
    })
    .await;

    // 200 triggers on one selector, written two ways, share the one watch.
    let before = (
        metrics.requests("list", "pods"),
        metrics.requests("watch", "pods"),
    );
    let many: Vec<_> = (0..200)
        .map(|i| {
            let selector = if i % 2 == 0 {
                "app=web,tier notin (back)"
            } else {
                "tier notin (back), app==web"
            };
            registry
                .build(&trigger(&ns, &[("podSelector", selector), ("value", "1")]))
                .expect("builds")
        })
        .collect();
    for _ in 0..3 {
        for scaler in &many {
            // No activationValue: active above 0.
            assert_eq!(count(scaler.as_ref()).await, Ok((1.0, true)));
        }
    }
    let after = (
        metrics.requests("list", "pods"),
        metrics.requests("watch", "pods"),
    );
    assert_eq!(after, before, "600 polls of one selector made no request");

    // Another selector is another watch; in every namespace, this test's pods are among them.
    let all = registry
        .build(&trigger(
            &ns,
            &[
                ("podSelector", "app=db"),
                ("value", "1"),
                ("namespace", "*"),
            ],
        ))
        .expect("builds");
    let (n, _) = count(all.as_ref()).await.expect("counts");
    assert!(n >= 1.0, "{n}");
    assert_eq!(metrics.requests("list", "pods"), before.0 + 1);

    // A user who may not list pods gets an error naming what was counted, never a 0.
    let nobody = integration_tests::client_as(&env.cluster, "ebb-test-nobody", &[])
        .await
        .expect("a client");
    let mut registry = Registry::new();
    register_with(&mut registry, Arc::new(WorkloadPods::new(nobody)));
    let refused = registry
        .build(&trigger(&ns, &[("podSelector", "app=web"), ("value", "1")]))
        .expect("builds");
    let err = count(refused.as_ref())
        .await
        .expect_err("the list is forbidden");
    assert!(
        err.contains(&format!("pods in {ns} matching \"app=web\"")) && err.contains("forbidden"),
        "{err}"
    );
}
