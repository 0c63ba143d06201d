//! The integration-test harness.
//!
//! Every test talks to real components: the dev cluster's kube-apiserver, controller-manager,
//! scheduler and kwok, and its Redis and RabbitMQ. The cluster is brought up once per test
//! binary with the same code as `cargo xtask cluster up` (a no-op when it already runs); ebb's
//! CRDs are installed from the committed `crds/manifests/`; each test gets a namespace of its
//! own, deleted when its [`TestEnv`] is dropped.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use async_nats::jetstream;
use k8s_openapi::api::core::v1::{Event, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use tokio::sync::OnceCell;
use xtask::cluster::ClusterInfo;

pub use xtask::workspace_root;

/// Label put on every test namespace, so leftovers can be found.
pub const TEST_NAMESPACE_LABEL: &str = "ebb.dev/test";

static CLUSTER: OnceLock<Result<ClusterInfo, String>> = OnceLock::new();
static CRDS: OnceCell<()> = OnceCell::const_new();

/// One test's view of the cluster: a client, the cluster's addresses and a namespace of its own.
pub struct TestEnv {
    /// Admin client of the dev cluster.
    pub client: Client,
    /// Addresses of the apiserver, Redis and RabbitMQ.
    pub cluster: ClusterInfo,
    /// This test's namespace.
    pub namespace: String,
    /// The admin client's configuration, for the clients of in-process ebbs.
    pub config: Config,
}

/// Brings the cluster up (once per process), installs the CRDs and creates a namespace.
pub async fn setup(test: &str) -> TestEnv {
    match try_setup(test).await {
        Ok(env) => env,
        Err(e) => panic!("test environment for {test}: {e:#}"),
    }
}

async fn try_setup(test: &str) -> Result<TestEnv> {
    let cluster = tokio::task::spawn_blocking(|| {
        CLUSTER
            .get_or_init(|| xtask::cluster::up().map_err(|e| format!("{e:#}")))
            .clone()
    })
    .await?
    .map_err(anyhow::Error::msg)
    .context("bringing the dev cluster up")?;
    let config = admin_config(&cluster).await?;
    let client = Client::try_from(config.clone())?;
    CRDS.get_or_try_init(|| install_crds(client.clone()))
        .await
        .context("installing ebb's CRDs")?;
    let namespace = unique_name(test);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.clone()),
            labels: Some([(TEST_NAMESPACE_LABEL.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {namespace}"))?;
    Ok(TestEnv {
        client,
        cluster,
        namespace,
        config,
    })
}

/// A client for the dev cluster's admin kubeconfig.
pub async fn client(cluster: &ClusterInfo) -> Result<Client> {
    Ok(Client::try_from(admin_config(cluster).await?)?)
}

async fn admin_config(cluster: &ClusterInfo) -> Result<Config> {
    let kubeconfig = Kubeconfig::read_from(&cluster.kubeconfig)?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}

/// A client that acts as `user` (impersonated by the admin), e.g.
/// `system:serviceaccount:ebb-system:ebb`, to run code under exactly that user's RBAC.
pub async fn client_as(cluster: &ClusterInfo, user: &str, groups: &[&str]) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(&cluster.kubeconfig)?;
    let mut config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    Ok(Client::try_from(config)?)
}

/// Applies the committed CRD manifests (server-side) and waits until each is Established.
async fn install_crds(client: Client) -> Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client);
    for path in crd_manifest_paths()? {
        let text = std::fs::read_to_string(&path)?;
        let crd: CustomResourceDefinition =
            serde_norway::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(
            &name,
            &PatchParams::apply("ebb-integration-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying {}", path.display()))?;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not Established within 30s"))??;
    }
    Ok(())
}

/// The files in `crds/manifests/`, sorted.
pub fn crd_manifest_paths() -> Result<Vec<PathBuf>> {
    let dir = workspace_root().join("crds/manifests");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// A DNS-1123 name from a test name plus a suffix unique to this run and call.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let suffix = format!("{:x}", (nanos ^ std::process::id().rotate_left(16)) + n);
    let mut base: String = prefix
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(50);
    format!("{}-{suffix}", base.trim_matches('-'))
}

