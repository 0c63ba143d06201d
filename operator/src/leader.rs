//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder runs the controller
//! (and so only it writes); a standby takes over once the holder stops renewing for a lease
//! duration, or at once when the holder steps down cleanly.
//!
//! Expiry is judged by this process's own clock: a standby notes when it last saw the lease
//! record change and takes the lease only a whole lease duration after that, as client-go does.
//! The holder's `renewTime` is another machine's clock and is never compared with this one, so
//! clock skew between nodes cannot make two leaders.

use std::future::Future;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// This process's identity (its pod name, or host and pid).
    pub identity: String,
    /// How long a holder that stopped renewing keeps the lease.
    pub duration: Duration,
    /// How often the holder renews, and a standby retries.
    pub retry: Duration,
}

/// What [`try_acquire`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This process holds the lease (acquired or renewed).
    Held,
    /// Another process holds it.
    HeldBy(String),
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX).max(1)
}

/// What this process last saw of the lease, and when by its own clock.
#[derive(Debug, Default)]
pub struct Observed {
    /// The record last seen: holder, renew time, duration, transitions.
    record: Option<String>,
    /// When it was first seen as it is.
    since: Option<Instant>,
}

impl Observed {
    /// Notes `spec` as seen at `now` and says whether the lease is free for `identity`: unheld,
    /// held by `identity`, or held by another whose record has not changed for a whole lease
    /// duration of this process's time.
    pub fn is_free(&mut self, spec: &LeaseSpec, identity: &str, now: Instant) -> bool {
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let record = format!(
            "{holder}|{:?}|{:?}|{:?}",
            spec.renew_time.as_ref().map(|t| t.0),
            spec.lease_duration_seconds,
            spec.lease_transitions
        );
        if self.record.as_ref() != Some(&record) {
            self.record = Some(record);
            self.since = Some(now);
        }
        if holder.is_empty() || holder == identity {
            return true;
        }
        let duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(15).max(1)).unwrap_or(15),
        );
        self.since
            .is_some_and(|since| now.saturating_duration_since(since) >= duration)
    }
}

/// One attempt to acquire or renew. Conflicts (another process wrote first) count as held by
/// someone else.
pub async fn try_acquire(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    observed: &mut Observed,
) -> Result<Attempt, kube::Error> {
    let now = Timestamp::now();
    let mine = |previous: Option<&LeaseSpec>| {
        let same_holder = previous
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| h == cfg.identity);
        LeaseSpec {
            holder_identity: Some(cfg.identity.clone()),
            lease_duration_seconds: Some(seconds(cfg.duration)),
            acquire_time: if same_holder {
                previous.and_then(|s| s.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                previous.and_then(|s| s.lease_transitions).unwrap_or(0)
                    + i32::from(!same_holder && previous.is_some()),
            ),
            ..Default::default()
        }
    };
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(mine(None)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    Ok(Attempt::HeldBy("another process".into()))
                }
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            if !observed.is_free(&spec, &cfg.identity, Instant::now()) {
                return Ok(Attempt::HeldBy(spec.holder_identity.unwrap_or_default()));
            }
            lease.spec = Some(mine(Some(&spec)));
            // The resourceVersion read above makes this a compare-and-swap.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    Ok(Attempt::HeldBy("another process".into()))
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Gives the lease up so a standby can take over at once.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), kube::Error> {
    if let Some(mut lease) = api.get_opt(&cfg.name).await? {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() == Some(cfg.identity.as_str()) {
            spec.holder_identity = None;
            spec.renew_time = None;
            api.replace(&cfg.name, &PostParams::default(), &lease)
                .await?;
        }
    }
    Ok(())
}

/// Why [`run_as_leader`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The leader's work ended (or panicked) without being asked to stop: this replica held
    /// the lease while doing nothing, so it stepped down.
    #[error("the leader's work ended while it held the lease {lease}; stepped down")]
    WorkEnded {
        /// The Lease.
        lease: String,
    },
}

/// Runs `work` while this process holds the lease, until `shutdown` resolves. `work` gets a
/// receiver that turns `true` when it must stop (leadership lost or shutting down); it is
/// started again if leadership comes back. Work that ends without being asked makes this
/// process release the lease and return an error, so that its supervisor (Kubernetes)
/// restarts it rather than let it hold the lease doing nothing.
pub async fn run_as_leader<W, F>(
    client: Client,
    cfg: LeaseConfig,
    work: W,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LeaderError>
where
    W: Fn(watch::Receiver<bool>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    tokio::pin!(shutdown);
    let mut running: Option<Work> = None;
    let mut last_renewal = tokio::time::Instant::now();
    let mut observed = Observed::default();
    loop {
        // A renewal that hangs (a partition that drops packets) counts as a failed one, so the
        // step-down deadline below still applies.
        let attempt =
            match tokio::time::timeout(cfg.retry, try_acquire(&api, &cfg, &mut observed)).await {
                Ok(attempt) => attempt.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "no answer from the apiserver within {:?}",
                    cfg.retry
                )),
            };
        match (&attempt, running.is_some()) {
            (Ok(Attempt::Held), false) => {
                info!(lease = %cfg.name, identity = %cfg.identity, "became the leader");
                let (stop, stopped) = watch::channel(false);
                running = Some(Work {
                    stop,
                    handle: Some(tokio::spawn(work(stopped))),
                });
                last_renewal = tokio::time::Instant::now();
            }
            (Ok(Attempt::Held), true) => last_renewal = tokio::time::Instant::now(),
            (Ok(Attempt::HeldBy(holder)), true) => {
                warn!(lease = %cfg.name, holder = %holder, "lost the lease");
                stop_work(&mut running).await;
            }
            (Ok(Attempt::HeldBy(_)), false) => {}
            (Err(e), _) => {
                warn!(lease = %cfg.name, error = %e, "lease renewal failed");
                // Without a renewal for a whole lease duration another process may hold it:
                // stop writing before that can happen.
                if running.is_some()
                    && last_renewal.elapsed() >= cfg.duration.saturating_sub(cfg.retry)
                {
                    warn!(lease = %cfg.name, "stepping down: could not renew in time");
                    stop_work(&mut running).await;
                }
            }
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(cfg.retry) => {}
            () = work_ended(&mut running) => {
                warn!(lease = %cfg.name, "the leader's work ended unasked; stepping down");
                drop(running.take());
                if let Err(e) = release(&api, &cfg).await {
                    warn!(lease = %cfg.name, error = %e, "releasing the lease");
                }
                return Err(LeaderError::WorkEnded { lease: cfg.name.clone() });
            }
        }
    }
    if running.is_some() {
        stop_work(&mut running).await;
        if let Err(e) = release(&api, &cfg).await {
            warn!(lease = %cfg.name, error = %e, "releasing the lease");
        }
    }
    Ok(())
}

