//! The scale loop of one ScaledObject: a task that polls at the object's interval, decides,
//! writes `/scale` only when the decision changes the count, and keeps the status current.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ebb_crds::ScaledObject;
use ebb_crds::condition::{CONDITION_ACTIVE, CONDITION_FALLBACK, CONDITION_READY};
use ebb_crds::scaled_object::{
    ANNOTATION_FORCE_ACTIVATION, ANNOTATION_PAUSED_SCALE_IN, ANNOTATION_PAUSED_SCALE_OUT,
    HealthStatus,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::admin::{Metrics, SeriesKey};
use crate::scale::decision::{self, Activity, Decision, Observation, Settings, TriggerOutcome};
use crate::scale::fallback;
use crate::scale::poll::{self, PolledTrigger};
use crate::scale::schedule::first_poll_delay;
use crate::status::{self, Status};
use crate::target::Target;

/// Longest a metric read may take.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a scale loop needs, fixed for one generation of the object.
pub struct ScaleLoop {
    /// The object as it was when the loop started.
    pub so: Arc<ScaledObject>,
    /// Its scale target.
    pub target: Target,
    /// Its scalers.
    pub triggers: Vec<PolledTrigger>,
    /// Where status is written.
    pub api: Api<ScaledObject>,
    /// Events.
    pub recorder: Recorder,
    /// The conditions ebb last wrote for this object, shared with the controller.
    pub conditions: Arc<tokio::sync::Mutex<Vec<ebb_crds::Condition>>>,
    /// Where readings are published for `/metrics`.
    pub metrics: Arc<Metrics>,
}

fn annotation(so: &ScaledObject, key: &str) -> bool {
    so.annotations()
        .get(key)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// How stale the stored `lastActiveTime` may get while the object stays active: a tenth of the
/// cooldown, at least one polling interval, at most a minute. After a restart, a scale-down can
/// come at most this much early.
pub fn last_active_refresh(cooldown: SignedDuration, interval: SignedDuration) -> SignedDuration {
    let tenth = SignedDuration::from_secs(cooldown.as_secs() / 10);
    tenth.min(SignedDuration::from_secs(60)).max(interval)
}

impl ScaleLoop {
    /// Runs until aborted.
    pub async fn run(self) {
        let so = &self.so;
        let spec = &so.spec;
        let interval = Duration::from_secs(
            u64::try_from(spec.polling_interval_seconds().max(1)).unwrap_or(30),
        );
        let settings = Settings {
            min_replicas: spec.min_replicas(),
            idle_replicas: spec.idle_replica_count,
            cooldown: SignedDuration::from_secs(i64::from(spec.cooldown_period_seconds())),
            initial_cooldown: SignedDuration::from_secs(i64::from(
                spec.initial_cooldown_period_seconds(),
            )),
            paused_scale_in: annotation(so, ANNOTATION_PAUSED_SCALE_IN),
            paused_scale_out: annotation(so, ANNOTATION_PAUSED_SCALE_OUT),
        };
        let force_activation = annotation(so, ANNOTATION_FORCE_ACTIVATION);
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
        let status = so.status.clone().unwrap_or_default();
        let mut last_active = status.last_active_time.as_ref().map(|t| t.0);
        let mut stored_last_active = last_active;
        let mut failures: BTreeMap<String, i32> = status
            .health
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.number_of_failures.unwrap_or(0)))
            .collect();
        let mut stored_failures = failures.clone();

        let uid = so.uid().unwrap_or_default();
        tokio::time::sleep(first_poll_delay(&uid, interval)).await;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let results = poll::poll(&self.triggers, POLL_TIMEOUT).await;
            let namespace = so.namespace().unwrap_or_default();
            for result in &results {
                let scaler = spec
                    .triggers
                    .get(result.index)
                    .map(|t| t.type_.clone())
                    .unwrap_or_default();
                for reading in &result.readings {
                    self.metrics.record(
                        SeriesKey {
                            namespace: namespace.clone(),
                            scaled_object: so.name_any(),
                            trigger_index: result.index,
                            scaler: scaler.clone(),
                            metric: reading.name.clone(),
                        },
                        reading.value.as_ref().ok().copied(),
                        reading.active,
                    );
                }
            }

            // Failure counts, and fallback for triggers past their threshold.
            let mut outcomes = Vec::with_capacity(results.len());
            let mut in_fallback = false;
            let mut errors = Vec::new();
            for result in &results {
                let mut all_failed_in_fallback = !result.readings.is_empty();
                for reading in &result.readings {
                    let count = failures.entry(reading.name.clone()).or_insert(0);
                    *count = fallback::next_failures(*count, reading.value.is_ok());
                    if let Err(e) = &reading.value {
                        errors.push(format!("trigger {}: {e}", result.index));
                        if !fallback::in_fallback(spec.fallback.as_ref(), *count) {
                            all_failed_in_fallback = false;
                        }
                    }
                }
                let outcome = if result.outcome == TriggerOutcome::Failed && all_failed_in_fallback
                {
                    in_fallback = true;
                    TriggerOutcome::Active
                } else {
                    result.outcome
                };
                outcomes.push(outcome);
            }
            let activity = decision::activity(&outcomes, force_activation);

            let current = match self.target.replicas().await {
                Ok(n) => n,
                Err(e) => {
                    warn!(scaledobject = %so.name_any(), error = %e, "reading the scale target");
                    self.set_conditions(&[(
                        CONDITION_READY,
                        Status::False,
                        "ScaleTargetError",
                        e.to_string(),
                    )])
                    .await;
                    continue;
                }
            };
            let now = Timestamp::now();
            let decided = decision::decide(
                &settings,
                &Observation {
                    current_replicas: current,
                    activity,
                    last_active,
                    created,
                    now,
                },
            );
            if decided.marks_active() {
                last_active = Some(now);
            }
            if let Some(replicas) = decided.write()
                && replicas != current
            {
                match self.target.set_replicas(replicas).await {
                    Ok(()) => {
                        self.metrics.count_scale_write();
                        let (reason, verb) = match decided {
                            Decision::Deactivate { .. } => {
                                ("KEDAScaleTargetDeactivated", "Deactivated")
                            }
                            Decision::Activate { .. } => ("KEDAScaleTargetActivated", "Activated"),
                            _ => ("KEDAScaleTargetScaled", "Scaled"),
                        };
                        info!(scaledobject = %so.name_any(), from = current, to = replicas, "{verb} scale target");
                        self.event(
                            EventType::Normal,
                            reason,
                            format!(
                                "{verb} {} {} from {current} to {replicas}",
                                self.target.kind_label, self.target.name
                            ),
                        )
                        .await;
                    }
                    Err(e) => {
                        warn!(scaledobject = %so.name_any(), error = %e, "scaling the target");
                        let reason = match decided {
                            Decision::Deactivate { .. } => "KEDAScaleTargetDeactivationFailed",
                            _ => "KEDAScaleTargetActivationFailed",
                        };
                        self.event(EventType::Warning, reason, e.to_string()).await;
                    }
                }
            }

            // Conditions.
            let ready = if activity == Activity::Unknown && spec.fallback.is_none() {
                (
                    CONDITION_READY,
                    Status::False,
                    "TriggerError",
                    short(&errors.join("; ")),
                )
            } else {
                (
                    CONDITION_READY,
                    Status::True,
                    "ScaledObjectReady",
                    "ScaledObject is defined correctly and is ready for scaling".to_string(),
                )
            };
            let active = match (activity, decided) {
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
            let fallback_condition = if in_fallback {
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
            let conditions_changed = self
                .set_conditions(&[ready, active, fallback_condition])
                .await;

            let stale = match (last_active, stored_last_active) {
                (Some(now_active), Some(stored)) => now_active.duration_since(stored) >= refresh,
                (Some(_), None) => true,
                _ => false,
            };
            if conditions_changed || stale || failures != stored_failures {
                let health: BTreeMap<String, HealthStatus> = failures
                    .iter()
                    .map(|(name, n)| {
                        (
                            name.clone(),
                            HealthStatus {
                                number_of_failures: Some(*n),
                                status: Some(
                                    if *n == 0 {
                                        fallback::HAPPY
                                    } else {
                                        fallback::FAILING
                                    }
                                    .to_string(),
                                ),
                            },
                        )
                    })
                    .collect();
                let conditions = self.conditions.lock().await.clone();
                let patch = serde_json::json!({
                    "status": {
                        "conditions": conditions,
                        "health": health,
                        "lastActiveTime": last_active.map(Time),
                    }
                });
                match self
                    .api
                    .patch_status(
                        &so.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => {
                        stored_last_active = last_active;
                        stored_failures = failures.clone();
                    }
                    Err(e) => warn!(scaledobject = %so.name_any(), error = %e, "writing status"),
                }
            }
        }
    }

    /// Sets conditions in the shared cell; returns whether any changed. The caller writes.
    async fn set_conditions(&self, wanted: &[(&str, Status, &str, String)]) -> bool {
        let mut conditions = self.conditions.lock().await;
        let mut changed = false;
        for (type_, status, reason, message) in wanted {
            changed |=
                status::set_condition(&mut conditions, type_, *status, reason, message.clone());
        }
        changed
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Scale".to_string(),
            secondary: None,
        };
        if let Err(e) = self
            .recorder
            .publish(&event, &self.so.object_ref(&()))
            .await
        {
            warn!(scaledobject = %self.so.name_any(), error = %e, "publishing an event");
        }
    }
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
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(800);
        let cut = short(&long);
        assert!(cut.ends_with("...") && cut.len() <= 1003);
        assert_eq!(short("fine"), "fine");
    }
}
