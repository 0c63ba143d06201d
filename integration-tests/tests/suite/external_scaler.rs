//! `external` and `external-push` against a real plugin: the example `file-queue` plugin served
//! in process by ebb's SDK on an ephemeral loopback port (a local gRPC server, no mocks). Its
//! queue depth is the number in a file the test writes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ebb_scalers::externalscaler::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use ebb_scalers::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, ScaledObjectRef,
};
use ebb_scalers::sdk::ActivityResponses;
use ebb_scalers::{ActivityStream, MetricSpec, MetricTargetType, Registry, Scaler, Trigger};
use futures::StreamExt as _;
use integration_tests::{ensure, eventually, unique_name};
use tokio::net::TcpListener;
use tonic::transport::server::Router;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

/// Long enough for any answer here; the scalers' own limit is 3 s.
const WAIT: Duration = Duration::from_secs(15);

/// A plugin server on loopback, alive until the test ends.
struct Plugin {
    addr: SocketAddr,
    /// TCP connections the server accepted.
    accepts: Arc<AtomicUsize>,
}

/// Serves `router` on an ephemeral loopback port, counting accepted connections.
async fn serve(router: Router) -> Plugin {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("bound address");
    let accepts = Arc::new(AtomicUsize::new(0));
    let counter = accepts.clone();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).inspect(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move { router.serve_with_incoming(incoming).await.expect("serves") });
    Plugin { addr, accepts }
}

/// The example plugin, polled every 100 ms for `StreamIsActive`.
async fn file_queue_plugin(tls: Option<ServerTlsConfig>) -> Plugin {
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).expect("TLS settings");
    }
    let service = ebb_examples::file_queue_plugin()
        .poll_interval(Duration::from_millis(100))
        .into_service();
    serve(builder.add_service(service)).await
}

/// A queue file in a directory of its own, removed at the end.
struct QueueFile {
    dir: PathBuf,
    path: PathBuf,
}