/// Resolves when the running work's task has finished (returned or panicked) on its own;
/// never while no work runs.
async fn work_ended(running: &mut Option<Work>) {
    match running.as_mut().and_then(|w| w.handle.as_mut()) {
        Some(handle) => {
            let _ = handle.await;
        }
        None => std::future::pending().await,
    }
}

/// The pod label that marks the leader, so that the metrics API's Service routes to the replica
/// whose scale loops hold the readings.
pub const LEADER_LABEL: &str = "ebb.sh/leader";

/// Sets [`LEADER_LABEL`] on this replica's own pod (`POD_NAME` in `namespace`); logs a failure
/// and goes on (outside a pod there is nothing to label).
pub async fn mark_pod(client: &Client, namespace: &str, pod: Option<&str>, leader: bool) {
    let Some(pod) = pod.filter(|p| !p.is_empty()) else {
        return;
    };
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({"metadata": {"labels": {LEADER_LABEL: leader.to_string()}}});
    if let Err(e) = pods
        .patch(
            pod,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        warn!(pod, error = %e, "labelling this replica's pod");
    }
}

/// Points `apiservice`'s caBundle at this replica's generated CA, as the new leader whose pod the
/// APIService's Service is about to select. Retried a few times, then logged: until it succeeds
/// the aggregator cannot verify this replica and the HPA sees no metrics.
pub async fn set_ca_bundle(client: &Client, apiservice: &str, ca_pem: &str) {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=5 {
        match crate::metrics_api::set_ca_bundle(client, apiservice, ca_pem).await {
            Ok(()) => return,
            Err(e) if attempt == 5 => {
                warn!(apiservice, error = %e, "setting the APIService's caBundle");
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// The leader's work. Dropped without [`stop_work`] (the election task itself aborted), it
/// aborts the work too, so nothing keeps writing without the lease.
struct Work {
    stop: watch::Sender<bool>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Work {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// Asks the work to stop and waits for it.
async fn stop_work(running: &mut Option<Work>) {
    if let Some(mut work) = running.take() {
        let _ = work.stop.send(true);
        if let Some(handle) = work.handle.take() {
            let _ = handle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: Option<i64>, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            renew_time: renewed.map(|s| MicroTime(Timestamp::from_second(s).unwrap())),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_is_free_when_unheld_mine_or_unchanged_for_a_lease_duration() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut seen = Observed::default();
        assert!(seen.is_free(&spec(None, None, 15), "a", t0));
        assert!(seen.is_free(&spec(Some(""), Some(999), 15), "a", t0));
        assert!(seen.is_free(&spec(Some("a"), Some(999), 15), "a", t0));
        let held = spec(Some("b"), Some(990), 15);
        assert!(!seen.is_free(&held, "a", t0));
        assert!(!seen.is_free(&held, "a", t0 + s(14)));
        assert!(seen.is_free(&held, "a", t0 + s(15)), "unchanged for 15 s");
        // A renewal seen starts the count again.
        assert!(!seen.is_free(&spec(Some("b"), Some(1_005), 15), "a", t0 + s(16)));
        assert!(!seen.is_free(&spec(Some("b"), Some(1_005), 15), "a", t0 + s(30)));
        assert!(seen.is_free(&spec(Some("b"), Some(1_005), 15), "a", t0 + s(31)));
    }

    /// The holder's clock is 30 s off this one's, either way: its renewTime says nothing about
    /// expiry here. Judged by renewTime (as ebb once did), a holder 30 s behind looked expired
    /// to every standby at once (two leaders), and one 30 s ahead kept the lease 30 s past its
    /// death.
    #[test]
    fn a_holder_whose_clock_is_skewed_is_judged_by_this_clock() {
        let here = Timestamp::now().as_second();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        for skew in [-30, 30] {
            let mut seen = Observed::default();
            let mut renew = here + skew;
            // The holder renews every 5 s by its own clock; the standby never takes over.
            for tick in 0..6u64 {
                renew += 5;
                assert!(
                    !seen.is_free(&spec(Some("b"), Some(renew), 15), "a", t0 + s(5 * tick)),
                    "skew {skew}: taken at {} s while renewed",
                    5 * tick
                );
            }
            // The holder dies after its last renewal at 25 s: free 15 s later, not before.
            assert!(!seen.is_free(&spec(Some("b"), Some(renew), 15), "a", t0 + s(39)));
            assert!(
                seen.is_free(&spec(Some("b"), Some(renew), 15), "a", t0 + s(40)),
                "skew {skew}: still held 15 s after the last renewal seen"
            );
        }
    }
}
