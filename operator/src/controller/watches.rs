//! The controller's watches and runtime: ScaledObjects (the primary), the HPAs ebb owns, the
//! authentication objects, and the nudges of the scale loops, each of which can wake a
//! reconcile.

use std::sync::Arc;
use std::time::Duration;

use ebb_crds::{ClusterTriggerAuthentication, ScaledObject, TriggerAuthentication};
use futures::StreamExt;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, controller, watcher};
use kube::{Resource, ResourceExt};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::admission::checks::slim_hpa_metadata;
use crate::digest;
use crate::scale::nudge::Nudge;

use super::context::{AuthStores, Context, lock};
use super::{Error, reconcile};

/// Reconciles running at once: enough to start thousands of ScaledObjects in a minute or two,
/// few enough that a start or a relist does not flood the apiserver.
const RECONCILE_CONCURRENCY: u16 = 32;

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerEnd {
    /// The shutdown future resolved: asked to stop.
    Shutdown,
    /// The controller ended on its own (its watches ended): nothing is being reconciled.
    Ended,
}

/// Runs the controller until `shutdown` resolves, and says why it returned. Every scale loop
/// it started is stopped when it returns (or when its future is dropped).
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> ControllerEnd {
    ctx.metrics.set_syncing(true);
    let _loops_guard = StopLoopsOnDrop(ctx.clone());
    let client = ctx.client.clone();
    let (objects, hpas, authentications): (
        Api<ScaledObject>,
        Api<HorizontalPodAutoscaler>,
        Api<TriggerAuthentication>,
    ) = match &ctx.watch_namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let (nudges, nudged) = unbounded();
    ctx.loops.set_nudges(Some(nudges.clone()));
    // A rebuild is noted before its reconcile is queued, so that reconcile sees it.
    let nudge_ctx = ctx.clone();
    let requested = nudged.map(move |nudge: Nudge| {
        let (namespace, name) = nudge.object();
        let object = ObjectRef::new(name).within(namespace);
        if let Nudge::Rebuild { .. } = nudge {
            nudge_ctx.ask_rebuild(format!("{namespace}/{name}"));
        }
        object
    });
    // The ScaledObject watch is ours, so that its first full list marks ebb ready (the store's
    // own readiness future wakes only one waiter, the controller).
    let (reader, writer) = reflector::store();
    let metrics = ctx.metrics.clone();
    let scaled_objects = reflector::reflector(
        writer,
        watcher(objects, watcher::Config::default()).modify(|so| so.managed_fields_mut().clear()),
    )
    .default_backoff()
    .inspect(move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            metrics.set_syncing(false);
        }
    })
    .applied_objects()
    // A status write (ebb's own) is no reason to reconcile.
    .predicate_filter(reconcile_relevant, Default::default());
    // Every HPA, not only ebb's: a ScaledObject on a workload another HPA scales is refused.
    // Only HPAs a ScaledObject owns wake a reconcile.
    let (hpa_reader, hpa_writer) = reflector::store();
    let owned_hpas = reflector::reflector(
        hpa_writer,
        watcher(hpas, watcher::Config::default()).modify(slim_hpa),
    )
    .default_backoff()
    .touched_objects();
    *lock(&ctx.hpas) = Some(hpa_reader);
    *lock(&ctx.scaled_objects) = Some(reader.clone());
    let controller = Controller::for_stream(scaled_objects, reader)
        .owns_stream(owned_hpas)
        .reconcile_on(requested)
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY));

    // Authentication objects are cached first, so the loops' signatures are right from the start.
    let (namespaced, namespaced_writer) = reflector::store();
    let (cluster, cluster_writer) = reflector::store();
    let watches = [
        tokio::spawn(watch_authentications(
            authentications,
            namespaced_writer,
            controller.store(),
            nudges.clone(),
        )),
        tokio::spawn(watch_authentications(
            Api::<ClusterTriggerAuthentication>::all(client),
            cluster_writer,
            controller.store(),
            nudges,
        )),
    ];
    let _watches_guard = AbortOnDrop(watches);
    let mut shutdown = Box::pin(shutdown);
    tokio::select! {
        () = &mut shutdown => return ControllerEnd::Shutdown,
        synced = async { (namespaced.wait_until_ready().await, cluster.wait_until_ready().await) } => {
            if synced.0.is_err() || synced.1.is_err() {
                warn!("the authentication watches ended before their first sync");
                return ControllerEnd::Ended;
            }
        }
    }
    *lock(&ctx.authentications) = Some(AuthStores {
        namespaced,
        cluster,
    });
    ctx.auth_ready.send_replace(true);

    // The runtime's graceful shutdown ends the stream too: remember which of the two it was.
    let (asked, asked_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = asked.send(());
    };
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                // A reconcile queued for an object deleted since (deleting thousands queues
                // one each): nothing to do, and nothing to warn of.
                Err(controller::Error::ObjectNotFound(object)) => {
                    debug!(object = %object, "reconcile skipped: the object is gone");
                }
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    let mut asked_rx = asked_rx;
    if asked_rx.try_recv().is_ok() {
        ControllerEnd::Shutdown
    } else {
        warn!("the controller's watches ended");
        ControllerEnd::Ended
    }
}