impl QueueFile {
    fn new(content: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name("ebb-external"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("depth");
        std::fs::write(&path, content).expect("writes");
        Self { dir, path }
    }

    fn set(&self, content: &str) {
        std::fs::write(&self.path, content).expect("writes");
    }

    fn path(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

impl Drop for QueueFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn trigger(trigger_type: &str, index: usize, meta: &[(&str, &str)]) -> Trigger {
    Trigger {
        index,
        trigger_type: trigger_type.into(),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        scaled_object_name: "worker".into(),
        scaled_object_namespace: "shop".into(),
        ..Default::default()
    }
}

/// A file-queue trigger against `addr`: target 5, activation 2.
fn queue_trigger(trigger_type: &str, index: usize, addr: &str, file: &QueueFile) -> Trigger {
    let path = file.path();
    trigger(
        trigger_type,
        index,
        &[
            ("scalerAddress", addr),
            ("path", &path),
            ("queueLength", "5"),
            ("activationQueueLength", "2"),
        ],
    )
}

/// The next activity update, within [`WAIT`].
async fn next(stream: &mut ActivityStream) -> Option<Result<bool, ebb_scalers::ScalerError>> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an activity update within the wait")
}

#[tokio::test]
async fn reports_specs_values_and_activity_and_shares_one_channel() {
    let plugin = file_queue_plugin(None).await;
    let addr = plugin.addr.to_string();
    let file = QueueFile::new("");
    let registry = Registry::with_builtins();
    let scaler = registry
        .build(&queue_trigger("external", 0, &addr, &file))
        .expect("builds");

    // The specs arrive from GetMetricSpec in the background after construction.
    let specs = eventually("metric specs fetched from the plugin", WAIT, || async {
        let specs = scaler.metric_specs();
        ensure(!specs.is_empty(), || "no spec yet".to_string()).map(|()| specs)
    })
    .await;
    assert_eq!(
        specs,
        vec![MetricSpec::External {
            name: "s0-file-queue".into(),
            target: 5.0,
            target_type: MetricTargetType::AverageValue,
        }]
    );

    // Empty, at the activation threshold, past it, and a fractional depth.
    for (content, value, active) in [
        ("", 0.0, false),
        ("2", 2.0, false),
        ("12", 12.0, true),
        ("2.5", 2.5, true),
    ] {
        file.set(content);
        let got = scaler
            .metrics_and_activity("s0-file-queue")
            .await
            .expect("reads");
        assert_eq!(
            (got.values[0].name.as_str(), got.values[0].value, got.active),
            ("s0-file-queue", value, active),
            "file {content:?}"
        );
    }

    // A plugin-side failure is an error naming the call, never a zero.
    file.set("lots");
    let err = scaler
        .metrics_and_activity("s0-file-queue")
        .await
        .expect_err("unreadable depth");
    assert!(
        err.to_string().starts_with(&format!(
            "external scaler {addr}: GetMetrics failed (Unavailable)"
        )),
        "{err}"
    );
    let err = scaler
        .metrics_and_activity("s0-other")
        .await
        .expect_err("unknown metric");
    assert_eq!(err.label(), "unknown_metric");

    // Value targets and another trigger index: the prefix follows the index; a poll before
    // the specs are cached works.
    let mut t = queue_trigger("external", 3, &addr, &file);
    t.metric_type = Some("Value".into());
    file.set("7");
    let other = registry.build(&t).expect("builds");
    let got = other
        .metrics_and_activity("s3-file-queue")
        .await
        .expect("reads");
    assert_eq!((got.values[0].value, got.active), (7.0, true));
    assert_eq!(
        other.metric_specs(),
        vec![MetricSpec::External {
            name: "s3-file-queue".into(),
            target: 5.0,
            target_type: MetricTargetType::Value,
        }]
    );

    // Fifty more triggers on the same plugin: still one connection.
    let files: Vec<QueueFile> = (0..50).map(|i| QueueFile::new(&i.to_string())).collect();
    let many: Vec<Box<dyn Scaler>> = files
        .iter()
        .map(|f| {
            registry
                .build(&queue_trigger("external", 0, &addr, f))
                .unwrap()
        })
        .collect();
    let reads = many
        .iter()
        .map(|s| async move { s.metrics_and_activity("s0-file-queue").await });
    for (i, result) in futures::future::join_all(reads)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(result.expect("reads").values[0].value, i as f64);
    }
    assert_eq!(
        plugin.accepts.load(Ordering::SeqCst),
        1,
        "one shared channel"
    );
}

#[tokio::test]
async fn external_push_streams_activity_changes_and_reopens_after_errors() {
    let plugin = file_queue_plugin(None).await;
    let addr = plugin.addr.to_string();
    let file = QueueFile::new("0");
    let scaler = Registry::with_builtins()
        .build(&queue_trigger("external-push", 0, &addr, &file))
        .expect("builds");
    let got = scaler
        .metrics_and_activity("s0-file-queue")
        .await
        .expect("polls like external");
    assert_eq!((got.values[0].value, got.active), (0.0, false));

    let push = scaler.as_push().expect("external-push can push");
    let mut stream = push.activity();
    assert!(
        !next(&mut stream).await.unwrap().unwrap(),
        "empty: inactive"
    );
    file.set("12");
    assert!(next(&mut stream).await.unwrap().unwrap(), "past activation");
    file.set("1");
    assert!(
        !next(&mut stream).await.unwrap().unwrap(),
        "below activation"
    );

    // The plugin ends the stream with an error: it is reported, then the stream is reopened.
    file.set("garbage");
    let err = next(&mut stream).await.unwrap().expect_err("plugin error");
    assert!(err.to_string().contains("StreamIsActive failed"), "{err}");
    file.set("9");
    let started = Instant::now();
    loop {
        match next(&mut stream).await.expect("stream goes on") {
            Ok(true) => break,
            Ok(false) => {}
            // Polls of the broken file before it was fixed.
            Err(e) => assert!(started.elapsed() < WAIT, "{e}"),
        }
    }

    // Closing the scaler ends the stream.
    scaler.close().await;
    assert!(next(&mut stream).await.is_none(), "ends on close");
}

#[tokio::test]
async fn an_unreachable_plugin_is_an_error_within_the_timeout() {
    // Nothing listens on port 1 of loopback.
    let file = QueueFile::new("3");
    for trigger_type in ["external", "external-push"] {
        let scaler = Registry::with_builtins()
            .build(&queue_trigger(trigger_type, 0, "127.0.0.1:1", &file))
            .expect("builds");
        let outcome =
            tokio::time::timeout(WAIT, scaler.metrics_and_activity("s0-file-queue")).await;
        let err = outcome
            .expect("answers, never hangs")
            .expect_err("an error, never a zero");
        assert!(
            err.to_string().starts_with("external scaler 127.0.0.1:1"),
            "{err}"
        );
        assert!(scaler.metric_specs().is_empty());
    }
}

/// A plugin that accepts every call and never answers.
#[derive(Clone)]
struct HungPlugin;

#[tonic::async_trait]
impl ExternalScaler for HungPlugin {
    async fn is_active(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        std::future::pending().await
    }

