//! The ScaledJob controller. One reconcile, read top to bottom:
//!
//! paused? -> check -> rollout -> (loop unchanged? keep it) -> build scalers -> loop -> status.
//!
//! It runs beside the ScaledObject controller, under the same leadership, and shares its
//! [`Context`] (client, trigger registry, Events, metrics, authentication caches). A problem
//! with one ScaledJob ends in Ready=False and an Event; it never stops the others.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ebb_crds::ScaledJob;
use ebb_crds::condition::{CONDITION_ACTIVE, CONDITION_PAUSED, CONDITION_READY};
use ebb_crds::scaled_object::{ANNOTATION_PAUSED, FINALIZER};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, controller, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::controller::{Context, Error};
use crate::events::{EventType, Note};
use crate::status::{self, Status, StatusCell, Wanted};
use crate::triggers;

use super::cache::{JobCache, template_generation};
use super::lock;
use super::poll_loop::{JobLoop, parse_go_float};

/// The periodic resync of a ScaledJob whose loop runs (picks up rotated authentication).
const RESYNC: Duration = Duration::from_secs(300);
/// A refused ScaledJob is checked again this often: a missing Secret may appear unannounced.
const REFUSED_RETRY: Duration = Duration::from_secs(30);
/// Stopping a loop waits this long for it to end before aborting it.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Reconciles at once.
const CONCURRENCY: u16 = 16;

/// What every ScaledJob reconcile shares.
struct Jobs {
    ctx: Arc<Context>,
    cache: Arc<JobCache>,
    objects: Store<ScaledJob>,
    loops: Mutex<HashMap<String, Running>>,
    statuses: Mutex<HashMap<String, Arc<StatusCell>>>,
}

/// A running poll loop.
struct Running {
    signature: String,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// Runs the ScaledJob controller until `shutdown` resolves; every poll loop it started ends
/// with it (also when its future is dropped).
pub async fn run<S>(ctx: Arc<Context>, shutdown: S)
where
    S: Future<Output = ()> + Clone + Send + Sync + 'static,
{
    let client = ctx.client.clone();
    let (objects, jobs, pods): (Api<ScaledJob>, Api<Job>, Api<Pod>) = match &ctx.watch_namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    let started = tokio::select! {
        started = JobCache::start(jobs, pods) => started,
        () = shutdown.clone() => return,
    };
    let Some((cache, cache_task)) = started else {
        warn!("the Job and Pod watches ended before their first sync; ScaledJobs are not acted on");
        return;
    };
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(objects, watcher::Config::default()).modify(|sj| sj.managed_fields_mut().clear()),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(reconcile_relevant, Default::default());
    let jobs = Arc::new(Jobs {
        ctx,
        cache,
        objects: reader.clone(),
        loops: Mutex::new(HashMap::new()),
        statuses: Mutex::new(HashMap::new()),
    });
    let _guard = StopOnDrop(jobs.clone(), cache_task);
    Controller::for_stream(stream, reader)
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, jobs)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "ScaledJob reconcile failed");
            }
        })
        .await;
}

/// Aborts every loop and the cache's watches when the controller ends.
struct StopOnDrop(Arc<Jobs>, JoinHandle<()>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for (_, running) in lock(&self.0.loops).drain() {
            running.handle.abort();
        }
        self.0.ctx.metrics.set_job_loops(0);
        self.1.abort();
    }
}

fn error_policy(sj: Arc<ScaledJob>, error: &Error, jobs: Arc<Jobs>) -> Action {
    jobs.ctx.metrics.count_reconcile_error(error.label());
    warn!(scaledjob = %key_of(&sj), reason = error.label(), error = %error, "will retry");
    Action::requeue(error.retry_after())
}

/// What of a ScaledJob a reconcile acts on: spec, annotations, finalizers, deletion.
fn reconcile_relevant(sj: &ScaledJob) -> Option<u64> {
    let meta = sj.meta();
    Some(crate::digest::of_json(&(
        meta.generation,
        &meta.annotations,
        &meta.finalizers,
        meta.deletion_timestamp.is_some(),
    )))
}