impl TestEnv {
    /// Runs the dev cluster's kubectl with the admin kubeconfig in this test's namespace.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_stdin(args, None)
    }

    /// Runs kubectl with `stdin` fed to it (for `-f -`).
    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(&self.cluster.kubectl);
        cmd.arg(format!(
            "--kubeconfig={}",
            self.cluster.kubeconfig.display()
        ))
        .arg(format!("--namespace={}", self.namespace))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("running kubectl {args:?}: {e}"),
        };
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let _ = pipe.write_all(input.as_bytes());
        }
        match child.wait_with_output() {
            Ok(out) => out,
            Err(e) => panic!("waiting for kubectl {args:?}: {e}"),
        }
    }

    /// Starts ebb's controller in this process, watching this test's namespace only (so tests
    /// running side by side do not share objects). It stops when the guard drops; delete the
    /// test's ScaledObjects first ([`TestEnv::delete_scaled_objects`]) so their finalizers go.
    /// Its apiserver requests are counted in its metrics, as `ebb run` counts them.
    pub fn start_ebb(&self) -> EbbGuard {
        self.start_ebb_with(ebb_scalers::Registry::with_builtins())
    }

    /// [`TestEnv::start_ebb`] with the trigger types of `registry` (a test's own scaler).
    pub fn start_ebb_with(&self, registry: ebb_scalers::Registry) -> EbbGuard {
        self.start_ebb_tuned(registry, |_| {})
    }

    /// [`TestEnv::start_ebb_with`], with `tune` setting what `ebb run`'s flags set (a file
    /// root, a token life) before the controller starts.
    pub fn start_ebb_tuned(
        &self,
        registry: ebb_scalers::Registry,
        tune: impl FnOnce(&mut ebb_operator::controller::Context),
    ) -> EbbGuard {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics = std::sync::Arc::new(ebb_operator::admin::Metrics::default());
        let client = ebb_operator::client::counting(self.config.clone(), metrics.clone())
            .expect("a client from the admin kubeconfig");
        let mut ctx =
            ebb_operator::controller::Context::new(client, registry, self.namespace.clone());
        ctx.metrics = metrics;
        ctx.watch_namespace = Some(self.namespace.clone());
        tune(&mut ctx);
        let ctx = std::sync::Arc::new(ctx);
        tokio::spawn(ebb_operator::run::controllers(ctx.clone(), async move {
            let _ = stopped.await;
        }));
        EbbGuard { ctx, _stop: stop }
    }

    /// Starts an ebb that runs its controller only while it holds the Lease `lease` in this
    /// test's namespace (4 s duration, renewed every second), as replica `identity`.
    pub fn start_elected_ebb(&self, lease: &str, identity: &str) -> ElectedEbb {
        let mut ctx = ebb_operator::controller::Context::new(
            self.client.clone(),
            ebb_scalers::Registry::with_builtins(),
            self.namespace.clone(),
        );
        ctx.watch_namespace = Some(self.namespace.clone());
        let ctx = std::sync::Arc::new(ctx);
        let cfg = ebb_operator::leader::LeaseConfig {
            name: lease.to_string(),
            namespace: self.namespace.clone(),
            identity: identity.to_string(),
            duration: Duration::from_secs(4),
            retry: Duration::from_secs(1),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let work_ctx = ctx.clone();
        let task = tokio::spawn(ebb_operator::leader::run_as_leader(
            self.client.clone(),
            cfg,
            move |mut lost| {
                let ctx = work_ctx.clone();
                async move {
                    ebb_operator::run::controllers(ctx, async move {
                        let _ = lost.wait_for(|stop| *stop).await;
                    })
                    .await;
                }
            },
            async move {
                let _ = stopped.await;
            },
        ));
        ElectedEbb {
            ctx,
            task,
            _stop: stop,
        }
    }

    /// Serves `ebb`'s external metrics API as `ebb run` does, and registers it with the
    /// aggregator: an ExternalName Service `ebb-system/ebb-metrics-dev` to 127.0.0.1 and the
    /// APIService, whose caBundle ebb sets to the CA of the certificate it generates. Waits
    /// until the APIService is Available. Call it from a multi-thread test runtime: requests
    /// come back through the aggregator while the test may block in kubectl.
    pub async fn serve_metrics_api(&self, ebb: &EbbGuard) -> MetricsApiGuard {
        use ebb_operator::metrics_api;
        let turn = metrics_api_turn().await;
        if let Err(e) = xtask::cluster::metrics_api::register(
            &self.cluster.kubectl,
            &self.cluster.kubeconfig,
            METRICS_API_PORT,
        ) {
            panic!("{e:#}");
        }

        // The server runs on a runtime of its own: a test blocked in `kubectl get --raw` (which
        // comes back through the aggregator to this server) must not block the server too.
        let ctx = ebb.ctx.clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (started, is_started) = std::sync::mpsc::channel::<Result<(), String>>();
        let server = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = started.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let settings = metrics_api::Settings {
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], METRICS_API_PORT)),
                    cert_and_key: None,
                    names: xtask::cluster::metrics_api::TLS_NAMES
                        .split(',')
                        .map(String::from)
                        .collect(),
                    apiservice: Some(APISERVICE.into()),
                };
                // The previous test's server may still hold the port for a moment.
                let mut attempt = 0;
                let serving = loop {
                    let mut stopped = stopped.clone();
                    match metrics_api::start(
                        ctx.metrics_api_sources(),
                        settings.clone(),
                        async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        },
                    )
                    .await
                    {
                        Ok((serving, _ca)) => break serving,
                        Err(metrics_api::StartError::Listen { .. }) if attempt < 60 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => {
                            let _ = started.send(Err(e.to_string()));
                            return;
                        }
                    }
                };
                let _ = started.send(Ok(()));
                serving.await;
            });
        });
        match is_started.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("starting the metrics API: {e}"),
            Err(e) => panic!("starting the metrics API: {e}"),
        }
        // The CA ebb wrote into the APIService, for tests that call the server directly.
        let out = self.kubectl(&["get", "apiservice", APISERVICE, "-o", "json"]);
        let apiservice: serde_json::Value =
            serde_json::from_str(&expect_success(&out, "reading the APIService")).expect("json");
        let ca_bundle: k8s_openapi::ByteString =
            serde_json::from_value(apiservice["spec"]["caBundle"].clone())
                .expect("ebb set the APIService's caBundle");
        let ca_pem = String::from_utf8(ca_bundle.0).expect("a PEM caBundle");
        eventually("the APIService is Available", Duration::from_secs(60), || async {
            let out = self.kubectl(&[
                "get", "apiservice", APISERVICE,
                "-o", "jsonpath={.status.conditions[?(@.type==\"Available\")].status} {.status.conditions[?(@.type==\"Available\")].message}",
            ]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            ensure(text.starts_with("True"), || text.clone())
        })
        .await;
        // The aggregator's proxy follows the condition a moment later.
        eventually(
            "discovery through the aggregator",
            Duration::from_secs(60),
            || async {
                let out = self.kubectl(&["get", "--raw", "/apis/external.metrics.k8s.io/v1beta1"]);
                ensure(out.status.success(), || {
                    String::from_utf8_lossy(&out.stderr).to_string()
                })
            },
        )
        .await;
        MetricsApiGuard {
            ca_pem,
            env_kubectl: (
                self.cluster.kubectl.clone(),
                self.cluster.kubeconfig.clone(),
            ),
            stop: Some(stop),
            server: Some(server),
            _turn: turn,
        }
    }

    /// Creates a Deployment `name` at `replicas` and a ScaledObject of that name on it.
    pub async fn create_target(&self, name: &str, replicas: i32, spec: serde_json::Value) {
        let worker = serde_json::to_value(deployment(name, replicas, &[])).expect("json");
        self.create::<k8s_openapi::api::apps::v1::Deployment>(worker)
            .await;
        self.create::<ebb_crds::ScaledObject>(scaled_object_for(name, spec))
            .await;
    }

    /// Deletes every ScaledObject of this test's namespace and waits until they are gone (ebb
    /// must be running to release its finalizer).
    pub async fn delete_scaled_objects(&self) {
        self.delete_all::<ebb_crds::ScaledObject>().await;
    }

    /// Deletes every ScaledJob of this test's namespace and waits until they are gone (ebb must
    /// be running to release its finalizer).
    pub async fn delete_scaled_jobs(&self) {
        self.delete_all::<ebb_crds::ScaledJob>().await;
    }

    async fn delete_all<K>(&self)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
        <K as kube::Resource>::DynamicType: Default,
    {
        let api = self.api::<K>();
        let kind = K::kind(&Default::default()).to_string();
        let _ = api
            .delete_collection(&Default::default(), &Default::default())
            .await;
        eventually(
            &format!("every {kind} deleted"),
            Duration::from_secs(60),
            || async {
                let left = api
                    .list(&Default::default())
                    .await
                    .map_err(|e| e.to_string())?;
                ensure(left.items.is_empty(), || {
                    format!("{} left", left.items.len())
                })
            },
        )
        .await;
    }

    /// A connection to database `db` of the dev cluster's standalone Redis.
    pub async fn redis(&self, db: u8) -> Redis {
        let client =
            redis::Client::open(format!("{}/{db}", self.cluster.redis_url)).expect("the Redis URL");
        Redis(
            client
                .get_multiplexed_async_connection()
                .await
                .expect("a Redis connection"),
        )
    }

    /// The standalone Redis's `host:port`, as a trigger's `address`.
    pub fn redis_address(&self) -> &str {
        self.cluster.redis_url.trim_start_matches("redis://")
    }

    /// RabbitMQ's management API: its base URL without credentials (ending in `/`) and the
    /// dev cluster's administrator as `(user, password)` for basic auth.
    pub fn rabbitmq_management(&self) -> (reqwest::Url, (String, String)) {
        let mut url = reqwest::Url::parse(&self.cluster.rabbitmq_management_url)
            .expect("the dev cluster's management URL");
        let user = (
            url.username().to_string(),
            url.password().unwrap_or("").to_string(),
        );
        url.set_username("").expect("an http URL");
        url.set_password(None).expect("an http URL");
        (url, user)
    }

    /// An AMQP connection with publisher confirms to the dev cluster's RabbitMQ.
    pub async fn amqp(&self) -> Amqp {
        let connection = lapin::Connection::connect(
            &self.cluster.rabbitmq_amqp_url,
            lapin::ConnectionProperties::default(),
        )
        .await
        .expect("AMQP connection");
        let channel = connection.create_channel().await.expect("AMQP channel");
        channel
            .confirm_select(Default::default())
            .await
            .expect("publisher confirms");
        Amqp {
            _connection: connection,
            channel,
        }
    }

    /// Waits (up to `deadline`) until a Deployment's replica count satisfies `wanted`.
    pub async fn await_replicas(
        &self,
        deployment: &str,
        what: &str,
        deadline: Duration,
        wanted: impl Fn(i32) -> bool,
    ) {
        eventually(&format!("{deployment}: {what}"), deadline, || async {
            let n = self.replicas(deployment).await?;
            ensure(wanted(n), || format!("replicas {n}"))
        })
        .await;
    }

    /// A Deployment's `spec.replicas` (-1 when unset).
    pub async fn replicas(&self, deployment: &str) -> Result<i32, String> {
        let d = self
            .api::<k8s_openapi::api::apps::v1::Deployment>()
            .get(deployment)
            .await
            .map_err(|e| e.to_string())?;
        Ok(d.spec.and_then(|s| s.replicas).unwrap_or(-1))
    }

    /// The Events about the object named `name` in this test's namespace.
    pub async fn events_of(&self, name: &str) -> Result<Vec<Event>, String> {
        self.api::<Event>()
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .map(|list| list.items)
            .map_err(|e| e.to_string())
    }

    /// Waits (up to `deadline`) until Events about `name` carry every one of `reasons`.
    pub async fn await_event_reasons(&self, name: &str, reasons: &[&str], deadline: Duration) {
        eventually(&format!("{name}: Events {reasons:?}"), deadline, || async {
            let events = self.events_of(name).await?;
            let seen: Vec<&str> = events.iter().filter_map(|e| e.reason.as_deref()).collect();
            ensure(reasons.iter().all(|r| seen.contains(r)), || {
                format!("{seen:?}")
            })
        })
        .await;
    }

    /// A ScaledObject's condition of `type_`: its status, reason and message.
    pub async fn condition(
        &self,
        scaled_object: &str,
        type_: &str,
    ) -> Result<(String, String, String), String> {
        let so = self
            .api::<ebb_crds::ScaledObject>()
            .get(scaled_object)
            .await
            .map_err(|e| e.to_string())?;
        so.status
            .and_then(|s| s.conditions)
            .and_then(|c| c.into_iter().find(|c| c.type_ == type_))
            .map(|c| {
                (
                    c.status,
                    c.reason.unwrap_or_default(),
                    c.message.unwrap_or_default(),
                )
            })
            .ok_or_else(|| format!("{scaled_object} has no {type_} condition"))
    }

    /// Creates a namespaced object in this test's namespace from its JSON manifest.
    pub async fn create<K>(&self, manifest: serde_json::Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
        <K as kube::Resource>::DynamicType: Default,
    {
        let object: K = match serde_json::from_value(manifest) {
            Ok(o) => o,
            Err(e) => panic!("a {} manifest: {e}", K::kind(&Default::default())),
        };
        match self
            .api::<K>()
            .create(&kube::api::PostParams::default(), &object)
            .await
        {
            Ok(created) => created,
            Err(e) => panic!("creating a {}: {e}", K::kind(&Default::default())),
        }
    }

    /// An API handle for a namespaced resource in this test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// A connection to one database of the dev cluster's standalone Redis.
pub struct Redis(redis::aio::MultiplexedConnection);

impl Redis {
    /// RPUSH `items` onto `list`.
    pub async fn rpush(&mut self, list: &str, items: &[&str]) {
        let _: () = redis::cmd("RPUSH")
            .arg(list)
            .arg(items)
            .query_async(&mut self.0)
            .await
            .expect("RPUSH");
    }

    /// Pushes `n` numbered items onto `list`.
    pub async fn push(&mut self, list: &str, n: usize) {
        let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let items: Vec<&str> = items.iter().map(String::as_str).collect();
        self.rpush(list, &items).await;
    }

    /// DEL `keys`.
    pub async fn del(&mut self, keys: &[&str]) {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut self.0)
            .await
            .expect("DEL");
    }
}

