//! One reconcile of a ScaledObject, read top to bottom:
//!
//! paused? -> check -> (loop unchanged? keep it) -> build -> HPA -> loop -> status.
//!
//! Each step is a function that returns what the next one needs. A problem with the object
//! itself is a [`Refusal`]: Ready=False, an Event, no loop. Apiserver trouble is an [`Error`],
//! retried by the controller.

use std::sync::Arc;
use std::time::Duration;

use ebb_crds::condition::{CONDITION_PAUSED, CONDITION_READY};
use ebb_crds::scaled_object::{
    ANNOTATION_FORCE_ACTIVATION, ANNOTATION_PAUSED, ANNOTATION_PAUSED_REPLICAS,
    ANNOTATION_PAUSED_SCALE_IN, ANNOTATION_PAUSED_SCALE_OUT, FINALIZER, SCALED_OBJECT_NAME_LABEL,
};
use ebb_crds::{Condition, ScaledObject};
use ebb_scalers::MetricSpec;
use k8s_openapi::api::core::v1::LimitRange;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::admission::checks::{self, Neighbours};
use crate::events::{EventType, Note};
use crate::hpa::{PausedDirections, desired_hpa, hpa_name};
use crate::scale::composite::{Composite, hpa_metrics};
use crate::scale::object::LoopObject;
use crate::scale::schedule;
use crate::scale::task::{ScaleLoop, short};
use crate::status::{self, Status, Wanted};
use crate::target::{Target, TargetError, pod_spec};
use crate::triggers;

use super::Error;
use super::context::Context;
use super::owned_hpa;
use super::watches::RESYNC;

/// Reconciles `so`: its finalizer first, then [`apply`] or [`cleanup`].
pub(super) async fn reconcile(so: Arc<ScaledObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.count_reconcile();
    let namespace = so.namespace().unwrap_or_default();
    let api: Api<ScaledObject> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, so, |event| async {
        match event {
            FinalizerEvent::Apply(so) => apply(so, &ctx).await,
            FinalizerEvent::Cleanup(so) => cleanup(so, &ctx).await,
        }
    })
    .await
    .map_err(Error::from)
}

/// Why ebb will not act on an object, as KEDA tells the two apart: the condition reason is
/// `ScaledObjectCheckFailed` for both, and scalers that cannot be built also get a
/// `KEDAScalerFailed` Event, as KEDA's scale handler publishes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// The spec, an annotation or the scale target is wrong.
    CheckFailed,
    /// The scalers could not be built (authentication, metadata).
    ScalerFailed,
}

/// The Ready reason (and Event) of every refusal, as KEDA writes it.
const CHECK_FAILED: &str = "ScaledObjectCheckFailed";

impl Refused {
    /// The Event reasons, in the order KEDA publishes them.
    fn event_reasons(self) -> &'static [&'static str] {
        match self {
            Refused::CheckFailed => &[CHECK_FAILED],
            Refused::ScalerFailed => &["KEDAScalerFailed", CHECK_FAILED],
        }
    }
}

/// A problem with the object itself: reported in its status and an Event, retried slowly.
#[derive(Debug)]
struct Refusal {
    why: Refused,
    message: String,
}

impl Refusal {
    fn check(message: impl std::fmt::Display) -> Self {
        Self {
            why: Refused::CheckFailed,
            message: message.to_string(),
        }
    }

    fn scaler(message: impl std::fmt::Display) -> Self {
        Self {
            why: Refused::ScalerFailed,
            message: message.to_string(),
        }
    }
}

