//! `ebb`'s command line: its subcommands and `ebb run`'s flags (with their environment
//! variables), parsed by clap. In the library so that its tests run with the library's.

use clap::{Parser, Subcommand, ValueEnum};

/// ebb: event-driven autoscaling for Kubernetes, compatible with KEDA's API.
/// This build: version, git commit and target, as `ebb version` and `--version` print it.
pub const BUILD: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("EBB_GIT_COMMIT"),
    ", ",
    env!("EBB_TARGET"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "ebb",
    version = BUILD,
    about = "Event-driven autoscaling for Kubernetes, speaking KEDA's keda.sh/v1alpha1 API",
    after_help = "Examples:\n  ebb run --namespace ebb-system\n  ebb explain shop/orders-worker\n  ebb get -A\n  ebb crds | kubectl apply --server-side -f -\n\nKubernetes access comes from the in-cluster ServiceAccount or the kubeconfig (KUBECONFIG, ~/.kube/config). Installed as `kubectl-ebb` on the PATH, it is kubectl's plugin: `kubectl ebb get`, `kubectl ebb explain`. Docs: docs/configuration.md"
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Print the version of this build (version, git commit, target).
    Version,
    /// Print the CustomResourceDefinitions ebb serves, as YAML.
    Crds,
    /// Run the controller (and the external metrics API) until SIGTERM or Ctrl-C.
    #[command(
        after_help = "Every flag can also be set by the environment variable shown. Log verbosity follows RUST_LOG (default: info), e.g. RUST_LOG=ebb_operator=debug."
    )]
    Run(Box<RunArgs>),
    /// Explain why a ScaledObject is at its replica count (each metric as the HPA reads it, its
    /// target and activity, the HPA's state, and the decision ebb takes next), or why a
    /// ScaledJob's last poll created as many Jobs as it did.
    #[command(
        after_help = "For a ScaledObject, reads the object, its HPA and target, and asks ebb's external metrics API through the apiserver (as the HPA does), with the kubeconfig's credentials. For a ScaledJob, reads its status.lastPoll and its Jobs. Example: ebb explain shop/orders-worker"
    )]
    Explain {
        /// The ScaledObject or ScaledJob, as `<namespace>/<name>`.
        object: String,
        /// Which cluster.
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// List ScaledObjects in one table: target, bounds, replicas, trigger types, each metric's
    /// reading against its HPA target, Ready and Active, and the decision ebb takes next.
    #[command(
        after_help = "Reads the objects' status, targets and HPAs, and each metric through ebb's external metrics API via the apiserver (as the HPA does), with the kubeconfig's credentials. `ebb explain <namespace>/<name>` says the same about one object in full.\n\nExamples:\n  ebb get -n shop\n  ebb get -A\n  kubectl ebb get orders-worker -n shop -o yaml\n  kubectl ebb get -n shop -o name"
    )]
    Get(GetArgs),
}

/// The cluster a client command talks to: the kubeconfig's current context unless told.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KubeArgs {
    /// The kubeconfig file (default: KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
}

/// `ebb get`'s arguments, as kubectl spells them.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// ScaledObjects' names (default: all in the namespace).
    pub names: Vec<String>,
    /// The namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "names")]
    pub all_namespaces: bool,
    /// Print documents instead of the table.
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
    /// Which cluster.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `-o`: the documents' format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// JSON, indented.
    Json,
    /// YAML.
    Yaml,
    /// `scaledobject.keda.sh/<name>`, one a line.
    Name,
}

/// The name users type for this program: `kubectl ebb` when it was installed as kubectl's
/// plugin (`kubectl-ebb` on the PATH), `ebb` otherwise.
pub fn invoked_as(argv0: &std::ffi::OsStr) -> &'static str {
    let file = std::path::Path::new(argv0)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    if file == "kubectl-ebb" || file == "kubectl-ebb.exe" {
        "kubectl ebb"
    } else {
        "ebb"
    }
}

/// Parses the command line, or prints the error or help and exits as clap does.
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = invoked_as(&argv0);
    let matches = Cli::command()
        .bin_name(name)
        .display_name(name)
        .get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `ebb run`'s settings.
