//! Trigger authentication and container environments, resolved from what was read from the
//! apiserver. Pure: the controller reads exactly the Secrets and ConfigMaps that [`needs`] and
//! [`env_needs`] name (never a list), then calls [`resolve`] and [`container_env`].
//!
//! Values are credentials: no error here ever contains one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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
    /// A bound service-account token could not be had.
    #[error(
        "{field}: no token for ServiceAccount {service_account:?} in namespace {namespace:?}: {reason}"
    )]
    Token {
        /// The referencing field.
        field: String,
        /// The service account.
        service_account: String,
        /// Its namespace.
        namespace: String,
        /// The apiserver's answer (never a token).
        reason: String,
    },
    /// `filePath` could not be read.
    #[error("spec.filePath: {0}")]
    FilePath(String),
}

/// Secrets and ConfigMaps to read, by name, in one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Secret names.
    pub secrets: BTreeSet<String>,
    /// ConfigMap names.
    pub config_maps: BTreeSet<String>,
    /// Service accounts to request a token for (`boundServiceAccountToken`).
    pub service_accounts: BTreeSet<String>,
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
    /// Bound tokens by service account, or the apiserver's refusal.
    pub tokens: BTreeMap<String, Result<String, String>>,
    /// The parameters of `filePath`'s file, or why it could not be read (`None`: no file).
    pub file: Option<Result<BTreeMap<String, String>, String>>,
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
            .field("tokens", &self.tokens.keys().collect::<Vec<_>>())
            .field(
                "file",
                &self
                    .file
                    .as_ref()
                    .map(|f| f.as_ref().map(|p| p.keys().collect::<Vec<_>>())),
            )
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
        service_accounts: spec
            .bound_service_account_token
            .iter()
            .flatten()
            .map(|b| b.service_account_name.clone())
            .collect(),
    }
}

/// Where `filePath`'s file is: `relative` under `root` (`--filepath-auth-root-path`), as KEDA
/// checks it: no root configured, an absolute path or one with `..` is refused.
pub fn file_path_within(root: Option<&Path>, relative: &str) -> Result<PathBuf, AuthError> {
    let Some(root) = root else {
        return Err(AuthError::FilePath(
            "ebb runs without --filepath-auth-root-path, so no file can be read".into(),
        ));
    };
    if Path::new(relative).is_absolute() || relative.contains("..") {
        return Err(AuthError::FilePath(format!(
            "{relative:?}: expected a path relative to --filepath-auth-root-path, without '..'"
        )));
    }
    Ok(root.join(relative))
}

