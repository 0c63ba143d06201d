//! One ScaledJob's poll loop. At every `pollingInterval`:
//!
//! read the triggers -> count the Jobs (from the cache) -> decide -> create Jobs -> delete the
//! finished Jobs beyond the history limits -> write the status if something in it changed.
//!
//! The arithmetic is [`super::decision`]'s; this module does the I/O around it. The ScaledJob
//! itself is read from the controller's cache at each poll, so a label or annotation change
//! reaches the next Jobs without a restart of the loop.

use std::sync::Arc;
use std::time::Duration;

use ebb_crds::ScaledJob;
use ebb_crds::condition::{CONDITION_ACTIVE, CONDITION_READY};
use ebb_crds::scaled_job::{ScaledJobPoll, ScaledJobTriggerReading};
use ebb_scalers::{MetricSpec, MetricTargetType};
use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin::Metrics;
use crate::events::{EventType, Events, Note};
use crate::scale::poll::{self, PolledTrigger, TriggerResult};
use crate::scale::task::{POLL_TIMEOUT, short};
use crate::status::{Status, StatusCell, Wanted};

use super::cache::JobCache;
use super::decision::{self, Calculation, Combined, Decision, Strategy, TriggerReading};
use super::template::job_for;

/// How stale the stored `lastActiveTime` may get while the ScaledJob stays active (KEDA writes
/// it at every active poll; nothing reads it for a decision).
const LAST_ACTIVE_REFRESH: Duration = Duration::from_secs(60);

/// Everything a ScaledJob's loop needs, fixed while its scalers are.
pub struct JobLoop {
    /// `namespace/name`.
    pub key: String,
    /// The controller's cache of ScaledJobs: the object is read afresh at each poll.
    pub objects: Store<ScaledJob>,
    /// Its scalers, in trigger order.
    pub triggers: Vec<PolledTrigger>,
    /// The Jobs and Pods of every ScaledJob.
    pub cache: Arc<JobCache>,
    /// The apiserver.
    pub client: Client,
    /// Events.
    pub events: Arc<Events>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Its conditions, shared with the controller.
    pub status: Arc<StatusCell>,
}

/// What the loop remembers between polls.
#[derive(Default)]
struct Memory {
    /// Per trigger, whether its last read failed (its Event is published once per outage).
    failing: Vec<bool>,
    /// The last `status.lastPoll` written, without its time.
    last_poll: Option<ScaledJobPoll>,
    /// When `lastActiveTime` was last written.
    last_active: Option<Timestamp>,
    /// The Active condition's status last written.
    active: Option<bool>,
}

