//! The two ways to install ebb agree and are accepted by a real apiserver: `helm template` of
//! `deploy/helm/ebb` with its default values renders exactly the objects of `deploy/*.yaml`
//! (less the Namespace, which Helm leaves to `--create-namespace`) and of the generated CRDs,
//! and both sets pass `kubectl apply --dry-run=server` on the local cluster, admission (the
//! namespace's restricted Pod Security level) included. Each documented combination of the
//! chart's values ([`combinations`]) passes `helm lint --strict` and the values schema, changes
//! what it says and nothing else, and passes the dry run without a warning; the schema refuses
//! unknown keys, values outside their set and wrong types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration_tests::{TestEnv, expect_failure, expect_success, setup, workspace_root};
use serde::Deserialize;
use serde_json::{Value, json};

/// The chart's release name and namespace in the install instructions.
const RELEASE: &str = "ebb";
const NAMESPACE: &str = "ebb-system";

fn helm() -> PathBuf {
    xtask::cluster::binaries::Binaries::cached().path("helm")
}

fn chart() -> PathBuf {
    workspace_root().join("deploy/helm/ebb")
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out: Output = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: {e} (is the dev cluster built? `cargo xtask cluster up`)")
    });
    expect_success(&out, what)
}

/// The objects of a manifest, keyed by kind, namespace and name.
type Objects = BTreeMap<(String, String, String), Value>;

/// Every object in a multi-document YAML text, keyed by kind, namespace and name.
fn objects(yaml: &str, source: &str) -> Objects {
    let mut all = BTreeMap::new();
    for doc in serde_norway::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{source}: {e}"));
        if value.is_null() {
            continue;
        }
        let field = |path: &str| {
            value
                .pointer(path)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let key = (
            field("/kind"),
            field("/metadata/namespace"),
            field("/metadata/name"),
        );
        assert!(!key.0.is_empty(), "{source}: a document without a kind");
        assert!(
            all.insert(key.clone(), value).is_none(),
            "{source}: {key:?} twice"
        );
    }
    all
}

/// The `.yaml` files directly in `dir`, in name order (as `kubectl apply -f <dir>` reads them).
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn plain_manifests() -> String {
    let root = workspace_root();
    let mut text = String::new();
    for file in yaml_files(&root.join("crds/manifests"))
        .into_iter()
        .chain(yaml_files(&root.join("deploy")))
    {
        text.push_str("---\n");
        text.push_str(&std::fs::read_to_string(&file).expect("read a manifest"));
        text.push('\n');
    }
    text
}

/// `helm template` of the chart as `ebb` in `ebb-system`, CRDs included, with `extra` values.
fn helm_template_command(extra: &[&str]) -> Command {
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE, "--include-crds"])
        // The local cluster's version (offline, `helm template` assumes an old one).
        .args([
            "--kube-version",
            xtask::cluster::binaries::KUBERNETES_VERSION,
        ])
        .args(extra);
    cmd
}

fn helm_template(extra: &[&str]) -> String {
    run(
        &mut helm_template_command(extra),
        &format!("helm template deploy/helm/ebb {}", extra.join(" ")),
    )
}

/// `helm lint --strict` of the chart with `extra` values: warnings fail it too.
fn helm_lint_command(extra: &[&str]) -> Command {
    let mut cmd = Command::new(helm());
    cmd.args(["lint", "--strict"])
        .arg(chart())
        .args(["--namespace", NAMESPACE])
        .args([
            "--kube-version",
            xtask::cluster::binaries::KUBERNETES_VERSION,
        ])
        .args(extra);
    cmd
}