async fn reconcile(sj: Arc<ScaledJob>, jobs: Arc<Jobs>) -> Result<Action, Error> {
    jobs.ctx.metrics.count_reconcile();
    let api: Api<ScaledJob> =
        Api::namespaced(jobs.ctx.client.clone(), &sj.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, sj, |event| async {
        match event {
            FinalizerEvent::Apply(sj) => apply(sj, &jobs).await,
            FinalizerEvent::Cleanup(sj) => cleanup(sj, &jobs).await,
        }
    })
    .await
    .map_err(Error::from)
}

fn key_of(sj: &ScaledJob) -> String {
    format!("{}/{}", sj.namespace().unwrap_or_default(), sj.name_any())
}

/// KEDA's pause annotation: any value but a false boolean pauses.
fn paused(sj: &ScaledJob) -> bool {
    sj.annotations()
        .get(ANNOTATION_PAUSED)
        .is_some_and(|v| ebb_scalers::trigger::parse_bool(v) != Some(false))
}

fn condition_is(sj: &ScaledJob, type_: &str, value: &str) -> bool {
    sj.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| status::condition(c, type_))
        .is_some_and(|c| c.status == value)
}

async fn apply(sj: Arc<ScaledJob>, jobs: &Jobs) -> Result<Action, Error> {
    let key = key_of(&sj);
    if paused(&sj) {
        stop_loop(jobs, &key).await;
        if !condition_is(&sj, CONDITION_PAUSED, "True") {
            event(
                jobs,
                &sj,
                EventType::Normal,
                "ScaledJobPaused",
                "ScaledJob is paused",
            )
            .await;
        }
        write_status(
            jobs,
            &key,
            &sj,
            &[
                (
                    CONDITION_PAUSED,
                    Status::True,
                    "ScaledJobPaused",
                    "ScaledJob is paused".into(),
                ),
                (
                    CONDITION_READY,
                    Status::True,
                    "ScaledJobReady",
                    "ScaledJob is paused, skipping reconcile loop".into(),
                ),
            ],
            serde_json::json!({}),
        )
        .await?;
        return Ok(Action::await_change());
    }
    let mut wanted: Vec<Wanted> = Vec::new();
    if condition_is(&sj, CONDITION_PAUSED, "True") {
        event(
            jobs,
            &sj,
            EventType::Normal,
            "ScaledJobUnpaused",
            "ScaledJob is unpaused",
        )
        .await;
        wanted.push((
            CONDITION_PAUSED,
            Status::False,
            "ScaledJobUnpaused",
            "ScaledJob is unpaused".into(),
        ));
    }
    if let Err(message) = check(&sj) {
        return refuse(jobs, &key, &sj, &["ScaledJobCheckFailed"], message).await;
    }
    for warning in fallbacks(&sj) {
        event(
            jobs,
            &sj,
            EventType::Warning,
            "ScaledJobSpecFallback",
            &warning,
        )
        .await;
    }
    roll_out(jobs, &sj).await;

    let signature = format!(
        "{}|{}",
        sj.metadata.generation.unwrap_or_default(),
        jobs.ctx
            .authentication_versions_of(&sj.namespace().unwrap_or_default(), &sj.spec.triggers)
    );
    let running = lock(&jobs.loops)
        .get(&key)
        .map(|r| r.signature == signature && !r.handle.is_finished());
    let mut fields = serde_json::json!({});
    if running != Some(true) {
        let pod = sj.spec.job_target_ref.template.spec.as_ref();
        let built = match triggers::build(
            &jobs.ctx.client,
            &jobs.ctx.registry,
            &triggers::Owner::scaled_job(&sj),
            pod,
            &jobs.ctx.auth_settings(),
        )
        .await
        {
            Ok(b) => b,
            Err(e) => {
                return refuse(
                    jobs,
                    &key,
                    &sj,
                    &["KEDAScalerFailed", "ScaledJobCheckFailed"],
                    e.to_string(),
                )
                .await;
            }
        };
        if !built.missing_auth.is_empty() {
            event(
                jobs,
                &sj,
                EventType::Warning,
                "AuthenticationValueMissing",
                &format!(
                    "{}; the parameter is empty, as in KEDA",
                    built.missing_auth.join("; ")
                ),
            )
            .await;
        }
        start_loop(jobs, &key, &sj, built.triggers, signature).await;
        if running.is_none() {
            event(
                jobs,
                &sj,
                EventType::Normal,
                "KEDAScalersStarted",
                "Started scalers watch",
            )
            .await;
        }
        info!(scaledjob = %key, "poll loop started");
        fields = serde_json::json!({
            "triggersTypes": sj.spec.triggers.iter().map(|t| t.type_.as_str()).collect::<Vec<_>>().join(","),
            "authenticationsTypes": built.authentication_names.join(","),
        });
    }
    if !condition_is(&sj, CONDITION_READY, "True") {
        event(
            jobs,
            &sj,
            EventType::Normal,
            "ScaledJobReady",
            "ScaledJob is ready for scaling",
        )
        .await;
    }
    wanted.push((
        CONDITION_READY,
        Status::True,
        "ScaledJobReady",
        "ScaledJob is defined correctly and is ready to scaling".into(),
    ));
    write_status(jobs, &key, &sj, &wanted, fields).await?;
    Ok(Action::requeue(RESYNC))
}