/// The parameters in a `filePath` file: a JSON object of strings. The error never quotes the
/// text (it holds credentials).
pub fn parse_auth_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_str(text).map_err(|e| {
        format!(
            "expected a JSON object of string values (line {}, column {})",
            e.line(),
            e.column()
        )
    })
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
/// `boundServiceAccountToken` entries come last, each from its TokenRequest; a token that
/// could not be had is an empty parameter, listed in [`Resolved::missing`] (KEDA logs it and
/// goes on with an empty value).
///
/// `filePath`, in a ClusterTriggerAuthentication only (`cluster`), gives the file's parameters
/// and nothing else, as in KEDA.
///
/// `container_envs` maps each container of the scale target to its resolved environment;
/// `default_container` is the one `env[]` entries without `containerName` read.
pub fn resolve(
    spec: &TriggerAuthenticationSpec,
    cluster: bool,
    fetched: &Fetched,
    container_envs: &BTreeMap<String, BTreeMap<String, String>>,
    default_container: Option<&str>,
) -> Result<Resolved, AuthError> {
    let unsupported = spec.unsupported_providers();
    if !unsupported.is_empty() {
        return Err(AuthError::Unsupported(unsupported.join(", ")));
    }
    if spec.file_path.as_deref().is_some_and(|p| !p.is_empty()) {
        if !cluster {
            return Err(AuthError::FilePath(
                "only a ClusterTriggerAuthentication may read a file of ebb's pod, as in KEDA"
                    .into(),
            ));
        }
        return match &fetched.file {
            Some(Ok(params)) => Ok(Resolved {
                params: params.clone(),
                missing: Vec::new(),
            }),
            Some(Err(reason)) => Err(AuthError::FilePath(reason.clone())),
            None => Err(AuthError::FilePath("the file was not read".into())),
        };
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
    for (i, b) in spec
        .bound_service_account_token
        .iter()
        .flatten()
        .enumerate()
    {
        let value = match fetched.tokens.get(&b.service_account_name) {
            Some(Ok(token)) => token.clone(),
            other => {
                resolved.missing.push(AuthError::Token {
                    field: format!("spec.boundServiceAccountToken[{i}]"),
                    service_account: b.service_account_name.clone(),
                    namespace: fetched.namespace.clone(),
                    reason: match other {
                        Some(Err(reason)) => reason.clone(),
                        _ => "not requested".into(),
                    },
                });
                String::new()
            }
        };
        resolved.params.insert(b.parameter.clone(), value);
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
            tokens: [
                ("prometheus".to_string(), Ok("eyJ.t0k3n".to_string())),
                (
                    "forbidden".to_string(),
                    Err("serviceaccounts \"forbidden\" is forbidden".to_string()),
                ),
            ]
            .into(),
            file: None,
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
        let resolved = resolve(&spec, false, &fetched(), &envs(), Some("app")).unwrap();
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
            let resolved = resolve(&ta(yaml), false, &fetched(), &envs(), Some("app")).unwrap();
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
            false,
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
            let err = resolve(&ta(yaml), false, &fetched(), &envs(), Some("app")).unwrap_err();
            let text = err.to_string();
            assert_eq!(text, want, "{yaml}");
            assert!(!text.contains("s3cret"));
        }
        assert!(!format!("{:?}", fetched()).contains("s3cret"));
    }

    #[test]
    fn bound_service_account_tokens_come_last_and_a_refusal_is_empty_and_reported() {
        let spec = ta(r"
secretTargetRef: [{parameter: bearerToken, name: redis-auth, key: password}]
boundServiceAccountToken:
- {parameter: bearerToken, serviceAccountName: prometheus}
- {parameter: other, serviceAccountName: forbidden}
");
        assert_eq!(
            needs(&spec)
                .service_accounts
                .into_iter()
                .collect::<Vec<_>>(),
            ["forbidden", "prometheus"]
        );
        let resolved = resolve(&spec, false, &fetched(), &envs(), Some("app")).unwrap();
        assert_eq!(resolved.params["bearerToken"], "eyJ.t0k3n");
        assert_eq!(resolved.params["other"], "");
        let missing: Vec<String> = resolved.missing.iter().map(|m| m.to_string()).collect();
        assert_eq!(
            missing,
            [
                "spec.boundServiceAccountToken[1]: no token for ServiceAccount \"forbidden\" in namespace \"shop\": serviceaccounts \"forbidden\" is forbidden"
            ]
        );
        assert!(!format!("{:?}", fetched()).contains("t0k3n"));
    }

    #[test]
    fn file_path_is_for_cluster_authentications_under_the_root_only() {
        let root = Path::new("/etc/ebb/auth");
        assert_eq!(
            file_path_within(Some(root), "creds/api.json"),
            Ok(PathBuf::from("/etc/ebb/auth/creds/api.json"))
        );
        for (root, relative, want) in [
            (
                None,
                "creds.json",
                "ebb runs without --filepath-auth-root-path",
            ),
            (Some(root), "/etc/passwd", "expected a path relative"),
            (Some(root), "../../var/run/secrets/token", "without '..'"),
        ] {
            let err = file_path_within(root, relative).unwrap_err().to_string();
            assert!(
                err.starts_with("spec.filePath: ") && err.contains(want),
                "{err}"
            );
        }

        assert_eq!(
            parse_auth_file(r#"{"apiKey": "k3y", "host": "h"}"#),
            Ok([("apiKey", "k3y"), ("host", "h")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect())
        );
        for bad in [r#"{"apiKey": 12345}"#, "apiKey=k3y", "[]"] {
            let err = parse_auth_file(bad).unwrap_err();
            assert!(
                err.starts_with("expected a JSON object of string values"),
                "{err}"
            );
            assert!(!err.contains("12345") && !err.contains("k3y"), "{err}");
        }

        let spec = ta(
            "filePath: creds.json\nsecretTargetRef: [{parameter: password, name: redis-auth, key: password}]",
        );
        let mut with_file = fetched();
        with_file.file = Some(Ok([("apiKey".to_string(), "k3y".to_string())].into()));
        // The file's parameters and nothing else, as in KEDA.
        let resolved = resolve(&spec, true, &with_file, &envs(), Some("app")).unwrap();
        assert_eq!(resolved.params.keys().collect::<Vec<_>>(), ["apiKey"]);
        let err = resolve(&spec, false, &with_file, &envs(), Some("app")).unwrap_err();
        assert!(
            err.to_string()
                .contains("only a ClusterTriggerAuthentication"),
            "{err}"
        );
        with_file.file = Some(Err("cannot read /etc/ebb/auth/creds.json: not found".into()));
        let err = resolve(&spec, true, &with_file, &envs(), Some("app")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.filePath: cannot read /etc/ebb/auth/creds.json: not found"
        );
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
