//! The examples in `examples/`, applied from their files on the real local cluster and driven
//! with real load: each test creates its own Secret (the example's `secret.yaml` points at a
//! server in your cluster; the test's points at the local Redis or RabbitMQ), applies every
//! other manifest file of the example as it is on disk, starts ebb and its metrics API (so the
//! real HPA scales past one replica), and checks the scaling the example's README promises.
//!
//! What differs from a real cluster, and why:
//! - ebb runs on the host, where cluster DNS names do not resolve, and the pods run on a kwok
//!   node, so they never start: the examples' own programs (worker, consumer, producer, HTTP
//!   service, plugin) run in this process on loopback instead (Kafka's console consumer, the
//!   kafka example's consumer, from Kafka's jars), and the two addresses that are
//!   plain trigger metadata (the metrics-api `url`, the external `scalerAddress` and its
//!   `path`) are replaced in the text before it is applied. Each replaced text must occur.
//! - pollingInterval and cooldownPeriod are shortened with a patch once the manifests are
//!   applied (1 s and 5 s instead of the examples' 10-30 s and 120-300 s), and the cron
//!   example's window is moved to the current minute.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ebb_examples::backlog_api::{self, Backlog};
use ebb_examples::rabbitmq_queue::{ConsumerSettings, RabbitMqQueue};
use ebb_examples::redis_list::RedisListWorker;
use integration_tests::{TestEnv, ensure, eventually, expect_success, setup, workspace_root};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Long enough for ebb's 0 -> 1, the HPA's 1 -> N (two steps of at most 15 s) and back.
const DEADLINE: Duration = Duration::from_secs(90);

fn example_dir(example: &str) -> PathBuf {
    workspace_root().join("examples").join(example)
}

/// The YAML documents of one manifest file.
fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| {
            let value = <serde_norway::Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("YAML: {e}"));
            serde_json::to_value(value).unwrap_or_else(|e| panic!("YAML as JSON: {e}"))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Applies every manifest file of `example` except `secret.yaml`, in name order, after each
/// replacement (every `from` must occur in some file). Checks first that no object names a
/// namespace of its own, so `kubectl apply -n` puts them all where the README says.
fn apply_example(env: &TestEnv, example: &str, replacements: &[(&str, &str)]) {
    let dir = example_dir(example);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "secret.yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{example} has no manifests");
    let mut used = vec![false; replacements.len()];
    for path in files {
        let mut text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for (i, (from, to)) in replacements.iter().enumerate() {
            if text.contains(from) {
                used[i] = true;
                text = text.replace(from, to);
            }
        }
        for doc in documents(&text) {
            assert!(
                doc["metadata"]["namespace"].is_null() && doc["kind"] != "Namespace",
                "{}: objects must not choose their namespace: {doc}",
                path.display()
            );
        }
        let out = env.kubectl_with_stdin(&["apply", "-f", "-"], Some(&text));
        expect_success(&out, &format!("kubectl apply -f {}", path.display()));
    }
    for ((from, _), used) in replacements.iter().zip(used) {
        assert!(used, "{example}: no manifest contains {from:?}");
    }
}

/// Creates the Secret of the example's `secret.yaml` (same name, same keys) with `values`
/// instead of the example's, which point at a server in someone's cluster.
async fn local_secret(env: &TestEnv, example: &str, values: &[(&str, &str)]) {
    let path = example_dir(example).join("secret.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let docs = documents(&text);
    assert_eq!(docs.len(), 1, "{}: one Secret", path.display());
    let secret = &docs[0];
    assert_eq!(secret["kind"], "Secret", "{}", path.display());
    let mut keys: Vec<&str> = secret["stringData"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort();
    let mut wanted: Vec<&str> = values.iter().map(|(k, _)| *k).collect();
    wanted.sort();
    assert_eq!(keys, wanted, "{}: the Secret's keys", path.display());
    let data: serde_json::Map<String, Value> = values
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    env.create::<Secret>(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret["metadata"]["name"]},
        "stringData": data
    }))
    .await;
}

