//! The scale loop of one ScaledObject: a task that polls at the object's interval, decides,
//! writes `/scale` only when the decision changes the count, and keeps the status current.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_crds::condition::{CONDITION_ACTIVE, CONDITION_FALLBACK, CONDITION_READY};
use ebb_crds::scaled_object::{
    ANNOTATION_FORCE_ACTIVATION, ANNOTATION_PAUSED_SCALE_IN, ANNOTATION_PAUSED_SCALE_OUT,
    HealthStatus, TriggerActivityStatus,
};
use ebb_scalers::MetricSpec;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::admin::{Metrics, SeriesKey};
use crate::events::{EventType, Events, Note};
use crate::metric_store::{MetricStore, Published};
use crate::scale::budget;
use crate::scale::composite::Composite;
use crate::scale::decision::{self, Activity, Decision, Observation, Settings, TriggerOutcome};
use crate::scale::evaluate::{self, Evaluation, Inputs};
use crate::scale::fallback;
use crate::scale::nudge::Nudger;
use crate::scale::object::LoopObject;
use crate::scale::poll::{self, PolledTrigger, TriggerResult};
use crate::scale::push::{self, Pushes};
use crate::scale::schedule;
use crate::status::{Status, StatusCell, Wanted};
use crate::target::Target;
use crate::target_watch::{Seen, TargetGeneration};

/// Longest a metric read may take.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// While a trigger keeps failing, its scalers are rebuilt (authentication read again, so a
/// rotated Secret takes effect) at most this often.
pub const REBUILD_AFTER: Duration = Duration::from_secs(30);

/// Everything a scale loop needs, fixed for one generation of the object.
pub struct ScaleLoop {
    /// The object as it was when the loop started, or the watch cache's copy of it once the
    /// two differ only in status.
    pub so: LoopObject,
    /// Its scale target.
    pub target: Target,
    /// Its scalers.
    pub triggers: Vec<PolledTrigger>,
    /// Its compiled `scalingModifiers`.
    pub composite: Option<Composite>,
    /// Where status is written.
    pub api: Api<ScaledObject>,
    /// Events.
    pub events: Arc<Events>,
    /// The object's status cell, through which the controller writes too.
    pub status: Arc<StatusCell>,
    /// Where readings are published for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Where answers are published for the external metrics API.
    pub store: Arc<MetricStore>,
    /// Asks the controller to reshape the HPA or rebuild the scalers.
    pub nudge: Nudger,
    /// Rebuild the scalers this long after the loop starts (a bound service-account token
    /// nearing its expiry), if set.
    pub rebuild_after: Option<Duration>,
    /// What the target's metadata watch says: whether a resting count still holds.
    pub generation: TargetGeneration,
    /// Its share of its servers' budgets of adaptive activation checks, when every trigger is
    /// cheap to read (see [`crate::scale::budget`]).
    pub activation: Option<budget::Seat>,
}

/// The decision's settings for `so`, defaults applied.
pub fn settings(so: &ScaledObject) -> Settings {
    let spec = &so.spec;
    Settings {
        min_replicas: spec.min_replicas(),
        idle_replicas: spec.idle_replica_count,
        cooldown: SignedDuration::from_secs(i64::from(spec.cooldown_period_seconds())),
        initial_cooldown: SignedDuration::from_secs(i64::from(
            spec.initial_cooldown_period_seconds(),
        )),
        paused_scale_in: pause_annotation(so, ANNOTATION_PAUSED_SCALE_IN),
        paused_scale_out: pause_annotation(so, ANNOTATION_PAUSED_SCALE_OUT),
    }
}

/// Whether an annotation reads as true with Go's `ParseBool`, as KEDA reads
/// `autoscaling.keda.sh/force-activation` (`true`, `True`, `TRUE`, `t`, `1`).
pub fn annotation(so: &ScaledObject, key: &str) -> bool {
    so.annotations()
        .get(key)
        .is_some_and(|v| ebb_scalers::trigger::parse_bool(v) == Some(true))
}

