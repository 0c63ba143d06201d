//! The Job a ScaledJob creates: its `jobTargetRef` with KEDA's labels, annotations and owner.
//!
//! - name: `generateName: <scaledjob>-`, so the apiserver picks a suffix no other Job has;
//! - labels: `scaledjob.keda.sh/name` (what a poll counts Jobs by), `app.kubernetes.io/name` and
//!   `part-of` (the ScaledJob), `version` (ebb's) and `managed-by: ebb`, then the ScaledJob's own
//!   labels over them, but those its `scaledjob.keda.sh/job-excluded-labels` annotation lists;
//! - annotations: `scaledjob.keda.sh/generation` (the ScaledJob's generation the template came
//!   from, for rollouts), then the ScaledJob's own;
//! - the ScaledJob as controlling owner, so deleting it deletes its Jobs;
//! - the label `scaledjob.keda.sh/name` on the pod template too;
//! - `restartPolicy: OnFailure` when the template sets none (a Job refuses `Always`, the pod
//!   default).
//!
//! Two deliberate differences from KEDA: `app.kubernetes.io/managed-by` is `ebb` (KEDA writes
//! `keda-operator`; ebb's HPAs say `ebb` too), and the ScaledJob's own labels cannot replace
//! `scaledjob.keda.sh/name`, by which a poll counts its Jobs (in KEDA a label of that name on
//! the ScaledJob would make it lose count of them).

use std::collections::BTreeMap;

use ebb_crds::ScaledJob;
use ebb_crds::scaled_job::SCALED_JOB_NAME_LABEL;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

/// Annotation on each Job: the ScaledJob generation its template came from.
pub const GENERATION_ANNOTATION: &str = "scaledjob.keda.sh/generation";
/// Annotation on a ScaledJob listing (comma-separated) its labels not to copy onto its Jobs.
pub const EXCLUDED_LABELS_ANNOTATION: &str = "scaledjob.keda.sh/job-excluded-labels";

/// The Job to create for `sj` (its namespace, template, labels and owner).
pub fn job_for(sj: &ScaledJob) -> Job {
    let name = sj.name_any();
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), name.clone()),
        ("app.kubernetes.io/part-of".to_string(), name.clone()),
        (
            "app.kubernetes.io/version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "ebb".to_string(),
        ),
    ]);
    let excluded: Vec<&str> = sj
        .annotations()
        .get(EXCLUDED_LABELS_ANNOTATION)
        .map(|list| list.split(',').map(str::trim).collect())
        .unwrap_or_default();
    labels.extend(
        sj.labels()
            .iter()
            .filter(|(k, _)| !excluded.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    // Counted by this label: the ScaledJob's own labels cannot point it elsewhere.
    labels.insert(SCALED_JOB_NAME_LABEL.to_string(), name.clone());
    let mut annotations = BTreeMap::from([(
        GENERATION_ANNOTATION.to_string(),
        sj.meta().generation.unwrap_or_default().to_string(),
    )]);
    annotations.extend(sj.annotations().clone());
    // kubectl's record of the ScaledJob's own manifest is not the Job's.
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    let mut spec = sj.spec.job_target_ref.clone();
    // The pods carry the ScaledJob's name too, as KEDA's do.
    spec.template
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default()
        .insert(SCALED_JOB_NAME_LABEL.to_string(), name.clone());
    if let Some(pod) = spec.template.spec.as_mut()
        && pod.restart_policy.as_deref().is_none_or(str::is_empty)
    {
        pod.restart_policy = Some("OnFailure".to_string());
    }
    Job {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: sj.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: owner(sj).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn owner(sj: &ScaledJob) -> Option<OwnerReference> {
    let mut owner = sj.controller_owner_ref(&())?;
    owner.block_owner_deletion = Some(true);
    Some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled_job(labels: serde_json::Value, restart: Option<&str>) -> ScaledJob {
        let mut pod =
            serde_json::json!({"containers": [{"name": "w", "image": "example.invalid/w:1"}]});
        if let Some(r) = restart {
            pod["restartPolicy"] = r.into();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledJob",
            "metadata": {
                "name": "encoder", "namespace": "media", "uid": "u-1", "generation": 3,
                "labels": labels,
                "annotations": {"team": "media", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
            },
            "spec": {
                "jobTargetRef": {"backoffLimit": 2, "template": {"spec": pod}},
                "triggers": [{"type": "redis", "metadata": {}}]
            }
        }))
        .expect("a ScaledJob")
    }

    #[test]
    fn a_job_carries_the_template_labels_annotations_and_owner() {
        let job = job_for(&scaled_job(
            serde_json::json!({"tier": "batch"}),
            Some("Never"),
        ));
        let meta = &job.metadata;
        assert_eq!(meta.generate_name.as_deref(), Some("encoder-"));
        assert_eq!(meta.name, None, "the apiserver picks the suffix");
        assert_eq!(meta.namespace.as_deref(), Some("media"));
        let labels = meta.labels.as_ref().expect("labels");
        assert_eq!(labels[SCALED_JOB_NAME_LABEL], "encoder");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "ebb");
        assert_eq!(labels["tier"], "batch");
        let annotations = meta.annotations.as_ref().expect("annotations");
        assert_eq!(annotations[GENERATION_ANNOTATION], "3");
        assert_eq!(annotations["team"], "media");
        assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        let owner = &meta.owner_references.as_ref().expect("an owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("ScaledJob", "encoder", "u-1")
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
        let spec = job.spec.expect("a spec");
        assert_eq!(spec.backoff_limit, Some(2));
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .expect("pod labels");
        assert_eq!(pod_labels[SCALED_JOB_NAME_LABEL], "encoder");
        assert_eq!(
            spec.template.spec.expect("pod").restart_policy.as_deref(),
            Some("Never")
        );
    }

    #[test]
    fn labels_the_scaled_job_excludes_stay_off_its_jobs() {
        let mut sj = scaled_job(
            serde_json::json!({"tier": "batch", "cost-center": "42", "team": "media"}),
            None,
        );
        sj.annotations_mut().insert(
            EXCLUDED_LABELS_ANNOTATION.to_string(),
            "cost-center, team".to_string(),
        );
        let labels = job_for(&sj).metadata.labels.expect("labels");
        assert_eq!(labels.get("tier").map(String::as_str), Some("batch"));
        assert!(!labels.contains_key("cost-center") && !labels.contains_key("team"));
    }

    #[test]
    fn the_counting_label_and_the_restart_policy_cannot_be_wrong() {
        let job = job_for(&scaled_job(
            serde_json::json!({SCALED_JOB_NAME_LABEL: "someone-else"}),
            None,
        ));
        assert_eq!(
            job.metadata.labels.expect("labels")[SCALED_JOB_NAME_LABEL],
            "encoder"
        );
        assert_eq!(
            job.spec
                .expect("spec")
                .template
                .spec
                .expect("pod")
                .restart_policy
                .as_deref(),
            Some("OnFailure")
        );
    }
}