/// Shortens the ScaledObject's pollingInterval and cooldownPeriod for the test.
fn shorten_timing(env: &TestEnv, scaled_object: &str) {
    let out = env.kubectl(&[
        "patch",
        "scaledobject",
        scaled_object,
        "--type=merge",
        "-p",
        r#"{"spec":{"pollingInterval":1,"cooldownPeriod":5}}"#,
    ]);
    expect_success(&out, "shortening pollingInterval and cooldownPeriod");
}

async fn await_condition(env: &TestEnv, scaled_object: &str, type_: &str, wanted: &str) {
    eventually(
        &format!("{scaled_object}: {type_}={wanted}"),
        DEADLINE,
        || async {
            let (status, reason, message) = env.condition(scaled_object, type_).await?;
            ensure(status == wanted, || {
                format!("{type_}={status} ({reason}): {message}")
            })
        },
    )
    .await;
}

/// The first metric of the ScaledObject's HPA, once it has one.
async fn hpa_metric(env: &TestEnv, scaled_object: &str) -> Value {
    let name = format!("keda-hpa-{scaled_object}");
    eventually(&format!("the HPA {name}"), DEADLINE, || async {
        let hpa = env
            .api::<HorizontalPodAutoscaler>()
            .get(&name)
            .await
            .map_err(|e| e.to_string())?;
        let spec = serde_json::to_value(hpa.spec).map_err(|e| e.to_string())?;
        let metric = spec["metrics"][0]["external"].clone();
        ensure(!metric.is_null(), || spec.to_string()).map(|()| metric)
    })
    .await
}

/// Waits until the Deployment (named like its ScaledObject) has `wanted` replicas; a timeout
/// names the HPA's view too (its ScalingActive condition says why it does not move).
async fn await_replicas(env: &TestEnv, name: &str, what: &str, wanted: i32) {
    eventually(&format!("{name}: {what}"), DEADLINE, || async {
        let n = env.replicas(name).await?;
        if n == wanted {
            return Ok(());
        }
        let hpa = env
            .api::<HorizontalPodAutoscaler>()
            .get_opt(&format!("keda-hpa-{name}"))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|h| h.status)
            .and_then(|s| s.conditions)
            .and_then(|c| c.into_iter().find(|c| c.type_ == "ScalingActive"))
            .map(|c| format!("{} {}", c.status, c.message.unwrap_or_default()))
            .unwrap_or_default();
        Err(format!("replicas {n}; HPA ScalingActive: {hpa}"))
    })
    .await;
}

/// Replicas stay at 0 while the ScaledObject is Active=False (nothing to do yet).
async fn idle_at_zero(env: &TestEnv, scaled_object: &str, deployment: &str) {
    await_condition(env, scaled_object, "Ready", "True").await;
    await_condition(env, scaled_object, "Active", "False").await;
    assert_eq!(env.replicas(deployment).await, Ok(0), "idle");
}

/// ebb's own 0 <-> 1 steps show up as KEDA's Events.
async fn activated_and_deactivated(env: &TestEnv, scaled_object: &str) {
    env.await_event_reasons(
        scaled_object,
        &["KEDAScaleTargetActivated", "KEDAScaleTargetDeactivated"],
        DEADLINE,
    )
    .await;
}

#[test]
fn every_example_has_a_readme_and_manifests() {
    for example in [
        "redis-list-worker",
        "redis-list-job",
        "rabbitmq-consumer",
        "kafka-consumer",
        "metrics-api-service",
        "prometheus-query",
        "cron-schedule",
        "external-scaler",
    ] {
        let dir = example_dir(example);
        let readme = std::fs::read_to_string(dir.join("README.md"))
            .unwrap_or_else(|e| panic!("{example}/README.md: {e}"));
        assert!(readme.starts_with("# "), "{example}/README.md: a title");
        let manifests = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
            .count();
        assert!(manifests >= 2, "{example}: manifests");
    }
}

