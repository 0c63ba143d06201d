//! The metrics API scenario: the HPA's query (`GET .../namespaces/<ns>/<metric>?labelSelector=
//! scaledobject.keda.sh/name=<so>`) for N idle ScaledObjects polled every 30 s (5 s with
//! `--quick`, so that the first polls are done sooner), asked round robin over all of them, for
//! a fixed time at concurrency 1 and 32 over keep-alive connections (closed loop), and at the
//! HPA controller's rate for 10,000 HPAs (open loop, latency counted from each request's slot):
//!
//! - *direct*: to ebb's port, as the aggregator does (its front-proxy client certificate, the
//!   controller-manager's user in `X-Remote-User`);
//! - *aggregated*: to the kube-apiserver as the admin, which proxies to ebb.
//!
//! With `--peer keda` the same runs are made against KEDA's metrics adapter (beside its
//! operator), registered as the cluster's external metrics API in ebb's place.
//!
//! Answers younger than min(pollingInterval, 15 s) + 1 s come from the scale loops; older ones
//! are read again from Redis, as the HPA's would be.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use xtask::cluster::{self, ClusterInfo, metrics_api as dev_api, ports};

use super::load::{self, Target};
use super::peer;
use super::{
    commit, create_objects, end_scenario, idle_redis_objects, machine, namespace, start_ebb,
    wait_polled, write_result,
};
use crate::host::{kubectl, wait_for};

/// How long each combination is measured after its warm-up: (warm-up, measure), shorter with
/// `--quick`.
const TIMES: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(10));
const QUICK_TIMES: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3));
/// The open-loop rate: the HPA controller's load for 10,000 HPAs, each reading its metric
/// every 15 s (the controller's default sync period).
pub const HPA_RATE: f64 = 10_000.0 / 15.0;
/// The open-loop load's keep-alive connections.
const OPEN_LOOP_CONNECTIONS: usize = 16;
const LABEL: &str = "metrics-api";

/// Who serves the metrics API.
#[derive(Clone, Copy)]
pub enum Server<'a> {
    /// A release `ebb run`.
    Ebb(&'a Path),
    /// KEDA's metrics adapter beside its operator (raised client rate).
    Keda(&'a xtask::cluster::keda::Keda),
}

/// Runs the scenario with `n` objects behind `server`.
pub fn run(info: &ClusterInfo, server: Server<'_>, n: usize, quick: bool) -> Result<Value> {
    let (warmup, measure) = if quick { QUICK_TIMES } else { TIMES };
    let interval = if quick { 5 } else { 30 };
    let (who, label) = match server {
        Server::Ebb(_) => ("ebb".to_string(), LABEL.to_string()),
        Server::Keda(_) => (
            format!(
                "KEDA v{}'s adapter and operator, {}",
                xtask::cluster::keda::KEDA_VERSION,
                peer::Rate::Raised.describe()
            ),
            format!("{LABEL}-keda"),
        ),
    };
    println!(
        "==> metrics API ({who}): {n} idle ScaledObjects (redis list, pollingInterval {interval}s); the HPA's query round robin over them, direct and through the aggregator, at concurrency 1 and 32 (closed loop) and at {HPA_RATE:.0} requests/s (open loop, 10,000 HPAs every 15 s), {}s each after {}s of warm-up",
        measure.as_secs(),
        warmup.as_secs()
    );
    let ns = namespace(&label);
    create_objects(info, &ns, &idle_redis_objects(&ns, "m", n, interval))?;
    let pki = cluster::Layout::for_workspace().pki();
    let read = |file: &std::path::Path| {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))
    };
    // The running server, stopped when dropped.
    let (running, direct_address, direct_ca): (
        (Option<super::Running>, Option<peer::Running>),
        _,
        _,
    ) = match server {
        Server::Ebb(binary) => {
            dev_api::register(&info.kubectl, &info.kubeconfig, dev_api::PORT)?;
            let address = format!("127.0.0.1:{}", dev_api::PORT);
            let ebb = start_ebb(
                info,
                binary,
                &label,
                &[
                    "--metrics-api-addr",
                    &address,
                    "--apiservice",
                    dev_api::APISERVICE,
                    "--tls-names",
                    dev_api::TLS_NAMES,
                ],
            );
            let ebb = match ebb {
                Ok(ebb) => ebb,
                Err(e) => {
                    dev_api::unregister(&info.kubectl, &info.kubeconfig)?;
                    return Err(e);
                }
            };
            ((Some(ebb), None), address, None)
        }
        Server::Keda(keda) => {
            let running = peer::start(info, keda, &ns, &label, peer::Rate::Raised, true);
            let running = match running {
                Ok(running) => running,
                Err(e) => {
                    dev_api::unregister(&info.kubectl, &info.kubeconfig)?;
                    return Err(e);
                }
            };
            (
                (None, Some(running)),
                format!("127.0.0.1:{}", peer::ADAPTER_PORT),
                Some(peer::ca()?),
            )
        }
    };
    let result = (|| {
        let _running = running;
        match server {
            Server::Ebb(_) => wait_polled(n, Duration::from_secs(200 + n as u64 / 20))?,
            Server::Keda(_) => wait_for(
                "every object polled once",
                Duration::from_secs(600 + n as u64),
                || {
                    let text = peer::scrape().ok()?;
                    (peer::loop_latencies(&text, &ns).len() >= n).then_some(())
                },
            )?,
        }
        let paths = query_paths(info, &ns, n)?;
        let direct = Target {
            address: direct_address.clone(),
            server_name: "127.0.0.1".into(),
            ca_pem: match &direct_ca {
                Some(ca) => ca.clone(),
                None => ca_bundle(info)?,
            },
            client_cert_pem: read(&pki.join("front-proxy-client.crt"))?,
            client_key_pem: read(&pki.join("front-proxy-client.key"))?,
            headers: vec![
                (
                    "X-Remote-User".into(),
                    "system:kube-controller-manager".into(),
                ),
                ("X-Remote-Group".into(), "system:authenticated".into()),
            ],
        };
        let aggregated = Target {
            address: format!("127.0.0.1:{}", ports::APISERVER),
            server_name: "127.0.0.1".into(),
            ca_pem: read(&pki.join("ca.crt"))?,
            client_cert_pem: read(&pki.join("admin.crt"))?,
            client_key_pem: read(&pki.join("admin.key"))?,
            headers: Vec::new(),
        };
        let mut runs = Vec::new();
        for (path_name, target) in [("direct", &direct), ("aggregated", &aggregated)] {
            for load in [Load::Closed(1), Load::Closed(32), Load::Open(HPA_RATE)] {
                let go = |time| match load {
                    Load::Closed(concurrency) => load::run(target, &paths, concurrency, time),
                    Load::Open(rate) => {
                        load::run_at_rate(target, &paths, rate, OPEN_LOOP_CONNECTIONS, time)
                    }
                };
                go(warmup)?;
                let outcome = go(measure)?;
                let ms = |q: f64| outcome.quantile(q).map(|d| d.as_secs_f64() * 1000.0);
                println!(
                    "    {path_name}, {}: {:.0} answers/s, p50 {:.2} ms, p99 {:.2} ms, {} errors{}",
                    load.describe(),
                    outcome.throughput(),
                    ms(0.5).unwrap_or(f64::NAN),
                    ms(0.99).unwrap_or(f64::NAN),
                    outcome.errors,
                    outcome
                        .first_error
                        .as_ref()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default()
                );
                runs.push(json!({
                    "path": path_name,
                    "load": load.describe(),
                    "concurrency": match load { Load::Closed(c) => Some(c), Load::Open(_) => None },
                    "rate_per_s": match load { Load::Open(r) => Some(r), Load::Closed(_) => None },
                    "seconds": outcome.elapsed.as_secs_f64(),
                    "answers": outcome.ok,
                    "errors": outcome.errors,
                    "first_error": outcome.first_error,
                    "answers_per_s": outcome.throughput(),
                    "latency_p50_ms": ms(0.5),
                    "latency_p99_ms": ms(0.99),
                    "latency_max_ms": ms(1.0),
                }));
            }
        }
        let result = json!({
            "scenario": "metrics-api",
            "server": match server { Server::Ebb(_) => "ebb", Server::Keda(_) => "keda" },
            "server_detail": who,
            "objects": n,
            "polling_interval_s": interval,
            "runs": runs,
            "machine": machine(),
            "commit": commit(),
        });
        write_result(&label, &result)?;
        end_scenario(info, &ns, !quick)?;
        Ok(result)
    })();
    dev_api::unregister(&info.kubectl, &info.kubeconfig)?;
    result
}

