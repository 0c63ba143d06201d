//! The scale target: any namespaced resource with a `/scale` subresource, found through
//! discovery, and the pod template its containers' environments are read from.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_crds::scaled_object::{GroupVersionKindResource, ScaleTarget};
use k8s_openapi::api::core::v1::PodSpec;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, Scope, pinned_kind};

/// How long a kind found through discovery is trusted before it is looked up again.
pub const KIND_TTL: Duration = Duration::from_secs(600);

/// Kinds found through discovery, shared by every reconcile: without it, each reconcile of each
/// ScaledObject would ask the apiserver's discovery again. Only kinds found are kept, so a kind
/// installed later (a CRD) is seen at the next reconcile.
#[derive(Default)]
pub struct Kinds {
    found: Mutex<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities, Instant)>>,
}

impl Kinds {
    /// Resolves `target` in `namespace`, through discovery at most once per kind and
    /// [`KIND_TTL`].
    pub async fn resolve(
        &self,
        client: &Client,
        target: &ScaleTarget,
        namespace: &str,
    ) -> Result<Target, TargetError> {
        Target::resolve_with(client, target, namespace, Some(self)).await
    }

    fn get(&self, gvk: &GroupVersionKind) -> Option<(ApiResource, ApiCapabilities)> {
        self.found
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(gvk)
            .filter(|(_, _, at)| at.elapsed() < KIND_TTL)
            .map(|(r, c, _)| (r.clone(), c.clone()))
    }

    fn put(&self, gvk: GroupVersionKind, resource: ApiResource, caps: ApiCapabilities) {
        self.found
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(gvk, (resource, caps, Instant::now()));
    }
}

/// Why the scale target cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `apiVersion` is not `group/version` or `version`.
    #[error("spec.scaleTargetRef.apiVersion: expected group/version such as apps/v1, got {0:?}")]
    ApiVersion(String),
    /// Discovery does not know the kind.
    #[error("spec.scaleTargetRef: the cluster serves no kind {kind} in {api_version}")]
    UnknownKind {
        /// The kind.
        kind: String,
        /// The apiVersion.
        api_version: String,
    },
    /// The kind has no `/scale` subresource or is cluster-scoped.
    #[error("spec.scaleTargetRef: {kind} in {api_version} {problem}")]
    NotScalable {
        /// The kind.
        kind: String,
        /// The apiVersion.
        api_version: String,
        /// What is missing.
        problem: &'static str,
    },
    /// The object does not exist.
    #[error("spec.scaleTargetRef: {kind} {name:?} not found in namespace {namespace:?}")]
    NotFound {
        /// The kind.
        kind: String,
        /// The name.
        name: String,
        /// The namespace.
        namespace: String,
    },
    /// The apiserver failed.
    #[error("reading the scale target: {0}")]
    Api(#[from] kube::Error),
}

/// A resolved scale target.
#[derive(Clone)]
pub struct Target {
    /// The target's API, in its namespace.
    pub api: Api<DynamicObject>,
    /// Its name.
    pub name: String,
    /// Its namespace (the ScaledObject's).
    pub namespace: String,
    /// `group/version.Kind` as KEDA writes `status.scaleTargetKind` (`apps/v1.Deployment`).
    pub kind_label: String,
    /// `status.scaleTargetGVKR`.
    pub gvkr: GroupVersionKindResource,
}

impl Target {
    /// Resolves `target` in `namespace` through discovery.
    pub async fn resolve(
        client: &Client,
        target: &ScaleTarget,
        namespace: &str,
    ) -> Result<Self, TargetError> {
        Self::resolve_with(client, target, namespace, None).await
    }

    async fn resolve_with(
        client: &Client,
        target: &ScaleTarget,
        namespace: &str,
        kinds: Option<&Kinds>,
    ) -> Result<Self, TargetError> {
        let api_version = target.api_version.as_deref().unwrap_or("apps/v1");
        let kind = target.kind.as_deref().unwrap_or("Deployment");
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) if !g.is_empty() && !v.is_empty() && !v.contains('/') => (g, v),
            None if !api_version.is_empty() => ("", api_version),
            _ => return Err(TargetError::ApiVersion(api_version.to_string())),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let cached = kinds.and_then(|k| k.get(&gvk));
        let (resource, caps) = match cached {
            Some(found) => found,
            None => {
                let found = lookup(client, &gvk, kind, api_version).await?;
                if let Some(kinds) = kinds {
                    kinds.put(gvk, found.0.clone(), found.1.clone());
                }
                found
            }
        };
        let not_scalable = |problem| TargetError::NotScalable {
            kind: kind.to_string(),
            api_version: api_version.to_string(),
            problem,
        };
        if caps.scope != Scope::Namespaced {
            return Err(not_scalable(
                "is cluster-scoped; expected a namespaced resource",
            ));
        }
        if !caps.subresources.iter().any(|(r, _)| r.plural == "scale") {
            return Err(not_scalable("has no /scale subresource"));
        }
        let gvkr = GroupVersionKindResource {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            resource: resource.plural.clone(),
        };
        Ok(Self {
            api: Api::namespaced_with(client.clone(), namespace, &resource),
            name: target.name.clone(),
            namespace: namespace.to_string(),
            kind_label: format!("{api_version}.{kind}"),
            gvkr,
        })
    }

    /// The target object, or NotFound.
    pub async fn object(&self) -> Result<DynamicObject, TargetError> {
        self.api
            .get_opt(&self.name)
            .await?
            .ok_or_else(|| TargetError::NotFound {
                kind: self.gvkr.kind.clone(),
                name: self.name.clone(),
                namespace: self.namespace.clone(),
            })
    }

    /// The replica count in `/scale`'s spec.
    pub async fn replicas(&self) -> Result<i32, TargetError> {
        let scale = self.api.get_scale(&self.name).await.map_err(|e| match e {
            kube::Error::Api(ref s) if s.code == 404 => TargetError::NotFound {
                kind: self.gvkr.kind.clone(),
                name: self.name.clone(),
                namespace: self.namespace.clone(),
            },
            other => TargetError::Api(other),
        })?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
    }

    /// Writes the replica count through `/scale`.
    pub async fn set_replicas(&self, replicas: i32) -> Result<(), TargetError> {
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        self.api
            .patch_scale(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

/// The pod template's spec of a workload (`spec.template.spec`), if it has one.
pub fn pod_spec(object: &DynamicObject) -> Option<PodSpec> {
    let template = object.data.get("spec")?.get("template")?.get("spec")?;
    serde_json::from_value(template.clone()).ok()
}

/// Looks `gvk` up through discovery.
async fn lookup(
    client: &Client,
    gvk: &GroupVersionKind,
    kind: &str,
    api_version: &str,
) -> Result<(ApiResource, ApiCapabilities), TargetError> {
    pinned_kind(client, gvk).await.map_err(|e| match e {
        kube::Error::Api(ref s) if s.code == 404 => TargetError::UnknownKind {
            kind: kind.to_string(),
            api_version: api_version.to_string(),
        },
        kube::Error::Discovery(_) => TargetError::UnknownKind {
            kind: kind.to_string(),
            api_version: api_version.to_string(),
        },
        other => TargetError::Api(other),
    })
}