impl JobLoop {
    /// Polls until `stop` turns true or the ScaledJob leaves the cache. A poll that panics is
    /// reported and the next one runs at its time.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut memory = Memory::default();
        if let Some(sj) = self.object() {
            let status = sj.status.as_ref();
            memory.last_poll = status.and_then(|s| s.last_poll.clone()).map(|mut p| {
                p.time = None;
                p
            });
            memory.last_active = status
                .and_then(|s| s.last_active_time.as_ref())
                .map(|t| t.0);
        }
        // The first poll waits a fraction of the interval derived from the uid, as a
        // ScaledObject's does: ScaledJobs found together (a start, a failover) spread their reads.
        let mut next = match self.object() {
            Some(sj) => {
                tokio::time::Instant::now()
                    + crate::scale::schedule::first_poll_delay(
                        &sj.uid().unwrap_or_default(),
                        interval_of(&sj),
                    )
            }
            None => return,
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = stopped(&mut stop) => return,
            }
            let started = tokio::time::Instant::now();
            self.metrics.observe_poll_lag(started.duration_since(next));
            let Some(sj) = self.object() else { return };
            next = started + interval_of(&sj);
            let poll = std::panic::AssertUnwindSafe(self.poll(&sj, &mut memory)).catch_unwind();
            tokio::select! {
                result = poll => {
                    self.metrics.observe_poll_duration(started.elapsed());
                    if result.is_err() {
                        warn!(scaledjob = %self.key, "a poll panicked; the next runs at its time");
                        self.event(&sj, EventType::Warning, "ScaledJobPollFailed",
                            "a poll of this ScaledJob failed unexpectedly; the next runs at its time".into()).await;
                    }
                }
                () = stopped(&mut stop) => return,
            }
        }
    }

    fn object(&self) -> Option<Arc<ScaledJob>> {
        let (namespace, name) = self.key.split_once('/')?;
        self.objects.get(&ObjectRef::new(name).within(namespace))
    }

    async fn poll(&self, sj: &ScaledJob, memory: &mut Memory) {
        let namespace = sj.namespace().unwrap_or_default();
        let name = sj.name_any();
        let results = poll::poll(&self.triggers, POLL_TIMEOUT).await;
        let (min, slots) = decision::bounds(sj.spec.min_replica_count, sj.spec.max_replica_count);
        let settings = Settings::of(sj);
        let readings = readings(&self.triggers, &results, slots, &sj.spec.triggers);
        let errors: Vec<(usize, String)> = results
            .iter()
            .filter_map(|r| {
                r.readings
                    .iter()
                    .find_map(|m| m.value.as_ref().err())
                    .map(|e| (r.index, e.to_string()))
            })
            .collect();
        let combined = decision::combine(
            &readings.iter().filter_map(|r| r.1).collect::<Vec<_>>(),
            settings.calculation,
            min,
            slots,
        );
        let census = self
            .cache
            .census(&self.key, sj, &settings.pending_pod_conditions);
        let decision = decision::decide(combined, settings.strategy, census.existing, min, slots);

        // Trigger errors: counted, and an Event at the start of each outage.
        memory.failing.resize(self.triggers.len(), false);
        for (i, failing) in memory.failing.iter_mut().enumerate() {
            let error = errors.iter().find(|(index, _)| *index == i);
            if let Some((_, message)) = error {
                self.metrics.count_scaled_job_error(&namespace, &name);
                if !*failing {
                    self.event(
                        sj,
                        EventType::Warning,
                        "KEDAScalerFailed",
                        format!("spec.triggers[{i}]: {}", short(message)),
                    )
                    .await;
                }
            }
            *failing = error.is_some();
        }

        let created = if combined.active && decision.create > 0 {
            self.create_jobs(sj, decision.create).await
        } else {
            0
        };
        if decision.create > 0 || census.existing.running > 0 {
            info!(
                scaledjob = %self.key,
                queue = decision.scale_to,
                running = census.existing.running,
                pending = census.existing.pending,
                created,
                "poll"
            );
        }
        self.clean_up_history(sj, &census.jobs).await;
        self.write_status(
            sj,
            memory,
            &combined,
            &decision,
            census.existing,
            created,
            &settings,
            &readings,
            !errors.is_empty(),
        )
        .await;
    }

    /// Creates `n` Jobs from `sj`'s template, one by one; returns how many were created.
    async fn create_jobs(&self, sj: &ScaledJob, n: i64) -> i64 {
        let api: Api<Job> =
            Api::namespaced(self.client.clone(), &sj.namespace().unwrap_or_default());
        let job = job_for(sj);
        let mut created = 0;
        for _ in 0..n {
            match api.create(&PostParams::default(), &job).await {
                Ok(made) => {
                    created += 1;
                    self.metrics.count_write("job");
                    if let Some(name) = made.metadata.name {
                        self.cache.created(&self.key, name);
                    }
                }
                Err(e) => {
                    self.event(
                        sj,
                        EventType::Warning,
                        "KEDAJobCreateFailed",
                        format!(
                            "Failed to create job {}-: {}",
                            sj.name_any(),
                            short(&api_message(&e))
                        ),
                    )
                    .await;
                    // The apiserver refuses every copy of one template alike: stop this poll.
                    break;
                }
            }
        }
        if created > 0 {
            self.metrics.count_jobs_created(created as u64);
            self.event(
                sj,
                EventType::Normal,
                "KEDAJobsCreated",
                format!("Created {created} jobs"),
            )
            .await;
        }
        created
    }

    /// Deletes the finished Jobs beyond the history limits, oldest first, in the background (as
    /// KEDA does); a failure is logged and retried at the next poll.
    async fn clean_up_history(&self, sj: &ScaledJob, jobs: &[Arc<Job>]) {
        let doomed = super::census::beyond_history(
            jobs,
            sj.spec.successful_history_limit(),
            sj.spec.failed_history_limit(),
        );
        if doomed.is_empty() {
            return;
        }
        let api: Api<Job> =
            Api::namespaced(self.client.clone(), &sj.namespace().unwrap_or_default());
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        for name in doomed {
            match api.delete(&name, &params).await {
                Ok(_) => self.metrics.count_write("job"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    warn!(scaledjob = %self.key, job = %name, error = %e, "deleting a Job beyond the history limits");
                    return;
                }
            }
        }
    }

    /// Sets Ready and Active as KEDA's executor does, and writes the status when any condition,
    /// `lastPoll`'s figures or a stale `lastActiveTime` call for it.
    #[allow(clippy::too_many_arguments)]
    async fn write_status(
        &self,
        sj: &ScaledJob,
        memory: &mut Memory,
        combined: &Combined,
        decision: &Decision,
        existing: decision::Existing,
        created: i64,
        settings: &Settings,
        readings: &[(ScaledJobTriggerReading, Option<TriggerReading>)],
        error: bool,
    ) {
        let active = combined.active;
        let mut wanted: Vec<Wanted> = Vec::new();
        if error && active {
            wanted.push((
                CONDITION_READY,
                Status::Unknown,
                "PartialTriggerError",
                "Some triggers defined in ScaledJob are not working correctly".into(),
            ));
        } else if error {
            wanted.push((
                CONDITION_READY,
                Status::False,
                "TriggerError",
                "Triggers defined in ScaledJob are not working correctly".into(),
            ));
        }
        let active_changed = memory.active != Some(active);
        if active {
            wanted.push((
                CONDITION_ACTIVE,
                Status::True,
                "ScalerActive",
                "Scaling is performed because triggers are active".into(),
            ));
        } else {
            wanted.push((
                CONDITION_ACTIVE,
                Status::False,
                "ScalerNotActive",
                "Scaling is not performed because triggers are not active".into(),
            ));
        }
        let poll = ScaledJobPoll {
            time: None,
            active,
            queue_length: decision.scale_to,
            max_scale: decision.max_scale,
            running_jobs: existing.running,
            pending_jobs: existing.pending,
            effective_max_scale: decision.effective_max_scale,
            jobs_created: created,
            scaling_strategy: settings.strategy_name.clone(),
            triggers: Some(readings.iter().map(|(r, _)| r.clone()).collect()),
        };
        let poll_changed = memory.last_poll.as_ref() != Some(&poll);
        let now = Timestamp::now();
        let refresh_active = active
            && memory
                .last_active
                .is_none_or(|t| now.duration_since(t).unsigned_abs() >= LAST_ACTIVE_REFRESH);
        let api: Api<ScaledJob> =
            Api::namespaced(self.client.clone(), &sj.namespace().unwrap_or_default());
        let name = sj.name_any();
        let metrics = self.metrics.clone();
        let (ready_was_not_true, written) = self
            .status
            .write(&wanted, |changed, conditions| {
                let api = api.clone();
                let poll = poll.clone();
                async move {
                    let ready_not_true = conditions
                        .iter()
                        .any(|c| c.type_ == CONDITION_READY && c.status != "True");
                    if !changed && !poll_changed && !refresh_active {
                        return (ready_not_true, Ok(false));
                    }
                    let mut status = serde_json::json!({ "conditions": conditions });
                    if poll_changed {
                        let mut timed = poll;
                        timed.time = Some(Time(now));
                        status["lastPoll"] = serde_json::to_value(timed).unwrap_or_default();
                    }
                    if refresh_active {
                        status["lastActiveTime"] =
                            serde_json::to_value(Time(now)).unwrap_or_default();
                    }
                    let patch = serde_json::json!({ "status": status });
                    let answer = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                    if answer.is_ok() {
                        metrics.count_write("scaledjob_status");
                    }
                    (ready_not_true, answer.map(|_| true))
                }
            })
            .await;
        match written {
            Ok(true) => {
                if poll_changed {
                    memory.last_poll = Some(poll);
                }
                if refresh_active {
                    memory.last_active = Some(now);
                }
            }
            Ok(false) => {}
            Err(e) => warn!(scaledjob = %self.key, error = %e, "writing the status"),
        }
        // Ready back to True once every trigger reads again.
        if !error && ready_was_not_true {
            let _ = self
                .status
                .write(
                    &[(
                        CONDITION_READY,
                        Status::True,
                        "ScaledJobReady",
                        "ScaledJob is defined correctly and is ready for scaling".into(),
                    )],
                    |changed, conditions| {
                        let api = api.clone();
                        let name = sj.name_any();
                        async move {
                            if changed {
                                let patch =
                                    serde_json::json!({"status": {"conditions": conditions}});
                                let _ = api
                                    .patch_status(
                                        &name,
                                        &PatchParams::default(),
                                        &Patch::Merge(&patch),
                                    )
                                    .await;
                            }
                        }
                    },
                )
                .await;
        }
        if active_changed {
            if memory.active.is_some() || sj_active_condition(sj) != Some(active) {
                let (reason, message) = if active {
                    (
                        "ScaledJobActive",
                        "Scaling is performed because triggers are active",
                    )
                } else {
                    (
                        "ScaledJobInactive",
                        "Scaling is not performed because triggers are not active",
                    )
                };
                self.event(sj, EventType::Normal, reason, message.into())
                    .await;
            }
            memory.active = Some(active);
        }
    }

    async fn event(&self, sj: &ScaledJob, type_: EventType, reason: &str, note: String) {
        let note = Note {
            type_,
            reason,
            action: "Scale",
            note,
        };
        if let Err(e) = self.events.publish(&note, &sj.object_ref(&())).await {
            warn!(scaledjob = %self.key, reason, error = %e, "publishing an Event");
        }
    }
}

