//! The ScaledObject controller: validates each object, resolves its target, builds its scalers,
//! keeps its HPA in shape and runs its scale loop. A bad object ends in Ready=False and an
//! Event; it never stops the others.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ebb_crds::condition::{CONDITION_HPA_ACTIVE, CONDITION_PAUSED, CONDITION_READY};
use ebb_crds::scaled_object::{
    ANNOTATION_FORCE_ACTIVATION, ANNOTATION_PAUSED, ANNOTATION_PAUSED_REPLICAS,
    ANNOTATION_PAUSED_SCALE_IN, ANNOTATION_PAUSED_SCALE_OUT, FINALIZER,
};
use ebb_crds::{ClusterTriggerAuthentication, Condition, ScaledObject, TriggerAuthentication};
use ebb_scalers::{MetricSpec, Registry};
use futures::channel::mpsc::{UnboundedSender, unbounded};
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, controller, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::Metrics;
use crate::digest;
use crate::events::{EventType, Events, Note};
use crate::hpa::{PausedDirections, desired_hpa, hpa_active, hpa_name};
use crate::metric_store::MetricStore;
use crate::scale::composite::{Composite, hpa_metrics};
use crate::scale::poll::{self, PolledTrigger};
use crate::scale::schedule;
use crate::scale::task::{POLL_TIMEOUT, ScaleLoop, short};
use crate::status::{self, Status};
use crate::target::{Kinds, TargetError, pod_spec};
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
    /// Writing the scale target failed.
    #[error(transparent)]
    Target(#[from] crate::target::TargetError),
}

/// A running scale loop.
struct LoopEntry {
    /// What the loop was started from: generation, the annotations it reads and the versions of
    /// the authentication objects its scalers were built with.
    signature: String,
    /// Its scalers, whose metric specs shape the HPA (an external plugin's arrive late).
    triggers: Vec<PolledTrigger>,
    handle: JoinHandle<()>,
}

/// A scale loop's way to ask the controller for attention: reconcile its object now (its
/// metrics changed, so the HPA must be reshaped), or rebuild its scalers first.
#[derive(Clone)]
pub struct Nudge {
    object: ObjectRef<ScaledObject>,
    key: String,
    requests: Option<UnboundedSender<ObjectRef<ScaledObject>>>,
    rebuilds: Arc<Mutex<HashSet<String>>>,
}

impl Nudge {
    /// Asks for a reconcile of the loop's object.
    pub fn reconcile(&self) {
        if let Some(requests) = &self.requests {
            let _ = requests.unbounded_send(self.object.clone());
        }
    }

    /// Asks for the object's scalers to be built again (authentication read afresh).
    pub fn rebuild(&self) {
        self.rebuilds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.key.clone());
        self.reconcile();
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// The apiserver.
    pub client: Client,
    /// The trigger types this build knows.
    pub registry: Registry,
    /// Events.
    pub events: Arc<Events>,
    /// Where ClusterTriggerAuthentications read their Secrets.
    pub namespace: String,
    /// Watch ScaledObjects in this namespace only (all namespaces when `None`).
    pub watch_namespace: Option<String>,
    /// Metrics and readiness, served by the admin endpoints.
    pub metrics: Arc<Metrics>,
    /// The latest answer of every metric, for the external metrics API.
    pub store: Arc<MetricStore>,
    loops: Mutex<HashMap<String, LoopEntry>>,
    conditions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Vec<Condition>>>>>,
    /// Reconcile requests from the scale loops, while a controller runs.
    requests: Mutex<Option<UnboundedSender<ObjectRef<ScaledObject>>>>,
    /// Objects whose scalers are to be rebuilt at their next reconcile.
    rebuilds: Arc<Mutex<HashSet<String>>>,
    /// TriggerAuthentications and ClusterTriggerAuthentications, while a controller runs.
    authentications: Mutex<Option<AuthStores>>,
    /// Live reads in flight, shared by concurrent requests for the same metric.
    flights: Mutex<HashMap<String, LiveRead>>,
    /// Scale target kinds found through discovery.
    kinds: Kinds,
    /// The HPAs ebb owns (their metadata and conditions only), while a controller runs.
    hpas: Mutex<Option<Store<HorizontalPodAutoscaler>>>,
    /// Per ScaledObject, the HPA ebb last applied: digests of what it asked for and of what
    /// the apiserver stored. An HPA still stored so needs no apply.
    applied: Mutex<HashMap<String, AppliedHpa>>,
}

