//! Builds the scalers of a ScaledObject or a ScaledJob: resolves each trigger's authentication
//! and the pod template's container environment from the apiserver, then asks the registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ebb_crds::scaled_object::ScaleTrigger;
use ebb_crds::trigger_authentication::TriggerAuthenticationSpec;
use ebb_crds::{ClusterTriggerAuthentication, ScaledJob, ScaledObject, TriggerAuthentication};
use ebb_scalers::{MetricSpec, Registry, ScalerError, Trigger};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret, ServiceAccount};
use kube::api::PostParams;
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
    /// The scaler refused its configuration, and some of its parameters were empty because
    /// their source was missing: both are said, since the second is usually the cause.
    #[error("{source}; empty parameters: {missing}")]
    ScalerWithMissingAuth {
        /// The scaler's refusal.
        source: ScalerError,
        /// What was missing (names, never values).
        missing: String,
    },
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
    /// When the scalers should be built again because a bound service-account token they hold
    /// nears its expiry (at 80 % of its life), if any.
    pub rebuild_after: Option<Duration>,
}

/// Where authentication comes from, besides the objects themselves.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Where ClusterTriggerAuthentications read their Secrets and ConfigMaps.
    pub cluster_object_namespace: String,
    /// `--filepath-auth-root-path`: the directory `filePath` is relative to (`None`: no file
    /// may be read).
    pub file_path_root: Option<PathBuf>,
    /// The life asked for each bound service-account token.
    pub token_expiry: Duration,
}

/// KEDA's default life of a bound service-account token.
pub const DEFAULT_TOKEN_EXPIRY: Duration = Duration::from_secs(3600);

impl AuthSettings {
    /// ClusterTriggerAuthentications read `namespace`; no file root; one-hour tokens.
    pub fn new(cluster_object_namespace: &str) -> Self {
        Self {
            cluster_object_namespace: cluster_object_namespace.to_string(),
            file_path_root: None,
            token_expiry: DEFAULT_TOKEN_EXPIRY,
        }
    }
}

/// Requests a token for each service account of `namespace`, with `expiry`; a refusal is kept
/// as its reason (never a token). Returns the tokens and the earliest expiry seen.
async fn request_tokens(
    client: &Client,
    namespace: &str,
    service_accounts: &std::collections::BTreeSet<String>,
    expiry: Duration,
) -> (BTreeMap<String, Result<String, String>>, Option<Duration>) {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let mut tokens = BTreeMap::new();
    let mut shortest: Option<Duration> = None;
    for name in service_accounts {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(i64::try_from(expiry.as_secs()).unwrap_or(i64::MAX)),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = match api
            .create_token_request(name, &PostParams::default(), &request)
            .await
        {
            Ok(TokenRequest {
                status: Some(status),
                ..
            }) if !status.token.is_empty() => {
                // The apiserver may grant a shorter life than asked.
                let life = Duration::try_from(
                    status
                        .expiration_timestamp
                        .0
                        .duration_since(jiff::Timestamp::now()),
                )
                .unwrap_or(Duration::ZERO)
                .min(expiry);
                shortest = Some(shortest.map_or(life, |s| s.min(life)));
                Ok(status.token)
            }
            Ok(_) => Err("the apiserver answered without a token".to_string()),
            Err(kube::Error::Api(status)) => Err(status.message),
            Err(e) => Err(e.to_string()),
        };
        tokens.insert(name.clone(), answer);
    }
    (tokens, shortest)
}

/// Reads `filePath`'s parameters under `root`; the error names the path, never the content.
async fn read_auth_file(
    root: Option<&Path>,
    relative: &str,
) -> Result<BTreeMap<String, String>, String> {
    let path = auth::file_path_within(root, relative).map_err(|e| match e {
        AuthError::FilePath(reason) => reason,
        other => other.to_string(),
    })?;
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?;
    auth::parse_auth_file(&text).map_err(|reason| format!("{}: {reason}", path.display()))
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

/// The object whose triggers are built: a ScaledObject or a ScaledJob.
pub struct Owner<'a> {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `spec.triggers`.
    pub triggers: &'a [ScaleTrigger],
    /// The container whose environment `*FromEnv` parameters read (the first when unset).
    pub env_source_container_name: Option<&'a str>,
}

