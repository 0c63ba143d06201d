//! The checks of a ScaledObject, a ScaledJob and a TriggerAuthentication that admission and
//! the reconcile share, so a refused `kubectl apply` and the Ready=False condition of an object
//! stored before the webhook existed say the same thing.
//!
//! They are pure: what they need from the cluster (the other ScaledObjects and the HPAs of the
//! namespace, the target's pod template, the LimitRanges) comes in as values. Each error names
//! the field at fault and what was expected.

use std::collections::BTreeSet;

use ebb_crds::scaled_object::{SCALED_OBJECT_NAME_LABEL, ScaleTrigger};
use ebb_crds::trigger_authentication::TriggerAuthenticationSpec;
use ebb_crds::{ScaledJob, ScaledObject};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{LimitRange, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::hpa::{DEFAULT_HPA_PREFIX, configured_hpa_name, hpa_name};
use crate::scale::composite::Composite;
use crate::validate::{replica_bounds, validate};
use crate::validation_error::{ValidationError, error};

/// KEDA's annotation on a ScaledObject that takes over the HPA named in
/// `spec.advanced.horizontalPodAutoscalerConfig.name`, which scales the same workload.
pub const ANNOTATION_TRANSFER_HPA_OWNERSHIP: &str = "scaledobject.keda.sh/transfer-hpa-ownership";
/// KEDA's annotation that switches the HPA ownership check off for the object that carries it
/// (`"false"`).
pub const ANNOTATION_HPA_OWNERSHIP_VALIDATION: &str = "validations.keda.sh/hpa-ownership";
/// The longest label value, which the ScaledObject's name is on its HPA.
pub const MAX_LABEL_VALUE: usize = 63;

/// A workload as scale targets name it: API group, kind and name (the version is left out, so
/// `apps/v1` and `apps/v1beta2` are one workload).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Workload {
    /// The API group (`apps`; empty for the core group).
    pub group: String,
    /// The kind (`Deployment`).
    pub kind: String,
    /// The name.
    pub name: String,
}

impl Workload {
    /// From an `apiVersion`, a kind and a name, with a ScaledObject's defaults
    /// (`apps/v1`, `Deployment`).
    pub fn new(api_version: Option<&str>, kind: Option<&str>, name: &str) -> Self {
        let (group, kind) = group_and_kind(api_version, kind);
        Self {
            group: group.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
        }
    }

    /// Whether an `apiVersion`, a kind and a name (with a ScaledObject's defaults) name this
    /// workload; nothing is copied.
    pub fn is(&self, api_version: Option<&str>, kind: Option<&str>, name: &str) -> bool {
        self.name == name && group_and_kind(api_version, kind) == (&self.group, &self.kind)
    }

    /// What a ScaledObject scales.
    pub fn of(so: &ScaledObject) -> Self {
        let target = &so.spec.scale_target_ref;
        Self::new(
            target.api_version.as_deref(),
            target.kind.as_deref(),
            &target.name,
        )
    }

    /// Whether it is a Deployment or a StatefulSet, whose pod template the cpu and memory
    /// checks read (KEDA checks only these two).
    pub fn has_pod_template(&self) -> bool {
        self.group == "apps" && matches!(self.kind.as_str(), "Deployment" | "StatefulSet")
    }
}

/// The API group and kind a scale target names, with a ScaledObject's defaults (`apps/v1`,
/// `Deployment`).
fn group_and_kind<'a>(api_version: Option<&'a str>, kind: Option<&'a str>) -> (&'a str, &'a str) {
    let api_version = api_version.filter(|v| !v.is_empty()).unwrap_or("apps/v1");
    let group = api_version
        .rsplit_once('/')
        .map(|(g, _)| g)
        .unwrap_or_default();
    (
        group,
        kind.filter(|k| !k.is_empty()).unwrap_or("Deployment"),
    )
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.kind, self.name)
    }
}

/// Another ScaledObject of the namespace, as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerScaledObject {
    /// Its name.
    pub name: String,
    /// When it was stored (`None`: not yet, an object being created).
    pub created: Option<Time>,
    /// What it scales.
    pub target: Workload,
    /// The name of its HPA.
    pub hpa: String,
}

impl PeerScaledObject {
    /// The parts of `so` the checks compare.
    pub fn of(so: &ScaledObject) -> Self {
        Self {
            name: so.name_any(),
            created: so.metadata.creation_timestamp.clone(),
            target: Workload::of(so),
            hpa: hpa_name(so),
        }
    }

