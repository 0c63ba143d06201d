//! Kubernetes Events about ScaledObjects (`events.k8s.io/v1`), with a repeat of the same Event
//! within [`SERIES_WINDOW`] counted on the first one (its `series`) rather than created anew.
//!
//! kube-runtime's `Recorder` does the same but keeps a copy of every Event it published until
//! its next publish after six minutes: ten thousand ScaledObjects starting leave ten thousand
//! Events (about 3 KiB each) in memory for as long as nothing else happens. This keeps a digest
//! and a name per Event, and drops them once the window has passed (at a publish, at most
//! once a minute).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// A repeat within this window is counted on the Event already published.
pub const SERIES_WINDOW: Duration = Duration::from_secs(360);

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something an operator should look at.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// One Event to publish.
pub struct Note<'a> {
    /// Normal or Warning.
    pub type_: EventType,
    /// A short CamelCase reason (`KEDAScaleTargetActivated`).
    pub reason: &'a str,
    /// What ebb was doing (`Reconcile`, `Scale`).
    pub action: &'a str,
    /// The human-readable message.
    pub note: String,
}

/// An Event already published, for counting its repeats.
struct Published {
    name: String,
    count: i32,
    at: Instant,
}

/// Publishes Events as `controller` (and `instance`, the pod).
pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    published: Mutex<Remembered>,
}

/// The Events published within the window, by digest.
struct Remembered {
    by_digest: HashMap<u64, Published>,
    /// When older entries were last dropped: at most once a minute, not at every publish (a
    /// start of thousands of objects publishes thousands of Events).
    pruned: Instant,
}

/// How often expired entries are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Events {
    /// Events sent through `client`, reported by `controller` (instance `instance`, or the
    /// controller's name when none).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            published: Mutex::new(Remembered {
                by_digest: HashMap::new(),
                pruned: Instant::now(),
            }),
        }
    }

    /// Publishes `note` about `regarding`; a repeat within [`SERIES_WINDOW`] is counted on the
    /// Event already published.
    pub async fn publish(
        &self,
        note: &Note<'_>,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = digest(note, regarding);
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = Timestamp::now();
        let repeat = {
            let mut published = self
                .published
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if published.pruned.elapsed() >= PRUNE_EVERY {
                published
                    .by_digest
                    .retain(|_, p| p.at.elapsed() < SERIES_WINDOW);
                published.pruned = Instant::now();
            }
            published
                .by_digest
                .get(&key)
                .filter(|p| p.at.elapsed() < SERIES_WINDOW)
                .map(|p| (p.name.clone(), p.count + 1))
        };
        let (name, count) = match repeat {
            Some((name, count)) => {
                let series = serde_json::json!({
                    "series": {"count": count, "lastObservedTime": MicroTime(now)}
                });
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                    .await
                {
                    Ok(_) => (name, count),
                    // Gone (expired or deleted): publish it afresh.
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        (self.create(&api, note, regarding, now).await?, 1)
                    }
                    Err(e) => return Err(e),
                }
            }
            None => (self.create(&api, note, regarding, now).await?, 1),
        };
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_digest
            .insert(
                key,
                Published {
                    name,
                    count,
                    at: Instant::now(),
                },
            );
        Ok(())
    }

    async fn create(
        &self,
        api: &Api<Event>,
        note: &Note<'_>,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Result<String, kube::Error> {
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            action: Some(note.action.to_string()),
            event_time: Some(MicroTime(now)),
            note: Some(note.note.clone()),
            reason: Some(note.reason.to_string()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(note.type_.as_str().to_string()),
            ..Default::default()
        };
        let created = api.create(&PostParams::default(), &event).await?;
        Ok(created.metadata.name.unwrap_or_default())
    }

    /// How many Events are remembered for counting repeats.
    pub fn remembered(&self) -> usize {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_digest
            .len()
    }
}

/// What makes two Events the same: the object, type, reason, action and message.
fn digest(note: &Note<'_>, regarding: &ObjectReference) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        &regarding.uid,
        &regarding.namespace,
        &regarding.name,
        note.type_,
        note.reason,
        note.action,
        &note.note,
    )
        .hash(&mut hasher);
    hasher.finish()
}
