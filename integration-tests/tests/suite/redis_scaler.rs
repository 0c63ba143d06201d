//! The `redis` scaler against the dev cluster's real Redis: values and activity, shared
//! connections, and errors (never zeros) when the server cannot answer.

use std::time::Duration;

use ebb_scalers::{MetricSpec, MetricTargetType, Registry, Scaler, Trigger};
use integration_tests::{ensure, eventually, setup, unique_name};

/// `host:port` of the dev cluster's Redis.
fn address(redis_url: &str) -> String {
    redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string()
}

fn trigger(address: &str, list: &str, db: &str) -> Trigger {
    Trigger {
        index: 0,
        trigger_type: "redis".into(),
        metadata: [
            ("address", address),
            ("listName", list),
            ("listLength", "5"),
            ("activationListLength", "2"),
            ("databaseIndex", db),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    }
}

async fn redis_conn(url: &str, db: i64) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("{url}/{db}")).expect("url");
    client
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Connections the server reports on database `db`.
async fn connections_on_db(control: &mut redis::aio::MultiplexedConnection, db: i64) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(control)
        .await
        .expect("CLIENT LIST");
    list.lines()
        .filter(|l| l.contains(&format!(" db={db} ")))
        .count()
}

#[tokio::test]
async fn reports_length_and_activity_for_each_key_type() {
    let env = setup("redis-scaler-values").await;
    let addr = address(&env.cluster.redis_url);
    let list = unique_name("orders");
    let mut conn = redis_conn(&env.cluster.redis_url, 5).await;
    let scaler = Registry::with_builtins()
        .build(&trigger(&addr, &list, "5"))
        .expect("builds");

    let name = format!("s0-redis-{list}");
    assert_eq!(
        scaler.metric_specs(),
        vec![MetricSpec::External {
            name: name.clone(),
            target: 5.0,
            target_type: MetricTargetType::AverageValue
        }]
    );

    // Missing key: zero, inactive. At the activation threshold: still inactive. Past it: active.
    for (push, expected, active) in [(0usize, 0.0, false), (2, 2.0, false), (10, 12.0, true)] {
        if push > 0 {
            let items: Vec<String> = (0..push).map(|i| format!("job-{i}")).collect();
            let _: i64 = redis::cmd("RPUSH")
                .arg(&list)
                .arg(&items)
                .query_async(&mut conn)
                .await
                .expect("RPUSH");
        }
        let got = scaler.metrics_and_activity(&name).await.expect("reads");
        assert_eq!(got.values[0].value, expected);
        assert_eq!(got.active, active, "length {expected}");
    }

    // Sets, sorted sets and hashes count their members too.
    for (cmd, args) in [
        ("SADD", vec!["a", "b", "c"]),
        ("ZADD", vec!["1", "a", "2", "b", "3", "c"]),
        ("HSET", vec!["a", "1", "b", "2", "c", "3"]),
    ] {
        let key = unique_name("other");
        let _: i64 = redis::cmd(cmd)
            .arg(&key)
            .arg(&args)
            .query_async(&mut conn)
            .await
            .expect(cmd);
        let s = Registry::with_builtins()
            .build(&trigger(&addr, &key, "5"))
            .expect("builds");
        let got = s
            .metrics_and_activity(&format!("s0-redis-{key}"))
            .await
            .expect("reads");
        assert_eq!((got.values[0].value, got.active), (3.0, true), "{cmd}");
    }

    // A key of another type is an error, not a zero.
    let text = unique_name("text");
    let () = redis::cmd("SET")
        .arg(&text)
        .arg("x")
        .query_async(&mut conn)
        .await
        .expect("SET");
    let s = Registry::with_builtins()
        .build(&trigger(&addr, &text, "5"))
        .expect("builds");
    let err = s
        .metrics_and_activity(&format!("s0-redis-{text}"))
        .await
        .expect_err("string key");
    assert!(
        err.to_string()
            .contains("is not a list, set, sorted set or hash"),
        "{err}"
    );
}