/// The ScaledJob's own rules (the admission webhook's, for objects stored without it).
fn check(sj: &ScaledJob) -> Result<(), String> {
    crate::admission::checks::scaled_job(sj).map_err(|e| e.to_string())
}

/// Values KEDA accepts and silently reads as something else: ebb reads them the same way and
/// says so in an Event.
fn fallbacks(sj: &ScaledJob) -> Vec<String> {
    let mut out: Vec<String> = sj
        .spec
        .triggers
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t.type_.as_str(), "cpu" | "memory"))
        .map(|(i, t)| format!(
            "spec.triggers[{i}].type: a {:?} trigger is read by an HPA, and a ScaledJob has none: it counts for nothing, as in KEDA",
            t.type_
        ))
        .collect();
    let Some(s) = &sj.spec.scaling_strategy else {
        return out;
    };
    let strategy = s.strategy.as_deref().unwrap_or_default();
    if !matches!(strategy, "" | "default" | "custom" | "accurate" | "eager") {
        out.push(format!(
            "spec.scalingStrategy.strategy: {strategy:?} is not one of default, custom, accurate, eager; the default strategy applies, as in KEDA"
        ));
    }
    if strategy == "custom"
        && s.custom_scaling_running_job_percentage
            .as_deref()
            .and_then(parse_go_float)
            .is_none()
    {
        out.push(format!(
            "spec.scalingStrategy.customScalingRunningJobPercentage: expected a number such as \"0.5\", got {:?}; the default strategy applies, as in KEDA",
            s.custom_scaling_running_job_percentage.as_deref().unwrap_or_default()
        ));
    }
    let calculation = s
        .multiple_scalers_calculation
        .as_deref()
        .unwrap_or_default();
    if super::decision::Calculation::parse(calculation).is_none() {
        out.push(format!(
            "spec.scalingStrategy.multipleScalersCalculation: {calculation:?} is not one of max, min, avg, sum; max applies, as in KEDA"
        ));
    }
    out
}

/// A rollout other than `gradual` deletes the Jobs created from an earlier generation of the
/// template (finished ones too), as KEDA does; `gradual` lets them run to their end.
async fn roll_out(jobs: &Jobs, sj: &ScaledJob) {
    if sj.spec.rollout_strategy() == "gradual" {
        return;
    }
    let generation = sj.metadata.generation.unwrap_or_default().to_string();
    let stale: Vec<String> = jobs
        .cache
        .jobs_of(sj)
        .iter()
        .filter(|j| template_generation(j) != Some(generation.as_str()))
        .filter_map(|j| j.metadata.name.clone())
        .collect();
    if stale.is_empty() {
        return;
    }
    event(
        jobs,
        sj,
        EventType::Normal,
        "ScaledJobRolloutCleanupStarted",
        &format!(
            "deleting {} jobs created from an earlier version of the ScaledJob",
            stale.len()
        ),
    )
    .await;
    let api: Api<Job> =
        Api::namespaced(jobs.ctx.client.clone(), &sj.namespace().unwrap_or_default());
    let params = DeleteParams {
        propagation_policy: Some(if sj.spec.rollout_in_foreground() {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        }),
        ..Default::default()
    };
    let mut failed = 0;
    for name in &stale {
        match api.delete(name, &params).await {
            Ok(_) => jobs.ctx.metrics.count_write("job"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                failed += 1;
                let message = match e {
                    kube::Error::Api(s) => s.message,
                    other => other.to_string(),
                };
                event(
                    jobs,
                    sj,
                    EventType::Warning,
                    "ScaledJobRolloutCleanupFailed",
                    &format!("Not able to delete job: {name}: {message}"),
                )
                .await;
            }
        }
    }
    if failed == 0 {
        event(
            jobs,
            sj,
            EventType::Normal,
            "ScaledJobRolloutCleanupCompleted",
            &format!(
                "RolloutStrategy: immediate, deleted jobs owned by the previous version of the scaleJob: {} jobs deleted",
                stale.len()
            ),
        )
        .await;
    }
}

