//! What every reconcile shares: the apiserver client, the trigger registry, Events, metrics,
//! the metric store, the running scale loops, each object's status cell, and the caches the
//! controller's watches fill while it runs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use ebb_crds::{ClusterTriggerAuthentication, ScaledObject, TriggerAuthentication};
use ebb_scalers::Registry;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::admin::Metrics;
use crate::admission::checks::Neighbours;
use crate::events::Events;
use crate::loops::Loops;
use crate::metric_store::MetricStore;
use crate::status::StatusCell;
use crate::target::Kinds;

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
    /// `--filepath-auth-root-path`: where `filePath` files are (none may be read when unset).
    pub file_path_root: Option<std::path::PathBuf>,
    /// The life asked for bound service-account tokens.
    pub token_expiry: std::time::Duration,
    /// Watch ScaledObjects in this namespace only (all namespaces when `None`).
    pub watch_namespace: Option<String>,
    /// Metrics and readiness, served by the admin endpoints.
    pub metrics: Arc<Metrics>,
    /// The latest answer of every metric, for the external metrics API.
    pub store: Arc<MetricStore>,
    /// The running scale loops, shared with the metrics API.
    pub loops: Loops,
    /// Each object's status cell, shared with its scale loop.
    statuses: Mutex<HashMap<String, Arc<StatusCell>>>,
    /// Objects whose scalers are to be rebuilt at their next reconcile.
    rebuilds: Mutex<HashSet<String>>,
    /// TriggerAuthentications and ClusterTriggerAuthentications, while a controller runs.
    pub(super) authentications: Mutex<Option<AuthStores>>,
    /// Scale target kinds found through discovery.
    pub(super) kinds: Kinds,
    /// True while the authentication caches are filled (the ScaledJob controller waits for it).
    pub(super) auth_ready: tokio::sync::watch::Sender<bool>,
    /// Every HPA (names, targets, owners, conditions; slimmed), while a controller runs: ebb's
    /// own, and the others a ScaledObject must not fight.
    pub(super) hpas: Mutex<Option<Store<HorizontalPodAutoscaler>>>,
    /// The ScaledObjects, while a controller runs: the admission checks compare an object
    /// with its namespace's others.
    pub(super) scaled_objects: Mutex<Option<Store<ScaledObject>>>,
    /// Per ScaledObject, the HPA ebb last applied. An HPA still stored so needs no apply.
    pub(super) applied: Mutex<HashMap<String, AppliedHpa>>,
    /// Adaptive activation's budgets of reads per server.
    pub activation: Arc<crate::scale::budget::Budgets>,
    /// The scale targets' metadata watches (made at first use, in `watch_namespace`).
    targets: std::sync::OnceLock<crate::target_watch::TargetWatches>,
}

/// What ebb last applied to a ScaledObject's HPA (digests).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct AppliedHpa {
    /// The HPA ebb asked for.
    pub(super) asked: u64,
    /// The HPA's spec, labels and owners as the apiserver answered the apply.
    pub(super) stored: u64,
}

/// Caches of the authentication objects, for the loops' signatures.
#[derive(Clone)]
pub(super) struct AuthStores {
    pub(super) namespaced: Store<TriggerAuthentication>,
    pub(super) cluster: Store<ClusterTriggerAuthentication>,
}

impl Context {
    /// A context for `client`, reporting Events as `ebb`.
    ///
    /// A `kubernetes-workload` type in `registry` is given Pod watches through `client`.
    pub fn new(client: Client, mut registry: Registry, namespace: String) -> Self {
        if registry.types().any(|t| t == "kubernetes-workload") {
            ebb_scalers::builtin::kubernetes_workload::register_with(
                &mut registry,
                Arc::new(crate::workload_pods::WorkloadPods::new(client.clone())),
            );
        }
        Self {
            events: Arc::new(Events::new(
                client.clone(),
                "ebb",
                std::env::var("POD_NAME").ok(),
            )),
            client,
            registry,
            namespace,
            file_path_root: None,
            token_expiry: crate::triggers::DEFAULT_TOKEN_EXPIRY,
            watch_namespace: None,
            metrics: Arc::new(Metrics::default()),
            store: Arc::new(MetricStore::default()),
            loops: Loops::default(),
            statuses: Mutex::new(HashMap::new()),
            rebuilds: Mutex::new(HashSet::new()),
            authentications: Mutex::new(None),
            auth_ready: tokio::sync::watch::Sender::new(false),
            kinds: Kinds::default(),
            hpas: Mutex::new(None),
            scaled_objects: Mutex::new(None),
            applied: Mutex::new(HashMap::new()),
            targets: std::sync::OnceLock::new(),
            activation: crate::scale::budget::Budgets::new(
                crate::scale::budget::DEFAULT_PER_SERVER,
            ),
        }
    }

    /// The scale targets' metadata watches.
    pub fn targets(&self) -> &crate::target_watch::TargetWatches {
        self.targets.get_or_init(|| {
            crate::target_watch::TargetWatches::new(
                self.client.clone(),
                self.watch_namespace.clone(),
            )
        })
    }

