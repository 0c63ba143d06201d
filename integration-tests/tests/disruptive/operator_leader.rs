//! Two ebb replicas against one cluster: exactly one holds the Lease and runs scale loops; when
//! it dies without a word, the other takes over within the lease duration and scaling goes on.
//! Each replica generates its own serving certificate; the APIService's caBundle always trusts
//! the leader's, whichever started last. A target that stays busy across the hand-over is never
//! taken down.

use std::time::Duration;

use ebb_crds::ScaledObject;
use integration_tests::{
    ElectedEbb, ReplicaLog, TestEnv, UnregisterMetricsApi, deployment, ensure, eventually,
    free_port, setup, unique_name,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

async fn holder(env: &TestEnv, lease: &str) -> Result<String, String> {
    let lease = env
        .api::<Lease>()
        .get(lease)
        .await
        .map_err(|e| e.to_string())?;
    lease
        .spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "no holder".to_string())
}

/// Three items in a fresh list in Redis database 9, a Deployment `worker` at zero and a
/// ScaledObject on that list; waits until whichever replica leads has scaled it up. Returns the
/// connection and the list's name.
async fn busy_worker(env: &TestEnv) -> (integration_tests::Redis, String) {
    let mut redis = env.redis(9).await;
    let list = unique_name("jobs");
    redis.rpush(&list, &["1", "2", "3"]).await;
    env.create::<Deployment>(serde_json::to_value(deployment("worker", 0, &[])).expect("json"))
        .await;
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1,
            "cooldownPeriod": 1,
            "triggers": [{"type": "redis", "metadata": {
                "address": env.redis_address(),
                "listName": list,
                "databaseIndex": "9"
            }}]
        }
    }))
    .await;
    env.await_replicas("worker", "scaled up from zero", DEADLINE, |n| n >= 1)
        .await;
    (redis, list)
}

#[tokio::test]
async fn exactly_one_replica_writes_and_a_standby_takes_over() {
    let _serial = crate::serial().await;
    let env = setup("operator-leader").await;
    let lease = unique_name("ebb-lease");
    let mut replicas_by_name = vec![
        ("ebb-a", env.start_elected_ebb(&lease, "ebb-a")),
        ("ebb-b", env.start_elected_ebb(&lease, "ebb-b")),
    ];

    let (mut redis, list) = busy_worker(&env).await;
    let leader = holder(&env, &lease).await.expect("a holder");
    // Exactly one replica runs the scale loop: the holder.
    for (name, ebb) in &replicas_by_name {
        let loops = ebb.ctx.running_loops();
        let want = usize::from(*name == leader);
        assert_eq!(
            loops, want,
            "{name} runs {loops} loops; the leader is {leader}"
        );
    }

    // The leader dies without releasing the lease.
    let position = replicas_by_name
        .iter()
        .position(|(name, _)| *name == leader)
        .expect("the leader is one of ours");
    let (_, dead): (&str, ElectedEbb) = replicas_by_name.remove(position);
    let dead_ctx = dead.ctx.clone();
    dead.kill();
    eventually("the dead replica's loops stopped", DEADLINE, || async {
        let loops = dead_ctx.running_loops();
        ensure(loops == 0, || format!("{loops} loops"))
    })
    .await;
    let (standby_name, standby) = &replicas_by_name[0];
    eventually(
        "the standby holds the lease and runs the loop",
        DEADLINE,
        || async {
            let now = holder(&env, &lease).await?;
            let loops = standby.ctx.running_loops();
            ensure(now == *standby_name && loops == 1, || {
                format!("holder {now}, standby loops {loops}")
            })
        },
    )
    .await;

    // Scaling goes on under the new leader: empty list, back to zero.
    redis.del(&[&list]).await;
    env.await_replicas(
        "worker",
        "scaled back to zero by the new leader",
        DEADLINE,
        |n| n == 0,
    )
    .await;
    env.delete_scaled_objects().await;
}

/// The `ebb.sh/leader` label of a pod.
async fn leader_label(env: &TestEnv, pod: &str) -> Result<String, String> {
    let pod = env.api::<Pod>().get(pod).await.map_err(|e| e.to_string())?;
    Ok(pod
        .metadata
        .labels
        .and_then(|l| l.get("ebb.sh/leader").cloned())
        .unwrap_or_default())
}

