//! The Pod watches behind `kubernetes-workload` triggers.
//!
//! One metadata-only watch per namespace and label selector, shared by every trigger on it
//! (the scaler's pool holds them). The apiserver filters by the selector and by phase
//! (`status.phase` neither `Succeeded` nor `Failed`, the Pods KEDA leaves out of its count), so
//! a Pod that finishes arrives as a deletion and the count is the size of a set of names.
//! After the first list, a broken watch keeps its last count while kube's watcher reconnects
//! with backoff and re-lists; the first list's failure (say, RBAC refusing the list) is the
//! poll's error.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use ebb_scalers::builtin::kubernetes_workload::{PodCount, PodScope, PodWatches};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

/// The apiserver-side filter for Pods that still count.
const NOT_FINISHED: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// Starts watches with ebb's client.
pub struct WorkloadPods {
    client: Client,
}

impl WorkloadPods {
    /// Watches through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[derive(Default)]
struct State {
    /// `namespace/name` of every counted Pod.
    pods: HashSet<String>,
    /// The Pods of a re-list in progress, swapped in when it completes.
    relist: Option<HashSet<String>>,
    /// Whether the task has ended (it should not: the watcher retries forever).
    stopped: bool,
    /// Whether the last event was an error (logged once per outage).
    failing: bool,
}

/// One running watch; dropping it stops the task.
struct Watch {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodCount for Watch {
    fn count(&self) -> Result<u64, String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.stopped {
            return Err("the pod watch stopped".into());
        }
        Ok(state.pods.len() as u64)
    }
}

fn key(pod: &impl ResourceExt) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

#[async_trait]
impl PodWatches for WorkloadPods {
    async fn watch(&self, scope: &PodScope) -> Result<Box<dyn PodCount>, String> {
        // A metadata-only watch: names are all it counts.
        let api: Api<PartialObjectMeta<Pod>> = match &scope.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let config = watcher::Config::default()
            .labels(&scope.selector)
            .fields(NOT_FINISHED);
        let state = Arc::new(Mutex::new(State::default()));
        let (listed, first_list) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let task_state = state.clone();
        let what = scope.to_string();
        let task = tokio::spawn(async move {
            let mut listed = Some(listed);
            let mut events = std::pin::pin!(watcher(api, config).default_backoff());
            while let Some(event) = events.next().await {
                let mut state = task_state.lock().unwrap_or_else(PoisonError::into_inner);
                match event {
                    Ok(event) => {
                        if state.failing {
                            tracing::info!(watch = %what, "pod watch is back");
                            state.failing = false;
                        }
                        match event {
                            watcher::Event::Init => state.relist = Some(HashSet::new()),
                            watcher::Event::InitApply(pod) => {
                                state.relist.get_or_insert_default().insert(key(&pod));
                            }
                            watcher::Event::InitDone => {
                                state.pods = state.relist.take().unwrap_or_default();
                                if let Some(listed) = listed.take() {
                                    let _ = listed.send(Ok(()));
                                }
                            }
                            watcher::Event::Apply(pod) => {
                                state.pods.insert(key(&pod));
                            }
                            watcher::Event::Delete(pod) => {
                                state.pods.remove(&key(&pod));
                            }
                        }
                    }
                    Err(e) => {
                        // Before the first list, the poll reports it; after, the last count
                        // stands while the watcher retries.
                        if let Some(listed) = listed.take() {
                            let _ = listed.send(Err(e.to_string()));
                            return;
                        }
                        if !state.failing {
                            tracing::warn!(watch = %what, error = %e, "pod watch failed; counting from the last list until it is back");
                            state.failing = true;
                        }
                    }
                }
            }
            task_state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .stopped = true;
        });
        let watch = Watch { state, task };
        match first_list.await {
            Ok(Ok(())) => Ok(Box::new(watch)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the pod watch ended before its first list".into()),
        }
    }
}