    /// Where authentication comes from, besides the objects.
    pub fn auth_settings(&self) -> crate::triggers::AuthSettings {
        crate::triggers::AuthSettings {
            cluster_object_namespace: self.namespace.clone(),
            file_path_root: self.file_path_root.clone(),
            token_expiry: self.token_expiry,
        }
    }

    /// The metrics API's sources: this context's metric store and scale loops.
    pub fn metrics_api_sources(&self) -> crate::metrics_api::Sources {
        crate::metrics_api::Sources {
            client: self.client.clone(),
            store: self.store.clone(),
            loops: self.loops.clone(),
        }
    }

    /// Number of running scale loops.
    pub fn running_loops(&self) -> usize {
        self.loops.len()
    }

    /// Stops every scale loop (when the controller ends, or is cut off), and forgets their
    /// readings: a replica that stepped down neither shows frozen series on `/metrics` nor
    /// answers the metrics API from polls it no longer makes.
    pub fn stop_all_loops(&self) {
        for key in self.loops.stop_all() {
            if let Some((namespace, name)) = key.split_once('/') {
                self.metrics.forget(namespace, name);
                self.store.forget(namespace, name);
            }
        }
        self.metrics.set_scale_loops(0);
    }

    /// Stops the scale loop of `key` and waits for it to end.
    pub(super) async fn stop_loop(&self, key: &str) {
        self.loops.stop(key).await;
        self.metrics.set_scale_loops(self.loops.len());
    }

    /// Asks for `key`'s scalers to be rebuilt at its next reconcile.
    pub(super) fn ask_rebuild(&self, key: String) {
        lock(&self.rebuilds).insert(key);
    }

    /// Whether a rebuild was asked for `key` (and clears the request).
    pub(super) fn take_rebuild(&self, key: &str) -> bool {
        lock(&self.rebuilds).remove(key)
    }

    /// The status cell of `so`, made from its stored conditions the first time.
    pub(super) fn status_of(&self, key: &str, so: &ScaledObject) -> Arc<StatusCell> {
        lock(&self.statuses)
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(StatusCell::from_stored(
                    so.status.as_ref().and_then(|s| s.conditions.as_deref()),
                ))
            })
            .clone()
    }

    /// Forgets everything kept about `key` (the object is gone).
    pub(super) fn forget(&self, key: &str) {
        lock(&self.statuses).remove(key);
        lock(&self.applied).remove(key);
        self.loops.forget(key);
    }

    /// The resourceVersions of the authentication objects `so` references, as known now.
    pub(super) fn authentication_versions(&self, so: &ScaledObject) -> String {
        self.authentication_versions_of(&so.namespace().unwrap_or_default(), &so.spec.triggers)
    }

    /// The resourceVersions of the authentication objects `triggers` of `namespace` reference,
    /// as known now (empty before the controller's caches are filled).
    pub(crate) fn authentication_versions_of(
        &self,
        namespace: &str,
        triggers: &[ebb_crds::scaled_object::ScaleTrigger],
    ) -> String {
        let Some(stores) = lock(&self.authentications).clone() else {
            return String::new();
        };
        triggers
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
                        .get(&ObjectRef::new(&r.name).within(namespace))
                        .and_then(|a| a.resource_version())
                };
                version.unwrap_or_else(|| "-".into())
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// What `so`'s namespace holds besides it, from the controller's caches (empty while no
    /// controller runs).
    pub(super) fn neighbours(&self, so: &ScaledObject) -> Neighbours {
        let namespace = so.namespace().unwrap_or_default();
        let scaled_objects = lock(&self.scaled_objects).clone();
        let hpas = lock(&self.hpas).clone();
        Neighbours::from_caches(so, &namespace, scaled_objects.as_ref(), hpas.as_ref())
    }

    /// The running controller's cache of ScaledObjects, if one runs.
    pub(super) fn scaled_object_cache(&self) -> Option<Store<ScaledObject>> {
        lock(&self.scaled_objects).clone()
    }

    /// Resolves once the running controller has filled its authentication caches.
    pub async fn authentications_cached(&self) {
        let mut ready = self.auth_ready.subscribe();
        let _ = ready.wait_for(|r| *r).await.map(|_| ());
    }

    /// Drops what a controller run filled in (it ended, or was cut off).
    pub(super) fn clear_run_state(&self) {
        self.loops.set_nudges(None);
        self.auth_ready.send_replace(false);
        *lock(&self.authentications) = None;
        *lock(&self.hpas) = None;
        *lock(&self.scaled_objects) = None;
        lock(&self.applied).clear();
    }
}

/// A std mutex's guard; a poisoned lock's data is still used (every writer leaves it whole).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn stopping_every_loop_forgets_their_readings() {
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        let ctx = Arc::new(Context::new(client, Registry::new(), "ebb-system".into()));
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
            std::time::Duration::from_millis(2),
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
                    crate::metric_store::Answer::Value(3.0),
                )]
                .into(),
            },
        );
        crate::loops::tests::insert_idle(&ctx.loops, "shop/orders", Vec::new());
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
}
