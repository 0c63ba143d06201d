//! kubectl's plugin convention with the real kubectl: `ebb` installed as `kubectl-ebb` on the
//! PATH is found by `kubectl plugin list`, `kubectl ebb explain` prints what `ebb explain`
//! prints, and `kubectl ebb get` lists ScaledObjects with their trigger types, readings and
//! decisions in kubectl's table, in `-o json|yaml`, and across namespaces with `-A`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ebb_crds::ScaledObject;
use integration_tests::{
    TestEnv, deployment, ebb_binary, ensure, eventually, expect_failure, expect_success,
    scaled_object_for, setup, unique_name,
};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);

/// A directory holding `kubectl-ebb`, a symlink to this build's `ebb`, as a user installs it.
fn plugin_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("kubectl-plugins"));
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::os::unix::fs::symlink(ebb_binary(), dir.join("kubectl-ebb")).expect("symlink");
    dir
}

/// The real kubectl with the plugin directory first on the PATH and the test cluster's
/// kubeconfig in KUBECONFIG (kubectl hands its environment to plugins).
fn kubectl(env: &TestEnv, plugins: &Path, args: &[&str]) -> Output {
    let path = std::env::var("PATH").unwrap_or_default();
    Command::new(&env.cluster.kubectl)
        .env("PATH", format!("{}:{path}", plugins.display()))
        .env("KUBECONFIG", &env.cluster.kubeconfig)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running kubectl {args:?}: {e}"))
}

fn ebb(env: &TestEnv, args: &[&str]) -> Output {
    Command::new(ebb_binary())
        .env("KUBECONFIG", &env.cluster.kubeconfig)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ebb {args:?}: {e}"))
}

