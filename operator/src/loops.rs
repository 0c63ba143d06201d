//! The running scale loops, one per ScaledObject this replica polls.
//!
//! One handle, shared three ways: the controller starts and stops loops, each loop's supervisor
//! restarts a loop that ended or panicked, and the metrics API reads a metric live through a
//! running loop's scalers. Nothing else about the controller is visible from here.
//!
//! A loop runs inside a supervisor task. When the loop panics (a bug in a scaler, say) or ends
//! without being asked, the supervisor counts it (`ebb_scale_loop_restarts_total`), reports it
//! in an Event, waits a backoff (1 s doubling to 60 s; back to 1 s once a loop ran 5 minutes)
//! and nudges the controller, whose reconcile starts the loop again from the object as it is
//! then. A restarted loop reads its replica count and status afresh, so nothing it remembered
//! is trusted across the restart.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_scalers::MetricSpec;
use futures::FutureExt;
use futures::channel::mpsc::UnboundedSender;
use futures::future::{BoxFuture, Shared};
use kube::Resource;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::events::{EventType, Note};
use crate::scale::nudge::{Nudge, Nudger};
use crate::scale::poll::{self, PolledTrigger, ReadError};
use crate::scale::task::{POLL_TIMEOUT, ScaleLoop};

/// The first restart of a loop waits this long; each further one twice as long.
const RESTART_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait before a restart.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A loop that ran this long before it ended starts the backoff afresh.
const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(300);
/// How long stopping a loop waits for it to reach a point where it may stop (it never stops in
/// the middle of a write); then it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// One live read of a metric, awaited by every request that asks for it meanwhile.
type LiveRead = Shared<BoxFuture<'static, Result<f64, ReadError>>>;

/// A running loop (or its supervisor, waiting to have it restarted).
struct Entry {
    /// Tells this entry apart from a later loop of the same object.
    id: u64,
    /// What the loop was started from (see the controller's signature).
    signature: String,
    /// Its scalers, whose metric specs shape the HPA and serve live reads.
    triggers: Vec<PolledTrigger>,
    /// False once the loop has ended and its supervisor waits to have it restarted.
    running: bool,
    /// Turns true when the loop is to stop.
    stop: watch::Sender<bool>,
    /// The supervisor.
    handle: JoinHandle<()>,
}

/// How a loop ended without being asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEnd {
    /// It panicked.
    Panicked,
    /// It returned.
    Returned,
}

impl LoopEnd {
    /// The `reason` label of `ebb_scale_loop_restarts_total`.
    pub fn label(self) -> &'static str {
        match self {
            LoopEnd::Panicked => "panic",
            LoopEnd::Returned => "ended",
        }
    }
}

#[derive(Default)]
struct Inner {
    entries: Mutex<HashMap<String, Entry>>,
    /// Live reads in flight, by `namespace/name/metric`.
    flights: Mutex<HashMap<String, LiveRead>>,
    /// Restarts in a row, by object.
    restarts: Mutex<HashMap<String, u32>>,
    /// Where nudges go while a controller listens.
    nudges: Mutex<Option<UnboundedSender<Nudge>>>,
    next_id: AtomicU64,
}

/// The running scale loops. Cheap to clone; every clone is the same set.
#[derive(Clone, Default)]
pub struct Loops {
    inner: Arc<Inner>,
}

impl Loops {
    /// Nudges from loops and supervisors go to `sender` from now on (None: nobody listens).
    pub fn set_nudges(&self, sender: Option<UnboundedSender<Nudge>>) {
        *lock(&self.inner.nudges) = sender;
    }

    /// A nudger for `namespace/name`, sending where nudges go now.
    pub fn nudger(&self, namespace: &str, name: &str) -> Nudger {
        Nudger::new(namespace, name, lock(&self.inner.nudges).clone())
    }