async fn apply(so: Arc<ScaledObject>, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(&so);
    if let Some(pause) = Pause::of(&so) {
        return pause_object(ctx, &key, &so, pause).await;
    }
    ensure_name_label(ctx, &so).await?;
    let checked = match check(&so, &ctx.neighbours(&so)) {
        Ok(c) => c,
        Err(refusal) => return refuse(ctx, &key, &so, refusal).await,
    };
    let signature = signature(&so, &ctx.authentication_versions(&so));
    let rebuild = ctx.take_rebuild(&key);
    let running = ctx.loops.running(&key);
    if let Some((running_signature, specs)) = &running
        && *running_signature == signature
        && !rebuild
    {
        return keep_running(ctx, &key, &so, &checked, specs).await;
    }
    let built = match build(ctx, &so, &checked).await {
        Ok(b) => b,
        Err(refusal) => return refuse(ctx, &key, &so, refusal).await,
    };
    owned_hpa::delete_renamed(ctx, &so).await?;
    owned_hpa::apply(
        ctx,
        &key,
        &so,
        &built.scalers.specs,
        checked.composite.as_ref(),
        checked.paused,
    )
    .await?;
    let paused_directions = checked.paused;
    start_loop(ctx, &key, &so, checked, &built, signature).await;
    if !built.scalers.missing_auth.is_empty() {
        // Resolved as empty, as KEDA resolves them: reported once per build, never a value.
        event(
            ctx,
            &so,
            EventType::Warning,
            "AuthenticationValueMissing",
            format!(
                "{}; the parameter is empty, as in KEDA",
                built.scalers.missing_auth.join("; ")
            ),
        )
        .await;
    }
    info!(scaledobject = %key, hpa = %hpa_name(&so), rebuild, "scale loop started");
    let first = running.is_none();
    if first {
        started_event(ctx, &so).await;
    }
    write_started_status(ctx, &key, &so, &built, first, paused_directions).await?;
    Ok(Action::requeue(RESYNC))
}

/// The pause annotations of an object: `paused: "true"`, or `paused-replicas` (its text).
struct Pause {
    replicas: Option<String>,
}

impl Pause {
    fn of(so: &ScaledObject) -> Option<Self> {
        let replicas = annotation(so, ANNOTATION_PAUSED_REPLICAS);
        (paused_annotation(so) || replicas.is_some()).then_some(Self { replicas })
    }
}

/// Paused: no loop, no HPA, replicas left alone (or held at paused-replicas).
async fn pause_object(
    ctx: &Context,
    key: &str,
    so: &ScaledObject,
    pause: Pause,
) -> Result<Action, Error> {
    let namespace = so.namespace().unwrap_or_default();
    ctx.stop_loop(key).await;
    ctx.store.forget(&namespace, &so.name_any());
    owned_hpa::delete(ctx, key, so).await?;
    let mut fields = serde_json::json!({ "pausedReplicaCount": null });
    if let Some(text) = pause.replicas {
        let Ok(replicas) = text.parse::<i32>().map(|n| n.max(0)) else {
            return refuse(
                ctx,
                key,
                so,
                Refusal::check(format!(
                    "annotation {ANNOTATION_PAUSED_REPLICAS}: expected a whole number of replicas, got {:?}",
                    short(&text)
                )),
            )
            .await;
        };
        match ctx
            .kinds
            .resolve(&ctx.client, &so.spec.scale_target_ref, &namespace)
            .await
        {
            Ok(target) => {
                if target.replicas().await.ok() != Some(replicas) {
                    target.set_replicas(replicas).await?;
                }
            }
            Err(e) => return refuse(ctx, key, so, Refusal::check(e)).await,
        }
        fields = serde_json::json!({ "pausedReplicaCount": replicas });
    }
    ctx.metrics
        .register(&namespace, &so.name_any(), true, trigger_types(so));
    pause_transition_event(ctx, so, true).await;
    write_status(
        ctx,
        key,
        so,
        &[(
            CONDITION_PAUSED,
            Status::True,
            "ScaledObjectPaused",
            "ScaledObject is paused".into(),
        )],
        fields,
    )
    .await?;
    Ok(Action::await_change())
}

/// What the checks of an object give the steps after them.
struct Checked {
    /// Its compiled `scalingModifiers`.
    composite: Option<Composite>,
    /// Its paused-scale-in/out annotations.
    paused: PausedDirections,
}

/// Checks the object against its spec's rules and its namespace (the admission webhook's
/// checks, for objects stored without it) and ebb's annotations, compiling the formula once.
fn check(so: &ScaledObject, around: &Neighbours) -> Result<Checked, Refusal> {
    let composite = checks::scaled_object(so, around).map_err(Refusal::check)?;
    schedule::activation_polling(
        annotation(so, schedule::ANNOTATION_ACTIVATION_POLLING).as_deref(),
        schedule::polling_interval(&so.spec),
    )
    .map_err(Refusal::check)?;
    Ok(Checked {
        composite,
        paused: PausedDirections {
            scale_in: crate::scale::task::pause_annotation(so, ANNOTATION_PAUSED_SCALE_IN),
            scale_out: crate::scale::task::pause_annotation(so, ANNOTATION_PAUSED_SCALE_OUT),
        },
    })
}