/// What ebb last applied to a ScaledObject's HPA.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct AppliedHpa {
    /// The HPA ebb asked for.
    asked: u64,
    /// The HPA's spec, labels and owners as the apiserver answered the apply.
    stored: u64,
}

/// One live read of a metric, awaited by every request that asks for it meanwhile.
type LiveRead = Shared<BoxFuture<'static, Result<f64, String>>>;

/// Caches of the authentication objects, for the loops' signatures.
#[derive(Clone)]
struct AuthStores {
    namespaced: Store<TriggerAuthentication>,
    cluster: Store<ClusterTriggerAuthentication>,
}

impl Context {
    /// A context for `client`, reporting Events as `ebb`.
    pub fn new(client: Client, registry: Registry, namespace: String) -> Self {
        Self {
            events: Arc::new(Events::new(
                client.clone(),
                "ebb",
                std::env::var("POD_NAME").ok(),
            )),
            client,
            registry,
            namespace,
            watch_namespace: None,
            metrics: Arc::new(Metrics::default()),
            store: Arc::new(MetricStore::default()),
            loops: Mutex::new(HashMap::new()),
            conditions: Mutex::new(HashMap::new()),
            requests: Mutex::new(None),
            rebuilds: Arc::new(Mutex::new(HashSet::new())),
            authentications: Mutex::new(None),
            flights: Mutex::new(HashMap::new()),
            kinds: Kinds::default(),
            hpas: Mutex::new(None),
            applied: Mutex::new(HashMap::new()),
        }
    }

    /// Reads `metric` of a ScaledObject straight from its scaler, within the poll timeout.
    /// Concurrent reads of one metric share one query. None when no running loop serves it.
    pub async fn read_live(
        &self,
        namespace: &str,
        scaled_object: &str,
        metric: &str,
    ) -> Option<Result<f64, String>> {
        let key = format!("{namespace}/{scaled_object}/{metric}");
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            match flights.get(&key) {
                Some(flight) => flight.clone(),
                None => {
                    // The HPA asks in lower case; the scaler knows the name as it made it.
                    let (scaler, metric) = self
                        .loops
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&format!("{namespace}/{scaled_object}"))?
                        .triggers
                        .iter()
                        .find_map(|t| {
                            t.scaler.metric_specs().iter().find_map(|s| {
                                s.external_name()
                                    .filter(|name| name.eq_ignore_ascii_case(metric))
                                    .map(|name| (t.scaler.clone(), name.to_string()))
                            })
                        })?;
                    let flight: LiveRead = async move {
                        poll::read_metric(scaler.as_ref(), &metric, POLL_TIMEOUT)
                            .await
                            .value
                    }
                    .boxed()
                    .shared();
                    flights.insert(key.clone(), flight.clone());
                    flight
                }
            }
        };
        let result = flight.clone().await;
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if flights.get(&key).is_some_and(|f| f.ptr_eq(&flight)) {
            flights.remove(&key);
        }
        Some(result)
    }

    fn nudge(&self, so: &ScaledObject) -> Nudge {
        Nudge {
            object: ObjectRef::from_obj(so),
            key: key_of(so),
            requests: self
                .requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            rebuilds: self.rebuilds.clone(),
        }
    }

    /// Whether a rebuild was asked for `key` (and clears the request).
    fn take_rebuild(&self, key: &str) -> bool {
        self.rebuilds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
    }

    /// The resourceVersions of the authentication objects `so` references, as known now.
    fn authentication_versions(&self, so: &ScaledObject) -> String {
        let stores = self
            .authentications
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(stores) = stores else {
            return String::new();
        };
        let namespace = so.namespace().unwrap_or_default();
        so.spec
            .triggers
            .iter()
            .filter_map(|t| t.authentication_ref.as_ref())
            .map(|r| {
                let version = if r.kind.as_deref() == Some("ClusterTriggerAuthentication") {
                    stores
                        .cluster
                        .get(&ObjectRef::new(&r.name))
                        .and_then(|a| a.resource_version())
                } else {
                    stores
                        .namespaced
                        .get(&ObjectRef::new(&r.name).within(&namespace))
                        .and_then(|a| a.resource_version())
                };
                version.unwrap_or_else(|| "-".into())
            })
            .collect::<Vec<_>>()
            .join(",")
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
        let mut loops = self.loops.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = loops.remove(key) {
            entry.handle.abort();
        }
        self.metrics.set_scale_loops(loops.len());
    }

    /// A running loop's signature and the metrics its HPA should have now.
    fn running_loop(&self, key: &str) -> Option<(String, Vec<MetricSpec>)> {
        self.loops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|e| {
                let specs: Vec<MetricSpec> = e
                    .triggers
                    .iter()
                    .flat_map(|t| t.scaler.metric_specs())
                    .collect();
                (e.signature.clone(), specs)
            })
    }

    /// Stops every scale loop (when the controller ends, or is cut off), and forgets their
    /// readings: a replica that stepped down neither shows frozen series on `/metrics` nor
    /// answers the metrics API from polls it no longer makes.
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
            if let Some((namespace, name)) = key.split_once('/') {
                self.metrics.forget(namespace, name);
                self.store.forget(namespace, name);
            }
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
fn signature(so: &ScaledObject, authentication_versions: &str) -> String {
    format!(
        "{}|{}|{}|{}|{:?}|{authentication_versions}",
        so.metadata.generation.unwrap_or_default(),
        is_true(so, ANNOTATION_PAUSED_SCALE_IN),
        is_true(so, ANNOTATION_PAUSED_SCALE_OUT),
        is_true(so, ANNOTATION_FORCE_ACTIVATION),
        annotation(so, schedule::ANNOTATION_ACTIVATION_POLLING),
    )
}

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