#[test]
fn helm_template_renders_the_plain_manifests() {
    let mut plain = objects(&plain_manifests(), "crds/manifests + deploy/*.yaml");
    let namespace = plain.remove(&key("Namespace", "", NAMESPACE));
    assert!(
        namespace.is_some(),
        "deploy/ creates the ebb-system Namespace"
    );
    let rendered = objects(&helm_template(&[]), "helm template");

    let only_plain: Vec<_> = plain
        .keys()
        .filter(|k| !rendered.contains_key(*k))
        .collect();
    let only_helm: Vec<_> = rendered
        .keys()
        .filter(|k| !plain.contains_key(*k))
        .collect();
    assert!(
        only_plain.is_empty() && only_helm.is_empty(),
        "objects only in deploy/: {only_plain:?}; only in the chart: {only_helm:?}"
    );
    for (key, value) in &plain {
        assert_eq!(
            &rendered[key], value,
            "{key:?} differs between the chart and deploy/"
        );
    }
    // A Deployment, a PodDisruptionBudget, the APIService: the set is the whole install.
    for kind in [
        "Deployment",
        "PodDisruptionBudget",
        "APIService",
        "CustomResourceDefinition",
    ] {
        assert!(
            plain.keys().any(|(k, _, _)| k == kind),
            "no {kind} in deploy/"
        );
    }
}

#[test]
fn the_chart_and_the_image_carry_the_workspace_version() {
    let version = env!("CARGO_PKG_VERSION");
    let chart_yaml: Value = serde_norway::from_str(
        &std::fs::read_to_string(chart().join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml parses");
    assert_eq!(chart_yaml["version"], version, "Chart.yaml version");
    assert_eq!(chart_yaml["appVersion"], version, "Chart.yaml appVersion");
    let plain = objects(&plain_manifests(), "deploy/");
    assert_eq!(
        plain[&key("Deployment", NAMESPACE, "ebb")]
            .pointer("/spec/template/spec/containers/0/image"),
        Some(&Value::String(format!("ghcr.io/ebb-sh/ebb:{version}"))),
        "deploy/30-deployment.yaml runs this version's image"
    );
}

/// `kubectl apply --dry-run=server` of `input` (YAML on stdin), with no default namespace: the
/// objects name theirs. Fails on any warning: a Pod Security violation (only a warning for a
/// Deployment), a deprecated API, an unknown or duplicate field. One warning is about the
/// cluster's copy and not the input, and is let through: kubectl's failed migration of an
/// object applied client-side before (by hand, with `kubectl apply -f deploy/`) to server-side
/// apply.
fn dry_run(env: &TestEnv, input: &str, what: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(&env.cluster.kubectl)
        .arg(format!("--kubeconfig={}", env.cluster.kubeconfig.display()))
        .args([
            "apply",
            "--dry-run=server",
            "--server-side",
            "--force-conflicts",
        ])
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to kubectl");
    let out = child.wait_with_output().expect("kubectl");
    let stdout = expect_success(&out, what);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("Warning"))
        .filter(|line| {
            !line.contains("failed to migrate kubectl.kubernetes.io/last-applied-configuration")
        })
        .collect();
    assert!(
        warnings.is_empty(),
        "{what}: the apiserver or kubectl warned:\n{stderr}"
    );
    // Every object went through the apiserver, none was skipped.
    let applied = stdout
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .count();
    let count = objects(input, what).len();
    assert_eq!(
        applied, count,
        "{what}: {count} objects, {applied} applied by the dry run:\n{stdout}"
    );
    stdout
}

/// Creates ebb's namespace as `deploy/00-namespace.yaml` says (a dry run creates nothing, so
/// the objects' namespace must exist already).
fn apply_namespace(env: &TestEnv) {
    let out = Command::new(&env.cluster.kubectl)
        .arg(format!("--kubeconfig={}", env.cluster.kubeconfig.display()))
        .args(["apply", "--server-side", "-f"])
        .arg(workspace_root().join("deploy/00-namespace.yaml"))
        .output()
        .expect("kubectl");
    expect_success(&out, "kubectl apply -f deploy/00-namespace.yaml");
}

#[tokio::test]
async fn the_plain_manifests_pass_a_server_side_dry_run() {
    let env = setup("deploy-dry-run").await;
    apply_namespace(&env);
    let out = dry_run(
        &env,
        &plain_manifests(),
        "dry run of crds/manifests + deploy/",
    );
    for object in ["deployment.apps/ebb", "poddisruptionbudget.policy/ebb"] {
        assert!(
            out.contains(object),
            "the dry run applied no {object}:\n{out}"
        );
    }
}

/// A documented way to set the chart's values (values.yaml, docs/configuration.md's "Helm
/// values", the chart's README): the `helm` arguments, the objects whose rendering it changes,
/// and what it must change in them.
struct Combination {
    name: &'static str,
    values: &'static [&'static str],
    /// `Kind/name` of each object added, removed or changed against the defaults' rendering.
    changes: &'static [&'static str],
    /// Checks the rendering (with the defaults' rendering beside it).
    took_effect: fn(rendered: &Objects, defaults: &Objects),
}