#[derive(clap::Args)]
pub struct RunArgs {
    /// ebb's own namespace: the Lease's, and where ClusterTriggerAuthentications read their
    /// Secrets unless --cluster-object-namespace says otherwise.
    #[arg(long, env = "POD_NAMESPACE", default_value = "ebb-system")]
    pub namespace: String,
    /// Where ClusterTriggerAuthentications read their Secrets and ConfigMaps (default:
    /// --namespace). KEDA's variable, so a migrated cluster's Secrets can stay where they are.
    #[arg(long, env = "KEDA_CLUSTER_OBJECT_NAMESPACE")]
    pub cluster_object_namespace: Option<String>,
    /// The directory ClusterTriggerAuthentications' `filePath` is relative to, as KEDA's flag
    /// of that name (default: no file may be read).
    #[arg(long)]
    pub filepath_auth_root_path: Option<std::path::PathBuf>,
    /// The life asked for bound service-account tokens, a Go duration from 1h to 6h (KEDA's
    /// variable); ebb builds the scalers again at 80 % of it, with fresh tokens.
    #[arg(long, env = "KEDA_BOUND_SERVICE_ACCOUNT_TOKEN_EXPIRY", default_value = "1h", value_parser = token_expiry)]
    pub bound_service_account_token_expiry: std::time::Duration,
    /// Watch ScaledObjects in this namespace only (default: every namespace).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Adaptive activation: reads a second, per server (a Redis, a RabbitMQ over AMQP), that
    /// checks of resting objects between their polls may make; 0 turns them off.
    #[arg(long, env = "EBB_ACTIVATION_BUDGET", default_value_t = crate::scale::budget::DEFAULT_PER_SERVER, value_parser = budget)]
    pub activation_budget: f64,
    /// Elect a leader through a Lease so that several replicas can run and exactly one
    /// writes.
    #[arg(long, env = "EBB_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// The Lease's name (in `--namespace`).
    #[arg(long, env = "EBB_LEASE_NAME", default_value = "ebb-operator")]
    pub lease_name: String,
    /// This replica's identity in the Lease (default: the pod name, else host and pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    #[arg(long, env = "EBB_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: std::net::SocketAddr,
    /// Log format.
    #[arg(long, env = "EBB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Where the external metrics API (HTTPS) is served; `off` disables it.
    #[arg(long, env = "EBB_METRICS_API_ADDR", default_value = "0.0.0.0:6443")]
    pub metrics_api_addr: String,
    /// Serving certificate chain (PEM) of the metrics API, reloaded when it changes; a
    /// certificate is generated at startup when absent.
    #[arg(long, env = "EBB_TLS_CERT_FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "EBB_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<std::path::PathBuf>,
    /// DNS names and IP addresses of a generated certificate, comma-separated [default: the
    /// metrics Service's names in `--namespace`, `ebb-metrics.<namespace>.svc` and
    /// `ebb-metrics.<namespace>.svc.cluster.local`, then `localhost,127.0.0.1`].
    #[arg(long, env = "EBB_TLS_NAMES", value_delimiter = ',')]
    pub tls_names: Vec<String>,
    /// APIService (e.g. `v1beta1.external.metrics.k8s.io`) whose caBundle is set to the
    /// generated certificate's CA: at startup, or with leader election each time this replica
    /// becomes the leader. Not used with `--tls-cert-file`.
    #[arg(long, env = "EBB_APISERVICE")]
    pub apiservice: Option<String>,
    /// Where the validating admission webhook (HTTPS, `POST /validate`) is served; `off` (the
    /// default) disables it. Every replica serves it, from its own caches.
    #[arg(long, env = "EBB_ADMISSION_ADDR", default_value = "off")]
    pub admission_addr: String,
    /// Serving certificate chain (PEM) of the webhook, reloaded when it changes; a
    /// certificate is generated at startup when absent.
    #[arg(
        long,
        env = "EBB_ADMISSION_TLS_CERT_FILE",
        requires = "admission_tls_private_key_file"
    )]
    pub admission_tls_cert_file: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    #[arg(
        long,
        env = "EBB_ADMISSION_TLS_PRIVATE_KEY_FILE",
        requires = "admission_tls_cert_file"
    )]
    pub admission_tls_private_key_file: Option<std::path::PathBuf>,
    /// DNS names and IP addresses of the webhook's generated certificate, comma-separated
    /// [default: `ebb-webhook.<namespace>.svc`, `ebb-webhook.<namespace>.svc.cluster.local`,
    /// `localhost`, `127.0.0.1`].
    #[arg(long, env = "EBB_ADMISSION_TLS_NAMES", value_delimiter = ',')]
    pub admission_tls_names: Vec<String>,
    /// Secret in `--namespace` through which the replicas share one generated webhook
    /// certificate (the first to start stores it); empty: each replica generates its own.
    /// Not used with `--admission-tls-cert-file`.
    #[arg(long, env = "EBB_ADMISSION_TLS_SECRET", default_value = "")]
    pub admission_tls_secret: String,
    /// ValidatingWebhookConfiguration whose webhooks' caBundle is set to the generated
    /// certificate's CA at startup. Not used with `--admission-tls-cert-file`.
    #[arg(long, env = "EBB_VALIDATING_WEBHOOK_CONFIGURATION")]
    pub validating_webhook_configuration: Option<String>,
}

/// How logs are written.
#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Plain,
    /// One JSON object per line.
    Json,
}

/// A budget of reads a second: a finite number, 0 or more.
fn budget(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "expected a number of reads a second, 0 or more, got {text:?}"
        )),
    }
}

/// A bound token's life: a Go duration from 1h to 6h, as KEDA accepts it.
fn token_expiry(text: &str) -> Result<std::time::Duration, String> {
    let hour = std::time::Duration::from_secs(3600);
    match ebb_scalers::trigger::parse_go_duration(text) {
        Some(d) if (hour..=hour * 6).contains(&d) => Ok(d),
        _ => Err(format!(
            "{text:?}: expected a duration from 1h to 6h, such as 1h or 90m"
        )),
    }
}