/// Whether a pause annotation (`paused`, `paused-scale-in`, `paused-scale-out`) pauses: it is
/// set and does not read as false with Go's `ParseBool`, as KEDA reads `paused` (a value that
/// is not a boolean pauses).
pub fn pause_annotation(so: &ScaledObject, key: &str) -> bool {
    so.annotations()
        .get(key)
        .is_some_and(|v| ebb_scalers::trigger::parse_bool(v) != Some(false))
}

/// How stale the stored `lastActiveTime` may get while the object stays active: a tenth of the
/// cooldown, at least one polling interval, at most a minute. After a restart, a scale-down can
/// come at most this much early.
pub fn last_active_refresh(cooldown: SignedDuration, interval: SignedDuration) -> SignedDuration {
    let tenth = SignedDuration::from_secs(cooldown.as_secs() / 10);
    tenth.min(SignedDuration::from_secs(60)).max(interval)
}

/// The scalers' metric specs, in trigger order.
fn specs_of(triggers: &[PolledTrigger]) -> Vec<MetricSpec> {
    triggers
        .iter()
        .flat_map(|t| t.scaler.metric_specs())
        .collect()
}

/// Each External metric's target, by name (what a fallback value is computed from).
fn targets_of(specs: &[MetricSpec]) -> BTreeMap<String, (f64, ebb_scalers::MetricTargetType)> {
    specs
        .iter()
        .filter_map(|s| match s {
            MetricSpec::External {
                name,
                target,
                target_type,
            } => Some((name.clone(), (*target, *target_type))),
            MetricSpec::Resource { .. } => None,
        })
        .collect()
}

/// What was last written to the status by this loop.
struct Stored {
    last_active: Option<Timestamp>,
    failures: BTreeMap<String, i32>,
    activity: BTreeMap<String, bool>,
}