    /// Whether it came first: stored earlier (an object not yet stored comes last), the name
    /// breaking a tie. Of two ScaledObjects that conflict, the first keeps the workload, so
    /// the reconcile refuses only the later one, as the webhook would have.
    fn precedes(&self, created: Option<&Time>, name: &str) -> bool {
        let key = |c: Option<&Time>| (c.is_none(), c.map(|t| t.0));
        (key(self.created.as_ref()), self.name.as_str()) < (key(created), name)
    }
}

/// An HPA of the namespace, as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHpa {
    /// Its name.
    pub name: String,
    /// What it scales.
    pub target: Workload,
    /// The ScaledObject that owns it (an owner reference of kind ScaledObject), if any.
    pub owner: Option<String>,
    /// Annotated `validations.keda.sh/hpa-ownership: "false"`: not checked.
    pub unchecked: bool,
}

impl PeerHpa {
    /// The parts of `hpa` the checks compare.
    pub fn of(hpa: &HorizontalPodAutoscaler) -> Self {
        let target = hpa.spec.as_ref().map(|s| &s.scale_target_ref);
        Self {
            name: hpa.name_any(),
            target: Workload::new(
                target.and_then(|t| t.api_version.as_deref()),
                target.map(|t| t.kind.as_str()),
                target.map(|t| t.name.as_str()).unwrap_or_default(),
            ),
            owner: hpa
                .owner_references()
                .iter()
                .find(|o| o.kind == "ScaledObject" && o.api_version.starts_with("keda.sh/"))
                .map(|o| o.name.clone()),
            unchecked: ownership_check_off(hpa.annotations()),
        }
    }
}

/// Drops an HPA's annotations but KEDA's switch for the ownership check, the one the checks
/// read (and its managed fields): what a cache of HPAs keeps of their metadata.
pub fn slim_hpa_metadata(hpa: &mut HorizontalPodAutoscaler) {
    hpa.metadata.managed_fields = None;
    let keep = hpa
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_HPA_OWNERSHIP_VALIDATION))
        .cloned();
    hpa.metadata.annotations =
        keep.map(|v| [(ANNOTATION_HPA_OWNERSHIP_VALIDATION.to_string(), v)].into());
}

fn ownership_check_off(annotations: &std::collections::BTreeMap<String, String>) -> bool {
    annotations
        .get(ANNOTATION_HPA_OWNERSHIP_VALIDATION)
        .is_some_and(|v| v == "false")
}

/// What a ScaledObject shares its namespace with that its checks compare it to: the other
/// ScaledObjects (itself left out) and the HPAs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Neighbours {
    /// The namespace's other ScaledObjects.
    pub scaled_objects: Vec<PeerScaledObject>,
    /// The namespace's HPAs.
    pub hpas: Vec<PeerHpa>,
}

impl Neighbours {
    /// The neighbours of `so` in `namespace` that its checks can find in conflict with it:
    /// the other ScaledObjects on its workload or with its HPA name, and the HPAs on its
    /// workload. `scaled_objects` and `hpas` may hold other namespaces' objects (skipped).
    /// Only those few are copied, so a review or a reconcile costs one scan of the caches,
    /// not a copy of the namespace.
    pub fn of<'a>(
        so: &ScaledObject,
        namespace: &str,
        scaled_objects: impl IntoIterator<Item = &'a ScaledObject>,
        hpas: impl IntoIterator<Item = &'a HorizontalPodAutoscaler>,
    ) -> Self {
        let peers = Peers::of(so, namespace);
        Self {
            scaled_objects: scaled_objects
                .into_iter()
                .filter(|o| peers.scaled_object(o))
                .map(PeerScaledObject::of)
                .collect(),
            hpas: hpas
                .into_iter()
                .filter(|h| peers.hpa(h))
                .map(PeerHpa::of)
                .collect(),
        }
    }

    /// [`Neighbours::of`] from the watch caches: only the matching objects are taken out of
    /// them (a reconcile at 10,000 objects took a copy of both caches, 20,000 `Arc`s, for a
    /// handful of matches).
    pub fn from_caches(
        so: &ScaledObject,
        namespace: &str,
        scaled_objects: Option<&Store<ScaledObject>>,
        hpas: Option<&Store<HorizontalPodAutoscaler>>,
    ) -> Self {
        let peers = Peers::of(so, namespace);
        let scaled_objects = scaled_objects
            .map(|store| store.state_filter(|o| peers.scaled_object(o)))
            .unwrap_or_default();
        let hpas = hpas
            .map(|store| store.state_filter(|h| peers.hpa(h)))
            .unwrap_or_default();
        Self::of(
            so,
            namespace,
            scaled_objects.iter().map(|o| o.as_ref()),
            hpas.iter().map(|h| h.as_ref()),
        )
    }
}

