//! `cargo xtask bench`: ebb measured on the dev cluster, outside the test suite. Four
//! scenarios, each in its own module; every run writes `target/bench/<scenario>-....json` and the
//! summary tables are printed at the end.
//!
//! - [`scale`]: N ScaledObjects (Deployments at 0, a `redis` list, `rabbitmq` AMQP queue or
//!   `prometheus` query trigger each), or N ScaledJobs on `redis` lists, at a polling interval:
//!   ebb's RSS, CPU, poll lag, broker connections (and queries per second, for Prometheus),
//!   apiserver requests by verb, time to ready.
//! - [`activation`]: how long from pushing past activation to the Deployment's `spec.replicas`
//!   becoming 1, in plain polling and with the fast activation path, beside idle objects.
//! - [`metrics_api`]: the HPA's query, directly and through the aggregator, at concurrency 1 and
//!   32.
//! - [`admission`]: the validating webhook's time per review under 1,000 applies and 1,000
//!   updates, by ebb's clock and by the apiserver's.

mod activation;
mod admission;
mod load;
mod metrics_api;
mod peer;
mod scale;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use xtask::cluster::{self, ClusterInfo, ports};

use crate::host::{Ebb, http, kubectl, wait_for};

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// N = 100 only, one measuring window, no RabbitMQ variant (under five minutes).
    #[arg(long)]
    quick: bool,
    /// Numbers of ScaledObjects for the scale scenario, comma-separated (default
    /// 100,1000,10000; 100 with --quick).
    #[arg(long, value_delimiter = ',')]
    objects: Vec<usize>,
    /// Polling intervals of the scale scenario in seconds, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [30, 5])]
    intervals: Vec<u64>,
    /// Measuring windows per scale run; figures are their medians (default 3; 1 with --quick).
    #[arg(long)]
    windows: Option<usize>,
    /// Scenarios to run, comma-separated: scale, rabbitmq, prometheus, scaledjob and kafka (the
    /// scale scenario's 1,000-object RabbitMQ AMQP, Prometheus, ScaledJob and Kafka variants),
    /// activation, metrics-api, admission. Default: all (no rabbitmq, prometheus, scaledjob or
    /// kafka with --quick).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Leave the dev cluster running afterwards.
    #[arg(long)]
    keep_cluster: bool,
    /// Run the selected scale runs again with a peer autoscaler, one at a time on the same
    /// cluster, and print them side by side: `keda` (built from the Go module proxy at a pinned
    /// release, cached; run at a raised client rate, and at its default too for 1,000 objects).
    #[arg(long, value_parser = ["keda"])]
    peer: Option<String>,
    /// The peer's client rates: `raised` (every run) and `default` (KEDA's own defaults, for the
    /// 1,000-object Redis run only: it takes about 14 minutes to start them).
    #[arg(long, value_delimiter = ',', default_values_t = ["raised".to_string(), "default".to_string()])]
    peer_rates: Vec<String>,
    /// Idle objects beside the activation trials, comma-separated: the scenario runs once per
    /// number (default 1,000; 100 with --quick).
    #[arg(long, value_delimiter = ',')]
    activation_idle: Vec<usize>,
}

/// Each scenario's objects live in a namespace of their own, `ebb-bench-<label>`: with
/// `--quick` the next scenario need not wait for the last one's namespace to go.
const NAMESPACE_PREFIX: &str = "ebb-bench";

/// The namespace of the scenario labelled `label`.
fn namespace(label: &str) -> String {
    format!("{NAMESPACE_PREFIX}-{label}")
}
/// Where the benchmarked ebb serves `/metrics`.
const ADMIN_PORT: u16 = 32682;