/// redis-list-worker: 40 jobs, listLength 5 -> 8 workers; the example's worker drains the
/// list -> 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_list_worker_scales_on_the_list_and_its_worker_drains_it() {
    let env = setup("example-redis").await;
    let ebb = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb).await;
    // The example's list name; the test namespace is unique, the Redis is shared.
    let mut redis = env.redis(0).await;
    redis.del(&["jobs"]).await;

    local_secret(
        &env,
        "redis-list-worker",
        &[("address", env.redis_address())],
    )
    .await;
    apply_example(&env, "redis-list-worker", &[]);
    shorten_timing(&env, "redis-list-worker");
    idle_at_zero(&env, "redis-list-worker", "redis-list-worker").await;
    let metric = hpa_metric(&env, "redis-list-worker").await;
    assert_eq!(metric["metric"]["name"], "s0-redis-jobs");
    assert_eq!(metric["target"]["averageValue"], "5");

    redis.push("jobs", 40).await;
    await_replicas(&env, "redis-list-worker", "40 jobs / 5 = 8", 8).await;

    // The example's worker, as a pod would run it (WORK_MILLIS 0 to drain at once).
    let worker = RedisListWorker {
        address: env.redis_address().to_string(),
        password: None,
        database: 0,
        list: "jobs".into(),
        work_time: Duration::ZERO,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    await_replicas(&env, "redis-list-worker", "drained: back to 0", 0).await;
    let _ = stop.send(());
    let done = running.await.expect("the worker task").expect("the worker");
    assert_eq!(done, 40, "jobs the worker did");
    activated_and_deactivated(&env, "redis-list-worker").await;
    env.delete_scaled_objects().await;
    redis.del(&["jobs"]).await;
}