/// What makes another object a ScaledObject's neighbour (see [`Neighbours::of`]).
struct Peers<'a> {
    namespace: &'a str,
    name: String,
    target: Workload,
    hpa: String,
}

impl<'a> Peers<'a> {
    fn of(so: &ScaledObject, namespace: &'a str) -> Self {
        Self {
            namespace,
            name: so.name_any(),
            target: Workload::of(so),
            hpa: hpa_name(so),
        }
    }

    /// Another ScaledObject of the namespace on the same workload or with the same HPA name.
    fn scaled_object(&self, o: &ScaledObject) -> bool {
        if o.metadata.namespace.as_deref() != Some(self.namespace)
            || o.metadata.name.as_deref() == Some(self.name.as_str())
        {
            return false;
        }
        let t = &o.spec.scale_target_ref;
        self.target
            .is(t.api_version.as_deref(), t.kind.as_deref(), &t.name)
            || has_hpa_name(o, &self.hpa)
    }

    /// An HPA of the namespace on the same workload.
    fn hpa(&self, h: &HorizontalPodAutoscaler) -> bool {
        h.metadata.namespace.as_deref() == Some(self.namespace)
            && h.spec.as_ref().is_some_and(|s| {
                let t = &s.scale_target_ref;
                self.target
                    .is(t.api_version.as_deref(), Some(t.kind.as_str()), &t.name)
            })
    }
}

/// Whether `so`'s HPA is named `hpa` ([`hpa_name`], without building the name).
fn has_hpa_name(so: &ScaledObject, hpa: &str) -> bool {
    match configured_hpa_name(so) {
        Some(name) => name == hpa,
        None => hpa.strip_prefix(DEFAULT_HPA_PREFIX) == so.metadata.name.as_deref(),
    }
}

/// The checks of a ScaledObject that need nothing but the object and its neighbours: the
/// spec's own rules ([`validate`]), the names, `useCachedMetrics`, a cpu- and memory-only
/// object at zero, one ScaledObject per workload, one HPA per workload, and HPA names. A valid
/// object's `scalingModifiers` come back compiled.
pub fn scaled_object(
    so: &ScaledObject,
    around: &Neighbours,
) -> Result<Option<Composite>, ValidationError> {
    let name = so.name_any();
    if name.len() > MAX_LABEL_VALUE {
        return Err(error(
            "metadata.name",
            format!(
                "{} characters; expected at most {MAX_LABEL_VALUE}, since the name is the value of the label {SCALED_OBJECT_NAME_LABEL} on its HPA",
                name.len()
            ),
        ));
    }
    let hpa = hpa_name(so);
    if hpa.len() > MAX_LABEL_VALUE {
        return Err(error(
            hpa_field(so),
            format!(
                "the HPA name {hpa:?} has {} characters; expected at most {MAX_LABEL_VALUE}",
                hpa.len()
            ),
        ));
    }
    let composite = validate(&so.spec)?;
    cached_metrics(&so.spec.triggers)?;
    let target = Workload::of(so);
    if target.has_pod_template()
        && so.spec.min_replicas() == 0
        && so.spec.triggers.iter().all(|t| is_resource(&t.type_))
    {
        return Err(error(
            "spec.minReplicaCount",
            "0 with only cpu and memory triggers: the HPA cannot scale from zero on them; expected 1 or more, or a trigger other than cpu and memory",
        ));
    }
    let created = so.metadata.creation_timestamp.as_ref();
    let first = |o: &&PeerScaledObject| o.name != name && o.precedes(created, &name);
    if let Some(other) = around
        .scaled_objects
        .iter()
        .filter(first)
        .find(|o| o.target == target)
    {
        return Err(error(
            "spec.scaleTargetRef",
            format!(
                "{target} is already scaled by ScaledObject {:?}; expected one ScaledObject per workload",
                other.name
            ),
        ));
    }
    if let Some(other) = around
        .scaled_objects
        .iter()
        .filter(first)
        .find(|o| o.hpa == hpa)
    {
        return Err(error(
            hpa_field(so),
            format!(
                "the HPA name {hpa:?} is already used by ScaledObject {:?}; expected an HPA name no other ScaledObject uses",
                other.name
            ),
        ));
    }
    let transfer = so
        .annotations()
        .get(ANNOTATION_TRANSFER_HPA_OWNERSHIP)
        .is_some_and(|v| v == "true");
    if !ownership_check_off(so.annotations())
        && let Some(foreign) = around.hpas.iter().find(|h| {
            // An HPA a ScaledObject owns is that object's: the rule of one ScaledObject per
            // workload decides between the two, so an older object is not pushed out by the
            // HPA of a newer one.
            h.target == target && !h.unchecked && h.owner.is_none() && !(transfer && h.name == hpa)
        })
    {
        return Err(error(
            "spec.scaleTargetRef",
            format!(
                "{target} is already scaled by the HorizontalPodAutoscaler {:?}, which this ScaledObject does not own; expected no other HPA on it: delete that HPA, or take it over with the annotation {ANNOTATION_TRANSFER_HPA_OWNERSHIP}: \"true\" and spec.advanced.horizontalPodAutoscalerConfig.name: {}",
                foreign.name, foreign.name
            ),
        ));
    }
    Ok(composite)
}

