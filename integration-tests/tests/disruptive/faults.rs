//! Faults injected into the real components while ebb runs, one at a time (they share the dev
//! cluster's servers): RabbitMQ killed with SIGKILL and restarted, PostgreSQL, MariaDB and
//! Prometheus killed together and restarted, Kafka, NATS and ElasticMQ (SQS) killed together
//! and restarted, kube-apiserver killed and restarted, the `ebb` process killed with SIGKILL
//! mid-cooldown and restarted, and an event source that answers only after its timeout. In
//! each, no target is scaled down by the fault, everything recovers, and nothing leaks. `cargo xtask chaos` repeats these for longer.

use std::collections::BTreeMap;
use std::time::Duration;

use ebb_operator::scale::evaluate::Answer;
use integration_tests::{
    ReplicaLog, TestEnv, chaos_rounds, ensure, eventually, setup, unique_name,
};
use serde_json::{Value, json};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(90);

fn layout() -> xtask::cluster::Layout {
    xtask::cluster::Layout::for_workspace()
}

/// Kills a dev cluster service at once (SIGTERM and SIGKILL together).
async fn kill_service(name: &'static str) {
    tokio::task::spawn_blocking(move || {
        xtask::cluster::process::stop(&layout(), name, Duration::ZERO)
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| panic!("killing {name}: {e:#}"));
}

/// Starts whatever is not running (as `cargo xtask cluster up`) and waits until it is healthy.
async fn restart_services() {
    tokio::task::spawn_blocking(xtask::cluster::up)
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("restarting the dev cluster's services: {e:#}"));
}

/// ebb's AMQP connections, as RabbitMQ's management API lists them.
async fn ebb_amqp_connections(env: &TestEnv) -> Result<usize, String> {
    let (url, (user, password)) = env.rabbitmq_management();
    let connections: Vec<Value> = reqwest::Client::new()
        .get(format!("{url}api/connections"))
        .basic_auth(user, Some(password))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    Ok(connections
        .iter()
        .filter(|c| {
            c["client_properties"]["connection_name"]
                == ebb_scalers::builtin::rabbitmq::CONNECTION_NAME
        })
        .count())
}

