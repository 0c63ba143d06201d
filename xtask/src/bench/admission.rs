//! The admission scenario: the validating webhook's latency under N applies (1,000; 100 with
//! `--quick`). N Deployments are created first; then N ScaledObjects (a `redis` list trigger
//! each) are applied through the webhook by one `kubectl apply --server-side` (one request per
//! object, one after the other), applied again with another `pollingInterval` (N updates), and
//! once more as a server-side dry run (N updates judged and not stored: the controller has
//! nothing to do meanwhile).
//! Every review checks the object against all the others in its namespace, so the last ones of
//! a round are checked against N - 1 neighbours.
//!
//! Two clocks: ebb's own (`ebb_admission_review_duration_seconds`, from the body read to the
//! answer) and the apiserver's (`apiserver_admission_webhook_admission_duration_seconds`, the
//! whole call: connection, TLS and the answer; its buckets are coarse, so the share of calls
//! under 5 ms is reported beside its p99).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use xtask::cluster::{self, ClusterInfo};

use super::load;
use super::{
    Histogram, commit, create_objects, end_scenario, histogram, idle_redis_objects, machine,
    namespace, scrape, start_ebb, write_result,
};
use crate::host::{kubectl, wait_for};

const LABEL: &str = "admission";
/// Where the benchmarked ebb serves the webhook.
const PORT: u16 = 32683;
/// The ValidatingWebhookConfiguration the scenario registers (and ebb keeps the caBundle of).
const CONFIGURATION: &str = "ebb-bench-admission";
/// The webhook's name, as `deploy/25-admission-webhook.yaml` names it.
const WEBHOOK: &str = "validate.keda.sh";
/// `ebb_operator::admission::SPEC_WRITTEN`, as the deployed configuration has it.
const SPEC_WRITTEN: &str = "request.operation != 'UPDATE' || (!has(object.metadata.deletionTimestamp) && object.spec != oldObject.spec)";
const EBB_HISTOGRAM: &str = "ebb_admission_review_duration_seconds";
const APISERVER_HISTOGRAM: &str = "apiserver_admission_webhook_admission_duration_seconds";

