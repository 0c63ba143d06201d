//! The dev cluster's Redis and RabbitMQ are real servers on loopback that take writes.

use std::time::Duration;

use integration_tests::{ensure, eventually, setup, unique_name};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

#[tokio::test]
async fn redis_list_push_is_seen_by_another_connection() {
    let env = setup("redis-push").await;
    let list = unique_name("orders");
    let client = redis::Client::open(env.cluster.redis_url.as_str()).expect("redis url");
    let mut writer = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the dev cluster's Redis");
    let pushed: i64 = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["a", "b", "c"][..])
        .query_async(&mut writer)
        .await
        .expect("RPUSH");
    assert_eq!(pushed, 3);

    // A second, independent connection sees the list and the server lists both clients.
    let mut reader = client
        .get_multiplexed_async_connection()
        .await
        .expect("second connection");
    let len: i64 = redis::cmd("LLEN")
        .arg(&list)
        .query_async(&mut reader)
        .await
        .expect("LLEN");
    assert_eq!(len, 3);
    let kind: String = redis::cmd("TYPE")
        .arg(&list)
        .query_async(&mut reader)
        .await
        .expect("TYPE");
    assert_eq!(kind, "list");
    // The server itself lists the writer's connection under the name it gave itself.
    let () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(&list)
        .query_async(&mut writer)
        .await
        .expect("CLIENT SETNAME");
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut reader)
        .await
        .expect("CLIENT LIST");
    assert!(
        clients
            .lines()
            .any(|l| l.contains(&format!("name={list} "))),
        "{clients}"
    );
    let _: i64 = redis::cmd("DEL")
        .arg(&list)
        .query_async(&mut reader)
        .await
        .expect("DEL");
}

#[tokio::test]
async fn rabbitmq_publish_is_counted_over_amqp_and_the_management_api() {
    let env = setup("rabbitmq-publish").await;
    let queue = unique_name("orders");
    let conn = Connection::connect(
        &env.cluster.rabbitmq_amqp_url,
        ConnectionProperties::default(),
    )
    .await
    .expect("AMQP connection to the dev cluster's RabbitMQ");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare queue");
    channel
        .confirm_select(Default::default())
        .await
        .expect("publisher confirms");
    for i in 0..7 {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                format!("order {i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("broker confirms");
    }

    // AMQP: a passive declare reports the ready messages, as ebb's AMQP scaler will read them.
    let passive = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
    assert_eq!(passive.message_count(), 7);

    // HTTP management API: the same count, once its statistics refresh.
    let (url, (user, pass)) = env.rabbitmq_management();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let queue_url = format!("{}api/queues/%2F/{queue}", url);
    eventually(
        "the management API counts 7 messages",
        Duration::from_secs(30),
        || async {
            let body: serde_json::Value = http
                .get(&queue_url)
                .basic_auth(&user, Some(&pass))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            ensure(body["messages"] == 7 && body["messages_ready"] == 7, || {
                format!(
                    "messages {} ready {}",
                    body["messages"], body["messages_ready"]
                )
            })
        },
    )
    .await;

    channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .expect("delete queue");
    conn.close(0, "done".into()).await.expect("close");
}