/// Where the HPA's name comes from: the name set in the spec, else the object's own name.
fn hpa_field(so: &ScaledObject) -> &'static str {
    if configured_hpa_name(so).is_some() {
        "spec.advanced.horizontalPodAutoscalerConfig.name"
    } else {
        "metadata.name"
    }
}

/// Triggers the HPA reads from the metrics server rather than from ebb.
fn is_resource(trigger_type: &str) -> bool {
    matches!(trigger_type, "cpu" | "memory")
}

/// `useCachedMetrics` is refused on cpu and memory (the HPA reads them itself) and cron (a
/// schedule, not a reading).
fn cached_metrics(triggers: &[ScaleTrigger]) -> Result<(), ValidationError> {
    match triggers.iter().enumerate().find(|(_, t)| {
        t.use_cached_metrics == Some(true) && matches!(t.type_.as_str(), "cpu" | "memory" | "cron")
    }) {
        Some((i, t)) => Err(error(
            format!("spec.triggers[{i}].useCachedMetrics"),
            format!(
                "not supported for {:?} triggers; expected false or unset",
                t.type_
            ),
        )),
        None => Ok(()),
    }
}

/// A cpu or memory trigger needs that resource's request on the containers the HPA averages
/// (the one named by the trigger's `containerName`, else every container), or a LimitRange of
/// the namespace that gives containers a default. A limit without a request counts: Kubernetes
/// makes the request equal to it.
pub fn resource_requests(
    so: &ScaledObject,
    pod: &PodSpec,
    limit_ranges: &[LimitRange],
) -> Result<(), ValidationError> {
    let target = Workload::of(so);
    for (i, trigger) in so.spec.triggers.iter().enumerate() {
        if !is_resource(&trigger.type_) {
            continue;
        }
        let resource = trigger.type_.as_str();
        if defaulted_by_limit_range(resource, limit_ranges) {
            continue;
        }
        let named = trigger
            .metadata
            .get("containerName")
            .filter(|n| !n.is_empty());
        for container in &pod.containers {
            if named.is_some_and(|n| *n != container.name) {
                continue;
            }
            let resources = container.resources.as_ref();
            let has = |map: Option<&std::collections::BTreeMap<String, _>>| {
                map.is_some_and(|m| m.contains_key(resource))
            };
            if !has(resources.and_then(|r| r.requests.as_ref()))
                && !has(resources.and_then(|r| r.limits.as_ref()))
            {
                return Err(error(
                    format!("spec.triggers[{i}]"),
                    format!(
                        "a {resource} trigger needs a {resource} request on container {:?} of {target}; expected resources.requests.{resource} there, or a LimitRange default for {resource} in the namespace",
                        container.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether a LimitRange gives every container a default request (or limit) of `resource`.
fn defaulted_by_limit_range(resource: &str, limit_ranges: &[LimitRange]) -> bool {
    limit_ranges
        .iter()
        .filter_map(|l| l.spec.as_ref())
        .flat_map(|s| &s.limits)
        .filter(|item| item.type_ == "Container")
        .any(|item| {
            [&item.default_request, &item.default]
                .iter()
                .any(|m| m.as_ref().is_some_and(|m| m.contains_key(resource)))
        })
}

/// A ScaledJob's own rules, as KEDA's controller checks them.
pub fn scaled_job(sj: &ScaledJob) -> Result<(), ValidationError> {
    let name = sj.name_any();
    if name.len() > MAX_LABEL_VALUE {
        return Err(error(
            "metadata.name",
            format!(
                "{} characters; expected at most {MAX_LABEL_VALUE}, since the name is the value of a label on each of its Jobs",
                name.len()
            ),
        ));
    }
    let spec = &sj.spec;
    if spec.triggers.is_empty() {
        return Err(error(
            "spec.triggers",
            "no triggers defined in the ScaledObject/ScaledJob",
        ));
    }
    replica_bounds(spec.min_replicas(), spec.max_replicas())?;
    let mut names = BTreeSet::new();
    for (i, t) in spec.triggers.iter().enumerate() {
        if t.metric_type.is_some() {
            return Err(error(
                format!("spec.triggers[{i}].metricType"),
                "cannot be set in ScaledJob triggers (a ScaledJob's metrics are always AverageValue, as in KEDA)",
            ));
        }
        if let Some(name) = t.name.as_deref().filter(|n| !n.is_empty())
            && !names.insert(name)
        {
            return Err(error(
                format!("spec.triggers[{i}].name"),
                format!(
                    "triggerName {name:?} is defined multiple times in the ScaledObject/ScaledJob, but it must be unique"
                ),
            ));
        }
    }
    cached_metrics(&spec.triggers)
}

/// KEDA's documented rule of a TriggerAuthentication or ClusterTriggerAuthentication: a pod
/// identity's `identityId`, when given, is not empty (no identityId means the default identity).
/// Nothing stricter: a rule KEDA does not have would refuse manifests that work with it.
pub fn trigger_authentication(spec: &TriggerAuthenticationSpec) -> Result<(), ValidationError> {
    match &spec.pod_identity {
        Some(identity) if identity.identity_id.as_deref() == Some("") => Err(error(
            "spec.podIdentity.identityId",
            "empty; expected an identity id, or no identityId to use the default identity",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn so(yaml: &str) -> ScaledObject {
        serde_norway::from_str(yaml).expect("a ScaledObject")
    }

    const WEB: &str = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: web, namespace: shop}\nspec:\n  scaleTargetRef: {name: web}\n  triggers: [{type: redis, metadata: {listName: q}}]\n";

    fn check(yaml: &str, around: &Neighbours) -> Result<(), String> {
        scaled_object(&so(yaml), around)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn hpa(name: &str, target: &str, owner: Option<&str>) -> PeerHpa {
        PeerHpa {
            name: name.into(),
            target: Workload::new(Some("apps/v1"), Some("Deployment"), target),
            owner: owner.map(String::from),
            unchecked: false,
        }
    }

    #[test]
    fn neighbours_are_the_namespace_s_objects_that_can_conflict() {
        let object = |name: &str, ns: &str, target: &str, extra: &str| {
            so(&format!(
                "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  scaleTargetRef: {target}\n{extra}  triggers: [{{type: redis, metadata: {{}}}}]\n"
            ))
        };
        let objects = [
            object("web", "shop", "{name: web}", ""),
            object(
                "same-target",
                "shop",
                "{name: web, apiVersion: apps/v1beta2}",
                "",
            ),
            object(
                "same-hpa",
                "shop",
                "{name: api}",
                "  advanced: {horizontalPodAutoscalerConfig: {name: keda-hpa-web}}\n",
            ),
            object("unrelated", "shop", "{name: api}", ""),
            object(
                "a-statefulset",
                "shop",
                "{name: web, kind: StatefulSet}",
                "",
            ),
            object("elsewhere", "other", "{name: web}", ""),
        ];
        let hpa = |name: &str,
                   ns: &str,
                   api_version: &str,
                   target: &str|
         -> HorizontalPodAutoscaler {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"maxReplicas": 2, "scaleTargetRef": {"apiVersion": api_version, "kind": "Deployment", "name": target}}
            }))
            .expect("an HPA")
        };
        let hpas = [
            hpa("web-hpa", "shop", "apps/v1", "web"),
            hpa("api-hpa", "shop", "apps/v1", "api"),
            hpa("web-hpa", "other", "apps/v1", "web"),
        ];
        let around = Neighbours::of(&objects[0], "shop", &objects, &hpas);
        let names: Vec<&str> = around
            .scaled_objects
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(names, ["same-target", "same-hpa"]);
        assert_eq!(around.hpas, [PeerHpa::of(&hpas[0])]);
        // The checks find the same conflict as with the whole namespace.
        let everything = Neighbours {
            scaled_objects: objects[1..5].iter().map(PeerScaledObject::of).collect(),
            hpas: hpas[..2].iter().map(PeerHpa::of).collect(),
        };
        assert_eq!(check(WEB, &around), check(WEB, &everything));
        assert!(check(WEB, &around).is_err());

        // From the watch caches: the same neighbours (the order is the cache's).
        let (so_cache, mut so_writer) = kube::runtime::reflector::store();
        for o in &objects {
            so_writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(o.clone()));
        }
        let (hpa_cache, mut hpa_writer) = kube::runtime::reflector::store();
        for h in &hpas {
            hpa_writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(h.clone()));
        }
        let cached =
            Neighbours::from_caches(&objects[0], "shop", Some(&so_cache), Some(&hpa_cache));
        let mut names: Vec<&str> = cached
            .scaled_objects
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["same-hpa", "same-target"]);
        assert_eq!(cached.hpas, around.hpas);
        assert_eq!(
            Neighbours::from_caches(&objects[0], "shop", None, None),
            Neighbours::default()
        );
    }

    #[test]
    fn one_scaled_object_per_workload_and_per_hpa_name() {
        let other = PeerScaledObject {
            name: "web-2".into(),
            created: Some(Time("2026-01-01T00:00:00Z".parse().unwrap())),
            target: Workload::new(Some("apps/v1beta2"), None, "web"),
            hpa: "keda-hpa-web-2".into(),
        };
        let around = Neighbours {
            scaled_objects: vec![other.clone()],
            hpas: vec![],
        };
        assert_eq!(
            check(WEB, &around).unwrap_err(),
            "spec.scaleTargetRef: Deployment \"web\" is already scaled by ScaledObject \"web-2\"; expected one ScaledObject per workload"
        );
        // Itself is no conflict; a StatefulSet of the same name is another workload.
        let itself = Neighbours {
            scaled_objects: vec![PeerScaledObject::of(&so(WEB))],
            hpas: vec![],
        };
        assert_eq!(check(WEB, &itself), Ok(()));
        let stateful = Neighbours {
            scaled_objects: vec![PeerScaledObject {
                target: Workload::new(Some("apps/v1"), Some("StatefulSet"), "web"),
                ..other.clone()
            }],
            hpas: vec![],
        };
        assert_eq!(check(WEB, &stateful), Ok(()));
        let same_hpa = Neighbours {
            scaled_objects: vec![PeerScaledObject {
                target: Workload::new(None, None, "api"),
                hpa: "keda-hpa-web".into(),
                ..other
            }],
            hpas: vec![],
        };
        assert_eq!(
            check(WEB, &same_hpa).unwrap_err(),
            "metadata.name: the HPA name \"keda-hpa-web\" is already used by ScaledObject \"web-2\"; expected an HPA name no other ScaledObject uses"
        );
    }

    #[test]
    fn of_two_stored_objects_on_one_workload_only_the_later_is_refused() {
        let at = |t: &str| Some(Time(t.parse().unwrap()));
        let stored = |name: &str, t: &str| {
            let mut so = so(&WEB.replace("name: web,", &format!("name: {name},")));
            so.metadata.creation_timestamp = at(t);
            so
        };
        let (older, newer) = (
            stored("a-older", "2026-01-01T00:00:00Z"),
            stored("b-newer", "2026-01-02T00:00:00Z"),
        );
        let around = |peer: &ScaledObject| Neighbours {
            scaled_objects: vec![PeerScaledObject::of(peer)],
            hpas: vec![],
        };
        assert!(scaled_object(&older, &around(&newer)).is_ok());
        assert!(scaled_object(&newer, &around(&older)).is_err());
        // Stored at the same second: the name decides.
        let twin = stored("a-twin", "2026-01-02T00:00:00Z");
        assert!(scaled_object(&twin, &around(&newer)).is_ok());
        assert!(scaled_object(&newer, &around(&twin)).is_err());
    }

    #[test]
    fn a_foreign_hpa_on_the_workload_is_refused_unless_taken_over_or_unchecked() {
        let foreign = Neighbours {
            scaled_objects: vec![],
            hpas: vec![hpa("web-hpa", "web", None)],
        };
        let err = check(WEB, &foreign).unwrap_err();
        assert!(
            err.starts_with("spec.scaleTargetRef: Deployment \"web\" is already scaled by the HorizontalPodAutoscaler \"web-hpa\", which this ScaledObject does not own"),
            "{err}"
        );
        // Its own HPA, or one on another workload, is fine.
        let own = Neighbours {
            scaled_objects: vec![],
            hpas: vec![
                hpa("keda-hpa-web", "web", Some("web")),
                hpa("x", "api", None),
            ],
        };
        assert_eq!(check(WEB, &own), Ok(()));
        // Another ScaledObject's HPA is that object's: one ScaledObject per workload decides.
        let theirs = Neighbours {
            scaled_objects: vec![],
            hpas: vec![hpa("keda-hpa-old", "web", Some("old"))],
        };
        assert!(check(WEB, &theirs).is_ok());
        // Taken over: the annotation and the HPA's name in the spec.
        let transfer = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: web\n  annotations: {scaledobject.keda.sh/transfer-hpa-ownership: \"true\"}\nspec:\n  scaleTargetRef: {name: web}\n  advanced: {horizontalPodAutoscalerConfig: {name: web-hpa}}\n  triggers: [{type: redis, metadata: {}}]\n";
        assert_eq!(check(transfer, &foreign), Ok(()));
        // The annotation alone names no HPA: still refused.
        let annotation_only = transfer.replace(
            "  advanced: {horizontalPodAutoscalerConfig: {name: web-hpa}}\n",
            "",
        );
        assert!(check(&annotation_only, &foreign).is_err());
        // validations.keda.sh/hpa-ownership: "false" on the HPA, or on the ScaledObject.
        let unchecked = Neighbours {
            scaled_objects: vec![],
            hpas: vec![PeerHpa {
                unchecked: true,
                ..hpa("web-hpa", "web", None)
            }],
        };
        assert_eq!(check(WEB, &unchecked), Ok(()));
        let off = WEB.replace(
            "metadata: {name: web, namespace: shop}",
            "metadata: {name: web, annotations: {validations.keda.sh/hpa-ownership: \"false\"}}",
        );
        assert_eq!(check(&off, &foreign), Ok(()));
    }

    #[test]
    fn names_fit_in_a_label() {
        let long = "a".repeat(64);
        let err = check(
            &WEB.replace("name: web, namespace", &format!("name: {long}, namespace")),
            &Neighbours::default(),
        )
        .unwrap_err();
        assert!(
            err.starts_with("metadata.name: 64 characters; expected at most 63"),
            "{err}"
        );
        // 55 characters make a 64-character default HPA name.
        let err = check(
            &WEB.replace(
                "name: web, namespace",
                &format!("name: {}, namespace", "b".repeat(55)),
            ),
            &Neighbours::default(),
        )
        .unwrap_err();
        assert!(
            err.starts_with("metadata.name: the HPA name \"keda-hpa-"),
            "{err}"
        );
        let named = WEB.replace(
            "  triggers:",
            &format!(
                "  advanced: {{horizontalPodAutoscalerConfig: {{name: {long}}}}}\n  triggers:"
            ),
        );
        let err = check(&named, &Neighbours::default()).unwrap_err();
        assert!(
            err.starts_with("spec.advanced.horizontalPodAutoscalerConfig.name: the HPA name"),
            "{err}"
        );
    }

    #[test]
    fn resource_triggers_at_zero_and_cached_metrics() {
        let cpu_only = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {name: web}\n  minReplicaCount: 0\n  triggers: [{type: cpu, metricType: Utilization, metadata: {value: \"50\"}}]\n";
        assert_eq!(
            check(cpu_only, &Neighbours::default()).unwrap_err(),
            "spec.minReplicaCount: 0 with only cpu and memory triggers: the HPA cannot scale from zero on them; expected 1 or more, or a trigger other than cpu and memory"
        );
        assert_eq!(
            check(
                &cpu_only.replace("minReplicaCount: 0", "minReplicaCount: 1"),
                &Neighbours::default()
            ),
            Ok(())
        );
        // KEDA checks Deployments and StatefulSets only.
        assert_eq!(
            check(
                &cpu_only.replace(
                    "{name: web}\n  min",
                    "{name: web, apiVersion: argoproj.io/v1alpha1, kind: Rollout}\n  min"
                ),
                &Neighbours::default()
            ),
            Ok(())
        );
        let cached = WEB.replace(
            "triggers: [{type: redis, metadata: {listName: q}}]",
            "triggers: [{type: redis, metadata: {}}, {type: cron, useCachedMetrics: true, metadata: {}}]",
        );
        assert_eq!(
            check(&cached, &Neighbours::default()).unwrap_err(),
            "spec.triggers[1].useCachedMetrics: not supported for \"cron\" triggers; expected false or unset"
        );
    }

    #[test]
    fn resource_triggers_need_requests_or_a_limit_range_default() {
        let so = so(
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {name: web}\n  minReplicaCount: 1\n  triggers: [{type: memory, metricType: Utilization, metadata: {value: \"50\", containerName: app}}]\n",
        );
        let pod = |requests: &str| -> PodSpec {
            serde_norway::from_str(&format!(
                "containers: [{{name: app, resources: {requests}}}, {{name: sidecar}}]"
            ))
            .unwrap()
        };
        assert_eq!(
            resource_requests(&so, &pod("{}"), &[])
                .unwrap_err()
                .to_string(),
            "spec.triggers[0]: a memory trigger needs a memory request on container \"app\" of Deployment \"web\"; expected resources.requests.memory there, or a LimitRange default for memory in the namespace"
        );
        // Only the named container counts; a limit makes the request.
        assert!(resource_requests(&so, &pod("{requests: {memory: 64Mi}}"), &[]).is_ok());
        assert!(resource_requests(&so, &pod("{limits: {memory: 64Mi}}"), &[]).is_ok());
        let range: LimitRange = serde_norway::from_str(
            "metadata: {name: defaults}\nspec: {limits: [{type: Container, defaultRequest: {memory: 32Mi}}]}",
        )
        .unwrap();
        assert!(resource_requests(&so, &pod("{}"), &[range]).is_ok());
        let pod_range: LimitRange = serde_norway::from_str(
            "metadata: {name: pods}\nspec: {limits: [{type: Pod, max: {memory: 1Gi}}]}",
        )
        .unwrap();
        assert!(resource_requests(&so, &pod("{}"), &[pod_range]).is_err());
    }

    #[test]
    fn scaled_job_rules() {
        let sj = |triggers: &str, extra: &str| -> ScaledJob {
            serde_norway::from_str(&format!(
                "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {{name: jobs}}\nspec:\n  jobTargetRef: {{template: {{spec: {{containers: []}}}}}}\n{extra}  triggers: {triggers}\n"
            ))
            .expect("a ScaledJob")
        };
        let check = |triggers: &str, extra: &str| {
            scaled_job(&sj(triggers, extra)).map_err(|e| e.to_string())
        };
        assert_eq!(check("[{type: redis, metadata: {}}]", ""), Ok(()));
        assert!(
            check("[]", "")
                .unwrap_err()
                .starts_with("spec.triggers: no triggers")
        );
        assert!(
            check("[{type: redis, metadata: {}, metricType: Value}]", "")
                .unwrap_err()
                .starts_with("spec.triggers[0].metricType:")
        );
        assert!(
            check(
                "[{type: redis, name: a, metadata: {}}, {type: redis, name: a, metadata: {}}]",
                ""
            )
            .unwrap_err()
            .starts_with("spec.triggers[1].name: triggerName \"a\"")
        );
        assert!(
            check("[{type: cron, useCachedMetrics: true, metadata: {}}]", "")
                .unwrap_err()
                .starts_with("spec.triggers[0].useCachedMetrics:")
        );
        assert_eq!(
            check(
                "[{type: redis, metadata: {}}]",
                "  minReplicaCount: 5\n  maxReplicaCount: 2\n"
            )
            .unwrap_err(),
            "spec.minReplicaCount: 5 is above maxReplicaCount 2; expected minReplicaCount <= maxReplicaCount"
        );
    }

    #[test]
    fn trigger_authentication_rules() {
        let check = |identity: &str| {
            let spec: TriggerAuthenticationSpec =
                serde_norway::from_str(&format!("podIdentity: {identity}")).unwrap();
            trigger_authentication(&spec).map_err(|e| e.to_string())
        };
        assert_eq!(check("{provider: azure-workload}"), Ok(()));
        assert_eq!(
            check("{provider: azure-workload, identityId: abc, identityTenantId: t}"),
            Ok(())
        );
        // Combinations KEDA accepts stay accepted.
        assert_eq!(
            check("{provider: azure-workload, identityTenantId: t}"),
            Ok(())
        );
        assert_eq!(
            check("{provider: aws, roleArn: r, identityOwner: keda}"),
            Ok(())
        );
        assert!(
            check("{provider: azure-workload, identityId: \"\"}")
                .unwrap_err()
                .starts_with("spec.podIdentity.identityId: empty")
        );
    }
}