/// Watches one kind of authentication object into a cache; after the first sync, each change
/// asks for a reconcile of the ScaledObjects that reference the object.
async fn watch_authentications<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    objects: Store<ScaledObject>,
    requests: UnboundedSender<ObjectRef<ScaledObject>>,
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
    let mut events = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(|a| a.managed_fields_mut().clear()),
    )
    .default_backoff()
    .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
                let namespace = object.namespace();
                for so in referencing(&objects, &kind, &object.name_any(), namespace.as_deref()) {
                    let _ = requests.unbounded_send(so);
                }
            }
            Ok(_) => {}
            Err(e) => warn!(kind = %kind, error = %e, "watching authentication objects"),
        }
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    ctx.metrics.set_syncing(true);
    let loops_guard = StopLoopsOnDrop(ctx.clone());
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
    let (requests, requested) = unbounded();
    *ctx.requests.lock().unwrap_or_else(PoisonError::into_inner) = Some(requests.clone());
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
    let (hpa_reader, hpa_writer) = reflector::store();
    let owned_hpas = reflector::reflector(
        hpa_writer,
        watcher(
            hpas,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=ebb"),
        )
        .modify(slim_hpa),
    )
    .default_backoff()
    .touched_objects();
    *ctx.hpas.lock().unwrap_or_else(PoisonError::into_inner) = Some(hpa_reader);
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
            requests.clone(),
        )),
        tokio::spawn(watch_authentications(
            Api::<ClusterTriggerAuthentication>::all(client),
            cluster_writer,
            controller.store(),
            requests,
        )),
    ];
    let _watches_guard = AbortOnDrop(watches);
    let mut shutdown = Box::pin(shutdown);
    tokio::select! {
        () = &mut shutdown => return,
        synced = async { (namespaced.wait_until_ready().await, cluster.wait_until_ready().await) } => {
            if synced.0.is_err() || synced.1.is_err() {
                warn!("the authentication watches ended before their first sync");
                return;
            }
        }
    }
    *ctx.authentications
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(AuthStores {
        namespaced,
        cluster,
    });

    controller
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
        *self
            .0
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        *self
            .0
            .authentications
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        *self.0.hpas.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.0
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.0.metrics.set_syncing(false);
    }
}

