//! Builds a ScaledObject's scalers: resolves each trigger's authentication and the scale
//! target's container environment from the apiserver, then asks the registry.

use std::collections::BTreeMap;
use std::sync::Arc;

use ebb_crds::trigger_authentication::TriggerAuthenticationSpec;
use ebb_crds::{ClusterTriggerAuthentication, ScaledObject, TriggerAuthentication};
use ebb_scalers::{MetricSpec, Registry, ScalerError, Trigger};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret};
use kube::{Api, Client, ResourceExt};

use crate::auth::{self, AuthError, Fetched, Needs};
use crate::scale::poll::PolledTrigger;

/// Why a ScaledObject's scalers could not be built. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A trigger's authenticationRef names nothing.
    #[error("spec.triggers[{index}].authenticationRef: {kind} {name:?} not found")]
    AuthRefNotFound {
        /// The trigger.
        index: usize,
        /// TriggerAuthentication or ClusterTriggerAuthentication.
        kind: String,
        /// The name.
        name: String,
    },
    /// Resolving authentication or the environment failed.
    #[error("spec.triggers[{index}]: {source}")]
    Auth {
        /// The trigger (or the env source container's resolution, for every trigger).
        index: usize,
        /// What failed.
        source: AuthError,
    },
    /// The scaler refused its configuration.
    #[error(transparent)]
    Scaler(#[from] ScalerError),
    /// The apiserver failed.
    #[error("reading authentication: {0}")]
    Api(#[from] kube::Error),
}

/// A ScaledObject's built scalers.
pub struct Built {
    /// Scalers in trigger order.
    pub triggers: Vec<PolledTrigger>,
    /// Their metric specs, in trigger order.
    pub specs: Vec<MetricSpec>,
    /// `status.authenticationsTypes`: the referenced authentications' names.
    pub authentication_names: Vec<String>,
    /// Secrets, ConfigMaps or keys that were missing, each resolved to an empty parameter (as
    /// KEDA resolves them): what to report, naming the trigger, field, object and key.
    pub missing_auth: Vec<String>,
}

/// Reads named Secrets and ConfigMaps of `namespace`.
async fn fetch(client: &Client, namespace: &str, needs: &Needs) -> Result<Fetched, kube::Error> {
    let mut fetched = Fetched {
        namespace: namespace.to_string(),
        ..Default::default()
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in &needs.secrets {
        if let Some(secret) = secrets.get_opt(name).await? {
            let data = secret
                .data
                .unwrap_or_default()
                .into_iter()
                // Keys whose bytes are not text cannot be parameters: left out.
                .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
                .collect();
            fetched.secrets.insert(name.clone(), data);
        }
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in &needs.config_maps {
        if let Some(cm) = config_maps.get_opt(name).await? {
            fetched
                .config_maps
                .insert(name.clone(), cm.data.unwrap_or_default());
        }
    }
    Ok(fetched)
}

/// Builds the scalers of `so`. `pod` is the scale target's pod template, if it has one;
/// `ebb_namespace` is where ClusterTriggerAuthentications read their Secrets.
pub async fn build(
    client: &Client,
    registry: &Registry,
    so: &ScaledObject,
    pod: Option<&PodSpec>,
    ebb_namespace: &str,
) -> Result<Built, BuildError> {
    let namespace = so.namespace().unwrap_or_default();

    // The containers' environments, resolved once for every trigger.
    let mut envs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let default_container = so
        .spec
        .scale_target_ref
        .env_source_container_name
        .clone()
        .or_else(|| {
            pod.and_then(|p| p.containers.first())
                .map(|c| c.name.clone())
        });
    if let Some(pod) = pod {
        let fetched = fetch(client, &namespace, &auth::env_needs(pod)).await?;
        for container in &pod.containers {
            // A container whose environment cannot be resolved is left out; a trigger that
            // reads it gets a precise error below.
            if let Ok(env) = auth::container_env(container, &fetched) {
                envs.insert(container.name.clone(), env);
            }
        }
    }
    let resolved_env = default_container
        .as_deref()
        .and_then(|c| envs.get(c))
        .cloned()
        .unwrap_or_default();

    let mut built = Built {
        triggers: Vec::new(),
        specs: Vec::new(),
        authentication_names: Vec::new(),
        missing_auth: Vec::new(),
    };
    for (index, t) in so.spec.triggers.iter().enumerate() {
        let mut auth_params = BTreeMap::new();
        if let Some(reference) = &t.authentication_ref {
            let cluster = reference.kind.as_deref() == Some("ClusterTriggerAuthentication");
            let (spec, secret_namespace): (TriggerAuthenticationSpec, &str) = if cluster {
                let api: Api<ClusterTriggerAuthentication> = Api::all(client.clone());
                let cta = api.get_opt(&reference.name).await?.ok_or_else(|| {
                    BuildError::AuthRefNotFound {
                        index,
                        kind: "ClusterTriggerAuthentication".into(),
                        name: reference.name.clone(),
                    }
                })?;
                (cta.spec.auth.clone(), ebb_namespace)
            } else {
                let api: Api<TriggerAuthentication> = Api::namespaced(client.clone(), &namespace);
                let ta = api.get_opt(&reference.name).await?.ok_or_else(|| {
                    BuildError::AuthRefNotFound {
                        index,
                        kind: "TriggerAuthentication".into(),
                        name: reference.name.clone(),
                    }
                })?;
                (ta.spec, namespace.as_str())
            };
            let fetched = fetch(client, secret_namespace, &auth::needs(&spec)).await?;
            let resolved = auth::resolve(&spec, &fetched, &envs, default_container.as_deref())
                .map_err(|source| BuildError::Auth { index, source })?;
            built.missing_auth.extend(resolved.missing.iter().map(|m| {
                format!(
                    "spec.triggers[{index}] ({} {:?}): {m}",
                    reference.kind.as_deref().unwrap_or("TriggerAuthentication"),
                    reference.name
                )
            }));
            auth_params = resolved.params;
            if !built.authentication_names.contains(&reference.name) {
                built.authentication_names.push(reference.name.clone());
            }
        }
        let trigger = Trigger {
            index,
            trigger_type: t.type_.clone(),
            name: t.name.clone(),
            metadata: t.metadata.clone(),
            metric_type: t.metric_type.clone(),
            auth_params,
            resolved_env: resolved_env.clone(),
            scaled_object_name: so.name_any(),
            scaled_object_namespace: namespace.clone(),
        };
        let scaler: Arc<dyn ebb_scalers::Scaler> = Arc::from(registry.build(&trigger)?);
        built.specs.extend(scaler.metric_specs());
        built.triggers.push(PolledTrigger {
            index,
            name: t.name.clone(),
            scaler,
        });
    }
    Ok(built)
}
