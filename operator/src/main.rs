//! The `ebb` binary.
//!
//! `ebb run` runs the ScaledObject controller, its scale loops and the external metrics API
//! against the cluster of the current kubeconfig (or the in-cluster service account), with
//! leader election and the admin endpoints.

use std::sync::Arc;

use ebb_operator::cli::{
    BUILD, Command, GetArgs, KubeArgs, LogFormat, OutputFormat, RunArgs, cluster_objects_namespace,
};
use ebb_operator::controller::{Context, ControllerEnd};
use ebb_operator::supervise::{Shutdown, Stopped, supervise};
use ebb_operator::{admin, admission, leader, metrics_api};

/// The binary's allocator: jemalloc gives freed memory back to the system after its decay time.
/// With glibc's malloc ebb kept about 20 MiB above its baseline after 1,000 ScaledObjects came
/// and went (jemalloc: 7 MiB); at rest both hold the same (docs/benchmarks.md).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The runtime's worker threads when `TOKIO_WORKER_THREADS` does not say: at most two. Without a
/// CPU limit a pod sees every core of its node, and one worker per core would only add threads
/// (and their allocator caches) to a process that polls on a 100 ms grid; two keep the metrics
/// API answering while the loops poll.
const WORKER_THREADS: usize = 2;

fn main() -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        runtime.worker_threads(cores.min(WORKER_THREADS));
    }
    runtime.build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    match ebb_operator::cli::parse().command {
        Command::Run(args) => {
            let RunArgs {
                namespace,
                cluster_object_namespace,
                filepath_auth_root_path,
                bound_service_account_token_expiry,
                watch_namespace,
                activation_budget,
                leader_elect,
                lease_name,
                identity,
                admin_addr,
                log_format,
                metrics_api_addr,
                tls_cert_file,
                tls_private_key_file,
                tls_names,
                apiservice,
                admission_addr,
                admission_tls_cert_file,
                admission_tls_private_key_file,
                admission_tls_names,
                admission_tls_secret,
                validating_webhook_configuration,
            } = *args;
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            // Colours only for a terminal, never in a log file or a collector.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let logs = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(ansi);
            match log_format {
                LogFormat::Plain => logs.init(),
                LogFormat::Json => logs.json().init(),
            }
            let metrics = Arc::new(ebb_operator::admin::Metrics::default());
            let client = ebb_operator::client::counted(metrics.clone()).await?;
            let mut ctx = Context::new(
                client.clone(),
                ebb_scalers::Registry::with_builtins(),
                cluster_objects_namespace(cluster_object_namespace, &namespace),
            );
            ctx.metrics = metrics;
            ctx.watch_namespace = watch_namespace.filter(|ns| !ns.is_empty());
            ctx.file_path_root = filepath_auth_root_path;
            ctx.token_expiry = bound_service_account_token_expiry;
            ctx.activation = ebb_operator::scale::budget::Budgets::new(activation_budget);
            let ctx = Arc::new(ctx);
            // One shutdown signal for every task: the servers, the election and the controller.
            let shutdown = Shutdown::on_signal();
            let mut servers = tokio::task::JoinSet::new();
            // With leader election only the leader's pod is behind the APIService, so the
            // leader sets the caBundle to its own generated CA when it takes over; a standby
            // starting up must not overwrite it.
            let mut ca_bundle_on_lead = None;
            if metrics_api_addr != "off" {
                let settings = metrics_api::Settings {
                    addr: metrics_api_addr.parse().map_err(|e| {
                        anyhow::anyhow!("--metrics-api-addr {metrics_api_addr:?}: {e}")
                    })?,
                    cert_and_key: tls_cert_file.zip(tls_private_key_file),
                    names: if tls_names.is_empty() {
                        default_tls_names(&namespace)
                    } else {
                        tls_names
                    },
                    apiservice: apiservice.clone().filter(|_| !leader_elect),
                };
                let (server, ca_pem) =
                    metrics_api::start(ctx.metrics_api_sources(), settings, shutdown.wait())
                        .await?;
                servers.spawn(async move {
                    server.await;
                    "the external metrics API"
                });
                if leader_elect {
                    ca_bundle_on_lead = apiservice.zip(ca_pem);
                }
            }
            if admission_addr != "off" {
                let settings = admission::server::Settings {
                    addr: admission_addr
                        .parse()
                        .map_err(|e| anyhow::anyhow!("--admission-addr {admission_addr:?}: {e}"))?,
                    cert_and_key: admission_tls_cert_file.zip(admission_tls_private_key_file),
                    names: if admission_tls_names.is_empty() {
                        default_webhook_tls_names(&namespace)
                    } else {
                        admission_tls_names
                    },
                    shared_secret: Some(admission_tls_secret)
                        .filter(|s| !s.is_empty())
                        .map(|s| (namespace.clone(), s)),
                    webhook_configuration: validating_webhook_configuration,
                };
                let caches =
                    admission::server::Caches::start(&client, ctx.watch_namespace.as_deref());
                let (server, _) = admission::server::start(
                    client.clone(),
                    ctx.registry.clone(),
                    ctx.metrics.clone(),
                    caches,
                    settings,
                    shutdown.wait(),
                )
                .await?;
                let server = admission::server::on_own_thread(server)?;
                servers.spawn(async move {
                    server.await;
                    "the admission webhook"
                });
            }
            let listener = tokio::net::TcpListener::bind(admin_addr).await?;
            let admin_server = admin::serve(listener, ctx.metrics.clone(), shutdown.wait());
            servers.spawn(async move {
                if let Err(e) = admin_server.await {
                    tracing::error!(error = %e, "the admin server failed");
                }
                "the admin server"
            });
            // Ready once the apiserver serves the ScaledObject API to this identity.
            let objects: kube::Api<ebb_crds::ScaledObject> = match &ctx.watch_namespace {
                Some(ns) => kube::Api::namespaced(client.clone(), ns),
                None => kube::Api::all(client.clone()),
            };
            tracing::info!(version = BUILD, "ebb starting");
            match objects
                .list(&kube::api::ListParams::default().limit(1))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => anyhow::bail!(
                    "the apiserver serves no ScaledObjects (keda.sh/v1alpha1): install the CRDs \
                     first (`kubectl apply --server-side -f crds/manifests/` or `ebb crds | \
                     kubectl apply --server-side -f -`)"
                ),
                Err(e) => return Err(e.into()),
            }
            ctx.metrics.set_ready(true);
            let work = leader_or_controller(
                ctx,
                client,
                LeaderSettings {
                    elect: leader_elect,
                    lease_name,
                    namespace,
                    identity,
                    ca_bundle_on_lead,
                },
                shutdown.clone(),
            );
            if let Err(e) = supervise(work, servers, &shutdown).await {
                let e = match e {
                    Stopped::Work(e) => e,
                    Stopped::ServerEnded(_) => anyhow::anyhow!("{e}"),
                };
                tracing::error!(error = %e, "stopping");
                return Err(e);
            }
        }
        Command::Version => println!("ebb {BUILD}"),
        Command::Explain { object, kube } => {
            let (client, _) = cli_client(&kube).await?;
            // A ScaledObject, a ScaledJob, or both when both kinds have the name.
            let (namespace, name) = object.split_once('/').unwrap_or_default();
            let scaled_object = match ebb_operator::explain::gather(&client, &object).await {
                Ok(facts) => Some(facts),
                Err(ebb_operator::explain::ExplainError::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let scaled_job = ebb_operator::jobs::explain::gather(&client, namespace, name).await?;
            if scaled_object.is_none() && scaled_job.is_none() {
                anyhow::bail!("ScaledObject or ScaledJob {object} not found");
            }
            let mut text = String::new();
            if let Some(facts) = &scaled_object {
                text.push_str(&ebb_operator::explain::render(facts));
            }
            if let Some(facts) = &scaled_job {
                if scaled_object.is_some() {
                    text.push('\n');
                }
                text.push_str(&ebb_operator::jobs::explain::render(facts));
            }
            write_stdout(&text)?;
        }
        Command::Get(args) => get(args).await?,
        Command::Crds => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            for (_, yaml) in ebb_crds::manifests()? {
                // A closed pipe (`ebb crds | head`) ends the output quietly.
                if write!(out, "---\n{yaml}").is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// A client for `ebb explain` and `ebb get`, and the namespace the kubeconfig's context names.
async fn cli_client(args: &KubeArgs) -> anyhow::Result<(kube::Client, String)> {
    let options = kube::config::KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(file, &options).await?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await?,
    };
    // A 503 from the metrics API is an answer (the metric cannot be read now), not a reason to
    // ask again for minutes, as kube's default retry policy would.
    config.default_retry = false;
    let namespace = config.default_namespace.clone();
    Ok((kube::Client::try_from(config)?, namespace))
}

/// `ebb get`: the table, or the documents with `-o`.
async fn get(args: GetArgs) -> anyhow::Result<()> {
    use ebb_operator::get::{self, Scope};
    let (client, default_namespace) = cli_client(&args.kube).await?;
    let namespace = args.namespace.unwrap_or(default_namespace);
    let scope = match (args.all_namespaces, args.names.is_empty()) {
        (true, _) => Scope::All,
        (false, false) => Scope::Objects {
            namespace,
            names: args.names,
        },
        (false, true) => Scope::Namespace(namespace),
    };
    let rows = get::gather(&client, &scope).await?;
    let documents = get::documents(&rows, &scope);
    let text = match args.output {
        Some(OutputFormat::Json) => serde_json::to_string_pretty(&documents)? + "\n",
        Some(OutputFormat::Yaml) => serde_norway::to_string(&documents)?,
        Some(OutputFormat::Name) | None if rows.is_empty() => {
            eprintln!("{}", get::nothing_found(&scope));
            return Ok(());
        }
        Some(OutputFormat::Name) => get::names(&rows),
        None => get::table(&rows, scope == Scope::All),
    };
    write_stdout(&text)
}

/// Writes `text` to stdout; a reader that stops early (`ebb get -A | head`) ends the output
/// quietly instead of failing.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The names the aggregator and local clients reach the metrics API by: the Service
/// `ebb-metrics` in ebb's namespace (as `deploy/20-metrics-api.yaml` creates it) and loopback.
fn default_tls_names(namespace: &str) -> Vec<String> {
    vec![
        format!("ebb-metrics.{namespace}.svc"),
        format!("ebb-metrics.{namespace}.svc.cluster.local"),
        "localhost".into(),
        "127.0.0.1".into(),
    ]
}

/// The names the apiserver reaches the webhook by: the Service `ebb-webhook` in ebb's
/// namespace, and loopback.
fn default_webhook_tls_names(namespace: &str) -> Vec<String> {
    vec![
        format!("ebb-webhook.{namespace}.svc"),
        format!("ebb-webhook.{namespace}.svc.cluster.local"),
        "localhost".into(),
        "127.0.0.1".into(),
    ]
}

/// How `ebb run` decides who runs the controller.
struct LeaderSettings {
    elect: bool,
    lease_name: String,
    namespace: String,
    identity: Option<String>,
    /// The APIService and the generated CA the leader points it at when it takes over.
    ca_bundle_on_lead: Option<(String, String)>,
}

/// Runs the controller: under leader election, or at once. Returns an error when it ended
/// without being asked (a leader then has stepped down first).
async fn leader_or_controller(
    ctx: Arc<Context>,
    client: kube::Client,
    settings: LeaderSettings,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let pod = std::env::var("POD_NAME").ok();
    if !settings.elect {
        leader::mark_pod(&client, &settings.namespace, pod.as_deref(), true).await;
        return match ebb_operator::run::controllers(ctx, shutdown.wait()).await {
            ControllerEnd::Shutdown => Ok(()),
            ControllerEnd::Ended => Err(anyhow::anyhow!("the controller ended unasked")),
        };
    }
    let identity = settings.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "ebb".into());
        format!("{host}-{}", std::process::id())
    });
    let cfg = leader::LeaseConfig {
        name: settings.lease_name,
        namespace: settings.namespace,
        identity,
        duration: std::time::Duration::from_secs(15),
        retry: std::time::Duration::from_secs(5),
    };
    // Only the leader's pod carries `ebb.sh/leader=true`: the metrics API's Service selects it,
    // since only the leader's loops hold readings.
    let pod_namespace = cfg.namespace.clone();
    leader::mark_pod(&client, &pod_namespace, pod.as_deref(), false).await;
    let labeller = client.clone();
    let ca_bundle = settings.ca_bundle_on_lead;
    leader::run_as_leader(
        client,
        cfg,
        move |mut stopped| {
            let ctx = ctx.clone();
            let (client, namespace, pod) = (labeller.clone(), pod_namespace.clone(), pod.clone());
            let ca_bundle = ca_bundle.clone();
            async move {
                if let Some((apiservice, ca_pem)) = &ca_bundle {
                    leader::set_ca_bundle(&client, apiservice, ca_pem).await;
                }
                leader::mark_pod(&client, &namespace, pod.as_deref(), true).await;
                let end = ebb_operator::run::controllers(ctx, async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await;
                leader::mark_pod(&client, &namespace, pod.as_deref(), false).await;
                // Returning unasked is how the election learns that the controller ended.
                if end == ControllerEnd::Ended {
                    tracing::error!("the controller ended unasked");
                }
            }
        },
        shutdown.wait(),
    )
    .await?;
    Ok(())
}