impl ScaleLoop {
    /// Runs until `stop` turns true (or its sender goes). It stops only between polls or while
    /// waiting for a source, never halfway through writing the status or `/scale`.
    pub async fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        // Dropped before the loop: an idle loop holds no copy of its object of its own.
        let so = self.so.get();
        let spec = &so.spec;
        let interval = schedule::polling_interval(spec);
        let settings = settings(&so);
        let force_activation = annotation(&so, ANNOTATION_FORCE_ACTIVATION);
        let refresh = last_active_refresh(
            settings.cooldown,
            SignedDuration::try_from(interval).unwrap_or(SignedDuration::from_secs(30)),
        );
        let created = so
            .meta()
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        // What the status says, as the loop starts (in a block of its own: the copy of the
        // status is not kept for the loop's life).
        let mut stored = {
            let status = so.status.clone().unwrap_or_default();
            Stored {
                last_active: status.last_active_time.as_ref().map(|t| t.0),
                failures: status
                    .health
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.number_of_failures.unwrap_or(0)))
                    .collect(),
                activity: status
                    .triggers_activity
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.is_active))
                    .collect(),
            }
        };
        let mut last_active = stored.last_active;
        let mut failures = stored.failures.clone();
        let namespace = so.namespace().unwrap_or_default();
        let name = so.name_any();
        let started = Instant::now();
        let mut rebuild_requested = false;
        let mut specs = specs_of(&self.triggers);
        let mut targets = targets_of(&specs);

        let uid = so.uid().unwrap_or_default();
        // Checked by the controller before the loop starts.
        let activation_interval = schedule::activation_polling(
            so.annotations()
                .get(schedule::ANNOTATION_ACTIVATION_POLLING)
                .map(String::as_str),
            interval,
        )
        .unwrap_or(None);
        let resting_count = settings.idle_replicas.unwrap_or(0);
        // The target's replica count as last read or written, when, and what its watch said
        // then.
        let mut known: Option<(i32, Instant, Seen)> = None;
        let mut ticks = tokio::time::interval_at(
            schedule::on_grid(
                tokio::time::Instant::now() + schedule::first_poll_delay(&uid, interval),
                schedule::grid_epoch(),
            ),
            interval,
        );
        // A poll late by more than a few milliseconds is followed by the next one due on the
        // same grid, not one interval after it.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // The first poll, within seconds of the start (none when the phase comes first).
        let mut early = Some(schedule::on_grid(
            tokio::time::Instant::now() + schedule::early_poll_delay(&uid, interval),
            schedule::grid_epoch(),
        ));
        // The early poll made, when it was: the phase's tick just after it is left out.
        let mut early_made = None;
        let mut activation_ticks = activation_interval.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        // Without the annotation, adaptive checks within the servers' budgets, at a phase of
        // the object's own.
        let adaptive = self
            .activation
            .as_ref()
            .filter(|_| activation_interval.is_none());
        // On the poll grid: checks due in the same step wake the process once, and their
        // reads go out together on the shared connection.
        let mut next_check = adaptive.map(|seat| {
            let every = seat.interval(interval).unwrap_or(interval);
            schedule::on_grid(
                tokio::time::Instant::now() + schedule::first_poll_delay(&uid, every),
                schedule::grid_epoch(),
            )
        });
        // A negative reading is reported once per loop, not at every poll.
        let mut warned_negative = false;
        // `external-push` triggers' activity streams, open for the loop's life.
        let mut pushes = Pushes::open(&self.triggers);
        let object_key = key(&so);
        // Credentials that expire (bound tokens) are renewed by building the scalers again.
        let renew_at = self
            .rebuild_after
            .map(|after| tokio::time::Instant::now() + after);
        drop(so);
        loop {
            // Not known yet (before the first poll) counts as at rest: the first check may
            // come before the first poll.
            let at_rest = known.is_none_or(|(n, _, _)| n <= resting_count);
            let wake = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => Wake::Stop,
                scheduled = ticks.tick() => Wake::Poll(scheduled),
                () = async { if let Some(at) = early { tokio::time::sleep_until(at).await } }, if early.is_some() => Wake::Poll(early.unwrap_or_else(tokio::time::Instant::now)),
                // The fast activation path: a check between polls while at rest.
                Some(_) = async { Some(activation_ticks.as_mut()?.tick().await) }, if at_rest && activation_ticks.is_some() => Wake::Check,
                // Adaptive checks while at rest.
                () = async { if let Some(at) = next_check { tokio::time::sleep_until(at).await } }, if at_rest && next_check.is_some() => Wake::Adaptive,
                // A push: poll now, whatever the interval.
                Some(pushed) = pushes.next(&object_key), if pushes.any() => Wake::Push(pushed),
                () = async { if let Some(at) = renew_at { tokio::time::sleep_until(at).await } }, if renew_at.is_some() && !rebuild_requested => Wake::Renew,
            };
            let results = match wake {
                Wake::Stop => return,
                Wake::Renew => {
                    rebuild_requested = true;
                    info!(scaledobject = %object_key, "renewing bound service-account tokens");
                    self.nudge.rebuild();
                    continue;
                }
                Wake::Poll(scheduled) => {
                    if early == Some(scheduled) {
                        early_made = early;
                    } else if schedule::skips_tick(early_made, scheduled, interval) {
                        continue;
                    }
                    // Whichever came first, the early poll is not made after another.
                    early = None;
                    let lag = scheduled.elapsed();
                    self.metrics.observe_poll_lag(lag);
                    self.metrics.record_loop_latency(&namespace, &name, lag);
                    self.so.follow_cache();
                    let poll_started = Instant::now();
                    let Some(results) =
                        until_stopped(&mut stop, poll::poll(&self.triggers, POLL_TIMEOUT)).await
                    else {
                        return;
                    };
                    self.metrics.observe_poll_duration(poll_started.elapsed());
                    results
                }
                // The budget's interval now (its server's objects come and go); with no room,
                // no check, and a look again one pollingInterval later.
                Wake::Adaptive => {
                    let every = adaptive.and_then(|seat| seat.interval(interval));
                    next_check = Some(schedule::on_grid(
                        tokio::time::Instant::now() + every.unwrap_or(interval),
                        schedule::grid_epoch(),
                    ));
                    if every.is_none() {
                        continue;
                    }
                    let Some(results) =
                        until_stopped(&mut stop, poll::poll(&self.triggers, POLL_TIMEOUT)).await
                    else {
                        return;
                    };
                    self.metrics.count_activation_check();
                    if !results.iter().any(|r| r.outcome == TriggerOutcome::Active) {
                        continue;
                    }
                    results
                }
                // Only a check that finds a trigger active goes on to a full poll (so
                // failures, fallback and status keep the pollingInterval's pace).
                Wake::Check => {
                    let Some(results) =
                        until_stopped(&mut stop, poll::poll(&self.triggers, POLL_TIMEOUT)).await
                    else {
                        return;
                    };
                    if !results.iter().any(|r| r.outcome == TriggerOutcome::Active) {
                        continue;
                    }
                    results
                }
                Wake::Push(pushed) => {
                    let Some(mut results) =
                        until_stopped(&mut stop, poll::poll(&self.triggers, POLL_TIMEOUT)).await
                    else {
                        return;
                    };
                    push::apply(&mut results, &pushed);
                    results
                }
            };
            let so = self.so.get();
            let spec = &so.spec;
            self.record_series(&so, &results);
            if !warned_negative
                && let Some((metric, value)) = results
                    .iter()
                    .flat_map(|r| &r.readings)
                    .find_map(|r| r.clamped.map(|v| (r.name.clone(), v)))
            {
                warned_negative = true;
                self.event(
                    EventType::Warning,
                    "NegativeMetricValue",
                    format!("metric {metric} read {value}; a negative value counts as 0"),
                )
                .await;
            }

            // A scaler that learns its metrics late (an external plugin) reshapes the HPA.
            let now_specs = specs_of(&self.triggers);
            if now_specs != specs {
                specs = now_specs;
                targets = targets_of(&specs);
                self.nudge.reconcile();
            }

            let any_failed = results.iter().any(|r| r.outcome == TriggerOutcome::Failed);
            let trusted = known
                .filter(|(n, at, seen)| {
                    schedule::trust_known_replicas(
                        at.elapsed(),
                        *n <= resting_count,
                        any_failed,
                        schedule::Watched::of(*seen, self.generation.now()),
                    )
                })
                .map(|(n, _, _)| n);
            let current = match trusted {
                Some(n) => n,
                None => {
                    let seen = self.generation.now();
                    match Box::pin(self.read_replicas()).await {
                        Some(n) => {
                            known = Some((n, Instant::now(), seen));
                            n
                        }
                        None => continue,
                    }
                }
            };
            let mut evaluation = evaluate::evaluate(
                &Inputs {
                    results: &results,
                    targets: &targets,
                    fallback: spec.fallback.as_ref(),
                    composite: self.composite.as_ref(),
                    current_replicas: current,
                    force_activation,
                },
                &mut failures,
            );
            if !evaluation.new_errors.is_empty() {
                // Once per outage of a metric, where KEDA publishes one at every failed poll.
                self.event(
                    EventType::Warning,
                    "KEDAScalerFailed",
                    short(&evaluation.new_errors.join("; ")),
                )
                .await;
            }
            self.store.publish(
                &namespace,
                &name,
                Published {
                    at: Instant::now(),
                    fresh_for: interval * 2 + POLL_TIMEOUT,
                    reread_after: reread_after(spec, &results, &evaluation, interval),
                    answers: std::mem::take(&mut evaluation.answers),
                },
            );

            let now = Timestamp::now();
            let observe = |current_replicas| Observation {
                current_replicas,
                activity: evaluation.activity,
                last_active,
                created,
                now,
            };
            let mut current = current;
            let mut decided = decision::decide(&settings, &observe(current));
            // A write is decided from a count just read, never from a remembered one.
            if decided.write().is_some_and(|r| r != current) && trusted.is_some() {
                let seen = self.generation.now();
                let Some(n) = Box::pin(self.read_replicas()).await else {
                    continue;
                };
                known = Some((n, Instant::now(), seen));
                current = n;
                decided = decision::decide(&settings, &observe(current));
            }
            if decided.marks_active() {
                last_active = Some(now);
            }
            if let Some(replicas) = decided.write()
                && replicas != current
                && Box::pin(self.scale(decided, current, replicas)).await
            {
                // The write moves the generation: the next poll at rest reads once more.
                known = Some((replicas, Instant::now(), self.generation.now()));
            }

            let conditions_changed = self
                .set_conditions(&conditions(spec.fallback.is_some(), &evaluation, decided))
                .await;
            let stale = match (last_active, stored.last_active) {
                (Some(now_active), Some(at)) => now_active.duration_since(at) >= refresh,
                (Some(_), None) => true,
                _ => false,
            };
            let wanted = Stored {
                last_active,
                failures: failures.clone(),
                activity: evaluation.triggers_activity.clone(),
            };
            if (conditions_changed
                || stale
                || wanted.failures != stored.failures
                || wanted.activity != stored.activity)
                && Box::pin(self.write_status(&wanted)).await
            {
                stored = wanted;
            }

            // A trigger that keeps failing may have stale credentials: build its scalers again
            // (this restarts the loop from the status just written).
            if !evaluation.errors.is_empty()
                && !rebuild_requested
                && started.elapsed() >= REBUILD_AFTER
            {
                rebuild_requested = true;
                info!(scaledobject = %key(&so), "a trigger keeps failing; rebuilding its scalers");
                self.nudge.rebuild();
            }
        }
    }

    /// Publishes the readings for `/metrics`.
    fn record_series(&self, so: &ScaledObject, results: &[TriggerResult]) {
        for result in results {
            // KEDA's `scaler` label: the trigger's name, or its scaler's name.
            let scaler = so
                .spec
                .triggers
                .get(result.index)
                .map(|t| match t.name.as_deref().filter(|n| !n.is_empty()) {
                    Some(name) => name.to_string(),
                    None => crate::admin::keda_scaler_label(&t.type_),
                })
                .unwrap_or_default();
            for reading in &result.readings {
                if let Err(e) = &reading.value {
                    self.metrics.count_read_error(e.label());
                }
                self.metrics.record(
                    SeriesKey {
                        namespace: so.namespace().unwrap_or_default(),
                        scaled_object: so.name_any(),
                        trigger_index: result.index,
                        scaler: scaler.clone(),
                        metric: reading.name.clone(),
                    },
                    reading.value.as_ref().ok().copied(),
                    reading.active,
                    reading.took,
                );
            }
        }
    }

    /// Reads the target's replica count from its `/scale`; None (Ready=False, logged) when it
    /// cannot be read, and the poll goes no further.
    async fn read_replicas(&self) -> Option<i32> {
        match self.target.replicas().await {
            Ok(n) => Some(n),
            Err(e) => {
                warn!(scaledobject = %key(&self.so.get()), error = %e, "reading the scale target");
                self.set_conditions(&[(
                    CONDITION_READY,
                    Status::False,
                    "ScaleTargetError",
                    e.to_string(),
                )])
                .await;
                None
            }
        }
    }

    /// Writes `/scale` and reports it; true when written.
    async fn scale(&self, decided: Decision, current: i32, replicas: i32) -> bool {
        match self.target.set_replicas(replicas).await {
            Ok(()) => {
                self.metrics.count_scale_write();
                let (reason, verb) = match decided {
                    Decision::Deactivate { .. } => ("KEDAScaleTargetDeactivated", "Deactivated"),
                    Decision::Activate { .. } => ("KEDAScaleTargetActivated", "Activated"),
                    _ => ("KEDAScaleTargetScaled", "Scaled"),
                };
                info!(scaledobject = %key(&self.so.get()), from = current, to = replicas, "{verb} scale target");
                self.event(
                    EventType::Normal,
                    reason,
                    format!(
                        "{verb} {} {} from {current} to {replicas}",
                        self.target.kind_label, self.target.name
                    ),
                )
                .await;
                true
            }
            Err(e) => {
                warn!(scaledobject = %key(&self.so.get()), error = %e, "scaling the target");
                let reason = match decided {
                    Decision::Deactivate { .. } => "KEDAScaleTargetDeactivationFailed",
                    _ => "KEDAScaleTargetActivationFailed",
                };
                self.event(EventType::Warning, reason, e.to_string()).await;
                false
            }
        }
    }

    /// Merge-patches conditions, health, triggersActivity and lastActiveTime; true on success.
    async fn write_status(&self, wanted: &Stored) -> bool {
        let health: BTreeMap<String, HealthStatus> = wanted
            .failures
            .iter()
            .map(|(name, n)| {
                let status = if *n == 0 {
                    fallback::HAPPY
                } else {
                    fallback::FAILING
                };
                (
                    name.clone(),
                    HealthStatus {
                        number_of_failures: Some(*n),
                        status: Some(status.to_string()),
                    },
                )
            })
            .collect();
        let activity: BTreeMap<&String, TriggerActivityStatus> = wanted
            .activity
            .iter()
            .map(|(name, active)| (name, TriggerActivityStatus { is_active: *active }))
            .collect();
        // Sent while holding the status cell, so the conditions sent are the latest.
        self.status
            .write(&[], |_, conditions| async move {
                let patch = serde_json::json!({
                    "status": {
                        "conditions": conditions,
                        "health": health,
                        "triggersActivity": activity,
                        "lastActiveTime": wanted.last_active.map(Time),
                    }
                });
                match self
                    .api
                    .patch_status(
                        &self.so.get().name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => {
                        self.metrics.count_write("status");
                        true
                    }
                    Err(e) => {
                        warn!(scaledobject = %key(&self.so.get()), error = %e, "writing status");
                        false
                    }
                }
            })
            .await
    }

    /// Sets conditions in the status cell; returns whether any changed. The caller writes.
    async fn set_conditions(&self, wanted: &[Wanted<'_>]) -> bool {
        self.status.set(wanted).await
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        let note = Note {
            type_,
            reason,
            action: "Scale",
            note,
        };
        // Boxed: the publish future (about 4 KiB) is not part of every idle loop's state.
        let so = self.so.get();
        if let Err(e) = Box::pin(self.events.publish(&note, &so.object_ref(&()))).await {
            warn!(scaledobject = %key(&so), error = %e, "publishing an event");
        } else {
            self.metrics.count_write("event");
        }
    }
}