/// A closed loop of so many connections, or an open loop at so many requests a second.
#[derive(Clone, Copy)]
enum Load {
    Closed(usize),
    Open(f64),
}

impl Load {
    fn describe(self) -> String {
        match self {
            Load::Closed(c) => format!("concurrency {c}"),
            Load::Open(rate) => format!("{rate:.0}/s open loop"),
        }
    }
}

/// The HPA's query path for every object, from the metric names in their status.
fn query_paths(info: &ClusterInfo, ns: &str, n: usize) -> Result<Vec<String>> {
    let names = wait_for(
        "every object's externalMetricNames",
        Duration::from_secs(120),
        || {
            let out = kubectl(info)
            .args(["get", "scaledobjects", "-n", ns])
            .args([
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.externalMetricNames[0]}{\"\\n\"}{end}",
            ])
            .output()
            .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let pairs: Vec<(String, String)> = text
                .lines()
                .filter_map(|l| l.split_once(' '))
                .filter(|(_, metric)| !metric.is_empty())
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            (pairs.len() == n).then_some(pairs)
        },
    )?;
    Ok(names
        .into_iter()
        .map(|(so, metric)| {
            format!(
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3D{so}"
            )
        })
        .collect())
}

/// The CA ebb put in the APIService's caBundle.
fn ca_bundle(info: &ClusterInfo) -> Result<Vec<u8>> {
    let encoded = wait_for("the APIService's caBundle", Duration::from_secs(60), || {
        let out = kubectl(info)
            .args(["get", "apiservice", dev_api::APISERVICE])
            .args(["-o", "jsonpath={.spec.caBundle}"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!text.is_empty()).then_some(text)
    })?;
    let pem = base64::engine::general_purpose::STANDARD.decode(encoded)?;
    if pem.is_empty() {
        bail!("the APIService's caBundle is empty");
    }
    Ok(pem)
}

/// Prints the metrics API summary.
pub fn print_table(result: &Value) {
    println!(
        "==> summary (metrics API, {}, {} objects)",
        result["server"].as_str().unwrap_or("?"),
        result["objects"]
    );
    println!(
        "    {:>10} {:>18} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "path", "load", "answers/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for r in result["runs"].as_array().into_iter().flatten() {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "    {:>10} {:>18} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            r["path"].as_str().unwrap_or(""),
            r["load"].as_str().unwrap_or(""),
            f("answers_per_s"),
            f("latency_p50_ms"),
            f("latency_p99_ms"),
            f("latency_max_ms"),
            r["errors"],
        );
    }
}
