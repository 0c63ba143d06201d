//! Trigger authentication and container environments, resolved from what was read from the
//! apiserver. Pure: the controller reads exactly the Secrets and ConfigMaps that [`needs`] and
//! [`env_needs`] name (never a list), then calls [`resolve`] and [`container_env`].
//!
//! Values are credentials: no error here ever contains one.

use std::collections::{BTreeMap, BTreeSet};

use ebb_crds::trigger_authentication::TriggerAuthenticationSpec;
use k8s_openapi::api::core::v1::{Container, PodSpec};

/// Why authentication could not be resolved. Names objects, keys and fields; never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A referenced Secret or ConfigMap does not exist.
    #[error("{field}: {kind} {name:?} not found in namespace {namespace:?}")]
    NotFound {
        /// The field that references it, e.g. `spec.secretTargetRef[0]`.
        field: String,
        /// `Secret` or `ConfigMap`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Where it was looked for.
        namespace: String,
    },
    /// The object exists but lacks the key.
    #[error("{field}: {kind} {name:?} has no key {key:?}")]
    MissingKey {
        /// The referencing field.
        field: String,
        /// `Secret` or `ConfigMap`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The key.
        key: String,
    },
    /// `env[]` names a container the scale target does not have.
    #[error("{field}: the scale target has no container {container:?}")]
    NoSuchContainer {
        /// The referencing field.
        field: String,
        /// The container name.
        container: String,
    },
    /// A provider ebb does not implement is configured.
    #[error("unsupported authentication providers: {0}")]
    Unsupported(String),
}

/// Secrets and ConfigMaps to read, by name, in one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Secret names.
    pub secrets: BTreeSet<String>,
    /// ConfigMap names.
    pub config_maps: BTreeSet<String>,
}

/// What was read: name -> (key -> value). A name missing from the map was not found.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Namespace they were read from (for messages).
    pub namespace: String,
    /// Secrets' decoded data.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// ConfigMaps' data.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

impl std::fmt::Debug for Fetched {
    // Values are credentials: names and keys only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = |m: &BTreeMap<String, BTreeMap<String, String>>| {
            m.iter()
                .map(|(name, data)| (name.clone(), data.keys().cloned().collect::<Vec<_>>()))
                .collect::<BTreeMap<_, _>>()
        };
        f.debug_struct("Fetched")
            .field("namespace", &self.namespace)
            .field("secrets", &keys(&self.secrets))
            .field("config_maps", &keys(&self.config_maps))
            .finish()
    }
}

impl Fetched {
    fn lookup(
        &self,
        field: String,
        kind: &'static str,
        name: &str,
        key: &str,
    ) -> Result<String, AuthError> {
        let objects = match kind {
            "Secret" => &self.secrets,
            _ => &self.config_maps,
        };
        let data = objects.get(name).ok_or_else(|| AuthError::NotFound {
            field: field.clone(),
            kind,
            name: name.to_string(),
            namespace: self.namespace.clone(),
        })?;
        data.get(key).cloned().ok_or_else(|| AuthError::MissingKey {
            field,
            kind,
            name: name.to_string(),
            key: key.to_string(),
        })
    }
}

/// The Secrets and ConfigMaps a TriggerAuthentication reads.
pub fn needs(spec: &TriggerAuthenticationSpec) -> Needs {
    Needs {
        secrets: spec
            .secret_target_ref
            .iter()
            .flatten()
            .map(|r| r.name.clone())
            .collect(),
        config_maps: spec
            .config_map_target_ref
            .iter()
            .flatten()
            .map(|r| r.name.clone())
            .collect(),
    }
}

/// Resolved authentication parameters, and the references that could not be read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Parameter -> value.
    pub params: BTreeMap<String, String>,
    /// Secrets, ConfigMaps or keys that are missing: their parameters resolved to an empty
    /// string, as KEDA resolves them. Each names the field, object and key, never a value.
    pub missing: Vec<AuthError>,
}

