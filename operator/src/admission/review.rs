//! One AdmissionReview answered: the object is read as its kind, put through the checks of
//! [`super::checks`] and [`super::triggers`], and allowed or denied with the first problem's
//! message (the one the reconcile would write in Ready=False). Deletions are always allowed.

pub use async_trait::async_trait;
use ebb_crds::{ClusterTriggerAuthentication, ScaledJob, ScaledObject, TriggerAuthentication};
use ebb_scalers::Registry;
use k8s_openapi::api::core::v1::{LimitRange, PodSpec};
use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde::de::DeserializeOwned;

use super::checks::{self, Neighbours, Workload};
use super::triggers;

/// What the checks read besides the object.
#[async_trait]
pub trait Lookups: Send + Sync {
    /// The neighbours of `so` in `namespace` its checks compare it to, from caches
    /// ([`Neighbours::of`]).
    fn neighbours(&self, so: &ScaledObject, namespace: &str) -> Neighbours;
    /// The pod template of a Deployment or StatefulSet; `None` when it does not exist.
    async fn pod_template(
        &self,
        namespace: &str,
        target: &Workload,
    ) -> Result<Option<PodSpec>, String>;
    /// The LimitRanges of `namespace`.
    async fn limit_ranges(&self, namespace: &str) -> Result<Vec<LimitRange>, String>;
}

/// Why a body was not an AdmissionReview with a request (answered 400).
#[derive(Debug, thiserror::Error)]
#[error("not an AdmissionReview request: {0}")]
pub struct BadReview(String);

/// Answers the AdmissionReview in `body`.
pub async fn answer(
    body: &[u8],
    registry: &Registry,
    lookups: &dyn Lookups,
) -> Result<AdmissionReview<DynamicObject>, BadReview> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| BadReview(e.to_string()))?;
    let request: AdmissionRequest<DynamicObject> =
        review
            .try_into()
            .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| {
                BadReview(e.to_string())
            })?;
    let response = AdmissionResponse::from(&request);
    let verdict = match request.operation {
        Operation::Create | Operation::Update => judge(&request, registry, lookups).await,
        Operation::Delete | Operation::Connect => Ok(()),
    };
    Ok(match verdict {
        Ok(()) => response,
        // 403 Forbidden, as KEDA's webhook answers: kubectl prints
        // `Error from server (Forbidden): ... denied the request: <message>`.
        Err(message) => {
            let mut denied = response.deny(message);
            denied.result =
                kube::core::Status::failure(&denied.result.message, "Forbidden").with_code(403);
            denied
        }
    }
    .into_review())
}

/// The first problem with the request's object, as its message.
async fn judge(
    request: &AdmissionRequest<DynamicObject>,
    registry: &Registry,
    lookups: &dyn Lookups,
) -> Result<(), String> {
    let Some(object) = &request.object else {
        return Ok(());
    };
    if request.kind.group != "keda.sh" {
        return Ok(());
    }
    // An update of an object being deleted (its finalizer's removal), or one that leaves the
    // spec as it was (a label, an annotation, a finalizer: ebb's own writes among them), is
    // never refused: the object was checked when its spec was written, and refusing would
    // leave it stuck.
    if request.operation == Operation::Update {
        let value = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
        let new = value(object);
        if !new["metadata"]["deletionTimestamp"].is_null() {
            return Ok(());
        }
        if let Some(old) = &request.old_object
            && value(old)["spec"] == new["spec"]
        {
            return Ok(());
        }
    }
    match request.kind.kind.as_str() {
        "ScaledObject" => {
            let so: ScaledObject = read(object)?;
            scaled_object(&so, request, registry, lookups).await
        }
        "ScaledJob" => {
            let sj: ScaledJob = read(object)?;
            checks::scaled_job(&sj).map_err(|e| e.to_string())?;
            triggers::check(registry, &sj.spec.triggers).map_err(|r| r.message)
        }
        "TriggerAuthentication" => {
            let ta: TriggerAuthentication = read(object)?;
            checks::trigger_authentication(&ta.spec).map_err(|e| e.to_string())
        }
        "ClusterTriggerAuthentication" => {
            let cta: ClusterTriggerAuthentication = read(object)?;
            checks::trigger_authentication(&cta.spec).map_err(|e| e.to_string())
        }
        _ => Ok(()),
    }
}

fn read<T: DeserializeOwned>(object: &DynamicObject) -> Result<T, String> {
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|e| format!("the object cannot be read: {e}"))
}

