//! The Jobs and Pods of every ScaledJob, kept from two watches (not listed at each poll, as
//! KEDA does): Jobs and Pods that carry KEDA's `scaledjob.keda.sh/name` label, slimmed to what a
//! poll reads. Plus the Jobs a poll created that the watch has not shown yet, so the next poll
//! counts them even if it comes before their watch event: no poll creates a Job twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebb_crds::ScaledJob;
use ebb_crds::scaled_job::SCALED_JOB_NAME_LABEL;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tracing::warn;

use super::census::{self, Outcome};
use super::decision::Existing;
use super::lock;
use super::template::GENERATION_ANNOTATION;

/// Per ScaledJob (`namespace/name`), Jobs created and not yet shown by the watch, with when.
type Created = Arc<Mutex<HashMap<String, Vec<(String, Instant)>>>>;

/// A created Job the watch has not shown within this long is no longer counted from memory (it
/// was deleted before its event, or the watch lags badly: the watch is then the truth).
const UNSEEN_FOR_AT_MOST: Duration = Duration::from_secs(60);

/// The Jobs and Pods of ScaledJobs, as the watches last showed them.
pub struct JobCache {
    jobs: Store<Job>,
    pods: Store<Pod>,
    /// Per ScaledJob (`namespace/name`), the Jobs created and not yet shown by the watch.
    created: Created,
}

/// The Jobs of one ScaledJob at one poll.
pub struct Census {
    /// Its Jobs (those the ScaledJob controls), finished or not.
    pub jobs: Vec<Arc<Job>>,
    /// How many run and how many of those are pending.
    pub existing: Existing,
}

impl JobCache {
    /// Starts the two watches through `jobs` and `pods` (scoped as the controller is) and
    /// returns the cache once both have listed everything, with the task that keeps them.
    pub async fn start(
        jobs: Api<Job>,
        pods: Api<Pod>,
    ) -> Option<(Arc<Self>, tokio::task::JoinHandle<()>)> {
        let config = watcher::Config::default().labels(SCALED_JOB_NAME_LABEL);
        let (job_reader, job_writer) = reflector::store();
        let (pod_reader, pod_writer) = reflector::store();
        let job_stream =
            reflector::reflector(job_writer, watcher(jobs, config.clone()).modify(slim_job))
                .default_backoff();
        let pod_stream = reflector::reflector(pod_writer, watcher(pods, config).modify(slim_pod))
            .default_backoff();
        let created: Created = Arc::default();
        let seen = created.clone();
        let handle = tokio::spawn(async move {
            let jobs = job_stream.for_each(|e| {
                match e {
                    // A created Job the watch shows is counted from the cache from now on.
                    Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job)) => {
                        let key = format!(
                            "{}/{}",
                            job.namespace().unwrap_or_default(),
                            job.labels()
                                .get(SCALED_JOB_NAME_LABEL)
                                .cloned()
                                .unwrap_or_default()
                        );
                        let mut created = lock(&seen);
                        if let Some(list) = created.get_mut(&key) {
                            list.retain(|(name, _)| job.metadata.name.as_ref() != Some(name));
                            if list.is_empty() {
                                created.remove(&key);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "watching ScaledJobs' Jobs"),
                }
                async {}
            });
            let pods = pod_stream.for_each(|e| async move {
                if let Err(e) = e {
                    warn!(error = %e, "watching ScaledJobs' Pods");
                }
            });
            futures::join!(jobs, pods);
        });
        if job_reader.wait_until_ready().await.is_err()
            || pod_reader.wait_until_ready().await.is_err()
        {
            handle.abort();
            return None;
        }
        Some((
            Arc::new(Self {
                jobs: job_reader,
                pods: pod_reader,
                created,
            }),
            handle,
        ))
    }

    /// The Jobs `sj` controls (by owner, so a Job left by an earlier object of the same name
    /// is not counted).
    pub fn jobs_of(&self, sj: &ScaledJob) -> Vec<Arc<Job>> {
        let namespace = sj.namespace();
        let uid = sj.uid();
        self.jobs
            .state()
            .into_iter()
            .filter(|j| j.namespace() == namespace && controller_uid(j.meta()) == uid.as_deref())
            .collect()
    }