/// One AMQP connection to the dev cluster's RabbitMQ, publishing with confirms.
pub struct Amqp {
    _connection: lapin::Connection,
    /// Its channel.
    pub channel: lapin::Channel,
}

impl Amqp {
    /// Declares `queue` (not durable, not exclusive).
    pub async fn declare(&self, queue: &str) {
        self.channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("declare a queue");
    }

    /// Publishes `n` messages to `queue`, each confirmed by the broker.
    pub async fn publish(&self, queue: &str, n: usize) {
        for _ in 0..n {
            self.channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    lapin::options::BasicPublishOptions::default(),
                    b"job",
                    lapin::BasicProperties::default(),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
        }
    }

    /// Empties `queue`.
    pub async fn purge(&self, queue: &str) {
        self.channel
            .queue_purge(queue.into(), lapin::options::QueuePurgeOptions::default())
            .await
            .expect("purge a queue");
    }
}

/// Where the tests serve ebb's external metrics API (the APIService points here).
pub const METRICS_API_PORT: u16 = xtask::cluster::metrics_api::PORT;

/// The APIService the external metrics API is registered as.
pub const APISERVICE: &str = xtask::cluster::metrics_api::APISERVICE;

/// One metrics API registration per cluster at a time: see [`metrics_api_turn`].
static METRICS_API_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This process's turn at the cluster's one `v1beta1.external.metrics.k8s.io` APIService and
/// [`METRICS_API_PORT`]. [`TestEnv::serve_metrics_api`] takes it; a test that registers the
/// APIService itself (or runs an `ebb` that writes its caBundle) takes it first and holds it
/// until it has unregistered ([`UnregisterMetricsApi`], declared after the turn so it drops
/// first). The tests of one binary run side by side; cargo runs the binaries one at a time.
pub async fn metrics_api_turn() -> tokio::sync::MutexGuard<'static, ()> {
    METRICS_API_TURN.lock().await
}

