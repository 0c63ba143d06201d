//! The bench's peer: KEDA's operator (and, for the metrics API, its adapter), built by
//! [`xtask::cluster::keda`] and run on the dev cluster on loopback, as ebb is, one autoscaler
//! at a time. While KEDA runs, the cluster holds KEDA's own CRDs; ebb's are put back after.
//!
//! KEDA's figures come from its own endpoints: `rest_client_requests_total` (client-go's count
//! of every request, by method) and `keda_internal_scale_loop_latency_seconds` (one gauge per
//! object, set at each of its polls) from the operator's `/metrics`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xtask::cluster::keda::{KEDA_VERSION, Keda};
use xtask::cluster::{ClusterInfo, Layout, certs, metrics_api};

use crate::host::{Ebb, http, kubectl, wait_for};

/// The operator's `/metrics`.
pub const OPERATOR_METRICS_PORT: u16 = 32695;
const OPERATOR_HEALTH_PORT: u16 = 32696;
const OPERATOR_GRPC_PORT: u16 = 32697;
/// Where the adapter serves the external metrics API (TLS).
pub const ADAPTER_PORT: u16 = 32698;
const ADAPTER_METRICS_PORT: u16 = 32699;

/// The namespace KEDA reads ClusterTriggerAuthentication Secrets from.
const KEDA_NAMESPACE: &str = "keda";

/// KEDA's client rate towards the apiserver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    /// KEDA's defaults: `--kube-api-qps 20 --kube-api-burst 30`, 5 ScaledObject reconciles at
    /// once.
    Default,
    /// Raised as KEDA's troubleshooting guide advises for 400 objects or more.
    Raised,
}

impl Rate {
    /// The operator's flags and environment for this rate.
    fn settings(self) -> (Vec<&'static str>, Vec<(&'static str, &'static str)>) {
        match self {
            Rate::Default => (vec![], vec![]),
            Rate::Raised => (
                vec!["--kube-api-qps=200", "--kube-api-burst=400"],
                vec![("KEDA_SCALEDOBJECT_CTRL_MAX_RECONCILES", "20")],
            ),
        }
    }

    /// How the report names it.
    pub fn describe(self) -> &'static str {
        match self {
            Rate::Default => "KEDA's default client rate (QPS 20, burst 30, 5 reconciles at once)",
            Rate::Raised => {
                "--kube-api-qps=200 --kube-api-burst=400 KEDA_SCALEDOBJECT_CTRL_MAX_RECONCILES=20"
            }
        }
    }

    /// A short label for file names and tables.
    pub fn label(self) -> &'static str {
        match self {
            Rate::Default => "keda-default",
            Rate::Raised => "keda",
        }
    }
}

/// Puts KEDA's CRDs in place of ebb's (the stored objects stay: the schemas are compatible).
fn install_crds(info: &ClusterInfo, keda: &Keda) -> Result<()> {
    println!("==> installing KEDA v{KEDA_VERSION}'s CRDs");
    crate::host::apply(info, &keda.crds)
}

