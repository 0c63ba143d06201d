//! `redis-sentinel` across a real failover of the dev cluster's Sentinel set: the scaler asks
//! the sentinels again and reads the new master. In the disruptive binary, apart from the
//! parallel suite's Sentinel tests (`redis_topologies.rs`), which the failover would disturb.

use std::time::Duration;

use ebb_scalers::{Registry, Trigger};
use integration_tests::{ensure, eventually, setup, unique_name};
use redis::aio::MultiplexedConnection;

async fn connect(address: &str, db: i64) -> Result<MultiplexedConnection, String> {
    redis::Client::open(format!("redis://{address}/{db}"))
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())
}

async fn master_address(sentinel: &str, name: &str) -> Result<String, String> {
    let mut s = connect(sentinel, 0).await?;
    let (host, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(name)
        .query_async(&mut s)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("{host}:{port}"))
}

async fn role(address: &str) -> Result<String, String> {
    let mut c = connect(address, 0).await?;
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query_async(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    match role.first() {
        Some(redis::Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test]
async fn a_failover_is_followed_to_the_new_master() {
    let _serial = crate::serial().await;
    let env = setup("redis-sentinel-failover").await;
    let sentinels = env.cluster.redis_sentinel_addresses.clone();
    let name = env.cluster.redis_sentinel_master.clone();
    let list = unique_name("failover");
    let scaler = Registry::with_builtins()
        .build(&Trigger {
            index: 0,
            trigger_type: "redis-sentinel".into(),
            metadata: [
                ("addresses", sentinels.join(",")),
                ("sentinelMaster", name.clone()),
                ("databaseIndex", "6".to_string()),
                ("listName", list.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            ..Default::default()
        })
        .expect("builds");
    let metric = format!("s0-redis-{list}");

    let before = master_address(&sentinels[0], &name).await.expect("master");
    let mut c = connect(&before, 6).await.expect("master");
    let _: i64 = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["a", "b", "c"])
        .query_async(&mut c)
        .await
        .expect("RPUSH");
    let got = scaler.metrics_and_activity(&metric).await.expect("reads");
    assert_eq!((got.values[0].value, got.active), (3.0, true));

    // The replica must be in sync before Sentinel will promote it.
    eventually(
        "the replica is in sync",
        Duration::from_secs(30),
        || async {
            let mut s = connect(&sentinels[0], 0).await?;
            let reply: Result<(), _> = redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(&name)
                .query_async(&mut s)
                .await;
            reply.map_err(|e| e.to_string())
        },
    )
    .await;
    let after = eventually("a new master", Duration::from_secs(30), || async {
        let now = master_address(&sentinels[0], &name).await?;
        ensure(now != before, || format!("still {now}"))?;
        let r = role(&now).await?;
        ensure(r == "master", || format!("{now} is {r}"))?;
        Ok(now)
    })
    .await;

    let mut c = connect(&after, 6).await.expect("new master");
    let _: i64 = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["d", "e"])
        .query_async(&mut c)
        .await
        .expect("RPUSH on the new master");
    drop(c);
    // Polls may fail while the old connection is found broken; then the scaler reads the new
    // master, where its connection (on database 6) shows up.
    eventually(
        "the scaler reads the new master",
        Duration::from_secs(30),
        || async {
            let got = scaler
                .metrics_and_activity(&metric)
                .await
                .map_err(|e| e.to_string())?;
            ensure(got.values[0].value == 5.0, || format!("{:?}", got.values))?;
            let mut control = connect(&after, 0).await?;
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut control)
                .await
                .map_err(|e| e.to_string())?;
            let on_db6 = clients.lines().filter(|l| l.contains(" db=6 ")).count();
            ensure(on_db6 >= 1, || format!("no client on db 6 of {after}"))
        },
    )
    .await;
}
