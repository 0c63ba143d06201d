//! Metadata-only watches of the scale targets, one per kind in use: how a scale loop knows that
//! the replica count it last read from (or wrote to) a target's `/scale` still holds, without
//! reading `/scale` again.
//!
//! A change of `spec.replicas` through `/scale` or the object itself moves the target's
//! `metadata.generation`. So a loop records the generation it saw with each count it reads, and
//! trusts a resting count while the kind's watch is live and the generation has not moved: no
//! request per object in the steady state, and a manual scale-up of an idle target is seen
//! within a watch event instead of at a periodic re-read. The watches carry metadata only
//! (`PartialObjectMeta`, dropped once its generation is read); nothing is cached but one entry
//! per registered target. Where a kind cannot be watched (no `list`/`watch` right on it, the
//! apiserver down), its targets are marked not live and the loops fall back to re-reading a
//! resting count every [`crate::scale::schedule::REPLICAS_REFRESH`].
//!
//! Watches start with a kind's first registered target and stop with its last, so a replica
//! that runs no loops (a standby) watches nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use ebb_crds::scaled_object::GroupVersionKindResource;
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// What the kind's watch last said of one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// A digest of the target's `metadata.uid` and `metadata.generation` (None: not seen, or
    /// deleted): it moves when the replica count may have, and when the object is replaced.
    pub generation: Option<u64>,
    /// Whether the kind's watch has listed every object and has not failed since.
    pub live: bool,
}

/// The kind of a target: `group/version/resource`.
type KindKey = (String, String, String);
/// A target within its kind: `(namespace, name)`.
type ObjectKey = (String, String);

#[derive(Default)]
struct Kind {
    targets: HashMap<ObjectKey, watch::Sender<Seen>>,
    /// Whether the watch is live (for targets registered later).
    live: bool,
    task: Option<JoinHandle<()>>,
}

struct Inner {
    client: Client,
    /// Watch this namespace only (every namespace when None).
    namespace: Option<String>,
    kinds: Mutex<HashMap<KindKey, Kind>>,
}

/// The targets' watches. Cheap to clone; every clone is the same set.
#[derive(Clone)]
pub struct TargetWatches {
    inner: Arc<Inner>,
}

/// One loop's view of its target: what the watch last saw, until dropped.
pub struct TargetGeneration {
    seen: watch::Receiver<Seen>,
    _registration: Registration,
}

impl TargetGeneration {
    /// What the watch says now.
    pub fn now(&self) -> Seen {
        *self.seen.borrow()
    }

    /// A view that never goes live, for loops started without watches (tests, `explain`).
    pub fn unwatched() -> Self {
        let (_, seen) = watch::channel(Seen::default());
        Self {
            seen,
            _registration: Registration(None),
        }
    }
}

/// Takes a target's entry out when its last loop lets go, and its kind's watch when that was
/// the kind's last target.
struct Registration(Option<(Arc<Inner>, KindKey, ObjectKey)>);