/// ebb's external metrics API served on 127.0.0.1:[`METRICS_API_PORT`] and registered as the
/// cluster's `v1beta1.external.metrics.k8s.io`; unregistered and stopped on drop.
pub struct MetricsApiGuard {
    /// The CA of the serving certificate (the APIService's caBundle).
    pub ca_pem: String,
    env_kubectl: (PathBuf, PathBuf),
    stop: Option<tokio::sync::watch::Sender<bool>>,
    server: Option<std::thread::JoinHandle<()>>,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Drop for MetricsApiGuard {
    fn drop(&mut self) {
        // Unregister first: an APIService without a server stalls namespace deletion.
        let _ = xtask::cluster::metrics_api::unregister(&self.env_kubectl.0, &self.env_kubectl.1);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// How many times a fault test injects its fault: 1 in the suite, `EBB_CHAOS_ROUNDS` (set by
/// `cargo xtask chaos --rounds N`) otherwise.
pub fn chaos_rounds() -> u32 {
    std::env::var("EBB_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Removes the cluster's `v1beta1.external.metrics.k8s.io` APIService when dropped, however the
/// test that registered it ends: one without a server stalls namespace deletion. Register only
/// while holding [`metrics_api_turn`].
pub struct UnregisterMetricsApi<'a>(pub &'a TestEnv);

impl Drop for UnregisterMetricsApi<'_> {
    fn drop(&mut self) {
        let _ = xtask::cluster::metrics_api::unregister(
            &self.0.cluster.kubectl,
            &self.0.cluster.kubeconfig,
        );
    }
}

/// The `ebb` binary of this build (`target/<profile>/ebb`, next to the test executables'
/// `deps/`). `cargo xtask test` builds it before the integration tests.
pub fn ebb_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let binary = profile_dir.join("ebb");
    assert!(
        binary.exists(),
        "{} is missing; build it with `cargo build -p ebb-operator --bin ebb` (cargo xtask test does)",
        binary.display()
    );
    binary
}

/// Keeps an in-process ebb running; dropping it stops the controller.
pub struct EbbGuard {
    /// Its controller's state (scale loops, metrics).
    pub ctx: std::sync::Arc<ebb_operator::controller::Context>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl EbbGuard {
    /// `ebb_apiserver_requests_total` by verb and resource, read from the text ebb serves on
    /// `/metrics`.
    pub fn apiserver_requests(&self) -> std::collections::BTreeMap<(String, String), u64> {
        self.ctx
            .metrics
            .render()
            .lines()
            .filter_map(|line| line.strip_prefix("ebb_apiserver_requests_total{verb=\""))
            .filter_map(|rest| {
                let (verb, rest) = rest.split_once("\",resource=\"")?;
                let (resource, count) = rest.split_once("\"} ")?;
                Some((
                    (verb.to_string(), resource.to_string()),
                    count.parse().ok()?,
                ))
            })
            .collect()
    }
}

/// An in-process ebb under leader election.
pub struct ElectedEbb {
    /// Its controller's state (how many scale loops it runs).
    pub ctx: std::sync::Arc<ebb_operator::controller::Context>,
    task: tokio::task::JoinHandle<Result<(), ebb_operator::leader::LeaderError>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ElectedEbb {
    /// Ends it abruptly, as a killed process would: no lease release, no goodbye.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// A Deployment of `replicas` whose pods kwok runs; its container defines `env`.
pub fn deployment(
    name: &str,
    replicas: i32,
    env: &[(&str, &str)],
) -> k8s_openapi::api::apps::v1::Deployment {
    let env: Vec<serde_json::Value> = env
        .iter()
        .map(|(k, v)| serde_json::json!({"name": k, "value": v}))
        .collect();
    let value = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "worker",
                    "image": "example.invalid/worker:1",
                    "env": env
                }]}
            }
        }
    });
    match serde_json::from_value(value) {
        Ok(d) => d,
        Err(e) => panic!("a valid Deployment: {e}"),
    }
}