/// The authentication parameters, in KEDA's order: `env`, then `configMapTargetRef`, then
/// `secretTargetRef`; a later source overrides an earlier one for the same parameter, so a
/// Secret wins over a ConfigMap, which wins over the environment.
///
/// A missing Secret, ConfigMap or key resolves to an empty string, as in KEDA (manifests rely
/// on it, an empty Redis password for one); it is listed in [`Resolved::missing`] so that it is
/// reported.
///
/// `container_envs` maps each container of the scale target to its resolved environment;
/// `default_container` is the one `env[]` entries without `containerName` read.
pub fn resolve(
    spec: &TriggerAuthenticationSpec,
    fetched: &Fetched,
    container_envs: &BTreeMap<String, BTreeMap<String, String>>,
    default_container: Option<&str>,
) -> Result<Resolved, AuthError> {
    let unsupported = spec.unsupported_providers();
    if !unsupported.is_empty() {
        return Err(AuthError::Unsupported(unsupported.join(", ")));
    }
    let mut resolved = Resolved::default();
    for (i, e) in spec.env.iter().flatten().enumerate() {
        let field = format!("spec.env[{i}]");
        let container = e
            .container_name
            .as_deref()
            .filter(|c| !c.is_empty())
            .or(default_container)
            .unwrap_or_default();
        let env = container_envs
            .get(container)
            .ok_or_else(|| AuthError::NoSuchContainer {
                field: field.clone(),
                container: container.to_string(),
            })?;
        // As KEDA: an unset variable gives an empty parameter, which scalers treat as absent.
        resolved.params.insert(
            e.parameter.clone(),
            env.get(&e.name).cloned().unwrap_or_default(),
        );
    }
    let references = spec
        .config_map_target_ref
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| (format!("spec.configMapTargetRef[{i}]"), "ConfigMap", r))
        .chain(
            spec.secret_target_ref
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, r)| (format!("spec.secretTargetRef[{i}]"), "Secret", r)),
        );
    for (field, kind, r) in references {
        let value = match fetched.lookup(field, kind, &r.name, &r.key) {
            Ok(value) => value,
            Err(missing) => {
                resolved.missing.push(missing);
                String::new()
            }
        };
        resolved.params.insert(r.parameter.clone(), value);
    }
    Ok(resolved)
}

/// The Secrets and ConfigMaps a pod template's containers read their environment from
/// (`env[].valueFrom` and `envFrom`); optional references included.
pub fn env_needs(pod: &PodSpec) -> Needs {
    let mut needs = Needs::default();
    for c in &pod.containers {
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.secret_ref {
                needs.secrets.insert(r.name.clone());
            }
            if let Some(r) = &from.config_map_ref {
                needs.config_maps.insert(r.name.clone());
            }
        }
        for var in c.env.iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            if let Some(r) = &from.secret_key_ref {
                needs.secrets.insert(r.name.clone());
            }
            if let Some(r) = &from.config_map_key_ref {
                needs.config_maps.insert(r.name.clone());
            }
        }
    }
    needs
}

