//! `ebb explain <namespace>/<scaledjob>`: why the last poll of a ScaledJob created as many Jobs
//! as it did. The facts are the ScaledJob's `status.lastPoll` (the figures of the last poll that
//! changed them) and its Jobs as they are now; rendering is pure.

use std::fmt::Write as _;

use ebb_crds::ScaledJob;
use ebb_crds::condition::{CONDITION_ACTIVE, CONDITION_PAUSED, CONDITION_READY};
use ebb_crds::scaled_job::{SCALED_JOB_NAME_LABEL, ScaledJobPoll};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::census::{self, Outcome};
use super::decision;

/// Everything `ebb explain` says about a ScaledJob.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFacts {
    /// `namespace/name`.
    pub object: String,
    /// KEDA's MinReplicaCount() and MaxReplicaCount() (the slots beyond the minimum).
    pub bounds: (i64, i64),
    /// `maxReplicaCount` as written (100 when unset).
    pub max_replicas: i32,
    /// Ready, Active, Paused: status, reason, message.
    pub conditions: Vec<(String, String, String, String)>,
    /// The last poll whose figures changed.
    pub last_poll: Option<ScaledJobPoll>,
    /// `multipleScalersCalculation`.
    pub calculation: String,
    /// The custom strategy's parameters, as written.
    pub custom: Option<(i32, String)>,
    /// Jobs now: running, succeeded, failed.
    pub jobs: Result<(usize, usize, usize), String>,
    /// The history limits: successful, failed.
    pub history: (i32, i32),
    /// Whether the pause annotation holds.
    pub paused: bool,
    /// When the facts were read.
    pub now: Timestamp,
}