/// Every `spec.replicas` the Deployments of the namespace take, as a watch reports them.
pub struct ReplicaLog(
    std::sync::Arc<std::sync::Mutex<Vec<(tokio::time::Instant, String, i32)>>>,
    tokio::task::JoinHandle<()>,
);

impl ReplicaLog {
    /// Starts watching the Deployments of `env`'s namespace.
    pub fn start(env: &TestEnv) -> Self {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let api = env.api::<k8s_openapi::api::apps::v1::Deployment>();
        let task = tokio::spawn(async move {
            use futures::StreamExt as _;
            use kube::runtime::WatchStreamExt as _;
            let mut events = kube::runtime::watcher(api, kube::runtime::watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(event) = events.next().await {
                if let Ok(d) = event {
                    let name = d.metadata.name.clone().unwrap_or_default();
                    let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(-1);
                    if let Ok(mut log) = log.lock() {
                        log.push((tokio::time::Instant::now(), name, replicas));
                    }
                }
            }
        });
        Self(seen, task)
    }

    /// The counts `name` took since `from`.
    pub fn of(&self, name: &str, from: tokio::time::Instant) -> Vec<(tokio::time::Instant, i32)> {
        self.0
            .lock()
            .map(|log| {
                log.iter()
                    .filter(|(at, n, _)| n == name && *at >= from)
                    .map(|(at, _, r)| (*at, *r))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for ReplicaLog {
    fn drop(&mut self) {
        self.1.abort();
    }
}

/// `key` (a PKCS#8 PEM key) encrypted with `password` (PBES2, AES-256-CBC): what a
/// `keyPassword` opens.
pub fn encrypted_key(key: &str, password: &str) -> String {
    use pkcs8::der::Decode as _;
    use pkcs8::der::pem::LineEnding;
    let (_, der) = pkcs8::der::pem::decode_vec(key.trim().as_bytes()).expect("a PEM key");
    let info = pkcs8::PrivateKeyInfo::from_der(&der).expect("a PKCS#8 key");
    let params =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, b"ebb-salt", &[7; 16])
            .expect("parameters");
    info.encrypt_with_params(params, password)
        .expect("encrypts")
        .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
        .expect("PEM")
        .to_string()
}

/// A loopback `host:port` nobody listens on now: a source whose every read fails.
pub fn dead_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A ScaledObject named `name` whose target is the Deployment of the same name; `spec` holds
/// the rest of its spec.
pub fn scaled_object_for(name: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut spec = spec;
    spec["scaleTargetRef"] = serde_json::json!({"name": name});
    serde_json::json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": spec
    })
}

/// `ebb run` of this build against `env`'s namespace, its admin endpoints on a free port
/// (returned); the caller adds its own flags and spawns it.
pub fn ebb_run_command(env: &TestEnv) -> (Command, u16) {
    let admin = free_port();
    let mut cmd = Command::new(ebb_binary());
    cmd.env("KUBECONFIG", &env.cluster.kubeconfig)
        .args(["run", "--namespace", &env.namespace])
        .args(["--watch-namespace", &env.namespace])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")]);
    (cmd, admin)
}

/// Names `conn` `test` (`CLIENT SETNAME`), so [`redis_clients_but_tests`] leaves it out.
pub async fn name_as_test(conn: &mut redis::aio::MultiplexedConnection) {
    let () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("test")
        .query_async(conn)
        .await
        .expect("CLIENT SETNAME");
}

/// Connections to a Redis server other than those named `test` ([`name_as_test`]).
pub async fn redis_clients_but_tests(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .expect("CLIENT LIST");
    list.lines().filter(|l| !l.contains(" name=test ")).count()
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Asynchronous deletion: the namespace controller removes the contents in the background.
        let _ = Command::new(&self.cluster.kubectl)
            .arg(format!(
                "--kubeconfig={}",
                self.cluster.kubeconfig.display()
            ))
            .args(["delete", "namespace", &self.namespace, "--wait=false"])
            .output();
    }
}

/// Polls `check` until it yields a value or `timeout` passes; the panic names `what` and the
/// last observation.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(observed) => observed,
        };
        if Instant::now() > deadline {
            panic!(
                "{what}: not reached within {}s; last seen: {last}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// stdout of a successful command, or a panic with its stderr.
pub fn expect_success(out: &Output, what: &str) -> String {
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a command that must fail.
pub fn expect_failure(out: &Output, what: &str) -> String {
    if out.status.success() {
        panic!(
            "{what} succeeded but should have been refused:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails unless `value` holds; for use inside [`eventually`] checks.
pub fn ensure(cond: bool, observed: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(observed()) }
}

/// Reads a fixture under `crds/tests/fixtures/`.
pub fn fixture(name: &str) -> String {
    let path = workspace_root().join("crds/tests/fixtures").join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

/// Asserts that every `.rs` file in `integration-tests/tests/<binary>/` but `main.rs` is declared
/// `mod <name>;` in that binary's `main.rs`: with `autotests = false` a file left out is neither
/// built nor run, silently.
pub fn assert_every_file_is_a_module(binary: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(binary);
    let main = std::fs::read_to_string(dir.join("main.rs"))
        .unwrap_or_else(|e| panic!("tests/{binary}/main.rs: {e}"));
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("tests/{binary}/: {e}"));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|x| x == "rs") && name != "main" {
            assert!(
                main.lines().any(|l| l.trim() == format!("mod {name};")),
                "tests/{binary}/{name}.rs is not a module of this binary: add `mod {name};` to \
                 tests/{binary}/main.rs"
            );
        }
    }
}

/// Runs SQL with psql as the superuser; panics with psql's output on failure.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-tAc", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs SQL with the mariadb client as the tests' user.
pub fn mariadb(address: &str, user: &(String, String, String), sql: &str) -> String {
    let (host, port) = address.split_once(':').expect("host:port");
    let out = Command::new("mariadb")
        .args(["--no-defaults", "--protocol=tcp", "-N", "-B"])
        .arg(format!("--host={host}"))
        .arg(format!("--port={port}"))
        .arg(format!("--user={}", user.0))
        .arg(format!("--password={}", user.1))
        .arg(&user.2)
        .args(["-e", sql])
        .output()
        .expect("mariadb runs");
    assert!(
        out.status.success(),
        "mariadb {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One call of the SQS JSON protocol (`AmazonSQS.<action>`) to the dev cluster's ElasticMQ,
/// unsigned (ElasticMQ checks no signature); the answer's JSON, or a panic with its error.
pub async fn sqs(endpoint: &str, action: &str, body: serde_json::Value) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(endpoint)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", format!("AmazonSQS.{action}"))
        .body(body.to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("SQS {action}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "SQS {action}: HTTP {status}: {text}");
    if text.trim().is_empty() {
        // DeleteMessage answers with no body.
        return serde_json::json!({});
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("SQS {action}: {e}: {text}"))
}

/// Creates an SQS queue on ElasticMQ; returns its URL.
pub async fn sqs_queue(endpoint: &str, name: &str) -> String {
    let answer = sqs(
        endpoint,
        "CreateQueue",
        serde_json::json!({"QueueName": name}),
    )
    .await;
    answer["QueueUrl"]
        .as_str()
        .unwrap_or_else(|| panic!("CreateQueue answered {answer}"))
        .to_string()
}

/// Sends `n` messages to an SQS queue, each delayed by `delay_seconds`.
pub async fn sqs_send(endpoint: &str, queue_url: &str, n: usize, delay_seconds: u32) {
    for i in 0..n {
        sqs(
            endpoint,
            "SendMessage",
            serde_json::json!({"QueueUrl": queue_url, "MessageBody": format!("job {i}"), "DelaySeconds": delay_seconds}),
        )
        .await;
    }
}

/// Receives up to `n` messages (they become in flight for `visibility_seconds`); returns their
/// receipt handles.
pub async fn sqs_receive(
    endpoint: &str,
    queue_url: &str,
    n: usize,
    visibility_seconds: u32,
) -> Vec<String> {
    let mut handles = Vec::new();
    while handles.len() < n {
        let want = (n - handles.len()).min(10);
        let answer = sqs(
            endpoint,
            "ReceiveMessage",
            serde_json::json!({"QueueUrl": queue_url, "MaxNumberOfMessages": want, "VisibilityTimeout": visibility_seconds, "WaitTimeSeconds": 1}),
        )
        .await;
        let messages = answer["Messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        handles.extend(
            messages
                .iter()
                .filter_map(|m| m["ReceiptHandle"].as_str().map(String::from)),
        );
    }
    handles
}

/// Deletes received messages by their receipt handles.
pub async fn sqs_delete(endpoint: &str, queue_url: &str, handles: &[String]) {
    for handle in handles {
        sqs(
            endpoint,
            "DeleteMessage",
            serde_json::json!({"QueueUrl": queue_url, "ReceiptHandle": handle}),
        )
        .await;
    }
}

/// One read of a scaler's first (External) metric; the error as text.
pub async fn read_scaler(
    scaler: &dyn ebb_scalers::Scaler,
) -> Result<ebb_scalers::MetricsAndActivity, String> {
    let name = scaler.metric_specs()[0]
        .external_name()
        .expect("an external metric")
        .to_string();
    scaler
        .metrics_and_activity(&name)
        .await
        .map_err(|e| e.to_string())
}

/// Reads the scaler until its value is `value` (the source has caught up), for at most 30 s.
pub async fn read_scaler_until(
    scaler: &dyn ebb_scalers::Scaler,
    what: &str,
    value: f64,
) -> ebb_scalers::MetricsAndActivity {
    eventually(
        &format!("{what}: {value}"),
        Duration::from_secs(30),
        || async {
            let got = read_scaler(scaler).await?;
            ensure(got.values[0].value == value, || format!("{got:?}"))?;
            Ok(got)
        },
    )
    .await
}

/// A durable JetStream pull consumer.
pub type NatsConsumer = jetstream::consumer::Consumer<jetstream::consumer::pull::Config>;

/// A JetStream stream on `<name>.>` with a durable pull consumer `workers` (explicit acks).
pub async fn nats_stream(nats_url: &str, name: &str) -> (jetstream::Context, NatsConsumer) {
    nats_stream_replicated(nats_url, name, 1).await
}

/// [`nats_stream`] with `replicas` copies of the stream and its consumer, on a cluster reached at
/// `nats_urls` (comma-separated).
pub async fn nats_stream_replicated(
    nats_urls: &str,
    name: &str,
    replicas: usize,
) -> (jetstream::Context, NatsConsumer) {
    let servers: Vec<async_nats::ServerAddr> = nats_urls
        .split(',')
        .map(|url| url.parse().expect("a NATS URL"))
        .collect();
    let client = async_nats::connect(servers).await.expect("NATS connects");
    let js = jetstream::new(client);
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: name.to_string(),
            subjects: vec![format!("{name}.>")],
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .expect("stream created");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("workers".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("consumer created");
    (js, consumer)
}

/// Publishes `n` messages to `<stream>.jobs`, each acknowledged by JetStream.
pub async fn nats_publish(js: &jetstream::Context, stream: &str, n: usize) {
    for i in 0..n {
        js.publish(format!("{stream}.jobs"), format!("job {i}").into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
}

/// Pulls `n` messages without acknowledging them.
pub async fn nats_pull(
    consumer: &jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    n: usize,
) -> Vec<jetstream::Message> {
    let mut batch = consumer
        .fetch()
        .max_messages(n)
        .messages()
        .await
        .expect("fetch");
    let mut got = Vec::new();
    while let Some(message) = futures::StreamExt::next(&mut batch).await {
        got.push(message.expect("a message"));
    }
    got
}

/// Runs one of Kafka's own command-line tools (`org.apache.kafka.tools.*`, from the jars the
/// dev cluster's broker runs on) with `stdin`; its stdout, or a panic with its output.
pub fn kafka_tool(class: &str, args: &[&str], stdin: Option<&str>) -> String {
    xtask::cluster::streams::kafka_tool(class, args, stdin).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Creates `topic` with `partitions` partitions on the broker at `bootstrap`.
pub fn kafka_topic(bootstrap: &str, topic: &str, partitions: u32) {
    kafka_tool(
        "org.apache.kafka.tools.TopicCommand",
        &[
            "--bootstrap-server",
            bootstrap,
            "--create",
            "--topic",
            topic,
            "--partitions",
            &partitions.to_string(),
            "--replication-factor",
            "1",
        ],
        None,
    );
}

/// Produces `n` keyed messages to `topic` (the keys spread them over the partitions).
pub fn kafka_produce(bootstrap: &str, topic: &str, n: usize) {
    let lines: String = (0..n).map(|i| format!("key-{i}\tmessage {i}\n")).collect();
    kafka_tool(
        "org.apache.kafka.tools.ConsoleProducer",
        &[
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--property",
            "parse.key=true",
        ],
        Some(&lines),
    );
}

/// The latest offset of each partition of `topic`, by partition, as Kafka's GetOffsetShell
/// reads them.
pub fn kafka_latest(bootstrap: &str, topic: &str) -> Vec<i64> {
    let out = kafka_tool(
        "org.apache.kafka.tools.GetOffsetShell",
        &["--bootstrap-server", bootstrap, "--topic", topic],
        None,
    );
    let mut offsets: Vec<(i32, i64)> = out
        .lines()
        .filter_map(|l| {
            let mut parts = l.rsplitn(3, ':');
            let offset = parts.next()?.parse().ok()?;
            let partition = parts.next()?.parse().ok()?;
            Some((partition, offset))
        })
        .collect();
    offsets.sort_unstable();
    offsets.into_iter().map(|(_, o)| o).collect()
}

/// Sets `group`'s committed offset of every partition of `topic` to `offset` (the latest where
/// a partition holds fewer), as Kafka's consumer-groups tool does.
pub fn kafka_commit(bootstrap: &str, group: &str, topic: &str, offset: i64) {
    kafka_reset(
        bootstrap,
        group,
        topic,
        &["--to-offset", &offset.to_string()],
    );
}

/// Commits `group`'s offsets of `topic` at the end of each partition: all consumed.
pub fn kafka_commit_to_latest(bootstrap: &str, group: &str, topic: &str) {
    kafka_reset(bootstrap, group, topic, &["--to-latest"]);
}

fn kafka_reset(bootstrap: &str, group: &str, topic: &str, to: &[&str]) {
    let mut args = vec![
        "--bootstrap-server",
        bootstrap,
        "--group",
        group,
        "--reset-offsets",
        "--topic",
        topic,
        "--execute",
    ];
    args.extend_from_slice(to);
    kafka_tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &args,
        None,
    );
}
