//! ebb's external metrics API behind the real apiserver's aggregation layer, read by the real
//! HPA controller: discovery, live values through `kubectl get --raw` (a cron trigger outside its
//! window reads 0), a Deployment taken
//! 0 -> 1 by ebb, 1 -> 8 by the HPA on ebb's metric (a redis list, a rabbitmq queue over AMQP
//! and the management API) and back; errors and refusals as
//! Kubernetes Status objects; fallback values served while Redis is down.

use std::sync::Arc;
use std::time::Duration;

use ebb_crds::ScaledObject;
use integration_tests::{
    METRICS_API_PORT, TestEnv, deployment, ensure, eventually, expect_success, setup, unique_name,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(90);

fn raw(env: &TestEnv, path: &str) -> Result<Value, String> {
    let out = env.kubectl(&["get", "--raw", path]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn metric_path(env: &TestEnv, metric: &str, so: &str) -> String {
    format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3D{so}",
        env.namespace
    )
}

fn redis_scaled_object(env: &TestEnv, name: &str, list: &str, extra: Value) -> Value {
    let mut spec = json!({
        "scaleTargetRef": {"name": name},
        "pollingInterval": 1,
        "cooldownPeriod": 2,
        "minReplicaCount": 0,
        "maxReplicaCount": 10,
        "triggers": [{"type": "redis", "metadata": {
            "address": env.redis_address(),
            "databaseIndex": "7",
            "listName": list,
            "listLength": "5"
        }}]
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": spec
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hpa_scales_on_ebbs_metric_through_the_aggregator() {
    let env = setup("metrics-api-e2e").await;
    let ebb = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb).await;

    // Discovery, as kubectl and the HPA see it.
    let resources = raw(&env, "/apis/external.metrics.k8s.io/v1beta1").expect("discovery");
    assert_eq!(
        resources["resources"][0]["name"], "externalmetrics",
        "{resources}"
    );
    assert_eq!(resources["resources"][0]["namespaced"], true);

    let mut redis = env.redis(7).await;
    let list = unique_name("jobs");
    env.create::<Deployment>(serde_json::to_value(deployment("worker", 0, &[])).expect("json"))
        .await;
    env.create::<ScaledObject>(redis_scaled_object(&env, "worker", &list, json!({})))
        .await;
    let metric = format!("s0-redis-{list}");

    // The live list length, through the aggregator.
    redis.push(&list, 3).await;
    eventually(
        "kubectl get --raw reads the list length",
        DEADLINE,
        || async {
            let value = raw(&env, &metric_path(&env, &metric, "worker"))?;
            ensure(value["items"][0]["value"] == "3", || value.to_string())
        },
    )
    .await;

    // A cron trigger outside its window reads 0, as in KEDA, not one replica's worth (which a
    // metricType Value or a scalingModifiers formula would see).
    env.create::<Deployment>(serde_json::to_value(deployment("nightly", 0, &[])).expect("json"))
        .await;
    env.create::<ScaledObject>(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "nightly"},
        "spec": {
            "scaleTargetRef": {"name": "nightly"},
            "pollingInterval": 1,
            "triggers": [{"type": "cron", "metadata": {
                "timezone": "Etc/UTC",
                "start": "0 0 1 1 *",
                "end": "0 1 1 1 *",
                "desiredReplicas": "3"
            }}]
        }
    }))
    .await;
    eventually(
        "kubectl get --raw reads 0 outside the cron window",
        DEADLINE,
        || async {
            let value = raw(
                &env,
                &metric_path(&env, "s0-cron-Etc-UTC-0011x-0111x", "nightly"),
            )?;
            ensure(value["items"][0]["value"] == "0", || value.to_string())
        },
    )
    .await;

    // 40 items, listLength 5: ebb takes the Deployment 0 -> 1, the HPA 1 -> 8.
    redis.push(&list, 37).await;
    env.await_replicas(
        "worker",
        "the HPA scales to 8 on ebb's metric",
        DEADLINE,
        |n| n == 8,
    )
    .await;
    // At 8 replicas the HPA reads 40 / 8 = 5 per replica: on target.
    eventually("the HPA reads 5 per replica", DEADLINE, || async {
        let hpa = env
            .api::<HorizontalPodAutoscaler>()
            .get("keda-hpa-worker")
            .await
            .map_err(|e| e.to_string())?;
        let current = serde_json::to_value(hpa.status.and_then(|s| s.current_metrics))
            .map_err(|e| e.to_string())?;
        ensure(
            current[0]["external"]["current"]["averageValue"] == "5",
            || current.to_string(),
        )
    })
    .await;
    assert_eq!(env.replicas("worker").await, Ok(8));

    // Drained: the HPA takes it to 1, then ebb to 0 after the cooldown.
    redis.del(&[&list]).await;
    env.await_replicas("worker", "back to zero", DEADLINE, |n| n == 0)
        .await;
    env.delete_scaled_objects().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_refusals_are_kubernetes_statuses() {
    let env = setup("metrics-api-refusals").await;
    let ebb = env.start_ebb();
    let api = env.serve_metrics_api(&ebb).await;
    let list = unique_name("jobs");
    env.create::<Deployment>(serde_json::to_value(deployment("worker", 1, &[])).expect("json"))
        .await;
    env.create::<ScaledObject>(redis_scaled_object(&env, "worker", &list, json!({})))
        .await;
    let metric = format!("s0-redis-{list}");
    eventually("the metric is served", DEADLINE, || async {
        let value = raw(&env, &metric_path(&env, &metric, "worker"))?;
        ensure(value["items"][0]["value"] == "0", || value.to_string())
    })
    .await;

    // Through the aggregator: unknown metric or object, bad selector.
    for (path, code) in [
        (metric_path(&env, "s9-nothing", "worker"), "NotFound"),
        (metric_path(&env, &metric, "nobody"), "NotFound"),
        (
            format!(
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/no-such-namespace/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3Dworker"
            ),
            "NotFound",
        ),
        (
            format!(
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/{metric}?labelSelector=app%3Dx",
                env.namespace
            ),
            "BadRequest",
        ),
    ] {
        let err = raw(&env, &path).expect_err("refused");
        assert!(err.contains(&format!("({code})")), "{path}: {err}");
    }

    // A user the apiserver authenticates but RBAC does not let read external metrics.
    let out = env.kubectl(&[
        "get",
        "--raw",
        &metric_path(&env, &metric, "worker"),
        "--as=system:serviceaccount:default:nobody",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Forbidden") || stderr.contains("forbidden"),
        "{stderr}"
    );

    // Directly on the port: TLS verified against the generated CA.
    let https = |identity: Option<(String, String)>| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in ebb_operator::metrics_api::tls::pem_certificates(&api.ca_pem, "ca").expect("ca")
        {
            roots.add(cert).expect("root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                use rustls::pki_types::pem::PemObject;
                let chain =
                    ebb_operator::metrics_api::tls::pem_certificates(&cert, "cert").expect("cert");
                let key =
                    rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client cert")
            }
        };
        reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .build()
            .expect("client")
    };
    let url = format!(
        "https://127.0.0.1:{METRICS_API_PORT}{}",
        metric_path(&env, &metric, "worker")
    );
    // TLS 1.2 and 1.3 only: a client offering TLS 1.1 alone (allowed to by SECLEVEL=0) gets
    // an alert from the server and no cipher, not a refusal of its own.
    for (flag, refused) in [("-tls1_1", true), ("-tls1_2", false), ("-tls1_3", false)] {
        let out = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{METRICS_API_PORT}"),
                flag,
            ])
            .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl s_client");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let alerted = text.contains("SSL alert number");
        let version = flag.trim_start_matches("-tls").replace('_', ".");
        let negotiated = text.contains(&format!("New, TLSv{version}, Cipher is "));
        assert!(
            if refused {
                alerted && !negotiated
            } else {
                negotiated && !alerted
            },
            "openssl s_client {flag}: {text}"
        );
    }
    // No certificate, no token: 401.
    let response = https(None).get(&url).send().await.expect("request");
    assert_eq!(response.status().as_u16(), 401);
    let status: Value = response.json().await.expect("Status");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");
    // X-Remote-User without the front proxy's certificate is not believed.
    let response = https(None)
        .get(&url)
        .header("X-Remote-User", "system:admin")
        .header("X-Remote-Group", "system:masters")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 401);
    // A client certificate from another CA: the handshake fails.
    let other_key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "front-proxy-client");
    let other = params.self_signed(&other_key).expect("cert");
    let refused = https(Some((other.pem(), other_key.serialize_pem())))
        .get(&url)
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a foreign client certificate was accepted: {refused:?}"
    );
    // A ServiceAccount token: 403 without rights, the value with them.
    let sa = unique_name("reader");
    expect_success(
        &env.kubectl(&["create", "serviceaccount", &sa]),
        "serviceaccount",
    );
    let token = expect_success(&env.kubectl(&["create", "token", &sa]), "token");
    let token = token.trim();
    let response = https(None)
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 403);
    let status: Value = response.json().await.expect("Status");
    assert_eq!(status["reason"], "Forbidden");
    expect_success(
        &env.kubectl(&[
            "create",
            "role",
            &sa,
            "--verb=get,list",
            "--resource=*.external.metrics.k8s.io",
        ]),
        "role",
    );
    expect_success(
        &env.kubectl(&[
            "create",
            "rolebinding",
            &sa,
            &format!("--role={sa}"),
            &format!("--serviceaccount={}:{sa}", env.namespace),
        ]),
        "rolebinding",
    );
    eventually(
        "the token reads the metric once allowed",
        DEADLINE,
        || async {
            let response = https(None)
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let code = response.status().as_u16();
            let body: Value = response.json().await.map_err(|e| e.to_string())?;
            ensure(code == 200 && body["items"][0]["value"] == "0", || {
                format!("{code} {body}")
            })
        },
    )
    .await;
    // A huge query string is refused cleanly, and the server keeps serving.
    let huge = format!("{url}&pad={}", "x".repeat(8192));
    let response = https(None)
        .get(&huge)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert!(
        matches!(response.status().as_u16(), 400 | 414 | 431),
        "{}",
        response.status()
    );
    let value = raw(&env, &metric_path(&env, &metric, "worker")).expect("still serving");
    assert_eq!(value["items"][0]["value"], "0");
    env.delete_scaled_objects().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fallback_the_hpa_sees_an_error_with_fallback_the_fallback_value() {
    let env = setup("metrics-api-outage").await;
    let ebb = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb).await;
    // Nothing listens on this address: every read fails.
    let dead = integration_tests::dead_address();
    for (name, extra, metric_type) in [
        ("plain", json!({}), "AverageValue"),
        (
            "with-fallback",
            json!({"fallback": {"failureThreshold": 1, "replicas": 4}}),
            "AverageValue",
        ),
        // As KEDA since 2.18: fallback with a Value metric.
        (
            "value-fallback",
            json!({"fallback": {"failureThreshold": 1, "replicas": 4}}),
            "Value",
        ),
    ] {
        env.create::<Deployment>(serde_json::to_value(deployment(name, 2, &[])).expect("json"))
            .await;
        let mut so = redis_scaled_object(&env, name, "jobs", extra);
        so["spec"]["triggers"][0]["metadata"]["address"] = json!(dead);
        so["spec"]["triggers"][0]["metricType"] = json!(metric_type);
        env.create::<ScaledObject>(so).await;
    }
    // Without fallback: the API answers an error, the HPA says it cannot read the metric, and
    // the target stays where it was.
    eventually("the HPA reports the failed metric", DEADLINE, || async {
        let hpa = env
            .api::<HorizontalPodAutoscaler>()
            .get("keda-hpa-plain")
            .await
            .map_err(|e| e.to_string())?;
        let conditions = hpa.status.and_then(|s| s.conditions).unwrap_or_default();
        let active = conditions.iter().find(|c| c.type_ == "ScalingActive");
        ensure(
            active.is_some_and(|c| {
                c.status == "False" && c.reason.as_deref() == Some("FailedGetExternalMetric")
            }),
            || format!("{active:?}"),
        )
    })
    .await;
    let err = raw(&env, &metric_path(&env, "s0-redis-jobs", "plain")).expect_err("an error");
    assert!(err.contains(&dead) || err.contains("unable"), "{err}");
    assert_eq!(env.replicas("plain").await, Ok(2));
    // With fallback: the HPA converges on fallback.replicas.
    for name in ["with-fallback", "value-fallback"] {
        env.await_replicas(
            name,
            "the HPA converges on fallback.replicas",
            DEADLINE,
            |n| n == 4,
        )
        .await;
    }
    assert_eq!(env.replicas("plain").await, Ok(2));
    env.delete_scaled_objects().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hpa_scales_on_a_rabbitmq_queue_over_amqp_and_http() {
    let env = setup("metrics-api-rabbitmq").await;
    let ebb = env.start_ebb();
    let _api = env.serve_metrics_api(&ebb).await;
    let amqp = env.amqp().await;
    for (protocol, host) in [
        ("amqp", env.cluster.rabbitmq_amqp_url.clone()),
        ("http", format!("{}/", env.cluster.rabbitmq_management_url)),
    ] {
        let queue = unique_name(&format!("orders-{protocol}"));
        amqp.declare(&queue).await;
        let worker = format!("worker-{protocol}");
        env.create::<Deployment>(serde_json::to_value(deployment(&worker, 0, &[])).expect("json"))
            .await;
        env.create::<ScaledObject>(json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": worker},
            "spec": {
                "scaleTargetRef": {"name": worker},
                "pollingInterval": 1,
                "cooldownPeriod": 2,
                "maxReplicaCount": 10,
                "triggers": [{"type": "rabbitmq", "metadata": {
                    "host": host, "protocol": protocol, "queueName": queue,
                    "mode": "QueueLength", "value": "5"
                }}]
            }
        }))
        .await;
        // 40 messages, 5 per replica: ebb 0 -> 1, the HPA 1 -> 8.
        amqp.publish(&queue, 40).await;
        env.await_replicas(
            &worker,
            &format!("{protocol}: the HPA scales to 8"),
            DEADLINE,
            |n| n == 8,
        )
        .await;
        let value = raw(
            &env,
            &metric_path(&env, &format!("s0-rabbitmq-{queue}"), &worker),
        )
        .expect("the queue depth through the aggregator");
        assert_eq!(value["items"][0]["value"], "40", "{value}");
        amqp.purge(&queue).await;
        env.await_replicas(
            &worker,
            &format!("{protocol}: back to zero"),
            DEADLINE,
            |n| n == 0,
        )
        .await;
    }
    env.delete_scaled_objects().await;
}
