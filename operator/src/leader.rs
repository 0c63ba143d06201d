//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder runs the controller
//! (and so only it writes); a standby takes over once the holder stops renewing for a lease
//! duration, or at once when the holder steps down cleanly.

use std::future::Future;
use std::time::Duration;

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

/// Whether `lease` is free for `identity` at `now`: unheld, held by `identity`, or expired.
pub fn is_free(spec: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return true;
    };
    let duration = jiff::SignedDuration::from_secs(i64::from(
        spec.lease_duration_seconds.unwrap_or(15).max(1),
    ));
    // An expiry past the end of time never comes.
    renewed
        .checked_add(duration)
        .is_ok_and(|expiry| now >= expiry)
}

/// One attempt to acquire or renew. Conflicts (another process wrote first) count as held by
/// someone else.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<Attempt, kube::Error> {
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
            if !is_free(&spec, &cfg.identity, now) {
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

/// Runs `work` while this process holds the lease, until `shutdown` resolves. `work` gets a
/// receiver that turns `true` when it must stop (leadership lost or shutting down); it is
/// started again if leadership comes back.
pub async fn run_as_leader<W, F>(
    client: Client,
    cfg: LeaseConfig,
    work: W,
    shutdown: impl Future<Output = ()>,
) where
    W: Fn(watch::Receiver<bool>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    tokio::pin!(shutdown);
    let mut running: Option<Work> = None;
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        // A renewal that hangs (a partition that drops packets) counts as a failed one, so the
        // step-down deadline below still applies.
        let attempt = match tokio::time::timeout(cfg.retry, try_acquire(&api, &cfg)).await {
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
        }
    }
    if running.is_some() {
        stop_work(&mut running).await;
        if let Err(e) = release(&api, &cfg).await {
            warn!(lease = %cfg.name, error = %e, "releasing the lease");
        }
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
    fn a_lease_is_free_when_unheld_mine_or_expired() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert!(is_free(&spec(None, None, 15), "a", now));
        assert!(is_free(&spec(Some(""), Some(999), 15), "a", now));
        assert!(is_free(&spec(Some("a"), Some(999), 15), "a", now));
        assert!(!is_free(&spec(Some("b"), Some(990), 15), "a", now));
        assert!(
            is_free(&spec(Some("b"), Some(985), 15), "a", now),
            "expired at 1000"
        );
        assert!(is_free(&spec(Some("b"), None, 15), "a", now));
    }
}
