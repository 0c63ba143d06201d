//! The two ways to install ebb agree and are accepted by a real apiserver: `helm template` of
//! `deploy/helm/ebb` with its default values renders exactly the objects of `deploy/*.yaml`
//! (less the Namespace, which Helm leaves to `--create-namespace`) and of the generated CRDs,
//! and both sets pass `kubectl apply --dry-run=server` on the local cluster, admission (the
//! namespace's restricted Pod Security level) included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration_tests::{TestEnv, expect_success, setup, workspace_root};
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

/// Every object in a multi-document YAML text, keyed by kind, namespace and name.
fn objects(yaml: &str, source: &str) -> BTreeMap<(String, String, String), Value> {
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

fn helm_template(extra: &[&str]) -> String {
    run(
        Command::new(helm())
            .args(["template", RELEASE])
            .arg(chart())
            .args(["--namespace", NAMESPACE, "--include-crds"])
            // The local cluster's version (offline, `helm template` assumes an old one).
            .args([
                "--kube-version",
                xtask::cluster::binaries::KUBERNETES_VERSION,
            ])
            .args(extra),
        "helm template deploy/helm/ebb",
    )
}

#[test]
fn helm_template_renders_the_plain_manifests() {
    let mut plain = objects(&plain_manifests(), "crds/manifests + deploy/*.yaml");
    let namespace = plain.remove(&("Namespace".into(), String::new(), NAMESPACE.into()));
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
    let deployment = &plain[&("Deployment".into(), NAMESPACE.into(), "ebb".into())];
    assert_eq!(
        deployment.pointer("/spec/template/spec/containers/0/image"),
        Some(&Value::String(format!("ghcr.io/ebb-sh/ebb:{version}"))),
        "deploy/30-deployment.yaml runs this version's image"
    );
    run(
        Command::new(helm())
            .arg("lint")
            .arg("--strict")
            .arg(chart()),
        "helm lint --strict deploy/helm/ebb",
    );
}

/// `kubectl apply --dry-run=server` of `input` (YAML on stdin), with no default namespace: the
/// objects name theirs. Fails on a Pod Security warning too (a violation is only a warning for
/// a Deployment). Other warnings depend on how the cluster's copies were applied before (a
/// CRD applied client-side by another test warns about migrating its annotation).
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
    assert!(
        !stderr.contains("PodSecurity"),
        "{what}: the apiserver warned:\n{stderr}"
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
async fn both_installs_pass_a_server_side_dry_run() {
    let env = setup("deploy-dry-run").await;
    apply_namespace(&env);

    let plain = dry_run(
        &env,
        &plain_manifests(),
        "dry run of crds/manifests + deploy/",
    );
    let rendered = dry_run(&env, &helm_template(&[]), "dry run of helm template");
    for out in [&plain, &rendered] {
        for object in ["deployment.apps/ebb", "poddisruptionbudget.policy/ebb"] {
            assert!(
                out.contains(object),
                "the dry run applied no {object}:\n{out}"
            );
        }
    }

    // Values that change the rendering still give objects the apiserver accepts.
    let custom = helm_template(&[
        "--set",
        "replicaCount=1,leaderElection=false,watchNamespace=shop,image.tag=dev,podDisruptionBudget.enabled=false",
    ]);
    let custom_objects = objects(&custom, "helm template --set ...");
    let deployment = &custom_objects[&("Deployment".into(), NAMESPACE.into(), "ebb".into())];
    let args = deployment
        .pointer("/spec/template/spec/containers/0/args")
        .cloned()
        .unwrap_or_default();
    for flag in ["--leader-elect=false", "--watch-namespace=shop"] {
        assert!(
            args.as_array().is_some_and(|a| a.iter().any(|v| v == flag)),
            "values gave args {args}, without {flag}"
        );
    }
    // The webhook judges only the watched namespace's objects.
    let configuration = &custom_objects[&(
        "ValidatingWebhookConfiguration".into(),
        String::new(),
        "ebb".into(),
    )];
    assert_eq!(
        configuration.pointer("/webhooks/0/namespaceSelector"),
        Some(&json!({"matchLabels": {"kubernetes.io/metadata.name": "shop"}})),
        "watchNamespace=shop"
    );
    assert!(
        !custom_objects
            .keys()
            .any(|(kind, _, _)| kind == "PodDisruptionBudget"),
        "podDisruptionBudget.enabled=false still renders a PodDisruptionBudget"
    );
    dry_run(&env, &custom, "dry run of helm template with custom values");

    // The installed webhook is spared label and finalizer updates, by ebb's own expression.
    let with = objects(&helm_template(&[]), "helm template");
    assert_eq!(
        with[&(
            "ValidatingWebhookConfiguration".into(),
            String::new(),
            "ebb".into()
        )]
            .pointer("/webhooks/0/matchConditions/0/expression"),
        Some(&json!(ebb_operator::admission::SPEC_WRITTEN))
    );

    // The webhook switched off: nothing of it is rendered, and its rights go with it.
    let without = objects(
        &helm_template(&["--set", "admissionWebhook.enabled=false"]),
        "helm template --set admissionWebhook.enabled=false",
    );
    let gone: Vec<_> = with.keys().filter(|k| !without.contains_key(*k)).collect();
    assert_eq!(
        gone,
        [
            &(
                "Role".into(),
                NAMESPACE.into(),
                "ebb-webhook-certificate".into()
            ),
            &(
                "RoleBinding".into(),
                NAMESPACE.into(),
                "ebb-webhook-certificate".into()
            ),
            &("Service".into(), NAMESPACE.into(), "ebb-webhook".into()),
            &(
                "ValidatingWebhookConfiguration".into(),
                String::new(),
                "ebb".into()
            ),
        ],
        "what admissionWebhook.enabled=false leaves out"
    );
    let deployment = &without[&("Deployment".into(), NAMESPACE.into(), "ebb".into())];
    let container = deployment
        .pointer("/spec/template/spec/containers/0")
        .cloned()
        .unwrap_or_default();
    assert!(
        !container.to_string().contains("admission") && !container.to_string().contains("9443"),
        "the container still serves the webhook: {container}"
    );
    let cluster_role = &without[&("ClusterRole".into(), String::new(), "ebb".into())];
    assert!(
        !cluster_role
            .to_string()
            .contains("validatingwebhookconfigurations"),
        "the ClusterRole still grants the webhook's configuration: {cluster_role}"
    );
    // failurePolicy is the value's.
    let failing = objects(
        &helm_template(&["--set", "admissionWebhook.failurePolicy=Fail"]),
        "helm template --set admissionWebhook.failurePolicy=Fail",
    );
    let configuration = &failing[&(
        "ValidatingWebhookConfiguration".into(),
        String::new(),
        "ebb".into(),
    )];
    assert_eq!(
        configuration.pointer("/webhooks/0/failurePolicy"),
        Some(&json!("Fail"))
    );
}
