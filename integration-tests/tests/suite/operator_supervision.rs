//! The scale loop under supervision and the one writer of a status, on the real apiserver with
//! ebb in process and a test scaler of the test's own (registered beside the built-ins):
//! - a loop whose scaler panics is started again, counted and reported, and the object goes
//!   on scaling;
//! - a spec made invalid while its loop writes the status at every poll ends Ready=False, and
//!   no later write of the (stopped) loop puts Ready=True back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ebb_crds::ScaledObject;
use ebb_scalers::{
    MetricSpec, MetricTargetType, MetricValue, MetricsAndActivity, Registry, Scaler, ScalerError,
};
use integration_tests::{TestEnv, deployment, ensure, eventually, setup};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

/// What the test scaler answers, set by the test.
#[derive(Default)]
struct Source {
    /// The value read; active when above 0.
    value: AtomicU64,
    /// Reads so far, over every scaler built from it.
    reads: AtomicUsize,
    /// The read (1-based) that panics; 0 for none.
    panic_at: AtomicUsize,
    /// Whether activity flips at every read (so the loop writes its status every poll).
    flip: std::sync::atomic::AtomicBool,
}

/// A scaler of trigger type `test-source`, answering from a [`Source`].
struct TestScaler {
    index: usize,
    source: Arc<Source>,
}

#[async_trait]
impl Scaler for TestScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: format!("s{}-test-source", self.index),
            target: 5.0,
            target_type: MetricTargetType::AverageValue,
        }]
    }

    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        let read = self.source.reads.fetch_add(1, Ordering::SeqCst) + 1;
        assert_ne!(
            read,
            self.source.panic_at.load(Ordering::SeqCst),
            "the test scaler panics on read {read}, as the test asked"
        );
        let value = self.source.value.load(Ordering::SeqCst) as f64;
        let active = if self.source.flip.load(Ordering::SeqCst) {
            read.is_multiple_of(2)
        } else {
            value > 0.0
        };
        Ok(MetricsAndActivity {
            values: vec![MetricValue {
                name: metric.to_string(),
                value,
            }],
            active,
        })
    }
}

/// The built-in scalers and `test-source`, answering from `source`.
fn registry(source: &Arc<Source>) -> Registry {
    let mut registry = Registry::with_builtins();
    let source = source.clone();
    registry.register("test-source", move |trigger| {
        Ok(Box::new(TestScaler {
            index: trigger.index,
            source: source.clone(),
        }))
    });
    registry
}

/// Deployment `worker` at 0 and ScaledObject `so` on it with one `test-source` trigger, polled
/// every second.
async fn create(env: &TestEnv) {
    let worker = deployment("worker", 0, &[]);
    env.create::<Deployment>(serde_json::to_value(worker).expect("json"))
        .await;
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "so"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1,
            "cooldownPeriod": 1,
            "maxReplicaCount": 5,
            "triggers": [{"type": "test-source", "metadata": {}}]
        }
    }))
    .await;
}

async fn until_replicas(env: &TestEnv, want: impl Fn(i32) -> bool, what: &str) {
    eventually(what, DEADLINE, || async {
        let n = env.replicas("worker").await?;
        ensure(want(n), || format!("replicas {n}"))
    })
    .await;
}

#[tokio::test]
async fn a_scale_loop_that_panics_is_restarted_and_the_object_keeps_scaling() {
    let env = setup("supervision-panic").await;
    let source = Arc::new(Source::default());
    source.panic_at.store(3, Ordering::SeqCst);
    let ebb = env.start_ebb_with(registry(&source));
    create(&env).await;

    eventually(
        "the loop's third poll panicked and was counted",
        DEADLINE,
        || async {
            let restarts = ebb.ctx.metrics.loop_restarts("panic");
            ensure(restarts == 1, || {
                format!("{restarts} restarts after a panic")
            })
        },
    )
    .await;
    env.await_event_reasons("so", &["ScaleLoopRestarted"], DEADLINE)
        .await;
    eventually("the loop runs again", DEADLINE, || async {
        let reads = source.reads.load(Ordering::SeqCst);
        ensure(ebb.ctx.running_loops() == 1 && reads > 4, || {
            format!("{} loops, {reads} reads", ebb.ctx.running_loops())
        })
    })
    .await;

    // The restarted loop scales: up from zero on work, back to zero without it.
    source.value.store(10, Ordering::SeqCst);
    until_replicas(&env, |n| n >= 1, "activated after the restart").await;
    source.value.store(0, Ordering::SeqCst);
    until_replicas(&env, |n| n == 0, "back to zero after the restart").await;
    assert_eq!(ebb.ctx.metrics.loop_restarts("panic"), 1);
    let text = ebb.ctx.metrics.render();
    assert!(
        text.contains("ebb_scale_loop_restarts_total{reason=\"panic\"} 1\n"),
        "{text}"
    );

    env.delete_scaled_objects().await;
}

