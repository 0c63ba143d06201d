//! `cargo xtask bench`: ebb measured on the dev cluster, outside the test suite.
//!
//! The *scale* scenario: N ScaledObjects, each with its own Deployment at 0 replicas and a
//! `redis` list trigger on the dev cluster's one Redis, at a polling interval. A release `ebb
//! run` (no leader election, metrics API off: this measures the controller and the scale loops)
//! starts against them; after a warm-up the benchmark measures, over a fixed window, ebb's RSS
//! and CPU (user + sys from /proc), its poll lag (from its own `ebb_poll_lag_seconds`), the
//! connections Redis sees, ebb's apiserver writes per minute (`ebb_apiserver_writes_total`),
//! and how long ebb took from start to ready and to its first poll of every object. Each run
//! writes `target/bench/scale-<n>-<interval>s.json`.

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
    /// Only N = 100 (a few minutes).
    #[arg(long)]
    quick: bool,
    /// Numbers of ScaledObjects, comma-separated (default 100,1000,10000; 100 with --quick).
    #[arg(long, value_delimiter = ',')]
    objects: Vec<usize>,
    /// Polling intervals in seconds, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [30, 5])]
    intervals: Vec<u64>,
    /// Leave the dev cluster running afterwards.
    #[arg(long)]
    keep_cluster: bool,
}

const NAMESPACE: &str = "ebb-bench";
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
    let result = (|| {
        std::fs::create_dir_all(xtask::workspace_root().join("target/bench"))?;
        println!("==> installing ebb's CRDs (crds/manifests/)");
        crate::host::apply(&info, &xtask::workspace_root().join("crds/manifests"))?;
        let binary = crate::host::build_ebb(true)?;
        let mut runs = Vec::new();
        for &n in &objects {
            for &interval in &args.intervals {
                runs.push(scale(&info, &binary, n, interval)?);
            }
        }
        print_table(&runs);
        Ok(())
    })();
    if !was_running && !args.keep_cluster {
        cluster::down()?;
    }
    result
}

