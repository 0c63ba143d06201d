//! Credentials never leave ebb. The real `ebb` binary, logging at its most verbose (debug for
//! every crate, trace for ebb's own), runs ScaledObjects whose credentials come from Secrets: a
//! Redis ACL user (through a TriggerAuthentication, and through the target container's env),
//! a RabbitMQ user in an AMQP URL and in a management API URL, and basic auth for metrics-api.
//! Some are accepted and scale their targets 0 -> 1 -> 0; others are refused (a wrong
//! password, a malformed URL carrying a password, a server that is not there) and reported.
//! Then every log line, every Event, every ScaledObject's status, every HPA, `/metrics`, the
//! metrics API's answers through the aggregator, and the output of `ebb explain` and `ebb get`
//! (its table and `-o json`) are searched for each secret value, as written and base64-encoded:
//! none may appear.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use ebb_crds::{ScaledObject, TriggerAuthentication};
use integration_tests::{
    APISERVICE, METRICS_API_PORT, TestEnv, UnregisterMetricsApi, deployment, ensure, eventually,
    expect_success, free_port, setup, unique_name,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(90);

/// A value no test or server would produce by chance.
fn secret_value(label: &str) -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(label.as_bytes());
    format!("{label}{:016x}", h.finish())
}

/// The ebb binary as `ebb run` runs in production, all its output kept in a file.
struct EbbProcess {
    child: std::process::Child,
    log: std::path::PathBuf,
    admin: u16,
}

impl EbbProcess {
    fn start(env: &TestEnv) -> Self {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name("ebb-secrets")));
        let out = std::fs::File::create(&log).expect("a log file");
        let (mut cmd, admin) = integration_tests::ebb_run_command(env);
        let child = cmd
            .env("RUST_LOG", "debug,ebb_operator=trace,ebb_scalers=trace")
            .args([
                "--metrics-api-addr",
                &format!("127.0.0.1:{METRICS_API_PORT}"),
            ])
            .args(["--apiservice", APISERVICE])
            .args(["--tls-names", xtask::cluster::metrics_api::TLS_NAMES])
            .stdout(out.try_clone().expect("a log file"))
            .stderr(out)
            .spawn()
            .expect("start ebb");
        Self { child, log, admin }
    }

    fn log(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.log)
            .and_then(|mut f| f.read_to_string(&mut text))
            .expect("ebb's log");
        text
    }
}

impl Drop for EbbProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A Redis ACL user with `password`, deleted on drop.
struct RedisUser {
    url: String,
    name: String,
}

impl RedisUser {
    async fn create(env: &TestEnv, name: &str, password: &str) -> Self {
        let user = Self {
            url: env.cluster.redis_url.clone(),
            name: name.to_string(),
        };
        let client = redis::Client::open(user.url.as_str()).expect("the Redis URL");
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .expect("a Redis connection");
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(name)
            .arg("on")
            .arg(format!(">{password}"))
            .arg("~*")
            .arg("+@all")
            .query_async(&mut con)
            .await
            .expect("ACL SETUSER");
        user
    }
}

impl Drop for RedisUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("redis-cli")
            .args(["-u", &self.url, "ACL", "DELUSER", &self.name])
            .output();
    }
}

/// A client for RabbitMQ's management API, its URL without credentials and its administrator.
fn management(env: &TestEnv) -> (reqwest::Client, reqwest::Url, (String, String)) {
    let (url, admin) = env.rabbitmq_management();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    (http, url, admin)
}

/// A RabbitMQ user with `password` and every right on vhost `/`.
async fn create_rabbitmq_user(env: &TestEnv, name: &str, password: &str) {
    let (http, url, (admin, admin_password)) = management(env);
    for (path, body) in [
        (
            format!("api/users/{name}"),
            json!({"password": password, "tags": "monitoring"}),
        ),
        (
            format!("api/permissions/%2F/{name}"),
            json!({"configure": ".*", "write": ".*", "read": ".*"}),
        ),
    ] {
        let response = http
            .put(format!("{url}{path}"))
            .basic_auth(&admin, Some(&admin_password))
            .json(&body)
            .send()
            .await
            .expect("the management API");
        assert!(
            response.status().is_success(),
            "PUT {path}: {}",
            response.status()
        );
    }
}

