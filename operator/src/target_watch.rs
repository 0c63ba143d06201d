//! Metadata-only watches of the scale targets, one per kind in use: how a scale loop knows that
//! the replica count it last read from (or wrote to) a target's `/scale` still holds, without
//! reading `/scale` again.
//!
//! A change of `spec.replicas` through `/scale` or the object itself moves the target's
//! `metadata.generation`. So a loop records the generation it saw with each count it reads, and
//! trusts a resting count while the kind's watch is live and the generation has not moved: no
//! request per object in the steady state, and a manual scale-up of an idle target is seen
//! within a watch event instead of at a periodic re-read. The watches carry metadata only
//! (`PartialObjectMeta`, dropped once its generation is read); what is kept is 16 bytes per
//! object of the kind (digests of its name and of its uid and generation), and a channel per
//! registered target. Where a kind cannot be watched (no `list`/`watch` right on it, the
//! apiserver down), its targets are marked not live and the loops fall back to re-reading a
//! resting count every `REPLICAS_REFRESH` (5 minutes, `scale/schedule.rs`).
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
    /// The stamp of every object of the kind the watch has seen, by a digest of its namespace
    /// and name (16 bytes an object), so that a target registered after the list starts known.
    stamps: HashMap<u64, u64>,
    targets: HashMap<ObjectKey, watch::Sender<Seen>>,
    /// Whether the watch is live (for targets registered later).
    live: bool,
    task: Option<JoinHandle<()>>,
}

impl Kind {
    /// A view of `object` for a loop, starting from what the watch knows of it.
    fn subscribe(&mut self, object: ObjectKey) -> watch::Receiver<Seen> {
        let now = Seen {
            generation: self.stamps.get(&object_digest(&object)).copied(),
            live: self.live,
        };
        self.targets
            .entry(object)
            .or_insert_with(|| watch::channel(now).0)
            .subscribe()
    }

    /// A (re)list ended with these objects: the watch is live and knows exactly these.
    fn listed(&mut self, listing: Vec<(ObjectKey, Option<u64>)>) {
        self.live = true;
        self.stamps = listing
            .into_iter()
            .filter_map(|(key, stamp)| Some((object_digest(&key), stamp?)))
            .collect();
        for (key, sender) in &self.targets {
            let next = Seen {
                generation: self.stamps.get(&object_digest(key)).copied(),
                live: true,
            };
            sender.send_if_modified(|s| std::mem::replace(s, next) != next);
        }
    }

    /// An object was added, changed (`Some` stamp) or deleted (`None`).
    fn applied(&mut self, key: &ObjectKey, stamp: Option<u64>) {
        match stamp {
            Some(stamp) => self.stamps.insert(object_digest(key), stamp),
            None => self.stamps.remove(&object_digest(key)),
        };
        if let Some(sender) = self.targets.get(key) {
            sender.send_if_modified(|s| std::mem::replace(&mut s.generation, stamp) != stamp);
        }
    }

    /// The watch failed: nothing it knows can be trusted until it lists again.
    fn failed(&mut self) {
        self.live = false;
        for sender in self.targets.values() {
            sender.send_if_modified(|s| std::mem::replace(&mut s.live, false));
        }
    }
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
        let seen = kind.subscribe(object.clone());
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
        let change = match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(meta)) => {
                listing.extend(key_of(&meta));
                continue;
            }
            Ok(event) => Ok(event),
            Err(e) => {
                warn!(kind = %resource.plural, error = %e, "watching scale targets; resting replica counts are re-read every 5 minutes until the watch recovers");
                Err(())
            }
        };
        let mut kinds = lock(&inner.kinds);
        let Some(kind) = kinds.get_mut(&kind_key) else {
            return;
        };
        match change {
            Ok(watcher::Event::Apply(meta)) => {
                if let Some((key, stamp)) = key_of(&meta) {
                    kind.applied(&key, stamp);
                }
            }
            Ok(watcher::Event::Delete(meta)) => {
                if let Some((key, _)) = key_of(&meta) {
                    kind.applied(&key, None);
                }
            }
            Ok(watcher::Event::InitDone) => {
                kind.listed(std::mem::take(&mut listing));
                debug!(kind = %resource.plural, targets = kind.targets.len(), "scale targets listed");
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(()) => kind.failed(),
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

/// A digest of `(namespace, name)`.
fn object_digest((namespace, name): &ObjectKey) -> u64 {
    crate::digest::fnv1a(format!("{namespace}/{name}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ("shop".to_string(), name.to_string())
    }

    #[test]
    fn a_target_registered_before_or_after_the_list_knows_its_generation() {
        let mut kind = Kind::default();
        let early = kind.subscribe(key("early"));
        assert_eq!(*early.borrow(), Seen::default(), "nothing known yet");
        kind.listed(vec![
            (key("early"), Some(1)),
            (key("late"), Some(7)),
            (key("other"), Some(3)),
        ]);
        assert_eq!(
            *early.borrow(),
            Seen {
                generation: Some(1),
                live: true
            }
        );
        // Registered after the list: known at once, with no event of its own.
        let late = kind.subscribe(key("late"));
        assert_eq!(
            *late.borrow(),
            Seen {
                generation: Some(7),
                live: true
            }
        );
        // Scaled by hand, then deleted.
        kind.applied(&key("late"), Some(8));
        assert_eq!(late.borrow().generation, Some(8));
        kind.applied(&key("late"), None);
        assert_eq!(late.borrow().generation, None);
        // A failed watch makes every view not live, until the next list.
        kind.failed();
        assert!(!early.borrow().live && !kind.subscribe(key("other")).borrow().live);
        kind.listed(vec![(key("early"), Some(2))]);
        assert_eq!(
            *early.borrow(),
            Seen {
                generation: Some(2),
                live: true
            }
        );
        // Objects not registered are kept as digests only.
        assert_eq!(kind.targets.len(), 3);
        assert_eq!(kind.stamps.len(), 1);
    }
}