/// Puts ebb's CRDs back, and takes KEDA's eventing CRDs away.
fn restore_crds(info: &ClusterInfo) -> Result<()> {
    println!("==> installing ebb's CRDs again");
    crate::host::apply(info, &xtask::workspace_root().join("crds/manifests"))?;
    let out = kubectl(info)
        .args([
            "delete",
            "crd",
            "cloudeventsources.eventing.keda.sh",
            "clustercloudeventsources.eventing.keda.sh",
            "--ignore-not-found",
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "deleting KEDA's eventing CRDs: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` with KEDA built and its CRDs in place of ebb's, and puts ebb's back afterwards,
/// whether `f` succeeded or not.
pub fn with_keda<T>(info: &ClusterInfo, f: impl FnOnce(&Keda) -> Result<T>) -> Result<T> {
    let keda = xtask::cluster::keda::ensure()?;
    install_crds(info, &keda)?;
    let result = f(&keda);
    restore_crds(info)?;
    result
}

/// Whether process `pid` runs (not gone, not a zombie waiting to be reaped).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// The certificates KEDA's two programs share: `ca.crt`, `tls.crt`, `tls.key` (the operator's
/// gRPC service is mutual TLS, with one certificate for both ends, as KEDA's own rotation makes
/// it; the adapter serves the aggregator with it too).
fn cert_dir() -> Result<std::path::PathBuf> {
    let dir = Layout::for_workspace().root.join("keda-certs");
    certs::ensure_mutual_tls(
        &dir,
        &[
            "127.0.0.1",
            "localhost",
            &format!("{}.ebb-system.svc", metrics_api::SERVICE),
        ],
    )?;
    Ok(dir)
}

/// The CA that signed the adapter's serving certificate (PEM).
pub fn ca() -> Result<Vec<u8>> {
    let path = cert_dir()?.join("ca.crt");
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// A running KEDA.
pub struct Running {
    _operator: Ebb,
    _adapter: Option<Ebb>,
    /// The operator's pid.
    pub pid: u32,
    /// When the operator was started.
    pub started: Instant,
    /// From its start to `/readyz` answering.
    pub ready: Duration,
}

/// Starts KEDA's operator on `namespace` at `rate` (and its adapter, registered as the
/// cluster's external metrics API, when `adapter`), and waits for the operator's `/readyz`.
/// The logs are `target/bench/keda-<label>.log` and `keda-adapter-<label>.log`.
pub fn start(
    info: &ClusterInfo,
    keda: &Keda,
    namespace: &str,
    label: &str,
    rate: Rate,
    adapter: bool,
) -> Result<Running> {
    let certs = cert_dir()?;
    let out = kubectl(info)
        .args(["create", "namespace", KEDA_NAMESPACE])
        .output()?;
    if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("AlreadyExists") {
        bail!(
            "creating namespace {KEDA_NAMESPACE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let logs = xtask::workspace_root().join("target/bench");
    let started = Instant::now();
    let (flags, env) = rate.settings();
    let log = std::fs::File::create(logs.join(format!("keda-{label}.log")))?;
    let operator = Ebb(Command::new(&keda.operator)
        .env("KUBECONFIG", &info.kubeconfig)
        .env("WATCH_NAMESPACE", namespace)
        .env("KEDA_CLUSTER_OBJECT_NAMESPACE", KEDA_NAMESPACE)
        .env("POD_NAMESPACE", KEDA_NAMESPACE)
        .envs(env)
        .args([
            "--leader-elect=false",
            "--zap-log-level=error",
            &format!("--metrics-bind-address=127.0.0.1:{OPERATOR_METRICS_PORT}"),
            &format!("--health-probe-bind-address=127.0.0.1:{OPERATOR_HEALTH_PORT}"),
            &format!("--metrics-service-bind-address=127.0.0.1:{OPERATOR_GRPC_PORT}"),
        ])
        .arg(format!("--cert-dir={}", certs.display()))
        .args(&flags)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", keda.operator.display()))?);
    let pid = operator.0.id();
    wait_for("KEDA's operator ready", Duration::from_secs(300), || {
        http(OPERATOR_HEALTH_PORT, "GET", "/readyz", None)
            .ok()
            .filter(|(code, _)| *code == 200)
    })?;
    let ready = started.elapsed();
    let adapter = if adapter {
        let log = std::fs::File::create(logs.join(format!("keda-adapter-{label}.log")))?;
        let kubeconfig = info.kubeconfig.display().to_string();
        let child = Ebb(Command::new(&keda.adapter)
            .env("KUBECONFIG", &info.kubeconfig)
            .env("WATCH_NAMESPACE", namespace)
            .env("POD_NAMESPACE", KEDA_NAMESPACE)
            .args([
                &format!("--secure-port={ADAPTER_PORT}"),
                "--bind-address=127.0.0.1",
                &format!("--port={ADAPTER_METRICS_PORT}"),
                &format!("--metrics-service-address=127.0.0.1:{OPERATOR_GRPC_PORT}"),
                &format!("--lister-kubeconfig={kubeconfig}"),
                &format!("--authentication-kubeconfig={kubeconfig}"),
                &format!("--authorization-kubeconfig={kubeconfig}"),
                "--v=0",
            ])
            .arg(format!("--cert-dir={}", certs.display()))
            .arg(format!(
                "--tls-cert-file={}",
                certs.join("tls.crt").display()
            ))
            .arg(format!(
                "--tls-private-key-file={}",
                certs.join("tls.key").display()
            ))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", keda.adapter.display()))?);
        register_adapter(info, &certs)?;
        Some(child)
    } else {
        None
    };
    Ok(Running {
        _operator: operator,
        _adapter: adapter,
        pid,
        started,
        ready,
    })
}

/// Points the cluster's `v1beta1.external.metrics.k8s.io` at KEDA's adapter, trusting its
/// certificate, and waits until the aggregator finds it available.
fn register_adapter(info: &ClusterInfo, certs: &Path) -> Result<()> {
    let kubectl_path = xtask::cluster::binaries::Binaries::cached().path("kubectl");
    metrics_api::register(&kubectl_path, &info.kubeconfig, ADAPTER_PORT)?;
    let ca = std::fs::read(certs.join("ca.crt"))?;
    use base64::Engine as _;
    let patch = serde_json::json!({"spec": {"caBundle":
        base64::engine::general_purpose::STANDARD.encode(ca)}});
    let out = kubectl(info)
        .args([
            "patch",
            "apiservice",
            metrics_api::APISERVICE,
            "--type=merge",
            "-p",
        ])
        .arg(patch.to_string())
        .output()?;
    if !out.status.success() {
        bail!(
            "setting the APIService's caBundle: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    wait_for("KEDA's adapter available", Duration::from_secs(120), || {
        let out = kubectl(info)
            .args(["get", "apiservice", metrics_api::APISERVICE, "-o"])
            .arg("jsonpath={.status.conditions[?(@.type==\"Available\")].status}")
            .stderr(Stdio::null())
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == "True").then_some(())
    })
}

/// The operator's `/metrics`.
pub fn scrape() -> Result<String> {
    let (code, text) = http(OPERATOR_METRICS_PORT, "GET", "/metrics", None)?;
    if code != 200 {
        bail!("KEDA's /metrics answered {code}");
    }
    Ok(text)
}

/// client-go's `rest_client_requests_total`, summed by method (`GET`, `PATCH`, ...).
pub fn requests(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut by_method = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("rest_client_requests_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let method = labels
            .split("method=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("?");
        *by_method.entry(method.to_string()).or_insert(0.0) += value.parse().unwrap_or(0.0);
    }
    by_method
}

/// The last poll's deviation from its schedule of each ScaledObject in `namespace` that has
/// polled (`keda_internal_scale_loop_latency_seconds`), in seconds.
pub fn loop_latencies(text: &str, namespace: &str) -> Vec<f64> {
    let ns = format!("namespace=\"{namespace}\"");
    text.lines()
        .filter(|l| l.starts_with("keda_internal_scale_loop_latency_seconds{") && l.contains(&ns))
        .filter(|l| l.contains("type=\"scaledobject\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
rest_client_requests_total{code=\"200\",host=\"127.0.0.1:32443\",method=\"GET\"} 120
rest_client_requests_total{code=\"404\",host=\"127.0.0.1:32443\",method=\"GET\"} 3
rest_client_requests_total{code=\"200\",host=\"127.0.0.1:32443\",method=\"PATCH\"} 7
keda_internal_scale_loop_latency_seconds{namespace=\"a\",resource=\"w1\",type=\"scaledobject\"} 0.002
keda_internal_scale_loop_latency_seconds{namespace=\"a\",resource=\"j1\",type=\"scaledjob\"} 0.5
keda_internal_scale_loop_latency_seconds{namespace=\"b\",resource=\"w1\",type=\"scaledobject\"} 1
";

    #[test]
    fn keda_figures_are_read_from_its_metrics() {
        let r = requests(TEXT);
        assert_eq!(r["GET"], 123.0);
        assert_eq!(r["PATCH"], 7.0);
        assert_eq!(loop_latencies(TEXT, "a"), [0.002]);
    }
}