async fn delete_rabbitmq_user(env: &TestEnv, name: &str) {
    let (http, url, (admin, admin_password)) = management(env);
    let _ = http
        .delete(format!("{url}api/users/{name}"))
        .basic_auth(&admin, Some(&admin_password))
        .send()
        .await;
}

fn scaled_object(name: &str, trigger: Value) -> Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": 1,
            "cooldownPeriod": 2,
            "triggers": [trigger]
        }
    })
}

fn kubectl_json(env: &TestEnv, args: &[&str]) -> String {
    expect_success(&env.kubectl(args), &format!("kubectl {}", args.join(" ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_reaches_logs_events_status_or_metrics() {
    let env = setup("secrets-never-leak").await;
    let redis_user = unique_name("ebb-redis");
    let rabbitmq_user = unique_name("ebb-rabbit");
    let secrets: BTreeMap<&str, String> = [
        "redispass",
        "redisenvpass",
        "rabbitpass",
        "wrongpass",
        "badurlpass",
        "basicpass",
        "pgpass",
        "pgwrongpass",
        "mysqlpass",
        "mysqlwrongpass",
        "promtoken",
    ]
    .into_iter()
    .map(|label| (label, secret_value(label)))
    .collect();
    let _redis_user = RedisUser::create(&env, &redis_user, &secrets["redispass"]).await;
    let _redis_env_user =
        RedisUser::create(&env, &format!("{redis_user}-env"), &secrets["redisenvpass"]).await;
    create_rabbitmq_user(&env, &rabbitmq_user, &secrets["rabbitpass"]).await;
    // Database users of their own, so their passwords are this test's secrets.
    let sql_user = unique_name("ebb-sql").replace('-', "_");
    integration_tests::psql(
        &env.cluster.postgres_url,
        &format!("CREATE USER {sql_user} PASSWORD '{}'", secrets["pgpass"]),
    );
    let mysql_admin = env.cluster.mysql_user.clone();
    integration_tests::mariadb(
        &env.cluster.mysql_address,
        &mysql_admin,
        &format!(
            "CREATE USER '{sql_user}'@'%' IDENTIFIED BY '{}'; GRANT SELECT ON {}.* TO '{sql_user}'@'%'",
            secrets["mysqlpass"], mysql_admin.2
        ),
    );
    let pg_port = env
        .cluster
        .postgres_url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("a port")
        .to_string();
    let (mysql_host, mysql_port) = env
        .cluster
        .mysql_address
        .split_once(':')
        .expect("host:port");

    let amqp_port = reqwest::Url::parse(&env.cluster.rabbitmq_amqp_url)
        .expect("url")
        .port()
        .expect("a port");
    let (management_url, _) = env.rabbitmq_management();
    let management_port = management_url.port().expect("a port");
    let stored: BTreeMap<&str, String> = [
        ("redis-user", redis_user.clone()),
        ("redis-password", secrets["redispass"].clone()),
        ("redis-env-password", secrets["redisenvpass"].clone()),
        ("redis-wrong-password", secrets["wrongpass"].clone()),
        (
            "amqp-host",
            format!(
                "amqp://{rabbitmq_user}:{}@127.0.0.1:{amqp_port}/%2f",
                secrets["rabbitpass"]
            ),
        ),
        (
            "http-host",
            format!(
                "http://{rabbitmq_user}:{}@127.0.0.1:{management_port}/",
                secrets["rabbitpass"]
            ),
        ),
        (
            "amqp-bad-url",
            format!(
                "amqp://{rabbitmq_user}:{}@127.0.0.1:99999/%2f",
                secrets["badurlpass"]
            ),
        ),
        ("basic-password", secrets["basicpass"].clone()),
        ("pg-password", secrets["pgpass"].clone()),
        ("pg-wrong-password", secrets["pgwrongpass"].clone()),
        ("mysql-password", secrets["mysqlpass"].clone()),
        ("mysql-wrong-password", secrets["mysqlwrongpass"].clone()),
        ("prom-token", secrets["promtoken"].clone()),
    ]
    .into_iter()
    .collect();
    env.create::<Secret>(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "credentials"},
        "stringData": stored,
    }))
    .await;
    let reference = |pairs: &[(&str, &str)]| -> Value {
        pairs
            .iter()
            .map(|(parameter, key)| json!({"parameter": parameter, "name": "credentials", "key": key}))
            .collect()
    };
    for (name, refs) in [
        (
            "redis",
            reference(&[("username", "redis-user"), ("password", "redis-password")]),
        ),
        (
            "redis-wrong",
            reference(&[
                ("username", "redis-user"),
                ("password", "redis-wrong-password"),
            ]),
        ),
        ("amqp", reference(&[("host", "amqp-host")])),
        ("http", reference(&[("host", "http-host")])),
        ("amqp-bad-url", reference(&[("host", "amqp-bad-url")])),
        (
            "basic",
            reference(&[("username", "redis-user"), ("password", "basic-password")]),
        ),
        ("pg", reference(&[("password", "pg-password")])),
        ("pg-wrong", reference(&[("password", "pg-wrong-password")])),
        ("mysql", reference(&[("password", "mysql-password")])),
        (
            "mysql-wrong",
            reference(&[("password", "mysql-wrong-password")]),
        ),
        ("prom", reference(&[("bearerToken", "prom-token")])),
    ] {
        env.create::<TriggerAuthentication>(json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": {"name": name},
            "spec": {"secretTargetRef": refs}
        }))
        .await;
    }

    let list = unique_name("secrets-list");
    let queue = unique_name("secrets-queue");
    let amqp = env.amqp().await;
    amqp.declare(&queue).await;
    let redis_address = env.redis_address().to_string();
    let objects: Vec<(&str, Value)> = vec![
        (
            "redis-ok",
            json!({"type": "redis", "metadata": {"address": redis_address, "listName": list, "listLength": "1"}, "authenticationRef": {"name": "redis"}}),
        ),
        (
            "redis-env-ok",
            json!({"type": "redis", "metadata": {"address": redis_address, "listName": list, "listLength": "1", "username": format!("{redis_user}-env"), "passwordFromEnv": "REDIS_PASSWORD"}}),
        ),
        (
            "redis-refused",
            json!({"type": "redis", "metadata": {"address": redis_address, "listName": list, "listLength": "1"}, "authenticationRef": {"name": "redis-wrong"}}),
        ),
        (
            "amqp-ok",
            json!({"type": "rabbitmq", "metadata": {"protocol": "amqp", "queueName": queue, "mode": "QueueLength", "value": "1"}, "authenticationRef": {"name": "amqp"}}),
        ),
        (
            "http-ok",
            json!({"type": "rabbitmq", "metadata": {"protocol": "http", "queueName": queue, "mode": "QueueLength", "value": "1"}, "authenticationRef": {"name": "http"}}),
        ),
        (
            "amqp-bad-url",
            json!({"type": "rabbitmq", "metadata": {"protocol": "amqp", "queueName": queue, "mode": "QueueLength", "value": "1"}, "authenticationRef": {"name": "amqp-bad-url"}}),
        ),
        (
            "basic-unreachable",
            json!({"type": "metrics-api", "metadata": {"url": format!("http://127.0.0.1:{}/metrics", free_port()), "valueLocation": "value", "targetValue": "1", "authMode": "basic"}, "authenticationRef": {"name": "basic"}}),
        ),
    ];
    let pg = |auth: &str| json!({"type": "postgresql", "metadata": {"host": "127.0.0.1", "port": pg_port, "userName": sql_user, "dbName": "postgres", "sslmode": "require", "query": "SELECT 3", "targetQueryValue": "1"}, "authenticationRef": {"name": auth}});
    let mysql = |auth: &str| json!({"type": "mysql", "metadata": {"host": mysql_host, "port": mysql_port, "username": sql_user, "dbName": mysql_admin.2, "query": "SELECT 3", "queryValue": "1"}, "authenticationRef": {"name": auth}});
    let objects: Vec<(&str, Value)> = objects
        .into_iter()
        .chain([
            ("pg-ok", pg("pg")),
            ("pg-refused", pg("pg-wrong")),
            ("mysql-ok", mysql("mysql")),
            ("mysql-refused", mysql("mysql-wrong")),
            (
                "prom-bearer-ok",
                json!({"type": "prometheus", "metadata": {"serverAddress": env.cluster.prometheus_url, "query": "vector(3)", "threshold": "1", "authModes": "bearer"}, "authenticationRef": {"name": "prom"}}),
            ),
        ])
        .collect();

    // The cluster's one APIService and its port, which other tests of this binary serve too:
    // held until the APIService is unregistered and ebb stopped (both declared after it).
    let _turn = integration_tests::metrics_api_turn().await;
    xtask::cluster::metrics_api::register(
        &env.cluster.kubectl,
        &env.cluster.kubeconfig,
        METRICS_API_PORT,
    )
    .expect("register the APIService");
    let _unregister = UnregisterMetricsApi(&env);
    let ebb = EbbProcess::start(&env);

    for (name, trigger) in &objects {
        let mut worker = serde_json::to_value(deployment(name, 0, &[])).expect("json");
        if *name == "redis-env-ok" {
            worker["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{
                "name": "REDIS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "credentials", "key": "redis-env-password"}}
            }]);
        }
        env.create::<Deployment>(worker).await;
        env.create::<ScaledObject>(scaled_object(name, trigger.clone()))
            .await;
    }

    // The accepted credentials work: Ready, and the targets go 0 -> 1 on work.
    let accepted = ["redis-ok", "redis-env-ok", "amqp-ok", "http-ok"];
    for name in accepted {
        eventually(&format!("{name} is Ready"), DEADLINE, || async {
            let (status, reason, message) = env.condition(name, "Ready").await?;
            ensure(status == "True", || {
                format!("Ready={status} {reason}: {message}")
            })
        })
        .await;
    }
    // The databases and Prometheus take their credentials (their values are constant).
    for name in ["pg-ok", "mysql-ok", "prom-bearer-ok"] {
        eventually(&format!("{name} is Ready"), DEADLINE, || async {
            let (status, reason, message) = env.condition(name, "Ready").await?;
            ensure(status == "True", || {
                format!("Ready={status} {reason}: {message}")
            })
        })
        .await;
        env.await_replicas(name, "activated", DEADLINE, |n| n >= 1)
            .await;
    }
    // The refused ones are reported in Ready and in an Event, with the server's refusal, so
    // the error paths ran.
    for (name, refusal) in [
        ("redis-refused", "Password authentication failed"),
        ("amqp-bad-url", ""),
        ("basic-unreachable", ""),
        ("pg-refused", "password authentication failed"),
        ("mysql-refused", "Access denied"),
    ] {
        eventually(&format!("{name} is reported"), DEADLINE, || async {
            let (status, reason, message) = env.condition(name, "Ready").await?;
            ensure(
                status == "False" && !message.is_empty() && message.contains(refusal),
                || format!("Ready={status} {reason}: {message}"),
            )
        })
        .await;
        eventually(&format!("{name} has an Event"), DEADLINE, || async {
            let events = env.events_of(name).await?;
            let failed: Vec<&str> = events
                .iter()
                .filter(|e| e.reason.as_deref() == Some("KEDAScalerFailed"))
                .filter_map(|e| e.message.as_deref())
                .collect();
            ensure(failed.len() == 1 && failed[0].contains(refusal), || {
                format!("{failed:?}")
            })
        })
        .await;
    }
    let mut redis = env.redis(0).await;
    redis.push(&list, 3).await;
    amqp.publish(&queue, 3).await;
    for name in accepted {
        env.await_replicas(name, "activated", DEADLINE, |n| n >= 1)
            .await;
    }

    // What the HPA and an operator would read while it runs.
    eventually("the metrics API is served", DEADLINE, || async {
        let out = env.kubectl(&["get", "--raw", "/apis/external.metrics.k8s.io/v1beta1"]);
        ensure(out.status.success(), || {
            String::from_utf8_lossy(&out.stderr).to_string()
        })
    })
    .await;
    let mut reports: Vec<(String, String)> = Vec::new();
    let hpas = kubectl_json(&env, &["get", "hpa", "-o", "json"]);
    let hpa_list: Value = serde_json::from_str(&hpas).expect("json");
    for hpa in hpa_list["items"].as_array().into_iter().flatten() {
        let so = hpa["metadata"]["labels"]["scaledobject.keda.sh/name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for metric in hpa["spec"]["metrics"].as_array().into_iter().flatten() {
            let Some(name) = metric["external"]["metric"]["name"].as_str() else {
                continue;
            };
            let path = format!(
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/{name}?labelSelector=scaledobject.keda.sh%2Fname%3D{so}",
                env.namespace
            );
            let out = env.kubectl(&["get", "--raw", &path]);
            reports.push((
                format!("metrics API {path}"),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ));
        }
    }
    reports.push(("HPAs".into(), hpas));
    for (name, _) in &objects {
        let started = std::time::Instant::now();
        let out = std::process::Command::new(integration_tests::ebb_binary())
            .env("KUBECONFIG", &env.cluster.kubeconfig)
            .args(["explain", &format!("{}/{name}", env.namespace)])
            .output()
            .expect("ebb explain");
        // A failing metric is reported at once, not retried for minutes.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "ebb explain {name} took {:?}",
            started.elapsed()
        );
        reports.push((
            format!("ebb explain {name}"),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    // `ebb get` prints every metric's error too: the table and the documents.
    for format in [None, Some("json")] {
        let mut args = vec!["get", "-n", env.namespace.as_str()];
        args.extend(format.iter().flat_map(|f| ["-o", *f]));
        let out = std::process::Command::new(integration_tests::ebb_binary())
            .env("KUBECONFIG", &env.cluster.kubeconfig)
            .args(&args)
            .output()
            .expect("ebb get");
        reports.push((
            format!("ebb {}", args.join(" ")),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }

    // Back to zero once the work is gone.
    redis.del(&[&list]).await;
    amqp.purge(&queue).await;
    for name in accepted {
        env.await_replicas(name, "back at zero", DEADLINE, |n| n == 0)
            .await;
    }

    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", ebb.admin))
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("/metrics");
    assert!(
        metrics.contains("redis-refused"),
        "/metrics names the failing objects"
    );
    reports.push(("/metrics".into(), metrics));
    reports.push((
        "ScaledObjects".into(),
        kubectl_json(&env, &["get", "scaledobjects", "-o", "json"]),
    ));
    reports.push((
        "Events".into(),
        kubectl_json(&env, &["get", "events", "-o", "json"]),
    ));
    env.delete_scaled_objects().await;
    let log = ebb.log();
    assert!(
        log.lines().count() > 100 && log.contains("redis-refused"),
        "ebb logged its work at trace level ({} lines)",
        log.lines().count()
    );
    reports.push(("ebb's log".into(), log));

    // The search finds what is there: the Secret itself holds every stored value in base64.
    let secret_json = kubectl_json(&env, &["get", "secret", "credentials", "-o", "json"]);
    for (key, value) in &stored {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        assert!(
            secret_json.contains(&encoded),
            "the search does not find the Secret's {key}"
        );
    }
    let needles: Vec<(String, String)> = secrets
        .iter()
        .flat_map(|(label, value)| {
            [
                (format!("{label} as written"), value.clone()),
                (
                    format!("{label} in base64"),
                    base64::engine::general_purpose::STANDARD.encode(value),
                ),
            ]
        })
        .collect();

    let mut leaks = Vec::new();
    for (place, text) in &reports {
        for (label, value) in &needles {
            for (i, line) in text.lines().enumerate() {
                if line.contains(value.as_str()) {
                    leaks.push(format!("{label} in {place}, line {}: {line}", i + 1));
                }
            }
        }
    }
    delete_rabbitmq_user(&env, &rabbitmq_user).await;
    integration_tests::psql(&env.cluster.postgres_url, &format!("DROP USER {sql_user}"));
    integration_tests::mariadb(
        &env.cluster.mysql_address,
        &mysql_admin,
        &format!("DROP USER '{sql_user}'@'%'"),
    );
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    println!(
        "searched {} reports ({} bytes) for {} secret forms: none found",
        reports.len(),
        reports.iter().map(|(_, t)| t.len()).sum::<usize>(),
        needles.len()
    );
}
