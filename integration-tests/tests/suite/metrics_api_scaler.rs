//! The `metrics-api` scaler against HTTP and HTTPS servers the test starts on loopback: every
//! format, every auth mode (the server answers 401 to wrong or missing credentials), client
//! certificates, `unsafeSsl`, timeouts, and errors (never zeros) for bad answers.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ebb_scalers::{
    MetricSpec, MetricTargetType, MetricsAndActivity, Registry, Scaler, ScalerError, Trigger,
};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use integration_tests::{ensure, eventually};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// Longest a scaler call may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(20);

/// What the server answers.
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
    /// A request for this path is answered `302 Found` with this `Location`.
    redirect: Option<(String, String)>,
}

/// What the server demands of each request before answering.
#[derive(Clone)]
enum Check {
    Nothing,
    Header(&'static str, String),
    QueryPair(String),
}

struct Shared {
    reply: Mutex<Reply>,
    check: Check,
    accepted: AtomicUsize,
    open: AtomicUsize,
    requests: AtomicUsize,
}

/// A local API server, stopped when dropped.
struct Api {
    base: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Api {
    async fn start(check: Check, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let shared = Arc::new(Shared {
            reply: Mutex::new(Reply {
                status: 200,
                body: String::new(),
                delay: Duration::ZERO,
                redirect: None,
            }),
            check,
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
        });
        let state = shared.clone();
        let task = tokio::spawn(async move {
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                state.accepted.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    state.open.fetch_add(1, Ordering::SeqCst);
                    match acceptor {
                        None => serve_connection(stream, state.clone()).await,
                        Some(acceptor) => {
                            // A refused handshake (no or untrusted client certificate) just
                            // closes the connection.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_connection(stream, state.clone()).await;
                            }
                        }
                    }
                    state.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            base: format!("{scheme}://127.0.0.1:{port}"),
            shared,
            task,
        }
    }

    fn set(&self, status: u16, body: impl Into<String>) {
        let mut reply = self.shared.reply.lock().expect("lock");
        reply.status = status;
        reply.body = body.into();
    }

    fn delay(&self, delay: Duration) {
        self.shared.reply.lock().expect("lock").delay = delay;
    }

    fn redirect(&self, path: &str, location: &str) {
        self.shared.reply.lock().expect("lock").redirect =
            Some((path.to_string(), location.to_string()));
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

async fn serve_connection<S>(io: S, state: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(answer(&state, &req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

async fn answer(state: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let allowed = match &state.check {
        Check::Nothing => true,
        Check::Header(name, value) => req
            .headers()
            .get(*name)
            .is_some_and(|v| v.as_bytes() == value.as_bytes()),
        Check::QueryPair(pair) => req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == pair)),
    };
    state.requests.fetch_add(1, Ordering::SeqCst);
    let (status, body, delay, redirect) = {
        let reply = state.reply.lock().expect("lock");
        (
            reply.status,
            reply.body.clone(),
            reply.delay,
            reply.redirect.clone(),
        )
    };
    if let Some((from, location)) = redirect
        && req.uri().path() == from
    {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::FOUND;
        response
            .headers_mut()
            .insert(hyper::header::LOCATION, location.parse().expect("location"));
        return response;
    }
    if !allowed {
        let mut response = Response::new(Full::new(Bytes::from_static(b"unauthorized")));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    tokio::time::sleep(delay).await;
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    response
}

fn trigger(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Trigger {
    let map = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Trigger {
        index: 0,
        trigger_type: "metrics-api".into(),
        metadata: map(meta),
        auth_params: map(auth),
        ..Default::default()
    }
}

fn build(registry: &Registry, meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Box<dyn Scaler> {
    registry.build(&trigger(meta, auth)).expect("builds")
}

/// One poll, failing the test if it does not answer within [`HANG`].
async fn poll(scaler: &dyn Scaler) -> Result<MetricsAndActivity, ScalerError> {
    let name = scaler.metric_specs()[0]
        .external_name()
        .expect("external")
        .to_string();
    tokio::time::timeout(HANG, scaler.metrics_and_activity(&name))
        .await
        .expect("answers, never hangs")
}

async fn value(scaler: &dyn Scaler) -> f64 {
    let got = poll(scaler).await.expect("reads");
    got.values[0].value
}

async fn error(scaler: &dyn Scaler) -> String {
    poll(scaler)
        .await
        .expect_err("an error, never a zero")
        .to_string()
}

#[tokio::test]
async fn every_format_reports_value_and_activity() {
    let api = Api::start(Check::Nothing, None).await;
    let registry = Registry::with_builtins();
    type Body = fn(u32) -> String;
    let formats: [(&str, &str, &str, Body); 4] = [
        (
            "json",
            "components.worker.tasks",
            "s0-metric-api-components-worker-tasks",
            |n| format!(r#"{{"components": {{"worker": {{"tasks": {n}, "other": 99}}}}}}"#),
        ),
        (
            "yaml",
            "components.worker.tasks",
            "s0-metric-api-components-worker-tasks",
            |n| format!("components:\n  worker:\n    other: 99\n    tasks: \"{n}\"\n"),
        ),
        (
            "xml",
            "stats.queue.depth",
            "s0-metric-api-stats-queue-depth",
            |n| format!("<stats><other>99</other><queue><depth>{n}</depth></queue></stats>"),
        ),
        (
            "prometheus",
            "queue_depth",
            "s0-metric-api-queue_depth",
            |n| {
                format!(
                    "# TYPE queue_depth gauge\nqueue_depth_max 99\nqueue_depth {n}\n\
                     queue_depth{{queue=\"other\"}} 99\n"
                )
            },
        ),
    ];
    for (format, location, metric, body) in formats {
        let url = api.url(&format!("/stats.{format}"));
        let scaler = build(
            &registry,
            &[
                ("url", &url),
                ("format", format),
                ("valueLocation", location),
                ("targetValue", "10"),
                ("activationTargetValue", "5"),
            ],
            &[],
        );
        assert_eq!(
            scaler.metric_specs(),
            vec![MetricSpec::External {
                name: metric.to_string(),
                target: 10.0,
                target_type: MetricTargetType::AverageValue,
            }],
            "{format}"
        );
        // Empty, below activation, at activation (still inactive), above activation.
        for (n, active) in [(0, false), (3, false), (5, false), (42, true)] {
            api.set(200, body(n));
            let got = poll(scaler.as_ref()).await.expect("reads");
            assert_eq!(got.values[0].name, metric, "{format}");
            assert_eq!(
                (got.values[0].value, got.active),
                (f64::from(n), active),
                "{format} with {n}"
            );
        }
    }

    // A Prometheus sample chosen by its labels, and a Value-type target.
    api.set(
        200,
        "jobs{queue=\"a\",state=\"ready\"} 4\njobs{queue=\"b\",state=\"ready\"} 7\n",
    );
    let mut t = trigger(
        &[
            ("url", &api.url("/metrics")),
            ("format", "prometheus"),
            ("valueLocation", "jobs{queue=\"b\"}"),
            ("targetValue", "2"),
        ],
        &[],
    );
    t.metric_type = Some("Value".into());
    let scaler = registry.build(&t).expect("builds");
    assert!(matches!(
        &scaler.metric_specs()[0],
        MetricSpec::External { target_type: MetricTargetType::Value, target, .. } if *target == 2.0
    ));
    assert_eq!(value(scaler.as_ref()).await, 7.0);
    let err = scaler
        .metrics_and_activity("s0-metric-api-other")
        .await
        .expect_err("not served");
    assert_eq!(err.label(), "unknown_metric");
}

const JSON_META: [(&str, &str); 2] = [("valueLocation", "n"), ("targetValue", "5")];

fn meta<'a>(url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut meta = vec![("url", url)];
    meta.extend_from_slice(&JSON_META);
    meta.extend_from_slice(extra);
    meta
}

#[tokio::test]
async fn api_key_in_a_header_or_the_query() {
    let registry = Registry::with_builtins();
    let key = "k3y-abc123";

    let api = Api::start(Check::Header("x-api-key", key.into()), None).await;
    api.set(200, r#"{"n": 6}"#);
    let url = api.url("/v");
    let good = build(
        &registry,
        &meta(&url, &[("authMode", "apiKey")]),
        &[("apiKey", key)],
    );
    assert_eq!(value(good.as_ref()).await, 6.0);
    let wrong = build(
        &registry,
        &meta(&url, &[("authMode", "apiKey")]),
        &[("apiKey", "wrong-key-1")],
    );
    let err = error(wrong.as_ref()).await;
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("wrong-key-1"), "{err}");
    let missing = build(&registry, &meta(&url, &[]), &[]);
    assert!(error(missing.as_ref()).await.contains("401"));

    let api = Api::start(Check::Header("x-token", key.into()), None).await;
    api.set(200, r#"{"n": 2}"#);
    let url = api.url("/v");
    let named = build(
        &registry,
        &meta(&url, &[("authMode", "apiKey"), ("keyParamName", "X-Token")]),
        &[("apiKey", key)],
    );
    assert_eq!(value(named.as_ref()).await, 2.0);

    let api = Api::start(Check::QueryPair(format!("api_key={key}")), None).await;
    api.set(200, r#"{"n": 3}"#);
    let url = api.url("/v?x=1");
    let query = build(
        &registry,
        &meta(&url, &[("authMode", "apiKey"), ("method", "query")]),
        &[("apiKey", key)],
    );
    assert_eq!(value(query.as_ref()).await, 3.0);
    let wrong = build(
        &registry,
        &meta(&url, &[("authMode", "apiKey"), ("method", "query")]),
        &[("apiKey", "wrong-key-2")],
    );
    let err = error(wrong.as_ref()).await;
    assert!(err.contains("401"), "{err}");
    assert!(
        !err.contains("wrong-key-2") && !err.contains("api_key"),
        "{err}"
    );
}

/// Standard base64 with padding, for the expected `Authorization: Basic` header.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn basic_and_bearer_authorization() {
    let registry = Registry::with_builtins();
    let expected = format!("Basic {}", base64(b"scaler:s3cret-pw"));
    let api = Api::start(Check::Header("authorization", expected), None).await;
    api.set(200, r#"{"n": 8}"#);
    let url = api.url("/v");
    let good = build(
        &registry,
        &meta(&url, &[("authMode", "basic")]),
        &[("username", "scaler"), ("password", "s3cret-pw")],
    );
    assert_eq!(value(good.as_ref()).await, 8.0);
    let wrong = build(
        &registry,
        &meta(&url, &[("authMode", "basic")]),
        &[("username", "scaler"), ("password", "not-it-pw")],
    );
    let err = error(wrong.as_ref()).await;
    assert!(err.contains("401") && !err.contains("not-it-pw"), "{err}");
    let missing = build(&registry, &meta(&url, &[]), &[]);
    assert!(error(missing.as_ref()).await.contains("401"));

    let api = Api::start(
        Check::Header("authorization", "Bearer t0ken-xyz".into()),
        None,
    )
    .await;
    api.set(200, r#"{"n": 9}"#);
    let url = api.url("/v");
    let good = build(
        &registry,
        &meta(&url, &[("authMode", "bearer")]),
        &[("token", "t0ken-xyz")],
    );
    assert_eq!(value(good.as_ref()).await, 9.0);
    let wrong = build(
        &registry,
        &meta(&url, &[("authMode", "bearer")]),
        &[("token", "bad-t0ken")],
    );
    let err = error(wrong.as_ref()).await;
    assert!(err.contains("401") && !err.contains("bad-t0ken"), "{err}");
}

/// A CA, and certificates it signed.
struct Pki {
    ca: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            ca_pem: cert.pem(),
            ca: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` signed by this CA.
    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.ca).expect("signed");
        Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}

/// A certificate and its key, as PEM (for auth parameters) and DER (for the server).
struct Leaf {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    key_der: Vec<u8>,
}

fn server_config(
    leaf: &Leaf,
    client_ca: Option<&CertificateDer<'static>>,
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.clone()).expect("client CA");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    Arc::new(
        builder
            .with_single_cert(vec![leaf.cert_der.clone()], key)
            .expect("server cert"),
    )
}

#[tokio::test]
async fn tls_with_a_client_certificate_and_the_ca_from_auth() {
    let registry = Registry::with_builtins();
    let pki = Pki::new("ebb-test-ca");
    let server = pki.leaf(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client = pki.leaf(&["scaler"], ExtendedKeyUsagePurpose::ClientAuth);
    let ca_der = CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("CA PEM");
    let api = Api::start(Check::Nothing, Some(server_config(&server, Some(&ca_der)))).await;
    api.set(200, r#"{"n": 11}"#);
    let url = api.url("/v");

    let good = build(
        &registry,
        &meta(&url, &[("authMode", "tls")]),
        &[
            ("ca", &pki.ca_pem),
            ("cert", &client.cert_pem),
            ("key", &client.key_pem),
        ],
    );
    assert_eq!(value(good.as_ref()).await, 11.0);

    // No client certificate: the server ends the handshake.
    let anonymous = build(&registry, &meta(&url, &[("unsafeSsl", "true")]), &[]);
    let err = error(anonymous.as_ref()).await;
    assert!(err.starts_with(&format!("metrics-api {url}")), "{err}");

    // A client certificate from another CA is refused too.
    let other = Pki::new("other-ca");
    let stranger = other.leaf(&["scaler"], ExtendedKeyUsagePurpose::ClientAuth);
    let refused = build(
        &registry,
        &meta(&url, &[("authMode", "tls")]),
        &[
            ("ca", &pki.ca_pem),
            ("cert", &stranger.cert_pem),
            ("key", &stranger.key_pem),
        ],
    );
    let err = error(refused.as_ref()).await;
    assert!(!err.contains("PRIVATE KEY"), "{err}");

    // The server's certificate is not trusted without the CA.
    let untrusted = build(
        &registry,
        &meta(&url, &[("authMode", "tls")]),
        &[
            ("ca", &other.ca_pem),
            ("cert", &client.cert_pem),
            ("key", &client.key_pem),
        ],
    );
    let err = error(untrusted.as_ref()).await;
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn unsafe_ssl_accepts_a_self_signed_server() {
    let registry = Registry::with_builtins();
    let self_signed = Pki::new("self-signed");
    let server = self_signed.leaf(&["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let api = Api::start(Check::Nothing, Some(server_config(&server, None))).await;
    api.set(200, r#"{"n": 4}"#);
    let url = api.url("/v");

    let strict = build(&registry, &meta(&url, &[]), &[]);
    let err = error(strict.as_ref()).await;
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    let trusting = build(&registry, &meta(&url, &[("unsafeSsl", "true")]), &[]);
    assert_eq!(value(trusting.as_ref()).await, 4.0);
}

#[tokio::test]
async fn a_slow_server_is_a_timeout_error_not_a_hang() {
    let registry = Registry::with_builtins();
    let api = Api::start(Check::Nothing, None).await;
    api.set(200, r#"{"n": 1}"#);
    api.delay(Duration::from_secs(30));
    let url = api.url("/slow");
    let scaler = build(&registry, &meta(&url, &[("timeout", "500")]), &[]);
    let err = poll(scaler.as_ref()).await.expect_err("times out");
    assert_eq!(err.label(), "timeout");
    assert_eq!(
        err.to_string(),
        format!("metrics-api {url} did not answer within 500ms")
    );

    // The default limit (3 s) applies without `timeout`.
    let scaler = build(&registry, &meta(&url, &[]), &[]);
    let err = poll(scaler.as_ref()).await.expect_err("times out");
    assert!(
        err.to_string().ends_with("did not answer within 3s"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_answers_are_errors_never_zero() {
    let registry = Registry::with_builtins();
    let api = Api::start(Check::Nothing, None).await;
    let url = api.url("/v");
    let scaler = build(&registry, &meta(&url, &[]), &[]);

    api.set(500, r#"{"n": 0}"#);
    let err = error(scaler.as_ref()).await;
    assert_eq!(
        err,
        format!("metrics-api {url}: answered HTTP 500 Internal Server Error")
    );

    // Only 200 is an answer, as in KEDA: a 203 with a readable body is still an error.
    api.set(203, r#"{"n": 4}"#);
    let err = error(scaler.as_ref()).await;
    assert_eq!(
        err,
        format!("metrics-api {url}: answered HTTP 203 Non Authoritative Information")
    );

    api.set(200, "<html>gateway says hi</html>");
    let err = error(scaler.as_ref()).await;
    assert!(
        err.contains("valueLocation \"n\": the body is not valid JSON"),
        "{err}"
    );

    api.set(200, r#"{"m": 3}"#);
    assert!(
        error(scaler.as_ref())
            .await
            .contains("valueLocation \"n\": n: no such key")
    );

    api.set(200, r#"{"n": "lots"}"#);
    assert!(
        error(scaler.as_ref())
            .await
            .contains("found the string \"lots\"")
    );

    api.set(
        200,
        format!(r#"{{"pad": "{}", "n": 1}}"#, "x".repeat(2 << 20)),
    );
    assert!(
        error(scaler.as_ref())
            .await
            .contains("the body is larger than 1048576 bytes")
    );

    api.set(200, r#"{"n": "10k"}"#);
    assert_eq!(value(scaler.as_ref()).await, 10_000.0, "a quantity string");

    // Nothing listens on the port of a stopped server.
    let down_url = {
        let down = Api::start(Check::Nothing, None).await;
        down.url("/v")
    };
    let down = build(&registry, &meta(&down_url, &[]), &[]);
    let err = error(down.as_ref()).await;
    assert!(
        err.starts_with(&format!("metrics-api {down_url}: ")),
        "{err}"
    );
}

#[tokio::test]
async fn triggers_share_one_client_released_with_the_last() {
    let api = Api::start(Check::Nothing, None).await;
    api.set(200, r#"{"n": 1}"#);
    let registry = Registry::with_builtins();
    let scalers: Vec<Box<dyn Scaler>> = (0..50)
        .map(|i| {
            let url = api.url(&format!("/v/{i}"));
            build(&registry, &meta(&url, &[]), &[])
        })
        .collect();
    for scaler in &scalers {
        assert_eq!(value(scaler.as_ref()).await, 1.0);
    }
    // Sequential polls through one shared client reuse one keep-alive connection.
    let accepted = api.shared.accepted.load(Ordering::SeqCst);
    assert_eq!(accepted, 1, "50 triggers opened {accepted} connections");

    drop(scalers);
    eventually(
        "the shared client's connection closes with the last trigger",
        Duration::from_secs(10),
        || async {
            let open = api.shared.open.load(Ordering::SeqCst);
            ensure(open == 0, || format!("{open} connections still open"))
        },
    )
    .await;
}

#[tokio::test]
async fn redirects_stay_on_the_same_server() {
    let registry = Registry::with_builtins();
    let key = "k3y-redirect";
    let api = Api::start(Check::Header("x-api-key", key.into()), None).await;
    api.set(200, r#"{"n": 5}"#);
    api.redirect("/old", "/v");
    let url = api.url("/old");
    let scaler = build(
        &registry,
        &meta(&url, &[("authMode", "apiKey")]),
        &[("apiKey", key)],
    );
    assert_eq!(
        value(scaler.as_ref()).await,
        5.0,
        "same-origin redirect followed"
    );

    // Another server (another origin: `localhost`, not `127.0.0.1`) never sees the key.
    let elsewhere = Api::start(Check::Nothing, None).await;
    elsewhere.set(200, r#"{"n": 1}"#);
    let port = elsewhere.base.rsplit(':').next().expect("port").to_string();
    api.redirect("/old", &format!("http://localhost:{port}/v"));
    let err = error(scaler.as_ref()).await;
    assert_eq!(err, format!("metrics-api {url}: answered HTTP 302 Found"));
    assert_eq!(elsewhere.shared.requests.load(Ordering::SeqCst), 0);
}
