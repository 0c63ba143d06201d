//! Registering an external metrics API served on loopback as the dev cluster's
//! `v1beta1.external.metrics.k8s.io`: an ExternalName Service `ebb-system/ebb-metrics-dev` to
//! 127.0.0.1 (Endpoints refuse loopback addresses) and the APIService, without a caBundle: the
//! server sets it (`ebb run --apiservice v1beta1.external.metrics.k8s.io`). The Service is not
//! `deploy/`'s `ebb-metrics`, so that applying `deploy/` on the dev cluster does not merge into
//! it; the server's certificate must name it ([`TLS_NAMES`]).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Where a local `ebb run` serves the metrics API for the dev cluster.
pub const PORT: u16 = 32680;

/// The dev cluster's stand-in Service in `ebb-system`.
pub const SERVICE: &str = "ebb-metrics-dev";

/// The names a local `ebb run` needs in its certificate (`--tls-names`): the Service the
/// aggregator verifies and loopback.
pub const TLS_NAMES: &str = "ebb-metrics-dev.ebb-system.svc,127.0.0.1";

/// The APIService's name.
pub const APISERVICE: &str = "v1beta1.external.metrics.k8s.io";

/// The Namespace, Service and APIService for a server on 127.0.0.1:`port`.
pub fn manifests(port: u16) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ebb-system"}},
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": SERVICE, "namespace": "ebb-system"},
             "spec": {"type": "ExternalName", "externalName": "127.0.0.1",
                      "ports": [{"port": port, "protocol": "TCP"}]}},
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
             "metadata": {"name": APISERVICE},
             "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1",
                      "service": {"name": SERVICE, "namespace": "ebb-system", "port": port},
                      "groupPriorityMinimum": 100, "versionPriority": 100}}
        ]
    })
    .to_string()
}

fn kubectl(kubectl: &Path, kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(kubectl);
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()));
    cmd
}

/// Applies [`manifests`] (server-side, idempotent).
pub fn register(kubectl_path: &Path, kubeconfig: &Path, port: u16) -> Result<()> {
    let mut child = kubectl(kubectl_path, kubeconfig)
        .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kubectl")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(manifests(port).as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "registering the metrics APIService: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes the APIService (first: one without a server stalls namespace deletion).
pub fn unregister(kubectl_path: &Path, kubeconfig: &Path) -> Result<()> {
    let out = kubectl(kubectl_path, kubeconfig)
        .args([
            "delete",
            "apiservice",
            APISERVICE,
            "--ignore-not-found",
            "--wait=false",
        ])
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "deleting the metrics APIService: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apiservice_points_at_the_external_name_service_on_the_port() {
        let list: serde_json::Value = serde_json::from_str(&manifests(32680)).expect("json");
        let service = &list["items"][1];
        assert_eq!(service["spec"]["type"], "ExternalName");
        assert_eq!(service["spec"]["externalName"], "127.0.0.1");
        let apiservice = &list["items"][2];
        assert_eq!(apiservice["metadata"]["name"], APISERVICE);
        assert_eq!(apiservice["spec"]["service"]["port"], 32680);
        assert!(apiservice["spec"].get("caBundle").is_none());
    }
}
