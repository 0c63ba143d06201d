//! `redis` and `redis-streams` over TLS against the dev cluster's TLS-only Redis: a CA from the
//! auth parameter `ca`, a client certificate, `unsafeSsl`, and clear errors when one side speaks
//! TLS and the other does not or the certificate is not trusted.

use std::collections::BTreeMap;
use std::time::Duration;

use ebb_scalers::{MetricSpec, MetricTargetType, Registry, Scaler, Trigger};
use integration_tests::{setup, unique_name};

fn trigger(trigger_type: &str, meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Trigger {
    let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Trigger {
        index: 0,
        trigger_type: trigger_type.into(),
        metadata: map(meta),
        auth_params: map(auth),
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

/// The error of one poll, which must come within the timeout.
async fn poll_error(scaler: &dyn Scaler) -> String {
    let name = scaler.metric_specs()[0]
        .external_name()
        .expect("external")
        .to_string();
    let outcome =
        tokio::time::timeout(Duration::from_secs(15), scaler.metrics_and_activity(&name)).await;
    outcome
        .expect("answers, never hangs")
        .expect_err("an error, never a zero")
        .to_string()
}

#[tokio::test]
async fn lists_over_tls_with_the_ca_from_the_trigger_authentication() {
    let env = setup("redis-tls-lists").await;
    let addr = env.cluster.redis_tls_address.clone();
    let ca = std::fs::read_to_string(&env.cluster.tls_ca).expect("CA");
    let mut c = redis::Client::build_with_tls(
        format!("rediss://{addr}/0"),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone().into_bytes()),
        },
    )
    .expect("client")
    .get_multiplexed_async_connection()
    .await
    .expect("TLS connect");
    let list = unique_name("tls");
    let scaler = Registry::with_builtins()
        .build(&trigger(
            "redis",
            &[
                ("address", &addr),
                ("listName", &list),
                ("activationListLength", "2"),
            ],
            &[("tls", "enable"), ("ca", &ca)],
        ))
        .expect("builds");
    assert_eq!(
        scaler.metric_specs(),
        vec![MetricSpec::External {
            name: format!("s0-redis-{list}"),
            target: 5.0,
            target_type: MetricTargetType::AverageValue,
        }]
    );
    assert_eq!(read(&*scaler).await, (0.0, false));
    let _: i64 = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["a", "b"])
        .query_async(&mut c)
        .await
        .expect("RPUSH");
    assert_eq!(read(&*scaler).await, (2.0, false));
    let _: i64 = redis::cmd("RPUSH")
        .arg(&list)
        .arg(&["c", "d", "e", "f"])
        .query_async(&mut c)
        .await
        .expect("RPUSH");
    assert_eq!(read(&*scaler).await, (6.0, true));

    // With a client certificate (metadata enableTLS), and with unsafeSsl and no CA at all.
    let cert = std::fs::read_to_string(&env.cluster.tls_client_cert).expect("cert");
    let key = std::fs::read_to_string(&env.cluster.tls_client_key).expect("key");
    let mtls = Registry::with_builtins()
        .build(&trigger(
            "redis-streams",
            &[("address", &addr), ("enableTLS", "true"), ("stream", &list)],
            &[("ca", &ca), ("cert", &cert), ("key", &key)],
        ))
        .expect("builds");
    // The key holds a list, not a stream: the server's WRONGTYPE proves the query got through.
    assert!(poll_error(&*mtls).await.contains("WRONGTYPE"));
    let insecure = Registry::with_builtins()
        .build(&trigger(
            "redis",
            &[
                ("address", &addr),
                ("enableTLS", "true"),
                ("unsafeSsl", "true"),
                ("listName", &list),
            ],
            &[],
        ))
        .expect("builds");
    assert_eq!(read(&*insecure).await, (6.0, true));

    // keyPassword: the client key, encrypted (PKCS#8), opened with its password.
    let encrypted = integration_tests::encrypted_key(&key, "open-sesame");
    let with_password = Registry::with_builtins()
        .build(&trigger(
            "redis",
            &[("address", &addr), ("listName", &list)],
            &[
                ("tls", "enable"),
                ("ca", &ca),
                ("cert", &cert),
                ("key", &encrypted),
                ("keyPassword", "open-sesame"),
            ],
        ))
        .expect("builds");
    assert_eq!(read(&*with_password).await, (6.0, true));
}

#[tokio::test]
async fn tls_mismatches_and_untrusted_certificates_are_errors() {
    let env = setup("redis-tls-mismatch").await;
    let tls_addr = env.cluster.redis_tls_address.clone();
    let plain_addr = env
        .cluster
        .redis_url
        .trim_start_matches("redis://")
        .to_string();
    let ca = std::fs::read_to_string(&env.cluster.tls_ca).expect("CA");
    let registry = Registry::with_builtins();
    let cases = [
        // TLS to a server that speaks plain RESP.
        (
            trigger(
                "redis",
                &[
                    ("address", &plain_addr),
                    ("enableTLS", "true"),
                    ("listName", "l"),
                ],
                &[("ca", &ca)],
            ),
            format!("redis {plain_addr}"),
        ),
        // Plain RESP to a TLS-only server.
        (
            trigger("redis", &[("address", &tls_addr), ("listName", "l")], &[]),
            format!("redis {tls_addr}"),
        ),
        // TLS with the system roots, which do not include the dev cluster's CA.
        (
            trigger(
                "redis",
                &[("address", &tls_addr), ("listName", "l")],
                &[("tls", "enable"), ("password", "hunter2")],
            ),
            format!("redis {tls_addr}"),
        ),
    ];
    for (t, prefix) in cases {
        let scaler = registry.build(&t).expect("builds");
        let err = poll_error(&*scaler).await;
        eprintln!("{err}");
        assert!(err.starts_with(&prefix), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