/// A ScaledJob's polling interval (at least a second).
fn interval_of(sj: &ScaledJob) -> Duration {
    Duration::from_secs(u64::try_from(sj.spec.polling_interval_seconds().max(1)).unwrap_or(30))
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// The Active condition's status stored on `sj`, if known.
fn sj_active_condition(sj: &ScaledJob) -> Option<bool> {
    sj.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == CONDITION_ACTIVE)
        .and_then(|c| match c.status.as_str() {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        })
}

/// The apiserver's message for `e`, else its text.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// A ScaledJob's scaling settings, as KEDA reads them.
pub struct Settings {
    /// The strategy, with `custom`'s parameters.
    pub strategy: Strategy,
    /// Its name as applied.
    pub strategy_name: String,
    /// `multipleScalersCalculation`.
    pub calculation: Calculation,
    /// `pendingPodConditions`.
    pub pending_pod_conditions: Vec<String>,
}

impl Settings {
    /// The settings of `sj`. Values KEDA does not know fall back as KEDA's do (the controller
    /// reports them in an Event): an unknown strategy or calculation is the default one, and a
    /// `custom` strategy whose percentage does not parse is `default`.
    pub fn of(sj: &ScaledJob) -> Self {
        let s = sj.spec.scaling_strategy.clone().unwrap_or_default();
        let strategy = match s.strategy.as_deref().unwrap_or_default() {
            "custom" => match s
                .custom_scaling_running_job_percentage
                .as_deref()
                .and_then(parse_go_float)
            {
                Some(percentage) => Strategy::Custom {
                    queue_length_deduction: i64::from(
                        s.custom_scaling_queue_length_deduction.unwrap_or(0),
                    ),
                    running_job_percentage: percentage,
                },
                None => Strategy::Default,
            },
            "accurate" => Strategy::Accurate,
            "eager" => Strategy::Eager,
            _ => Strategy::Default,
        };
        let strategy_name = match strategy {
            Strategy::Default => "default",
            Strategy::Custom { .. } => "custom",
            Strategy::Accurate => "accurate",
            Strategy::Eager => "eager",
        }
        .to_string();
        Self {
            strategy,
            strategy_name,
            calculation: Calculation::parse(
                s.multiple_scalers_calculation.as_deref().unwrap_or(""),
            )
            .unwrap_or_default(),
            pending_pod_conditions: s.pending_pod_conditions.unwrap_or_default(),
        }
    }
}