/// Counts the error, logs it and tries again after a while.
fn error_policy(so: Arc<ScaledObject>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.count_reconcile_error(error.label());
    warn!(
        scaledobject = %format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any()),
        reason = error.label(),
        error = %error,
        "will retry"
    );
    Action::requeue(error.retry_after())
}

/// Watches one kind of authentication object into a cache; after the first sync, each change
/// nudges a reconcile of the ScaledObjects that reference the object.
async fn watch_authentications<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    objects: Store<ScaledObject>,
    nudges: UnboundedSender<Nudge>,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + serde::de::DeserializeOwned
        + 'static,
{
    let kind = K::kind(&()).into_owned();
    let patcher = api.clone();
    let mut events = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(|a| a.managed_fields_mut().clear()),
    )
    .default_backoff()
    .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
                release_keda_finalizer(&patcher, &object).await;
                let namespace = object.namespace();
                for so in referencing(&objects, &kind, &object.name_any(), namespace.as_deref()) {
                    let _ = nudges.unbounded_send(Nudge::Reconcile {
                        namespace: so.namespace.unwrap_or_default(),
                        name: so.name,
                    });
                }
            }
            Ok(_) => {}
            Err(e) => warn!(kind = %kind, error = %e, "watching authentication objects"),
        }
    }
}

/// KEDA puts `finalizer.keda.sh` on TriggerAuthentications and ClusterTriggerAuthentications
/// and removes it when they are deleted. After a move from KEDA nothing else would, so a
/// deleted one would hang in Terminating: ebb removes it, as KEDA does (whether or not a
/// ScaledObject still references the object).
async fn release_keda_finalizer<K>(api: &Api<K>, object: &K)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    if object.meta().deletion_timestamp.is_none() {
        return;
    }
    if !object.finalizers().iter().any(|f| f == KEDA_AUTH_FINALIZER) {
        return;
    }
    // The list without KEDA's finalizer, at the resourceVersion it was read at: a concurrent
    // change to the list is refused (409) rather than overwritten; the next event tries again.
    let rest: Vec<&String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != KEDA_AUTH_FINALIZER)
        .collect();
    let patch = serde_json::json!({"metadata": {
        "finalizers": rest,
        "resourceVersion": object.resource_version(),
    }});
    let name = object.name_any();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => info!(kind = %K::kind(&()), name = %name, "released KEDA's finalizer"),
        Err(e) => {
            warn!(kind = %K::kind(&()), name = %name, error = %e, "releasing KEDA's finalizer")
        }
    }
}

/// KEDA's finalizer on authentication objects.
const KEDA_AUTH_FINALIZER: &str = "finalizer.keda.sh";

/// The ScaledObjects in `objects` that reference an authentication object.
fn referencing(
    objects: &Store<ScaledObject>,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
) -> Vec<ObjectRef<ScaledObject>> {
    objects
        .state()
        .iter()
        .filter(|so| namespace.is_none() || so.namespace().as_deref() == namespace)
        .filter(|so| {
            so.spec.triggers.iter().any(|t| {
                t.authentication_ref.as_ref().is_some_and(|r| {
                    r.name == name && r.kind.as_deref().unwrap_or("TriggerAuthentication") == kind
                })
            })
        })
        .map(|so| ObjectRef::from_obj(&**so))
        .collect()
}

/// Aborts background tasks when their owner ends.
struct AbortOnDrop<const N: usize>([JoinHandle<()>; N]);

impl<const N: usize> Drop for AbortOnDrop<N> {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// Stops every scale loop when the controller's future ends or is dropped (aborted), so no
/// loop outlives the controller that owns it.
struct StopLoopsOnDrop(Arc<Context>);

impl Drop for StopLoopsOnDrop {
    fn drop(&mut self) {
        self.0.stop_all_loops();
        self.0.clear_run_state();
        self.0.metrics.set_syncing(false);
    }
}

/// What of a ScaledObject a reconcile acts on: its spec (generation), its annotations, its
/// finalizers and whether it is being deleted. Status and managedFields are not.
fn reconcile_relevant(so: &ScaledObject) -> Option<u64> {
    let meta = so.meta();
    Some(digest::of_json(&(
        meta.generation,
        &meta.annotations,
        &meta.finalizers,
        meta.deletion_timestamp.is_some(),
    )))
}

/// Keeps of an owned HPA what ebb reads: its metadata (without managedFields and annotations),
/// its spec and its conditions.
fn slim_hpa(hpa: &mut HorizontalPodAutoscaler) {
    slim_hpa_metadata(hpa);
    if let Some(status) = hpa.status.as_mut() {
        status.current_metrics = None;
    }
}

/// The periodic resync of an object whose loop runs.
pub(super) const RESYNC: Duration = Duration::from_secs(300);