/// Runs the scenario with `n` ScaledObjects.
pub fn run(info: &ClusterInfo, binary: &Path, n: usize) -> Result<Value> {
    println!(
        "==> admission: {n} ScaledObjects applied through the webhook by server-side apply (one request each), then {n} updates; the time per review by ebb's clock and by the apiserver's"
    );
    let ns = namespace(LABEL);
    let items = idle_redis_objects(&ns, "a", n, 30);
    let (deployments, scaled_objects): (Vec<Value>, Vec<Value>) =
        items.into_iter().partition(|o| o["kind"] == "Deployment");
    create_objects(info, &ns, &deployments)?;
    register(info, &ns)?;
    let result = (|| {
        let _ebb = start_ebb(
            info,
            binary,
            LABEL,
            &[
                "--admission-addr",
                &format!("127.0.0.1:{PORT}"),
                "--admission-tls-names",
                "127.0.0.1",
                // One process: a certificate of its own, no Secret to share it through.
                "--admission-tls-secret=",
                "--validating-webhook-configuration",
                CONFIGURATION,
            ],
        )?;
        wait_answering(info, &ns)?;
        let pki = cluster::Layout::for_workspace().pki();
        let mut rounds = Vec::new();
        // The dry run's objects are judged and not stored: nothing for the controller to do,
        // so its reviews show the webhook beside an idle ebb.
        for (round, interval, dry_run) in [
            ("create", 30, false),
            ("update", 20, false),
            ("dry run", 10, true),
        ] {
            let objects: Vec<Value> = scaled_objects
                .iter()
                .cloned()
                .map(|mut o| {
                    o["spec"]["pollingInterval"] = json!(interval);
                    o
                })
                .collect();
            let ebb_before = histogram(&scrape()?, EBB_HISTOGRAM);
            let api_before = apiserver_histogram(info)?;
            let started = Instant::now();
            if dry_run {
                let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
                kubectl_stdin(
                    info,
                    &["apply", "--server-side", "--dry-run=server", "-f", "-"],
                    &list.to_string(),
                )
                .map_err(|e| anyhow::anyhow!("the dry run: {e}"))?;
            } else {
                create_objects(info, &ns, &objects)?;
            }
            let took = started.elapsed();
            let by_ebb = histogram(&scrape()?, EBB_HISTOGRAM).minus(&ebb_before);
            let by_apiserver = apiserver_histogram(info)?.minus(&api_before);
            let ms = |h: &Histogram, q: f64| h.quantile(q).map(|s| s * 1000.0);
            let under_5ms = share_under(&by_apiserver, 0.005);
            println!(
                "    {round}: {} reviews; ebb p50 {:.3} ms, p99 {:.3} ms; apiserver's call p99 {:.1} ms, {:.2}% under 5 ms; {:.0} applies/s",
                by_ebb.count,
                ms(&by_ebb, 0.5).unwrap_or(f64::NAN),
                ms(&by_ebb, 0.99).unwrap_or(f64::NAN),
                ms(&by_apiserver, 0.99).unwrap_or(f64::NAN),
                under_5ms.unwrap_or(f64::NAN) * 100.0,
                n as f64 / took.as_secs_f64(),
            );
            rounds.push(json!({
                "round": round,
                "applies": n,
                "seconds": took.as_secs_f64(),
                "applies_per_s": n as f64 / took.as_secs_f64(),
                "ebb_reviews": by_ebb.count,
                "ebb_p50_ms": ms(&by_ebb, 0.5),
                "ebb_p99_ms": ms(&by_ebb, 0.99),
                "ebb_max_bucket_ms": by_ebb.max_bound().map(|s| s * 1000.0),
                "apiserver_calls": by_apiserver.count,
                "apiserver_p99_ms": ms(&by_apiserver, 0.99),
                "apiserver_share_under_5ms": under_5ms,
                "apiserver_max_bucket_ms": by_apiserver.max_bound().map(|s| s * 1000.0),
            }));
        }
        // A third clock, exact: the same reviews (updates) POSTed straight to the webhook on
        // one kept-alive TLS connection, as the apiserver calls it, timed by the caller.
        let bodies: Vec<Vec<u8>> = scaled_objects
            .iter()
            .enumerate()
            .map(|(i, o)| review_body(i, o))
            .collect();
        let target = load::Target {
            address: format!("127.0.0.1:{PORT}"),
            server_name: "127.0.0.1".into(),
            ca_pem: ca_bundle(info)?,
            client_cert_pem: std::fs::read(pki.join("admin.crt"))?,
            client_key_pem: std::fs::read(pki.join("admin.key"))?,
            headers: Vec::new(),
        };
        let ebb_before = histogram(&scrape()?, EBB_HISTOGRAM);
        let direct = load::post_each(&target, "/validate", &bodies)?;
        let by_ebb = histogram(&scrape()?, EBB_HISTOGRAM).minus(&ebb_before);
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        let ebb_ms = |q: f64| by_ebb.quantile(q).map(|s| s * 1000.0);
        println!(
            "    direct: {} reviews answered, {} errors{}; the caller's clock p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; ebb p50 {:.3} ms, p99 {:.3} ms",
            direct.ok,
            direct.errors,
            direct
                .first_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
            ms(direct.quantile(0.5)).unwrap_or(f64::NAN),
            ms(direct.quantile(0.99)).unwrap_or(f64::NAN),
            ms(direct.quantile(1.0)).unwrap_or(f64::NAN),
            ebb_ms(0.5).unwrap_or(f64::NAN),
            ebb_ms(0.99).unwrap_or(f64::NAN),
        );
        let direct = json!({
            "reviews": direct.ok,
            "errors": direct.errors,
            "first_error": direct.first_error,
            "caller_p50_ms": ms(direct.quantile(0.5)),
            "caller_p99_ms": ms(direct.quantile(0.99)),
            "caller_max_ms": ms(direct.quantile(1.0)),
            "ebb_p50_ms": ebb_ms(0.5),
            "ebb_p99_ms": ebb_ms(0.99),
        });
        let result = json!({
            "scenario": "admission",
            "objects": n,
            "rounds": rounds,
            "direct": direct,
            "machine": machine(),
            "commit": commit(),
        });
        write_result(LABEL, &result)?;
        end_scenario(info, &ns, true)?;
        Ok(result)
    })();
    let _ = kubectl(info)
        .args(["delete", "validatingwebhookconfiguration", CONFIGURATION])
        .args(["--ignore-not-found"])
        .output();
    result
}