async fn scaled_object(
    so: &ScaledObject,
    request: &AdmissionRequest<DynamicObject>,
    registry: &Registry,
    lookups: &dyn Lookups,
) -> Result<(), String> {
    let namespace = request
        .namespace
        .clone()
        .or_else(|| so.namespace())
        .unwrap_or_default();
    let around = lookups.neighbours(so, &namespace);
    // Being created, it comes after every stored object, even one stored in the same second
    // (the apiserver has already stamped its creationTimestamp).
    let mut so = so.clone();
    // So does an update that moves it to another workload or HPA name: it would otherwise
    // push out the object already there.
    let moved = request
        .old_object
        .as_ref()
        .and_then(|old| read::<ScaledObject>(old).ok())
        .is_none_or(|old| {
            Workload::of(&old) != Workload::of(&so)
                || crate::hpa::hpa_name(&old) != crate::hpa::hpa_name(&so)
        });
    if request.operation == Operation::Create || moved {
        so.metadata.creation_timestamp = None;
    }
    let so = &so;
    checks::scaled_object(so, &around).map_err(|e| e.to_string())?;
    triggers::check(registry, &so.spec.triggers).map_err(|r| r.message)?;
    let target = Workload::of(so);
    let resource_triggers = so
        .spec
        .triggers
        .iter()
        .any(|t| matches!(t.type_.as_str(), "cpu" | "memory"));
    if !(resource_triggers && target.has_pod_template()) {
        return Ok(());
    }
    // A workload applied after its ScaledObject (or not readable) is checked at reconcile.
    let Ok(Some(pod)) = lookups.pod_template(&namespace, &target).await else {
        return Ok(());
    };
    if checks::resource_requests(so, &pod, &[]).is_ok() {
        return Ok(());
    }
    // Unreadable LimitRanges leave the check to the reconcile.
    let Ok(ranges) = lookups.limit_ranges(&namespace).await else {
        return Ok(());
    };
    checks::resource_requests(so, &pod, &ranges).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct World {
        neighbours: Neighbours,
        pod: Option<PodSpec>,
    }

    #[async_trait]
    impl Lookups for World {
        fn neighbours(&self, _: &ScaledObject, _: &str) -> Neighbours {
            self.neighbours.clone()
        }
        async fn pod_template(&self, _: &str, _: &Workload) -> Result<Option<PodSpec>, String> {
            Ok(self.pod.clone())
        }
        async fn limit_ranges(&self, _: &str) -> Result<Vec<LimitRange>, String> {
            Ok(Vec::new())
        }
    }

    fn review(kind: &str, operation: &str, object: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "keda.sh", "version": "v1alpha1", "kind": kind},
                "resource": {"group": "keda.sh", "version": "v1alpha1", "resource": format!("{}s", kind.to_lowercase())},
                "name": "web",
                "namespace": "shop",
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object,
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn so(triggers: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
        let mut spec = json!({"scaleTargetRef": {"name": "web"}, "triggers": triggers});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
               "metadata": {"name": "web", "namespace": "shop"}, "spec": spec})
    }

    async fn verdict(body: &[u8], world: &World) -> (bool, String, String) {
        let review = answer(body, &Registry::with_builtins(), world)
            .await
            .expect("a review");
        let response = review.response.expect("a response");
        (response.allowed, response.result.message, response.uid)
    }

    fn world() -> World {
        World {
            neighbours: Neighbours::default(),
            pod: None,
        }
    }

    #[tokio::test]
    async fn a_good_object_is_allowed_and_a_bad_one_denied_with_the_check_s_message() {
        let good = so(
            json!([{"type": "redis", "metadata": {"address": "r:6379", "listName": "q"}}]),
            json!({}),
        );
        let (allowed, _, uid) = verdict(&review("ScaledObject", "CREATE", good), &world()).await;
        assert!(allowed);
        assert_eq!(uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        let typo = so(
            json!([{"type": "redis", "metadata": {"address": "r:6379", "listName": "q", "listLength": "ten"}}]),
            json!({}),
        );
        let (allowed, message, _) =
            verdict(&review("ScaledObject", "UPDATE", typo), &world()).await;
        assert!(!allowed);
        assert_eq!(
            message,
            "trigger 0 (redis): listLength: expected a number, got \"ten\""
        );
        let bounds = so(
            json!([{"type": "redis", "metadata": {"address": "r:6379", "listName": "q"}}]),
            json!({"minReplicaCount": 5, "maxReplicaCount": 2}),
        );
        let (allowed, message, _) =
            verdict(&review("ScaledObject", "CREATE", bounds.clone()), &world()).await;
        assert!(!allowed);
        assert!(
            message.starts_with("spec.minReplicaCount: 5 is above maxReplicaCount 2"),
            "{message}"
        );
        // Deleting is never refused.
        let (allowed, _, _) = verdict(&review("ScaledObject", "DELETE", bounds), &world()).await;
        assert!(allowed);
    }

    #[tokio::test]
    async fn cpu_triggers_read_the_workload_s_pod_template() {
        let cpu = so(
            json!([{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}]),
            json!({"minReplicaCount": 1}),
        );
        let bare: PodSpec =
            serde_json::from_value(json!({"containers": [{"name": "app"}]})).unwrap();
        let (allowed, message, _) = verdict(
            &review("ScaledObject", "CREATE", cpu.clone()),
            &World {
                neighbours: Neighbours::default(),
                pod: Some(bare),
            },
        )
        .await;
        assert!(!allowed);
        assert!(
            message.starts_with(
                "spec.triggers[0]: a cpu trigger needs a cpu request on container \"app\""
            ),
            "{message}"
        );
        // No workload yet: left to the reconcile.
        let (allowed, _, _) = verdict(&review("ScaledObject", "CREATE", cpu), &world()).await;
        assert!(allowed);
    }

    #[tokio::test]
    async fn scaled_jobs_and_authentications_have_their_rules() {
        let job = json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"jobTargetRef": {"template": {"spec": {"containers": []}}},
                     "triggers": [{"type": "redis", "metadata": {"address": "r:6379", "listName": "q", "listLength": "-"}}]}});
        let (allowed, message, _) = verdict(&review("ScaledJob", "CREATE", job), &world()).await;
        assert!(!allowed);
        assert!(
            message.starts_with("trigger 0 (redis): listLength:"),
            "{message}"
        );
        let ta = json!({"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"podIdentity": {"provider": "azure-workload", "identityId": ""}}});
        let (allowed, message, _) =
            verdict(&review("TriggerAuthentication", "CREATE", ta), &world()).await;
        assert!(!allowed);
        assert!(
            message.starts_with("spec.podIdentity.identityId: empty"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn updates_that_leave_the_spec_or_finish_a_deletion_are_never_refused() {
        let bad = so(
            json!([{"type": "redis", "metadata": {"address": "r:6379", "listName": "q"}}]),
            json!({"minReplicaCount": 5, "maxReplicaCount": 2}),
        );
        let update = |object: serde_json::Value, old: serde_json::Value| {
            let mut body: serde_json::Value =
                serde_json::from_slice(&review("ScaledObject", "UPDATE", object)).unwrap();
            body["request"]["oldObject"] = old;
            serde_json::to_vec(&body).unwrap()
        };
        // A label or a finalizer added to an object stored without the webhook: allowed.
        let mut labelled = bad.clone();
        labelled["metadata"]["labels"] = json!({"scaledobject.keda.sh/name": "web"});
        let (allowed, _, _) = verdict(&update(labelled, bad.clone()), &world()).await;
        assert!(allowed);
        // Its finalizer removed while it is deleted: allowed.
        let mut deleting = bad.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-04T00:00:00Z");
        let (allowed, _, _) = verdict(&update(deleting, bad.clone()), &world()).await;
        assert!(allowed);
        // A spec change is checked.
        let good = so(
            json!([{"type": "redis", "metadata": {"address": "r:6379", "listName": "q"}}]),
            json!({}),
        );
        let (allowed, message, _) = verdict(&update(bad, good), &world()).await;
        assert!(!allowed);
        assert!(message.starts_with("spec.minReplicaCount: 5"), "{message}");
    }

    #[tokio::test]
    async fn a_denial_is_403_forbidden_as_keda_s() {
        let unknown = so(json!([{"type": "nope", "metadata": {}}]), json!({}));
        let review = answer(
            &review("ScaledObject", "CREATE", unknown),
            &Registry::with_builtins(),
            &world(),
        )
        .await
        .expect("a review");
        let response = review.response.expect("a response");
        assert!(!response.allowed);
        assert_eq!(
            (response.result.code, response.result.reason.as_str()),
            (403, "Forbidden")
        );
        assert_eq!(
            response.result.message,
            "trigger 0: unknown trigger type \"nope\""
        );
    }

    #[tokio::test]
    async fn a_body_that_is_not_a_review_is_a_bad_request() {
        for body in [&b"{}"[..], b"null", b"", b"{\"request\": 5}"] {
            assert!(
                answer(body, &Registry::with_builtins(), &world())
                    .await
                    .is_err()
            );
        }
    }
}
