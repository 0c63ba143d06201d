//! `cargo xtask demo`: the dev cluster with ebb at work.
//!
//! Brings the cluster up, installs the CRDs and RBAC, starts `ebb run` on the host with its
//! metrics API registered with the aggregator, applies `examples/demo/workers.yaml` (a Redis list
//! worker and a RabbitMQ queue worker, and a ScaledJob running one Job per item of another Redis
//! list), then drives idle, a burst and a drain while a live table shows each ScaledObject's
//! queue (as ebb reads it), activity, the HPA's desired count and the Deployment's replicas, and
//! the ScaledJob's list, activity and running Jobs. It ends with a summary and a chart in
//! `target/demo/` (`demo.svg`, and `demo.png` when rsvg-convert is installed).

mod chart;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::host::{Ebb, apply, build_ebb, http, kubectl, redis, redis_output, wait_for};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use xtask::cluster::{self, ClusterInfo, metrics_api, packages, ports};

/// Options of `cargo xtask demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Leave the dev cluster running afterwards.
    #[arg(long)]
    keep_cluster: bool,
}

const NAMESPACE: &str = "ebb-demo";
const WORKERS: [&str; 2] = ["redis-worker", "rabbitmq-worker"];
const REDIS_LIST: &str = "demo:jobs";
const QUEUE: &str = "demo-orders";
/// The ScaledJob, its list, and the items the burst pushes onto it.
const SCALED_JOB: &str = "render-jobs";
const RENDER_LIST: &str = "demo:renders";
const RENDERS: usize = 12;
/// The ScaledJob's maxReplicaCount.
const RENDER_MAX: usize = 5;
/// Where the demo's ebb serves `/healthz`, `/readyz`, `/metrics`.
const ADMIN_PORT: u16 = 32681;

/// One row of the live view.
#[derive(Debug, Clone, Default)]
struct Row {
    queue: Option<f64>,
    active: String,
    desired: Option<i64>,
    replicas: i64,
    hpa: String,
}

/// One sample for the chart.
struct Sample {
    at: f64,
    rows: Vec<Row>,
}

/// Runs the demo on a cluster already up, and leaves it up (for `cargo xtask test`).
pub fn run_on_the_running_cluster() -> Result<()> {
    run(DemoArgs { keep_cluster: true })
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    let was_running = cluster::services::status(&cluster::Layout::for_workspace())
        .iter()
        .any(|(_, state)| state.is_some());
    let info = cluster::up()?;
    // ebb outlives the demo's own steps so that it releases its ScaledObjects' finalizers when
    // the cleanup deletes the namespace.
    let mut ebb = None;
    let result = demo(&info, &mut ebb);
    let cleanup = cleanup(&info);
    drop(ebb);
    if !was_running && !args.keep_cluster {
        cluster::down()?;
    } else {
        println!("==> leaving the dev cluster running (`cargo xtask cluster down` stops it)");
    }
    result.and(cleanup)
}