/// What woke a scale loop.
enum Wake {
    /// It is to stop.
    Stop,
    /// A poll is due (scheduled at this instant).
    Poll(tokio::time::Instant),
    /// A fast activation check is due.
    Check,
    /// An adaptive activation check is due.
    Adaptive,
    /// `external-push` triggers pushed their activity (by trigger index).
    Push(BTreeMap<usize, bool>),
    /// Expiring credentials are to be renewed: the scalers are built again.
    Renew,
}

/// Runs `work` unless `stop` turns true first (None then).
async fn until_stopped<T>(
    stop: &mut tokio::sync::watch::Receiver<bool>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = stop.wait_for(|stop| *stop) => None,
        done = Box::pin(work) => Some(done),
    }
}

/// The HPA is answered from the loop's reading when it is younger than this, or than the
/// polling interval if shorter (plus a second of slack); an older one is read again from the
/// scaler.
pub const REREAD_AFTER_MAX: Duration = Duration::from_secs(15);

/// The plain readings the metrics API may read again from the scaler, and after what age:
/// not fallback values, not the composite metric, not triggers with `useCachedMetrics`.
fn reread_after(
    spec: &ebb_crds::ScaledObjectSpec,
    results: &[TriggerResult],
    evaluation: &Evaluation,
    interval: Duration,
) -> BTreeMap<String, Duration> {
    results
        .iter()
        .filter(|r| {
            !spec
                .triggers
                .get(r.index)
                .and_then(|t| t.use_cached_metrics)
                .unwrap_or(false)
        })
        .flat_map(|r| r.readings.iter())
        .filter(|reading| !evaluation.derived.contains(&reading.name))
        // A second of slack: a reading is as old as the poll that took it.
        .map(|reading| {
            (
                reading.name.clone(),
                interval.min(REREAD_AFTER_MAX) + Duration::from_secs(1),
            )
        })
        .collect()
}

