//! The validating admission webhook on the real apiserver: the apiserver calls ebb's webhook
//! (in this process, on a loopback port) through a `url` clientConfig, and `kubectl apply`
//! prints the refusal. Each check: the refused manifest, the exact line kubectl prints, and the
//! accepted manifest beside it. A webhook configuration of this test's own, limited to its
//! namespace, so the tests beside it are not checked; its caBundle is set by the server from
//! its generated certificate, as `ebb run --validating-webhook-configuration` does.
//!
//! Also: an object stored while no webhook answered (failurePolicy Ignore) is reported at
//! reconcile, Ready=False and an Event, with the same message.

use std::sync::Arc;
use std::time::Duration;

use ebb_operator::admin::Metrics;
use ebb_operator::admission::server::{Caches, Settings, shared_certificate, start};
use integration_tests::{
    TestEnv, deployment as deployment_of, ensure, eventually, expect_success, free_port, setup,
};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);
/// The webhook's name in this test's configuration, as kubectl names it in a refusal.
const WEBHOOK: &str = "validate.ebb.keda.sh";

/// This test's ValidatingWebhookConfiguration: every keda.sh kind but the cluster-scoped one
/// (a namespaceSelector does not limit that), in this test's namespace only.
fn configuration(env: &TestEnv, name: &str, port: u16, failure_policy: &str) -> serde_json::Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": WEBHOOK,
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate")},
            "rules": [{
                "apiGroups": ["keda.sh"],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["scaledobjects", "scaledjobs", "triggerauthentications"],
                "scope": "Namespaced"
            }],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": env.namespace}},
            "matchConditions": [{"name": "spec-written", "expression": ebb_operator::admission::SPEC_WRITTEN}],
            "failurePolicy": failure_policy,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5
        }]
    })
}

/// This test's configuration. A test that fails leaves it behind, harmless: it matches only
/// the test's namespace, which is deleted.
struct Registered {
    api: Api<ValidatingWebhookConfiguration>,
    name: String,
}

impl Registered {
    async fn remove(self) {
        let _ = self.api.delete(&self.name, &DeleteParams::default()).await;
    }
}

async fn register(env: &TestEnv, port: u16, failure_policy: &str) -> Registered {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(env.client.clone());
    let name = format!("ebb-test-{}", env.namespace);
    let object: ValidatingWebhookConfiguration =
        serde_json::from_value(configuration(env, &name, port, failure_policy))
            .expect("a configuration");
    api.create(&PostParams::default(), &object)
        .await
        .expect("the webhook configuration");
    Registered { api, name }
}

/// Starts the webhook in this process on `port`, watching this test's namespace.
async fn serve_webhook(
    env: &TestEnv,
    port: u16,
    configuration: &str,
    metrics: Arc<Metrics>,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let caches = Caches::start(&env.client, Some(&env.namespace));
    let (server, _) = start(
        env.client.clone(),
        ebb_scalers::Registry::with_builtins(),
        metrics,
        caches,
        Settings {
            addr: format!("127.0.0.1:{port}").parse().expect("an address"),
            cert_and_key: None,
            names: vec!["127.0.0.1".into()],
            shared_secret: Some((env.namespace.clone(), "ebb-webhook-tls".into())),
            webhook_configuration: Some(configuration.to_string()),
        },
        async {
            let _ = stopped.await;
        },
    )
    .await
    .expect("the webhook starts");
    tokio::spawn(server);
    stop
}

/// `kubectl apply` of `manifest` (YAML); its stderr on refusal, `Ok` when applied.
fn apply(env: &TestEnv, manifest: &str, dry_run: bool) -> Result<(), String> {
    let mut args = vec!["apply", "-f", "-"];
    if dry_run {
        args.push("--dry-run=server");
    }
    let out = env.kubectl_with_stdin(&args, Some(manifest));
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The line kubectl prints when the webhook refuses an object created from stdin.
fn refusal(message: &str) -> String {
    format!(
        "Error from server (Forbidden): error when creating \"STDIN\": admission webhook \"{WEBHOOK}\" denied the request: {message}"
    )
}

/// The line kubectl prints when a CRD's CEL rule refuses an object created from stdin: the
/// apiserver checks these before any webhook, even while ebb is down.
fn invalid(kind: &str, name: &str, field: &str, message: &str) -> String {
    format!("The {kind} \"{name}\" is invalid: {field}: Invalid value: \"object\": {message}")
}

fn scaled_object(name: &str, target: &str, extra: &str, triggers: &str) -> String {
    format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: {name}\n{extra}spec:\n  scaleTargetRef: {{name: {target}}}\n  triggers: {triggers}\n"
    )
}

