//! A Redis outage while targets run three replicas, with ebb in process against the real
//! apiserver and a real redis-server this test starts, stops and restarts on its own port:
//! without fallback nothing is scaled down and Ready turns False naming the server; with
//! fallback the Fallback condition turns True after failureThreshold failures and the metric
//! answers the fallback value (without, an error, never 0); when Redis is back, both read it
//! again within two polls, over as many connections as before the outage (none leaked). The
//! outage comes once in the suite and `--rounds` times under `cargo xtask chaos`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ebb_crds::ScaledObject;
use ebb_operator::scale::evaluate::Answer;
use integration_tests::{
    chaos_rounds, deployment, ensure, eventually, free_port, setup, unique_name,
};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

/// A redis-server of this test's own, killed on drop.
struct OwnRedis {
    port: u16,
    child: Child,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("/usr/bin/redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        Self { port, child }
    }

    async fn connect(&self) -> redis::aio::MultiplexedConnection {
        let url = format!("redis://127.0.0.1:{}/0", self.port);
        eventually("the test's redis-server answers", DEADLINE, || async {
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn named_test(redis: &OwnRedis) -> redis::aio::MultiplexedConnection {
    let mut conn = redis.connect().await;
    integration_tests::name_as_test(&mut conn).await;
    conn
}

#[tokio::test]
async fn an_outage_never_scales_down_and_fallback_takes_over() {
    let _serial = crate::serial().await;
    let env = setup("operator-outage").await;
    let ebb = env.start_ebb();
    let port = free_port();
    let mut redis = OwnRedis::start(port);
    let mut conn = named_test(&redis).await;
    let list = unique_name("jobs");
    let _: () = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"])
        .query_async(&mut conn)
        .await
        .expect("RPUSH");

    for (name, fallback) in [
        ("plain", None),
        (
            "with-fallback",
            Some(json!({"failureThreshold": 2, "replicas": 4})),
        ),
    ] {
        env.create::<Deployment>(serde_json::to_value(deployment(name, 3, &[])).expect("json"))
            .await;
        let mut spec = json!({
            "scaleTargetRef": {"name": name},
            "pollingInterval": 1,
            "cooldownPeriod": 1,
            "triggers": [{"type": "redis", "metadata": {
                "address": format!("127.0.0.1:{port}"),
                "listName": list,
                "activationListLength": "2"
            }}]
        });
        if let (Some(spec), Some(fallback)) = (spec.as_object_mut(), fallback) {
            spec.insert("fallback".into(), fallback);
        }
        env.create::<ScaledObject>(json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": name},
            "spec": spec
        }))
        .await;
    }
    for name in ["plain", "with-fallback"] {
        eventually(&format!("{name}: Active=True"), DEADLINE, || async {
            let (status, _, message) = env.condition(name, "Active").await?;
            ensure(status == "True", || format!("Active={status}: {message}"))
        })
        .await;
    }

    // Both objects share one server: one connection, whatever the number of triggers.
    let before = eventually("ebb is connected", DEADLINE, || async {
        let n = integration_tests::redis_clients_but_tests(&mut conn.clone()).await;
        ensure(n >= 1, || format!("{n} connections")).map(|()| n)
    })
    .await;

    for round in 1..=chaos_rounds() {
        // Redis goes away (SIGKILL).
        redis.stop();
        eventually("plain: Ready=False naming the server", DEADLINE, || async {
            let (status, _, message) = env.condition("plain", "Ready").await?;
            ensure(
                status == "False" && message.contains(&format!("redis 127.0.0.1:{port}")),
                || format!("Ready={status}: {message}"),
            )
        })
        .await;
        eventually("with-fallback: Fallback=True", DEADLINE, || async {
            let (status, _, message) = env.condition("with-fallback", "Fallback").await?;
            ensure(status == "True", || format!("Fallback={status}: {message}"))
        })
        .await;
        // What the HPA will be answered: an error without fallback, never 0; with fallback, the
        // value that holds fallback.replicas (listLength 5 x 4 replicas).
        let metric = format!("s0-redis-{list}");
        eventually(
            "the metric answers the fallback value",
            DEADLINE,
            || async {
                let plain = ebb.ctx.store.get(&env.namespace, "plain", &metric);
                let with_fallback = ebb.ctx.store.get(&env.namespace, "with-fallback", &metric);
                match (&plain, &with_fallback) {
                    (Some((Answer::Error(e), _)), Some((Answer::Value(v), _)))
                        if e.contains(&format!("redis 127.0.0.1:{port}")) && *v == 20.0 =>
                    {
                        Ok(())
                    }
                    _ => Err(format!("plain {plain:?}, with-fallback {with_fallback:?}")),
                }
            },
        )
        .await;

        // Well past the cooldown: nothing was scaled down by the outage.
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < end {
            for name in ["plain", "with-fallback"] {
                assert_eq!(env.replicas(name).await, Ok(3), "{name} during the outage");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let so = env
            .api::<ScaledObject>()
            .get("with-fallback")
            .await
            .expect("get");
        let health = so.status.and_then(|s| s.health).unwrap_or_default();
        let failing = health
            .get(&format!("s0-redis-{list}"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(failing.status.as_deref(), Some("Failing"), "{health:?}");
        assert!(failing.number_of_failures.unwrap_or(0) > 2, "{health:?}");

        // Redis is back (empty: it keeps nothing), with work in the list again.
        redis = OwnRedis::start(port);
        conn = named_test(&redis).await;
        let _: () = redis::cmd("RPUSH")
            .arg(&list)
            .arg(&["1", "2", "3"])
            .query_async(&mut conn)
            .await
            .expect("RPUSH");
        let back = tokio::time::Instant::now();
        eventually("both read Redis again", DEADLINE, || async {
            let answers: Vec<_> = ["plain", "with-fallback"]
                .iter()
                .map(|name| ebb.ctx.store.get(&env.namespace, name, &metric))
                .collect();
            ensure(
                answers
                    .iter()
                    .all(|a| matches!(a, Some((Answer::Value(v), _)) if *v == 3.0)),
                || format!("{answers:?}"),
            )
        })
        .await;
        let recovered = back.elapsed();
        println!(
            "round {round}: Redis back, both objects read it {:.1}s later",
            recovered.as_secs_f64()
        );
        // Two polls of 1 s, a second for the reconnection itself, and the check's own pace.
        assert!(
            recovered <= Duration::from_secs(4),
            "recovery took {recovered:?}, more than two polls"
        );
        for name in ["plain", "with-fallback"] {
            eventually(&format!("{name}: recovered"), DEADLINE, || async {
                let (ready, _, message) = env.condition(name, "Ready").await?;
                let (fallback, _, _) = env.condition(name, "Fallback").await?;
                ensure(ready == "True" && fallback == "False", || {
                    format!("Ready={ready} ({message}) Fallback={fallback}")
                })
            })
            .await;
            eventually(
                &format!("{name}: answers the list length again"),
                DEADLINE,
                || async {
                    let answer = ebb.ctx.store.get(&env.namespace, name, &metric);
                    ensure(
                        matches!(answer, Some((Answer::Value(v), _)) if v == 3.0),
                        || format!("{answer:?}"),
                    )
                },
            )
            .await;
        }
        eventually(
            "as many connections as before the outage",
            DEADLINE,
            || async {
                let n = integration_tests::redis_clients_but_tests(&mut conn.clone()).await;
                ensure(n == before, || format!("{n} connections, {before} before"))
            },
        )
        .await;
    }
    env.delete_scaled_objects().await;
}