/// An AdmissionReview of an update of `object` (its `pollingInterval` changed), as the
/// apiserver would send it.
fn review_body(i: usize, object: &Value) -> Vec<u8> {
    let mut old = object.clone();
    old["spec"]["pollingInterval"] = json!(20);
    let mut new = object.clone();
    new["spec"]["pollingInterval"] = json!(15);
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("bench-{i}"),
            "kind": {"group": "keda.sh", "version": "v1alpha1", "kind": "ScaledObject"},
            "resource": {"group": "keda.sh", "version": "v1alpha1", "resource": "scaledobjects"},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": "UPDATE",
            "userInfo": {"username": "bench"},
            "object": new,
            "oldObject": old,
            "dryRun": false
        }
    })
    .to_string()
    .into_bytes()
}

/// The CA ebb put in the configuration's caBundle.
fn ca_bundle(info: &ClusterInfo) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let out = kubectl(info)
        .args(["get", "validatingwebhookconfiguration", CONFIGURATION])
        .args(["-o", "jsonpath={.webhooks[0].clientConfig.caBundle}"])
        .output()?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8_lossy(&out.stdout).trim())
        .context("the configuration's caBundle")?;
    if pem.is_empty() {
        bail!("the configuration's caBundle is empty");
    }
    Ok(pem)
}

/// Registers the webhook for ScaledObjects in `ns` only, at ebb's loopback port, failing
/// closed: a review that does not reach ebb fails the apply, so none is left out of the count.
/// ebb sets the caBundle when it starts.
fn register(info: &ClusterInfo, ns: &str) -> Result<()> {
    let configuration = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION},
        "webhooks": [{
            "name": WEBHOOK,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "NoneOnDryRun",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "clientConfig": {"url": format!("https://127.0.0.1:{PORT}/validate")},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            // As deploy/25-admission-webhook.yaml: label and finalizer updates make no call.
            "matchConditions": [{"name": "spec-written", "expression": SPEC_WRITTEN}],
            "rules": [{
                "apiGroups": ["keda.sh"],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["scaledobjects"],
                "scope": "Namespaced"
            }]
        }]
    });
    kubectl_stdin(info, &["apply", "-f", "-"], &configuration.to_string())
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("registering the webhook: {e}"))
}

/// Waits until the webhook refuses a typo (a server-side dry run): the caBundle is set and
/// ebb's caches are full.
fn wait_answering(info: &ClusterInfo, ns: &str) -> Result<()> {
    let typo = json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "typo", "namespace": ns},
        "spec": {
            "scaleTargetRef": {"name": "typo"},
            "triggers": [{"type": "redis", "metadata": {"address": "r:6379", "listName": "q", "listLength": "ten"}}]
        }
    })
    .to_string();
    let refused = format!("admission webhook \"{WEBHOOK}\" denied the request");
    wait_for(
        "the webhook to answer",
        Duration::from_secs(120),
        || match kubectl_stdin(info, &["apply", "--dry-run=server", "-f", "-"], &typo) {
            Err(stderr) if stderr.contains(&refused) => Some(()),
            _ => None,
        },
    )
}

/// Runs kubectl with `input` on stdin: its stdout, or its stderr when it fails.
fn kubectl_stdin(info: &ClusterInfo, args: &[&str], input: &str) -> Result<String, String> {
    use std::io::Write as _;
    let mut child = kubectl(info)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The apiserver's timer of its calls to the webhook, all operations and verdicts summed.
fn apiserver_histogram(info: &ClusterInfo) -> Result<Histogram> {
    let out = kubectl(info)
        .args(["get", "--raw", "/metrics"])
        .output()
        .context("reading the apiserver's /metrics")?;
    if !out.status.success() {
        bail!(
            "the apiserver's /metrics: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(webhook_calls(&String::from_utf8_lossy(&out.stdout)))
}

/// Sums the buckets of [`APISERVER_HISTOGRAM`] series whose `name` is [`WEBHOOK`].
fn webhook_calls(text: &str) -> Histogram {
    let mut by_bound: Vec<(f64, f64)> = Vec::new();
    let prefix = format!("{APISERVER_HISTOGRAM}_bucket{{");
    let wanted = format!("name=\"{WEBHOOK}\"");
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((labels, count)) = rest.split_once("} ") else {
            continue;
        };
        if !labels.split(',').any(|l| l == wanted) {
            continue;
        }
        let Some(le) = labels
            .split(',')
            .find_map(|l| l.strip_prefix("le=\""))
            .map(|v| v.trim_end_matches('"'))
        else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        let count: f64 = count.trim().parse().unwrap_or(0.0);
        match by_bound.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, c)) => *c += count,
            None => by_bound.push((bound, count)),
        }
    }
    by_bound.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = by_bound.last().map(|(_, c)| *c).unwrap_or(0.0);
    Histogram {
        buckets: by_bound,
        count,
    }
}