impl Drop for Registration {
    fn drop(&mut self) {
        let Some((inner, kind_key, object)) = self.0.take() else {
            return;
        };
        let mut kinds = lock(&inner.kinds);
        let Some(kind) = kinds.get_mut(&kind_key) else {
            return;
        };
        // The receiver being dropped with this registration is still counted.
        if kind
            .targets
            .get(&object)
            .is_some_and(|s| s.receiver_count() <= 1)
        {
            kind.targets.remove(&object);
        }
        if kind.targets.is_empty() {
            if let Some(task) = kind.task.take() {
                task.abort();
            }
            kinds.remove(&kind_key);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The kind's API resource, from the target's resolved group, version, kind and plural.
fn api_resource(gvkr: &GroupVersionKindResource) -> ApiResource {
    ApiResource {
        group: gvkr.group.clone(),
        version: gvkr.version.clone(),
        api_version: if gvkr.group.is_empty() {
            gvkr.version.clone()
        } else {
            format!("{}/{}", gvkr.group, gvkr.version)
        },
        kind: gvkr.kind.clone(),
        plural: gvkr.resource.clone(),
    }
}

impl TargetWatches {
    /// Watches through `client`, in `namespace` only when set.
    pub fn new(client: Client, namespace: Option<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                namespace,
                kinds: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Registers the target `name` in `namespace` of kind `gvkr`, starting the kind's watch if
    /// this is its first target.
    pub fn register(
        &self,
        gvkr: &GroupVersionKindResource,
        namespace: &str,
        name: &str,
    ) -> TargetGeneration {
        let kind_key = (
            gvkr.group.clone(),
            gvkr.version.clone(),
            gvkr.resource.clone(),
        );
        let object = (namespace.to_string(), name.to_string());
        let mut kinds = lock(&self.inner.kinds);
        let kind = kinds.entry(kind_key.clone()).or_default();
        let live = kind.live;
        let seen = kind
            .targets
            .entry(object.clone())
            .or_insert_with(|| {
                watch::channel(Seen {
                    generation: None,
                    live,
                })
                .0
            })
            .subscribe();
        if kind.task.is_none() {
            kind.task = Some(tokio::spawn(watch_kind(
                self.inner.clone(),
                kind_key.clone(),
                api_resource(gvkr),
            )));
        }
        TargetGeneration {
            seen,
            _registration: Registration(Some((self.inner.clone(), kind_key, object))),
        }
    }

    /// How many kinds are watched now.
    pub fn kinds(&self) -> usize {
        lock(&self.inner.kinds).len()
    }
}

/// Follows one kind's metadata until aborted.
async fn watch_kind(inner: Arc<Inner>, kind_key: KindKey, resource: ApiResource) {
    // Metadata only: an `Api` of `PartialObjectMeta` asks for nothing else.
    let api: Api<PartialObjectMeta<DynamicObject>> = match &inner.namespace {
        Some(ns) => Api::namespaced_with(inner.client.clone(), ns, &resource),
        None => Api::all_with(inner.client.clone(), &resource),
    };
    let mut events =
        std::pin::pin!(watcher(api, watcher::Config::default().any_semantic()).default_backoff());
    // Generations seen during a relist, applied at its end (a relist that fails half way
    // changes nothing).
    let mut listing: Vec<(ObjectKey, Option<u64>)> = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(meta)) => {
                if let Some((key, generation)) = key_of(&meta) {
                    set(&inner, &kind_key, &key, generation);
                }
            }
            Ok(watcher::Event::Delete(meta)) => {
                if let Some((key, _)) = key_of(&meta) {
                    set(&inner, &kind_key, &key, None);
                }
            }
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(meta)) => {
                if let Some(entry) = key_of(&meta) {
                    listing.push(entry);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let seen: HashMap<ObjectKey, Option<u64>> = listing.drain(..).collect();
                let mut kinds = lock(&inner.kinds);
                let Some(kind) = kinds.get_mut(&kind_key) else {
                    return;
                };
                kind.live = true;
                for (key, sender) in &kind.targets {
                    let generation = seen.get(key).copied().flatten();
                    sender.send_if_modified(|s| {
                        let next = Seen {
                            generation,
                            live: true,
                        };
                        std::mem::replace(s, next) != next
                    });
                }
                debug!(kind = %resource.plural, targets = kind.targets.len(), "scale targets listed");
            }
            Err(e) => {
                warn!(kind = %resource.plural, error = %e, "watching scale targets; resting replica counts are re-read periodically until the watch recovers");
                let mut kinds = lock(&inner.kinds);
                let Some(kind) = kinds.get_mut(&kind_key) else {
                    return;
                };
                kind.live = false;
                for sender in kind.targets.values() {
                    sender.send_if_modified(|s| std::mem::replace(&mut s.live, false));
                }
            }
        }
    }
}

fn key_of(meta: &PartialObjectMeta<DynamicObject>) -> Option<(ObjectKey, Option<u64>)> {
    let m = &meta.metadata;
    let stamp = m.generation.map(|generation| {
        crate::digest::fnv1a(format!("{}/{generation}", m.uid.as_deref().unwrap_or("")).as_bytes())
    });
    Some(((m.namespace.clone()?, m.name.clone()?), stamp))
}

fn set(inner: &Inner, kind_key: &KindKey, key: &ObjectKey, generation: Option<u64>) {
    let kinds = lock(&inner.kinds);
    if let Some(sender) = kinds.get(kind_key).and_then(|k| k.targets.get(key)) {
        sender.send_if_modified(|s| std::mem::replace(&mut s.generation, generation) != generation);
    }
}
