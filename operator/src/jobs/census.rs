//! What a ScaledJob's poll counts among the Jobs it created, and which finished Jobs its
//! history limits let go: pure functions over Jobs and Pods as the apiserver lists them.
//!
//! A Job is **finished** when it has a `Complete` or `Failed` condition that is `True`, and
//! **running** otherwise. A running Job is **pending** while its pods have not started: with
//! `pendingPodConditions`, until one of its pods has every listed condition `True`; without,
//! until one of its pods is `Running` or `Succeeded`, as in KEDA.
//!
//! `pendingPodConditions` are checked per pod, as KEDA's current code checks them (older KEDA
//! releases added up the conditions met across all of a Job's pods). One deliberate difference
//! from KEDA: the finished Jobs beyond the history limits are chosen by completion time, then
//! creation time, oldest first (KEDA sorts by completion time only, which a failed Job lacks, so
//! which failed Jobs it deletes is left to the list's order).

use std::borrow::Borrow;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// How a Job ended, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished.
    Running,
    /// Condition `Complete`.
    Succeeded,
    /// Condition `Failed`.
    Failed,
}

/// The outcome of `job`, from its conditions.
pub fn outcome(job: &Job) -> Outcome {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let holds = |type_: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Complete") {
        Outcome::Succeeded
    } else if holds("Failed") {
        Outcome::Failed
    } else {
        Outcome::Running
    }
}

/// Whether a running Job whose pods are `pods` is still pending.
pub fn pending<P: Borrow<Pod>>(pods: &[P], pending_pod_conditions: &[String]) -> bool {
    let mut pods = pods.iter().map(Borrow::borrow);
    if pending_pod_conditions.is_empty() {
        !pods.any(|p: &Pod| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Running" | "Succeeded")
            )
        })
    } else {
        !pods.any(|p: &Pod| {
            let conditions = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_deref())
                .unwrap_or_default();
            pending_pod_conditions.iter().all(|wanted| {
                conditions
                    .iter()
                    .any(|c| &c.type_ == wanted && c.status == "True")
            })
        })
    }
}

/// The finished Jobs beyond the history limits, oldest first: the ones to delete.
pub fn beyond_history<J: Borrow<Job>>(
    jobs: &[J],
    successful_limit: i32,
    failed_limit: i32,
) -> Vec<String> {
    let mut doomed = Vec::new();
    for (kind, limit) in [
        (Outcome::Succeeded, successful_limit),
        (Outcome::Failed, failed_limit),
    ] {
        let mut finished: Vec<(Option<Time>, Option<Time>, String)> = jobs
            .iter()
            .map(Borrow::borrow)
            .filter(|j: &&Job| outcome(j) == kind)
            .map(|j| {
                (
                    j.status.as_ref().and_then(|s| s.completion_time.clone()),
                    j.metadata.creation_timestamp.clone(),
                    j.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        // Oldest first: by completion time (a failed Job has none), then creation time, then
        // name, so the choice is stable.
        finished.sort_by_key(|(completed, created, name)| {
            (
                completed.as_ref().or(created.as_ref()).map(|t| t.0),
                name.clone(),
            )
        });
        let excess = finished.len().saturating_sub(limit.max(0) as usize);
        doomed.extend(finished.into_iter().take(excess).map(|(_, _, name)| name));
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, created_s: i64, conditions: &[(&str, &str)]) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "creationTimestamp": jiff::Timestamp::from_second(1_700_000_000 + created_s)
                    .expect("a time")
                    .to_string(),
            },
            "spec": {"template": {"spec": {"containers": []}}},
            "status": {"conditions": conditions.iter().map(|(t, s)| serde_json::json!({"type": t, "status": s})).collect::<Vec<_>>()}
        }))
        .expect("a Job")
    }

    fn pod(phase: &str, conditions: &[(&str, &str)], deleting: bool) -> Pod {
        let mut value = serde_json::json!({
            "metadata": {"name": "p"},
            "status": {
                "phase": phase,
                "conditions": conditions.iter().map(|(t, s)| serde_json::json!({"type": t, "status": s})).collect::<Vec<_>>()
            }
        });
        if deleting {
            value["metadata"]["deletionTimestamp"] = "2026-12-04T00:00:00Z".into();
        }
        serde_json::from_value(value).expect("a Pod")
    }

    #[test]
    fn a_job_is_finished_by_its_complete_or_failed_condition() {
        assert_eq!(outcome(&job("a", 0, &[])), Outcome::Running);
        assert_eq!(
            outcome(&job("a", 0, &[("Complete", "True")])),
            Outcome::Succeeded
        );
        assert_eq!(
            outcome(&job("a", 0, &[("Failed", "True")])),
            Outcome::Failed
        );
        assert_eq!(
            outcome(&job("a", 0, &[("Failed", "False"), ("Suspended", "True")])),
            Outcome::Running
        );
        // Kubernetes 1.31+ marks a Job SuccessCriteriaMet before Complete: still running.
        assert_eq!(
            outcome(&job("a", 0, &[("SuccessCriteriaMet", "True")])),
            Outcome::Running
        );
    }

    #[test]
    fn a_job_is_pending_until_a_pod_runs_or_meets_every_listed_condition() {
        let none: Vec<String> = Vec::new();
        assert!(pending::<Pod>(&[], &none), "no pod yet");
        assert!(pending(&[pod("Pending", &[], false)], &none));
        assert!(!pending(&[pod("Running", &[], false)], &none));
        assert!(!pending(&[pod("Succeeded", &[], false)], &none));
        // As in KEDA, a pod being deleted still counts by its phase.
        assert!(!pending(&[pod("Running", &[], true)], &none));
        assert!(!pending(
            &[pod("Failed", &[], false), pod("Running", &[], false)],
            &none
        ));

        let wanted = vec!["Ready".to_string(), "PodScheduled".to_string()];
        assert!(pending(
            &[pod("Running", &[("PodScheduled", "True")], false)],
            &wanted
        ));
        assert!(pending(
            &[pod(
                "Running",
                &[("PodScheduled", "True"), ("Ready", "False")],
                false
            )],
            &wanted
        ));
        assert!(!pending(
            &[pod(
                "Running",
                &[("PodScheduled", "True"), ("Ready", "True")],
                false
            )],
            &wanted
        ));
    }

    #[test]
    fn finished_jobs_beyond_the_limits_go_oldest_first() {
        let jobs = [
            job("s-old", 10, &[("Complete", "True")]),
            job("s-new", 30, &[("Complete", "True")]),
            job("s-mid", 20, &[("Complete", "True")]),
            job("f-old", 5, &[("Failed", "True")]),
            job("f-new", 50, &[("Failed", "True")]),
            job("running", 1, &[]),
        ];
        assert_eq!(beyond_history(&jobs, 1, 1), vec!["s-old", "s-mid", "f-old"]);
        assert_eq!(beyond_history(&jobs, 2, 0), vec!["s-old", "f-old", "f-new"]);
        assert!(beyond_history(&jobs, 100, 100).is_empty());
        // A completion time counts before the creation time.
        let mut early_done = job("late-created", 100, &[("Complete", "True")]);
        early_done.status.get_or_insert_default().completion_time = Some(Time(
            jiff::Timestamp::from_second(1_700_000_000 + 1).expect("a time"),
        ));
        let jobs = [job("s-old", 10, &[("Complete", "True")]), early_done];
        assert_eq!(beyond_history(&jobs, 1, 1), vec!["late-created"]);
    }
}
