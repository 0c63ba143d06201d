//! ebb's CRDs on the real apiserver: KEDA manifests apply and read back unchanged, nothing is
//! pruned, `kubectl get` prints KEDA's columns, and invalid objects are refused by the schema.

use integration_tests::{
    TestEnv, crd_manifest_paths, expect_failure, expect_success, fixture, setup,
};
use serde_json::{Value, json};

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("valid YAML"))
        .collect()
}

/// Applies `docs` with kubectl (as a user would) and reads each back as JSON.
fn apply_and_read_back(env: &TestEnv, docs: &[Value]) -> Vec<Value> {
    let text = docs
        .iter()
        .map(|d| serde_json::to_string(d).expect("json"))
        .collect::<Vec<_>>()
        .join("\n");
    expect_success(
        &env.kubectl_with_stdin(&["apply", "-f", "-"], Some(&text)),
        "kubectl apply",
    );
    docs.iter()
        .map(|doc| {
            let kind = doc["kind"].as_str().expect("kind").to_lowercase();
            let name = doc["metadata"]["name"].as_str().expect("name");
            let out = expect_success(
                &env.kubectl(&["get", &format!("{kind}.keda.sh"), name, "-o", "json"]),
                "kubectl get",
            );
            serde_json::from_str(&out).expect("json")
        })
        .collect()
}

#[tokio::test]
async fn crd_manifests_apply_with_kubectl() {
    let env = setup("crd-apply").await;
    let dir = integration_tests::workspace_root().join("crds/manifests");
    // Server-side, as documented: the ScaledJob CRD (a whole JobSpec, about 550 KB) is too
    // large for client-side apply's last-applied annotation, as KEDA's is.
    let out = expect_success(
        &env.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &dir.display().to_string(),
        ]),
        "kubectl apply --server-side -f crds/manifests/",
    );
    for path in crd_manifest_paths().expect("manifests") {
        let name = path
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        assert!(
            out.contains(&name),
            "kubectl apply output names {name}: {out}"
        );
    }
    let established = expect_success(
        &env.kubectl(&[
            "get",
            "crd",
            "scaledobjects.keda.sh",
            "scaledjobs.keda.sh",
            "triggerauthentications.keda.sh",
            "clustertriggerauthentications.keda.sh",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Established\")].status}{\" \"}{end}",
        ]),
        "kubectl get crd",
    );
    assert_eq!(established.trim(), "True True True True");
}

#[tokio::test]
async fn keda_docs_manifests_read_back_unchanged() {
    let env = setup("keda-docs-round-trip").await;
    let docs = yaml_documents(&fixture("keda-redis-list.yaml"));
    let stored = apply_and_read_back(&env, &docs);
    for (sent, got) in docs.iter().zip(&stored) {
        assert_eq!(got["apiVersion"], "keda.sh/v1alpha1");
        assert_eq!(got["kind"], sent["kind"]);
        assert_eq!(
            got["spec"], sent["spec"],
            "{} spec changed in storage",
            sent["kind"]
        );
    }
    // `kubectl get so` / `ta` find them under KEDA's short names.
    let names = expect_success(&env.kubectl(&["get", "so,ta", "-o", "name"]), "get so,ta");
    assert!(
        names.contains("scaledobject.keda.sh/orders-worker"),
        "{names}"
    );
    assert!(
        names.contains("triggerauthentication.keda.sh/redis-auth"),
        "{names}"
    );
}