fn combinations() -> Vec<Combination> {
    vec![
        Combination {
            name: "defaults",
            values: &[],
            changes: &[],
            took_effect: |rendered, _| {
                let version = env!("CARGO_PKG_VERSION");
                assert_eq!(
                    args(rendered),
                    [
                        "run",
                        "--log-format=json",
                        "--apiservice=v1beta1.external.metrics.k8s.io",
                        "--admission-addr=0.0.0.0:9443",
                        "--admission-tls-secret=ebb-webhook-tls",
                        "--validating-webhook-configuration=ebb",
                    ]
                );
                let deployment = deployment(rendered);
                assert_eq!(deployment.pointer("/spec/replicas"), Some(&json!(2)));
                assert_eq!(
                    container(rendered).get("image"),
                    Some(&json!(format!("ghcr.io/ebb-sh/ebb:{version}"))),
                    "the image tag defaults to the chart's appVersion"
                );
                assert_eq!(
                    container(rendered).get("imagePullPolicy"),
                    None,
                    "the pull policy is left to the cluster"
                );
                assert_eq!(
                    pdb(rendered).and_then(|p| p.pointer("/spec/minAvailable")),
                    Some(&json!(1))
                );
                let webhook = webhook(rendered).expect("a ValidatingWebhookConfiguration");
                assert_eq!(webhook.pointer("/failurePolicy"), Some(&json!("Ignore")));
                assert_eq!(webhook.pointer("/namespaceSelector"), None);
                // The webhook is spared label and finalizer updates, by ebb's own expression.
                assert_eq!(
                    webhook.pointer("/matchConditions/0/expression"),
                    Some(&json!(ebb_operator::admission::SPEC_WRITTEN))
                );
            },
        },
        Combination {
            name: "the admission webhook disabled",
            values: &["--set", "admissionWebhook.enabled=false"],
            changes: &[
                "ClusterRole/ebb",
                "Deployment/ebb",
                "Role/ebb-webhook-certificate",
                "RoleBinding/ebb-webhook-certificate",
                "Service/ebb-webhook",
                "ValidatingWebhookConfiguration/ebb",
            ],
            took_effect: |rendered, defaults| {
                // Nothing of the webhook is rendered, and its rights go with it.
                let gone: Vec<_> = defaults
                    .keys()
                    .filter(|k| !rendered.contains_key(*k))
                    .collect();
                assert_eq!(
                    gone,
                    [
                        &key("Role", NAMESPACE, "ebb-webhook-certificate"),
                        &key("RoleBinding", NAMESPACE, "ebb-webhook-certificate"),
                        &key("Service", NAMESPACE, "ebb-webhook"),
                        &key("ValidatingWebhookConfiguration", "", "ebb"),
                    ],
                    "what admissionWebhook.enabled=false leaves out"
                );
                let container = container(rendered).to_string();
                assert!(
                    !container.contains("admission") && !container.contains("9443"),
                    "the container still serves the webhook: {container}"
                );
                let cluster_role = &rendered[&key("ClusterRole", "", "ebb")];
                assert!(
                    !cluster_role
                        .to_string()
                        .contains("validatingwebhookconfigurations"),
                    "the ClusterRole still grants the webhook's configuration: {cluster_role}"
                );
            },
        },
        Combination {
            name: "the webhook's failurePolicy Fail",
            values: &["--set", "admissionWebhook.failurePolicy=Fail"],
            changes: &["ValidatingWebhookConfiguration/ebb"],
            took_effect: |rendered, _| {
                assert_eq!(
                    webhook(rendered).and_then(|w| w.get("failurePolicy")),
                    Some(&json!("Fail"))
                );
            },
        },
        Combination {
            // With one replica, a PodDisruptionBudget of minAvailable 1 would block every drain.
            name: "one replica without leader election or PodDisruptionBudget",
            values: &[
                "--set",
                "replicaCount=1,leaderElection=false,podDisruptionBudget.enabled=false",
            ],
            changes: &["Deployment/ebb", "PodDisruptionBudget/ebb"],
            took_effect: |rendered, _| {
                assert_eq!(
                    deployment(rendered).pointer("/spec/replicas"),
                    Some(&json!(1))
                );
                assert_has_arg(rendered, "--leader-elect=false");
                assert_eq!(pdb(rendered), None, "a PodDisruptionBudget is rendered");
            },
        },
        Combination {
            name: "the PodDisruptionBudget disabled",
            values: &["--set", "podDisruptionBudget.enabled=false"],
            changes: &["PodDisruptionBudget/ebb"],
            took_effect: |rendered, _| {
                assert_eq!(pdb(rendered), None, "a PodDisruptionBudget is rendered");
            },
        },
        Combination {
            name: "three replicas, two of them kept through disruptions",
            values: &["--set", "replicaCount=3,podDisruptionBudget.minAvailable=2"],
            changes: &["Deployment/ebb", "PodDisruptionBudget/ebb"],
            took_effect: |rendered, _| {
                assert_eq!(
                    deployment(rendered).pointer("/spec/replicas"),
                    Some(&json!(3))
                );
                assert_eq!(
                    pdb(rendered).and_then(|p| p.pointer("/spec/minAvailable")),
                    Some(&json!(2))
                );
            },
        },
        Combination {
            name: "the PodDisruptionBudget's minAvailable as a percentage",
            values: &["--set", "podDisruptionBudget.minAvailable=50%"],
            changes: &["PodDisruptionBudget/ebb"],
            took_effect: |rendered, _| {
                assert_eq!(
                    pdb(rendered).and_then(|p| p.pointer("/spec/minAvailable")),
                    Some(&json!("50%"))
                );
            },
        },
        Combination {
            name: "one watched namespace",
            values: &["--set", "watchNamespace=shop"],
            changes: &["Deployment/ebb", "ValidatingWebhookConfiguration/ebb"],
            took_effect: |rendered, _| {
                assert_has_arg(rendered, "--watch-namespace=shop");
                // The webhook judges only the watched namespace's objects.
                assert_eq!(
                    webhook(rendered).and_then(|w| w.get("namespaceSelector")),
                    Some(&json!({"matchLabels": {"kubernetes.io/metadata.name": "shop"}}))
                );
            },
        },
        Combination {
            name: "another image, tag and pull policy",
            values: &[
                "--set",
                "image.repository=registry.example.com/mirror/ebb,image.tag=dev,image.pullPolicy=Always",
            ],
            changes: &["Deployment/ebb"],
            took_effect: |rendered, _| {
                assert_eq!(
                    container(rendered).get("image"),
                    Some(&json!("registry.example.com/mirror/ebb:dev"))
                );
                assert_eq!(
                    container(rendered).get("imagePullPolicy"),
                    Some(&json!("Always"))
                );
            },
        },
        Combination {
            // `--set` makes a number of a tag of digits; the schema takes it.
            name: "a tag of digits",
            values: &["--set", "image.tag=20261205"],
            changes: &["Deployment/ebb"],
            took_effect: |rendered, _| {
                assert_eq!(
                    container(rendered).get("image"),
                    Some(&json!("ghcr.io/ebb-sh/ebb:20261205"))
                );
            },
        },
        Combination {
            name: "plain logs",
            values: &["--set", "logFormat=plain"],
            changes: &["Deployment/ebb"],
            took_effect: |rendered, _| {
                assert_has_arg(rendered, "--log-format=plain");
                assert!(
                    !args(rendered).iter().any(|a| a == "--log-format=json"),
                    "--log-format=json is still passed"
                );
            },
        },
        Combination {
            name: "extra ebb run flags",
            values: &[
                "--set-json",
                r#"extraArgs=["--lease-name=ebb","--activation-budget=100"]"#,
            ],
            changes: &["Deployment/ebb"],
            took_effect: |rendered, _| {
                let args = args(rendered);
                assert!(
                    args.ends_with(&["--lease-name=ebb".into(), "--activation-budget=100".into()]),
                    "extraArgs are not the last of the args: {args:?}"
                );
            },
        },
        Combination {
            name: "other resources",
            values: &[
                "--set-json",
                r#"resources={"requests":{"cpu":"250m","memory":"128Mi"},"limits":{"cpu":"1","memory":"1Gi"}}"#,
            ],
            changes: &["Deployment/ebb"],
            took_effect: |rendered, _| {
                assert_eq!(
                    container(rendered).get("resources"),
                    Some(&json!({
                        "requests": {"cpu": "250m", "memory": "128Mi"},
                        "limits": {"cpu": "1", "memory": "1Gi"},
                    }))
                );
            },
        },
        Combination {
            name: "a node selector and tolerations",
            values: &[
                "--set-json",
                r#"nodeSelector={"kubernetes.io/os":"linux","node-role.example.com/ops":"true"}"#,
                "--set-json",
                r#"tolerations=[{"key":"dedicated","operator":"Equal","value":"ops","effect":"NoSchedule"}]"#,
            ],
            changes: &["Deployment/ebb"],
            took_effect: |rendered, _| {
                let pod = deployment(rendered)
                    .pointer("/spec/template/spec")
                    .expect("a pod spec");
                assert_eq!(
                    pod.get("nodeSelector"),
                    Some(
                        &json!({"kubernetes.io/os": "linux", "node-role.example.com/ops": "true"})
                    )
                );
                assert_eq!(
                    pod.get("tolerations"),
                    Some(&json!([
                        {"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}
                    ]))
                );
            },
        },
    ]
}

/// Each documented combination of values passes `helm lint --strict` and the values schema,
/// renders what it says, and the rendering passes a server-side dry run without a warning.
#[tokio::test]
async fn every_documented_values_combination_lints_renders_and_applies() {
    let env = setup("deploy-values").await;
    apply_namespace(&env);
    let defaults = objects(&helm_template(&[]), "helm template");
    for combination in combinations() {
        let Combination {
            name,
            values,
            changes,
            took_effect,
        } = combination;
        let shown = format!("{name} ({})", values.join(" "));
        println!("values: {shown}");
        run(
            &mut helm_lint_command(values),
            &format!("helm lint --strict, {shown}"),
        );
        let text = helm_template(values);
        let rendered = objects(&text, &format!("helm template, {shown}"));
        let mut differ: Vec<String> = rendered
            .keys()
            .chain(defaults.keys())
            .filter(|k| rendered.get(*k) != defaults.get(*k))
            .map(|(kind, _, name)| format!("{kind}/{name}"))
            .collect();
        differ.sort();
        differ.dedup();
        assert_eq!(
            differ, changes,
            "{shown}: the objects that differ from the defaults' rendering"
        );
        took_effect(&rendered, &defaults);
        dry_run(&env, &text, &format!("dry run of helm template, {shown}"));
    }
}

/// values.schema.json refuses a value the chart does not know or cannot use, naming it, before
/// anything is rendered (each combination above shows it accepts the documented ones).
#[test]
fn the_values_schema_refuses_unknown_keys_wrong_enums_and_wrong_types() {
    for (values, named) in [
        // A typo of a key, at the top and inside one of the chart's objects.
        (
            "replicaCont=3",
            "at '': additional properties 'replicaCont' not allowed",
        ),
        (
            "image.pullpolicy=Always",
            "at '/image': additional properties 'pullpolicy' not allowed",
        ),
        (
            "admissionWebhook.enable=false",
            "at '/admissionWebhook': additional properties 'enable' not allowed",
        ),
        // A value outside its fixed set.
        (
            "logFormat=xml",
            "at '/logFormat': value must be one of 'json', 'plain'",
        ),
        (
            "admissionWebhook.failurePolicy=fail",
            "at '/admissionWebhook/failurePolicy': value must be one of 'Ignore', 'Fail'",
        ),
        (
            "image.pullPolicy=always",
            "at '/image/pullPolicy': value must be one of '', 'Always', 'IfNotPresent', 'Never'",
        ),
        // Without leader election, one replica only.
        (
            "leaderElection=false",
            "at '/replicaCount': value must be 1",
        ),
        // The one APIService the chart creates and the HPA reads.
        (
            "metricsApi.apiservice=v1beta1.custom.metrics.k8s.io",
            "at '/metricsApi/apiservice': value must be 'v1beta1.external.metrics.k8s.io'",
        ),
        // A wrong type, or a number below its minimum.
        (
            "replicaCount=two",
            "at '/replicaCount': got string, want integer",
        ),
        (
            "leaderElection=no",
            "at '/leaderElection': got string, want boolean",
        ),
        (
            "replicaCount=0",
            "at '/replicaCount': minimum: got 0, want 1",
        ),
        (
            "extraArgs=--lease-name=ebb",
            "at '/extraArgs': got string, want array",
        ),
        (
            "nodeSelector.ssd=true",
            "at '/nodeSelector/ssd': got boolean, want string",
        ),
        // Not a namespace's name.
        (
            "watchNamespace=Shop",
            "at '/watchNamespace': 'Shop' does not match pattern",
        ),
    ] {
        let stderr = expect_failure(
            &helm_template_command(&["--set", values])
                .output()
                .expect("helm"),
            &format!("helm template --set {values}"),
        );
        assert!(
            stderr.contains("values don't meet the specifications of the schema")
                && stderr.contains(named),
            "helm template --set {values}: the error does not say {named:?}:\n{stderr}"
        );
    }
    // helm lint (and so install and upgrade) refuses them as well.
    let out = helm_lint_command(&["--set", "replicaCont=3"])
        .output()
        .expect("helm");
    let lint = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && lint.contains("additional properties 'replicaCont' not allowed"),
        "helm lint --set replicaCont=3 passed or did not name it:\n{lint}"
    );
}