/// Declares `queue` (durable) and publishes 10 persistent messages to it, each confirmed.
async fn fill_queue(env: &TestEnv, queue: &str) {
    let amqp = env.amqp().await;
    amqp.channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("declare");
    for _ in 0..10 {
        amqp.channel
            .basic_publish(
                "".into(),
                queue.into(),
                lapin::options::BasicPublishOptions::default(),
                b"job",
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_killed_mid_run_scales_nothing_down_and_recovers_within_two_polls() {
    let _serial = crate::serial().await;
    let env = setup("faults-rabbitmq").await;
    let ebb = env.start_ebb();
    let queue = unique_name("faults-queue");
    fill_queue(&env, &queue).await;
    const INTERVAL: u64 = 2;
    for (name, fallback) in [
        ("plain", None),
        (
            "with-fallback",
            Some(json!({"failureThreshold": 2, "replicas": 4})),
        ),
    ] {
        let mut spec = json!({
            "pollingInterval": INTERVAL,
            "cooldownPeriod": 1,
            "triggers": [{"type": "rabbitmq", "metadata": {
                "host": env.cluster.rabbitmq_amqp_url,
                "protocol": "amqp",
                "queueName": queue,
                "mode": "QueueLength",
                "value": "5",
                "activationValue": "2"
            }}]
        });
        if let Some(fallback) = fallback {
            spec["fallback"] = fallback;
        }
        env.create_target(name, 3, spec).await;
    }
    for name in ["plain", "with-fallback"] {
        eventually(&format!("{name}: Active"), DEADLINE, || async {
            let (status, _, message) = env.condition(name, "Active").await?;
            ensure(status == "True", || format!("Active={status}: {message}"))
        })
        .await;
    }
    let before = eventually("RabbitMQ lists ebb's connection", DEADLINE, || async {
        let n = ebb_amqp_connections(&env).await?;
        ensure(n >= 1, || format!("{n} connections")).map(|()| n)
    })
    .await;
    let replicas = ReplicaLog::start(&env);
    for round in 1..=chaos_rounds() {
        // What each object ran at the fault: the outage must take none of it away. (A round
        // after the first may start lower: the refill below can scale down.)
        let mut at_fault = std::collections::BTreeMap::new();
        for name in ["plain", "with-fallback"] {
            at_fault.insert(name, env.replicas(name).await.expect("replicas"));
        }
        let fault = Instant::now();

        kill_service("rabbitmq").await;
        eventually("plain: Ready=False", DEADLINE, || async {
            let (status, _, message) = env.condition("plain", "Ready").await?;
            ensure(status == "False", || format!("Ready={status}: {message}"))
        })
        .await;
        eventually("with-fallback: Fallback=True", DEADLINE, || async {
            let (status, _, message) = env.condition("with-fallback", "Fallback").await?;
            ensure(status == "True", || format!("Fallback={status}: {message}"))
        })
        .await;

        restart_services().await;
        // The dev cluster's RabbitMQ starts empty: the work is there again once it is back.
        // Between the queue's declaration and its tenth message ebb may read a real, short
        // queue and scale down on it, as it should: the outage ends when the refill begins.
        let refilling = Instant::now();
        fill_queue(&env, &queue).await;
        let back = Instant::now();
        let metric = format!("s0-rabbitmq-{queue}");
        eventually("both read the queue again", DEADLINE, || async {
            let answers: Vec<_> = ["plain", "with-fallback"]
                .iter()
                .map(|name| ebb.ctx.store.get(&env.namespace, name, &metric))
                .collect();
            ensure(
                answers
                    .iter()
                    .all(|a| matches!(a, Some((Answer::Value(v), _)) if *v == 10.0)),
                || format!("{answers:?}"),
            )
        })
        .await;
        let recovered = back.elapsed();
        println!(
            "round {round}: RabbitMQ back, both objects read the queue {:.1}s later",
            recovered.as_secs_f64()
        );
        assert!(
            recovered <= Duration::from_secs(2 * INTERVAL + 1),
            "recovery took {recovered:?}, more than two polls of {INTERVAL}s"
        );
        for name in ["plain", "with-fallback"] {
            eventually(&format!("{name}: Ready, no fallback"), DEADLINE, || async {
                let (ready, _, message) = env.condition(name, "Ready").await?;
                let (fallback, _, _) = env.condition(name, "Fallback").await?;
                ensure(ready == "True" && fallback == "False", || {
                    format!("Ready={ready} ({message}) Fallback={fallback}")
                })
            })
            .await;
            let counts: Vec<_> = replicas
                .of(name, fault)
                .into_iter()
                .filter(|(at, _)| *at < refilling)
                .collect();
            assert!(
                counts.iter().all(|(_, n)| *n >= at_fault[name]),
                "{name} was scaled down by the outage from {}: {counts:?}",
                at_fault[name]
            );
        }
        // The connection the outage broke was replaced, not added to.
        eventually(
            "ebb holds as many connections as before",
            DEADLINE,
            || async {
                let n = ebb_amqp_connections(&env).await?;
                ensure(n == before, || format!("{n} connections, {before} before"))
            },
        )
        .await;
    }

    env.delete_scaled_objects().await;
    if let Ok(amqp) = tokio::time::timeout(Duration::from_secs(10), env.amqp()).await {
        let _ = amqp
            .channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
}

/// The second wave's servers (PostgreSQL, MariaDB, Prometheus) killed together under
/// ScaledObjects with and without fallback: the one with fallback falls back, neither is scaled
/// down, and once the servers are back (the dev cluster starts them empty: the test puts its
/// values back) every trigger reads again within two polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_servers_and_prometheus_killed_scale_nothing_down_and_recover_within_two_polls() {
    let _serial = crate::serial().await;
    let env = setup("faults-second-wave").await;
    let ebb = env.start_ebb();
    let c = env.cluster.clone();
    const INTERVAL: u64 = 2;
    let table = unique_name("faults").replace('-', "_");
    let series = format!("ebb_faults_backlog{{test=\"{table}\"}}");
    let fill = || {
        integration_tests::psql(
            &c.postgres_url,
            &format!(
                "CREATE TABLE IF NOT EXISTS {table} (n int); DELETE FROM {table}; INSERT INTO {table} VALUES (10)"
            ),
        );
        integration_tests::mariadb(
            &c.mysql_address,
            &c.mysql_user,
            &format!(
                "CREATE TABLE IF NOT EXISTS {table} (n INT); DELETE FROM {table}; INSERT INTO {table} VALUES (10)"
            ),
        );
    };
    fill();
    reqwest::Client::new()
        .post(format!("{}/set", c.prometheus_exporter_url))
        .body(format!("{series} 10"))
        .send()
        .await
        .expect("exporter /set");
    let dsn = format!(
        "{}:{}@tcp({})/{}",
        c.mysql_user.0, c.mysql_user.1, c.mysql_address, c.mysql_user.2
    );
    let triggers: [OutageTrigger; 3] = [
        (
            "postgresql",
            json!({"type": "postgresql", "metadata": {
                "query": format!("SELECT SUM(n) FROM {table}"), "targetQueryValue": "5"
            }, "authenticationRef": {"name": "pg"}}),
            "s0-postgresql".to_string(),
        ),
        (
            "mysql",
            json!({"type": "mysql", "metadata": {
                "query": format!("SELECT SUM(n) FROM {table}"), "queryValue": "5"
            }, "authenticationRef": {"name": "mysql"}}),
            format!("s0-mysql-{}", c.mysql_user.2),
        ),
        (
            "prometheus",
            json!({"type": "prometheus", "metadata": {
                "serverAddress": c.prometheus_url, "query": format!("sum({series})"),
                "threshold": "5", "ignoreNullValues": "false"
            }}),
            "s0-prometheus".to_string(),
        ),
    ];
    env.create::<k8s_openapi::api::core::v1::Secret>(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sql"},
        "stringData": {"pg": c.postgres_url, "mysql": dsn}
    }))
    .await;
    for (name, key, parameter) in [
        ("pg", "pg", "connection"),
        ("mysql", "mysql", "connectionString"),
    ] {
        env.create::<ebb_crds::TriggerAuthentication>(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": {"name": name},
            "spec": {"secretTargetRef": [{"parameter": parameter, "name": "sql", "key": key}]}
        }))
        .await;
    }
    let names = active_pairs(&env, &triggers, INTERVAL).await;
    let replicas = ReplicaLog::start(&env);
    let fault = Instant::now();
    for service in ["postgresql", "mariadb", "prometheus"] {
        kill_service(service).await;
    }
    outage_reported(&env, &triggers).await;

    // From here on (every trigger failing), the first instant each object reads 10 again.
    let watched = watched_metrics(&names, &triggers);
    let (first_reads, watcher) = first_reads_of(&env, &ebb, watched, 10.0);
    restart_services().await;
    fill();
    let sql_back = Instant::now();
    // Prometheus is back when it has scraped the series again (a fresh Prometheus hands its
    // first targets to the scrapers after its discovery's 5 s throttle): asked directly.
    let mut direct =
        reqwest::Url::parse(&format!("{}/api/v1/query", c.prometheus_url)).expect("a URL");
    direct
        .query_pairs_mut()
        .append_pair("query", &format!("sum({series})"));
    let prometheus_back = eventually("Prometheus has the series again", DEADLINE, || async {
        let body: Value = reqwest::get(direct.clone())
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let value = body["data"]["result"][0]["value"][1].clone();
        ensure(value == json!("10"), || body.to_string()).map(|()| Instant::now())
    })
    .await;
    // How long after its server's return each object read its value again.
    let read_again: BTreeMap<String, Duration> =
        eventually("every trigger reads again", DEADLINE, || {
            let seen = first_reads.lock().expect("lock").clone();
            let done = seen.len() == names.len();
            async move {
                ensure(done, || format!("{:?}", seen.keys().collect::<Vec<_>>()))?;
                Ok(seen
                    .into_iter()
                    .map(|(name, at)| {
                        let back = if name.starts_with("prometheus") {
                            prometheus_back
                        } else {
                            sql_back
                        };
                        (name, at.saturating_duration_since(back))
                    })
                    .collect())
            }
        })
        .await;
    watcher.abort();
    println!(
        "PostgreSQL, MariaDB and Prometheus back: each trigger read again after {read_again:?}"
    );
    for (name, took) in &read_again {
        assert!(
            *took <= Duration::from_secs(2 * INTERVAL + 1),
            "{name}: recovery took {took:?}, more than two polls of {INTERVAL}s"
        );
    }
    for name in &names {
        let counts = replicas.of(name, fault);
        assert!(
            counts.iter().all(|(_, n)| *n >= 3),
            "{name} was scaled down by the outage: {counts:?}"
        );
    }
    env.delete_scaled_objects().await;
}