/// Parses a float as Go's `strconv.ParseFloat` accepts the common forms (decimal, exponent,
/// sign, `inf`, `nan`); hexadecimal floats are not accepted.
pub fn parse_go_float(text: &str) -> Option<f64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    match t.to_ascii_lowercase().trim_start_matches(['+', '-']) {
        "inf" | "infinity" | "nan" => t
            .to_ascii_lowercase()
            .replace("infinity", "inf")
            .parse()
            .ok(),
        _ => t.parse().ok(),
    }
}

/// Each trigger's reading for the status, and for the decision when it read (a trigger any of
/// whose metrics failed counts for nothing, as in KEDA).
fn readings(
    triggers: &[PolledTrigger],
    results: &[TriggerResult],
    slots: i64,
    spec: &[ebb_crds::scaled_object::ScaleTrigger],
) -> Vec<(ScaledJobTriggerReading, Option<TriggerReading>)> {
    triggers
        .iter()
        .zip(results)
        .map(|(trigger, result)| {
            let specs = trigger.scaler.metric_specs();
            let targets: Vec<f64> = specs
                .iter()
                .filter_map(|s| match s {
                    MetricSpec::External {
                        target,
                        target_type,
                        ..
                    } => Some(if *target_type == MetricTargetType::AverageValue {
                        *target
                    } else {
                        0.0
                    }),
                    MetricSpec::Resource { .. } => None,
                })
                .collect();
            let error = result
                .readings
                .iter()
                .find_map(|m| m.value.as_ref().err())
                .map(|e| short(&e.to_string()));
            let trigger_type = spec
                .get(result.index)
                .map(|t| t.type_.clone())
                .unwrap_or_default();
            match error {
                Some(error) => (
                    ScaledJobTriggerReading {
                        index: i32::try_from(result.index).unwrap_or(i32::MAX),
                        type_: trigger_type,
                        queue_length: None,
                        max_value: None,
                        active: false,
                        error: Some(error),
                    },
                    None,
                ),
                None => {
                    let values: Vec<f64> = result
                        .readings
                        .iter()
                        .filter_map(|m| m.value.as_ref().ok().copied())
                        .collect();
                    let active = result.readings.iter().any(|m| m.active);
                    let reading = decision::trigger_reading(&values, &targets, active, slots);
                    (
                        ScaledJobTriggerReading {
                            index: i32::try_from(result.index).unwrap_or(i32::MAX),
                            type_: trigger_type,
                            queue_length: Some(reading.queue_length),
                            max_value: Some(reading.max_value),
                            active,
                            error: None,
                        },
                        Some(reading),
                    )
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_job_percentage_parses_as_go_parses_it() {
        assert_eq!(parse_go_float("0.5"), Some(0.5));
        assert_eq!(parse_go_float("1e-1"), Some(0.1));
        assert_eq!(parse_go_float("+2"), Some(2.0));
        assert_eq!(parse_go_float("Inf"), Some(f64::INFINITY));
        assert_eq!(parse_go_float("-infinity"), Some(f64::NEG_INFINITY));
        assert!(parse_go_float("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_go_float(""), None);
        assert_eq!(parse_go_float("half"), None);
    }

    fn scaled_job(strategy: serde_json::Value) -> ScaledJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": "j", "namespace": "n"},
            "spec": {
                "jobTargetRef": {"template": {"spec": {"containers": []}}},
                "scalingStrategy": strategy,
                "triggers": [{"type": "redis", "metadata": {}}]
            }
        }))
        .expect("a ScaledJob")
    }

    #[test]
    fn strategies_fall_back_as_keda_reads_them() {
        let s = Settings::of(&scaled_job(serde_json::json!({
            "strategy": "custom", "customScalingQueueLengthDeduction": 1,
            "customScalingRunningJobPercentage": "0.5"
        })));
        assert_eq!(
            s.strategy,
            Strategy::Custom {
                queue_length_deduction: 1,
                running_job_percentage: 0.5
            }
        );
        // A percentage that does not parse: KEDA uses the default strategy.
        let s = Settings::of(&scaled_job(serde_json::json!({"strategy": "custom"})));
        assert_eq!(s.strategy, Strategy::Default);
        assert_eq!(s.strategy_name, "default");
        // No deduction: 0 (KEDA would dereference a nil pointer).
        let s = Settings::of(&scaled_job(serde_json::json!({
            "strategy": "custom", "customScalingRunningJobPercentage": "1"
        })));
        assert_eq!(
            s.strategy,
            Strategy::Custom {
                queue_length_deduction: 0,
                running_job_percentage: 1.0
            }
        );
        let s = Settings::of(&scaled_job(serde_json::json!({
            "strategy": "eagre", "multipleScalersCalculation": "sum",
            "pendingPodConditions": ["Ready"]
        })));
        assert_eq!(s.strategy, Strategy::Default);
        assert_eq!(s.calculation, Calculation::Sum);
        assert_eq!(s.pending_pod_conditions, vec!["Ready".to_string()]);
        assert_eq!(
            Settings::of(&scaled_job(serde_json::json!({"strategy": "accurate"}))).strategy,
            Strategy::Accurate
        );
    }
}
