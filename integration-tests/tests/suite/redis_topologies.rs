//! `redis-cluster`, `redis-sentinel` and their streams variants against the dev cluster's real
//! 3-master Redis Cluster and Sentinel set: values and activity, keys owned by different masters, and
//! errors (never zeros) when nothing answers.

use std::collections::BTreeMap;
use std::time::Duration;

use ebb_scalers::{MetricSpec, MetricTargetType, Registry, Scaler, Trigger};
use integration_tests::{setup, unique_name};
use redis::AsyncCommands;
use redis::cluster_async::ClusterConnection;

fn trigger(trigger_type: &str, meta: &[(&str, &str)]) -> Trigger {
    Trigger {
        index: 1,
        trigger_type: trigger_type.into(),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

async fn read(scaler: &dyn Scaler) -> (f64, bool) {
    let name = scaler.metric_specs()[0]
        .external_name()
        .expect("external")
        .to_string();
    let got = scaler.metrics_and_activity(&name).await.expect("reads");
    (got.values[0].value, got.active)
}

async fn cluster_conn(addresses: &[String]) -> ClusterConnection {
    let nodes: Vec<String> = addresses.iter().map(|a| format!("redis://{a}")).collect();
    redis::cluster::ClusterClient::new(nodes)
        .expect("client")
        .get_async_connection()
        .await
        .expect("cluster connect")
}

/// The master port owning each slot range, from CLUSTER SLOTS.
async fn slot_owners(c: &mut ClusterConnection) -> Vec<(i64, i64, i64)> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(c)
        .await
        .expect("CLUSTER SLOTS");
    slots
        .into_iter()
        .filter_map(|range| {
            let redis::Value::Array(items) = range else {
                return None;
            };
            let (redis::Value::Int(from), redis::Value::Int(to), redis::Value::Array(master)) =
                (&items[0], &items[1], &items[2])
            else {
                return None;
            };
            let redis::Value::Int(port) = master[1] else {
                return None;
            };
            Some((*from, *to, port))
        })
        .collect()
}

#[tokio::test]
async fn cluster_lists_with_keys_on_every_master() {
    let env = setup("redis-cluster-lists").await;
    let addresses = env.cluster.redis_cluster_addresses.join(",");
    let mut c = cluster_conn(&env.cluster.redis_cluster_addresses).await;
    let owners = slot_owners(&mut c).await;

    // One key per master: keys on different slots, owned by different nodes.
    let mut keys: BTreeMap<i64, String> = BTreeMap::new();
    for i in 0..200 {
        let key = format!("{}-{i}", unique_name("cl"));
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query_async(&mut c)
            .await
            .expect("KEYSLOT");
        let port = owners
            .iter()
            .find(|(from, to, _)| (*from..=*to).contains(&slot))
            .map(|o| o.2)
            .expect("slot owned");
        keys.entry(port).or_insert(key);
        if keys.len() == 3 {
            break;
        }
    }
    assert_eq!(keys.len(), 3, "a key on each master: {keys:?}");

    let registry = Registry::with_builtins();
    let scalers: Vec<(String, Box<dyn Scaler>)> = keys
        .values()
        .map(|key| {
            let t = trigger(
                "redis-cluster",
                &[
                    ("addresses", &addresses),
                    ("listName", key),
                    ("listLength", "5"),
                    ("activationListLength", "2"),
                ],
            );
            (key.clone(), registry.build(&t).expect("builds"))
        })
        .collect();
    for (key, scaler) in &scalers {
        assert_eq!(
            scaler.metric_specs(),
            vec![MetricSpec::External {
                name: format!("s1-redis-{key}"),
                target: 5.0,
                target_type: MetricTargetType::AverageValue,
            }]
        );
        assert_eq!(read(&**scaler).await, (0.0, false), "{key} missing");
    }
    for (n, (key, scaler)) in scalers.iter().enumerate() {
        // 2 (at the threshold), then 3 and 4 on the others: past it.
        let push: Vec<String> = (0..n + 2).map(|i| format!("job-{i}")).collect();
        let _: i64 = c.rpush(key, &push).await.expect("RPUSH");
        assert_eq!(read(&**scaler).await, ((n + 2) as f64, n > 0), "{key}");
    }
    // A set counts its members too, on whichever node holds it.
    let set = unique_name("clset");
    let _: i64 = c.sadd(&set, &["a", "b", "c"]).await.expect("SADD");
    let s = registry
        .build(&trigger(
            "redis-cluster",
            &[("addresses", &addresses), ("listName", &set)],
        ))
        .expect("builds");
    assert_eq!(read(&*s).await, (3.0, true));
}

#[tokio::test]
async fn cluster_streams_length_and_lag() {
    let env = setup("redis-cluster-streams").await;
    let addresses = env.cluster.redis_cluster_addresses.join(",");
    let mut c = cluster_conn(&env.cluster.redis_cluster_addresses).await;
    let stream = unique_name("clstream");
    let registry = Registry::with_builtins();
    let length = registry
        .build(&trigger(
            "redis-cluster-streams",
            &[
                ("hosts", "127.0.0.1,127.0.0.1"),
                ("ports", &format!("{},{}", 32640, 32641)),
                ("stream", &stream),
                ("streamLength", "4"),
                ("activationLagCount", "1"),
            ],
        ))
        .expect("builds");
    let lag = registry
        .build(&trigger(
            "redis-cluster-streams",
            &[
                ("addresses", &addresses),
                ("stream", &stream),
                ("consumerGroup", "g"),
                ("lagCount", "2"),
            ],
        ))
        .expect("builds");
    assert_eq!(
        length.metric_specs()[0].external_name(),
        Some(format!("s1-redis-streams-{stream}").as_str())
    );
    assert_eq!(read(&*length).await, (0.0, false));
    assert_eq!(read(&*lag).await, (0.0, false));
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut c)
        .await
        .expect("XGROUP");
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("a")
        .arg(1)
        .query_async(&mut c)
        .await
        .expect("XADD");
    assert_eq!(read(&*length).await, (1.0, false));
    assert_eq!(read(&*lag).await, (1.0, true));
    for _ in 0..4 {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("a")
            .arg(1)
            .query_async(&mut c)
            .await
            .expect("XADD");
    }
    assert_eq!(read(&*length).await, (5.0, true));
    assert_eq!(read(&*lag).await, (5.0, true));
}