/// Ready, Active and Fallback after one poll.
fn conditions(
    has_fallback: bool,
    evaluation: &Evaluation,
    decided: Decision,
) -> [(&'static str, Status, &'static str, String); 3] {
    let ready = if evaluation.activity == Activity::Unknown && !has_fallback {
        (
            CONDITION_READY,
            Status::False,
            "TriggerError",
            short(&evaluation.errors.join("; ")),
        )
    } else if evaluation.activity == Activity::Active && !evaluation.errors.is_empty() {
        // As KEDA: active on one trigger while another fails is neither ready nor not.
        (
            CONDITION_READY,
            Status::Unknown,
            "PartialTriggerError",
            short(&format!(
                "Some triggers defined in ScaledObject are not working correctly: {}",
                evaluation.errors.join("; ")
            )),
        )
    } else {
        (
            CONDITION_READY,
            Status::True,
            "ScaledObjectReady",
            "ScaledObject is defined correctly and is ready for scaling".to_string(),
        )
    };
    let active = match (evaluation.activity, decided) {
        (Activity::Active, _) => (
            CONDITION_ACTIVE,
            Status::True,
            "ScalerActive",
            "Scaling is performed because triggers are active".to_string(),
        ),
        (_, Decision::CoolingDown { until }) => (
            CONDITION_ACTIVE,
            Status::False,
            "ScalerCooldown",
            format!("Scaler is inactive; the cooldown ends at {until}"),
        ),
        (Activity::Unknown, _) => (
            CONDITION_ACTIVE,
            Status::Unknown,
            "TriggerError",
            "Activity is unknown while a trigger fails".to_string(),
        ),
        (Activity::Inactive, _) => (
            CONDITION_ACTIVE,
            Status::False,
            "ScalerNotActive",
            "Scaling is not performed because triggers are not active".to_string(),
        ),
    };
    let fallback = if evaluation.in_fallback {
        (
            CONDITION_FALLBACK,
            Status::True,
            "FallbackExists",
            "At least one trigger is falling back on this scaled object".to_string(),
        )
    } else {
        (
            CONDITION_FALLBACK,
            Status::False,
            "NoFallbackFound",
            "No fallbacks are active on this scaled object".to_string(),
        )
    };
    [ready, active, fallback]
}