/// Reconciles running at once: enough to start thousands of ScaledObjects in a minute or two,
/// few enough that a start or a relist does not flood the apiserver.
const RECONCILE_CONCURRENCY: u16 = 32;

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
    hpa.metadata.managed_fields = None;
    hpa.metadata.annotations = None;
    if let Some(status) = hpa.status.as_mut() {
        status.current_metrics = None;
    }
}

/// A digest of what ebb sets on an HPA and someone else might change: spec, labels, owners.
fn stored_digest(hpa: &HorizontalPodAutoscaler) -> u64 {
    digest::of_json(&(
        &hpa.spec,
        &hpa.metadata.labels,
        &hpa.metadata.owner_references,
    ))
}

fn error_policy(so: Arc<ScaledObject>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(scaledobject = %key_of(&so), error = %error, "will retry");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(so: Arc<ScaledObject>, ctx: Arc<Context>) -> Result<Action, Error> {
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
    ctx.metrics.count_write("status");
    Ok(())
}

async fn event(ctx: &Context, so: &ScaledObject, type_: EventType, reason: &str, note: String) {
    let note = Note {
        type_,
        reason,
        action: "Reconcile",
        note: short(&note),
    };
    if let Err(e) = ctx.events.publish(&note, &so.object_ref(&())).await {
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
        ctx.store.forget(&namespace, &so.name_any());
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
    if let Err(e) = schedule::activation_polling(
        annotation(&so, schedule::ANNOTATION_ACTIVATION_POLLING).as_deref(),
        schedule::polling_interval(&so.spec),
    ) {
        return refuse(ctx, &so, "ScaledObjectCheckFailed", e).await;
    }
    let composite = match Composite::of(&so.spec) {
        Ok(c) => c,
        Err(e) => return refuse(ctx, &so, "ScaledObjectCheckFailed", e.to_string()).await,
    };
    let paused = PausedDirections {
        scale_in: is_true(&so, ANNOTATION_PAUSED_SCALE_IN),
        scale_out: is_true(&so, ANNOTATION_PAUSED_SCALE_OUT),
    };
    let signature = signature(&so, &ctx.authentication_versions(&so));
    let rebuild = ctx.take_rebuild(&key);
    let running = ctx.running_loop(&key);
    if let Some((running_signature, specs)) = &running
        && *running_signature == signature
        && !rebuild
    {
        // Nothing the loop depends on changed, and the loop reads the target itself. The HPA
        // is put back in shape (no request at all while it is as ebb left it), from the
        // scalers' specs as they are now.
        apply_hpa(ctx, &so, specs, composite.as_ref(), paused).await?;
        write_status(
            ctx,
            &so,
            &[],
            serde_json::json!({ "externalMetricNames": external_names(specs) }),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }

    let target = match ctx
        .kinds
        .resolve(&ctx.client, &so.spec.scale_target_ref, &namespace)
        .await
    {
        Ok(t) => t,
        Err(e) => return refuse(ctx, &so, "ScaledObjectCheckFailed", e.to_string()).await,
    };
    // The object itself is read for its pod template (`*FromEnv` authentication). ebb's RBAC
    // lets it read Deployments and StatefulSets only; any other kind with `/scale` (a
    // ReplicaSet, an Argo Rollout) is checked through `/scale` and has no pod template to read.
    let object = match target.object().await {
        Ok(o) => Some(o),
        Err(TargetError::Api(kube::Error::Api(status))) if status.code == 403 => {
            match target.replicas().await {
                Ok(_) => None,
                Err(e) => {
                    return refuse(ctx, &so, "ScaledObjectCheckFailed", e.to_string()).await;
                }
            }
        }
        Err(e) => return refuse(ctx, &so, "ScaledObjectCheckFailed", e.to_string()).await,
    };
    let original = match so.status.as_ref().and_then(|s| s.original_replica_count) {
        Some(n) => Some(n),
        None => target.replicas().await.ok(),
    };

    let pod = object.as_ref().and_then(pod_spec);
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
    if let Err(e) = desired_hpa(&so, &hpa_metrics(&built.specs, composite.as_ref()), paused) {
        return refuse(ctx, &so, "ScaledObjectCheckFailed", e.to_string()).await;
    }
    apply_hpa(ctx, &so, &built.specs, composite.as_ref(), paused).await?;

    // (Re)start the loop for this generation; its series start afresh.
    ctx.stop_loop(&key);
    ctx.metrics.forget(&namespace, &so.name_any());
    ctx.store.forget(&namespace, &so.name_any());
    ctx.metrics.set_paused(&namespace, &so.name_any(), false);
    let conditions = ctx.conditions_of(&key, &so);
    let scale_loop = ScaleLoop {
        so: so.clone(),
        target: target.clone(),
        triggers: built.triggers.clone(),
        composite: composite.clone(),
        api: Api::namespaced(ctx.client.clone(), &namespace),
        events: ctx.events.clone(),
        conditions,
        metrics: ctx.metrics.clone(),
        store: ctx.store.clone(),
        nudge: ctx.nudge(&so),
    };
    let handle = tokio::spawn(scale_loop.run());
    {
        let mut loops = ctx.loops.lock().unwrap_or_else(PoisonError::into_inner);
        loops.insert(
            key.clone(),
            LoopEntry {
                signature,
                triggers: built.triggers,
                handle,
            },
        );
        ctx.metrics.set_scale_loops(loops.len());
    }
    info!(scaledobject = %key, hpa = %hpa_name(&so), rebuild, "scale loop started");
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

    let resources: Vec<&str> = built
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
    let unpaused = (
        CONDITION_PAUSED,
        Status::False,
        "ScaledObjectUnpaused",
        "ScaledObject is not paused".to_string(),
    );
    let ready = (
        CONDITION_READY,
        Status::True,
        "ScaledObjectReady",
        "ScaledObject is defined correctly and is ready for scaling".to_string(),
    );
    let wanted = if running.is_none() {
        vec![ready, unpaused]
    } else {
        vec![unpaused]
    };
    write_status(
        ctx,
        &so,
        &wanted,
        serde_json::json!({
            "scaleTargetKind": target.kind_label,
            "scaleTargetGVKR": target.gvkr,
            "originalReplicaCount": original,
            "hpaName": hpa_name(&so),
            "externalMetricNames": external_names(&built.specs),
            "resourceMetricNames": if resources.is_empty() { None } else { Some(resources) },
            "triggersTypes": types.join(","),
            "authenticationsTypes": if built.authentication_names.is_empty() { None } else { Some(built.authentication_names.join(",")) },
            "pausedReplicaCount": null,
        }),
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The External metrics' names, for `status.externalMetricNames`.
fn external_names(specs: &[MetricSpec]) -> Vec<&str> {
    specs.iter().filter_map(MetricSpec::external_name).collect()
}

/// Applies the HPA for `specs` server-side and mirrors its ScalingActive condition into
/// HPAActive.
async fn apply_hpa(
    ctx: &Context,
    so: &ScaledObject,
    specs: &[MetricSpec],
    composite: Option<&Composite>,
    paused: PausedDirections,
) -> Result<(), Error> {
    let desired = match desired_hpa(so, &hpa_metrics(specs, composite), paused) {
        Ok(h) => h,
        // Checked before the loop started; a late spec (an external plugin's) that cannot be
        // written leaves the HPA as it was.
        Err(e) => {
            warn!(scaledobject = %key_of(so), error = %e, "the HPA cannot take the scalers' metrics");
            return Ok(());
        }
    };
    let key = key_of(so);
    let namespace = so.namespace().unwrap_or_default();
    let wanted = digest::of_json(&desired);
    let seen = ctx
        .hpas
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .and_then(|store| store.get(&ObjectRef::new(&hpa_name(so)).within(&namespace)));
    let last = ctx
        .applied
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .copied();
    let current = match seen {
        // As ebb left it, and ebb still wants the same: nothing to do. (HPAs have no
        // metadata.generation, and their resourceVersion moves with every status update.)
        Some(hpa) if last.is_some_and(|l| l.asked == wanted && l.stored == stored_digest(&hpa)) => {
            hpa
        }
        _ => {
            let hpas: Api<HorizontalPodAutoscaler> =
                Api::namespaced(ctx.client.clone(), &namespace);
            let applied = hpas
                .patch(
                    &hpa_name(so),
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await?;
            ctx.metrics.count_write("hpa");
            ctx.applied
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    key.clone(),
                    AppliedHpa {
                        asked: wanted,
                        stored: stored_digest(&applied),
                    },
                );
            Arc::new(applied)
        }
    };
    let (status, reason, message) = hpa_active(&current);
    let cell = ctx.conditions_of(&key, so);
    status::set_condition(
        &mut *cell.lock().await,
        CONDITION_HPA_ACTIVE,
        status,
        &reason,
        short(&message),
    );
    Ok(())
}

async fn cleanup(so: Arc<ScaledObject>, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(&so);
    ctx.stop_loop(&key);
    ctx.conditions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&key);
    ctx.applied
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&key);
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
    info!(scaledobject = %key, "deleted; scale loop stopped");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use ebb_scalers::{MetricTargetType, MetricValue, MetricsAndActivity, Scaler, ScalerError};

    use super::*;

    /// Counts its reads; each takes 200 ms.
    struct Slow(Arc<AtomicUsize>);

    #[async_trait]
    impl Scaler for Slow {
        fn metric_specs(&self) -> Vec<MetricSpec> {
            vec![MetricSpec::External {
                name: "s0-slow".into(),
                target: 5.0,
                target_type: MetricTargetType::AverageValue,
            }]
        }

        async fn metrics_and_activity(
            &self,
            metric: &str,
        ) -> Result<MetricsAndActivity, ScalerError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(MetricsAndActivity {
                values: vec![MetricValue {
                    name: metric.to_string(),
                    value: 7.0,
                }],
                active: true,
            })
        }
    }

    #[tokio::test]
    async fn stopping_every_loop_forgets_their_readings() {
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        let ctx = Arc::new(Context::new(client, Registry::new(), "ebb-system".into()));
        ctx.loops.lock().expect("lock").insert(
            "shop/orders".into(),
            LoopEntry {
                signature: String::new(),
                triggers: Vec::new(),
                handle: tokio::spawn(async {}),
            },
        );
        ctx.metrics.record(
            crate::admin::SeriesKey {
                namespace: "shop".into(),
                scaled_object: "orders".into(),
                trigger_index: 0,
                scaler: "redis".into(),
                metric: "s0-redis-jobs".into(),
            },
            Some(3.0),
            true,
        );
        ctx.store.publish(
            "shop",
            "orders",
            crate::metric_store::Published {
                at: std::time::Instant::now(),
                fresh_for: Duration::from_secs(60),
                reread_after: Default::default(),
                answers: [(
                    "s0-redis-jobs".to_string(),
                    crate::scale::evaluate::Answer::Value(3.0),
                )]
                .into(),
            },
        );
        assert!(ctx.metrics.render().contains("scaledObject=\"orders\""));

        ctx.stop_all_loops();
        assert_eq!(ctx.running_loops(), 0);
        let rendered = ctx.metrics.render();
        assert!(!rendered.contains("orders"), "{rendered}");
        assert!(rendered.contains("ebb_scale_loops 0"), "{rendered}");
        assert_eq!(
            ctx.store.lookup("shop", "orders", "s0-redis-jobs"),
            crate::metric_store::Lookup::UnknownObject
        );
    }

    #[tokio::test]
    async fn concurrent_live_reads_of_one_metric_share_one_query() {
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        let ctx = Arc::new(Context::new(client, Registry::new(), "ebb-system".into()));
        let reads = Arc::new(AtomicUsize::new(0));
        ctx.loops.lock().expect("lock").insert(
            "shop/orders".into(),
            LoopEntry {
                signature: String::new(),
                triggers: vec![PolledTrigger {
                    index: 0,
                    name: None,
                    scaler: Arc::new(Slow(reads.clone())),
                }],
                handle: tokio::spawn(async {}),
            },
        );
        let answers =
            futures::future::join_all((0..10).map(|_| ctx.read_live("shop", "orders", "s0-slow")))
                .await;
        assert!(answers.iter().all(|a| *a == Some(Ok(7.0))), "{answers:?}");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // Once answered, the next request reads again.
        assert_eq!(
            ctx.read_live("shop", "orders", "s0-slow").await,
            Some(Ok(7.0))
        );
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // Unknown object or metric: nothing to read.
        assert_eq!(ctx.read_live("shop", "other", "s0-slow").await, None);
        assert_eq!(ctx.read_live("shop", "orders", "s1-x").await, None);
    }
}