    /// Counts the Jobs of `sj` for a poll: running (not finished) ones and, of those, pending
    /// ones, judged by `pending_pod_conditions`. Jobs created earlier that the watch has not
    /// shown yet count as running and pending.
    pub fn census(&self, key: &str, sj: &ScaledJob, pending_pod_conditions: &[String]) -> Census {
        let jobs = self.jobs_of(sj);
        let namespace = sj.namespace();
        let mut pods_by_job: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for pod in self.pods.state() {
            if pod.namespace() != namespace
                || pod.labels().get(SCALED_JOB_NAME_LABEL) != Some(&sj.name_any())
            {
                continue;
            }
            if let Some(uid) = controller_uid(pod.meta()) {
                pods_by_job.entry(uid.to_string()).or_default().push(pod);
            }
        }
        let mut existing = Existing::default();
        for job in &jobs {
            if census::outcome(job) != Outcome::Running {
                continue;
            }
            existing.running += 1;
            let pods = job
                .uid()
                .and_then(|uid| pods_by_job.get(&uid))
                .map(Vec::as_slice)
                .unwrap_or_default();
            if census::pending(pods, pending_pod_conditions) {
                existing.pending += 1;
            }
        }
        let unseen = self.unseen(key);
        existing.running += unseen;
        existing.pending += unseen;
        Census { jobs, existing }
    }

    /// Notes that a poll of `key` created Job `name` (unless the watch showed it already: the
    /// store is written before the watch's handler takes this lock, so one of the two sees it).
    pub fn created(&self, key: &str, name: String) {
        let mut created = lock(&self.created);
        let namespace = key.split_once('/').map(|(ns, _)| ns).unwrap_or_default();
        if self
            .jobs
            .get(&reflector::ObjectRef::new(&name).within(namespace))
            .is_some()
        {
            return;
        }
        created
            .entry(key.to_string())
            .or_default()
            .push((name, Instant::now()));
    }

    /// Forgets what was noted for `key` (its loop stopped).
    pub fn forget(&self, key: &str) {
        lock(&self.created).remove(key);
    }

    /// The created Jobs of `key` the watch has not shown yet (and not too old to trust).
    fn unseen(&self, key: &str) -> i64 {
        let mut created = lock(&self.created);
        let Some(list) = created.get_mut(key) else {
            return 0;
        };
        list.retain(|(_, at)| at.elapsed() < UNSEEN_FOR_AT_MOST);
        let n = list.len() as i64;
        if list.is_empty() {
            created.remove(key);
        }
        n
    }
}

/// The generation of the template a Job was created from, as its annotation says.
pub fn template_generation(job: &Job) -> Option<&str> {
    job.annotations()
        .get(GENERATION_ANNOTATION)
        .map(String::as_str)
}

fn controller_uid(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<&str> {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// Keeps of a Job what a poll reads: its identity, owner, labels, template generation,
/// creation time, conditions and completion time.
fn slim_job(job: &mut Job) {
    job.metadata.managed_fields = None;
    let generation = job.annotations().get(GENERATION_ANNOTATION).cloned();
    job.metadata.annotations = generation.map(|g| [(GENERATION_ANNOTATION.to_string(), g)].into());
    job.spec = None;
    job.status = job.status.take().map(|s| JobStatus {
        conditions: s.conditions.map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| c.type_ == "Complete" || c.type_ == "Failed")
                .map(|mut c| {
                    c.message = None;
                    c
                })
                .collect()
        }),
        completion_time: s.completion_time,
        ..Default::default()
    });
}

/// Keeps of a Pod its identity, owner, labels, phase and conditions.
fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.spec = None;
    pod.status = pod.status.take().map(|s| PodStatus {
        phase: s.phase,
        conditions: s.conditions.map(|conditions| {
            conditions
                .into_iter()
                .map(|mut c| {
                    c.message = None;
                    c
                })
                .collect()
        }),
        ..Default::default()
    });
}