/// Runs the benchmarks.
pub fn run(args: BenchArgs) -> Result<()> {
    let was_running = cluster::services::status(&cluster::Layout::for_workspace())
        .iter()
        .any(|(_, state)| state.is_some());
    let info = cluster::up()?;
    let objects = match (args.quick, args.objects.is_empty()) {
        (true, _) => vec![100],
        (false, true) => vec![100, 1_000, 10_000],
        (false, false) => args.objects.clone(),
    };
    let windows = args
        .windows
        .unwrap_or(if args.quick { 1 } else { 3 })
        .max(1);
    let wanted = |name: &str| {
        if args.scenarios.is_empty() {
            !(args.quick && matches!(name, "rabbitmq" | "prometheus" | "scaledjob" | "kafka"))
        } else {
            args.scenarios.iter().any(|s| s == name)
        }
    };
    // Beside the activation trials and behind the metrics API: 1,000 objects (100 quick).
    let beside = if args.quick { 100 } else { 1_000 };
    let started = Instant::now();
    let result = (|| {
        std::fs::create_dir_all(xtask::workspace_root().join("target/bench"))?;
        println!("==> installing ebb's CRDs (crds/manifests/)");
        crate::host::apply(&info, &xtask::workspace_root().join("crds/manifests"))?;
        clear_namespaces(&info)?;
        let binary = crate::host::build_ebb(true)?;
        // The activation trials run inside a scale run on as many idle Redis objects polled
        // every 30 s (the same objects, started once); on their own for other numbers.
        let idle_counts = if !wanted("activation") {
            vec![]
        } else if args.activation_idle.is_empty() {
            vec![beside]
        } else {
            args.activation_idle.clone()
        };
        let trials_inside = |n: usize, interval: u64, broker: scale::Broker| {
            broker == scale::Broker::Redis && interval == 30 && idle_counts.contains(&n)
        };
        let mut scale_runs = Vec::new();
        let mut activations = Vec::new();
        if wanted("scale") {
            for &n in &objects {
                for &interval in &args.intervals {
                    keep(
                        &mut scale_runs,
                        &mut activations,
                        scale::run(
                            &info,
                            scale::Autoscaler::Ebb(&binary),
                            n,
                            interval,
                            scale::Broker::Redis,
                            windows,
                            args.quick,
                            trials_inside(n, interval, scale::Broker::Redis),
                        )?,
                    );
                }
            }
        }
        // The other brokers' variants: 1,000 objects each.
        for (name, broker) in [
            ("rabbitmq", scale::Broker::RabbitMq),
            ("prometheus", scale::Broker::Prometheus),
            ("scaledjob", scale::Broker::ScaledJobRedis),
            ("kafka", scale::Broker::Kafka),
        ] {
            if !wanted(name) {
                continue;
            }
            for &interval in &args.intervals {
                keep(
                    &mut scale_runs,
                    &mut activations,
                    scale::run(
                        &info,
                        scale::Autoscaler::Ebb(&binary),
                        1_000,
                        interval,
                        broker,
                        windows,
                        args.quick,
                        false,
                    )?,
                );
            }
        }
        let inside: Vec<usize> = activations
            .iter()
            .filter_map(|a| a["idle_objects"].as_u64().map(|n| n as usize))
            .collect();
        for &idle in idle_counts.iter().filter(|n| !inside.contains(n)) {
            activations.push(activation::run(
                &info,
                activation::Autoscaler::Ebb(&binary, &[]),
                idle,
                args.quick,
            )?);
        }
        if args.peer.as_deref() == Some("keda") {
            let ours: Vec<(usize, u64, scale::Broker)> = scale_runs
                .iter()
                .filter_map(|r| {
                    let broker = match r["broker"].as_str()? {
                        "redis" => scale::Broker::Redis,
                        "rabbitmq" => scale::Broker::RabbitMq,
                        "prometheus" => scale::Broker::Prometheus,
                        "kafka" => scale::Broker::Kafka,
                        // KEDA's ScaledJobs are another comparison; not made here.
                        _ => return None,
                    };
                    Some((
                        r["objects"].as_u64()? as usize,
                        r["polling_interval_s"].as_u64()?,
                        broker,
                    ))
                })
                .collect();
            let wants_peer = !ours.is_empty() || !idle_counts.is_empty();
            if wants_peer {
                peer::with_keda(&info, |keda| {
                    for (n, interval, broker) in ours {
                        let mut rates = Vec::new();
                        if args.peer_rates.iter().any(|r| r == "raised") {
                            rates.push(peer::Rate::Raised);
                        }
                        if n == 1_000
                            && broker == scale::Broker::Redis
                            && args.peer_rates.iter().any(|r| r == "default")
                        {
                            rates.push(peer::Rate::Default);
                        }
                        for rate in rates {
                            keep(
                                &mut scale_runs,
                                &mut activations,
                                scale::run(
                                    &info,
                                    scale::Autoscaler::Keda(keda, rate),
                                    n,
                                    interval,
                                    broker,
                                    windows,
                                    args.quick,
                                    rate == peer::Rate::Raised
                                        && trials_inside(n, interval, broker),
                                )?,
                            );
                        }
                    }
                    for &idle in idle_counts.iter().filter(|n| !inside.contains(n)) {
                        activations.push(activation::run(
                            &info,
                            activation::Autoscaler::Keda(keda, peer::Rate::Raised),
                            idle,
                            args.quick,
                        )?);
                    }
                    Ok(())
                })?;
            }
        }
        let mut metrics_apis = Vec::new();
        if wanted("metrics-api") {
            metrics_apis.push(metrics_api::run(
                &info,
                metrics_api::Server::Ebb(&binary),
                beside,
                args.quick,
            )?);
            if args.peer.as_deref() == Some("keda") {
                metrics_apis.push(peer::with_keda(&info, |keda| {
                    metrics_api::run(&info, metrics_api::Server::Keda(keda), beside, args.quick)
                })?);
            }
        }
        let admission = if wanted("admission") {
            Some(admission::run(&info, &binary, beside)?)
        } else {
            None
        };
        scale::print_table(&scale_runs);
        scale::print_side_by_side(&scale_runs)?;
        for a in &activations {
            activation::print_table(a);
        }
        for m in &metrics_apis {
            metrics_api::print_table(m);
        }
        if let Some(a) = &admission {
            admission::print_table(a);
        }
        println!(
            "==> bench finished in {:.0}s (cluster start and ebb's build included)",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })();
    if !was_running && !args.keep_cluster {
        cluster::down()?;
    }
    result
}

/// Keeps a scale run's result, and the result of the activation trials it ran, if any.
fn keep(
    scale_runs: &mut Vec<Value>,
    activations: &mut Vec<Value>,
    (run, activation): (Value, Option<Value>),
) {
    scale_runs.push(run);
    activations.extend(activation);
}

/// A benchmarked `ebb run` (release build, no leader election, watching one scenario's
/// namespace).
struct Running {
    /// Stopped when dropped.
    _ebb: Ebb,
    pid: u32,
    started: Instant,
    ready: Duration,
}

/// Starts ebb on the namespace of the scenario labelled `label`, with `extra` arguments, and
/// waits for `/readyz`. Its log is `target/bench/ebb-<label>.log`.
fn start_ebb(
    info: &ClusterInfo,
    binary: &std::path::Path,
    label: &str,
    extra: &[&str],
) -> Result<Running> {
    let started = Instant::now();
    let log = std::fs::File::create(
        xtask::workspace_root().join(format!("target/bench/ebb-{label}.log")),
    )?;
    // BENCH_EBB_WRAPPER runs ebb under a profiler, e.g. "heaptrack -o target/bench/ebb" (the
    // RSS and CPU figures are then the wrapper's, not ebb's alone).
    let wrapper = std::env::var("BENCH_EBB_WRAPPER").unwrap_or_default();
    let mut command = match wrapper.split_whitespace().collect::<Vec<_>>().split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            // A group of its own, so that stopping the wrapper stops ebb too.
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    let ebb = Ebb(command
        .env("KUBECONFIG", &info.kubeconfig)
        // BENCH_RUST_LOG sets ebb's log filter for a closer look (default: warnings only).
        .env(
            "RUST_LOG",
            std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .args(["run", "--leader-elect=false"])
        .args(["--watch-namespace", &namespace(label)])
        .args(["--admin-addr", &format!("127.0.0.1:{ADMIN_PORT}")])
        .args(extra)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?);
    let pid = ebb.0.id();
    wait_for("ebb ready", Duration::from_secs(300), || {
        http(ADMIN_PORT, "GET", "/readyz", None)
            .ok()
            .filter(|(code, _)| *code == 200)
    })?;
    Ok(Running {
        _ebb: ebb,
        pid,
        started,
        ready: started.elapsed(),
    })
}

/// Waits until ebb has polled `n` times in all (every object once, when there are `n`).
fn wait_polled(n: usize, within: Duration) -> Result<()> {
    wait_for("every object polled once", within, || {
        let text = scrape().ok()?;
        (histogram(&text, "ebb_poll_lag_seconds").count >= n as f64).then_some(())
    })
}

/// The median and the spread (min, max) of some figures.
fn median_spread(values: &[f64]) -> Value {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    json!({"median": median, "min": v[0], "max": v[v.len() - 1], "runs": v.len()})
}

/// Writes a result to `target/bench/<file>.json`.
fn write_result(file: &str, result: &Value) -> Result<()> {
    let out = xtask::workspace_root().join(format!("target/bench/{file}.json"));
    std::fs::write(&out, serde_json::to_string_pretty(result)?)?;
    println!("    wrote {}", out.display());
    Ok(())
}

fn scrape() -> Result<String> {
    let (code, text) = http(ADMIN_PORT, "GET", "/metrics", None)?;
    if code != 200 {
        bail!("/metrics answered {code}");
    }
    Ok(text)
}

/// A Prometheus histogram's cumulative buckets, read from text.
#[derive(Debug, Clone, Default, PartialEq)]
struct Histogram {
    /// (upper bound, cumulative count), +Inf last.
    buckets: Vec<(f64, f64)>,
    count: f64,
}

impl Histogram {
    /// The observations made between `earlier` and `self`.
    fn minus(&self, earlier: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|(bound, count)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(b, _)| b == bound)
                    .map(|(_, c)| *c)
                    .unwrap_or(0.0);
                (*bound, count - before)
            })
            .collect();
        Histogram {
            buckets,
            count: self.count - earlier.count,
        }
    }

    /// The `q` quantile, interpolated linearly inside its bucket (as Prometheus's
    /// histogram_quantile does); None without observations.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let mut lower = (0.0, 0.0);
        for &(bound, cumulative) in &self.buckets {
            if cumulative >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = cumulative - lower.1;
                let fraction = if in_bucket > 0.0 {
                    (rank - lower.1) / in_bucket
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * fraction);
            }
            lower = (bound, cumulative);
        }
        None
    }

    /// The upper bound of the highest bucket that gained an observation.
    fn max_bound(&self) -> Option<f64> {
        let mut previous = 0.0;
        let mut highest = None;
        for &(bound, cumulative) in &self.buckets {
            if cumulative > previous {
                highest = Some(bound);
            }
            previous = cumulative;
        }
        highest
    }
}