/// A message cut to what a condition should carry.
pub fn short(text: &str) -> String {
    const MAX: usize = 1000;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// `namespace/name`, as every log line names a ScaledObject.
fn key(so: &ScaledObject) -> String {
    format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_active_time_is_refreshed_often_enough_for_the_cooldown() {
        let s = SignedDuration::from_secs;
        assert_eq!(last_active_refresh(s(300), s(30)), s(30));
        assert_eq!(last_active_refresh(s(300), s(5)), s(30));
        assert_eq!(last_active_refresh(s(3600), s(5)), s(60));
        assert_eq!(last_active_refresh(s(10), s(2)), s(2));
        assert_eq!(last_active_refresh(s(0), s(1)), s(1));
    }

    #[test]
    fn ready_is_unknown_while_one_trigger_is_active_and_another_fails() {
        let evaluation = |activity, errors: &[&str]| Evaluation {
            activity,
            in_fallback: false,
            errors: errors.iter().map(|e| e.to_string()).collect(),
            new_errors: Vec::new(),
            answers: BTreeMap::new(),
            triggers_activity: BTreeMap::new(),
            derived: Default::default(),
        };
        let ready = |activity, errors: &[&str], has_fallback| {
            let [ready, ..] = conditions(
                has_fallback,
                &evaluation(activity, errors),
                Decision::StayActive,
            );
            (ready.1, ready.2, ready.3)
        };
        let (status, reason, message) = ready(Activity::Active, &["s1-redis-x: refused"], false);
        assert_eq!((status, reason), (Status::Unknown, "PartialTriggerError"));
        assert!(
            message.ends_with("not working correctly: s1-redis-x: refused"),
            "{message}"
        );
        assert_eq!(
            ready(Activity::Unknown, &["s1-redis-x: refused"], false).1,
            "TriggerError"
        );
        assert_eq!(
            ready(Activity::Active, &[], false).0,
            Status::True,
            "every trigger read"
        );
        assert_eq!(ready(Activity::Inactive, &[], false).0, Status::True);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(800);
        let cut = short(&long);
        assert!(cut.ends_with("...") && cut.len() <= 1003);
        assert_eq!(short("fine"), "fine");
    }
}