/// redis-list-job: 6 items -> 6 Jobs, each of whose workers (the example's, run by the test as
/// the Job's pod would) takes one item; then no Job more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_list_job_runs_one_job_per_item() {
    use k8s_openapi::api::batch::v1::Job;
    let env = setup("example-redis-job").await;
    let ebb = env.start_ebb();
    // The example's list name; the test namespace is unique, the Redis is shared.
    let mut redis = env.redis(0).await;
    redis.del(&["renders"]).await;
    local_secret(&env, "redis-list-job", &[("address", env.redis_address())]).await;
    apply_example(&env, "redis-list-job", &[]);
    // Polls every second, and kwok runs each Job's pod for 2 s before it succeeds.
    let out = env.kubectl(&[
        "patch",
        "scaledjob",
        "redis-list-job",
        "--type=merge",
        "-p",
        r#"{"spec":{"pollingInterval":1,"jobTargetRef":{"template":{"metadata":{"annotations":{"ebb.dev/job-runs-for":"2s"}}}}}}"#,
    ]);
    expect_success(&out, "shortening pollingInterval, and the Jobs' run to 2 s");
    eventually("redis-list-job Ready", DEADLINE, || async {
        let sj: ebb_crds::ScaledJob = env
            .api()
            .get("redis-list-job")
            .await
            .map_err(|e| e.to_string())?;
        let conditions = sj.status.and_then(|s| s.conditions).unwrap_or_default();
        ensure(
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            || format!("{conditions:?}"),
        )
    })
    .await;

    redis.push("renders", 6).await;
    let worker = RedisListWorker {
        address: env.redis_address().to_string(),
        password: None,
        database: 0,
        list: "renders".into(),
        work_time: Duration::ZERO,
    };
    let jobs = env.api::<Job>();
    let mut taken = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let started = tokio::time::Instant::now();
    while taken.len() < 6 {
        assert!(
            started.elapsed() < DEADLINE,
            "6 Jobs: {} so far",
            seen.len()
        );
        let list = jobs
            .list(&kube::api::ListParams::default().labels("scaledjob.keda.sh/name=redis-list-job"))
            .await
            .expect("list Jobs");
        for job in list.items {
            if seen.insert(job.metadata.name.clone().unwrap_or_default()) {
                // The Job's pod runs the worker: one item.
                let item = worker.take_one().await.expect("the worker");
                taken.push(item.expect("an item for each Job"));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every Job completes; the 5 newest are kept (successfulJobsHistoryLimit), and no Job more
    // is created at the later polls: the list is empty.
    let names = || async {
        let list = jobs
            .list(&kube::api::ListParams::default().labels("scaledjob.keda.sh/name=redis-list-job"))
            .await
            .map_err(|e| e.to_string())?;
        let complete = list
            .items
            .iter()
            .filter(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "Complete" && c.status == "True")
                    })
            })
            .count();
        ensure(complete == list.items.len(), || {
            format!("{complete} of {} Complete", list.items.len())
        })?;
        Ok::<_, String>(
            list.items
                .into_iter()
                .filter_map(|j| j.metadata.name)
                .collect::<std::collections::BTreeSet<_>>(),
        )
    };
    eventually("5 Complete Jobs kept", DEADLINE, || async {
        let kept = names().await?;
        ensure(kept.len() == 5, || format!("{kept:?}"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = names().await.expect("the Jobs");
    assert_eq!(kept.len(), 5, "{kept:?}");
    assert!(
        kept.is_subset(&seen),
        "no Job more: {kept:?} beyond {seen:?}"
    );
    assert_eq!(seen.len(), 6, "one Job per item");
    let mut items = taken.clone();
    items.sort();
    items.dedup();
    assert_eq!(items.len(), 6, "each Job took a different item: {taken:?}");
    env.delete_scaled_jobs().await;
    drop(ebb);
    redis.del(&["renders"]).await;
}

/// rabbitmq-consumer: the example's producer publishes 50 messages, value 10 -> 5
/// consumers; the example's consumer drains the queue -> 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_consumer_scales_on_the_queue_and_its_consumer_drains_it() {
    let env = setup("example-rabbitmq").await;
    let ebb = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb).await;
    let queue = RabbitMqQueue {
        url: env.cluster.rabbitmq_amqp_url.clone(),
        queue: "orders".into(),
    };
    let amqp = env.amqp().await;
    // The example's queue name; the test namespace is unique, the broker is shared.
    let _ = amqp
        .channel
        .queue_delete("orders".into(), Default::default())
        .await;
    // The producer declares the queue (ebb reports a missing queue as an error, not 0).
    queue.publish(0, "order").await.expect("declare the queue");

    local_secret(
        &env,
        "rabbitmq-consumer",
        &[("host", &env.cluster.rabbitmq_amqp_url)],
    )
    .await;
    apply_example(&env, "rabbitmq-consumer", &[]);
    shorten_timing(&env, "rabbitmq-consumer");
    idle_at_zero(&env, "rabbitmq-consumer", "rabbitmq-consumer").await;
    let metric = hpa_metric(&env, "rabbitmq-consumer").await;
    assert_eq!(metric["metric"]["name"], "s0-rabbitmq-orders");
    assert_eq!(metric["target"]["averageValue"], "10");

    queue.publish(50, "order").await.expect("publish");
    await_replicas(&env, "rabbitmq-consumer", "50 messages / 10 = 5", 5).await;

    let consumer = queue.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        let settings = ConsumerSettings {
            prefetch: 10,
            work_time: Duration::ZERO,
        };
        consumer
            .consume(settings, async {
                let _ = stopped.await;
            })
            .await
    });
    await_replicas(&env, "rabbitmq-consumer", "drained: back to 0", 0).await;
    let _ = stop.send(());
    let done = running
        .await
        .expect("the consumer task")
        .expect("the consumer");
    assert_eq!(done, 50, "messages the consumer acknowledged");
    activated_and_deactivated(&env, "rabbitmq-consumer").await;
    env.delete_scaled_objects().await;
    let _ = amqp
        .channel
        .queue_delete("orders".into(), Default::default())
        .await;
}

