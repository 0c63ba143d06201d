//! The `kafka` and `apache-kafka` scalers against the dev cluster's real Kafka 4.4 broker, set
//! up with Kafka's own tools (topics, a keyed producer, the consumer-groups tool for committed
//! offsets, GetOffsetShell for the expected latest offsets): a group without committed offsets
//! under each `offsetResetPolicy`, the lag once offsets are committed, the partition cap and
//! `allowIdleConsumers`, `excludePersistentLag`, every topic of the group when none is named,
//! SASL (PLAIN, SCRAM, and OAUTHBEARER with Ory Hydra's tokens) and TLS listeners (client
//! certificates included), and errors that are never 0.

use std::collections::BTreeMap;

use ebb_scalers::{Registry, Trigger};
use integration_tests::{
    dead_address, encrypted_key, kafka_commit, kafka_latest, kafka_produce, kafka_topic,
    read_scaler, read_scaler_until, setup, unique_name,
};

fn trigger(kind: &str, metadata: &[(&str, &str)], auth: &[(&str, &str)]) -> Trigger {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Trigger {
        index: 0,
        trigger_type: kind.into(),
        metadata: map(metadata),
        auth_params: map(auth),
        ..Default::default()
    }
}

#[tokio::test]
async fn lag_follows_committed_offsets_with_keda_s_rules_for_missing_ones_and_the_cap() {
    let env = setup("kafka-scaler").await;
    let bootstrap = env.cluster.kafka_bootstrap.clone();
    let topic = unique_name("orders");
    let group = unique_name("workers");
    let (b, t) = (bootstrap.clone(), topic.clone());
    tokio::task::spawn_blocking(move || {
        kafka_topic(&b, &t, 3);
        kafka_produce(&b, &t, 30);
    })
    .await
    .expect("join");
    let (b, t) = (bootstrap.clone(), topic.clone());
    let latest = tokio::task::spawn_blocking(move || kafka_latest(&b, &t))
        .await
        .expect("join");
    assert_eq!(latest.iter().sum::<i64>(), 30, "{latest:?}");
    let registry = Registry::with_builtins();
    let base = [
        ("bootstrapServers", bootstrap.as_str()),
        ("consumerGroup", group.as_str()),
        ("topic", topic.as_str()),
        ("lagThreshold", "10"),
        ("activationLagThreshold", "2"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut metadata = base.to_vec();
        metadata.extend_from_slice(extra);
        registry
            .build(&trigger("kafka", &metadata, &[]))
            .expect("builds")
    };

    // No committed offset: 1 per partition (latest), the whole partition (earliest), or 0.
    let latest_policy = with(&[]);
    assert_eq!(
        latest_policy.metric_specs()[0].external_name(),
        Some(format!("s0-kafka-{topic}").as_str())
    );
    let got = read_scaler_until(latest_policy.as_ref(), "no offsets, latest", 3.0).await;
    assert!(got.active, "3 is above the activation threshold of 2");
    read_scaler_until(
        with(&[("offsetResetPolicy", "earliest")]).as_ref(),
        "no offsets, earliest",
        30.0,
    )
    .await;
    let zero = with(&[("scaleToZeroOnInvalidOffset", "true")]);
    assert!(
        !read_scaler_until(zero.as_ref(), "no offsets, scale to zero", 0.0)
            .await
            .active
    );

    // Offsets committed at 2 (or the end of a shorter partition): the rest is the lag.
    let (b, g, t) = (bootstrap.clone(), group.clone(), topic.clone());
    tokio::task::spawn_blocking(move || kafka_commit(&b, &g, &t, 2))
        .await
        .expect("join");
    let lag: i64 = latest.iter().map(|l| l - l.min(&2)).sum();
    read_scaler_until(latest_policy.as_ref(), "committed at 2", lag as f64).await;
    // The same group, every topic it has committed to: the same lag, KEDA's metric name.
    let all_topics = registry
        .build(&trigger(
            "kafka",
            &[
                ("bootstrapServers", bootstrap.as_str()),
                ("consumerGroup", group.as_str()),
            ],
            &[],
        ))
        .expect("builds");
    assert_eq!(
        all_topics.metric_specs()[0].external_name(),
        Some(format!("s0-kafka-{group}-topics").as_str())
    );
    read_scaler_until(all_topics.as_ref(), "every topic of the group", lag as f64).await;
    // lagThreshold 1: at most one replica per partition, 3 of them, unless idle ones are allowed.
    read_scaler_until(with(&[("lagThreshold", "1")]).as_ref(), "capped", 3.0).await;
    read_scaler_until(
        with(&[("lagThreshold", "1"), ("allowIdleConsumers", "true")]).as_ref(),
        "not capped",
        lag as f64,
    )
    .await;
    // excludePersistentLag: the first read counts the lag; read again with no commit in
    // between, the partitions are stuck: out of the metric, still active.
    let persistent = with(&[
        ("excludePersistentLag", "true"),
        ("allowIdleConsumers", "true"),
    ]);
    let first = read_scaler(persistent.as_ref())
        .await
        .expect("a first read");
    assert_eq!(first.values[0].value, lag as f64);
    let second = read_scaler(persistent.as_ref())
        .await
        .expect("a second read");
    assert_eq!(
        second.values[0].value, 0.0,
        "no offset moved: persistent lag is left out"
    );
    assert!(
        second.active,
        "persistent lag still keeps the target active"
    );
    // apache-kafka reads the same lag.
    let apache = registry
        .build(&trigger("apache-kafka", &base, &[]))
        .expect("builds");
    read_scaler_until(apache.as_ref(), "apache-kafka", lag as f64).await;

    // Errors are errors: a topic that does not exist, a broker that does not answer.
    let mut missing = base.to_vec();
    let gone = format!("{topic}-gone");
    missing[2] = ("topic", gone.as_str());
    let err = read_scaler(
        registry
            .build(&trigger("kafka", &missing, &[]))
            .expect("builds")
            .as_ref(),
    )
    .await
    .expect_err("a missing topic");
    assert!(err.contains("does not exist"), "{err}");
    let dead = dead_address();
    let mut unreachable = base.to_vec();
    unreachable[0] = ("bootstrapServers", dead.as_str());
    read_scaler(
        registry
            .build(&trigger("kafka", &unreachable, &[]))
            .expect("builds")
            .as_ref(),
    )
    .await
    .expect_err("a dead broker");
}

/// A TriggerAuthentication's parameters.
type AuthParams<'a> = Vec<(&'a str, String)>;