impl<'a> Owner<'a> {
    /// A ScaledObject's triggers; the environment is its scale target's.
    pub fn scaled_object(so: &'a ScaledObject) -> Self {
        Self {
            namespace: so.namespace().unwrap_or_default(),
            name: so.name_any(),
            triggers: &so.spec.triggers,
            env_source_container_name: so
                .spec
                .scale_target_ref
                .env_source_container_name
                .as_deref(),
        }
    }

    /// A ScaledJob's triggers; the environment is its Job template's.
    pub fn scaled_job(sj: &'a ScaledJob) -> Self {
        Self {
            namespace: sj.namespace().unwrap_or_default(),
            name: sj.name_any(),
            triggers: &sj.spec.triggers,
            env_source_container_name: sj.spec.env_source_container_name.as_deref(),
        }
    }
}

/// Builds the scalers of `owner`. `pod` is the pod template whose containers' environment
/// `*FromEnv` parameters read, if there is one; `settings` say where
/// ClusterTriggerAuthentications read their Secrets and files.
pub async fn build(
    client: &Client,
    registry: &Registry,
    owner: &Owner<'_>,
    pod: Option<&PodSpec>,
    settings: &AuthSettings,
) -> Result<Built, BuildError> {
    let namespace = owner.namespace.clone();

    // The containers' environments, resolved once for every trigger.
    let mut envs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let default_container = owner
        .env_source_container_name
        .map(str::to_string)
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
        rebuild_after: None,
    };
    for (index, t) in owner.triggers.iter().enumerate() {
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
                (
                    cta.spec.auth.clone(),
                    settings.cluster_object_namespace.as_str(),
                )
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
            let needs = auth::needs(&spec);
            let mut fetched = fetch(client, secret_namespace, &needs).await?;
            // Tokens are for service accounts of the owner's namespace, for either kind.
            if !needs.service_accounts.is_empty() {
                let (tokens, life) = request_tokens(
                    client,
                    &namespace,
                    &needs.service_accounts,
                    settings.token_expiry,
                )
                .await;
                fetched.tokens = tokens;
                if let Some(life) = life {
                    let refresh = life.mul_f64(0.8);
                    built.rebuild_after =
                        Some(built.rebuild_after.map_or(refresh, |r| r.min(refresh)));
                }
            }
            if cluster && let Some(relative) = spec.file_path.as_deref().filter(|p| !p.is_empty()) {
                fetched.file =
                    Some(read_auth_file(settings.file_path_root.as_deref(), relative).await);
            }
            let resolved = auth::resolve(
                &spec,
                cluster,
                &fetched,
                &envs,
                default_container.as_deref(),
            )
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
            scaled_object_name: owner.name.clone(),
            scaled_object_namespace: namespace.clone(),
        };
        let scaler: Arc<dyn ebb_scalers::Scaler> =
            Arc::from(registry.build(&trigger).map_err(|source| {
                let prefix = format!("spec.triggers[{index}] ");
                let missing: Vec<&str> = built
                    .missing_auth
                    .iter()
                    .filter(|m| m.starts_with(&prefix))
                    .map(String::as_str)
                    .collect();
                if missing.is_empty() {
                    BuildError::Scaler(source)
                } else {
                    BuildError::ScalerWithMissingAuth {
                        source,
                        missing: missing.join("; "),
                    }
                }
            })?);
        built.specs.extend(scaler.metric_specs());
        built.triggers.push(PolledTrigger {
            index,
            name: t.name.clone(),
            scaler,
        });
    }
    Ok(built)
}