/// Where ClusterTriggerAuthentications read their Secrets: `--cluster-object-namespace`
/// (KEDA's `KEDA_CLUSTER_OBJECT_NAMESPACE`) if set and not empty, else ebb's namespace.
pub fn cluster_objects_namespace(configured: Option<String>, namespace: &str) -> String {
    configured
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| namespace.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        match Cli::try_parse_from(args).expect("parses").command {
            Command::Run(args) => *args,
            _ => panic!("not run"),
        }
    }

    #[test]
    fn cluster_trigger_authentications_read_from_kedas_namespace_when_asked() {
        let args = run_args(&["ebb", "run", "--namespace", "ebb-system"]);
        assert_eq!(
            cluster_objects_namespace(args.cluster_object_namespace, &args.namespace),
            "ebb-system"
        );
        let args = run_args(&[
            "ebb",
            "run",
            "--namespace",
            "ebb-system",
            "--cluster-object-namespace",
            "keda",
        ]);
        assert_eq!(
            cluster_objects_namespace(args.cluster_object_namespace, &args.namespace),
            "keda"
        );
        assert_eq!(
            cluster_objects_namespace(Some(String::new()), "ebb-system"),
            "ebb-system"
        );
        // KEDA's variable is the flag's environment variable.
        let run = <Cli as clap::CommandFactory>::command()
            .find_subcommand("run")
            .cloned()
            .expect("run");
        let flag = run
            .get_arguments()
            .find(|a| a.get_id() == "cluster_object_namespace")
            .expect("the flag");
        assert_eq!(
            flag.get_env().and_then(|e| e.to_str()),
            Some("KEDA_CLUSTER_OBJECT_NAMESPACE")
        );
    }

    #[test]
    fn get_takes_kubectls_flags() {
        let parsed = Cli::try_parse_from([
            "ebb",
            "get",
            "orders",
            "-n",
            "shop",
            "-o",
            "yaml",
            "--context",
            "prod",
        ])
        .expect("parses");
        let Command::Get(args) = parsed.command else {
            panic!("not get")
        };
        assert_eq!(args.names, ["orders"]);
        assert_eq!(args.namespace.as_deref(), Some("shop"));
        assert_eq!(args.output, Some(OutputFormat::Yaml));
        assert_eq!(args.kube.context.as_deref(), Some("prod"));
        let Command::Get(args) = Cli::try_parse_from(["ebb", "get", "-A", "-o", "json"])
            .expect("parses")
            .command
        else {
            panic!("not get")
        };
        assert!(args.all_namespaces && args.output == Some(OutputFormat::Json));
        let Command::Get(args) = Cli::try_parse_from(["ebb", "get", "a", "b", "-o", "name"])
            .expect("parses")
            .command
        else {
            panic!("not get")
        };
        assert_eq!(args.names, ["a", "b"]);
        assert_eq!(args.output, Some(OutputFormat::Name));
        // A name and every namespace do not go together; an unknown format is refused.
        assert!(Cli::try_parse_from(["ebb", "get", "orders", "-A"]).is_err());
        assert!(Cli::try_parse_from(["ebb", "get", "-o", "wide"]).is_err());
    }

    #[test]
    fn installed_as_kubectl_ebb_it_names_itself_so() {
        for (argv0, name) in [
            ("/usr/local/bin/kubectl-ebb", "kubectl ebb"),
            ("kubectl-ebb", "kubectl ebb"),
            ("/usr/local/bin/ebb", "ebb"),
            ("./target/debug/ebb", "ebb"),
            // Another plugin whose name begins the same.
            ("/usr/local/bin/kubectl-ebb-extra", "ebb"),
        ] {
            assert_eq!(invoked_as(std::ffi::OsStr::new(argv0)), name, "{argv0}");
        }
    }

    #[test]
    fn bound_token_life_is_kedas_range_and_variable() {
        let hour = std::time::Duration::from_secs(3600);
        let args = run_args(&["ebb", "run"]);
        assert_eq!(args.bound_service_account_token_expiry, hour);
        assert!(args.filepath_auth_root_path.is_none());
        let args = run_args(&[
            "ebb",
            "run",
            "--bound-service-account-token-expiry",
            "2h30m",
            "--filepath-auth-root-path",
            "/etc/ebb/auth",
        ]);
        assert_eq!(args.bound_service_account_token_expiry, hour * 5 / 2);
        assert_eq!(
            args.filepath_auth_root_path.as_deref(),
            Some(std::path::Path::new("/etc/ebb/auth"))
        );
        for bad in ["30m", "7h", "soon"] {
            assert!(
                Cli::try_parse_from(["ebb", "run", "--bound-service-account-token-expiry", bad])
                    .is_err(),
                "{bad}"
            );
        }
        let run = <Cli as clap::CommandFactory>::command()
            .find_subcommand("run")
            .cloned()
            .expect("run");
        let flag = run
            .get_arguments()
            .find(|a| a.get_id() == "bound_service_account_token_expiry")
            .expect("the flag");
        assert_eq!(
            flag.get_env().and_then(|e| e.to_str()),
            Some("KEDA_BOUND_SERVICE_ACCOUNT_TOKEN_EXPIRY")
        );
    }
}