/// Nothing the running loop depends on changed, and the loop reads the target itself. The HPA
/// is put back in shape (no request at all while it is as ebb left it), from the scalers'
/// specs as they are now.
async fn keep_running(
    ctx: &Context,
    key: &str,
    so: &ScaledObject,
    checked: &Checked,
    specs: &[MetricSpec],
) -> Result<Action, Error> {
    owned_hpa::apply(
        ctx,
        key,
        so,
        specs,
        checked.composite.as_ref(),
        checked.paused,
    )
    .await?;
    write_status(
        ctx,
        key,
        so,
        &[],
        serde_json::json!({ "externalMetricNames": external_names(specs) }),
    )
    .await?;
    Ok(Action::requeue(RESYNC))
}

/// What building an object's loop needs from the cluster.
struct Built {
    target: Target,
    /// The target's count before ebb first scaled it.
    original: Option<i32>,
    scalers: triggers::Built,
}

/// Resolves the target, reads its pod template, builds the scalers and checks that the HPA
/// can take their metrics.
async fn build(ctx: &Context, so: &ScaledObject, checked: &Checked) -> Result<Built, Refusal> {
    let namespace = so.namespace().unwrap_or_default();
    let target = ctx
        .kinds
        .resolve(&ctx.client, &so.spec.scale_target_ref, &namespace)
        .await
        .map_err(Refusal::check)?;
    // The object itself is read for its pod template (`*FromEnv` authentication). ebb's RBAC
    // lets it read Deployments and StatefulSets only; any other kind with `/scale` (a
    // ReplicaSet, an Argo Rollout) is checked through `/scale` and has no pod template to read.
    let object = match target.object().await {
        Ok(o) => Some(o),
        Err(TargetError::Api(kube::Error::Api(status))) if status.code == 403 => {
            target.replicas().await.map_err(Refusal::check)?;
            None
        }
        Err(e) => return Err(Refusal::check(e)),
    };
    let original = match so.status.as_ref().and_then(|s| s.original_replica_count) {
        Some(n) => Some(n),
        None => target.replicas().await.ok(),
    };
    let pod = object.as_ref().and_then(pod_spec);
    if let Some(pod) = &pod
        && checks::Workload::of(so).has_pod_template()
        && checks::resource_requests(so, pod, &[]).is_err()
    {
        // Containers without requests may take a LimitRange's defaults: read them only then.
        // Unreadable LimitRanges (a missing permission) are no reason to stop the object.
        let ranges: Api<LimitRange> = Api::namespaced(ctx.client.clone(), &namespace);
        if let Ok(ranges) = ranges.list(&Default::default()).await {
            checks::resource_requests(so, pod, &ranges.items).map_err(Refusal::check)?;
        }
    }
    let scalers = triggers::build(
        &ctx.client,
        &ctx.registry,
        &triggers::Owner::scaled_object(so),
        pod.as_ref(),
        &ctx.auth_settings(),
    )
    .await
    .map_err(Refusal::scaler)?;
    desired_hpa(
        so,
        &hpa_metrics(&scalers.specs, checked.composite.as_ref()),
        checked.paused,
    )
    .map_err(Refusal::check)?;
    Ok(Built {
        target,
        original,
        scalers,
    })
}

/// (Re)starts the object's loop for this generation; its series start afresh.
async fn start_loop(
    ctx: &Context,
    key: &str,
    so: &Arc<ScaledObject>,
    checked: Checked,
    built: &Built,
    signature: String,
) {
    let namespace = so.namespace().unwrap_or_default();
    let name = so.name_any();
    ctx.stop_loop(key).await;
    ctx.metrics.forget(&namespace, &name);
    ctx.store.forget(&namespace, &name);
    ctx.metrics.register(
        &namespace,
        &name,
        checked.paused.scale_in || checked.paused.scale_out,
        trigger_types(so),
    );
    let scale_loop = ScaleLoop {
        so: LoopObject::new(so.clone(), ctx.scaled_object_cache()),
        target: built.target.clone(),
        triggers: built.scalers.triggers.clone(),
        composite: checked.composite,
        api: Api::namespaced(ctx.client.clone(), &namespace),
        events: ctx.events.clone(),
        status: ctx.status_of(key, so),
        metrics: ctx.metrics.clone(),
        store: ctx.store.clone(),
        nudge: ctx.loops.nudger(&namespace, &name),
        rebuild_after: built.scalers.rebuild_after,
        activation: ctx.activation.seat(
            built
                .scalers
                .triggers
                .iter()
                .map(|t| t.scaler.activation_server())
                .collect(),
        ),
        generation: ctx.targets().register(
            &built.target.gvkr,
            &built.target.namespace,
            &built.target.name,
        ),
    };
    ctx.loops.start(key, signature, scale_loop);
    ctx.metrics.set_scale_loops(ctx.loops.len());
}