/// Reads the ScaledJob `namespace/name` and its Jobs; `None` when there is no such ScaledJob.
pub async fn gather(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<JobFacts>, kube::Error> {
    let Some(sj) = Api::<ScaledJob>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
    else {
        return Ok(None);
    };
    let jobs = Api::<Job>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{SCALED_JOB_NAME_LABEL}={name}")))
        .await
        .map(|list| {
            let of = |o: Outcome| {
                list.items
                    .iter()
                    .filter(|j| census::outcome(j) == o)
                    .count()
            };
            (
                of(Outcome::Running),
                of(Outcome::Succeeded),
                of(Outcome::Failed),
            )
        })
        .map_err(|e| e.to_string());
    Ok(Some(facts_of(&sj, jobs, Timestamp::now())))
}

fn facts_of(
    sj: &ScaledJob,
    jobs: Result<(usize, usize, usize), String>,
    now: Timestamp,
) -> JobFacts {
    let status = sj.status.clone().unwrap_or_default();
    let strategy = sj.spec.scaling_strategy.clone().unwrap_or_default();
    JobFacts {
        object: format!("{}/{}", sj.namespace().unwrap_or_default(), sj.name_any()),
        bounds: decision::bounds(sj.spec.min_replica_count, sj.spec.max_replica_count),
        max_replicas: sj.spec.max_replicas(),
        conditions: [CONDITION_READY, CONDITION_ACTIVE, CONDITION_PAUSED]
            .iter()
            .map(|type_| {
                let c = status
                    .conditions
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .find(|c| c.type_ == *type_);
                (
                    type_.to_string(),
                    c.map(|c| c.status.clone()).unwrap_or_else(|| "-".into()),
                    c.and_then(|c| c.reason.clone()).unwrap_or_default(),
                    c.and_then(|c| c.message.clone()).unwrap_or_default(),
                )
            })
            .collect(),
        last_poll: status.last_poll,
        calculation: strategy
            .multiple_scalers_calculation
            .clone()
            .unwrap_or_else(|| "max".into()),
        custom: (strategy.strategy.as_deref() == Some("custom")).then(|| {
            (
                strategy.custom_scaling_queue_length_deduction.unwrap_or(0),
                strategy
                    .custom_scaling_running_job_percentage
                    .clone()
                    .unwrap_or_default(),
            )
        }),
        jobs,
        history: (
            sj.spec.successful_history_limit(),
            sj.spec.failed_history_limit(),
        ),
        paused: sj
            .annotations()
            .get(ebb_crds::scaled_object::ANNOTATION_PAUSED)
            .is_some_and(|v| ebb_scalers::trigger::parse_bool(v) != Some(false)),
        now,
    }
}

/// Renders `f` for a terminal.
pub fn render(f: &JobFacts) -> String {
    let mut out = String::new();
    let (min, slots) = f.bounds;
    let _ = writeln!(
        out,
        "ScaledJob {}: minReplicaCount {min}, maxReplicaCount {}",
        f.object, f.max_replicas
    );
    for (type_, status, reason, message) in &f.conditions {
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!(" ({reason})")
        };
        let message = if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        };
        let _ = writeln!(out, "  {type_}: {status}{reason}{message}");
    }
    match &f.jobs {
        Ok((running, succeeded, failed)) => {
            let _ = writeln!(
                out,
                "Jobs now: {running} running, {succeeded} succeeded and {failed} failed kept (history limits {} and {})",
                f.history.0, f.history.1
            );
        }
        Err(e) => {
            let _ = writeln!(out, "Jobs now: cannot be listed: {e}");
        }
    }
    if f.paused {
        let _ = writeln!(
            out,
            "Decision: paused by annotation: no poll runs, no Job is created, running Jobs go on"
        );
        return out;
    }
    let Some(p) = &f.last_poll else {
        let _ = writeln!(out, "Last poll: none recorded yet");
        return out;
    };
    let when = p
        .time
        .as_ref()
        .map(|t| {
            format!(
                "{} ({} s ago)",
                t.0,
                f.now.duration_since(t.0).as_secs().max(0)
            )
        })
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "Last poll whose figures changed: {when} (later polls found the same figures)"
    );
    for t in p.triggers.iter().flatten() {
        let line = match (&t.error, t.queue_length, t.max_value) {
            (Some(e), _, _) => format!("error, counts for nothing: {e}"),
            (None, Some(q), Some(m)) => format!(
                "queue {q}, asks {m} Jobs (queue over target, at most {slots}), {}",
                if t.active { "active" } else { "inactive" }
            ),
            _ => "no reading".into(),
        };
        let _ = writeln!(out, "  trigger {} ({}): {line}", t.index, t.type_);
    }
    let _ = writeln!(
        out,
        "  combined ({} of the active triggers): queue {}, {} Jobs asked",
        f.calculation, p.queue_length, p.max_scale
    );
    let _ = writeln!(
        out,
        "  Jobs counted: {} running, {} of them pending",
        p.running_jobs, p.pending_jobs
    );
    let beyond = (p.running_jobs - min).max(0);
    let formula = if p.running_jobs < min {
        format!(
            "below minReplicaCount: exactly the {} missing Jobs",
            min - p.running_jobs
        )
    } else {
        match p.scaling_strategy.as_str() {
            "custom" => {
                let (deduction, percentage) = f.custom.clone().unwrap_or_default();
                format!(
                    "custom: min({} asked - {deduction} deduction - {beyond} running x {percentage}, {slots})",
                    p.max_scale
                )
            }
            "accurate" => {
                if p.max_scale + beyond > slots {
                    format!("accurate: asked + running > {slots}, so {slots} - {beyond} running")
                } else {
                    format!(
                        "accurate: {} asked - {} pending",
                        p.max_scale, p.pending_jobs
                    )
                }
            }
            "eager" => format!(
                "eager: min({slots} - {beyond} running - {} pending, {} asked), up to {slots} whatever the queue",
                p.pending_jobs, p.max_scale
            ),
            _ => format!("default: {} asked - {beyond} running", p.max_scale),
        }
    };
    let _ = writeln!(
        out,
        "  strategy {formula} = {} more allowed",
        p.effective_max_scale
    );
    let line = if !p.active {
        "no trigger is active, so no Job is created".to_string()
    } else if p.effective_max_scale <= 0 {
        "every Job asked for exists already: none created".to_string()
    } else {
        let cap = if p.scaling_strategy == "eager" {
            slots
        } else {
            p.queue_length
        };
        format!(
            "created {} (the lesser of {} allowed and {cap} {})",
            p.jobs_created,
            p.effective_max_scale,
            if p.scaling_strategy == "eager" {
                "slots"
            } else {
                "in the queue"
            }
        )
    };
    let _ = writeln!(out, "Decision: {line}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_crds::scaled_job::ScaledJobTriggerReading;

    fn facts(strategy: &str, poll: ScaledJobPoll) -> JobFacts {
        JobFacts {
            object: "media/encoder".into(),
            bounds: (0, 4),
            max_replicas: 4,
            conditions: vec![(
                "Ready".into(),
                "True".into(),
                "ScaledJobReady".into(),
                "ok".into(),
            )],
            last_poll: Some(ScaledJobPoll {
                scaling_strategy: strategy.into(),
                ..poll
            }),
            calculation: "max".into(),
            custom: None,
            jobs: Ok((2, 5, 0)),
            history: (100, 100),
            paused: false,
            now: Timestamp::from_second(1_800_000_010).expect("a time"),
        }
    }

    fn poll(
        queue: i64,
        asked: i64,
        running: i64,
        pending: i64,
        allowed: i64,
        created: i64,
    ) -> ScaledJobPoll {
        ScaledJobPoll {
            time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(1_800_000_000).expect("a time"),
            )),
            active: true,
            queue_length: queue,
            max_scale: asked,
            running_jobs: running,
            pending_jobs: pending,
            effective_max_scale: allowed,
            jobs_created: created,
            scaling_strategy: String::new(),
            triggers: Some(vec![ScaledJobTriggerReading {
                index: 0,
                type_: "redis".into(),
                queue_length: Some(queue as f64),
                max_value: Some(asked as f64),
                active: true,
                error: None,
            }]),
        }
    }

    #[test]
    fn the_explanation_walks_from_the_readings_to_the_jobs_created() {
        let text = render(&facts("default", poll(10, 4, 1, 0, 3, 3)));
        assert!(
            text.contains("ScaledJob media/encoder: minReplicaCount 0, maxReplicaCount 4"),
            "{text}"
        );
        assert!(text.contains("(10 s ago)"), "{text}");
        assert!(
            text.contains("trigger 0 (redis): queue 10, asks 4 Jobs"),
            "{text}"
        );
        assert!(
            text.contains("Jobs counted: 1 running, 0 of them pending"),
            "{text}"
        );
        assert!(
            text.contains("strategy default: 4 asked - 1 running = 3 more allowed"),
            "{text}"
        );
        assert!(
            text.contains("Decision: created 3 (the lesser of 3 allowed and 10 in the queue)"),
            "{text}"
        );
        assert!(
            text.contains("Jobs now: 2 running, 5 succeeded and 0 failed kept"),
            "{text}"
        );
    }

    #[test]
    fn each_strategy_shows_its_formula() {
        let text = render(&facts("eager", poll(3, 3, 2, 1, 1, 1)));
        assert!(
            text.contains("eager: min(4 - 2 running - 1 pending, 3 asked)"),
            "{text}"
        );
        assert!(text.contains("4 slots"), "{text}");
        let text = render(&facts("accurate", poll(3, 3, 2, 1, 2, 2)));
        assert!(
            text.contains("accurate: asked + running > 4, so 4 - 2 running"),
            "{text}"
        );
        let text = render(&facts("default", poll(2, 2, 2, 0, 0, 0)));
        assert!(
            text.contains("every Job asked for exists already"),
            "{text}"
        );
    }

    #[test]
    fn a_failing_trigger_and_a_pause_are_said() {
        let mut p = poll(0, 0, 0, 0, 0, 0);
        p.active = false;
        p.triggers.as_mut().expect("triggers")[0].error = Some("connection refused".into());
        let text = render(&facts("default", p));
        assert!(
            text.contains("error, counts for nothing: connection refused"),
            "{text}"
        );
        assert!(text.contains("no trigger is active"), "{text}");
        let mut f = facts("default", poll(1, 1, 0, 0, 1, 1));
        f.paused = true;
        assert!(render(&f).contains("paused by annotation"));
    }
}