/// The share of observations at or under `bound` (one of the histogram's bucket bounds).
fn share_under(h: &Histogram, bound: f64) -> Option<f64> {
    if h.count <= 0.0 {
        return None;
    }
    h.buckets
        .iter()
        .find(|(b, _)| *b == bound)
        .map(|(_, c)| c / h.count)
}

/// Prints the admission summary.
pub fn print_table(result: &Value) {
    println!(
        "==> summary (admission webhook, {} ScaledObjects)",
        result["objects"]
    );
    println!(
        "    {:>7} {:>8} {:>11} {:>11} {:>14} {:>14} {:>10}",
        "round",
        "reviews",
        "ebb p50 ms",
        "ebb p99 ms",
        "apiserver p99",
        "under 5 ms %",
        "applies/s"
    );
    for r in result["rounds"].as_array().into_iter().flatten() {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "    {:>7} {:>8} {:>11.3} {:>11.3} {:>14.1} {:>14.2} {:>10.0}",
            r["round"].as_str().unwrap_or(""),
            r["ebb_reviews"],
            f("ebb_p50_ms"),
            f("ebb_p99_ms"),
            f("apiserver_p99_ms"),
            f("apiserver_share_under_5ms") * 100.0,
            f("applies_per_s"),
        );
    }
    let d = &result["direct"];
    let f = |k: &str| d[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "    direct to the webhook, {} reviews on one connection: the caller's clock p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; ebb's p99 {:.3} ms",
        d["reviews"],
        f("caller_p50_ms"),
        f("caller_p99_ms"),
        f("caller_max_ms"),
        f("ebb_p99_ms"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apiserver_s_webhook_timer_is_summed_over_its_series() {
        let text = "\
apiserver_admission_webhook_admission_duration_seconds_bucket{name=\"validate.keda.sh\",operation=\"CREATE\",rejected=\"false\",type=\"validating\",le=\"0.005\"} 98
apiserver_admission_webhook_admission_duration_seconds_bucket{name=\"validate.keda.sh\",operation=\"CREATE\",rejected=\"false\",type=\"validating\",le=\"0.025\"} 100
apiserver_admission_webhook_admission_duration_seconds_bucket{name=\"validate.keda.sh\",operation=\"CREATE\",rejected=\"false\",type=\"validating\",le=\"+Inf\"} 100
apiserver_admission_webhook_admission_duration_seconds_bucket{name=\"validate.keda.sh\",operation=\"UPDATE\",rejected=\"true\",type=\"validating\",le=\"0.005\"} 2
apiserver_admission_webhook_admission_duration_seconds_bucket{name=\"validate.keda.sh\",operation=\"UPDATE\",rejected=\"true\",type=\"validating\",le=\"0.025\"} 2
apiserver_admission_webhook_admission_duration_seconds_bucket{name=\"validate.keda.sh\",operation=\"UPDATE\",rejected=\"true\",type=\"validating\",le=\"+Inf\"} 2
apiserver_admission_webhook_admission_duration_seconds_bucket{name=\"other.example.com\",operation=\"CREATE\",rejected=\"false\",type=\"validating\",le=\"0.005\"} 7
apiserver_admission_webhook_admission_duration_seconds_bucket{name=\"other.example.com\",operation=\"CREATE\",rejected=\"false\",type=\"validating\",le=\"+Inf\"} 9
";
        let h = webhook_calls(text);
        assert_eq!(h.count, 102.0);
        assert_eq!(
            h.buckets,
            vec![(0.005, 100.0), (0.025, 102.0), (f64::INFINITY, 102.0)]
        );
        assert_eq!(share_under(&h, 0.005), Some(100.0 / 102.0));
        assert_eq!(share_under(&Histogram::default(), 0.005), None);
    }
}