    type StreamIsActiveStream = ActivityResponses;

    async fn stream_is_active(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        std::future::pending().await
    }

    async fn get_metric_spec(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        std::future::pending().await
    }

    async fn get_metrics(
        &self,
        _: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_hung_plugin_is_an_error_within_the_timeout() {
    let plugin = serve(Server::builder().add_service(ExternalScalerServer::new(HungPlugin))).await;
    let addr = plugin.addr.to_string();
    let file = QueueFile::new("3");
    let scaler = Registry::with_builtins()
        .build(&queue_trigger("external-push", 0, &addr, &file))
        .expect("builds");
    let started = Instant::now();
    let err = tokio::time::timeout(WAIT, scaler.metrics_and_activity("s0-file-queue"))
        .await
        .expect("answers, never hangs")
        .expect_err("an error, never a zero");
    assert_eq!(err.label(), "timeout", "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "external scaler {addr} GetMetricSpec did not answer"
        )),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let mut stream = scaler.as_push().expect("push").activity();
    let err = next(&mut stream)
        .await
        .unwrap()
        .expect_err("stream open times out");
    assert_eq!(err.label(), "timeout", "{err}");
}

/// A CA, and a server certificate for 127.0.0.1 and localhost signed by it.
struct Pki {
    ca_pem: String,
    server: Identity,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("leaf params")
            .signed_by(&key, &issuer)
            .expect("signs");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert_pem, client_key_pem) = leaf(vec!["ebb".into()]);
    Pki {
        ca_pem: ca_cert.pem(),
        server: Identity::from_pem(server_cert, server_key),
        client_cert_pem,
        client_key_pem,
    }
}

/// Reads the queue through a trigger with `meta` and `auth` added.
async fn read_with(
    addr: &str,
    file: &QueueFile,
    meta: &[(&str, &str)],
    auth: &[(&str, &str)],
) -> Result<f64, ebb_scalers::ScalerError> {
    let mut t = queue_trigger("external", 0, addr, file);
    for (k, v) in meta {
        t.metadata.insert(k.to_string(), v.to_string());
    }
    for (k, v) in auth {
        t.auth_params.insert(k.to_string(), v.to_string());
    }
    let scaler = Registry::with_builtins().build(&t).expect("builds");
    tokio::time::timeout(WAIT, scaler.metrics_and_activity("s0-file-queue"))
        .await
        .expect("answers, never hangs")
        .map(|got| got.values[0].value)
}

#[tokio::test]
async fn tls_with_a_ca_cert_client_certificates_and_unsafe_ssl() {
    let pki = pki();
    let file = QueueFile::new("4");

    let server_tls = ServerTlsConfig::new().identity(pki.server.clone());
    let plugin = file_queue_plugin(Some(server_tls)).await;
    let addr = plugin.addr.to_string();
    let ca = pki.ca_pem.as_str();
    assert_eq!(
        read_with(&addr, &file, &[], &[("caCert", ca)])
            .await
            .unwrap(),
        4.0
    );
    assert_eq!(
        read_with(
            &addr,
            &file,
            &[("enableTLS", "true"), ("unsafeSsl", "true")],
            &[]
        )
        .await
        .unwrap(),
        4.0,
        "unsafeSsl skips verification"
    );
    let err = read_with(&addr, &file, &[("enableTLS", "true")], &[])
        .await
        .expect_err("the system roots do not know this CA");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    let err = read_with(&addr, &file, &[], &[])
        .await
        .expect_err("plaintext to a TLS server");
    assert!(err.to_string().starts_with("external scaler"), "{err}");

    // Mutual TLS: the server requires a client certificate from the CA.
    let mtls = ServerTlsConfig::new()
        .identity(pki.server.clone())
        .client_ca_root(Certificate::from_pem(&pki.ca_pem));
    let plugin = file_queue_plugin(Some(mtls)).await;
    let addr = plugin.addr.to_string();
    let client = [
        ("caCert", ca),
        ("tlsClientCert", pki.client_cert_pem.as_str()),
        ("tlsClientKey", pki.client_key_pem.as_str()),
    ];
    assert_eq!(read_with(&addr, &file, &[], &client).await.unwrap(), 4.0);
    let err = read_with(&addr, &file, &[], &[("caCert", ca)])
        .await
        .expect_err("no client certificate");
    let text = err.to_string();
    assert!(text.starts_with("external scaler"), "{text}");
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("BEGIN"),
        "{text}"
    );
}