/// kafka-consumer: 45 messages on a topic of 6 partitions, lagThreshold 10 -> 5 consumers; the
/// console consumer (Kafka's own, run here as the pods would run it) reads and commits them ->
/// 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_scales_on_the_group_s_lag_and_back_once_it_has_committed() {
    let env = setup("example-kafka").await;
    let ebb = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb).await;
    let c = env.cluster.clone();
    // The example's topic and group on the shared broker, made unique to this run.
    let topic = integration_tests::unique_name("orders");
    let group = integration_tests::unique_name("order-consumers");
    let (user, password) = c.kafka_user.clone();
    let properties = format!(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{user}\" password=\"{password}\";\nauto.offset.reset=earliest\n"
    );
    local_secret(
        &env,
        "kafka-consumer",
        &[
            ("username", &user),
            ("password", &password),
            ("client.properties", &properties),
        ],
    )
    .await;
    let (b, t) = (c.kafka_bootstrap.clone(), topic.clone());
    tokio::task::spawn_blocking(move || integration_tests::kafka_topic(&b, &t, 6))
        .await
        .expect("join");
    apply_example(
        &env,
        "kafka-consumer",
        &[
            (
                "kafka.kafka.svc.cluster.local:9092",
                &c.kafka_sasl_bootstrap,
            ),
            ("order-consumers", &group),
            ("orders", &topic),
        ],
    );
    shorten_timing(&env, "order-consumer");
    idle_at_zero(&env, "order-consumer", "order-consumer").await;
    let metric = hpa_metric(&env, "order-consumer").await;
    assert_eq!(metric["metric"]["name"], format!("s0-kafka-{topic}"));
    assert_eq!(metric["target"]["averageValue"], "10");

    let (b, t) = (c.kafka_bootstrap.clone(), topic.clone());
    tokio::task::spawn_blocking(move || integration_tests::kafka_produce(&b, &t, 45))
        .await
        .expect("join");
    await_replicas(&env, "order-consumer", "45 messages / 10 = 5", 5).await;

    // The consumers' part: Kafka's console consumer in the group, over SASL, as consumer.yaml
    // runs it; it commits what it read when it stops after 45 messages.
    let config = std::env::temp_dir().join(format!("{}.properties", env.namespace));
    std::fs::write(&config, &properties).expect("client.properties");
    let (b, t, g, path) = (
        c.kafka_sasl_bootstrap.clone(),
        topic.clone(),
        group.clone(),
        config.display().to_string(),
    );
    let read = tokio::task::spawn_blocking(move || {
        integration_tests::kafka_tool(
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            &[
                "--bootstrap-server",
                &b,
                "--topic",
                &t,
                "--group",
                &g,
                "--consumer.config",
                &path,
                "--max-messages",
                "45",
                "--timeout-ms",
                "60000",
            ],
            None,
        )
    })
    .await
    .expect("join");
    let _ = std::fs::remove_file(&config);
    // Its stdout is the messages' values; anything else it says goes to stderr.
    let messages = read.lines().filter(|l| l.starts_with("message ")).count();
    assert_eq!(messages, 45, "messages the console consumer read:\n{read}");
    await_replicas(&env, "order-consumer", "all committed: back to 0", 0).await;
    activated_and_deactivated(&env, "order-consumer").await;
    env.delete_scaled_objects().await;
}