/// One trigger of an outage test: its kind (the objects' names), the trigger, its metric.
type OutageTrigger = (&'static str, Value, String);

/// For each trigger, an object without fallback (named after the kind) and one with
/// (`<kind>-fallback`: 4 replicas after 2 failures), each on a target at 3 replicas, polled
/// every `interval` seconds; returns their names once all are Active.
async fn active_pairs(env: &TestEnv, triggers: &[OutageTrigger], interval: u64) -> Vec<String> {
    let mut names = Vec::new();
    for (kind, trigger, _) in triggers {
        for fallback in [false, true] {
            let name = format!("{kind}{}", if fallback { "-fallback" } else { "" });
            let mut spec = json!({
                "pollingInterval": interval,
                "cooldownPeriod": 1,
                "triggers": [trigger]
            });
            if fallback {
                spec["fallback"] = json!({"failureThreshold": 2, "replicas": 4});
            }
            env.create_target(&name, 3, spec).await;
            names.push(name);
        }
    }
    for name in &names {
        eventually(&format!("{name}: Active"), DEADLINE, || async {
            let (status, _, message) = env.condition(name, "Active").await?;
            ensure(status == "True", || format!("Active={status}: {message}"))
        })
        .await;
    }
    names
}

/// Waits until each plain object says Ready=False and each `-fallback` one Fallback=True.
async fn outage_reported(env: &TestEnv, triggers: &[OutageTrigger]) {
    for (kind, _, _) in triggers {
        let plain = kind.to_string();
        eventually(&format!("{plain}: Ready=False"), DEADLINE, || async {
            let (status, _, message) = env.condition(&plain, "Ready").await?;
            ensure(status == "False", || format!("Ready={status}: {message}"))
        })
        .await;
        let with = format!("{kind}-fallback");
        eventually(&format!("{with}: Fallback=True"), DEADLINE, || async {
            let (status, _, message) = env.condition(&with, "Fallback").await?;
            ensure(status == "True", || format!("Fallback={status}: {message}"))
        })
        .await;
    }
}

/// (object, metric) for each object [`active_pairs`] made.
fn watched_metrics(names: &[String], triggers: &[OutageTrigger]) -> Vec<(String, String)> {
    names
        .iter()
        .zip(triggers.iter().flat_map(|t| [t, t]))
        .map(|(name, (_, _, metric))| (name.clone(), metric.clone()))
        .collect()
}

/// Shared map of the first instant each object's `metric` reads `value` in ebb's store, filled
/// by a task that looks every 50 ms until it is aborted.
type FirstReads = std::sync::Arc<std::sync::Mutex<BTreeMap<String, Instant>>>;

fn first_reads_of(
    env: &TestEnv,
    ebb: &integration_tests::EbbGuard,
    watched: Vec<(String, String)>,
    value: f64,
) -> (FirstReads, tokio::task::JoinHandle<()>) {
    let first_reads = FirstReads::default();
    let (ctx, ns, reads) = (ebb.ctx.clone(), env.namespace.clone(), first_reads.clone());
    let watcher = tokio::spawn(async move {
        loop {
            for (name, metric) in &watched {
                if matches!(
                    ctx.store.get(&ns, name, metric),
                    Some((Answer::Value(v), _)) if v == value
                ) {
                    reads
                        .lock()
                        .expect("lock")
                        .entry(name.clone())
                        .or_insert_with(Instant::now);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (first_reads, watcher)
}

/// The third wave's servers (Kafka, NATS with JetStream, ElasticMQ for SQS) killed together
/// under ScaledObjects with and without fallback: the one with fallback falls back, neither is
/// scaled down while the servers are away, and once they are back (empty: the test makes its
/// topic, stream, consumer and queue again and refills them) every trigger reads again within
/// two polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_servers_killed_scale_nothing_down_and_recover_within_two_polls() {
    let _serial = crate::serial().await;
    let env = setup("faults-third-wave").await;
    let ebb = env.start_ebb();
    let c = env.cluster.clone();
    const INTERVAL: u64 = 2;
    let stream = unique_name("faults");
    let queue_name = unique_name("faults");
    let topic = unique_name("faults");
    let fill = || async {
        let (b, t) = (c.kafka_bootstrap.clone(), topic.clone());
        tokio::task::spawn_blocking(move || {
            integration_tests::kafka_topic(&b, &t, 2);
            integration_tests::kafka_produce(&b, &t, 10);
        })
        .await
        .expect("join");
        let (js, _) = integration_tests::nats_stream(&c.nats_url, &stream).await;
        integration_tests::nats_publish(&js, &stream, 10).await;
        let queue = integration_tests::sqs_queue(&c.sqs_endpoint, &queue_name).await;
        integration_tests::sqs_send(&c.sqs_endpoint, &queue, 10, 0).await;
        queue
    };
    let queue = fill().await;
    env.create::<k8s_openapi::api::core::v1::Secret>(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aws"},
        "stringData": {"id": "AKIDEBBTEST", "secret": "hunter2"}
    }))
    .await;
    env.create::<ebb_crds::TriggerAuthentication>(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": "aws"},
        "spec": {"secretTargetRef": [
            {"parameter": "awsAccessKeyID", "name": "aws", "key": "id"},
            {"parameter": "awsSecretAccessKey", "name": "aws", "key": "secret"}
        ]}
    }))
    .await;
    let triggers: [OutageTrigger; 3] = [
        (
            "kafka",
            json!({"type": "kafka", "metadata": {
                "bootstrapServers": c.kafka_bootstrap, "consumerGroup": "faults",
                "topic": topic, "offsetResetPolicy": "earliest", "lagThreshold": "5"
            }}),
            format!("s0-kafka-{topic}"),
        ),
        (
            "nats",
            json!({"type": "nats-jetstream", "metadata": {
                "natsServerMonitoringEndpoint": c.nats_monitoring_endpoint, "account": "$G",
                "stream": stream, "consumer": "workers", "lagThreshold": "5"
            }}),
            format!("s0-nats-jetstream-{stream}"),
        ),
        (
            "sqs",
            json!({"type": "aws-sqs-queue", "authenticationRef": {"name": "aws"}, "metadata": {
                "queueURL": queue, "awsRegion": c.sqs_region, "awsEndpoint": c.sqs_endpoint,
                "queueLength": "5"
            }}),
            format!("s0-aws-sqs-{queue_name}"),
        ),
    ];
    let names = active_pairs(&env, &triggers, INTERVAL).await;
    let replicas = ReplicaLog::start(&env);
    let fault = Instant::now();
    for service in ["kafka", "nats", "elasticmq"] {
        kill_service(service).await;
    }
    outage_reported(&env, &triggers).await;
    let watched = watched_metrics(&names, &triggers);
    let (first_reads, watcher) = first_reads_of(&env, &ebb, watched, 10.0);
    restart_services().await;
    // The servers are back, empty: until the test makes its topic, stream and queue again the
    // triggers fail. While it refills them, a trigger may read a true 0 (a topic or queue made
    // and not yet filled) and rightly let its target go: that is the test's doing, not the
    // outage's, so the outage is judged up to here.
    let refill = Instant::now();
    assert_eq!(
        fill().await,
        queue,
        "the queue's URL is the same on the new server"
    );
    let back = Instant::now();
    let read_again: BTreeMap<String, Duration> =
        eventually("every trigger reads again", DEADLINE, || {
            let seen = first_reads.lock().expect("lock").clone();
            let done = seen.len() == names.len();
            async move {
                ensure(done, || format!("{:?}", seen.keys().collect::<Vec<_>>()))?;
                Ok(seen
                    .into_iter()
                    .map(|(name, at)| (name, at.saturating_duration_since(back)))
                    .collect())
            }
        })
        .await;
    watcher.abort();
    println!(
        "Kafka, NATS and ElasticMQ back and refilled: each trigger read again after {read_again:?}"
    );
    for (name, took) in &read_again {
        assert!(
            *took <= Duration::from_secs(2 * INTERVAL + 1),
            "{name}: recovery took {took:?}, more than two polls of {INTERVAL}s"
        );
    }
    for name in &names {
        let counts = replicas.of(name, fault);
        assert!(
            counts
                .iter()
                .filter(|(at, _)| *at < refill)
                .all(|(_, n)| *n >= 3),
            "{name} was scaled down by the outage (the refill began at {refill:?}): {counts:?}"
        );
    }
    env.delete_scaled_objects().await;
}

/// Writes (anything but get, list and watch) ebb's client made.
fn writes(ebb: &integration_tests::EbbGuard) -> u64 {
    ebb.apiserver_requests()
        .into_iter()
        .filter(|((verb, _), _)| !matches!(verb.as_str(), "get" | "list" | "watch"))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_restart_forgets_nothing_and_writes_little() {
    let _serial = crate::serial().await;
    let env = setup("faults-apiserver").await;
    let ebb = env.start_ebb();
    let mut redis = env.redis(0).await;
    const OBJECTS: usize = 10;
    let mut names = BTreeMap::new();
    for i in 0..OBJECTS {
        let busy = i % 2 == 0;
        let name = format!("{}-{i}", if busy { "busy" } else { "idle" });
        let list = unique_name(&name);
        if busy {
            redis.push(&list, 5).await;
        }
        env.create_target(
            &name,
            i32::from(busy),
            // The default cooldown: an active object refreshes its lastActiveTime every 30 s,
            // so the objects can be at rest.
            json!({
                "pollingInterval": 1,
                "triggers": [{"type": "redis", "metadata": {
                    "address": env.redis_address(), "listName": list, "listLength": "5"
                }}]
            }),
        )
        .await;
        names.insert(name, (list, i32::from(busy)));
    }
    for name in names.keys() {
        eventually(&format!("{name}: Ready"), DEADLINE, || async {
            let (status, _, message) = env.condition(name, "Ready").await?;
            ensure(status == "True", || format!("Ready={status}: {message}"))
        })
        .await;
    }
    let replicas = ReplicaLog::start(&env);
    for round in 1..=chaos_rounds() {
        // Settled: no write for three seconds.
        eventually("ebb is at rest", DEADLINE, || async {
            let before = writes(&ebb);
            tokio::time::sleep(Duration::from_secs(3)).await;
            let after = writes(&ebb);
            ensure(after == before, || {
                format!("{} writes in 3s", after - before)
            })
        })
        .await;
        let fault = Instant::now();
        let writes_before = writes(&ebb);

        kill_service("kube-apiserver").await;
        // Down for several polls: every loop goes on reading Redis meanwhile.
        tokio::time::sleep(Duration::from_secs(5)).await;
        restart_services().await;
        let back = Instant::now();

        eventually(
            "every object is polled and Ready again",
            DEADLINE,
            || async {
                ensure(ebb.ctx.running_loops() == OBJECTS, || {
                    format!("{} loops", ebb.ctx.running_loops())
                })?;
                for name in names.keys() {
                    let (status, _, message) = env.condition(name, "Ready").await?;
                    ensure(status == "True", || {
                        format!("{name}: Ready={status}: {message}")
                    })?;
                }
                Ok(())
            },
        )
        .await;
        // Ten seconds after the return: the writes the outage cost, from the kill on (each
        // object may report the outage and its end: two status writes).
        tokio::time::sleep(Duration::from_secs(10).saturating_sub(back.elapsed())).await;
        let after = writes(&ebb) - writes_before;
        println!(
            "round {round}: apiserver killed and back, {after} writes by ebb for {OBJECTS} objects"
        );
        assert!(
            after <= 2 * OBJECTS as u64,
            "{after} writes for an apiserver restart with {OBJECTS} objects at rest"
        );
        for (name, (list, want)) in &names {
            assert_eq!(env.replicas(name).await, Ok(*want), "{name}");
            let counts = replicas.of(name, fault);
            assert!(
                counts.iter().all(|(_, n)| n == want),
                "{name} moved during the restart: {counts:?}"
            );
            let answer = ebb
                .ctx
                .store
                .get(&env.namespace, name, &format!("s0-redis-{list}"));
            assert!(
                matches!(answer, Some((Answer::Value(_), at)) if at.elapsed() < Duration::from_secs(3)),
                "{name} is still polled: {answer:?}"
            );
        }
    }
    env.delete_scaled_objects().await;
}

/// The real `ebb` binary, killed with SIGKILL on drop.
struct EbbProcess(std::process::Child);

impl EbbProcess {
    fn start(env: &TestEnv) -> Self {
        let (mut cmd, _admin) = integration_tests::ebb_run_command(env);
        let child = cmd
            .env("RUST_LOG", "warn")
            // The same identity across restarts, as a restarted container in its pod has: the
            // new process takes its own Lease back at once instead of waiting for it to expire.
            .args(["--identity", "ebb-0"])
            .args(["--metrics-api-addr", "off"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start ebb");
        Self(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for EbbProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebb_killed_mid_cooldown_keeps_the_cooldown_and_never_flaps() {
    let _serial = crate::serial().await;
    let env = setup("faults-ebb-sigkill").await;
    let mut redis = env.redis(0).await;
    const COOLDOWN: u64 = 20;
    let cooling = unique_name("cooling");
    let busy = unique_name("busy");
    redis.push(&cooling, 5).await;
    redis.push(&busy, 5).await;
    for (name, list) in [("cooling", &cooling), ("busy", &busy)] {
        env.create_target(
            name,
            0,
            json!({
                "pollingInterval": 1,
                "cooldownPeriod": COOLDOWN,
                "triggers": [{"type": "redis", "metadata": {
                    "address": env.redis_address(), "listName": list, "listLength": "5"
                }}]
            }),
        )
        .await;
    }
    let mut ebb = EbbProcess::start(&env);
    for name in ["cooling", "busy"] {
        env.await_replicas(name, "activated", DEADLINE, |n| n == 1)
            .await;
    }
    let replicas = ReplicaLog::start(&env);
    let started = Instant::now();
    for round in 1..=chaos_rounds() {
        if round > 1 {
            redis.push(&cooling, 5).await;
            env.await_replicas("cooling", "activated again", DEADLINE, |n| n == 1)
                .await;
            eventually("cooling: Active=True", DEADLINE, || async {
                let (status, _, message) = env.condition("cooling", "Active").await?;
                ensure(status == "True", || format!("Active={status}: {message}"))
            })
            .await;
        }
        // The work of one is done: its cooldown starts at its last active poll.
        redis.del(&[&cooling]).await;
        let drained = Instant::now();
        eventually("cooling: Active=False", DEADLINE, || async {
            let (status, _, message) = env.condition("cooling", "Active").await?;
            ensure(status == "False", || format!("Active={status}: {message}"))
        })
        .await;
        // Halfway through the cooldown, ebb dies without a word and a new one starts.
        tokio::time::sleep(Duration::from_secs(COOLDOWN / 2).saturating_sub(drained.elapsed()))
            .await;
        ebb.kill();
        let killed = Instant::now();
        ebb = EbbProcess::start(&env);

        env.await_replicas(
            "cooling",
            "scaled to zero after its cooldown",
            DEADLINE,
            |n| n == 0,
        )
        .await;
        let to_zero = replicas
            .of("cooling", drained)
            .into_iter()
            .find(|(_, n)| *n == 0)
            .map(|(at, _)| at.duration_since(drained))
            .expect("the watch saw the scale to zero");
        println!(
            "round {round}: ebb killed {:.1}s into a {COOLDOWN}s cooldown; zero came {:.1}s after the last active poll",
            killed.duration_since(drained).as_secs_f64(),
            to_zero.as_secs_f64()
        );
        // `lastActiveTime` is stored at most a tenth of the cooldown stale: the restarted ebb may
        // end the cooldown that much early, never at its own start.
        let earliest = Duration::from_secs(COOLDOWN - COOLDOWN / 10 - 1);
        assert!(
            to_zero >= earliest,
            "zero {to_zero:?} after the last active poll: the cooldown was lost in the restart"
        );
        assert!(
            to_zero <= Duration::from_secs(COOLDOWN + 5),
            "zero only {to_zero:?} after the last active poll"
        );
    }
    // The busy one was never taken down.
    let counts = replicas.of("busy", started);
    assert!(
        counts.iter().all(|(_, n)| *n >= 1),
        "busy flapped across the restart: {counts:?}"
    );
    assert_eq!(env.replicas("busy").await, Ok(1));
    env.delete_scaled_objects().await;
}

/// An HTTP server that reads a request and answers only after `delay`.
async fn slow_server(delay: Duration) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let body = "{\"value\": 1}";
                let _ = socket
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (port, task)
}

/// Counts of ebb's poll lag histogram: (observations at or under 250 ms, all observations).
fn lag_counts(ebb: &integration_tests::EbbGuard) -> (u64, u64) {
    let text = ebb.ctx.metrics.render();
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        value("ebb_poll_lag_seconds_bucket{le=\"0.25\"} "),
        value("ebb_poll_lag_seconds_count "),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_source_errors_on_time_and_delays_no_other_poll() {
    let _serial = crate::serial().await;
    let env = setup("faults-slow-source").await;
    let ebb = env.start_ebb();
    let (port, _server) = slow_server(Duration::from_secs(30)).await;
    const OTHERS: usize = 20;
    for i in 0..OTHERS {
        env.create_target(&format!("quick-{i}"),
            0,
            json!({
                "pollingInterval": 1,
                "triggers": [{"type": "redis", "metadata": {
                    "address": env.redis_address(), "listName": unique_name("quick"), "listLength": "5"
                }}]
            }),
        )
        .await;
    }
    for i in 0..OTHERS {
        let name = format!("quick-{i}");
        eventually(&format!("{name}: Ready"), DEADLINE, || async {
            let (status, _, message) = env.condition(&name, "Ready").await?;
            ensure(status == "True", || format!("Ready={status}: {message}"))
        })
        .await;
    }
    let (quick_before, all_before) = lag_counts(&ebb);

    env.create_target(
        "slow",
        1,
        json!({
            "pollingInterval": 5,
            "triggers": [{"type": "metrics-api", "metadata": {
                "url": format!("http://127.0.0.1:{port}/metrics"),
                "valueLocation": "value",
                "targetValue": "1",
                "timeout": "1000"
            }}]
        }),
    )
    .await;
    let created = Instant::now();
    eventually("slow: Ready=False for its timeout", DEADLINE, || async {
        let (status, reason, message) = env.condition("slow", "Ready").await?;
        ensure(status == "False", || {
            format!("Ready={status} {reason}: {message}")
        })
    })
    .await;
    let reported = created.elapsed();
    let (_, _, message) = env.condition("slow", "Ready").await.expect("Ready");
    println!(
        "slow source reported after {:.1}s: {message}",
        reported.as_secs_f64()
    );
    // Its first poll comes within one interval; it fails after the 1 s timeout.
    assert!(
        reported <= Duration::from_secs(5 + 1 + 3),
        "the slow source was reported only after {reported:?}"
    );
    // Several of its polls time out while the others go on.
    let window = 12 * u64::from(chaos_rounds());
    tokio::time::sleep(Duration::from_secs(window)).await;
    let (quick_after, all_after) = lag_counts(&ebb);
    let (on_time, polls) = (quick_after - quick_before, all_after - all_before);
    println!(
        "{on_time} of {polls} polls within 250 ms of their tick while the slow source timed out"
    );
    assert!(
        polls >= OTHERS as u64 * (window - 1),
        "only {polls} polls in {window} s"
    );
    assert!(
        on_time * 100 >= polls * 98,
        "{} of {polls} polls were more than 250 ms late",
        polls - on_time
    );
    assert_eq!(
        env.replicas("slow").await,
        Ok(1),
        "an erroring source scaled nothing"
    );
    env.delete_scaled_objects().await;
}