fn scaled_job(name: &str, triggers: &str) -> String {
    format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {{name: {name}}}\nspec:\n  jobTargetRef: {{template: {{spec: {{containers: [{{name: w, image: w}}], restartPolicy: Never}}}}}}\n  triggers: {triggers}\n"
    )
}

const REDIS: &str = "[{type: redis, metadata: {address: 'redis.invalid:6379', listName: q}}]";

fn deployment(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: app, image: example.invalid/app:1, resources: {resources}}}]}}\n"
    )
}

// kubectl runs blocking on the test's thread while the webhook answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_objects_are_refused_at_apply_with_the_reason_and_good_ones_pass() {
    let env = setup("admission-webhook").await;
    let port = free_port();
    let registered = register(&env, port, "Fail").await;
    let metrics = Arc::new(Metrics::default());
    let _stop = serve_webhook(&env, port, &registered.name, metrics.clone()).await;

    // The webhook answers once its caches are full: wait for the first refusal.
    let typo = scaled_object(
        "typo",
        "typo",
        "",
        "[{type: redis, metadata: {address: 'redis.invalid:6379', listName: q, listLength: ten}}]",
    );
    let expected = refusal("trigger 0 (redis): listLength: expected a number, got \"ten\"");
    eventually("the webhook refuses a typo", DEADLINE, || async {
        let got = apply(&env, &typo, false);
        ensure(got.as_ref().err() == Some(&expected), || format!("{got:?}"))
    })
    .await;
    // The certificate is shared through a Secret: another replica starting reads the same one,
    // and the configuration's caBundle is its CA.
    let again = shared_certificate(
        &env.client,
        &env.namespace,
        "ebb-webhook-tls",
        &["127.0.0.1".into()],
    )
    .await
    .expect("the shared certificate");
    let configured = registered
        .api
        .get(&registered.name)
        .await
        .expect("the configuration")
        .webhooks
        .and_then(|w| w.into_iter().next())
        .and_then(|w| w.client_config.ca_bundle)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    assert_eq!(configured.as_deref(), Some(again.ca.as_str()));
    // A server-side dry run shows the same refusal; the fixed manifest passes.
    assert_eq!(apply(&env, &typo, true), Err(expected));
    assert_eq!(
        apply(&env, &scaled_object("typo", "typo", "", REDIS), false),
        Ok(())
    );

    // Each check: (what, refused manifest, the line kubectl prints, accepted manifest). A CRD
    // rule refuses before the webhook is asked; its line is the apiserver's.
    let cases: Vec<(&str, String, String, String)> = vec![
        (
            "replica bounds",
            scaled_object("bounds", "bounds", "", REDIS).replace(
                "  triggers:",
                "  minReplicaCount: 5\n  maxReplicaCount: 2\n  triggers:",
            ),
            invalid("ScaledObject", "bounds", "spec", "minReplicaCount must be less than or equal to maxReplicaCount"),
            scaled_object("bounds", "bounds", "", REDIS).replace(
                "  triggers:",
                "  minReplicaCount: 2\n  maxReplicaCount: 5\n  triggers:",
            ),
        ),
        (
            "idleReplicaCount below minReplicaCount",
            scaled_object("idle", "idle", "", REDIS).replace(
                "  triggers:",
                "  idleReplicaCount: 2\n  minReplicaCount: 2\n  triggers:",
            ),
            invalid("ScaledObject", "idle", "spec.idleReplicaCount", "idleReplicaCount must be less than minReplicaCount (0 when unset)"),
            scaled_object("idle", "idle", "", REDIS).replace(
                "  triggers:",
                "  idleReplicaCount: 0\n  minReplicaCount: 2\n  triggers:",
            ),
        ),
        (
            "a fallback on cpu alone",
            scaled_object("fallback", "fallback", "", "[{type: cpu, metricType: Utilization, metadata: {value: '50'}}]")
                .replace("  triggers:", "  minReplicaCount: 1\n  fallback: {failureThreshold: 3, replicas: 2}\n  triggers:"),
            invalid("ScaledObject", "fallback", "spec.fallback", "fallback needs at least one trigger other than cpu or memory"),
            scaled_object("fallback", "fallback", "", REDIS)
                .replace("  triggers:", "  fallback: {failureThreshold: 3, replicas: 2}\n  triggers:"),
        ),
        (
            "a metricType",
            scaled_object("metric-type", "metric-type", "", "[{type: redis, metricType: Average, metadata: {address: 'r:6379', listName: q}}]"),
            // A schema error stops the CEL rules; the apiserver says so on a line of its own.
            "The ScaledObject \"metric-type\" is invalid: \n* spec.triggers[0].metricType: Unsupported value: \"Average\": supported values: \"\", \"AverageValue\", \"Value\", \"Utilization\"\n* <nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
            scaled_object("metric-type", "metric-type", "", "[{type: redis, metricType: Value, metadata: {address: 'r:6379', listName: q}}]"),
        ),
        (
            "a ScaledJob's replica bounds",
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: bounded}\nspec:\n  minReplicaCount: 3\n  maxReplicaCount: 2\n  jobTargetRef: {template: {spec: {containers: [{name: w, image: w}], restartPolicy: Never}}}\n  triggers: [{type: redis, metadata: {address: 'r:6379', listName: q}}]\n".into(),
            invalid("ScaledJob", "bounded", "spec", "minReplicaCount must be less than or equal to maxReplicaCount"),
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: bounded}\nspec:\n  minReplicaCount: 2\n  maxReplicaCount: 2\n  jobTargetRef: {template: {spec: {containers: [{name: w, image: w}], restartPolicy: Never}}}\n  triggers: [{type: redis, metadata: {address: 'r:6379', listName: q}}]\n".into(),
        ),
        (
            "one ScaledObject per workload",
            scaled_object("typo-2", "typo", "", REDIS),
            refusal("spec.scaleTargetRef: Deployment \"typo\" is already scaled by ScaledObject \"typo\"; expected one ScaledObject per workload"),
            scaled_object("typo-2", "other", "", REDIS),
        ),
        (
            "unique HPA names",
            scaled_object("named", "named", "", REDIS).replace(
                "  triggers:",
                "  advanced: {horizontalPodAutoscalerConfig: {name: keda-hpa-typo}}\n  triggers:",
            ),
            refusal("spec.advanced.horizontalPodAutoscalerConfig.name: the HPA name \"keda-hpa-typo\" is already used by ScaledObject \"typo\"; expected an HPA name no other ScaledObject uses"),
            scaled_object("named", "named", "", REDIS).replace(
                "  triggers:",
                "  advanced: {horizontalPodAutoscalerConfig: {name: named-hpa}}\n  triggers:",
            ),
        ),
        (
            "names within 63 characters",
            scaled_object(&"n".repeat(64), "long", "", REDIS),
            refusal("metadata.name: 64 characters; expected at most 63, since the name is the value of the label scaledobject.keda.sh/name on its HPA"),
            scaled_object(&"n".repeat(54), "long", "", REDIS),
        ),
        (
            "an HPA name within 63 characters",
            scaled_object(&"h".repeat(55), "hpa-long", "", REDIS),
            refusal(&format!("metadata.name: the HPA name \"keda-hpa-{}\" has 64 characters; expected at most 63", "h".repeat(55))),
            scaled_object(&"h".repeat(54), "hpa-long", "", REDIS),
        ),
        (
            "a ScaledJob's name within 63 characters",
            scaled_job(&"j".repeat(64), REDIS),
            refusal("metadata.name: 64 characters; expected at most 63, since the name is the value of a label on each of its Jobs"),
            scaled_job(&"j".repeat(63), REDIS),
        ),
        (
            "a ScaledJob's metricType",
            scaled_job("typed", "[{type: redis, metricType: Value, metadata: {address: 'r:6379', listName: q}}]"),
            refusal("spec.triggers[0].metricType: cannot be set in ScaledJob triggers (a ScaledJob's metrics are always AverageValue, as in KEDA)"),
            scaled_job("typed", REDIS),
        ),
        (
            "a ScaledJob's trigger names",
            scaled_job("twin-jobs", "[{type: redis, name: a, metadata: {address: 'r:6379', listName: q}}, {type: redis, name: a, metadata: {address: 'r:6379', listName: p}}]"),
            refusal("spec.triggers[1].name: triggerName \"a\" is defined multiple times in the ScaledObject/ScaledJob, but it must be unique"),
            scaled_job("twin-jobs", "[{type: redis, name: a, metadata: {address: 'r:6379', listName: q}}, {type: redis, name: b, metadata: {address: 'r:6379', listName: p}}]"),
        ),
        (
            "cpu only at zero",
            scaled_object("cpu-zero", "cpu-zero", "", "[{type: cpu, metricType: Utilization, metadata: {value: '50'}}]")
                .replace("  triggers:", "  minReplicaCount: 0\n  triggers:"),
            refusal("spec.minReplicaCount: 0 with only cpu and memory triggers: the HPA cannot scale from zero on them; expected 1 or more, or a trigger other than cpu and memory"),
            scaled_object("cpu-zero", "cpu-zero", "", "[{type: cpu, metricType: Utilization, metadata: {value: '50'}}]")
                .replace("  triggers:", "  minReplicaCount: 1\n  triggers:"),
        ),
        (
            "useCachedMetrics on cron",
            scaled_object("cached", "cached", "", "[{type: cron, useCachedMetrics: true, metadata: {timezone: UTC, start: '0 8 * * *', end: '0 9 * * *', desiredReplicas: '2'}}]"),
            invalid("ScaledObject", "cached", "spec.triggers[0].useCachedMetrics", "useCachedMetrics is not supported for cpu, memory or cron triggers"),
            scaled_object("cached", "cached", "", "[{type: cron, metadata: {timezone: UTC, start: '0 8 * * *', end: '0 9 * * *', desiredReplicas: '2'}}]"),
        ),
        (
            "unique trigger names",
            scaled_object("twins", "twins", "", "[{type: redis, name: a, metadata: {address: 'r:6379', listName: q}}, {type: redis, name: a, metadata: {address: 'r:6379', listName: p}}]"),
            refusal("spec.triggers[1].name: \"a\" is used by another trigger; expected unique trigger names"),
            scaled_object("twins", "twins", "", "[{type: redis, name: a, metadata: {address: 'r:6379', listName: q}}, {type: redis, name: b, metadata: {address: 'r:6379', listName: p}}]"),
        ),
        (
            "the scalingModifiers formula compiles",
            scaled_object("formula", "formula", "", "[{type: redis, name: a, metadata: {address: 'r:6379', listName: q}}]")
                .replace("  triggers:", "  advanced: {scalingModifiers: {formula: 'a +', target: '5'}}\n  triggers:"),
            refusal("spec.advanced.scalingModifiers.formula: formula: unexpected end of formula at character 4"),
            scaled_object("formula", "formula", "", "[{type: redis, name: a, metadata: {address: 'r:6379', listName: q}}]")
                .replace("  triggers:", "  advanced: {scalingModifiers: {formula: 'a + 1', target: '5'}}\n  triggers:"),
        ),
        (
            "a TriggerAuthentication's pod identity",
            "apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata: {name: azure}\nspec: {podIdentity: {provider: azure-workload, identityId: ''}}\n".into(),
            refusal("spec.podIdentity.identityId: empty; expected an identity id, or no identityId to use the default identity"),
            "apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata: {name: azure}\nspec: {podIdentity: {provider: azure-workload}}\n".into(),
        ),
        (
            "a ScaledJob's trigger metadata",
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: jobs}\nspec:\n  jobTargetRef: {template: {spec: {containers: [{name: w, image: w}], restartPolicy: Never}}}\n  triggers: [{type: redis, metadata: {address: 'r:6379', listName: q, listLength: '0.5x'}}]\n".into(),
            refusal("trigger 0 (redis): listLength: expected a number, got \"0.5x\""),
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: jobs}\nspec:\n  jobTargetRef: {template: {spec: {containers: [{name: w, image: w}], restartPolicy: Never}}}\n  triggers: [{type: redis, metadata: {address: 'r:6379', listName: q, listLength: '5'}}]\n".into(),
        ),
    ];
    for (what, refused, line, accepted) in &cases {
        let denied = metrics.admission_reviews("denied");
        let got = apply(&env, refused, false).expect_err(what);
        assert_eq!(
            apply(&env, refused, true),
            Err(got.clone()),
            "{what}: dry run"
        );
        assert_eq!(&got, line, "{what}");
        // The webhook counted its two refusals; a CRD rule's never reached it.
        let by_webhook = got.starts_with(&refusal(""));
        assert_eq!(
            metrics.admission_reviews("denied") - denied,
            if by_webhook { 2 } else { 0 },
            "{what}: refusals counted by the webhook"
        );
        assert_eq!(apply(&env, accepted, false), Ok(()), "{what}");
    }

    // A label is no spec write: the configuration's matchConditions spare the call.
    let reviews = || metrics.admission_reviews("allowed") + metrics.admission_reviews("denied");
    let before = reviews();
    expect_success(
        &env.kubectl(&["label", "scaledobject", "typo", "team=orders"]),
        "kubectl label",
    );
    assert_eq!(reviews(), before, "a label update reached the webhook");

    // A user's HPA on a workload: refused, unless the ScaledObject takes it over.
    env.kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(&deployment("legacy", "{requests: {cpu: 100m}}")),
    );
    env.kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: legacy-hpa}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: legacy}\n  minReplicas: 1\n  maxReplicas: 3\n"),
    );
    let expected = "spec.scaleTargetRef: Deployment \"legacy\" is already scaled by the HorizontalPodAutoscaler \"legacy-hpa\", which this ScaledObject does not own; expected no other HPA on it: delete that HPA, or take it over with the annotation scaledobject.keda.sh/transfer-hpa-ownership: \"true\" and spec.advanced.horizontalPodAutoscalerConfig.name: legacy-hpa";
    eventually(
        "the user's HPA is in the webhook's cache",
        DEADLINE,
        || async {
            let got = apply(&env, &scaled_object("legacy", "legacy", "", REDIS), false);
            ensure(
                got.as_ref().err().is_some_and(|e| e.ends_with(expected)),
                || format!("{got:?}"),
            )
        },
    )
    .await;
    let takeover = scaled_object(
        "legacy",
        "legacy",
        "  annotations: {scaledobject.keda.sh/transfer-hpa-ownership: \"true\"}\n",
        REDIS,
    )
    .replace(
        "  triggers:",
        "  advanced: {horizontalPodAutoscalerConfig: {name: legacy-hpa}}\n  triggers:",
    );
    assert_eq!(apply(&env, &takeover, false), Ok(()));

    // cpu triggers need requests on the workload's containers.
    env.kubectl_with_stdin(&["apply", "-f", "-"], Some(&deployment("bare", "{}")));
    let cpu = scaled_object(
        "bare",
        "bare",
        "",
        "[{type: cpu, metricType: Utilization, metadata: {value: '50'}}]",
    )
    .replace("  triggers:", "  minReplicaCount: 1\n  triggers:");
    let got = apply(&env, &cpu, false).expect_err("no cpu request");
    assert!(
        got.ends_with("spec.triggers[0]: a cpu trigger needs a cpu request on container \"app\" of Deployment \"bare\"; expected resources.requests.cpu there, or a LimitRange default for cpu in the namespace"),
        "{got}"
    );
    env.kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(&deployment("bare", "{requests: {cpu: 100m}}")),
    );
    assert_eq!(apply(&env, &cpu, false), Ok(()));
    registered.remove().await;
}