/// One `ebb run` process of the real binary, killed (SIGKILL) on drop.
struct EbbProcess {
    child: std::process::Child,
    admin: String,
    /// Where it serves the metrics API.
    metrics_api: u16,
}

impl EbbProcess {
    fn start(env: &TestEnv, lease: &str, identity: &str) -> Self {
        let port = free_port();
        let metrics_api = free_port();
        let child = std::process::Command::new(integration_tests::ebb_binary())
            .env("KUBECONFIG", &env.cluster.kubeconfig)
            .env("POD_NAME", identity)
            .env("RUST_LOG", "warn")
            .args(["run", "--namespace", &env.namespace])
            .args(["--watch-namespace", &env.namespace])
            .args(["--lease-name", lease, "--identity", identity])
            .args(["--admin-addr", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "json"])
            // Each process serves the metrics API too, on a port of its own, with a certificate
            // of its own whose CA the leader writes into the APIService.
            .args(["--metrics-api-addr", &format!("127.0.0.1:{metrics_api}")])
            .args(["--apiservice", integration_tests::APISERVICE])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start ebb");
        Self {
            child,
            admin: format!("http://127.0.0.1:{port}"),
            metrics_api,
        }
    }

    /// Whether a TLS client trusting only the APIService's caBundle accepts this process's
    /// metrics API certificate, as the aggregator must.
    async fn trusted_by_apiservice(&self, env: &TestEnv) -> Result<bool, String> {
        let out = env.kubectl(&[
            "get",
            "apiservice",
            integration_tests::APISERVICE,
            "-o",
            "jsonpath={.spec.caBundle}",
        ]);
        let bundle = String::from_utf8_lossy(&out.stdout).trim().to_string();
        ensure(!bundle.is_empty(), || {
            "the APIService has no caBundle".into()
        })?;
        // A ByteString deserialises from base64, as the API carries it.
        let pem: k8s_openapi::ByteString =
            serde_json::from_value(serde_json::Value::String(bundle)).map_err(|e| e.to_string())?;
        let pem = String::from_utf8_lossy(&pem.0).to_string();
        let mut roots = rustls::RootCertStore::empty();
        for cert in ebb_operator::metrics_api::tls::pem_certificates(&pem, "caBundle")
            .map_err(|e| e.to_string())?
        {
            roots.add(cert).map_err(|e| e.to_string())?;
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_api))
            .await
            .map_err(|e| format!("connecting to the metrics API: {e}"))?;
        let name =
            rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        Ok(
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, tcp)
                .await
                .is_ok(),
        )
    }

    async fn get(&self, path: &str) -> Result<(u16, String), String> {
        let response = reqwest::get(format!("{}{path}", self.admin))
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.map_err(|e| e.to_string())?))
    }

    /// Writes to `/scale` this process made, from its `/metrics`.
    async fn scale_writes(&self) -> Result<u64, String> {
        let (_, text) = self.get("/metrics").await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("ebb_scale_writes_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0))
    }
}