/// A container's environment as its pod would see it: `envFrom` first (with its prefix), then
/// `env`, which overrides. Literal values and Secret/ConfigMap references are resolved;
/// field and resource references (which need a running pod) are left out. A missing object or
/// key is an error unless the reference is `optional`.
pub fn container_env(
    container: &Container,
    fetched: &Fetched,
) -> Result<BTreeMap<String, String>, AuthError> {
    let mut env = BTreeMap::new();
    let prefix_field = format!("container {:?}", container.name);
    for (i, from) in container.env_from.iter().flatten().enumerate() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional, objects) = match (&from.secret_ref, &from.config_map_ref) {
            (Some(r), _) => ("Secret", &r.name, r.optional, &fetched.secrets),
            (None, Some(r)) => ("ConfigMap", &r.name, r.optional, &fetched.config_maps),
            (None, None) => continue,
        };
        match objects.get(name) {
            Some(data) => {
                for (k, v) in data {
                    env.insert(format!("{prefix}{k}"), v.clone());
                }
            }
            None if optional == Some(true) => {}
            None => {
                return Err(AuthError::NotFound {
                    field: format!("{prefix_field} envFrom[{i}]"),
                    kind,
                    name: name.clone(),
                    namespace: fetched.namespace.clone(),
                });
            }
        }
    }
    for (i, var) in container.env.iter().flatten().enumerate() {
        let field = format!("{prefix_field} env[{i}] ({})", var.name);
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(from)) => {
                let reference = match (&from.secret_key_ref, &from.config_map_key_ref) {
                    (Some(r), _) => Some(("Secret", &r.name, &r.key, r.optional)),
                    (None, Some(r)) => Some(("ConfigMap", &r.name, &r.key, r.optional)),
                    (None, None) => None,
                };
                match reference {
                    None => None,
                    Some((kind, name, key, optional)) => {
                        match fetched.lookup(field, kind, name, key) {
                            Ok(v) => Some(v),
                            Err(_) if optional == Some(true) => None,
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            env.insert(var.name.clone(), value);
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ta(yaml: &str) -> TriggerAuthenticationSpec {
        serde_norway::from_str(yaml).expect("spec")
    }

    fn fetched() -> Fetched {
        Fetched {
            namespace: "shop".into(),
            secrets: [(
                "redis-auth".to_string(),
                [
                    ("password".to_string(), "s3cret".to_string()),
                    ("user".to_string(), "app".to_string()),
                ]
                .into(),
            )]
            .into(),
            config_maps: [(
                "redis-config".to_string(),
                [("host".to_string(), "redis.shop:6379".to_string())].into(),
            )]
            .into(),
        }
    }

    fn envs() -> BTreeMap<String, BTreeMap<String, String>> {
        [
            (
                "app".to_string(),
                [("REDIS_USER".to_string(), "from-env".to_string())].into(),
            ),
            (
                "sidecar".to_string(),
                [("TOKEN".to_string(), "t0k3n".to_string())].into(),
            ),
        ]
        .into()
    }

    #[test]
    fn reads_only_the_named_objects() {
        let spec = ta(r"
secretTargetRef: [{parameter: password, name: redis-auth, key: password}, {parameter: username, name: other, key: u}]
configMapTargetRef: [{parameter: host, name: redis-config, key: host}]
");
        let needs = needs(&spec);
        assert_eq!(
            needs.secrets.into_iter().collect::<Vec<_>>(),
            ["other", "redis-auth"]
        );
        assert_eq!(
            needs.config_maps.into_iter().collect::<Vec<_>>(),
            ["redis-config"]
        );
    }

    #[test]
    fn resolves_each_source_and_the_secret_wins_over_the_config_map_over_env() {
        let spec = ta(r"
secretTargetRef:
- {parameter: password, name: redis-auth, key: password}
- {parameter: username, name: redis-auth, key: user}
configMapTargetRef:
- {parameter: host, name: redis-config, key: host}
- {parameter: password, name: redis-config, key: host}
env:
- {parameter: username, name: REDIS_USER}
- {parameter: host, name: REDIS_USER}
- {parameter: token, name: TOKEN, containerName: sidecar}
- {parameter: unset, name: NOT_SET}
");
        let resolved = resolve(&spec, &fetched(), &envs(), Some("app")).unwrap();
        let want: BTreeMap<String, String> = [
            // Secret over ConfigMap, Secret over env, ConfigMap over env: KEDA's order.
            ("password", "s3cret"),
            ("username", "app"),
            ("host", "redis.shop:6379"),
            ("token", "t0k3n"),
            ("unset", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(resolved.params, want);
        assert!(resolved.missing.is_empty());
    }

    #[test]
    fn a_missing_object_or_key_is_empty_and_reported_without_a_value() {
        let cases = [
            (
                "secretTargetRef: [{parameter: p, name: nope, key: k}]",
                "spec.secretTargetRef[0]: Secret \"nope\" not found in namespace \"shop\"",
            ),
            (
                "secretTargetRef: [{parameter: q, name: redis-auth, key: password}, {parameter: p, name: redis-auth, key: pass}]",
                "spec.secretTargetRef[1]: Secret \"redis-auth\" has no key \"pass\"",
            ),
            (
                "configMapTargetRef: [{parameter: p, name: redis-config, key: port}]",
                "spec.configMapTargetRef[0]: ConfigMap \"redis-config\" has no key \"port\"",
            ),
        ];
        for (yaml, want) in cases {
            let resolved = resolve(&ta(yaml), &fetched(), &envs(), Some("app")).unwrap();
            assert_eq!(
                resolved.params.get("p").map(String::as_str),
                Some(""),
                "{yaml}"
            );
            let missing: Vec<String> = resolved.missing.iter().map(|m| m.to_string()).collect();
            assert_eq!(missing, vec![want.to_string()], "{yaml}");
            assert!(!missing[0].contains("s3cret"));
        }
        // A missing Secret key does not erase what the environment gave: KEDA writes the
        // empty string over it, and so does ebb (a later source always wins).
        let resolved = resolve(
            &ta("env: [{parameter: p, name: REDIS_USER}]\nsecretTargetRef: [{parameter: p, name: nope, key: k}]"),
            &fetched(),
            &envs(),
            Some("app"),
        )
        .unwrap();
        assert_eq!(resolved.params["p"], "");
    }

    #[test]
    fn errors_name_the_field_and_object_but_no_value() {
        let cases = [
            (
                "env: [{parameter: p, name: X, containerName: web}]",
                "spec.env[0]: the scale target has no container \"web\"",
            ),
            (
                "hashiCorpVault: {address: 'http://vault', authentication: token, secrets: []}",
                "unsupported authentication providers: hashiCorpVault",
            ),
        ];
        for (yaml, want) in cases {
            let err = resolve(&ta(yaml), &fetched(), &envs(), Some("app")).unwrap_err();
            let text = err.to_string();
            assert_eq!(text, want, "{yaml}");
            assert!(!text.contains("s3cret"));
        }
        assert!(!format!("{:?}", fetched()).contains("s3cret"));
    }

    #[test]
    fn container_environment_as_the_pod_sees_it() {
        let pod: PodSpec = serde_norway::from_str(
            r"
containers:
- name: app
  envFrom:
  - configMapRef: {name: redis-config}
    prefix: CFG_
  - secretRef: {name: gone, optional: true}
  env:
  - {name: LITERAL, value: plain}
  - {name: CFG_host, value: overridden}
  - name: PASSWORD
    valueFrom: {secretKeyRef: {name: redis-auth, key: password}}
  - name: OPTIONAL
    valueFrom: {secretKeyRef: {name: redis-auth, key: nope, optional: true}}
  - name: NODE
    valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
",
        )
        .unwrap();
        let needs = env_needs(&pod);
        assert_eq!(
            needs.secrets.into_iter().collect::<Vec<_>>(),
            ["gone", "redis-auth"]
        );
        let env = container_env(&pod.containers[0], &fetched()).unwrap();
        let want: BTreeMap<String, String> = [
            ("CFG_host", "overridden"),
            ("LITERAL", "plain"),
            ("PASSWORD", "s3cret"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);

        let pod: PodSpec = serde_norway::from_str(
            r"
containers:
- name: app
  env:
  - name: PASSWORD
    valueFrom: {secretKeyRef: {name: redis-auth, key: nope}}
",
        )
        .unwrap();
        assert_eq!(
            container_env(&pod.containers[0], &fetched())
                .unwrap_err()
                .to_string(),
            "container \"app\" env[0] (PASSWORD): Secret \"redis-auth\" has no key \"nope\""
        );
    }
}
