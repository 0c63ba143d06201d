//! The second wave of scalers end to end, on the real control plane: for prometheus,
//! postgresql, mysql and kubernetes-workload, a value below activation holds the Deployment at
//! 0, a value above it activates the Deployment and the real HPA, reading ebb's metric through
//! the aggregator, scales it out, and back below activation it returns to 0. The four run side
//! by side in one namespace, under one turn of the metrics API.
//!
//! Each reaches its server the way a user's manifest would: prometheus by metadata, postgresql
//! with its password from a Secret through a TriggerAuthentication, mysql with a DSN from the
//! container's environment (`connectionStringFromEnv`), kubernetes-workload from ebb's Pod watch.

use std::time::Duration;

use integration_tests::{ensure, eventually, setup, unique_name};

use crate::prometheus_scaler::set;
use integration_tests::{mariadb, psql};

const DEADLINE: Duration = Duration::from_secs(120);

/// The value ebb's metrics API serves for `metric` of ScaledObject `name`, as the HPA reads it.
fn served(env: &integration_tests::TestEnv, name: &str, metric: &str) -> Result<String, String> {
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3D{name}",
        env.namespace
    );
    let out = env.kubectl(&["get", "--raw", &path]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}"))?;
    json["items"][0]["value"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| json.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_new_type_scales_a_deployment_through_the_hpa_and_back_to_zero() {
    let env = setup("second-wave-hpa").await;
    let ebb = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb).await;
    let c = &env.cluster;

    // The sources, each at 1: below every activation threshold (2, or 1 for pods).
    let label = unique_name("hpa").replace('-', "_");
    let series = format!("ebb_test_backlog{{test=\"{label}\"}}");
    set(&c.prometheus_exporter_url, &format!("{series} 1")).await;
    let pg_table = format!("{label}_pg");
    psql(
        &c.postgres_url,
        &format!("CREATE TABLE {pg_table} (n int); INSERT INTO {pg_table} VALUES (1)"),
    );
    let my_table = format!("{label}_my");
    mariadb(
        &c.mysql_address,
        &c.mysql_user,
        &format!("CREATE TABLE {my_table} (n INT); INSERT INTO {my_table} VALUES (1)"),
    );
    env.create::<k8s_openapi::api::apps::v1::Deployment>(
        serde_json::to_value(integration_tests::deployment("producer", 1, &[])).expect("json"),
    )
    .await;

    // The targets, at 0.
    let dsn = format!(
        "{}:{}@tcp({})/{}",
        c.mysql_user.0, c.mysql_user.1, c.mysql_address, c.mysql_user.2
    );
    for name in ["by-prometheus", "by-postgresql", "by-workload"] {
        env.create::<k8s_openapi::api::apps::v1::Deployment>(
            serde_json::to_value(integration_tests::deployment(name, 0, &[])).expect("json"),
        )
        .await;
    }
    env.create::<k8s_openapi::api::apps::v1::Deployment>(
        serde_json::to_value(integration_tests::deployment(
            "by-mysql",
            0,
            &[("MYSQL_DSN", &dsn)],
        ))
        .expect("json"),
    )
    .await;
    env.create::<k8s_openapi::api::core::v1::Secret>(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "pg"},
        "stringData": {"password": "ebb-dev"}
    }))
    .await;
    env.create::<ebb_crds::TriggerAuthentication>(serde_json::json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": "pg"},
        "spec": {"secretTargetRef": [{"parameter": "password", "name": "pg", "key": "password"}]}
    }))
    .await;
    let pg_port = c
        .postgres_url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("a port")
        .to_string();
    let triggers = [
        (
            "by-prometheus",
            serde_json::json!({"type": "prometheus", "metadata": {
                "serverAddress": c.prometheus_url,
                "query": format!("sum({series})"),
                "threshold": "5",
                "activationThreshold": "2"
            }}),
        ),
        (
            "by-postgresql",
            serde_json::json!({"type": "postgresql", "authenticationRef": {"name": "pg"}, "metadata": {
                "host": "127.0.0.1", "port": pg_port, "userName": "postgres",
                "dbName": "postgres", "sslmode": "require",
                "query": format!("SELECT SUM(n) FROM {pg_table}"),
                "targetQueryValue": "5",
                "activationTargetQueryValue": "2"
            }}),
        ),
        (
            "by-mysql",
            serde_json::json!({"type": "mysql", "metadata": {
                "connectionStringFromEnv": "MYSQL_DSN",
                "query": format!("SELECT SUM(n) FROM {my_table}"),
                "queryValue": "5",
                "activationQueryValue": "2"
            }}),
        ),
        (
            "by-workload",
            serde_json::json!({"type": "kubernetes-workload", "metadata": {
                "podSelector": "app=producer",
                "value": "1",
                "activationValue": "1"
            }}),
        ),
    ];
    for (name, trigger) in &triggers {
        env.create::<ebb_crds::ScaledObject>(serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": name},
            "spec": {
                "scaleTargetRef": {"name": name},
                "pollingInterval": 1,
                "cooldownPeriod": 1,
                "maxReplicaCount": 10,
                "triggers": [trigger]
            }
        }))
        .await;
    }
    let metrics = [
        ("by-prometheus", "s0-prometheus".to_string()),
        ("by-postgresql", "s0-postgresql".to_string()),
        ("by-mysql", format!("s0-mysql-{}", c.mysql_user.2)),
        ("by-workload", format!("s0-workload-{}", env.namespace)),
    ];

    // Below activation: ebb serves 1 for each through the aggregator, and nothing scales.
    for (name, metric) in &metrics {
        eventually(&format!("{name} serves 1"), DEADLINE, || async {
            let value = served(&env, name, metric)?;
            ensure(value == "1", || value.clone())
        })
        .await;
    }
    for (name, _) in &metrics {
        assert_eq!(env.replicas(name).await, Ok(0), "{name} below activation");
    }

    // Above: 20 against a target of 5 is 4 replicas; 3 producer pods against 1 is 3.
    set(&c.prometheus_exporter_url, &format!("{series} 20")).await;
    psql(&c.postgres_url, &format!("UPDATE {pg_table} SET n = 20"));
    mariadb(
        &c.mysql_address,
        &c.mysql_user,
        &format!("UPDATE {my_table} SET n = 20"),
    );
    env.kubectl(&["scale", "deployment/producer", "--replicas=3"]);
    for (name, want) in [
        ("by-prometheus", 4),
        ("by-postgresql", 4),
        ("by-mysql", 4),
        ("by-workload", 3),
    ] {
        env.await_replicas(name, &format!("the HPA scales to {want}"), DEADLINE, |n| {
            n == want
        })
        .await;
    }

    // Back to 0 at the sources: the targets go back to 0.
    set(&c.prometheus_exporter_url, &format!("{series} 0")).await;
    psql(&c.postgres_url, &format!("UPDATE {pg_table} SET n = 0"));
    mariadb(
        &c.mysql_address,
        &c.mysql_user,
        &format!("UPDATE {my_table} SET n = 0"),
    );
    env.kubectl(&["scale", "deployment/producer", "--replicas=0"]);
    for (name, _) in &metrics {
        env.await_replicas(name, "back to 0", DEADLINE, |n| n == 0)
            .await;
    }

    env.delete_scaled_objects().await;
    psql(&c.postgres_url, &format!("DROP TABLE {pg_table}"));
    mariadb(
        &c.mysql_address,
        &c.mysql_user,
        &format!("DROP TABLE {my_table}"),
    );
    let _ = reqwest::Client::new()
        .post(format!("{}/delete", c.prometheus_exporter_url))
        .body(series)
        .send()
        .await;
}