/// A plain connection to the master the sentinels currently name.
async fn sentinel_master(
    env_sentinels: &[String],
    master: &str,
) -> redis::aio::MultiplexedConnection {
    let mut s = redis::Client::open(format!("redis://{}", env_sentinels[0]))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("sentinel");
    let (host, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut s)
        .await
        .expect("master address");
    redis::Client::open(format!("redis://{host}:{port}/3"))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("master")
}

#[tokio::test]
async fn sentinel_lists_and_streams_read_the_master() {
    let env = setup("redis-sentinel").await;
    let sentinels = env.cluster.redis_sentinel_addresses.join(",");
    let master = env.cluster.redis_sentinel_master.clone();
    let mut c = sentinel_master(&env.cluster.redis_sentinel_addresses, &master).await;
    let list = unique_name("sl");
    let stream = unique_name("ss");
    let registry = Registry::with_builtins();
    let lists = registry
        .build(&trigger(
            "redis-sentinel",
            &[
                ("addresses", &sentinels),
                ("sentinelMaster", &master),
                ("databaseIndex", "3"),
                ("listName", &list),
                ("listLength", "5"),
                ("activationListLength", "2"),
            ],
        ))
        .expect("builds");
    let pending = registry
        .build(&trigger(
            "redis-sentinel-streams",
            &[
                ("addresses", &sentinels),
                ("sentinelMaster", &master),
                ("databaseIndex", "3"),
                ("stream", &stream),
                ("consumerGroup", "g"),
                ("pendingEntriesCount", "2"),
            ],
        ))
        .expect("builds");
    assert_eq!(
        lists.metric_specs(),
        vec![MetricSpec::External {
            name: format!("s1-redis-{list}"),
            target: 5.0,
            target_type: MetricTargetType::AverageValue,
        }]
    );
    assert_eq!(read(&*lists).await, (0.0, false));
    let _: i64 = c.rpush(&list, &["a", "b"]).await.expect("RPUSH");
    assert_eq!(read(&*lists).await, (2.0, false));
    let _: i64 = c.rpush(&list, &["c"]).await.expect("RPUSH");
    assert_eq!(read(&*lists).await, (3.0, true));

    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut c)
        .await
        .expect("XGROUP");
    assert_eq!(read(&*pending).await, (0.0, false));
    for _ in 0..3 {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("a")
            .arg(1)
            .query_async(&mut c)
            .await
            .expect("XADD");
    }
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("w")
        .arg("COUNT")
        .arg(3)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut c)
        .await
        .expect("XREADGROUP");
    assert_eq!(read(&*pending).await, (3.0, true));

    // A master name the sentinels do not know: an error naming it.
    let unknown = registry
        .build(&trigger(
            "redis-sentinel",
            &[
                ("addresses", &sentinels),
                ("sentinelMaster", "nosuchmaster"),
                ("listName", "l"),
            ],
        ))
        .expect("builds");
    let err = unknown
        .metrics_and_activity("s1-redis-l")
        .await
        .expect_err("unknown master");
    assert!(err.to_string().contains("does not know master"), "{err}");

    // `sentinelPassword` in plain metadata is used, as KEDA reads it there: these sentinels
    // have no password, so sending one is refused, where ignoring it would read the list.
    let with_password = registry
        .build(&trigger(
            "redis-sentinel",
            &[
                ("addresses", &sentinels),
                ("sentinelMaster", &master),
                ("sentinelPassword", "not-set-on-these-sentinels"),
                ("listName", "l"),
            ],
        ))
        .expect("builds");
    let err = with_password
        .metrics_and_activity("s1-redis-l")
        .await
        .expect_err("a password the sentinels do not have");
    let text = err.to_string();
    assert!(text.contains("Password authentication failed"), "{text}");
    assert!(!text.contains("not-set-on-these-sentinels"), "{text}");
}

#[tokio::test]
async fn unreachable_clusters_and_sentinels_are_errors_within_the_timeout() {
    let _env = setup("redis-topologies-down").await;
    let registry = Registry::with_builtins();
    for (ty, meta, expected) in [
        (
            "redis-cluster",
            vec![("addresses", "127.0.0.1:1,127.0.0.1:2"), ("listName", "l")],
            "redis-cluster 127.0.0.1:1,127.0.0.1:2",
        ),
        (
            "redis-sentinel",
            vec![
                ("addresses", "127.0.0.1:1,127.0.0.1:2"),
                ("sentinelMaster", "mymaster"),
                ("listName", "l"),
            ],
            "no sentinel named the master",
        ),
    ] {
        let scaler = registry.build(&trigger(ty, &meta)).expect("builds");
        let outcome = tokio::time::timeout(
            Duration::from_secs(15),
            scaler.metrics_and_activity("s1-redis-l"),
        )
        .await;
        let err = outcome.expect("answers").expect_err("an error");
        assert!(err.to_string().contains(expected), "{ty}: {err}");
    }
}