/// KEDA's `scaledobject.keda.sh/name` label on the object itself, set once if missing or
/// different (as KEDA sets it, after the pause check).
async fn ensure_name_label(ctx: &Context, so: &ScaledObject) -> Result<(), Error> {
    let name = so.name_any();
    if so.labels().get(SCALED_OBJECT_NAME_LABEL) == Some(&name) {
        return Ok(());
    }
    let api: Api<ScaledObject> =
        Api::namespaced(ctx.client.clone(), &so.namespace().unwrap_or_default());
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({
            "metadata": {"labels": {(SCALED_OBJECT_NAME_LABEL): name}}
        })),
    )
    .await?;
    ctx.metrics.count_write("scaledobject");
    Ok(())
}

/// Whether the object's status says it was paused.
fn was_paused(so: &ScaledObject) -> bool {
    so.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == CONDITION_PAUSED))
        .is_some_and(|c| c.status == "True")
}

/// KEDA's `ScaledObjectPaused` / `ScaledObjectUnpaused` Events, when the object becomes
/// paused (any pause annotation) or stops being paused.
async fn pause_transition_event(ctx: &Context, so: &ScaledObject, paused: bool) {
    match (was_paused(so), paused) {
        (false, true) => {
            event(
                ctx,
                so,
                EventType::Normal,
                "ScaledObjectPaused",
                "ScaledObject is paused".into(),
            )
            .await
        }
        (true, false) => {
            event(
                ctx,
                so,
                EventType::Normal,
                "ScaledObjectUnpaused",
                "pause annotation removed for ScaledObject".into(),
            )
            .await
        }
        _ => {}
    }
}

async fn started_event(ctx: &Context, so: &ScaledObject) {
    let types: Vec<&str> = so.spec.triggers.iter().map(|t| t.type_.as_str()).collect();
    event(
        ctx,
        so,
        EventType::Normal,
        "KEDAScalersStarted",
        format!("Started scalers watch for {}", types.join(", ")),
    )
    .await;
}

/// The status a started loop's object shows: its target, HPA, metrics and triggers.
async fn write_started_status(
    ctx: &Context,
    key: &str,
    so: &ScaledObject,
    built: &Built,
    first: bool,
    paused: PausedDirections,
) -> Result<(), Error> {
    let resources: Vec<&str> = built
        .scalers
        .specs
        .iter()
        .filter_map(|s| match s {
            MetricSpec::Resource { resource, .. } => Some(resource.as_str()),
            MetricSpec::External { .. } => None,
        })
        .collect();
    let types: Vec<&str> = so.spec.triggers.iter().map(|t| t.type_.as_str()).collect();
    // Once a loop runs, Ready is the loop's to say (a trigger may be failing); a new loop
    // starts Ready until its first poll says otherwise.
    // paused-scale-in/out pause one direction: Paused=True, as in KEDA, while the loop runs.
    let one_direction = paused.scale_in || paused.scale_out;
    let unpaused = if one_direction {
        (
            CONDITION_PAUSED,
            Status::True,
            "ScaledObjectPaused",
            "ScaledObject is paused".to_string(),
        )
    } else {
        (
            CONDITION_PAUSED,
            Status::False,
            "ScaledObjectUnpaused",
            "ScaledObject is not paused".to_string(),
        )
    };
    pause_transition_event(ctx, so, one_direction).await;
    let ready = (
        CONDITION_READY,
        Status::True,
        "ScaledObjectReady",
        "ScaledObject is defined correctly and is ready for scaling".to_string(),
    );
    let wanted = if first {
        vec![ready, unpaused]
    } else {
        vec![unpaused]
    };
    let names = &built.scalers.authentication_names;
    write_status(
        ctx,
        key,
        so,
        &wanted,
        serde_json::json!({
            "scaleTargetKind": built.target.kind_label,
            "scaleTargetGVKR": built.target.gvkr,
            "originalReplicaCount": built.original,
            "hpaName": hpa_name(so),
            "externalMetricNames": external_names(&built.scalers.specs),
            "resourceMetricNames": if resources.is_empty() { None } else { Some(resources) },
            "triggersTypes": types.join(","),
            "authenticationsTypes": if names.is_empty() { None } else { Some(names.join(",")) },
            "pausedReplicaCount": null,
        }),
    )
    .await
}