fn stdout(out: &Output, what: &str) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!("{what}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The table's line for `name`, split into its columns by the header's offsets.
fn row(table: &str, name: &str) -> Result<Vec<(String, String)>, String> {
    let mut lines = table.lines();
    let header = lines.next().ok_or("no header")?;
    let starts: Vec<(usize, &str)> = header
        .match_indices(|c: char| c.is_ascii_uppercase())
        .filter(|(i, _)| *i == 0 || header.as_bytes()[i - 1] == b' ')
        .map(|(i, _)| (i, header[i..].split(' ').next().unwrap_or_default()))
        .collect();
    let line = lines
        .find(|l| l.split_whitespace().any(|w| w == name))
        .ok_or_else(|| format!("no row for {name} in\n{table}"))?;
    Ok(starts
        .iter()
        .enumerate()
        .map(|(k, (at, column))| {
            let end = starts.get(k + 1).map_or(line.len(), |(next, _)| *next);
            let cell = line.get(*at..end.min(line.len())).unwrap_or_default();
            (column.to_string(), cell.trim().to_string())
        })
        .collect())
}

fn cell<'a>(row: &'a [(String, String)], column: &str) -> &'a str {
    row.iter()
        .find(|(c, _)| c == column)
        .map(|(_, v)| v.as_str())
        .unwrap_or("<no such column>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_finds_the_plugin_and_its_get_and_explain_read_the_cluster() {
    let env = setup("kubectl-plugin").await;
    let plugins = plugin_dir();
    let ns = env.namespace.clone();

    // kubectl finds it where a user put it.
    let list = expect_success(
        &kubectl(&env, &plugins, &["plugin", "list"]),
        "kubectl plugin list",
    );
    let installed = plugins.join("kubectl-ebb");
    assert!(
        list.contains(&installed.display().to_string()),
        "kubectl plugin list does not name {}:\n{list}",
        installed.display()
    );
    // And it names itself as the user typed it.
    let help = expect_success(&kubectl(&env, &plugins, &["ebb", "--help"]), "help");
    assert!(help.contains("Usage: kubectl ebb"), "{help}");

    let ebb_controller = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb_controller).await;
    let mut redis = env.redis(7).await;
    let list_key = unique_name("jobs");
    env.create::<Deployment>(serde_json::to_value(deployment("worker", 0, &[])).expect("json"))
        .await;
    env.create::<ScaledObject>(scaled_object_for(
        "worker",
        json!({
            "pollingInterval": 1,
            "cooldownPeriod": 30,
            "maxReplicaCount": 10,
            "triggers": [{"type": "redis", "metadata": {
                "address": env.redis_address(),
                "databaseIndex": "7", "listName": list_key, "listLength": "5"
            }}]
        }),
    ))
    .await;

    // At rest: the table shows the trigger, its reading over the HPA's target, the conditions
    // and the decision; `kubectl ebb explain` is `ebb explain`.
    eventually("kubectl ebb get: at rest", DEADLINE, || async {
        let table = stdout(&kubectl(&env, &plugins, &["ebb", "get", "-n", &ns]), "get")?;
        let row = row(&table, "worker")?;
        let expected = [
            ("NAME", "worker"),
            ("TARGET", "Deployment/worker"),
            ("MIN", "0"),
            ("MAX", "10"),
            ("REPLICAS", "0"),
            ("TRIGGERS", "redis"),
            ("READINGS", "0 (target 5/pod)"),
            ("READY", "True"),
            ("ACTIVE", "False"),
            ("DECISION", "at rest"),
        ];
        ensure(expected.iter().all(|(c, v)| cell(&row, c) == *v), || {
            format!("{row:?}\n{table}")
        })
    })
    .await;
    let object = format!("{ns}/worker");
    eventually("kubectl ebb explain = ebb explain", DEADLINE, || async {
        let through_kubectl = stdout(
            &kubectl(&env, &plugins, &["ebb", "explain", &object]),
            "kubectl ebb explain",
        )?;
        let direct = stdout(&ebb(&env, &["explain", &object]), "ebb explain")?;
        ensure(
            through_kubectl == direct && direct.contains("Decision: inactive at rest"),
            || format!("kubectl ebb explain:\n{through_kubectl}\nebb explain:\n{direct}"),
        )
    })
    .await;

    // Active: 12 items; the reading, Active and the decision follow.
    redis
        .rpush(
            &list_key,
            &[
                "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
            ],
        )
        .await;
    env.await_replicas("worker", "scaled up", DEADLINE, |n| n >= 1)
        .await;
    eventually("kubectl ebb get: active", DEADLINE, || async {
        let table = stdout(&kubectl(&env, &plugins, &["ebb", "get", "-n", &ns]), "get")?;
        let row = row(&table, "worker")?;
        ensure(
            cell(&row, "READINGS") == "12 (target 5/pod)"
                && cell(&row, "ACTIVE") == "True"
                && cell(&row, "DECISION") == "active (HPA)",
            || table.clone(),
        )
    })
    .await;

    // -o json: kubectl's List of the objects, each metric in full.
    let json_text = expect_success(
        &kubectl(&env, &plugins, &["ebb", "get", "-n", &ns, "-o", "json"]),
        "kubectl ebb get -o json",
    );
    let list: Value = serde_json::from_str(&json_text).expect("-o json is JSON");
    assert_eq!(list["kind"], "List", "{json_text}");
    let item = &list["items"][0];
    assert_eq!(item["metadata"]["name"], "worker", "{json_text}");
    assert_eq!(item["metadata"]["namespace"], ns.as_str(), "{json_text}");
    assert_eq!(item["triggers"], json!(["redis"]), "{json_text}");
    assert_eq!(item["metrics"][0]["value"], "12", "{json_text}");
    assert_eq!(item["metrics"][0]["target"], "5", "{json_text}");
    assert_eq!(item["conditions"]["Active"], "True", "{json_text}");

    // -o yaml of one named object: the object itself.
    let yaml_text = expect_success(
        &kubectl(
            &env,
            &plugins,
            &["ebb", "get", "worker", "-n", &ns, "-o", "yaml"],
        ),
        "kubectl ebb get worker -o yaml",
    );
    let one: Value = serde_norway::from_str(&yaml_text).expect("-o yaml is YAML");
    assert_eq!(one["metadata"]["name"], "worker", "{yaml_text}");
    assert_eq!(one["metrics"][0]["value"], "12", "{yaml_text}");

    // -o name, of two named objects (kubectl's habit of several names).
    let names = expect_success(
        &kubectl(
            &env,
            &plugins,
            &["ebb", "get", "worker", "worker", "-n", &ns, "-o", "name"],
        ),
        "kubectl ebb get worker worker -o name",
    );
    assert_eq!(
        names,
        "scaledobject.keda.sh/worker\nscaledobject.keda.sh/worker\n"
    );

    // -A: every namespace, the namespace first.
    let all = expect_success(
        &kubectl(&env, &plugins, &["ebb", "get", "-A"]),
        "kubectl ebb get -A",
    );
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with(&format!("{ns} ")) && l.contains(" worker ")),
        "{all}"
    );

    // Nothing to list is not an error, as with kubectl; an unknown name is.
    let empty_ns = unique_name("nothing-here");
    let out = kubectl(&env, &plugins, &["ebb", "get", "-n", &empty_ns]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("No resources found in {empty_ns} namespace.")
    );
    let err = expect_failure(
        &kubectl(
            &env,
            &plugins,
            &["ebb", "get", "worker", "nobody", "nor-me", "-n", &ns],
        ),
        "kubectl ebb get worker nobody nor-me",
    );
    assert!(
        err.contains(&format!("ScaledObject {ns}/nobody, {ns}/nor-me not found")),
        "{err}"
    );

    env.delete_scaled_objects().await;
    let _ = std::fs::remove_dir_all(&plugins);
}
