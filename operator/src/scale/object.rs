//! A scale loop's ScaledObject. The loop starts from the watch cache's copy; the first status
//! write (the loop's own, or the controller's) makes the cache hold a new copy, and a loop
//! that kept its first one would hold every idle object twice. So the loop takes the cache's
//! copy whenever it differs from its own in status and bookkeeping only: same object (uid),
//! same spec (generation), same labels, annotations, finalizers and deletion mark. Anything
//! else changed is the controller's to act on (it restarts the loop), and until then the loop
//! keeps the copy it was started with.

use std::sync::{Arc, Mutex, PoisonError};

use ebb_crds::ScaledObject;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

/// The loop's copy of its object, and where a newer copy may be found.
pub struct LoopObject {
    current: Mutex<Arc<ScaledObject>>,
    cache: Option<Store<ScaledObject>>,
}

impl LoopObject {
    /// The copy `so` the loop starts from, and the controller's cache (None in tests or when
    /// no controller runs).
    pub fn new(so: Arc<ScaledObject>, cache: Option<Store<ScaledObject>>) -> Self {
        Self {
            current: Mutex::new(so),
            cache,
        }
    }

    /// The copy now in use.
    pub fn get(&self) -> Arc<ScaledObject> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes the cache's copy of the object when it may stand for the one in use; returns
    /// whether it did.
    pub fn follow_cache(&self) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(namespace) = current.namespace() else {
            return false;
        };
        let Some(cached) = cache.get(&ObjectRef::new(&current.name_any()).within(&namespace))
        else {
            return false;
        };
        if Arc::ptr_eq(&cached, &current) || !same_but_status(&current, &cached) {
            return false;
        }
        *current = cached;
        true
    }
}

/// Whether `cached` is `ours` with only its status, resourceVersion or managedFields moved.
pub fn same_but_status(ours: &ScaledObject, cached: &ScaledObject) -> bool {
    let (a, b) = (&ours.metadata, &cached.metadata);
    a.uid.is_some()
        && a.uid == b.uid
        && a.generation == b.generation
        && a.labels == b.labels
        && a.annotations == b.annotations
        && a.finalizers == b.finalizers
        && a.deletion_timestamp == b.deletion_timestamp
        && a.owner_references == b.owner_references
}

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher};

    use super::*;

    fn object(
        uid: &str,
        generation: i64,
        paused: Option<&str>,
        status_ready: &str,
    ) -> ScaledObject {
        let mut annotations = serde_json::Map::new();
        if let Some(p) = paused {
            annotations.insert("autoscaling.keda.sh/paused".into(), p.into());
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": "orders", "namespace": "shop", "uid": uid,
                "generation": generation, "annotations": annotations},
            "spec": {"scaleTargetRef": {"name": "orders"},
                "triggers": [{"type": "cron", "metadata": {}}]},
            "status": {"conditions": [{"type": "Ready", "status": status_ready}]}
        }))
        .expect("a ScaledObject")
    }

    #[test]
    fn a_status_change_alone_lets_the_cache_copy_stand_in() {
        let ours = object("u1", 3, None, "Unknown");
        assert!(same_but_status(&ours, &object("u1", 3, None, "True")));
        assert!(
            !same_but_status(&ours, &object("u1", 4, None, "True")),
            "new spec"
        );
        assert!(
            !same_but_status(&ours, &object("u2", 3, None, "True")),
            "recreated"
        );
        assert!(
            !same_but_status(&ours, &object("u1", 3, Some("true"), "True")),
            "annotated"
        );
    }

    #[test]
    fn the_loop_drops_its_first_copy_for_the_cache_after_a_status_write() {
        let (reader, mut writer) = reflector::store();
        let first = object("u1", 3, None, "Unknown");
        writer.apply_watcher_event(&watcher::Event::Apply(first.clone()));
        let started_with = reader
            .get(&ObjectRef::new("orders").within("shop"))
            .expect("cached");
        let loop_object = LoopObject::new(started_with.clone(), Some(reader.clone()));
        assert!(!loop_object.follow_cache(), "already the cache's copy");

        // A status write: the cache holds a new copy; the loop moves to it and lets go of
        // the first.
        writer.apply_watcher_event(&watcher::Event::Apply(object("u1", 3, None, "True")));
        assert!(loop_object.follow_cache());
        drop(started_with);
        let now = loop_object.get();
        assert_eq!(
            now.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .map(|c| c[0].status.as_str()),
            Some("True")
        );
        assert!(Arc::ptr_eq(
            &now,
            &reader
                .get(&ObjectRef::new("orders").within("shop"))
                .expect("cached")
        ));

        // A new spec is the controller's to act on: the loop keeps its copy.
        writer.apply_watcher_event(&watcher::Event::Apply(object("u1", 4, None, "True")));
        assert!(!loop_object.follow_cache());
        assert_eq!(loop_object.get().metadata.generation, Some(3));
    }
}