/// With failurePolicy Ignore and no webhook answering, a bad object is stored; the reconcile
/// then reports it: Ready=False and an Event, with the webhook's message.
#[tokio::test]
async fn with_the_webhook_down_applies_pass_and_the_reconcile_reports_the_problem() {
    let env = setup("admission-ignore").await;
    let dead = free_port();
    let _registered = register(&env, dead, "Ignore").await;
    let first = scaled_object("first", "shared", "", REDIS);
    let second = scaled_object("second", "shared", "", REDIS);
    assert_eq!(apply(&env, &first, false), Ok(()));
    assert_eq!(
        apply(&env, &second, false),
        Ok(()),
        "Ignore lets it through"
    );
    env.create::<Deployment>(serde_json::to_value(deployment_of("shared", 1, &[])).expect("json"))
        .await;
    let _ebb = env.start_ebb();
    let expected = "spec.scaleTargetRef: Deployment \"shared\" is already scaled by ScaledObject \"first\"; expected one ScaledObject per workload";
    eventually("second is refused at reconcile", DEADLINE, || async {
        let (status, reason, message) = env.condition("second", "Ready").await?;
        ensure(
            status == "False" && reason == "ScaledObjectCheckFailed" && message == expected,
            || format!("{status} {reason} {message}"),
        )
    })
    .await;
    eventually("an Event says so", DEADLINE, || async {
        let events = env.events_of("second").await?;
        ensure(
            events
                .iter()
                .any(|e| e.message.as_deref() == Some(expected)),
            || {
                format!(
                    "{:?}",
                    events.iter().map(|e| &e.message).collect::<Vec<_>>()
                )
            },
        )
    })
    .await;
    env.delete_scaled_objects().await;
}