fn demo(info: &ClusterInfo, ebb: &mut Option<Ebb>) -> Result<()> {
    let root = xtask::workspace_root();
    let out_dir = root.join("target/demo");
    std::fs::create_dir_all(&out_dir)?;

    println!(
        "==> installing ebb's CRDs and RBAC (crds/manifests/, deploy/00-namespace.yaml, deploy/10-rbac.yaml)"
    );
    apply(info, &root.join("crds/manifests"))?;
    apply(info, &root.join("deploy/00-namespace.yaml"))?;
    apply(info, &root.join("deploy/10-rbac.yaml"))?;

    let binary = build_ebb(false)?;

    println!(
        "==> registering the metrics API (APIService {} -> 127.0.0.1:{})",
        metrics_api::APISERVICE,
        metrics_api::PORT
    );
    metrics_api::register(&info.kubectl, &info.kubeconfig, metrics_api::PORT)?;

    let log_path = out_dir.join("ebb.log");
    println!("==> starting ebb (logs in {})", log_path.display());
    let log = std::fs::File::create(&log_path)?;
    *ebb = Some(Ebb(Command::new(&binary)
        .env("KUBECONFIG", &info.kubeconfig)
        .env("RUST_LOG", "info")
        .args([
            "run",
            "--leader-elect=false",
            "--watch-namespace",
            NAMESPACE,
        ])
        .args([
            "--metrics-api-addr",
            &format!("127.0.0.1:{}", metrics_api::PORT),
        ])
        .args(["--apiservice", metrics_api::APISERVICE])
        .args(["--tls-names", metrics_api::TLS_NAMES])
        .args(["--admin-addr", &format!("127.0.0.1:{ADMIN_PORT}")])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?));
    wait_for("ebb ready", Duration::from_secs(60), || {
        http(ADMIN_PORT, "GET", "/readyz", None)
            .ok()
            .filter(|(code, _)| *code == 200)
    })?;
    wait_for("the APIService Available", Duration::from_secs(60), || {
        let out = kubectl(info)
            .args(["get", "--raw", "/apis/external.metrics.k8s.io/v1beta1"])
            .output()
            .ok()?;
        out.status.success().then_some(())
    })?;

    // A previous run's namespace may still be on its way out.
    let _ = kubectl(info)
        .args(["wait", "--for=delete", &format!("namespace/{NAMESPACE}")])
        .arg("--timeout=120s")
        .output();
    println!("==> creating the queue {QUEUE} and applying examples/demo/workers.yaml");
    http(
        ports::RABBITMQ_MANAGEMENT,
        "PUT",
        &format!("/api/queues/%2F/{QUEUE}"),
        Some("{\"durable\":false}"),
    )?;
    redis(&["DEL", REDIS_LIST, RENDER_LIST])?;
    apply(info, &root.join("examples/demo/workers.yaml"))?;

    println!(
        "==> pollingInterval 2 s and cooldownPeriod 15 s (shortened for the demo); the HPA syncs every {}",
        cluster::services::HPA_SYNC_PERIOD
    );
    println!(
        "    phases: idle 10 s, a burst (40 jobs, 30 messages, {RENDERS} renders), a steady drain, idle until zero"
    );
    println!(
        "    {SCALED_JOB} (a ScaledJob) runs one Job per render, at most {RENDER_MAX} at once; each Job takes its render as it starts and runs 3 s"
    );
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut phase = "idle";
    let mut burst_done = false;
    // When the demo published the burst, started draining, and first read every queue empty.
    let mut phases = chart::Phases {
        burst_at: BURST_AT,
        drain_at: None,
        drained_at: None,
    };
    let mut first_replica: [Option<f64>; 2] = [None, None];
    let mut back_to_zero: [Option<f64>; 2] = [None, None];
    let mut peak = [0_i64; 2];
    let mut renders = Renders::default();
    println!(
        "{:>5}  {:<6}  {:<16} {:>6} {:>7} {:>8} {:>9}  HPA",
        "t", "phase", "object", "queue", "active", "desired", "replicas"
    );
    loop {
        let t = start.elapsed().as_secs_f64();
        if t >= BURST_AT && !burst_done {
            phase = "burst";
            let jobs: Vec<String> = (0..40).map(|i| format!("job-{i}")).collect();
            let mut cmd = vec!["RPUSH", REDIS_LIST];
            cmd.extend(jobs.iter().map(String::as_str));
            redis(&cmd)?;
            for i in 0..30 {
                publish(&format!("order-{i}"))?;
            }
            let items: Vec<String> = (0..RENDERS).map(|i| format!("render-{i}")).collect();
            let mut cmd = vec!["RPUSH", RENDER_LIST];
            cmd.extend(items.iter().map(String::as_str));
            redis(&cmd)?;
            burst_done = true;
            phases.burst_at = t;
        } else if burst_done && t >= DRAIN_AT {
            if phases.drain_at.is_none() {
                phase = "drain";
                phases.drain_at = Some(t);
            }
            // Workers that finish 3 jobs and 2 messages every second between them.
            redis(&["LPOP", REDIS_LIST, "3"])?;
            http(
                ports::RABBITMQ_MANAGEMENT,
                "POST",
                &format!("/api/queues/%2F/{QUEUE}/get"),
                Some("{\"count\":2,\"ackmode\":\"ack_requeue_false\",\"encoding\":\"auto\"}"),
            )?;
        }
        let rows = observe(info)?;
        if phases.drain_at.is_some()
            && phases.drained_at.is_none()
            && rows.iter().all(|r| r.queue == Some(0.0))
        {
            // The drain goes on, but finds nothing: idle until ebb brings the workers to zero.
            phases.drained_at = Some(t);
            phase = "idle";
        }
        for (i, (name, row)) in WORKERS.iter().zip(&rows).enumerate() {
            println!(
                "{:>4.0}s  {:<6}  {:<16} {:>6} {:>7} {:>8} {:>9}  {}",
                t,
                phase,
                name,
                row.queue
                    .map(|q| format!("{q:.0}"))
                    .unwrap_or_else(|| "-".into()),
                row.active,
                row.desired
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
                row.replicas,
                row.hpa
            );
            peak[i] = peak[i].max(row.replicas);
            if row.replicas > 0 && first_replica[i].is_none() && burst_done {
                first_replica[i] = Some(t - BURST_AT);
            }
            if burst_done && peak[i] > 0 && row.replicas == 0 && back_to_zero[i].is_none() {
                back_to_zero[i] = Some(t);
            }
        }
        renders.observe(info)?;
        println!(
            "{:>4.0}s  {:<6}  {:<16} {:>6} {:>7} {:>8} {:>9}  {} Jobs created",
            t,
            phase,
            SCALED_JOB,
            renders.queue,
            renders.active,
            "-",
            renders.running,
            renders.created.len()
        );
        if burst_done
            && renders.created.len() >= RENDERS
            && renders.running == 0
            && renders.done_at.is_none()
        {
            renders.done_at = Some(t);
        }
        samples.push(Sample { at: t, rows });
        if back_to_zero.iter().all(Option::is_some) && renders.done_at.is_some() {
            break;
        }
        if t > 300.0 {
            bail!("the demo did not come back to zero within 5 minutes; see target/demo/ebb.log");
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    println!("==> summary");
    for (i, name) in WORKERS.iter().enumerate() {
        println!(
            "    {name:<16} first replica {:>5.1}s after the burst, peak {} replicas, back to zero at {:>5.1}s",
            first_replica[i].unwrap_or(f64::NAN),
            peak[i],
            back_to_zero[i].unwrap_or(f64::NAN)
        );
    }
    println!(
        "    {SCALED_JOB:<16} {} Jobs for {RENDERS} renders, at most {} running at once, all done at {:>5.1}s",
        renders.created.len(),
        renders.peak,
        renders.done_at.unwrap_or(f64::NAN)
    );
    println!(
        "    phases: idle, burst at {:.1}s, drain from {:.1}s, every queue empty at {:.1}s, idle until zero",
        phases.burst_at,
        phases.drain_at.unwrap_or(f64::NAN),
        phases.drained_at.unwrap_or(f64::NAN)
    );
    write_chart(&out_dir, &samples, &phases)?;
    let mut wrong = Vec::new();
    for (i, name) in WORKERS.iter().enumerate() {
        let series: Vec<(f64, Option<f64>, i64)> = samples
            .iter()
            .map(|s| (s.at, s.rows[i].queue, s.rows[i].replicas))
            .collect();
        match check_sequence(&series, BURST_AT) {
            Ok(seen) => println!("    {name:<16} replicas went {seen}: as expected"),
            Err(e) => wrong.push(format!("{name}: {e}")),
        }
    }
    if renders.created.len() != RENDERS || renders.peak != RENDER_MAX {
        wrong.push(format!(
            "{SCALED_JOB}: {} Jobs for {RENDERS} renders, at most {} at once (expected {RENDER_MAX})",
            renders.created.len(),
            renders.peak
        ));
    } else {
        println!(
            "    {SCALED_JOB:<16} one Job per render, {RENDER_MAX} at once at most: as expected"
        );
    }
    if !wrong.is_empty() {
        bail!(
            "the demo did not scale as it should:\n  {}\n(see target/demo/ebb.log)",
            wrong.join("\n  ")
        );
    }
    Ok(())
}

/// When the burst comes, in seconds from the start.
const BURST_AT: f64 = 10.0;
/// When the drain starts.
const DRAIN_AT: f64 = 40.0;

/// Writes `demo.svg`, and `demo.png` (1,000 px wide) when rsvg-convert is installed; a PNG that
/// cannot be made is reported, not failed on.
fn write_chart(out_dir: &Path, samples: &[Sample], phases: &chart::Phases) -> Result<()> {
    let series: Vec<chart::Series> = WORKERS
        .iter()
        .enumerate()
        .map(|(i, name)| chart::Series {
            name,
            points: samples
                .iter()
                .map(|s| chart::Point {
                    at: s.at,
                    queue: s.rows[i].queue,
                    replicas: s.rows[i].replicas,
                })
                .collect(),
        })
        .collect();
    let svg = out_dir.join("demo.svg");
    std::fs::write(&svg, chart::svg(&series, phases))?;
    println!("    chart: {}", svg.display());
    let png = out_dir.join("demo.png");
    let _ = std::fs::remove_file(&png);
    if !Path::new(packages::RSVG_CONVERT).exists() {
        println!(
            "    no PNG: {} is not installed (Debian's librsvg2-bin)",
            packages::RSVG_CONVERT
        );
        return Ok(());
    }
    match Command::new(packages::RSVG_CONVERT)
        .args(["--width", "1000", "--format", "png", "--output"])
        .arg(&png)
        .arg(&svg)
        .output()
    {
        Ok(out) if out.status.success() => println!("    chart: {}", png.display()),
        Ok(out) => println!(
            "    no PNG: rsvg-convert failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => println!("    no PNG: running rsvg-convert: {e}"),
    }
    Ok(())
}

/// Checks one worker's samples (time, queue as ebb read it, replicas) against what the demo
/// shows: 0 while idle, replicas after the burst, more than one at the peak (the HPA), down to
/// 1 (the HPA) and then 0 (ebb, after the cooldown), and never 0 while the queue still held
/// work once it had scaled up. ebb's own 0 -> 1 on the way up lasts until the HPA's next sync
/// (2 s on the dev cluster), so a sample a second may or may not catch it. Returns the
/// sequence of replica counts seen, such as `0 -> 1 -> 4 -> 8 -> 3 -> 1 -> 0`.
fn check_sequence(samples: &[(f64, Option<f64>, i64)], burst_at: f64) -> Result<String, String> {
    let mut seen: Vec<i64> = Vec::new();
    for (_, _, replicas) in samples {
        if seen.last() != Some(replicas) {
            seen.push(*replicas);
        }
    }
    let shown = seen
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(" -> ");
    if let Some((at, _, n)) = samples.iter().find(|(at, _, n)| *at < burst_at && *n != 0) {
        return Err(format!(
            "{n} replicas at {at:.0}s, before the burst ({shown})"
        ));
    }
    let peak_at = seen
        .iter()
        .enumerate()
        .max_by_key(|(_, n)| **n)
        .map(|(i, _)| i)
        .unwrap_or(0);
    if seen.first() != Some(&0) || seen.last() != Some(&0) {
        return Err(format!("did not start and end at 0 ({shown})"));
    }
    if seen[peak_at] < 2 {
        return Err(format!("never above 1 replica ({shown})"));
    }
    if !seen[peak_at..].contains(&1) {
        return Err(format!("did not come down through 1 ({shown})"));
    }
    let first_up = samples.iter().position(|(_, _, n)| *n > 0).unwrap_or(0);
    if let Some((at, queue, _)) = samples[first_up..]
        .iter()
        .find(|(_, queue, n)| *n == 0 && queue.is_some_and(|q| q > 0.0))
    {
        return Err(format!(
            "at 0 replicas at {at:.0}s with {} items still queued ({shown})",
            queue.unwrap_or_default()
        ));
    }
    Ok(shown)
}

fn cleanup(info: &ClusterInfo) -> Result<()> {
    println!("==> cleaning up: the APIService, then namespace {NAMESPACE}");
    metrics_api::unregister(&info.kubectl, &info.kubeconfig)?;
    let _ = kubectl(info)
        .args([
            "delete",
            "namespace",
            NAMESPACE,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
        ])
        .output();
    Ok(())
}

/// What the live view shows, from one `kubectl get` and the metrics API.
fn observe(info: &ClusterInfo) -> Result<Vec<Row>> {
    let out = kubectl(info)
        .args([
            "get",
            "deployments,hpa,scaledobjects",
            "-n",
            NAMESPACE,
            "-o",
            "json",
        ])
        .output()?;
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let find = |kind: &str, name: &str| {
        items
            .iter()
            .find(|i| i["kind"] == kind && i["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let mut rows = Vec::new();
    for name in WORKERS {
        let so = find("ScaledObject", name);
        let hpa = find("HorizontalPodAutoscaler", &format!("keda-hpa-{name}"));
        let deployment = find("Deployment", name);
        let condition = |object: &Value, type_: &str| {
            object["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
                .unwrap_or_default()
        };
        let metric = so["status"]["externalMetricNames"][0]
            .as_str()
            .unwrap_or("")
            .to_string();
        let queue = if metric.is_empty() {
            None
        } else {
            let path = format!(
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3D{name}"
            );
            kubectl(info)
                .args(["get", "--raw", &path])
                .output()
                .ok()
                .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
                .and_then(|v| v["items"][0]["value"].as_str().map(quantity))
        };
        let scaling = condition(&hpa, "ScalingActive");
        rows.push(Row {
            queue,
            active: condition(&so, "Active")["status"]
                .as_str()
                .unwrap_or("-")
                .to_string(),
            desired: hpa["status"]["desiredReplicas"].as_i64(),
            replicas: deployment["spec"]["replicas"].as_i64().unwrap_or(0),
            hpa: scaling["reason"].as_str().unwrap_or("-").to_string(),
        });
    }
    Ok(rows)
}

/// The ScaledJob as the live view shows it.
#[derive(Default)]
struct Renders {
    /// The list's length.
    queue: i64,
    /// Its Active condition.
    active: String,
    /// Jobs not finished.
    running: usize,
    /// Every Job seen.
    created: std::collections::BTreeSet<String>,
    /// The most Jobs running at once.
    peak: usize,
    /// When every render was done.
    done_at: Option<f64>,
}

impl Renders {
    /// Reads the ScaledJob and its Jobs; each new Job takes one render off the list, as its
    /// worker would when its pod starts (the dev cluster's pods run nothing).
    fn observe(&mut self, info: &ClusterInfo) -> Result<()> {
        let out = kubectl(info)
            .args(["get", "jobs,scaledjobs", "-n", NAMESPACE, "-o", "json"])
            .output()?;
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let items = list["items"].as_array().cloned().unwrap_or_default();
        self.running = 0;
        for item in &items {
            if item["kind"] == "ScaledJob" && item["metadata"]["name"] == SCALED_JOB {
                self.active = item["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Active"))
                    .and_then(|c| c["status"].as_str())
                    .unwrap_or("-")
                    .to_string();
            }
            if item["kind"] != "Job"
                || item["metadata"]["labels"]["scaledjob.keda.sh/name"] != SCALED_JOB
            {
                continue;
            }
            let finished = item["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
                })
            });
            if !finished {
                self.running += 1;
            }
            let name = item["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if self.created.insert(name) {
                redis(&["LPOP", RENDER_LIST])?;
            }
        }
        self.peak = self.peak.max(self.running);
        self.queue = redis_output(&["LLEN", RENDER_LIST])?.parse().unwrap_or(-1);
        Ok(())
    }
}

/// A Kubernetes quantity as a number (`40`, `2500m`).
fn quantity(text: &str) -> f64 {
    match text.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().map(|v| v / 1000.0).unwrap_or(f64::NAN),
        None => text.parse().unwrap_or(f64::NAN),
    }
}

fn publish(body: &str) -> Result<()> {
    let payload = serde_json::json!({
        "properties": {}, "routing_key": QUEUE, "payload": body, "payload_encoding": "string"
    });
    let (code, text) = http(
        ports::RABBITMQ_MANAGEMENT,
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        Some(&payload.to_string()),
    )?;
    if code != 200 || !text.contains("\"routed\":true") {
        bail!("publishing to {QUEUE}: {code} {text}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(replicas: &[i64], queue: &[f64]) -> Vec<(f64, Option<f64>, i64)> {
        replicas
            .iter()
            .zip(queue)
            .enumerate()
            .map(|(i, (n, q))| (i as f64 * 5.0, Some(*q), *n))
            .collect()
    }

    #[test]
    fn the_whole_cycle_passes() {
        let s = samples(
            &[0, 0, 0, 1, 4, 8, 3, 1, 1, 0],
            &[0., 0., 40., 40., 30., 20., 5., 0., 0., 0.],
        );
        assert_eq!(
            check_sequence(&s, 10.0),
            Ok("0 -> 1 -> 4 -> 8 -> 3 -> 1 -> 0".into())
        );
    }

    #[test]
    fn each_missing_step_is_named() {
        let q = [0., 0., 40., 40., 30., 20., 5., 0., 0., 0.];
        // Replicas while idle.
        let early = check_sequence(&samples(&[0, 1, 0, 1, 4, 8, 3, 1, 1, 0], &q), 10.0);
        assert!(early.unwrap_err().contains("before the burst"));
        // Never back to zero.
        let stuck = check_sequence(&samples(&[0, 0, 0, 1, 4, 8, 3, 1, 1, 1], &q), 10.0);
        assert!(stuck.unwrap_err().contains("end at 0"));
        // Only ebb's 0 <-> 1, no HPA.
        let flat = check_sequence(&samples(&[0, 0, 0, 1, 1, 1, 1, 1, 1, 0], &q), 10.0);
        assert!(flat.unwrap_err().contains("never above 1"));
        // Straight from N to 0, skipping the HPA's scale-down to 1.
        let cliff = check_sequence(&samples(&[0, 0, 0, 1, 4, 8, 8, 8, 8, 0], &q), 10.0);
        assert!(cliff.unwrap_err().contains("through 1"));
        // ebb's 0 -> 1 between two samples is not a failure.
        let quick = check_sequence(&samples(&[0, 0, 0, 5, 5, 8, 3, 1, 1, 0], &q), 10.0);
        assert_eq!(quick, Ok("0 -> 5 -> 8 -> 3 -> 1 -> 0".into()));
        // Down to zero with work still queued.
        let q2 = [0., 0., 40., 40., 30., 20., 5., 3., 3., 0.];
        let early_zero = samples(&[0, 0, 0, 1, 4, 8, 1, 0, 0, 0], &q2);
        assert!(
            check_sequence(&early_zero, 10.0)
                .unwrap_err()
                .contains("still queued")
        );
    }
}
