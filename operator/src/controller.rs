//! The ScaledObject controller: validates each object, resolves its target, builds its scalers,
//! keeps its HPA in shape and runs its scale loop. A bad object ends in Ready=False and an
//! Event; it never stops the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ebb_crds::condition::{CONDITION_PAUSED, CONDITION_READY};
use ebb_crds::scaled_object::{
    ANNOTATION_FORCE_ACTIVATION, ANNOTATION_PAUSED, ANNOTATION_PAUSED_REPLICAS,
    ANNOTATION_PAUSED_SCALE_IN, ANNOTATION_PAUSED_SCALE_OUT, FINALIZER,
};
use ebb_crds::{Condition, ScaledObject};
use ebb_scalers::{MetricSpec, Registry};
use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::Metrics;
use crate::hpa::{PausedDirections, desired_hpa, hpa_name};
use crate::scale::task::{ScaleLoop, short};
use crate::status::{self, Status};
use crate::target::{Target, pod_spec};
use crate::triggers;
use crate::validate::validate;

/// The field manager of everything ebb writes.
pub const FIELD_MANAGER: &str = "ebb";

/// Errors of one reconcile that are retried (apiserver trouble); problems with the object itself
/// are reported in its status instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver failed.
    #[error("apiserver: {0}")]
    Api(#[from] kube::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// A running scale loop.
struct LoopEntry {
    /// What the loop was started from: generation and the annotations it reads.
    signature: String,
    /// The HPA applied for it, put back in shape if someone changes or deletes it.
    hpa: HorizontalPodAutoscaler,
    handle: JoinHandle<()>,
}

/// Shared by every reconcile.
pub struct Context {
    /// The apiserver.
    pub client: Client,
    /// The trigger types this build knows.
    pub registry: Registry,
    /// Events.
    pub recorder: Recorder,
    /// Where ClusterTriggerAuthentications read their Secrets.
    pub namespace: String,
    /// Watch ScaledObjects in this namespace only (all namespaces when `None`).
    pub watch_namespace: Option<String>,
    /// Metrics and readiness, served by the admin endpoints.
    pub metrics: Arc<Metrics>,
    loops: Mutex<HashMap<String, LoopEntry>>,
    conditions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Vec<Condition>>>>>,
}

impl Context {
    /// A context for `client`, reporting Events as `ebb`.
    pub fn new(client: Client, registry: Registry, namespace: String) -> Self {
        let reporter = Reporter {
            controller: "ebb".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            registry,
            namespace,
            watch_namespace: None,
            metrics: Arc::new(Metrics::default()),
            loops: Mutex::new(HashMap::new()),
            conditions: Mutex::new(HashMap::new()),
        }
    }

    fn conditions_of(
        &self,
        key: &str,
        so: &ScaledObject,
    ) -> Arc<tokio::sync::Mutex<Vec<Condition>>> {
        let mut all = self
            .conditions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.entry(key.to_string())
            .or_insert_with(|| {
                let existing = so
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(status::initial_conditions);
                Arc::new(tokio::sync::Mutex::new(existing))
            })
            .clone()
    }

    fn stop_loop(&self, key: &str) {
        if let Some(entry) = self
            .loops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
        {
            entry.handle.abort();
        }
    }

    fn running_loop(&self, key: &str) -> Option<(String, HorizontalPodAutoscaler)> {
        self.loops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|e| (e.signature.clone(), e.hpa.clone()))
    }

    /// Stops every scale loop (when the controller ends, or is cut off).
    pub fn stop_all_loops(&self) {
        let keys: Vec<String> = self
            .loops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for key in keys {
            self.stop_loop(&key);
        }
    }

    /// Number of running scale loops.
    pub fn running_loops(&self) -> usize {
        self.loops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn key_of(so: &ScaledObject) -> String {
    format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any())
}

fn annotation(so: &ScaledObject, key: &str) -> Option<String> {
    so.annotations().get(key).map(|v| v.trim().to_string())
}

fn is_true(so: &ScaledObject, key: &str) -> bool {
    annotation(so, key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// What a running loop depends on besides the spec.
fn signature(so: &ScaledObject) -> String {
    format!(
        "{}|{}|{}|{}",
        so.metadata.generation.unwrap_or_default(),
        is_true(so, ANNOTATION_PAUSED_SCALE_IN),
        is_true(so, ANNOTATION_PAUSED_SCALE_OUT),
        is_true(so, ANNOTATION_FORCE_ACTIVATION)
    )
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let loops_guard = StopLoopsOnDrop(ctx.clone());
    let client = ctx.client.clone();
    let (objects, hpas): (Api<ScaledObject>, Api<HorizontalPodAutoscaler>) =
        match &ctx.watch_namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        };
    Controller::new(objects, watcher::Config::default())
        .owns(
            hpas,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=ebb"),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "reconcile failed");
            }
        })
        .await;
    drop(loops_guard);
}

/// Stops every scale loop when the controller's future ends or is dropped (aborted), so no
/// loop outlives the controller that owns it.
struct StopLoopsOnDrop(Arc<Context>);