async fn start_loop(
    jobs: &Jobs,
    key: &str,
    sj: &ScaledJob,
    triggers: Vec<crate::scale::poll::PolledTrigger>,
    signature: String,
) {
    stop_loop(jobs, key).await;
    let namespace = sj.namespace().unwrap_or_default();
    jobs.ctx
        .metrics
        .register_scaled_job(&namespace, &sj.name_any());
    let job_loop = JobLoop {
        key: key.to_string(),
        objects: jobs.objects.clone(),
        triggers,
        cache: jobs.cache.clone(),
        client: jobs.ctx.client.clone(),
        events: jobs.ctx.events.clone(),
        metrics: jobs.ctx.metrics.clone(),
        status: status_of(jobs, key, sj),
    };
    let (stop, stopped) = watch::channel(false);
    let handle = tokio::spawn(job_loop.run(stopped));
    let mut loops = lock(&jobs.loops);
    loops.insert(
        key.to_string(),
        Running {
            signature,
            stop,
            handle,
        },
    );
    jobs.ctx.metrics.set_job_loops(loops.len());
}

/// Stops `key`'s loop and waits for it to end (it is aborted after a grace period).
async fn stop_loop(jobs: &Jobs, key: &str) {
    let running = lock(&jobs.loops).remove(key);
    if let Some(running) = running {
        let _ = running.stop.send(true);
        let abort = running.handle.abort_handle();
        if tokio::time::timeout(STOP_GRACE, running.handle)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    jobs.ctx.metrics.set_job_loops(lock(&jobs.loops).len());
}

async fn cleanup(sj: Arc<ScaledJob>, jobs: &Jobs) -> Result<Action, Error> {
    let key = key_of(&sj);
    stop_loop(jobs, &key).await;
    lock(&jobs.statuses).remove(&key);
    jobs.cache.forget(&key);
    jobs.ctx
        .metrics
        .forget_scaled_job(&sj.namespace().unwrap_or_default(), &sj.name_any());
    // Its Jobs go with it: the garbage collector follows their owner references.
    event(
        jobs,
        &sj,
        EventType::Normal,
        "ScaledJobDeleted",
        "ScaledJob was deleted",
    )
    .await;
    info!(scaledjob = %key, "deleted");
    Ok(Action::await_change())
}

/// Stops the loop, and reports `message` in Ready=False and Events (once while it stays).
async fn refuse(
    jobs: &Jobs,
    key: &str,
    sj: &ScaledJob,
    reasons: &[&str],
    message: String,
) -> Result<Action, Error> {
    stop_loop(jobs, key).await;
    let message = crate::scale::task::short(&message);
    let already = sj
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| status::condition(c, CONDITION_READY))
        .is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(message.as_str()));
    warn!(scaledjob = %key, message = %message, "not ready");
    if !already {
        for reason in reasons {
            event(jobs, sj, EventType::Warning, reason, &message).await;
        }
    }
    write_status(
        jobs,
        key,
        sj,
        &[
            (
                CONDITION_READY,
                Status::False,
                "ScaledJobCheckFailed",
                message.clone(),
            ),
            (
                CONDITION_ACTIVE,
                Status::Unknown,
                "UnknownState",
                "ScaledJob check failed".into(),
            ),
        ],
        serde_json::json!({}),
    )
    .await?;
    Ok(Action::requeue(REFUSED_RETRY))
}

fn status_of(jobs: &Jobs, key: &str, sj: &ScaledJob) -> Arc<StatusCell> {
    lock(&jobs.statuses)
        .entry(key.to_string())
        .or_insert_with(|| {
            Arc::new(StatusCell::from_stored(
                sj.status.as_ref().and_then(|s| s.conditions.as_deref()),
            ))
        })
        .clone()
}