#[tokio::test]
async fn every_field_is_stored_without_pruning() {
    let env = setup("every-field").await;
    let docs = [
        yaml_documents(&fixture("scaledobject-every-field.yaml")).remove(0),
        yaml_documents(&fixture("triggerauthentication-every-field.yaml")).remove(0),
    ];
    let stored = apply_and_read_back(&env, &docs);
    for (sent, got) in docs.iter().zip(&stored) {
        assert_eq!(
            got["spec"], sent["spec"],
            "{} lost fields in storage",
            sent["kind"]
        );
    }
    assert_eq!(
        stored[0]["metadata"]["annotations"]["autoscaling.keda.sh/paused-scale-in"],
        "true"
    );

    // The cluster-scoped kind, under a name unique to this test.
    let mut cta =
        yaml_documents(&fixture("clustertriggerauthentication-every-field.yaml")).remove(0);
    let cta_name = integration_tests::unique_name("every-field-cta");
    cta["metadata"]["name"] = json!(cta_name);
    let got = apply_and_read_back(&env, std::slice::from_ref(&cta)).remove(0);
    assert_eq!(
        got["spec"], cta["spec"],
        "ClusterTriggerAuthentication lost fields"
    );
    assert!(got["metadata"].get("namespace").is_none(), "cluster-scoped");
    expect_success(
        &env.kubectl(&["delete", "cta", &cta_name, "--wait=false"]),
        "delete cta",
    );

    // Status goes through the status subresource; every KEDA status field survives it.
    let status = yaml_documents(&fixture("scaledobject-status-every-field.yaml")).remove(0);
    let patch = json!({ "status": status }).to_string();
    expect_success(
        &env.kubectl(&[
            "patch",
            "so",
            "every-field",
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ]),
        "patch status",
    );
    let got: Value = serde_json::from_str(&expect_success(
        &env.kubectl(&["get", "so", "every-field", "-o", "json"]),
        "get so",
    ))
    .expect("json");
    assert_eq!(got["status"], status, "status lost fields in storage");
}

#[tokio::test]
async fn fallback_behavior_defaults_to_static_as_in_keda() {
    let env = setup("fallback-default").await;
    let mut so = yaml_documents(&fixture("keda-redis-list.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "ScaledObject")
        .expect("ScaledObject");
    so["spec"]["fallback"] = json!({"failureThreshold": 3, "replicas": 2});
    let got = apply_and_read_back(&env, std::slice::from_ref(&so)).remove(0);
    // Exactly what was sent plus KEDA's one schema default: nothing else is filled in.
    let mut expected = so["spec"].clone();
    expected["fallback"]["behavior"] = json!("static");
    assert_eq!(got["spec"], expected);
}

#[tokio::test]
async fn kubectl_get_prints_keda_columns() {
    let env = setup("printer-columns").await;
    let docs = yaml_documents(&fixture("keda-redis-list.yaml"));
    apply_and_read_back(&env, &docs);
    let patch = json!({"status": {
        "scaleTargetKind": "apps/v1.Deployment",
        "triggersTypes": "redis",
        "authenticationsTypes": "redis-auth",
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "Active", "status": "False"},
            {"type": "Fallback", "status": "False"},
            {"type": "Paused", "status": "False"}
        ]
    }})
    .to_string();
    expect_success(
        &env.kubectl(&[
            "patch",
            "so",
            "orders-worker",
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ]),
        "patch status",
    );
    let table = expect_success(&env.kubectl(&["get", "so"]), "kubectl get so");
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SCALETARGETKIND",
            "SCALETARGETNAME",
            "MIN",
            "MAX",
            "READY",
            "ACTIVE",
            "FALLBACK",
            "PAUSED",
            "TRIGGERS",
            "AUTHENTICATIONS",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(
        &row[..11],
        [
            "orders-worker",
            "apps/v1.Deployment",
            "orders-worker",
            "0",
            "10",
            "True",
            "False",
            "False",
            "False",
            "redis",
            "redis-auth"
        ]
    );

    let ta = expect_success(&env.kubectl(&["get", "ta"]), "kubectl get ta");
    let header: Vec<&str> = ta
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    // KEDA's TriggerAuthentication columns have no Age.
    assert_eq!(
        header,
        ["NAME", "PODIDENTITY", "SECRET", "ENV", "VAULTADDRESS"]
    );
    let wide = expect_success(&env.kubectl(&["get", "ta", "-o", "wide"]), "get ta -o wide");
    assert!(
        wide.lines()
            .next()
            .expect("header")
            .contains("SCALEDOBJECTS"),
        "{wide}"
    );

    let cta_name = integration_tests::unique_name("columns-cta");
    let cta = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ClusterTriggerAuthentication",
        "metadata": {"name": cta_name},
        "spec": {"secretTargetRef": [{"parameter": "password", "name": "redis-secret", "key": "pw"}]}
    });
    expect_success(
        &env.kubectl_with_stdin(&["apply", "-f", "-"], Some(&cta.to_string())),
        "apply cta",
    );
    let table = expect_success(&env.kubectl(&["get", "cta", &cta_name]), "kubectl get cta");
    expect_success(
        &env.kubectl(&["delete", "cta", &cta_name, "--wait=false"]),
        "delete cta",
    );
    let mut lines = table.lines();
    let header_line = lines.next().expect("header");
    let header: Vec<&str> = header_line.split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PODIDENTITY",
            "SECRET",
            "ENV",
            "FILEPATH",
            "VAULTADDRESS"
        ]
    );
    // Empty columns print blank, so read the row by the header's column offsets.
    let row = lines.next().expect("row");
    let column = |name: &str| {
        let start = header_line.find(name).expect("column in header");
        row.get(start..)
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("")
    };
    assert_eq!(column("NAME"), cta_name);
    assert_eq!(column("SECRET"), "redis-secret");
}