#[tokio::test]
async fn sasl_and_tls_listeners_are_read_with_the_trigger_authentication_s_credentials() {
    let env = setup("kafka-auth").await;
    let c = env.cluster.clone();
    let topic = unique_name("secure");
    let group = unique_name("workers");
    let (b, t, g) = (c.kafka_bootstrap.clone(), topic.clone(), group.clone());
    tokio::task::spawn_blocking(move || {
        kafka_topic(&b, &t, 2);
        kafka_produce(&b, &t, 12);
        kafka_commit(&b, &g, &t, 1);
    })
    .await
    .expect("join");
    let (b, t) = (c.kafka_bootstrap.clone(), topic.clone());
    let latest = tokio::task::spawn_blocking(move || kafka_latest(&b, &t))
        .await
        .expect("join");
    let lag: i64 = latest.iter().map(|l| l - l.min(&1)).sum();
    let ca = std::fs::read_to_string(&c.tls_ca).expect("the dev CA");
    let cert = std::fs::read_to_string(&c.tls_client_cert).expect("the client certificate");
    let key = std::fs::read_to_string(&c.tls_client_key).expect("the client key");
    let (user, password) = c.kafka_user.clone();
    let registry = Registry::with_builtins();
    let cases: Vec<(&str, String, AuthParams)> = vec![
        (
            "SASL PLAIN",
            c.kafka_sasl_bootstrap.clone(),
            vec![
                ("sasl", "plaintext".into()),
                ("username", user.clone()),
                ("password", password.clone()),
            ],
        ),
        (
            "SCRAM-SHA-256",
            c.kafka_sasl_bootstrap.clone(),
            vec![
                ("sasl", "scram_sha256".into()),
                ("username", user.clone()),
                ("password", password.clone()),
            ],
        ),
        (
            "SCRAM-SHA-512 over TLS",
            c.kafka_sasl_tls_bootstrap.clone(),
            vec![
                ("sasl", "scram_sha512".into()),
                ("username", user.clone()),
                ("password", password.clone()),
                ("tls", "enable".into()),
                ("ca", ca.clone()),
            ],
        ),
        // The TLS listener requires a client certificate of the dev CA.
        (
            "TLS with a client certificate",
            c.kafka_tls_bootstrap.clone(),
            vec![
                ("tls", "enable".into()),
                ("ca", ca.clone()),
                ("cert", cert.clone()),
                ("key", key.clone()),
            ],
        ),
        (
            "TLS with a client key opened by keyPassword",
            c.kafka_tls_bootstrap.clone(),
            vec![
                ("tls", "enable".into()),
                ("ca", ca.clone()),
                ("cert", cert.clone()),
                ("key", encrypted_key(&key, "open-sesame")),
                ("keyPassword", "open-sesame".into()),
            ],
        ),
        // A JWT from the dev cluster's Ory Hydra (client credentials), which the broker checks
        // against Hydra's published keys and issuer.
        (
            "OAUTHBEARER",
            c.kafka_sasl_bootstrap.clone(),
            vec![
                ("sasl", "oauthbearer".into()),
                ("username", c.oauth_client.0.clone()),
                ("password", c.oauth_client.1.clone()),
                ("oauthTokenEndpointUri", c.oauth_token_url.clone()),
                ("scopes", "kafka".into()),
                ("oauthExtensions", "traceId=ebb-test".into()),
            ],
        ),
        (
            "OAUTHBEARER over TLS",
            c.kafka_sasl_tls_bootstrap.clone(),
            vec![
                ("sasl", "oauthbearer".into()),
                ("username", c.oauth_client.0.clone()),
                ("password", c.oauth_client.1.clone()),
                ("oauthTokenEndpointUri", c.oauth_token_url.clone()),
                ("tls", "enable".into()),
                ("ca", ca.clone()),
            ],
        ),
    ];
    for (what, bootstrap, auth) in &cases {
        let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let scaler = registry
            .build(&trigger(
                "kafka",
                &[
                    ("bootstrapServers", bootstrap),
                    ("consumerGroup", &group),
                    ("topic", &topic),
                ],
                &auth,
            ))
            .expect("builds");
        read_scaler_until(scaler.as_ref(), what, lag as f64).await;
    }
    // Without a client certificate the TLS listener refuses the connection: an error, not 0.
    let scaler = registry
        .build(&trigger(
            "kafka",
            &[
                ("bootstrapServers", &c.kafka_tls_bootstrap),
                ("consumerGroup", &group),
                ("topic", &topic),
            ],
            &[("tls", "enable"), ("ca", &ca)],
        ))
        .expect("builds");
    read_scaler(scaler.as_ref())
        .await
        .expect_err("no client certificate");
    // A wrong password is refused by the broker, and the error does not show it.
    let scaler = registry
        .build(&trigger(
            "kafka",
            &[
                ("bootstrapServers", &c.kafka_sasl_bootstrap),
                ("consumerGroup", &group),
                ("topic", &topic),
            ],
            &[
                ("sasl", "scram_sha256"),
                ("username", &user),
                ("password", "hunter2"),
            ],
        ))
        .expect("builds");
    let err = read_scaler(scaler.as_ref())
        .await
        .expect_err("a wrong password");
    assert!(err.contains("authentication"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // A wrong client secret is refused by the token endpoint: the read fails, naming the
    // endpoint's host and its OAuth error, never the secret.
    let scaler = registry
        .build(&trigger(
            "kafka",
            &[
                ("bootstrapServers", &c.kafka_sasl_bootstrap),
                ("consumerGroup", &group),
                ("topic", &topic),
            ],
            &[
                ("sasl", "oauthbearer"),
                ("username", &c.oauth_client.0),
                ("password", "hunter3"),
                ("oauthTokenEndpointUri", &c.oauth_token_url),
            ],
        ))
        .expect("builds");
    let err = read_scaler(scaler.as_ref())
        .await
        .expect_err("a wrong client secret");
    assert!(
        err.contains("OAUTHBEARER") && err.contains("invalid_client"),
        "{err}"
    );
    assert!(!err.contains("hunter3"), "{err}");
}