impl Drop for EbbProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn two_ebb_processes_one_writes_and_killing_it_hands_over() {
    let _serial = crate::serial().await;
    let env = setup("operator-leader-processes").await;
    let lease = unique_name("ebb-lease");
    // The cluster's metrics APIService (pointing nowhere that answers: only its caBundle is
    // looked at), removed again at the end: an APIService without a server stalls namespace
    // deletion. Registered in this process's turn, held until it is unregistered.
    let _turn = integration_tests::metrics_api_turn().await;
    xtask::cluster::metrics_api::register(
        &env.cluster.kubectl,
        &env.cluster.kubeconfig,
        integration_tests::METRICS_API_PORT,
    )
    .expect("register the APIService");
    let _unregister = UnregisterMetricsApi(&env);
    // Each process is "in" a pod of its name (POD_NAME), which only the leader labels as such.
    for name in ["ebb-a", "ebb-b"] {
        env.create::<Pod>(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "ebb"}},
            "spec": {"containers": [{"name": "ebb", "image": "example.invalid/ebb:1"}]}
        }))
        .await;
    }
    let mut processes = vec![
        ("ebb-a", EbbProcess::start(&env, &lease, "ebb-a")),
        ("ebb-b", EbbProcess::start(&env, &lease, "ebb-b")),
    ];
    // Both ready: the standby once it reaches the apiserver, the leader once its watches synced.
    for (name, process) in &processes {
        eventually(&format!("{name} ready"), DEADLINE, || async {
            let (status, body) = process.get("/readyz").await?;
            ensure(status == 200, || format!("{status} {body}"))
        })
        .await;
    }

    let (mut redis, list) = busy_worker(&env).await;

    // Exactly one process wrote: the holder. Only its pod is labelled the leader.
    let leader = holder(&env, &lease).await.expect("a holder");
    let standby_name = if leader == "ebb-a" { "ebb-b" } else { "ebb-a" };
    eventually("only the leader's pod is labelled", DEADLINE, || async {
        let (l, s) = (
            leader_label(&env, &leader).await?,
            leader_label(&env, standby_name).await?,
        );
        ensure(l == "true" && s == "false", || {
            format!("leader {l}, standby {s}")
        })
    })
    .await;
    // The caBundle is the leader's CA, though both generated one and either started last.
    for (name, process) in &processes {
        let expected = *name == leader;
        eventually(
            &format!("the caBundle trusts {name} exactly if it leads"),
            DEADLINE,
            || async {
                let trusted = process.trusted_by_apiservice(&env).await?;
                ensure(trusted == expected, || format!("trusted: {trusted}"))
            },
        )
        .await;
    }
    for (name, process) in &processes {
        let writes = process.scale_writes().await.expect("metrics");
        if *name == leader {
            assert!(writes >= 1, "the leader {name} made no /scale write");
        } else {
            assert_eq!(writes, 0, "the standby {name} wrote /scale");
        }
    }

    // A second target, busy throughout.
    let steady_list = unique_name("steady");
    redis.rpush(&steady_list, &["1", "2", "3"]).await;
    env.create::<Deployment>(serde_json::to_value(deployment("steady", 0, &[])).expect("json"))
        .await;
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "steady"},
        "spec": {
            "scaleTargetRef": {"name": "steady"},
            "pollingInterval": 1,
            "cooldownPeriod": 1,
            "triggers": [{"type": "redis", "metadata": {
                "address": env.redis_address(),
                "listName": steady_list,
                "databaseIndex": "9"
            }}]
        }
    }))
    .await;
    env.await_replicas("steady", "scaled up from zero", DEADLINE, |n| n >= 1)
        .await;
    let replicas = ReplicaLog::start(&env);
    let killed = tokio::time::Instant::now();

    // SIGKILL the leader: no release. The standby takes the lease when it expires (15 s) and
    // scales the drained list back to zero.
    let position = processes
        .iter()
        .position(|(name, _)| *name == leader)
        .expect("the leader is one of ours");
    drop(processes.remove(position));
    let (standby_name, standby) = &processes[0];
    redis.del(&[&list]).await;
    eventually(
        "the standby holds the lease and scales to zero",
        DEADLINE,
        || async {
            let now = holder(&env, &lease).await?;
            let n = env.replicas("worker").await?;
            let writes = standby.scale_writes().await?;
            let label = leader_label(&env, standby_name).await?;
            ensure(
                now == *standby_name && n == 0 && writes >= 1 && label == "true",
                || format!("holder {now}, replicas {n}, standby writes {writes}, its pod's label {label}"),
            )
        },
    )
    .await;
    eventually("the caBundle trusts the new leader", DEADLINE, || async {
        let trusted = standby.trusted_by_apiservice(&env).await?;
        ensure(trusted, || "not trusted".into())
    })
    .await;
    let counts = replicas.of("steady", killed);
    assert!(
        counts.iter().all(|(_, n)| *n >= 1),
        "the busy target was taken down in the hand-over: {counts:?}"
    );
    assert_eq!(env.replicas("steady").await, Ok(1));
    env.delete_scaled_objects().await;
}
