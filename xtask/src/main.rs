//! `cargo xtask <command>`: ebb's developer commands.

mod demo;
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
    /// Write crds/manifests/ from the API types (`--check`: fail if they are out of date).
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
    /// Run the whole suite: fmt, clippy, unit tests, then integration tests on the dev cluster.
    Test(suite::TestArgs),
    /// Bring up the dev cluster and show ebb at work.
    Demo(demo::DemoArgs),
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Install, build and start whatever is missing (idempotent).
    Up,
    /// Stop every process `up` started.
    Down,
    /// Show each service's state; exits non-zero unless all are healthy.
    Status,
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
            ClusterAction::Status => {
                if !xtask::cluster::status()? {
                    std::process::exit(1);
                }
                Ok(())
            }
        },
        Command::Test(args) => suite::run(args),
        Command::Demo(args) => demo::run(args),
    }
}