#[tokio::test]
async fn two_hundred_triggers_share_one_connection_released_on_close() {
    let env = setup("redis-scaler-pool").await;
    let addr = address(&env.cluster.redis_url);
    // A database no other test uses: the connections on it are counted.
    let db = 11;
    let mut control = redis_conn(&env.cluster.redis_url, 0).await;
    let registry = Registry::with_builtins();
    let scalers: Vec<Box<dyn Scaler>> = (0..200)
        .map(|i| {
            registry
                .build(&trigger(
                    &addr,
                    &format!("{}-{i}", unique_name("q")),
                    &db.to_string(),
                ))
                .expect("builds")
        })
        .collect();
    let reads = scalers.iter().map(|s| {
        let name = s.metric_specs()[0]
            .external_name()
            .expect("external")
            .to_string();
        async move { s.metrics_and_activity(&name).await }
    });
    for result in futures::future::join_all(reads).await {
        assert_eq!(result.expect("reads").values[0].value, 0.0);
    }
    let held = connections_on_db(&mut control, db).await;
    assert!(
        (1..=2).contains(&held),
        "200 triggers hold {held} connections on db {db}"
    );

    drop(scalers);
    eventually(
        "the shared connection closes with the last trigger",
        Duration::from_secs(10),
        || async {
            let mut control = redis_conn(&env.cluster.redis_url, 0).await;
            let n = connections_on_db(&mut control, db).await;
            ensure(n == 0, || format!("{n} connections left on db {db}"))
        },
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_within_the_timeout() {
    let _env = setup("redis-scaler-down").await;
    // Nothing listens on port 1 of loopback.
    let scaler = Registry::with_builtins()
        .build(&trigger("127.0.0.1:1", "orders", "0"))
        .expect("builds");
    let outcome = tokio::time::timeout(
        Duration::from_secs(15),
        scaler.metrics_and_activity("s0-redis-orders"),
    )
    .await;
    let err = outcome
        .expect("answers, never hangs")
        .expect_err("an error, never a zero");
    assert!(err.to_string().starts_with("redis 127.0.0.1:1"), "{err}");
}

/// `username` and `password` in plain metadata (KEDA reads them there too) log in: the right
/// password reads the list, a wrong one is an error naming the refusal, never a 0.
#[tokio::test]
async fn a_password_in_metadata_is_used() {
    let env = setup("redis-scaler-metadata-password").await;
    let addr = address(&env.cluster.redis_url);
    let mut control = redis_conn(&env.cluster.redis_url, 0).await;
    let user = unique_name("ebb-user");
    let list = unique_name("passworded");
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", &user, "on", ">s3cret-pw", "~*", "+@all"])
        .query_async(&mut control)
        .await
        .expect("ACL SETUSER");
    let mut conn = redis_conn(&env.cluster.redis_url, 4).await;
    let _: i64 = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["a", "b", "c"])
        .query_async(&mut conn)
        .await
        .expect("RPUSH");

    let with = |password: &str| {
        let mut t = trigger(&addr, &list, "4");
        t.metadata.insert("username".into(), user.clone());
        t.metadata.insert("password".into(), password.into());
        Registry::with_builtins().build(&t).expect("builds")
    };
    let name = format!("s0-redis-{list}");
    let right = with("s3cret-pw");
    let got = right.metrics_and_activity(&name).await.expect("reads");
    assert_eq!(got.values[0].value, 3.0);
    let wrong = with("not-the-password");
    let err = wrong
        .metrics_and_activity(&name)
        .await
        .expect_err("a wrong password is an error")
        .to_string();
    assert!(
        err.to_lowercase().contains("authentication failed"),
        "{err}"
    );
    assert!(!err.contains("not-the-password"), "{err}");

    let _: () = redis::cmd("DEL")
        .arg(&list)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let _: () = redis::cmd("ACL")
        .arg(&["DELUSER", &user])
        .query_async(&mut control)
        .await
        .expect("ACL DELUSER");
}