/// One run of the scale scenario.
fn scale(info: &ClusterInfo, binary: &std::path::Path, n: usize, interval: u64) -> Result<Value> {
    // The window spans at least two polling intervals and one minute; the warm-up one interval
    // after every object's first poll.
    let window = Duration::from_secs((2 * interval).max(60));
    let warmup = Duration::from_secs(interval);
    println!(
        "==> scale: {n} ScaledObjects (Deployment at 0, redis list trigger on one Redis), pollingInterval {interval}s; warm-up {}s, window {}s",
        warmup.as_secs(),
        window.as_secs()
    );
    delete_namespace(info)?;
    create_objects(info, n, interval)?;

    let started = Instant::now();
    let log = std::fs::File::create(xtask::workspace_root().join("target/bench/ebb.log"))?;
    let ebb = Ebb(Command::new(binary)
        .env("KUBECONFIG", &info.kubeconfig)
        // BENCH_RUST_LOG sets ebb's log filter for a closer look (default: warnings only).
        .env(
            "RUST_LOG",
            std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .args(["run", "--leader-elect=false", "--metrics-api-addr", "off"])
        .args(["--watch-namespace", NAMESPACE])
        .args(["--admin-addr", &format!("127.0.0.1:{ADMIN_PORT}")])
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
    let ready = started.elapsed();
    // Every object polled once: as many poll-lag observations as objects.
    let first_polls = Duration::from_secs(interval * 3 + 120 + n as u64 / 20);
    wait_for("every object polled once", first_polls, || {
        let text = scrape().ok()?;
        (histogram(&text, "ebb_poll_lag_seconds").count >= n as f64).then_some(())
    })?;
    let all_polled = started.elapsed();
    println!(
        "    ready after {:.1}s, every object polled after {:.1}s; warming up",
        ready.as_secs_f64(),
        all_polled.as_secs_f64()
    );
    std::thread::sleep(warmup);

    let before = Sample::take(pid)?;
    let mut rss_max = before.rss_kib;
    let window_end = Instant::now() + window;
    while Instant::now() < window_end {
        std::thread::sleep(Duration::from_secs(5).min(window_end - Instant::now()));
        rss_max = rss_max.max(rss_kib(pid)?);
    }
    let after = Sample::take(pid)?;
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    let lag = after.lag.minus(&before.lag);
    let writes: BTreeMap<String, f64> = after
        .writes
        .iter()
        .map(|(resource, total)| {
            let delta = total - before.writes.get(resource).copied().unwrap_or(0.0);
            (resource.clone(), delta * 60.0 / seconds)
        })
        .collect();
    let result = json!({
        "scenario": "scale",
        "objects": n,
        "polling_interval_s": interval,
        "window_s": seconds,
        "ready_s": ready.as_secs_f64(),
        "all_polled_s": all_polled.as_secs_f64(),
        "rss_mib": after.rss_kib as f64 / 1024.0,
        "rss_max_mib": rss_max as f64 / 1024.0,
        "cpu_cores": (after.cpu_s - before.cpu_s) / seconds,
        "polls_per_s": lag.count / seconds,
        "poll_lag_p50_s": lag.quantile(0.5),
        "poll_lag_p99_s": lag.quantile(0.99),
        "poll_lag_max_bucket_s": lag.max_bound(),
        "redis_connections": after.redis_connections,
        "apiserver_writes_per_min": writes,
        "machine": machine(),
        "commit": commit(),
    });
    let out = xtask::workspace_root().join(format!("target/bench/scale-{n}-{interval}s.json"));
    std::fs::write(&out, serde_json::to_string_pretty(&result)?)?;
    println!("    wrote {}", out.display());

    // ebb removes its finalizers while it runs.
    delete_namespace(info)?;
    drop(ebb);
    Ok(result)
}

/// What is read at each end of the window.
struct Sample {
    at: Instant,
    cpu_s: f64,
    rss_kib: u64,
    lag: Histogram,
    writes: BTreeMap<String, f64>,
    redis_connections: u64,
}

impl Sample {
    fn take(pid: u32) -> Result<Self> {
        let text = scrape()?;
        Ok(Self {
            at: Instant::now(),
            cpu_s: cpu_seconds(pid)?,
            rss_kib: rss_kib(pid)?,
            lag: histogram(&text, "ebb_poll_lag_seconds"),
            writes: counters(&text, "ebb_apiserver_writes_total", "resource"),
            redis_connections: redis_connections()?,
        })
    }
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

/// A counter's samples by the value of one label.
fn counters(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{name}{{{label}=\"");
    text.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_once("\"} "))
        .map(|(value, count)| (value.to_string(), count.trim().parse().unwrap_or(0.0)))
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

/// Creates the namespace, N Deployments at 0 and N ScaledObjects, by server-side apply in
/// batches.
fn create_objects(info: &ClusterInfo, n: usize, interval: u64) -> Result<()> {
    let started = Instant::now();
    let redis = format!("127.0.0.1:{}", ports::REDIS);
    let mut items =
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})];
    for i in 0..n {
        let name = format!("w{i:05}");
        items.push(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "w", "image": "example.invalid/w:1"}]}
                }
            }
        }));
        items.push(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "scaleTargetRef": {"name": name},
                "pollingInterval": interval,
                "triggers": [{"type": "redis", "metadata": {
                    "address": redis, "listName": format!("bench:{name}"), "listLength": "5"
                }}]
            }
        }));
    }
    for batch in items.chunks(1_000) {
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
        "    created {n} Deployments and {n} ScaledObjects in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn delete_namespace(info: &ClusterInfo) -> Result<()> {
    let out = kubectl(info)
        .args(["delete", "namespace", NAMESPACE, "--ignore-not-found"])
        .args(["--wait=true", "--timeout=600s"])
        .output()?;
    if !out.status.success() {
        bail!(
            "deleting namespace {NAMESPACE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
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

fn print_table(runs: &[Value]) {
    println!("==> summary (scale)");
    println!(
        "    {:>6} {:>9} {:>8} {:>9} {:>10} {:>10} {:>6} {:>13} {:>8}",
        "objects",
        "interval",
        "RSS MiB",
        "CPU cores",
        "lag p50 s",
        "lag p99 s",
        "redis",
        "writes/min",
        "ready s"
    );
    for r in runs {
        let writes: f64 = r["apiserver_writes_per_min"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_f64).sum())
            .unwrap_or(0.0);
        println!(
            "    {:>6} {:>8}s {:>8.1} {:>9.4} {:>10.3} {:>10.3} {:>6} {:>13.1} {:>8.1}",
            r["objects"],
            r["polling_interval_s"],
            r["rss_mib"].as_f64().unwrap_or(f64::NAN),
            r["cpu_cores"].as_f64().unwrap_or(f64::NAN),
            r["poll_lag_p50_s"].as_f64().unwrap_or(f64::NAN),
            r["poll_lag_p99_s"].as_f64().unwrap_or(f64::NAN),
            r["redis_connections"],
            writes,
            r["ready_s"].as_f64().unwrap_or(f64::NAN),
        );
    }
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
ebb_apiserver_writes_total{resource=\"status\"} 12
ebb_apiserver_writes_total{resource=\"hpa\"} 3
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
            counters(TEXT, "ebb_apiserver_writes_total", "resource"),
            BTreeMap::from([("hpa".to_string(), 3.0), ("status".to_string(), 12.0)])
        );
    }
}