    /// Starts `scale_loop` as the loop of `key` (`namespace/name`), under a supervisor. The
    /// caller stops any loop `key` had first.
    pub fn start(&self, key: &str, signature: String, scale_loop: ScaleLoop) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (stop, stopped) = watch::channel(false);
        let triggers = scale_loop.triggers.clone();
        // The loop on the heap, once: a task's future holds its arguments twice (the call's
        // and the body's copies), and every idle object has a task.
        let handle = tokio::spawn(supervise(
            self.clone(),
            key.to_string(),
            id,
            Box::new(scale_loop),
            stopped,
        ));
        let old = lock(&self.inner.entries).insert(
            key.to_string(),
            Entry {
                id,
                signature,
                triggers,
                running: true,
                stop,
                handle,
            },
        );
        if let Some(old) = old {
            // The caller stopped it; an entry left over is aborted, never left running.
            old.handle.abort();
        }
    }

    /// Stops the loop of `key`, if any, and waits for it to end: a loop stops between polls or
    /// while waiting for a source, never halfway through writing the status or `/scale`.
    pub async fn stop(&self, key: &str) {
        let Some(entry) = lock(&self.inner.entries).remove(key) else {
            return;
        };
        let _ = entry.stop.send(true);
        let mut handle = entry.handle;
        if tokio::time::timeout(STOP_GRACE, &mut handle).await.is_err() {
            warn!(scaledobject = %key, "the scale loop did not stop in time; aborted");
            handle.abort();
        }
    }

    /// Stops every loop at once, without waiting (the controller is ending or lost its lease,
    /// and nothing may write after it); returns their keys.
    pub fn stop_all(&self) -> Vec<String> {
        let entries: Vec<(String, Entry)> = lock(&self.inner.entries).drain().collect();
        lock(&self.inner.restarts).clear();
        entries
            .into_iter()
            .map(|(key, entry)| {
                let _ = entry.stop.send(true);
                entry.handle.abort();
                key
            })
            .collect()
    }

    /// Forgets the restart count of `key` (the object is gone).
    pub fn forget(&self, key: &str) {
        lock(&self.inner.restarts).remove(key);
    }

    /// The running loop of `key`: the signature it was started from and the metrics its HPA
    /// should have now. None when no loop runs (or one waits to be restarted).
    pub fn running(&self, key: &str) -> Option<(String, Vec<MetricSpec>)> {
        lock(&self.inner.entries)
            .get(key)
            .filter(|e| e.running)
            .map(|e| {
                let specs = e
                    .triggers
                    .iter()
                    .flat_map(|t| t.scaler.metric_specs())
                    .collect();
                (e.signature.clone(), specs)
            })
    }

    /// Number of running loops.
    pub fn len(&self) -> usize {
        lock(&self.inner.entries)
            .values()
            .filter(|e| e.running)
            .count()
    }

    /// Whether no loop runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads `metric` of a ScaledObject straight from its running loop's scaler, within the
    /// poll timeout. Concurrent reads of one metric share one query. None when no running loop
    /// serves it. The HPA asks in lower case; the scaler knows the name as it made it.
    pub async fn read_live(
        &self,
        namespace: &str,
        scaled_object: &str,
        metric: &str,
    ) -> Option<Result<f64, ReadError>> {
        let key = format!("{namespace}/{scaled_object}/{metric}");
        let flight = {
            let mut flights = lock(&self.inner.flights);
            match flights.get(&key) {
                Some(flight) => flight.clone(),
                None => {
                    let (scaler, metric) = lock(&self.inner.entries)
                        .get(&format!("{namespace}/{scaled_object}"))
                        .filter(|e| e.running)?
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
        let mut flights = lock(&self.inner.flights);
        if flights.get(&key).is_some_and(|f| f.ptr_eq(&flight)) {
            flights.remove(&key);
        }
        Some(result)
    }

    /// The entry `id` of `key` ended: keeps it (not running) while its supervisor waits, and
    /// returns how long to wait. None when the entry was replaced or removed meanwhile.
    fn ended(&self, key: &str, id: u64, ran: Duration) -> Option<Duration> {
        let mut entries = lock(&self.inner.entries);
        let entry = entries.get_mut(key).filter(|e| e.id == id)?;
        entry.running = false;
        let mut restarts = lock(&self.inner.restarts);
        let count = restarts.entry(key.to_string()).or_insert(0);
        if ran >= RESTART_BACKOFF_RESET {
            *count = 0;
        }
        let wait = restart_backoff(*count);
        *count = count.saturating_add(1);
        Some(wait)
    }

    /// Removes the entry `id` of `key` if it is still there.
    fn remove(&self, key: &str, id: u64) {
        let mut entries = lock(&self.inner.entries);
        if entries.get(key).is_some_and(|e| e.id == id) {
            entries.remove(key);
        }
    }
}

/// The wait before restart number `count` (0 for the first): 1 s doubling, at most 60 s.
pub fn restart_backoff(count: u32) -> Duration {
    RESTART_BACKOFF_FIRST
        .saturating_mul(2u32.saturating_pow(count.min(16)))
        .min(RESTART_BACKOFF_MAX)
}

/// Runs one loop until it is asked to stop; if it ends otherwise, has it restarted.
async fn supervise(
    loops: Loops,
    key: String,
    id: u64,
    scale_loop: Box<ScaleLoop>,
    stopped: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let end = match AssertUnwindSafe(scale_loop.run(stopped.clone()))
        .catch_unwind()
        .await
    {
        Ok(()) => LoopEnd::Returned,
        Err(_) => LoopEnd::Panicked,
    };
    if *stopped.borrow() {
        return;
    }
    let Some(wait) = loops.ended(&key, id, started.elapsed()) else {
        return;
    };
    scale_loop.metrics.count_loop_restart(end.label());
    // The panic's own message is on stderr (the panic hook); it is not repeated in the Event,
    // which anyone who can read Events sees.
    warn!(scaledobject = %key, reason = end.label(), wait_ms = wait.as_millis() as u64, "the scale loop ended; restarting it");
    let note = Note {
        type_: EventType::Warning,
        reason: "ScaleLoopRestarted",
        action: "Scale",
        note: match end {
            LoopEnd::Panicked => format!(
                "The scale loop panicked; it is started again in {} s",
                wait.as_secs()
            ),
            LoopEnd::Returned => format!(
                "The scale loop ended; it is started again in {} s",
                wait.as_secs()
            ),
        },
    };
    match Box::pin(
        scale_loop
            .events
            .publish(&note, &scale_loop.so.get().object_ref(&())),
    )
    .await
    {
        Ok(()) => scale_loop.metrics.count_write("event"),
        Err(e) => warn!(scaledobject = %key, error = %e, "publishing an event"),
    }
    let mut stopped = stopped;
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        _ = stopped.wait_for(|stop| *stop) => return,
    }
    loops.remove(&key, id);
    scale_loop.nudge.reconcile();
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use ebb_scalers::{MetricTargetType, MetricValue, MetricsAndActivity, Scaler, ScalerError};

    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, D, E, F>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every ScaledObject has a task, idle or not, and its future lives as long as the object:
    /// a large await inside the loop (an Event's publish is about 4 KiB) is boxed, not carried
    /// in every idle object's state. (1.7 KiB in a debug build when this was written, from
    /// 5.6 KiB before the publish was boxed.)
    #[test]
    fn an_idle_loop_task_stays_small() {
        let size = future_size(supervise);
        let limit = 2560;
        assert!(
            size <= limit,
            "the scale loop's task future is {size} bytes (at most {limit} expected)"
        );
    }

    /// Puts an entry for `key` whose loop does nothing, as if a loop with `triggers` ran.
    pub(crate) fn insert_idle(loops: &Loops, key: &str, triggers: Vec<PolledTrigger>) {
        let (stop, _) = watch::channel(false);
        lock(&loops.inner.entries).insert(
            key.to_string(),
            Entry {
                id: loops.inner.next_id.fetch_add(1, Ordering::Relaxed),
                signature: String::new(),
                triggers,
                running: true,
                stop,
                handle: tokio::spawn(std::future::pending()),
            },
        );
    }

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
    async fn concurrent_live_reads_of_one_metric_share_one_query() {
        let loops = Loops::default();
        let reads = Arc::new(AtomicUsize::new(0));
        insert_idle(
            &loops,
            "shop/orders",
            vec![PolledTrigger {
                index: 0,
                name: None,
                scaler: Arc::new(Slow(reads.clone())),
            }],
        );
        let answers = futures::future::join_all(
            (0..10).map(|_| loops.read_live("shop", "orders", "s0-slow")),
        )
        .await;
        assert!(answers.iter().all(|a| *a == Some(Ok(7.0))), "{answers:?}");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // Once answered, the next request reads again.
        assert_eq!(
            loops.read_live("shop", "orders", "s0-slow").await,
            Some(Ok(7.0))
        );
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // Unknown object or metric: nothing to read.
        assert_eq!(loops.read_live("shop", "other", "s0-slow").await, None);
        assert_eq!(loops.read_live("shop", "orders", "s1-x").await, None);
        // A loop waiting to be restarted serves no live reads.
        lock(&loops.inner.entries)
            .get_mut("shop/orders")
            .unwrap()
            .running = false;
        assert_eq!(loops.read_live("shop", "orders", "s0-slow").await, None);
        assert!(loops.running("shop/orders").is_none());
    }

    #[tokio::test]
    async fn a_loop_that_ended_backs_off_more_each_time_in_a_row() {
        let loops = Loops::default();
        insert_idle(&loops, "shop/orders", Vec::new());
        let id = lock(&loops.inner.entries)["shop/orders"].id;
        let short = Duration::from_secs(1);
        assert_eq!(
            loops.ended("shop/orders", id, short),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            loops.ended("shop/orders", id, short),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            loops.ended("shop/orders", id, short),
            Some(Duration::from_secs(4))
        );
        // A loop that ran long starts afresh.
        assert_eq!(
            loops.ended("shop/orders", id, RESTART_BACKOFF_RESET),
            Some(Duration::from_secs(1))
        );
        // An entry replaced meanwhile is not the ended loop's to touch.
        assert_eq!(loops.ended("shop/orders", id + 1, short), None);
        loops.remove("shop/orders", id);
        assert!(lock(&loops.inner.entries).is_empty());
    }

    #[test]
    fn restarts_back_off_from_one_second_to_a_minute() {
        let waits: Vec<u64> = (0..9).map(|n| restart_backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(restart_backoff(u32::MAX), RESTART_BACKOFF_MAX);
    }
}