/// Reports a problem with the object: its loop stopped, Ready=False, an Event (once per
/// distinct message).
async fn refuse(
    ctx: &Context,
    key: &str,
    so: &ScaledObject,
    refusal: Refusal,
) -> Result<Action, Error> {
    // Stopped (and ended) before Ready=False is written, so the loop cannot write over it.
    ctx.stop_loop(key).await;
    let message = refusal.message;
    let already = so
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| status::condition(c, CONDITION_READY))
        .is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(message.as_str()));
    let reasons = refusal.why.event_reasons();
    warn!(scaledobject = %key, reason = reasons[0], message = %message, "not ready");
    if !already {
        for reason in reasons {
            event(ctx, so, EventType::Warning, reason, message.clone()).await;
        }
    }
    write_status(
        ctx,
        key,
        so,
        &[(
            CONDITION_READY,
            Status::False,
            CHECK_FAILED,
            short(&message),
        )],
        serde_json::json!({}),
    )
    .await?;
    // Retried slowly: a missing target or Secret may appear without the object changing.
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// Writes conditions and other status fields when something changed, through the object's
/// status cell.
async fn write_status(
    ctx: &Context,
    key: &str,
    so: &ScaledObject,
    wanted: &[Wanted<'_>],
    fields: serde_json::Value,
) -> Result<(), Error> {
    ctx.status_of(key, so)
        .write(wanted, |changed, conditions: Vec<Condition>| async move {
            let current =
                serde_json::to_value(so.status.clone().unwrap_or_default()).unwrap_or_default();
            let fields_changed = fields
                .as_object()
                .is_some_and(|f| f.iter().any(|(k, v)| current.get(k) != Some(v)));
            let stored_conditions = so.status.as_ref().and_then(|s| s.conditions.as_ref());
            if !changed && !fields_changed && stored_conditions == Some(&conditions) {
                return Ok(());
            }
            let mut status = fields;
            if let Some(map) = status.as_object_mut() {
                map.insert(
                    "conditions".into(),
                    serde_json::to_value(&conditions).unwrap_or_default(),
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
            ctx.metrics.count_write("status");
            Ok(())
        })
        .await
}

async fn event(ctx: &Context, so: &ScaledObject, type_: EventType, reason: &str, note: String) {
    let note = Note {
        type_,
        reason,
        action: "Reconcile",
        note: short(&note),
    };
    match ctx.events.publish(&note, &so.object_ref(&())).await {
        Ok(()) => ctx.metrics.count_write("event"),
        Err(e) => warn!(scaledobject = %key_of(so), error = %e, "publishing an event"),
    }
}

/// The object is being deleted: its loop stopped, its state forgotten, and its target put back
/// to the original count when asked.
async fn cleanup(so: Arc<ScaledObject>, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(&so);
    ctx.stop_loop(&key).await;
    ctx.forget(&key);
    let namespace = so.namespace().unwrap_or_default();
    ctx.metrics.forget(&namespace, &so.name_any());
    ctx.store.forget(&namespace, &so.name_any());
    if so.spec.restore_to_original_replica_count()
        && let Some(original) = so.status.as_ref().and_then(|s| s.original_replica_count)
        && let Ok(target) = ctx
            .kinds
            .resolve(&ctx.client, &so.spec.scale_target_ref, &namespace)
            .await
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
    event(
        ctx,
        &so,
        EventType::Normal,
        "ScaledObjectDeleted",
        "ScaledObject was deleted".into(),
    )
    .await;
    info!(scaledobject = %key, "deleted; scale loop stopped");
    Ok(Action::await_change())
}

/// The External metrics' names, for `status.externalMetricNames`.
fn external_names(specs: &[MetricSpec]) -> Vec<&str> {
    specs.iter().filter_map(MetricSpec::external_name).collect()
}

/// The types of an object's triggers, for `keda_trigger_registered_total`.
fn trigger_types(so: &ScaledObject) -> Vec<String> {
    so.spec.triggers.iter().map(|t| t.type_.clone()).collect()
}

fn key_of(so: &ScaledObject) -> String {
    format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any())
}

fn annotation(so: &ScaledObject, key: &str) -> Option<String> {
    so.annotations().get(key).map(|v| v.trim().to_string())
}

/// `autoscaling.keda.sh/paused` as KEDA reads it: Go's `ParseBool`, and a value that is not a
/// boolean pauses (only a readable false, `false`/`0`/`f`..., leaves the object running).
fn paused_annotation(so: &ScaledObject) -> bool {
    crate::scale::task::pause_annotation(so, ANNOTATION_PAUSED)
}

/// What a running loop depends on besides the spec.
fn signature(so: &ScaledObject, authentication_versions: &str) -> String {
    format!(
        "{}|{}|{}|{}|{:?}|{authentication_versions}",
        so.metadata.generation.unwrap_or_default(),
        crate::scale::task::pause_annotation(so, ANNOTATION_PAUSED_SCALE_IN),
        crate::scale::task::pause_annotation(so, ANNOTATION_PAUSED_SCALE_OUT),
        crate::scale::task::annotation(so, ANNOTATION_FORCE_ACTIVATION),
        annotation(so, schedule::ANNOTATION_ACTIVATION_POLLING),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paused_annotation_reads_as_keda_reads_it() {
        let with = |value: Option<&str>| -> ScaledObject {
            let mut so: ScaledObject = serde_json::from_value(serde_json::json!({
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": "worker", "namespace": "shop"},
                "spec": {"scaleTargetRef": {"name": "worker"}, "triggers": []}
            }))
            .expect("a ScaledObject");
            if let Some(v) = value {
                so.annotations_mut()
                    .insert(ANNOTATION_PAUSED.to_string(), v.to_string());
            }
            so
        };
        for (value, paused) in [
            (None, false),
            (Some("true"), true),
            (Some("True"), true),
            (Some("1"), true),
            (Some("t"), true),
            (Some("false"), false),
            (Some("FALSE"), false),
            (Some("0"), false),
            (Some("f"), false),
            // Not a boolean to Go: KEDA pauses.
            (Some("yes"), true),
            (Some("tRuE"), true),
            (Some(""), true),
        ] {
            assert_eq!(
                Pause::of(&with(value)).is_some(),
                paused,
                "paused annotation {value:?}"
            );
        }
    }

    #[test]
    fn directional_pauses_and_force_activation_read_booleans_as_go_does() {
        let with = |key: &str, value: &str| -> ScaledObject {
            let so: ScaledObject = serde_json::from_value(serde_json::json!({
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": "worker", "namespace": "shop", "annotations": {key: value}},
                "spec": {
                    "scaleTargetRef": {"name": "worker"},
                    "triggers": [{"type": "cron", "metadata": {
                        "timezone": "UTC", "start": "0 * * * *", "end": "1 * * * *",
                        "desiredReplicas": "1"
                    }}]
                }
            }))
            .expect("a ScaledObject");
            so
        };
        // (value, pauses a direction, forces activation)
        for (value, pauses, forces) in [
            ("true", true, true),
            ("True", true, true),
            ("1", true, true),
            ("t", true, true),
            ("false", false, false),
            ("0", false, false),
            ("F", false, false),
            // Not a boolean to Go: a pause pauses, as `paused` does; activation is not forced.
            ("yes", true, false),
            ("tRuE", true, false),
        ] {
            for key in [ANNOTATION_PAUSED_SCALE_IN, ANNOTATION_PAUSED_SCALE_OUT] {
                let checked = check(&with(key, value), &Neighbours::default()).expect("valid");
                let paused = if key == ANNOTATION_PAUSED_SCALE_IN {
                    checked.paused.scale_in
                } else {
                    checked.paused.scale_out
                };
                assert_eq!(paused, pauses, "{key}: {value:?}");
            }
            assert_eq!(
                crate::scale::task::annotation(
                    &with(ANNOTATION_FORCE_ACTIVATION, value),
                    ANNOTATION_FORCE_ACTIVATION
                ),
                forces,
                "force-activation: {value:?}"
            );
        }
    }
}