impl Drop for StopLoopsOnDrop {
    fn drop(&mut self) {
        self.0.stop_all_loops();
    }
}

fn error_policy(so: Arc<ScaledObject>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(scaledobject = %key_of(&so), error = %error, "will retry");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(so: Arc<ScaledObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = so.namespace().unwrap_or_default();
    let api: Api<ScaledObject> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, so, |event| async {
        match event {
            FinalizerEvent::Apply(so) => apply(so, &ctx).await,
            FinalizerEvent::Cleanup(so) => cleanup(so, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

/// Writes conditions and other status fields when something changed.
async fn write_status(
    ctx: &Context,
    so: &ScaledObject,
    wanted: &[(&str, Status, &str, String)],
    fields: serde_json::Value,
) -> Result<(), Error> {
    let key = key_of(so);
    let cell = ctx.conditions_of(&key, so);
    let mut conditions = cell.lock().await;
    let mut changed = false;
    for (type_, status, reason, message) in wanted {
        changed |= status::set_condition(&mut conditions, type_, *status, reason, message.clone());
    }
    let current = serde_json::to_value(so.status.clone().unwrap_or_default()).unwrap_or_default();
    let fields_changed = fields
        .as_object()
        .is_some_and(|f| f.iter().any(|(k, v)| current.get(k) != Some(v)));
    let stored_conditions = so.status.as_ref().and_then(|s| s.conditions.clone());
    if !changed && !fields_changed && stored_conditions.as_ref() == Some(&*conditions) {
        return Ok(());
    }
    let mut status = fields;
    if let Some(map) = status.as_object_mut() {
        map.insert(
            "conditions".into(),
            serde_json::to_value(&*conditions).unwrap_or_default(),
        );
    }
    let api: Api<ScaledObject> =
        Api::namespaced(ctx.client.clone(), &so.namespace().unwrap_or_default());
    api.patch_status(
        &so.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    Ok(())
}

async fn event(ctx: &Context, so: &ScaledObject, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(short(&note)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &so.object_ref(&())).await {
        warn!(scaledobject = %key_of(so), error = %e, "publishing an event");
    }
}

/// Reports a problem with the object: Ready=False, an Event (once per distinct message), no
/// scale loop.
async fn refuse(
    ctx: &Context,
    so: &ScaledObject,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    let key = key_of(so);
    ctx.stop_loop(&key);
    let already = so
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| status::condition(c, CONDITION_READY))
        .is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(message.as_str()));
    warn!(scaledobject = %key, reason, message = %message, "not ready");
    if !already {
        event(ctx, so, EventType::Warning, reason, message.clone()).await;
    }
    write_status(
        ctx,
        so,
        &[(CONDITION_READY, Status::False, reason, short(&message))],
        serde_json::json!({}),
    )
    .await?;
    // Retried slowly: a missing target or Secret may appear without the object changing.
    Ok(Action::requeue(Duration::from_secs(30)))
}

async fn apply(so: Arc<ScaledObject>, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(&so);
    let namespace = so.namespace().unwrap_or_default();

    // Paused: no loop, no HPA, replicas left alone (or held at paused-replicas).
    let paused_replicas = annotation(&so, ANNOTATION_PAUSED_REPLICAS);
    if is_true(&so, ANNOTATION_PAUSED) || paused_replicas.is_some() {
        ctx.stop_loop(&key);
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &namespace);
        match hpas.delete(&hpa_name(&so), &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let mut fields = serde_json::json!({ "pausedReplicaCount": null });
        if let Some(text) = paused_replicas {
            let Ok(replicas) = text.parse::<i32>().map(|n| n.max(0)) else {
                return refuse(
                    ctx,
                    &so,
                    "ScaledObjectCheckFailed",
                    format!("annotation {ANNOTATION_PAUSED_REPLICAS}: expected a whole number of replicas, got {:?}", short(&text)),
                )
                .await;
            };
            match Target::resolve(&ctx.client, &so.spec.scale_target_ref, &namespace).await {
                Ok(target) => {
                    if target.replicas().await.ok() != Some(replicas) {
                        target.set_replicas(replicas).await.map_err(|e| match e {
                            crate::target::TargetError::Api(e) => Error::Api(e),
                            other => Error::Finalizer(other.to_string()),
                        })?;
                    }
                }
                Err(e) => return refuse(ctx, &so, "ScaledObjectCheckFailed", e.to_string()).await,
            }
            fields = serde_json::json!({ "pausedReplicaCount": replicas });
        }
        ctx.metrics.set_paused(&namespace, &so.name_any(), true);
        write_status(
            ctx,
            &so,
            &[(
                CONDITION_PAUSED,
                Status::True,
                "ScaledObjectPaused",
                "ScaledObject is paused".into(),
            )],
            fields,
        )
        .await?;
        return Ok(Action::await_change());
    }

    if let Err(e) = validate(&so.spec) {
        return refuse(ctx, &so, "ScaledObjectCheckFailed", e.to_string()).await;
    }
    let target = match Target::resolve(&ctx.client, &so.spec.scale_target_ref, &namespace).await {
        Ok(t) => t,
        Err(e) => return refuse(ctx, &so, "ScaledObjectCheckFailed", e.to_string()).await,
    };
    let object = match target.object().await {
        Ok(o) => o,
        Err(e) => return refuse(ctx, &so, "ScaledObjectCheckFailed", e.to_string()).await,
    };
    let original = match so.status.as_ref().and_then(|s| s.original_replica_count) {
        Some(n) => Some(n),
        None => target.replicas().await.ok(),
    };

    let signature = signature(&so);
    let running = ctx.running_loop(&key);
    if let Some((running_signature, hpa)) = &running
        && *running_signature == signature
    {
        // Nothing the loop depends on changed; the HPA is put back in shape (a no-op for the
        // apiserver when nobody touched it).
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &namespace);
        hpas.patch(
            &hpa_name(&so),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(hpa),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }

    let pod = pod_spec(&object);
    let built = match triggers::build(
        &ctx.client,
        &ctx.registry,
        &so,
        pod.as_ref(),
        &ctx.namespace,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return refuse(ctx, &so, "KEDAScalerFailed", e.to_string()).await,
    };
    let paused = PausedDirections {
        scale_in: is_true(&so, ANNOTATION_PAUSED_SCALE_IN),
        scale_out: is_true(&so, ANNOTATION_PAUSED_SCALE_OUT),
    };
    let hpa = match desired_hpa(&so, &built.specs, paused) {
        Ok(h) => h,
        Err(e) => return refuse(ctx, &so, "ScaledObjectCheckFailed", e.to_string()).await,
    };
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = hpa_name(&so);
    hpas.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&hpa),
    )
    .await?;

    // (Re)start the loop for this generation; its series start afresh.
    ctx.stop_loop(&key);
    ctx.metrics.forget(&namespace, &so.name_any());
    ctx.metrics.set_paused(&namespace, &so.name_any(), false);
    let conditions = ctx.conditions_of(&key, &so);
    let scale_loop = ScaleLoop {
        so: so.clone(),
        target: target.clone(),
        triggers: built.triggers,
        api: Api::namespaced(ctx.client.clone(), &namespace),
        recorder: ctx.recorder.clone(),
        conditions,
        metrics: ctx.metrics.clone(),
    };
    let handle = tokio::spawn(scale_loop.run());
    ctx.loops
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            key.clone(),
            LoopEntry {
                signature,
                hpa,
                handle,
            },
        );
    info!(scaledobject = %key, hpa = %name, "scale loop started");
    if running.is_none() {
        event(
            ctx,
            &so,
            EventType::Normal,
            "KEDAScalersStarted",
            format!(
                "Started scalers watch for {}",
                so.spec
                    .triggers
                    .iter()
                    .map(|t| t.type_.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .await;
    }

    let external: Vec<&str> = built
        .specs
        .iter()
        .filter_map(MetricSpec::external_name)
        .collect();
    let resources: Vec<&str> = built
        .specs
        .iter()
        .filter_map(|s| match s {
            MetricSpec::Resource { resource, .. } => Some(resource.as_str()),
            MetricSpec::External { .. } => None,
        })
        .collect();
    let types: Vec<&str> = so.spec.triggers.iter().map(|t| t.type_.as_str()).collect();
    write_status(
        ctx,
        &so,
        &[
            (CONDITION_READY, Status::True, "ScaledObjectReady", "ScaledObject is defined correctly and is ready for scaling".into()),
            (CONDITION_PAUSED, Status::False, "ScaledObjectUnpaused", "ScaledObject is not paused".into()),
        ],
        serde_json::json!({
            "scaleTargetKind": target.kind_label,
            "scaleTargetGVKR": target.gvkr,
            "originalReplicaCount": original,
            "hpaName": name,
            "externalMetricNames": external,
            "resourceMetricNames": if resources.is_empty() { None } else { Some(resources) },
            "triggersTypes": types.join(","),
            "authenticationsTypes": if built.authentication_names.is_empty() { None } else { Some(built.authentication_names.join(",")) },
            "pausedReplicaCount": null,
        }),
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn cleanup(so: Arc<ScaledObject>, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(&so);
    ctx.stop_loop(&key);
    ctx.conditions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&key);
    let namespace = so.namespace().unwrap_or_default();
    ctx.metrics.forget(&namespace, &so.name_any());
    if so.spec.restore_to_original_replica_count()
        && let Some(original) = so.status.as_ref().and_then(|s| s.original_replica_count)
        && let Ok(target) =
            Target::resolve(&ctx.client, &so.spec.scale_target_ref, &namespace).await
    {
        match target.set_replicas(original).await {
            Ok(()) => {
                info!(scaledobject = %key, replicas = original, "restored the original replica count")
            }
            Err(e) => {
                warn!(scaledobject = %key, error = %e, "restoring the original replica count")
            }
        }
    }
    info!(scaledobject = %key, "deleted; scale loop stopped");
    Ok(Action::await_change())
}
