//! The `ebb` binary.
//!
//! The controller, scale loop and metrics API arrive with issues 4 and 5; today the binary
//! reports its version and prints the CRDs it serves.

use clap::{Parser, Subcommand};

/// ebb: event-driven autoscaling for Kubernetes, compatible with KEDA's API.
#[derive(Parser)]
#[command(name = "ebb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version of this build.
    Version,
    /// Print the CustomResourceDefinitions ebb serves, as YAML.
    Crds,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Version => println!("ebb {}", env!("CARGO_PKG_VERSION")),
        Command::Crds => {
            for (_, yaml) in ebb_crds::manifests()? {
                print!("---\n{yaml}");
            }
        }
    }
    Ok(())
}
