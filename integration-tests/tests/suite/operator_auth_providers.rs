//! The `boundServiceAccountToken` and `filePath` authentication providers, with ebb in process
//! against the real apiserver: a token from a real TokenRequest (which the apiserver's own
//! TokenReview then accepts as the service account) reaches a metrics-api endpoint as its
//! bearer token; a ClusterTriggerAuthentication's file under `--filepath-auth-root-path` fills
//! the parameters; a namespaced TriggerAuthentication with `filePath`, and a token for a
//! service account that does not exist, are reported on the object.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ebb_crds::{ClusterTriggerAuthentication, ScaledObject, TriggerAuthentication};
use integration_tests::{deployment, ensure, eventually, setup, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

/// The `Authorization` header each path was last asked with.
type Seen = Arc<Mutex<BTreeMap<String, String>>>;

/// Serves `{"value": 3}` on every path, remembering each path's `Authorization` header.
async fn recording_server() -> (u16, Seen) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = request
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let authorization = request
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("authorization")
                            .then(|| value.trim().to_string())
                    })
                    .unwrap_or_default();
                if let Ok(mut log) = log.lock() {
                    log.insert(path, authorization);
                }
                let body = "{\"value\": 3}";
                let _ = socket
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (port, seen)
}

/// A ScaledObject on a Deployment of its own name, one bearer metrics-api trigger on `path`.
fn scaled_object(name: &str, port: u16, path: &str, auth: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": 1,
            "triggers": [{
                "type": "metrics-api",
                "metadata": {
                    "url": format!("http://127.0.0.1:{port}{path}"),
                    "valueLocation": "value",
                    "targetValue": "5",
                    "authMode": "bearer"
                },
                "authenticationRef": auth
            }]
        }
    })
}

#[tokio::test]
async fn bound_tokens_and_cluster_files_fill_parameters() {
    let env = setup("operator-auth-providers").await;
    let root = std::env::temp_dir().join(unique_name("ebb-auth-root"));
    std::fs::create_dir_all(root.join("creds")).expect("root");
    std::fs::write(root.join("creds/api.json"), r#"{"token": "from-the-file"}"#).expect("file");
    let file_root = root.clone();
    let _ebb = env.start_ebb_tuned(ebb_scalers::Registry::with_builtins(), move |ctx| {
        ctx.file_path_root = Some(file_root);
    });
    let (port, seen) = recording_server().await;
    let cta = unique_name("file-auth");

    env.create::<ServiceAccount>(json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}
    }))
    .await;
    env.create::<TriggerAuthentication>(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": "bound"},
        "spec": {"boundServiceAccountToken": [{"parameter": "token", "serviceAccountName": "reader"}]}
    }))
    .await;
    env.create::<TriggerAuthentication>(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": "nobody"},
        "spec": {"boundServiceAccountToken": [{"parameter": "token", "serviceAccountName": "no-such-account"}]}
    }))
    .await;
    env.create::<TriggerAuthentication>(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": "namespaced-file"},
        "spec": {"filePath": "creds/api.json"}
    }))
    .await;
    let ctas: Api<ClusterTriggerAuthentication> = Api::all(env.client.clone());
    ctas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ClusterTriggerAuthentication",
            "metadata": {"name": cta},
            "spec": {"filePath": "creds/api.json"}
        }))
        .expect("a ClusterTriggerAuthentication"),
    )
    .await
    .expect("creates the ClusterTriggerAuthentication");

    for name in ["bound", "file", "nobody", "namespaced-file"] {
        env.create::<Deployment>(serde_json::to_value(deployment(name, 0, &[])).expect("json"))
            .await;
    }
    env.create::<ScaledObject>(scaled_object(
        "bound",
        port,
        "/bound",
        json!({"name": "bound"}),
    ))
    .await;
    env.create::<ScaledObject>(scaled_object(
        "file",
        port,
        "/file",
        json!({"name": cta, "kind": "ClusterTriggerAuthentication"}),
    ))
    .await;
    env.create::<ScaledObject>(scaled_object(
        "nobody",
        port,
        "/nobody",
        json!({"name": "nobody"}),
    ))
    .await;
    env.create::<ScaledObject>(scaled_object(
        "namespaced-file",
        port,
        "/namespaced-file",
        json!({"name": "namespaced-file"}),
    ))
    .await;

    // The bound token reaches the endpoint, and the apiserver accepts it as the account.
    let token = eventually("a bearer token on /bound", DEADLINE, || async {
        let header = seen
            .lock()
            .map_err(|e| e.to_string())?
            .get("/bound")
            .cloned();
        header
            .as_deref()
            .and_then(|h| h.strip_prefix("Bearer ").map(str::to_string))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("{header:?}"))
    })
    .await;
    let review = Api::<TokenReview>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("a TokenReview");
    let status = review.status.expect("reviewed");
    assert_eq!(status.authenticated, Some(true), "{:?}", status.error);
    assert_eq!(
        status.user.and_then(|u| u.username),
        Some(format!("system:serviceaccount:{}:reader", env.namespace))
    );

    // The cluster authentication's file fills the parameter.
    eventually("the file's token on /file", DEADLINE, || async {
        let header = seen
            .lock()
            .map_err(|e| e.to_string())?
            .get("/file")
            .cloned();
        ensure(header.as_deref() == Some("Bearer from-the-file"), || {
            format!("{header:?}")
        })
    })
    .await;

    // No account: an empty parameter (as KEDA), which the bearer mode refuses; the refusal
    // names the account whose token could not be had.
    eventually(
        "nobody: Ready=False naming the account",
        DEADLINE,
        || async {
            let (status, reason, message) = env.condition("nobody", "Ready").await?;
            ensure(
                status == "False"
                    && message.contains("spec.boundServiceAccountToken[0]")
                    && message.contains("no-such-account"),
                || format!("{status} {reason} {message}"),
            )
        },
    )
    .await;

    // A namespaced authentication may not read ebb's files: refused, with the reason.
    eventually("namespaced-file: Ready=False", DEADLINE, || async {
        let (status, reason, message) = env.condition("namespaced-file", "Ready").await?;
        ensure(
            status == "False" && message.contains("only a ClusterTriggerAuthentication"),
            || format!("{status} {reason} {message}"),
        )
    })
    .await;
    assert!(!seen.lock().expect("log").contains_key("/namespaced-file"));

    env.delete_scaled_objects().await;
    let _ = ctas.delete(&cta, &DeleteParams::default()).await;
    let _ = std::fs::remove_dir_all(&root);
}
