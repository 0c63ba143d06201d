//! `cargo xtask demo`: the dev cluster with ebb at work.
//!
//! The operator arrives with later issues; until then the demo brings up the cluster, installs
//! ebb's CRDs and says what it will show.

use std::process::Command;

use anyhow::{Result, bail};
use xtask::cluster;

/// Options of `cargo xtask demo`.
#[derive(clap::Args)]
pub struct DemoArgs {}

/// Brings the cluster up and installs the CRDs.
pub fn run(_args: DemoArgs) -> Result<()> {
    let info = cluster::up()?;
    println!("==> installing ebb's CRDs (crds/manifests/)");
    let status = Command::new(&info.kubectl)
        .arg(format!("--kubeconfig={}", info.kubeconfig.display()))
        .args(["apply", "--server-side", "-f"])
        .arg(xtask::workspace_root().join("crds/manifests"))
        .status()?;
    if !status.success() {
        bail!("kubectl apply of the CRDs failed ({status})");
    }
    println!();
    println!("The dev cluster is up with ebb's CRDs installed. The ebb operator itself is not");
    println!("built yet, so the demo stops here: try");
    println!("  export KUBECONFIG={}", info.kubeconfig.display());
    println!("  {} get so,ta,cta -A", info.kubectl.display());
    println!("`cargo xtask cluster down` stops the cluster.");
    Ok(())
}