/// Writes `wanted` conditions and `fields` when a condition changed or a field differs from
/// the stored status.
async fn write_status(
    jobs: &Jobs,
    key: &str,
    sj: &ScaledJob,
    wanted: &[Wanted<'_>],
    fields: serde_json::Value,
) -> Result<(), Error> {
    let stored = serde_json::to_value(sj.status.clone().unwrap_or_default()).unwrap_or_default();
    let fields_differ = fields
        .as_object()
        .is_some_and(|f| f.iter().any(|(k, v)| stored.get(k) != Some(v)));
    let api: Api<ScaledJob> =
        Api::namespaced(jobs.ctx.client.clone(), &sj.namespace().unwrap_or_default());
    let name = sj.name_any();
    let metrics = jobs.ctx.metrics.clone();
    status_of(jobs, key, sj)
        .write(wanted, |changed, conditions| async move {
            if !changed && !fields_differ {
                return Ok(());
            }
            let mut status = fields;
            status["conditions"] = serde_json::to_value(conditions).unwrap_or_default();
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await?;
            metrics.count_write("scaledjob_status");
            Ok(())
        })
        .await
}

async fn event(jobs: &Jobs, sj: &ScaledJob, type_: EventType, reason: &str, message: &str) {
    let note = Note {
        type_,
        reason,
        action: "Reconcile",
        note: message.to_string(),
    };
    if let Err(e) = jobs.ctx.events.publish(&note, &sj.object_ref(&())).await {
        warn!(scaledjob = %key_of(sj), reason, error = %e, "publishing an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled_job(triggers: serde_json::Value, strategy: serde_json::Value) -> ScaledJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": "j", "namespace": "n"},
            "spec": {
                "jobTargetRef": {"template": {"spec": {"containers": []}}},
                "scalingStrategy": strategy,
                "triggers": triggers
            }
        }))
        .expect("a ScaledJob")
    }

    #[test]
    fn checks_refuse_what_keda_refuses_naming_the_field() {
        let redis = serde_json::json!({"type": "redis", "metadata": {}});
        assert!(
            check(&scaled_job(
                serde_json::json!([redis]),
                serde_json::json!({})
            ))
            .is_ok()
        );
        let e = check(&scaled_job(serde_json::json!([]), serde_json::json!({}))).unwrap_err();
        assert!(e.starts_with("spec.triggers: no triggers"), "{e}");
        let e = check(&scaled_job(
            serde_json::json!([{"type": "redis", "metadata": {}, "metricType": "Value"}]),
            serde_json::json!({}),
        ))
        .unwrap_err();
        assert!(e.starts_with("spec.triggers[0].metricType:"), "{e}");
        let e = check(&scaled_job(
            serde_json::json!([{"type": "redis", "name": "a", "metadata": {}}, {"type": "redis", "name": "a", "metadata": {}}]),
            serde_json::json!({}),
        ))
        .unwrap_err();
        assert!(
            e.starts_with("spec.triggers[1].name: triggerName \"a\""),
            "{e}"
        );
        let e = check(&scaled_job(
            serde_json::json!([{"type": "cron", "useCachedMetrics": true, "metadata": {}}]),
            serde_json::json!({}),
        ))
        .unwrap_err();
        assert!(e.starts_with("spec.triggers[0].useCachedMetrics:"), "{e}");
    }

    #[test]
    fn values_keda_reads_as_defaults_are_reported() {
        let redis = serde_json::json!([{"type": "redis", "metadata": {}}]);
        assert!(
            fallbacks(&scaled_job(
                redis.clone(),
                serde_json::json!({"strategy": "eager"})
            ))
            .is_empty()
        );
        let warnings = fallbacks(&scaled_job(
            redis,
            serde_json::json!({"strategy": "custom", "customScalingRunningJobPercentage": "half", "multipleScalersCalculation": "mean"}),
        ));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("customScalingRunningJobPercentage"));
        assert!(warnings[1].contains("\"mean\""));
    }

    #[test]
    fn any_pause_value_but_false_pauses() {
        let mut sj = scaled_job(serde_json::json!([]), serde_json::json!({}));
        assert!(!paused(&sj));
        for (value, expected) in [
            ("true", true),
            ("false", false),
            ("0", false),
            ("yes", true),
        ] {
            sj.metadata.annotations =
                Some([(ANNOTATION_PAUSED.to_string(), value.to_string())].into());
            assert_eq!(paused(&sj), expected, "{value}");
        }
    }
}