/// The examples' backlog API on a loopback port, served until the sender is dropped.
async fn backlog_api_on_loopback() -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(backlog_api::serve(listener, Backlog::default(), async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// metrics-api-service: 45 jobs posted to the example's backlog API, targetValue 10 -> 5
/// workers; workers take every job -> 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_api_service_scales_on_the_reported_backlog() {
    let env = setup("example-metrics-api").await;
    let ebb = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb).await;
    let (addr, _stop) = backlog_api_on_loopback().await;
    let base = format!("http://{addr}");

    apply_example(
        &env,
        "metrics-api-service",
        &[(
            "backlog-api.ebb-examples.svc.cluster.local:8080",
            &addr.to_string(),
        )],
    );
    shorten_timing(&env, "backlog-worker");
    idle_at_zero(&env, "backlog-worker", "backlog-worker").await;
    let metric = hpa_metric(&env, "backlog-worker").await;
    assert_eq!(metric["metric"]["name"], "s0-metric-api-backlog-waiting");
    assert_eq!(metric["target"]["averageValue"], "10");

    let http = reqwest::Client::new();
    let response = http
        .post(format!("{base}/jobs?count=45"))
        .send()
        .await
        .expect("POST /jobs");
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(
        response.json::<Value>().await.expect("JSON"),
        json!({"backlog": {"waiting": 45}})
    );
    await_replicas(&env, "backlog-worker", "45 jobs / 10 = 5", 5).await;

    // What the workers would do: take jobs until there are none.
    let mut taken = 0;
    loop {
        let response = http
            .post(format!("{base}/jobs/take"))
            .send()
            .await
            .expect("POST /jobs/take");
        match response.status().as_u16() {
            200 => taken += 1,
            204 => break,
            other => panic!("POST /jobs/take answered {other}"),
        }
    }
    assert_eq!(taken, 45);
    await_replicas(&env, "backlog-worker", "nothing waits: back to 0", 0).await;
    activated_and_deactivated(&env, "backlog-worker").await;
    env.delete_scaled_objects().await;
}

/// prometheus-query: the example's backlog API scraped by the real Prometheus; 45 jobs,
/// threshold 10 -> 5 workers; workers take every job -> 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_query_scales_on_the_scraped_backlog() {
    let env = setup("example-prometheus").await;
    let ebb = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb).await;
    let (addr, _stop) = backlog_api_on_loopback().await;
    let base = format!("http://{addr}");
    // Prometheus scrapes the API as it would the pod, with the pod's `app` label.
    let targets = ScrapeTarget::list(&env, &addr.to_string(), &[("app", "backlog-api")]);

    apply_example(
        &env,
        "prometheus-query",
        &[(
            "http://prometheus-operated.monitoring.svc.cluster.local:9090",
            &env.cluster.prometheus_url,
        )],
    );
    shorten_timing(&env, "backlog-worker");
    idle_at_zero(&env, "backlog-worker", "backlog-worker").await;
    let metric = hpa_metric(&env, "backlog-worker").await;
    assert_eq!(metric["metric"]["name"], "s0-prometheus");
    assert_eq!(metric["target"]["averageValue"], "10");

    let http = reqwest::Client::new();
    let response = http
        .post(format!("{base}/jobs?count=45"))
        .send()
        .await
        .expect("POST /jobs");
    assert_eq!(response.status().as_u16(), 202);
    await_replicas(&env, "backlog-worker", "45 jobs / 10 = 5", 5).await;

    // What the workers would do: take jobs until there are none.
    while http
        .post(format!("{base}/jobs/take"))
        .send()
        .await
        .expect("POST /jobs/take")
        .status()
        .as_u16()
        == 200
    {}
    await_replicas(&env, "backlog-worker", "nothing waits: back to 0", 0).await;
    activated_and_deactivated(&env, "backlog-worker").await;
    env.delete_scaled_objects().await;
    drop(targets);
}

/// A scrape target listed in the dev Prometheus's file service discovery while it lives.
struct ScrapeTarget(PathBuf);

impl ScrapeTarget {
    fn list(env: &TestEnv, address: &str, labels: &[(&str, &str)]) -> Self {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let path = env
            .cluster
            .prometheus_targets_dir
            .join(format!("{}.json", env.namespace));
        let text = json!([{"targets": [address], "labels": labels}]).to_string();
        // Written whole and renamed, so Prometheus never reads half a file.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, text).expect("writing the scrape target");
        std::fs::rename(&partial, &path).expect("listing the scrape target");
        Self(path)
    }
}

