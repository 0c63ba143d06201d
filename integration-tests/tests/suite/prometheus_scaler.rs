//! The `prometheus` scaler against the dev cluster's real Prometheus, which scrapes an exporter
//! whose series the test sets: a value below activation holds, above it is active, and what
//! KEDA treats as errors (two series, an empty result with `ignoreNullValues: false`, a bad
//! query, no server) is an error, never a 0.

use std::time::Duration;

use ebb_scalers::{MetricsAndActivity, Registry, Scaler, Trigger};
use integration_tests::{dead_address, ensure, eventually, setup, unique_name};

/// Long enough for a scrape (every second) and a query.
const DEADLINE: Duration = Duration::from_secs(30);

fn trigger(server: &str, query: &str, extra: &[(&str, &str)]) -> Trigger {
    let mut metadata: std::collections::BTreeMap<String, String> = [
        ("serverAddress", server),
        ("query", query),
        ("threshold", "5"),
        ("activationThreshold", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        metadata.insert(k.to_string(), v.to_string());
    }
    Trigger {
        index: 0,
        trigger_type: "prometheus".into(),
        metadata,
        ..Default::default()
    }
}

/// Sets series on the exporter Prometheus scrapes (`<series> <value>` lines).
pub(crate) async fn set(exporter: &str, lines: &str) {
    let response = reqwest::Client::new()
        .post(format!("{exporter}/set"))
        .body(lines.to_string())
        .send()
        .await
        .expect("the exporter answers");
    assert!(response.status().is_success(), "{}", response.status());
}

async fn poll(scaler: &dyn Scaler) -> Result<MetricsAndActivity, String> {
    let name = scaler.metric_specs()[0]
        .external_name()
        .expect("an external metric")
        .to_string();
    scaler
        .metrics_and_activity(&name)
        .await
        .map_err(|e| e.to_string())
}

/// Waits until the scaler reads `value` (Prometheus has scraped what the test set).
async fn until(scaler: &dyn Scaler, value: f64) -> MetricsAndActivity {
    eventually(&format!("prometheus reads {value}"), DEADLINE, || async {
        let got = poll(scaler).await?;
        ensure(got.values[0].value == value, || format!("{got:?}"))?;
        Ok(got)
    })
    .await
}

#[tokio::test]
async fn a_query_reads_the_scraped_value_and_errors_are_never_zero() {
    let env = setup("prometheus-scaler").await;
    let server = env.cluster.prometheus_url.clone();
    let exporter = env.cluster.prometheus_exporter_url.clone();
    let test = unique_name("depth").replace('-', "_");
    let series = |queue: &str| format!("ebb_test_queue_depth{{test=\"{test}\",queue=\"{queue}\"}}");
    let sum = format!("sum(ebb_test_queue_depth{{test=\"{test}\"}})");

    let registry = Registry::with_builtins();
    let scaler = registry
        .build(&trigger(&server, &sum, &[]))
        .expect("builds");
    assert_eq!(
        scaler.metric_specs()[0].external_name(),
        Some("s0-prometheus"),
        "KEDA's metric name"
    );

    // Nothing scraped yet: an empty result reads 0 (ignoreNullValues defaults to true).
    let got = poll(scaler.as_ref()).await.expect("an empty result");
    assert_eq!((got.values[0].value, got.active), (0.0, false));
    // ... and is an error when nulls are not ignored.
    let strict = registry
        .build(&trigger(&server, &sum, &[("ignoreNullValues", "false")]))
        .expect("builds");
    let err = poll(strict.as_ref()).await.expect_err("empty is an error");
    assert!(err.contains("prometheus"), "{err}");

    // Below activation, then above.
    set(&exporter, &format!("{} 2", series("orders"))).await;
    assert!(!until(scaler.as_ref(), 2.0).await.active);
    set(
        &exporter,
        &format!("{} 4\n{} 3", series("orders"), series("refunds")),
    )
    .await;
    assert!(until(scaler.as_ref(), 7.0).await.active);

    // Two series without an aggregation: an error naming the count, as in KEDA.
    let unaggregated = registry
        .build(&trigger(
            &server,
            &format!("ebb_test_queue_depth{{test=\"{test}\"}}"),
            &[],
        ))
        .expect("builds");
    let err = poll(unaggregated.as_ref())
        .await
        .expect_err("two series are an error");
    assert!(err.contains('2'), "{err}");

    // A query Prometheus refuses: its own reason, never a 0.
    let bad = registry
        .build(&trigger(&server, "sum(", &[]))
        .expect("builds");
    let err = poll(bad.as_ref()).await.expect_err("a bad query");
    assert!(
        err.contains("parse error") || err.contains("bad_data"),
        "{err}"
    );

    // No server there: an error within the timeout.
    let nobody = registry
        .build(&trigger(&format!("http://{}", dead_address()), &sum, &[]))
        .expect("builds");
    let started = tokio::time::Instant::now();
    poll(nobody.as_ref()).await.expect_err("nobody listens");
    assert!(started.elapsed() < Duration::from_secs(10));

    let _ = reqwest::Client::new()
        .post(format!("{exporter}/delete"))
        .body(format!("{}\n{}", series("orders"), series("refunds")))
        .send()
        .await;
}

/// The auth modes against the dev cluster's second Prometheus, which serves HTTPS only and
/// admits a request only with a client certificate of the dev CA and basic auth (Prometheus
/// itself checks no bearer token; the bearer mode's header is checked against a recording
/// server in the scaler's unit tests).
#[tokio::test]
async fn auth_modes_pass_a_prometheus_that_wants_a_client_certificate_and_basic_auth() {
    let env = setup("prometheus-auth").await;
    let c = &env.cluster;
    let test = unique_name("auth").replace('-', "_");
    let series = format!("ebb_test_queue_depth{{test=\"{test}\"}}");
    let query = format!("sum({series})");
    set(&c.prometheus_exporter_url, &format!("{series} 7")).await;
    let read = |path: &std::path::PathBuf| std::fs::read_to_string(path).expect("a dev TLS file");
    let (ca, cert, key) = (
        read(&c.tls_ca),
        read(&c.tls_client_cert),
        read(&c.tls_client_key),
    );
    let (user, password) = c.prometheus_secure_user.clone();
    let basic_value = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{user}:{password}")
        )
    );
    let registry = Registry::with_builtins();
    let build = |meta: &[(&str, &str)], auth: &[(&str, &str)]| {
        let mut t = trigger(&c.prometheus_secure_url, &query, meta);
        t.auth_params = auth
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        registry.build(&t).unwrap_or_else(|e| panic!("{e}"))
    };
    let tls = [
        ("ca", ca.as_str()),
        ("cert", cert.as_str()),
        ("key", key.as_str()),
    ];
    let with = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        tls.iter()
            .chain(extra.iter())
            .map(|(k, v)| (*k, v.to_string()))
            .collect()
    };
    let pairs = |v: &[(&'static str, String)]| -> Vec<(&'static str, String)> { v.to_vec() };
    fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        v.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    // tls + basic, and tls + custom (the same credentials as a header of the user's own).
    let basic = with(&[("username", &user), ("password", &password)]);
    let custom = with(&[
        ("customAuthHeader", "Authorization"),
        ("customAuthValue", &basic_value),
    ]);
    for (modes, auth) in [("tls,basic", &basic), ("tls,custom", &custom)] {
        let scaler = build(&[("authModes", modes)], &as_refs(auth));
        until(scaler.as_ref(), 7.0).await;
    }
    // 200 triggers with the same TLS settings share one client: Prometheus's own count of the
    // connections its listener accepted (it scrapes itself, job `self`) grows by a handful at
    // most while they are polled three times over.
    let accepted = "sum(net_conntrack_listener_conn_accepted_total{job=\"self\"})";
    let scraped_at = "max(timestamp(net_conntrack_listener_conn_accepted_total{job=\"self\"}))";
    let meter = |query: &str| {
        let mut t = trigger(
            &c.prometheus_secure_url,
            query,
            &[("authModes", "tls,basic")],
        );
        t.auth_params = as_refs(&basic)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        registry.build(&t).unwrap_or_else(|e| panic!("{e}"))
    };
    let (count, stamp) = (meter(accepted), meter(scraped_at));
    // The count as scraped after `after` (Unix seconds).
    let accepted_since = |after: f64| {
        let (count, stamp) = (&count, &stamp);
        async move {
            eventually("a scrape after the mark", DEADLINE, || async {
                let at = poll(stamp.as_ref()).await?.values[0].value;
                ensure(at > after, || {
                    format!("last scrape at {at}, waiting for {after}")
                })?;
                Ok(poll(count.as_ref()).await?.values[0].value)
            })
            .await
        }
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock")
            .as_secs_f64()
    };
    let many: Vec<_> = (0..200)
        .map(|_| build(&[("authModes", "tls,basic")], &as_refs(&basic)))
        .collect();
    let before = accepted_since(now()).await;
    for _ in 0..3 {
        for scaler in &many {
            assert_eq!(
                poll(scaler.as_ref()).await.expect("reads").values[0].value,
                7.0
            );
        }
    }
    let after = accepted_since(now()).await;
    println!(
        "Prometheus accepted {} connections for 600 polls of 200 triggers",
        after - before
    );
    assert!(
        after - before <= 4.0,
        "Prometheus accepted {} connections for 600 polls of 200 triggers",
        after - before
    );
    drop(many);

    // unsafeSsl: the server's certificate is not checked (no CA given); the client's is sent.
    let unchecked = pairs(&[
        ("cert", cert.clone()),
        ("key", key.clone()),
        ("username", user.clone()),
        ("password", password.clone()),
    ]);
    let scaler = build(
        &[("authModes", "tls,basic"), ("unsafeSsl", "true")],
        &as_refs(&unchecked),
    );
    until(scaler.as_ref(), 7.0).await;

    // What Prometheus refuses is an error naming the server, never a 0: a wrong password, no
    // client certificate, and an unknown CA without unsafeSsl.
    let wrong = with(&[("username", &user), ("password", "not-the-password")]);
    let err = poll(build(&[("authModes", "tls,basic")], &as_refs(&wrong)).as_ref())
        .await
        .expect_err("a wrong password");
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    let no_cert = pairs(&[
        ("ca", ca.clone()),
        ("username", user.clone()),
        ("password", password.clone()),
    ]);
    poll(build(&[("authModes", "basic")], &as_refs(&no_cert)).as_ref())
        .await
        .expect_err("no client certificate");
    poll(build(&[("authModes", "tls,basic")], &as_refs(&unchecked)).as_ref())
        .await
        .expect_err("the server's certificate is not trusted without the CA");

    let _ = reqwest::Client::new()
        .post(format!("{}/delete", c.prometheus_exporter_url))
        .body(series)
        .send()
        .await;
}
