//! `cargo xtask <command>`: ebb's developer commands.

mod bench;
mod chaos;
mod demo;
mod fuzz;
mod host;
mod image;
mod suite;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "ebb's developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write crds/manifests/ and the Helm chart's crds/ from the API types (`--check`: fail if
    /// they are out of date).
    Crds {
        /// Compare instead of writing.
        #[arg(long)]
        check: bool,
    },
    /// Manage the local dev cluster (Kubernetes, etcd, kwok, Redis, RabbitMQ on loopback).
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Run the whole suite: fmt, clippy, unit tests, then integration tests and the demo on the
    /// dev cluster.
    Test(suite::TestArgs),
    /// Bring up the dev cluster and show ebb at work.
    Demo(demo::DemoArgs),
    /// Measure ebb on the dev cluster (not part of the suite); results in target/bench/.
    Bench(bench::BenchArgs),
    /// Run the fault and churn tests at length on the dev cluster (not part of the suite, which
    /// runs them once): each fault several times, 1,000 ScaledObjects churned.
    Chaos(chaos::ChaosArgs),
    /// Build ebb's container image without a container engine: the static (musl) binary and an
    /// OCI image layout and archive in target/image/.
    Image(image::ImageArgs),
    /// Run the fuzz targets (fuzz/) under libFuzzer for N seconds each (needs rustup; installs
    /// the nightly toolchain if missing).
    Fuzz(fuzz::FuzzArgs),
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Install, build and start whatever is missing (idempotent).
    Up,
    /// Stop every process `up` started.
    Down,
    /// Show each service's state; exits non-zero unless all are healthy.
    Status,
    /// Register an external metrics API served on 127.0.0.1 (a local `ebb run`) with the
    /// aggregator: ExternalName Service `ebb-system/ebb-metrics-dev` and the APIService. Serve
    /// it with `ebb run --metrics-api-addr 127.0.0.1:32680 --apiservice
    /// v1beta1.external.metrics.k8s.io --tls-names ebb-metrics-dev.ebb-system.svc,127.0.0.1`.
    RegisterMetricsApi {
        /// The port the server listens on.
        #[arg(long, default_value_t = xtask::cluster::metrics_api::PORT)]
        port: u16,
    },
    /// Remove that APIService again (do so before stopping the server).
    UnregisterMetricsApi,
}

fn main() {
    // Errors are printed as one chain of causes, never as a backtrace.
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Crds { check } => xtask::crds::write(check),
        Command::Cluster { action } => match action {
            ClusterAction::Up => xtask::cluster::up().map(|_| ()),
            ClusterAction::Down => xtask::cluster::down(),
            ClusterAction::RegisterMetricsApi { port } => {
                let layout = xtask::cluster::Layout::for_workspace();
                let kubectl = xtask::cluster::binaries::Binaries::cached().path("kubectl");
                xtask::cluster::metrics_api::register(&kubectl, &layout.kubeconfig(), port)?;
                println!(
                    "registered {} -> https://127.0.0.1:{port}; serve it with:\n  ebb run --metrics-api-addr 127.0.0.1:{port} --apiservice {}",
                    xtask::cluster::metrics_api::APISERVICE,
                    xtask::cluster::metrics_api::APISERVICE
                );
                Ok(())
            }
            ClusterAction::UnregisterMetricsApi => {
                let layout = xtask::cluster::Layout::for_workspace();
                let kubectl = xtask::cluster::binaries::Binaries::cached().path("kubectl");
                xtask::cluster::metrics_api::unregister(&kubectl, &layout.kubeconfig())
            }
            ClusterAction::Status => {
                if !xtask::cluster::status()? {
                    std::process::exit(1);
                }
                Ok(())
            }
        },
        Command::Test(args) => suite::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Image(args) => image::run(args).map(|_| ()),
        Command::Chaos(args) => chaos::run(args),
    }
}