fn histogram(text: &str, name: &str) -> Histogram {
    let mut h = Histogram::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) {
            let Some((bound, count)) = rest.split_once("\"} ") else {
                continue;
            };
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().unwrap_or(f64::NAN)
            };
            h.buckets.push((bound, count.trim().parse().unwrap_or(0.0)));
        } else if let Some(count) = line.strip_prefix(&format!("{name}_count ")) {
            h.count = count.trim().parse().unwrap_or(0.0);
        }
    }
    h
}

/// `ebb_apiserver_requests_total` by `"<verb> <resource>"`.
fn requests(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|line| line.strip_prefix("ebb_apiserver_requests_total{verb=\""))
        .filter_map(|rest| {
            let (verb, rest) = rest.split_once("\",resource=\"")?;
            let (resource, count) = rest.split_once("\"} ")?;
            Some((
                format!("{verb} {resource}"),
                count.trim().parse().unwrap_or(0.0),
            ))
        })
        .collect()
}

/// user + sys CPU seconds of a process.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields
        .get(11..13)
        .context("short /proc/<pid>/stat")?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    Ok(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// Clients connected to the dev Redis, less the redis-cli asking.
fn redis_connections() -> Result<u64> {
    let out = Command::new("redis-cli")
        .args(["-p", &ports::REDIS.to_string(), "CLIENT", "LIST"])
        .stderr(Stdio::null())
        .output()
        .context("running redis-cli")?;
    let lines = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
    Ok(lines.saturating_sub(1))
}

/// A Deployment at 0 replicas and a ScaledObject on it, both named `name` in namespace `ns`,
/// with `trigger` and extra `annotations` (a JSON object) on the ScaledObject.
fn object_pair(
    ns: &str,
    name: &str,
    interval: u64,
    trigger: Value,
    annotations: Value,
) -> [Value; 2] {
    [
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "w", "image": "example.invalid/w:1"}]}
                }
            }
        }),
        json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {
                "scaleTargetRef": {"name": name},
                "pollingInterval": interval,
                "triggers": [trigger]
            }
        }),
    ]
}