/// An object's key in [`objects`].
fn key(kind: &str, namespace: &str, name: &str) -> (String, String, String) {
    (kind.into(), namespace.into(), name.into())
}

fn deployment(rendered: &Objects) -> &Value {
    rendered
        .get(&key("Deployment", NAMESPACE, "ebb"))
        .expect("the Deployment ebb")
}

fn container(rendered: &Objects) -> &Value {
    deployment(rendered)
        .pointer("/spec/template/spec/containers/0")
        .expect("the Deployment's container")
}

fn args(rendered: &Objects) -> Vec<String> {
    container(rendered)
        .get("args")
        .and_then(Value::as_array)
        .expect("the container's args")
        .iter()
        .map(|a| a.as_str().expect("a string arg").to_string())
        .collect()
}

fn assert_has_arg(rendered: &Objects, flag: &str) {
    let args = args(rendered);
    assert!(
        args.iter().any(|a| a == flag),
        "args {args:?}, without {flag}"
    );
}

fn pdb(rendered: &Objects) -> Option<&Value> {
    rendered.get(&key("PodDisruptionBudget", NAMESPACE, "ebb"))
}

/// The one webhook of the ValidatingWebhookConfiguration `ebb`, if rendered.
fn webhook(rendered: &Objects) -> Option<&Value> {
    rendered
        .get(&key("ValidatingWebhookConfiguration", "", "ebb"))
        .and_then(|c| c.pointer("/webhooks/0"))
}
