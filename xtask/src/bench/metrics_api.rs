//! The metrics API scenario: the HPA's query (`GET .../namespaces/<ns>/<metric>?labelSelector=
//! scaledobject.keda.sh/name=<so>`) for N idle ScaledObjects polled every 30 s (5 s with
//! `--quick`, so that the first polls are done sooner), asked round robin over all of them, for
//! a fixed time at concurrency 1 and 32 over keep-alive connections:
//!
//! - *direct*: to ebb's port, as the aggregator does (its front-proxy client certificate, the
//!   controller-manager's user in `X-Remote-User`);
//! - *aggregated*: to the kube-apiserver as the admin, which proxies to ebb.
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
use super::{
    commit, create_objects, end_scenario, idle_redis_objects, machine, namespace, start_ebb,
    wait_polled, write_result,
};
use crate::host::{kubectl, wait_for};

/// How long each combination is measured after its warm-up: (warm-up, measure), shorter with
/// `--quick`.
const TIMES: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(10));
const QUICK_TIMES: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3));
const LABEL: &str = "metrics-api";

/// Runs the scenario with `n` objects.
pub fn run(info: &ClusterInfo, binary: &Path, n: usize, quick: bool) -> Result<Value> {
    let (warmup, measure) = if quick { QUICK_TIMES } else { TIMES };
    let interval = if quick { 5 } else { 30 };
    println!(
        "==> metrics API: {n} idle ScaledObjects (redis list, pollingInterval {interval}s); the HPA's query round robin over them, direct and through the aggregator, at concurrency 1 and 32, {}s each after {}s of warm-up",
        measure.as_secs(),
        warmup.as_secs()
    );
    let ns = namespace(LABEL);
    create_objects(info, &ns, &idle_redis_objects(&ns, "m", n, interval))?;
    dev_api::register(&info.kubectl, &info.kubeconfig, dev_api::PORT)?;
    let address = format!("127.0.0.1:{}", dev_api::PORT);
    let ebb = start_ebb(
        info,
        binary,
        LABEL,
        &[
            "--metrics-api-addr",
            &address,
            "--apiservice",
            dev_api::APISERVICE,
            "--tls-names",
            dev_api::TLS_NAMES,
        ],
    );
    let result = (|| {
        let _ebb = ebb?;
        wait_polled(n, Duration::from_secs(200 + n as u64 / 20))?;
        let paths = query_paths(info, &ns, n)?;
        let pki = cluster::Layout::for_workspace().pki();
        let read =
            |file: &str| std::fs::read(pki.join(file)).with_context(|| format!("reading {file}"));
        let direct = Target {
            address: address.clone(),
            server_name: "127.0.0.1".into(),
            ca_pem: ca_bundle(info)?,
            client_cert_pem: read("front-proxy-client.crt")?,
            client_key_pem: read("front-proxy-client.key")?,
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
            ca_pem: read("ca.crt")?,
            client_cert_pem: read("admin.crt")?,
            client_key_pem: read("admin.key")?,
            headers: Vec::new(),
        };
        let mut runs = Vec::new();
        for (path_name, target) in [("direct", &direct), ("aggregated", &aggregated)] {
            for concurrency in [1, 32] {
                load::run(target, &paths, concurrency, warmup)?;
                let outcome = load::run(target, &paths, concurrency, measure)?;
                let ms = |q: f64| outcome.quantile(q).map(|d| d.as_secs_f64() * 1000.0);
                println!(
                    "    {path_name}, concurrency {concurrency}: {:.0} answers/s, p50 {:.2} ms, p99 {:.2} ms, {} errors{}",
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
                    "concurrency": concurrency,
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
            "objects": n,
            "polling_interval_s": interval,
            "runs": runs,
            "machine": machine(),
            "commit": commit(),
        });
        write_result(LABEL, &result)?;
        end_scenario(info, &ns, !quick)?;
        Ok(result)
    })();
    dev_api::unregister(&info.kubectl, &info.kubeconfig)?;
    result
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
    println!("==> summary (metrics API, {} objects)", result["objects"]);
    println!(
        "    {:>10} {:>11} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "path", "concurrency", "answers/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for r in result["runs"].as_array().into_iter().flatten() {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "    {:>10} {:>11} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            r["path"].as_str().unwrap_or(""),
            r["concurrency"],
            f("answers_per_s"),
            f("latency_p50_ms"),
            f("latency_p99_ms"),
            f("latency_max_ms"),
            r["errors"],
        );
    }
}