#[tokio::test]
async fn invalid_objects_are_refused_with_the_schema_message() {
    let env = setup("invalid-objects").await;
    let valid = yaml_documents(&fixture("keda-redis-list.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "ScaledObject")
        .expect("ScaledObject");
    type Mutation = fn(&mut Value);
    let cases: [(&str, Mutation, &str); 8] = [
        (
            "missing scaleTargetRef",
            |so| {
                so["spec"]
                    .as_object_mut()
                    .expect("spec")
                    .remove("scaleTargetRef");
            },
            "spec.scaleTargetRef: Required value",
        ),
        (
            "empty triggers",
            |so| so["spec"]["triggers"] = json!([]),
            "spec.triggers: Invalid value",
        ),
        (
            "missing triggers",
            |so| {
                so["spec"].as_object_mut().expect("spec").remove("triggers");
            },
            "spec.triggers: Required value",
        ),
        (
            "minReplicaCount as a word",
            |so| so["spec"]["minReplicaCount"] = json!("two"),
            "spec.minReplicaCount: Invalid value: \"string\": spec.minReplicaCount in body must be of type integer",
        ),
        (
            "trigger metadata value not a string",
            |so| so["spec"]["triggers"][0]["metadata"]["listLength"] = json!(5),
            "must be of type string",
        ),
        (
            "trigger without a type",
            |so| {
                so["spec"]["triggers"][0]
                    .as_object_mut()
                    .expect("trigger")
                    .remove("type");
            },
            "spec.triggers[0].type: Required value",
        ),
        (
            "pollingInterval of zero",
            |so| so["spec"]["pollingInterval"] = json!(0),
            "spec.pollingInterval in body should be greater than or equal to 1",
        ),
        (
            "unknown fallback behavior",
            |so| {
                so["spec"]["fallback"] =
                    json!({"failureThreshold": 3, "replicas": 1, "behavior": "sometimes"})
            },
            "spec.fallback.behavior: Unsupported value: \"sometimes\"",
        ),
    ];
    for (what, mutate, expected) in cases {
        let mut so = valid.clone();
        mutate(&mut so);
        let err = expect_failure(
            &env.kubectl_with_stdin(&["create", "-f", "-"], Some(&so.to_string())),
            what,
        );
        assert!(
            err.contains(expected),
            "{what}: expected the apiserver to say {expected:?}, it said: {err}"
        );
        assert!(
            err.contains("The ScaledObject \"orders-worker\" is invalid"),
            "{what}: {err}"
        );
    }
    let listed = expect_success(&env.kubectl(&["get", "so", "-o", "name"]), "get so");
    assert!(
        listed.trim().is_empty(),
        "nothing invalid was stored: {listed}"
    );
}
