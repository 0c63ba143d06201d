//! The `rabbitmq` scaler against the dev cluster's real RabbitMQ, over AMQP and the management
//! API: values and activity, message rates, regex queries, shared connections, and errors (never
//! zeros) when a queue or the server is missing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ebb_scalers::{MetricSpec, MetricTargetType, MetricsAndActivity, Registry, Scaler, Trigger};
use integration_tests::{ensure, eventually, setup, unique_name};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;

/// Statistics of the management API lag behind (5 s collection interval by default).
const STATS_DEADLINE: Duration = Duration::from_secs(45);

/// The dev cluster's RabbitMQ, seen by the test itself (not through ebb).
struct Broker {
    amqp_url: String,
    /// `http://127.0.0.1:<port>`, without credentials.
    management: String,
    http: reqwest::Client,
}

impl Broker {
    fn new(env: &integration_tests::TestEnv) -> Self {
        let url = reqwest::Url::parse(&env.cluster.rabbitmq_management_url).expect("url");
        let management = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().expect("host"),
            url.port_or_known_default().expect("port")
        );
        Self {
            amqp_url: env.cluster.rabbitmq_amqp_url.clone(),
            management,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        }
    }

    /// `host` for ebb's HTTP protocol: the management URL with guest's credentials.
    fn http_host(&self) -> String {
        self.management.replace("http://", "http://guest:guest@") + "/"
    }

    /// An AMQP channel on `vhost` (`None`: the URL's default vhost), with publisher confirms.
    async fn channel(&self, vhost: Option<&str>) -> (Connection, Channel) {
        let url = match vhost {
            Some(v) => format!("{}/{v}", self.amqp_url.trim_end_matches("/%2f")),
            None => self.amqp_url.clone(),
        };
        let conn = Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("AMQP connection");
        let channel = conn.create_channel().await.expect("channel");
        channel
            .confirm_select(Default::default())
            .await
            .expect("confirms");
        (conn, channel)
    }

    async fn management(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.management))
            .basic_auth("guest", Some("guest"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("management API");
        let status = response.status();
        let text = response.text().await.expect("body");
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// ebb's AMQP connections on `vhost`, as the management API lists them.
    async fn ebb_connections(&self, vhost: &str) -> Vec<String> {
        let path = format!("/api/vhosts/{}/connections", encode(vhost));
        let list = self.management(reqwest::Method::GET, &path, None).await;
        list.as_array()
            .expect("a list")
            .iter()
            .filter(|c| c["client_properties"]["connection_name"] == "ebb")
            .map(|c| c["name"].as_str().expect("name").to_string())
            .collect()
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn declare(channel: &Channel, queue: &str) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare queue");
}

async fn publish(channel: &Channel, queue: &str, n: usize) {
    for i in 0..n {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("job {i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("broker confirms");
    }
}

async fn delete(channel: &Channel, queue: &str) {
    let _ = channel.queue_delete(queue.into(), Default::default()).await;
}

fn trigger(host: &str, queue: &str, extra: &[(&str, &str)]) -> Trigger {
    let mut metadata: std::collections::BTreeMap<String, String> = [
        ("host", host),
        ("queueName", queue),
        ("mode", "QueueLength"),
        ("value", "5"),
        ("activationValue", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        metadata.insert(k.to_string(), v.to_string());
    }
    Trigger {
        index: 0,
        trigger_type: "rabbitmq".into(),
        metadata,
        ..Default::default()
    }
}

fn name_of(scaler: &dyn Scaler) -> String {
    scaler.metric_specs()[0]
        .external_name()
        .expect("external")
        .to_string()
}

/// Polls until the scaler reports `expected` (the management API's statistics lag behind).
async fn until_value(scaler: &dyn Scaler, expected: f64) -> MetricsAndActivity {
    let name = name_of(scaler);
    eventually(
        &format!("{name} reports {expected}"),
        STATS_DEADLINE,
        || async {
            let got = scaler
                .metrics_and_activity(&name)
                .await
                .map_err(|e| e.to_string())?;
            ensure(got.values[0].value == expected, || format!("{got:?}"))?;
            Ok(got)
        },
    )
    .await
}

#[tokio::test]
async fn queue_length_and_activity_over_amqp_and_http() {
    let env = setup("rabbitmq-scaler-values").await;
    let broker = Broker::new(&env);
    let (_conn, channel) = broker.channel(None).await;
    for (protocol, host) in [
        ("amqp", env.cluster.rabbitmq_amqp_url.clone()),
        ("http", broker.http_host()),
    ] {
        let queue = unique_name(&format!("orders-{protocol}"));
        declare(&channel, &queue).await;
        let scaler = Registry::with_builtins()
            .build(&trigger(&host, &queue, &[("protocol", protocol)]))
            .expect("builds");
        let name = format!("s0-rabbitmq-{queue}");
        assert_eq!(
            scaler.metric_specs(),
            vec![MetricSpec::External {
                name: name.clone(),
                target: 5.0,
                target_type: MetricTargetType::AverageValue
            }]
        );
        // Empty: zero, inactive. At the activation value: still inactive. Past it: active.
        for (push, expected, active) in [(0, 0.0, false), (2, 2.0, false), (8, 10.0, true)] {
            publish(&channel, &queue, push).await;
            let got = until_value(scaler.as_ref(), expected).await;
            assert_eq!(got.active, active, "{protocol}: {expected} messages");
            assert_eq!(got.values[0].name, name);
        }
        delete(&channel, &queue).await;
    }

    // Unacknowledged messages count in `messages`, not in `messages_ready`; AMQP's passive
    // declare sees only the ready ones.
    let queue = unique_name("orders-unacked");
    declare(&channel, &queue).await;
    publish(&channel, &queue, 6).await;
    let (_holder_conn, holder) = broker.channel(None).await;
    for _ in 0..4 {
        holder
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")
            .expect("a message");
    }
    let registry = Registry::with_builtins();
    let all = registry
        .build(&trigger(&broker.http_host(), &queue, &[]))
        .expect("builds");
    let ready = registry
        .build(&trigger(
            &broker.http_host(),
            &queue,
            &[("excludeUnacknowledged", "true")],
        ))
        .expect("builds");
    let amqp = registry
        .build(&trigger(&env.cluster.rabbitmq_amqp_url, &queue, &[]))
        .expect("builds");
    assert!(until_value(all.as_ref(), 6.0).await.active);
    assert!(!until_value(ready.as_ref(), 2.0).await.active);
    assert!(!until_value(amqp.as_ref(), 2.0).await.active);
    drop(holder);
    delete(&channel, &queue).await;
}

#[tokio::test]
async fn message_rate_over_http() {
    let env = setup("rabbitmq-scaler-rate").await;
    let broker = Broker::new(&env);
    let (_conn, channel) = broker.channel(None).await;
    let queue = unique_name("rate");
    declare(&channel, &queue).await;
    let scaler = Registry::with_builtins()
        .build(&trigger(
            &broker.http_host(),
            &queue,
            &[
                ("mode", "MessageRate"),
                ("value", "100"),
                ("activationValue", "0"),
            ],
        ))
        .expect("builds");
    let name = format!("s0-rabbitmq-{queue}");
    assert_eq!(
        scaler.metric_specs(),
        vec![MetricSpec::External {
            name: name.clone(),
            target: 100.0,
            target_type: MetricTargetType::AverageValue
        }]
    );
    // Nothing published yet: rate 0, inactive.
    let got = scaler.metrics_and_activity(&name).await.expect("reads");
    assert_eq!((got.values[0].value, got.active), (0.0, false));

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (stop, channel, queue) = (stop.clone(), channel.clone(), queue.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                publish(&channel, &queue, 5).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let got = eventually(
        "the management API reports a publish rate",
        Duration::from_secs(60),
        || async {
            let got = scaler
                .metrics_and_activity(&name)
                .await
                .map_err(|e| e.to_string())?;
            ensure(got.values[0].value > 0.0, || format!("{got:?}"))?;
            Ok(got)
        },
    )
    .await;
    assert!(got.active, "{got:?}");
    stop.store(true, Ordering::SeqCst);
    publisher.await.expect("publisher");
    delete(&channel, &queue).await;
}

#[tokio::test]
async fn regex_sums_and_maxes_over_matching_queues() {
    let env = setup("rabbitmq-scaler-regex").await;
    let broker = Broker::new(&env);
    let (_conn, channel) = broker.channel(None).await;
    let prefix = unique_name("regex");
    let (a, b, other) = (
        format!("{prefix}-a"),
        format!("{prefix}-b"),
        format!("other-{prefix}"),
    );
    for (queue, n) in [(&a, 3), (&b, 5), (&other, 11)] {
        declare(&channel, queue).await;
        publish(&channel, queue, n).await;
    }
    let regex = format!("^{prefix}-");
    let registry = Registry::with_builtins();
    for (operation, expected, active) in
        [("sum", 8.0, true), ("max", 5.0, false), ("avg", 4.0, false)]
    {
        let scaler = registry
            .build(&trigger(
                &broker.http_host(),
                &regex,
                &[
                    ("useRegex", "true"),
                    ("operation", operation),
                    ("activationValue", "5"),
                ],
            ))
            .expect("builds");
        let got = until_value(scaler.as_ref(), expected).await;
        assert_eq!(got.active, active, "{operation}");
    }
    // More matches than one page: an error, not a partial sum.
    let paged = registry
        .build(&trigger(
            &broker.http_host(),
            &regex,
            &[("useRegex", "true"), ("pageSize", "1")],
        ))
        .expect("builds");
    let err = paged
        .metrics_and_activity(&name_of(paged.as_ref()))
        .await
        .expect_err("two pages");
    assert!(
        err.to_string().contains("more queues than one page"),
        "{err}"
    );
    for queue in [&a, &b, &other] {
        delete(&channel, queue).await;
    }
}

#[tokio::test]
async fn a_missing_queue_is_an_error_on_both_protocols() {
    let env = setup("rabbitmq-scaler-missing").await;
    let broker = Broker::new(&env);
    let (_conn, channel) = broker.channel(None).await;
    let present = unique_name("present");
    declare(&channel, &present).await;
    publish(&channel, &present, 3).await;
    let missing = unique_name("missing");
    let registry = Registry::with_builtins();
    for host in [env.cluster.rabbitmq_amqp_url.clone(), broker.http_host()] {
        let scaler = registry
            .build(&trigger(&host, &missing, &[]))
            .expect("builds");
        let err = scaler
            .metrics_and_activity(&name_of(scaler.as_ref()))
            .await
            .expect_err("an error, never a zero");
        assert!(
            err.to_string()
                .ends_with(&format!("queue {missing:?} does not exist in vhost \"/\"")),
            "{err}"
        );
        assert!(!err.to_string().contains("guest:guest"), "{err}");
        // The failed declare closed only its own channel: a trigger sharing the connection
        // still reads its queue.
        let other = registry
            .build(&trigger(&host, &present, &[]))
            .expect("builds");
        assert!(until_value(other.as_ref(), 3.0).await.active);
    }
    delete(&channel, &present).await;
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_within_the_timeout() {
    let _env = setup("rabbitmq-scaler-down").await;
    // Nothing listens on port 1 of loopback.
    for host in [
        "amqp://user:hunter2@127.0.0.1:1/",
        "http://user:hunter2@127.0.0.1:1/",
    ] {
        let scaler = Registry::with_builtins()
            .build(&trigger(host, "orders", &[("timeout", "2000")]))
            .expect("builds");
        let outcome = tokio::time::timeout(
            Duration::from_secs(15),
            scaler.metrics_and_activity("s0-rabbitmq-orders"),
        )
        .await;
        let err = outcome
            .expect("answers, never hangs")
            .expect_err("an error, never a zero");
        let text = err.to_string();
        eprintln!("unreachable {}: {text}", &host[..4]);
        assert!(text.starts_with("rabbitmq "), "{text}");
        assert!(text.contains("127.0.0.1:1"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[tokio::test]
async fn two_hundred_triggers_share_one_connection_released_on_close() {
    let env = setup("rabbitmq-scaler-pool").await;
    let broker = Broker::new(&env);
    // A vhost of its own, so ebb connections of other tests do not count.
    let vhost = unique_name("ebb-pool");
    let vpath = encode(&vhost);
    broker
        .management(reqwest::Method::PUT, &format!("/api/vhosts/{vpath}"), None)
        .await;
    broker
        .management(
            reqwest::Method::PUT,
            &format!("/api/permissions/{vpath}/guest"),
            Some(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .await;
    let (conn, channel) = broker.channel(Some(&vpath)).await;
    let queues: Vec<String> = (0..200).map(|i| format!("q-{i}")).collect();
    for queue in &queues {
        declare(&channel, queue).await;
    }
    publish(&channel, "q-7", 4).await;
    conn.close(200, "declared".into()).await.expect("close");

    let registry = Registry::with_builtins();
    let scalers: Vec<Box<dyn Scaler>> = queues
        .iter()
        .map(|q| {
            registry
                .build(&trigger(
                    &env.cluster.rabbitmq_amqp_url,
                    q,
                    &[("vhostName", &vhost)],
                ))
                .expect("builds")
        })
        .collect();
    let poll_all = || async {
        let reads = scalers.iter().map(|s| {
            let name = name_of(s.as_ref());
            async move { s.metrics_and_activity(&name).await }
        });
        futures::future::join_all(reads).await
    };
    for (i, result) in poll_all().await.into_iter().enumerate() {
        let got = result.expect("reads");
        let expected = if i == 7 { 4.0 } else { 0.0 };
        assert_eq!(
            (got.values[0].value, got.active),
            (expected, i == 7),
            "q-{i}"
        );
    }
    let held = eventually(
        "the management API lists ebb's connection",
        STATS_DEADLINE,
        || async {
            let held = broker.ebb_connections(&vhost).await;
            ensure(!held.is_empty(), || "no ebb connection yet".into())?;
            Ok(held)
        },
    )
    .await;
    assert!(
        held.len() <= 2,
        "200 triggers hold {} connections",
        held.len()
    );
    eprintln!("200 triggers hold {} ebb connection(s)", held.len());

    // The server drops the connection: the next polls notice and connect again.
    for name in &held {
        broker
            .management(
                reqwest::Method::DELETE,
                &format!("/api/connections/{}", encode(name)),
                None,
            )
            .await;
    }
    eventually(
        "every trigger reads again after the connection was closed by the server",
        Duration::from_secs(30),
        || async {
            let results = poll_all().await;
            let failed = results.iter().filter(|r| r.is_err()).count();
            ensure(failed == 0, || {
                format!(
                    "{failed} failed, e.g. {:?}",
                    results.iter().find(|r| r.is_err())
                )
            })
        },
    )
    .await;

    drop(scalers);
    eventually(
        "the shared connection closes with the last trigger",
        STATS_DEADLINE,
        || async {
            let held = broker.ebb_connections(&vhost).await;
            ensure(held.is_empty(), || {
                format!("{} ebb connections left", held.len())
            })
        },
    )
    .await;
    broker
        .management(
            reqwest::Method::DELETE,
            &format!("/api/vhosts/{vpath}"),
            None,
        )
        .await;
}

/// A `rabbitmq` trigger whose TriggerAuthentication enables TLS with `auth`.
fn tls_trigger(host: &str, queue: &str, auth: &[(&str, String)]) -> Trigger {
    let mut t = trigger(host, queue, &[]);
    t.auth_params = auth
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    t
}

#[tokio::test]
async fn tls_over_amqps_and_https_with_the_ca_and_a_client_certificate() {
    let env = setup("rabbitmq-scaler-tls").await;
    let broker = Broker::new(&env);
    let (_conn, channel) = broker.channel(None).await;
    let read = |path: &std::path::Path| std::fs::read_to_string(path).expect("PEM");
    let ca = read(&env.cluster.tls_ca);
    let cert = read(&env.cluster.tls_client_cert);
    let key = read(&env.cluster.tls_client_key);
    let with_ca = vec![("tls", "enable".to_string()), ("ca", ca.clone())];
    let with_client_cert = vec![
        ("tls", "enable".to_string()),
        ("ca", ca.clone()),
        ("cert", cert),
        ("key", key.clone()),
    ];
    let https = format!("{}/", env.cluster.rabbitmq_management_https_url);

    let queue = unique_name("orders-tls");
    declare(&channel, &queue).await;
    publish(&channel, &queue, 3).await;
    for (what, host, auth) in [
        ("amqps, CA", &env.cluster.rabbitmq_amqps_url, &with_ca),
        (
            "amqps, client certificate",
            &env.cluster.rabbitmq_amqps_url,
            &with_client_cert,
        ),
        ("https, CA", &https, &with_ca),
        ("https, client certificate", &https, &with_client_cert),
    ] {
        let scaler = Registry::with_builtins()
            .build(&tls_trigger(host, &queue, auth))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = until_value(scaler.as_ref(), 3.0).await;
        assert!(got.active, "{what}: 3 messages are past activation 2");
    }

    // Without the dev CA the server is not trusted: an error naming the certificate problem,
    // within the timeout, and no key material in it.
    for host in [&env.cluster.rabbitmq_amqps_url, &https] {
        let scaler = Registry::with_builtins()
            .build(&tls_trigger(host, &queue, &[("tls", "enable".to_string())]))
            .expect("builds");
        let outcome = tokio::time::timeout(
            Duration::from_secs(15),
            scaler.metrics_and_activity(&name_of(scaler.as_ref())),
        )
        .await
        .expect("answers, never hangs");
        let text = outcome
            .expect_err("an untrusted server is an error")
            .to_string();
        eprintln!("untrusted {host}: {text}");
        assert!(
            text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
            "{text}"
        );
        assert!(
            !text.contains("guest:guest") && !text.contains(&key[..40]),
            "{text}"
        );
    }

    // unsafeSsl skips verification over https and amqps, with or without `tls: enable`.
    for (host, auth) in [
        (&https, vec![("tls", "enable".to_string())]),
        (
            &env.cluster.rabbitmq_amqps_url,
            vec![("tls", "enable".to_string())],
        ),
        (&env.cluster.rabbitmq_amqps_url, vec![]),
    ] {
        let mut t = tls_trigger(host, &queue, &auth);
        t.metadata.insert("unsafeSsl".into(), "true".into());
        let scaler = Registry::with_builtins().build(&t).expect("builds");
        assert_eq!(until_value(scaler.as_ref(), 3.0).await.values[0].value, 3.0);
    }

    // keyPassword: the client key, encrypted (PKCS#8), opened with its password.
    let password = "open-sesame";
    let with_encrypted_key = vec![
        ("tls", "enable".to_string()),
        ("ca", ca.clone()),
        ("cert", read(&env.cluster.tls_client_cert)),
        ("key", integration_tests::encrypted_key(&key, password)),
        ("keyPassword", password.to_string()),
    ];
    let scaler = Registry::with_builtins()
        .build(&tls_trigger(
            &env.cluster.rabbitmq_amqps_url,
            &queue,
            &with_encrypted_key,
        ))
        .expect("builds");
    assert_eq!(until_value(scaler.as_ref(), 3.0).await.values[0].value, 3.0);
    delete(&channel, &queue).await;
}

/// With a client certificate and no credentials, ebb logs in with SASL EXTERNAL as the user
/// the certificate names (its CN), not as guest.
#[tokio::test]
async fn a_client_certificate_without_credentials_logs_in_with_sasl_external() {
    let env = setup("rabbitmq-scaler-external").await;
    let broker = Broker::new(&env);
    let read = |path: &std::path::Path| std::fs::read_to_string(path).expect("PEM");
    // The dev client certificate's CN; RabbitMQ needs a user of that name (no password).
    let user = "ebb-dev-tls-client";
    broker
        .management(
            reqwest::Method::PUT,
            &format!("/api/users/{user}"),
            Some(serde_json::json!({"password_hash": "", "tags": ""})),
        )
        .await;
    broker
        .management(
            reqwest::Method::PUT,
            &format!("/api/permissions/%2F/{user}"),
            Some(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .await;
    let (_conn, channel) = broker.channel(None).await;
    let queue = unique_name("orders-external");
    declare(&channel, &queue).await;
    publish(&channel, &queue, 3).await;

    let amqps = reqwest::Url::parse(&env.cluster.rabbitmq_amqps_url).expect("url");
    let without_credentials = format!(
        "amqps://{}:{}/",
        amqps.host_str().expect("host"),
        amqps.port().expect("port")
    );
    let auth = vec![
        ("tls", "enable".to_string()),
        ("ca", read(&env.cluster.tls_ca)),
        ("cert", read(&env.cluster.tls_client_cert)),
        ("key", read(&env.cluster.tls_client_key)),
    ];
    let scaler = Registry::with_builtins()
        .build(&tls_trigger(&without_credentials, &queue, &auth))
        .expect("builds");
    assert_eq!(until_value(scaler.as_ref(), 3.0).await.values[0].value, 3.0);

    // The broker's view of that connection (its statistics lag a few seconds): the
    // certificate's user, by EXTERNAL.
    eventually("an EXTERNAL login", STATS_DEADLINE, || async {
        let connections = broker
            .management(reqwest::Method::GET, "/api/connections", None)
            .await;
        let logins: Vec<(String, String)> = connections
            .as_array()
            .expect("a list")
            .iter()
            .filter(|c| c["client_properties"]["connection_name"] == "ebb" && c["ssl"] == true)
            .map(|c| {
                (
                    c["user"].as_str().unwrap_or_default().to_string(),
                    c["auth_mechanism"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        ensure(
            logins.contains(&(user.to_string(), "EXTERNAL".to_string())),
            || format!("{logins:?}"),
        )
    })
    .await;
    drop(scaler);
    delete(&channel, &queue).await;
}