#[tokio::test]
async fn a_spec_made_invalid_while_its_loop_writes_ends_ready_false() {
    let env = setup("supervision-status").await;
    let source = Arc::new(Source::default());
    source.flip.store(true, Ordering::SeqCst);
    let ebb = env.start_ebb_with(registry(&source));
    create(&env).await;

    // The loop writes triggersActivity (and Active) at every poll.
    let api = env.api::<ScaledObject>();
    eventually("the loop writes the status", DEADLINE, || async {
        let (status, _, _) = env.condition("so", "Ready").await?;
        let reads = source.reads.load(Ordering::SeqCst);
        ensure(status == "True" && reads >= 3, || {
            format!("Ready {status}, {reads} reads")
        })
    })
    .await;

    // Made invalid between two of its writes.
    api.patch(
        "so",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"advanced": {"scalingModifiers": {"formula": "(", "target": "5"}}}}),
        ),
    )
    .await
    .expect("patch");
    eventually("Ready=False for the spec", DEADLINE, || async {
        let (status, reason, message) = env.condition("so", "Ready").await?;
        ensure(
            status == "False" && reason == "ScaledObjectCheckFailed",
            || format!("Ready {status} {reason}: {message}"),
        )
    })
    .await;
    // Its loop is gone: no poll and no write after the refusal.
    assert_eq!(ebb.ctx.running_loops(), 0);
    let reads = source.reads.load(Ordering::SeqCst);
    let mut watched = 0;
    while watched < 5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        watched += 1;
        let (status, reason, message) = env.condition("so", "Ready").await.expect("Ready");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "ScaledObjectCheckFailed"),
            "{message}"
        );
    }
    assert_eq!(
        source.reads.load(Ordering::SeqCst),
        reads,
        "polled after the refusal"
    );

    env.delete_scaled_objects().await;
}

/// A leader whose work (the controller) ends without being asked does not keep renewing its
/// Lease while doing nothing: it releases the Lease and returns an error, so that `ebb run`
/// exits non-zero and Kubernetes restarts it; a standby can take over at once.
#[tokio::test]
async fn a_leader_whose_work_ends_unasked_releases_the_lease_and_fails() {
    use ebb_operator::leader::{LeaderError, LeaseConfig, run_as_leader};
    use k8s_openapi::api::coordination::v1::Lease;

    let env = setup("supervision-leader").await;
    let cfg = LeaseConfig {
        name: "ebb-test".into(),
        namespace: env.namespace.clone(),
        identity: "replica-a".into(),
        duration: Duration::from_secs(4),
        retry: Duration::from_secs(1),
    };
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let result = tokio::time::timeout(
        DEADLINE,
        run_as_leader(
            env.client.clone(),
            cfg,
            move |_stop| {
                counter.fetch_add(1, Ordering::SeqCst);
                // The work returns at once, as a controller whose watches ended would.
                async {}
            },
            std::future::pending::<()>(),
        ),
    )
    .await
    .expect("run_as_leader returned");
    assert!(
        matches!(&result, Err(LeaderError::WorkEnded { lease }) if lease == "ebb-test"),
        "{result:?}"
    );
    assert_eq!(started.load(Ordering::SeqCst), 1, "the work ran once");
    let lease = kube::Api::<Lease>::namespaced(env.client.clone(), &env.namespace)
        .get("ebb-test")
        .await
        .expect("the Lease");
    let holder = lease.spec.and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "the Lease is released");
}