/// `n` idle objects in `ns` named `<prefix>00000`..., each with a redis list trigger of its
/// own, polled every `interval` seconds.
fn idle_redis_objects(ns: &str, prefix: &str, n: usize, interval: u64) -> Vec<Value> {
    (0..n)
        .flat_map(|i| {
            let name = format!("{prefix}{i:05}");
            object_pair(
                ns,
                &name,
                interval,
                redis_trigger(&format!("bench:{name}")),
                json!({}),
            )
        })
        .collect()
}

/// A `redis` list trigger on the dev cluster's Redis: `listLength` 5, activation above 0.
fn redis_trigger(list: &str) -> Value {
    json!({"type": "redis", "metadata": {
        "address": format!("127.0.0.1:{}", ports::REDIS), "listName": list, "listLength": "5"
    }})
}

/// Creates namespace `ns` and `items` by server-side apply, in batches of 1,000.
fn create_objects(info: &ClusterInfo, ns: &str, items: &[Value]) -> Result<()> {
    let started = Instant::now();
    let namespace = [json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})];
    for batch in std::iter::once(&namespace[..]).chain(items.chunks(1_000)) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": batch}).to_string();
        let mut child = kubectl(info)
            .args(["apply", "--server-side", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(list.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl apply of the benchmark's objects: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    println!(
        "    created {} objects in {:.0}s",
        items.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Deletes the bench namespaces an earlier (perhaps interrupted) run left, before any scenario
/// starts, and waits for them to go.
fn clear_namespaces(info: &ClusterInfo) -> Result<()> {
    let out = kubectl(info)
        .args(["get", "namespaces", "-o", "name"])
        .output()?;
    let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("namespace/"))
        .filter(|ns| ns.starts_with(NAMESPACE_PREFIX))
        .map(str::to_string)
        .collect();
    for ns in &left {
        println!("    deleting namespace {ns}, left by an earlier run");
        release_finalizers(info, ns);
        delete_namespace(info, ns, true)?;
    }
    Ok(())
}

/// Ends a scenario while its ebb still runs: deletes the ScaledObjects and ScaledJobs in `ns`,
/// one request per kind (asked again while the apiserver cuts it off at its request timeout),
/// waits until ebb has taken its finalizers off every one, then deletes the namespace and, when
/// `wait` is set, waits for it to go (so that its deletion does not load the apiserver during
/// the next scenario's measurements). Without `wait` the rest goes in the background.
fn end_scenario(info: &ClusterInfo, ns: &str, wait: bool) -> Result<()> {
    for resource in ["scaledobjects", "scaledjobs"] {
        let left = || -> Option<usize> {
            let out = kubectl(info)
                .args(["get", resource, "-n", ns, "-o", "name"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).lines().count())
        };
        // With thousands of objects the request outlives the apiserver's 60 s request
        // timeout, and the deletion stops where it got to: ask again until one gets through.
        for attempt in 1.. {
            let out = kubectl(info)
                .args(["delete", "--raw"])
                .arg(format!("/apis/keda.sh/v1alpha1/namespaces/{ns}/{resource}"))
                .output()?;
            if out.status.success() {
                break;
            }
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if attempt >= 15 {
                bail!("deleting the {resource} in {ns}: {stderr}");
            }
            println!(
                "    deleting the {resource} in {ns}: {stderr}; {} left, asking again",
                left().map_or("?".to_string(), |n| n.to_string())
            );
        }
        wait_for(
            &format!("ebb to finalize the {resource} in {ns}"),
            Duration::from_secs(600),
            || (left()? == 0).then_some(()),
        )?;
    }
    delete_namespace(info, ns, wait)
}

fn delete_namespace(info: &ClusterInfo, ns: &str, wait: bool) -> Result<()> {
    let out = kubectl(info)
        .args(["delete", "namespace", ns, "--ignore-not-found"])
        .arg(format!("--wait={wait}"))
        .arg("--timeout=900s")
        .output()?;
    if !out.status.success() {
        bail!(
            "deleting namespace {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Takes the finalizers off ScaledObjects and ScaledJobs left in `ns` by an interrupted run:
/// with no ebb running, nothing else would, and the namespace would never go. Best effort.
fn release_finalizers(info: &ClusterInfo, ns: &str) {
    for resource in ["scaledobjects", "scaledjobs"] {
        let Ok(out) = kubectl(info)
            .args(["-n", ns, "get", resource, "-o", "json"])
            .output()
        else {
            continue;
        };
        let Ok(mut list) = serde_json::from_slice::<Value>(&out.stdout) else {
            continue;
        };
        let Some(items) = list["items"].as_array_mut() else {
            continue;
        };
        items.retain(|o| {
            o["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
        });
        if items.is_empty() {
            continue;
        }
        println!(
            "    taking the finalizers off {} {resource} left by an earlier run",
            items.len()
        );
        for o in items.iter_mut() {
            o["metadata"]["finalizers"] = json!([]);
        }
        let Ok(mut child) = kubectl(info)
            .args(["replace", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            continue;
        };
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            let _ = stdin.write_all(list.to_string().as_bytes());
        }
        let _ = child.wait();
    }
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    json!({"cpus": cpus, "cpu_model": model})
}

fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
ebb_poll_lag_seconds_bucket{le=\"0.005\"} 50
ebb_poll_lag_seconds_bucket{le=\"0.01\"} 90
ebb_poll_lag_seconds_bucket{le=\"0.025\"} 99
ebb_poll_lag_seconds_bucket{le=\"0.05\"} 100
ebb_poll_lag_seconds_bucket{le=\"+Inf\"} 100
ebb_poll_lag_seconds_sum 0.7
ebb_poll_lag_seconds_count 100
ebb_apiserver_requests_total{verb=\"get\",resource=\"deployments/scale\"} 12
ebb_apiserver_requests_total{verb=\"patch\",resource=\"scaledobjects/status\"} 3
";

    #[test]
    fn quantiles_come_from_the_buckets() {
        let h = histogram(TEXT, "ebb_poll_lag_seconds");
        assert_eq!(h.count, 100.0);
        assert_eq!(h.quantile(0.5), Some(0.005));
        // The 99th observation is the last of the 0.01..0.025 bucket.
        assert_eq!(h.quantile(0.99), Some(0.025));
        assert_eq!(h.max_bound(), Some(0.05));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn a_window_is_the_difference_of_two_scrapes() {
        let later = histogram(TEXT, "ebb_poll_lag_seconds");
        let earlier = histogram(
            &TEXT
                .replace("} 100", "} 99")
                .replace("count 100", "count 99"),
            "ebb_poll_lag_seconds",
        );
        let window = later.minus(&earlier);
        assert_eq!(window.count, 1.0);
        // The one new observation fell in the 0.025..0.05 bucket.
        assert_eq!(window.max_bound(), Some(0.05));
        assert_eq!(
            requests(TEXT),
            BTreeMap::from([
                ("get deployments/scale".to_string(), 12.0),
                ("patch scaledobjects/status".to_string(), 3.0)
            ])
        );
    }
}