impl Drop for ScrapeTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// cron-schedule: inside a window (moved to now) 4 replicas; outside it 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_schedule_holds_four_replicas_inside_the_window_only() {
    let env = setup("example-cron").await;
    let ebb = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb).await;
    apply_example(&env, "cron-schedule", &[]);
    // The office-hours schedule as written is valid (whether it is open now depends on when
    // the test runs).
    await_condition(&env, "office-hours-app", "Ready", "True").await;

    // A window from this minute to three minutes on (minutes are the same in UTC and Berlin,
    // whole hours apart): open now, for at least two minutes.
    let minute = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        / 60
        % 60;
    let window = |start: u64, end: u64| {
        json!([
            {"op": "replace", "path": "/spec/triggers/0/metadata/start", "value": format!("{} * * * *", start % 60)},
            {"op": "replace", "path": "/spec/triggers/0/metadata/end", "value": format!("{} * * * *", end % 60)},
            {"op": "replace", "path": "/spec/pollingInterval", "value": 1},
            {"op": "replace", "path": "/spec/cooldownPeriod", "value": 5}
        ])
        .to_string()
    };
    let out = env.kubectl(&[
        "patch",
        "scaledobject",
        "office-hours-app",
        "--type=json",
        "-p",
        &window(minute, minute + 3),
    ]);
    expect_success(&out, "moving the window to now");
    await_replicas(
        &env,
        "office-hours-app",
        "desiredReplicas 4 inside the window",
        4,
    )
    .await;
    await_condition(&env, "office-hours-app", "Active", "True").await;
    let metric = hpa_metric(&env, "office-hours-app").await;
    assert_eq!(metric["target"]["averageValue"], "1");

    // A window half an hour away: closed now, so back to 0 after the cooldown.
    let out = env.kubectl(&[
        "patch",
        "scaledobject",
        "office-hours-app",
        "--type=json",
        "-p",
        &window(minute + 30, minute + 31),
    ]);
    expect_success(&out, "moving the window away");
    await_replicas(&env, "office-hours-app", "outside the window: 0", 0).await;
    await_condition(&env, "office-hours-app", "Active", "False").await;
    activated_and_deactivated(&env, "office-hours-app").await;
    env.delete_scaled_objects().await;
}

/// external-scaler: the example's file-queue plugin at depth 30, queueLength 5 -> 6
/// workers; depth 0 -> 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_scaler_plugin_scales_the_workers() {
    let env = setup("example-external").await;
    let ebb = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb).await;
    // The queue file the ConfigMap would provide in the plugin's pod.
    let dir = std::env::temp_dir().join(&env.namespace);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let depth = dir.join("depth");
    std::fs::write(&depth, "0").expect("write the depth");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        ebb_examples::file_queue_plugin().serve_with_listener(listener, async {
            let _ = stopped.await;
        }),
    );

    apply_example(
        &env,
        "external-scaler",
        &[
            (
                "file-queue-plugin.ebb-examples.svc.cluster.local:6000",
                &addr.to_string(),
            ),
            ("/etc/queue/depth", &depth.to_string_lossy()),
        ],
    );
    shorten_timing(&env, "batch-worker");
    idle_at_zero(&env, "batch-worker", "batch-worker").await;
    let metric = hpa_metric(&env, "batch-worker").await;
    assert_eq!(metric["metric"]["name"], "s0-file-queue");
    assert_eq!(metric["target"]["averageValue"], "5");

    std::fs::write(&depth, "30").expect("write the depth");
    await_replicas(&env, "batch-worker", "depth 30 / 5 = 6", 6).await;
    std::fs::write(&depth, "0").expect("write the depth");
    await_replicas(&env, "batch-worker", "depth 0: back to 0", 0).await;
    activated_and_deactivated(&env, "batch-worker").await;
    env.delete_scaled_objects().await;
    let _ = std::fs::remove_dir_all(&dir);
}
