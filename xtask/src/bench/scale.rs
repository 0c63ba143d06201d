//! The scale scenario: N ScaledObjects, each with its own Deployment at 0 replicas and a trigger
//! on one broker (a `redis` list, a `rabbitmq` queue over AMQP, or a `prometheus` query of a
//! series of its own), all idle, at one polling
//! interval. A release `ebb run` (metrics API off: this measures the controller and the scale
//! loops) starts against them; once every object has been polled and ebb has then written
//! nothing for max(interval, 30 s) (10 s with `--quick`), it is measured over consecutive
//! windows of max(2 intervals, 60 s) (one window of 20 s with `--quick`), and each figure is
//! reported as the windows' median and spread. With the activation scenario asked for at the
//! same number of objects, its trials then run beside these objects (Redis at 30 s), so the
//! autoscaler is started on them once, not twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};
use xtask::cluster::{ClusterInfo, ports};

use super::activation;
use super::peer::{self, Rate};
use super::{
    Histogram, commit, cpu_seconds, create_objects, end_scenario, histogram, machine,
    median_spread, namespace, object_pair, redis_connections, redis_trigger, requests, rss_kib,
    scrape, start_ebb, write_result,
};
use crate::host::{http, wait_for};

/// The autoscaler a run measures.
#[derive(Clone, Copy)]
pub enum Autoscaler<'a> {
    /// A release `ebb run`.
    Ebb(&'a Path),
    /// KEDA's operator at a client rate.
    Keda(&'a xtask::cluster::keda::Keda, Rate),
}

impl Autoscaler<'_> {
    /// `ebb`, `keda` (raised rate) or `keda-default`.
    pub fn label(self) -> &'static str {
        match self {
            Autoscaler::Ebb(_) => "ebb",
            Autoscaler::Keda(_, rate) => rate.label(),
        }
    }
}

/// The running autoscaler of a run.
enum Process {
    Ebb(super::Running),
    Keda(peer::Running),
}

impl Process {
    fn pid(&self) -> u32 {
        match self {
            Process::Ebb(r) => r.pid,
            Process::Keda(r) => r.pid,
        }
    }
    fn started(&self) -> Instant {
        match self {
            Process::Ebb(r) => r.started,
            Process::Keda(r) => r.started,
        }
    }
    fn ready(&self) -> Duration {
        match self {
            Process::Ebb(r) => r.ready,
            Process::Keda(r) => r.ready,
        }
    }
    /// Its `/metrics` text.
    fn metrics(&self) -> Result<String> {
        match self {
            Process::Ebb(_) => scrape(),
            Process::Keda(_) => peer::scrape(),
        }
    }
    /// What its metrics say: the poll lag, requests by `"<verb> <resource>"` (KEDA's by verb
    /// only: `"<verb> all"`), and how many polls (ebb) or objects that have polled (KEDA).
    fn scrape(&self, ns: &str) -> Result<Scraped> {
        Ok(match self {
            Process::Ebb(_) => {
                let text = scrape()?;
                let lag = histogram(&text, "ebb_poll_lag_seconds");
                Scraped {
                    polled: lag.count,
                    lag: Lag::Histogram(lag),
                    requests: requests(&text),
                }
            }
            Process::Keda(_) => {
                let text = peer::scrape()?;
                let gauges = peer::loop_latencies(&text, ns);
                Scraped {
                    polled: gauges.len() as f64,
                    lag: Lag::Gauges(gauges),
                    requests: peer::requests(&text)
                        .into_iter()
                        .map(|(method, n)| (format!("{} all", method.to_lowercase()), n))
                        .collect(),
                }
            }
        })
    }
}

/// An autoscaler's poll lag: ebb's histogram of every poll, or KEDA's gauge of each object's
/// last poll.
enum Lag {
    Histogram(Histogram),
    Gauges(Vec<f64>),
}

impl Lag {
    /// The window's lag quantile `q`, and polls in the window (None for KEDA, which does not
    /// count them).
    fn in_window(&self, before: &Lag, q: f64) -> (Option<f64>, Option<f64>) {
        match (self, before) {
            (Lag::Histogram(after), Lag::Histogram(before)) => {
                let window = after.minus(before);
                (window.quantile(q), Some(window.count))
            }
            (Lag::Gauges(values), _) => {
                let mut v: Vec<f64> = values.iter().map(|x| x.abs()).collect();
                v.sort_by(f64::total_cmp);
                let at = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1)) - 1;
                (v.get(at).copied(), None)
            }
            _ => (None, None),
        }
    }
}

struct Scraped {
    polled: f64,
    lag: Lag,
    requests: BTreeMap<String, f64>,
}

/// The broker the triggers read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Broker {
    /// A list per object on the dev Redis.
    Redis,
    /// A queue per object on the dev RabbitMQ, read over AMQP.
    RabbitMq,
    /// A query per object (`sum` of a series of its own, at 0) on the dev Prometheus.
    Prometheus,
    /// ScaledJobs instead of ScaledObjects, each on a list of its own on the dev Redis.
    ScaledJobRedis,
    /// A consumer group per object on one of ten topics of the dev Kafka.
    Kafka,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Redis => "redis",
            Broker::RabbitMq => "rabbitmq",
            Broker::Prometheus => "prometheus",
            Broker::ScaledJobRedis => "scaledjob",
            Broker::Kafka => "kafka",
        }
    }
}

/// What is read at each end of a window.
struct Sample {
    at: Instant,
    cpu_s: f64,
    rss_kib: u64,
    lag: Lag,
    requests: BTreeMap<String, f64>,
    /// Queries the broker answered so far, where it counts them (Prometheus).
    broker_queries: Option<f64>,
}

impl Sample {
    fn take(process: &Process, ns: &str, broker: Broker) -> Result<Self> {
        let scraped = process.scrape(ns)?;
        let pid = process.pid();
        Ok(Self {
            at: Instant::now(),
            cpu_s: cpu_seconds(pid)?,
            rss_kib: rss_kib(pid)?,
            lag: scraped.lag,
            requests: scraped.requests,
            broker_queries: match broker {
                Broker::Prometheus => Some(prometheus_queries()?),
                _ => None,
            },
        })
    }
}

/// How long to wait for the start's writes to end: the HPA controller first reports on each
/// new HPA at its own pace (about 15 a second here), and ebb mirrors that into status.
fn settle_deadline(n: usize) -> Duration {
    Duration::from_secs(120 + n as u64 / 10)
}

/// Waits until ebb has written nothing to the apiserver for `quiet`, or `deadline` passed:
/// the windows measure the steady state, not the end of the start. The time it took, or None
/// when it did not settle (the windows then measure anyway, and say so).
fn settle(
    process: &Process,
    ns: &str,
    quiet: Duration,
    deadline: Duration,
) -> Result<Option<Duration>> {
    let started = Instant::now();
    let writes = || -> Result<f64> {
        Ok(process
            .scrape(ns)?
            .requests
            .iter()
            .filter(|(k, _)| is_write(k))
            .map(|(_, v)| v)
            .sum())
    };
    let mut last = writes()?;
    let mut quiet_since = Instant::now();
    while started.elapsed() < deadline {
        std::thread::sleep(Duration::from_secs(5));
        let now = writes()?;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= quiet {
            let took = started.elapsed();
            println!(
                "    settled: no apiserver write for {}s (after {:.0}s)",
                quiet.as_secs(),
                took.as_secs_f64()
            );
            return Ok(Some(took));
        }
    }
    println!(
        "    not settled within {}s (still writing); measuring anyway",
        deadline.as_secs()
    );
    Ok(None)
}

/// Whether a request counter's verb writes.
fn is_write(key: &str) -> bool {
    !["get ", "list ", "watch "]
        .iter()
        .any(|read| key.starts_with(read))
}

/// One run: objects created, the autoscaler started, `windows` windows measured, then (with
/// `activation_trials`, Redis at 30 s only) the activation scenario's trials beside these
/// objects, objects deleted. The scale result, and the activation result if any.
#[allow(clippy::too_many_arguments)]
pub fn run(
    info: &ClusterInfo,
    autoscaler: Autoscaler<'_>,
    n: usize,
    interval: u64,
    broker: Broker,
    windows: usize,
    quick: bool,
    activation_trials: bool,
) -> Result<(Value, Option<Value>)> {
    if activation_trials && (broker != Broker::Redis || interval != 30) {
        bail!("the activation trials run beside idle Redis objects polled every 30 s only");
    }
    let window = if quick {
        Duration::from_secs(20)
    } else {
        Duration::from_secs((2 * interval).max(60))
    };
    // The warm-up: once every object has been polled, no apiserver write for this long.
    let quiet = if quick {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(interval.max(30))
    };
    println!(
        "==> scale ({}): {n} {} (a {} trigger each on one server, all idle), pollingInterval {interval}s; warm-up until every object is polled and no apiserver write for {}s, {windows} window(s) of {}s",
        match autoscaler {
            Autoscaler::Ebb(_) => "ebb".to_string(),
            Autoscaler::Keda(_, rate) => format!("KEDA, {}", rate.describe()),
        },
        if broker == Broker::ScaledJobRedis {
            "ScaledJobs"
        } else {
            "ScaledObjects (Deployment at 0)"
        },
        match broker {
            Broker::Redis | Broker::ScaledJobRedis => "redis list",
            Broker::RabbitMq => "rabbitmq AMQP queue",
            Broker::Prometheus => "prometheus query",
            Broker::Kafka => "kafka consumer group's lag",
        },
        quiet.as_secs(),
        window.as_secs()
    );
    let label = match autoscaler {
        Autoscaler::Ebb(_) => format!("scale-{}-{n}-{interval}s", broker.name()),
        Autoscaler::Keda(_, rate) => {
            format!("scale-{}-{n}-{interval}s-{}", broker.name(), rate.label())
        }
    };
    let ns = namespace(&label);
    let mut items = Vec::with_capacity(2 * n);
    for i in 0..n {
        let name = format!("w{i:05}");
        let trigger = match broker {
            Broker::Redis | Broker::ScaledJobRedis => redis_trigger(&format!("bench:{name}")),
            Broker::RabbitMq => json!({"type": "rabbitmq", "metadata": {
                "host": info.rabbitmq_amqp_url, "protocol": "amqp",
                "queueName": format!("bench-{name}"), "mode": "QueueLength", "value": "5"
            }}),
            Broker::Prometheus => json!({"type": "prometheus", "metadata": {
                "serverAddress": info.prometheus_url,
                "query": format!("sum(ebb_bench_backlog{{object=\"{name}\"}})"),
                "threshold": "5"
            }}),
            // Empty topics, no committed offsets: with `earliest` each group's lag is 0.
            Broker::Kafka => json!({"type": "kafka", "metadata": {
                "bootstrapServers": info.kafka_bootstrap,
                "consumerGroup": format!("bench-{name}"),
                "topic": format!("bench-topic-{}", i % KAFKA_TOPICS),
                "offsetResetPolicy": "earliest",
                "lagThreshold": "5"
            }}),
        };
        if broker == Broker::ScaledJobRedis {
            items.push(scaled_job(&ns, &name, interval, trigger));
        } else {
            items.extend(object_pair(&ns, &name, interval, trigger, json!({})));
        }
    }
    match broker {
        Broker::RabbitMq => declare_queues(n)?,
        Broker::Prometheus => set_series(info, n, true)?,
        Broker::Kafka => create_topics(info)?,
        Broker::Redis | Broker::ScaledJobRedis => {}
    }
    create_objects(info, &ns, &items)?;

    let process = match autoscaler {
        Autoscaler::Ebb(binary) => Process::Ebb(start_ebb(
            info,
            binary,
            &label,
            &["--metrics-api-addr", "off"],
        )?),
        Autoscaler::Keda(keda, rate) => {
            Process::Keda(peer::start(info, keda, &ns, &label, rate, false)?)
        }
    };
    // KEDA at its default rate starts 1,000 objects in about 14 minutes (issue 24's run).
    let within = match autoscaler {
        Autoscaler::Ebb(_) => interval * 3 + 120 + n as u64 / 20,
        Autoscaler::Keda(..) => interval * 3 + 300 + n as u64,
    };
    let mut exited = false;
    wait_for(
        "every object polled once",
        Duration::from_secs(within),
        || {
            if !peer::alive(process.pid()) {
                exited = true;
                return Some(());
            }
            (process.scrape(&ns).ok()?.polled >= n as f64).then_some(())
        },
    )?;
    if exited {
        bail!("{} exited; its log is in target/bench/", autoscaler.label());
    }
    let all_polled = process.started().elapsed();
    println!(
        "    ready after {:.1}s, every object polled after {:.1}s; warming up",
        process.ready().as_secs_f64(),
        all_polled.as_secs_f64()
    );
    let settled = settle(&process, &ns, quiet, settle_deadline(n))?;

    let mut measured: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut per_minute: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut connections = Vec::new();
    for w in 0..windows {
        let pid = process.pid();
        let before = Sample::take(&process, &ns, broker)?;
        let mut rss_max = before.rss_kib;
        let window_end = Instant::now() + window;
        while Instant::now() < window_end {
            std::thread::sleep(Duration::from_secs(5).min(window_end - Instant::now()));
            rss_max = rss_max.max(rss_kib(pid)?);
        }
        let after = Sample::take(&process, &ns, broker)?;
        connections.push(match broker {
            Broker::Redis | Broker::ScaledJobRedis => redis_connections()?,
            Broker::RabbitMq => rabbitmq_connections()?,
            Broker::Prometheus => prometheus_connections(pid)?,
            Broker::Kafka => xtask::cluster::streams::kafka_connections()? as u64,
        } as f64);
        let seconds = after.at.duration_since(before.at).as_secs_f64();
        if let (Some(b), Some(a)) = (before.broker_queries, after.broker_queries) {
            measured
                .entry("broker_queries_per_s")
                .or_default()
                .push((a - b) / seconds);
        }
        let (lag_p50, polls) = after.lag.in_window(&before.lag, 0.5);
        let (lag_p99, _) = after.lag.in_window(&before.lag, 0.99);
        let rate = |key: &String, total: &f64| {
            (total - before.requests.get(key).copied().unwrap_or(0.0)) * 60.0 / seconds
        };
        let mut writes = 0.0;
        let mut reads = 0.0;
        for (key, total) in &after.requests {
            let r = rate(key, total);
            per_minute.entry(key.clone()).or_default().push(r);
            if is_write(key) {
                writes += r;
            } else {
                reads += r;
            }
        }
        let figures = [
            ("rss_mib", after.rss_kib as f64 / 1024.0),
            ("rss_max_mib", rss_max as f64 / 1024.0),
            ("cpu_cores", (after.cpu_s - before.cpu_s) / seconds),
            ("polls_per_s", polls.map_or(f64::NAN, |p| p / seconds)),
            ("poll_lag_p50_s", lag_p50.unwrap_or(f64::NAN)),
            ("poll_lag_p99_s", lag_p99.unwrap_or(f64::NAN)),
            ("apiserver_writes_per_min", writes),
            ("apiserver_reads_per_min", reads),
        ];
        for (name, value) in figures {
            measured.entry(name).or_default().push(value);
        }
        println!(
            "    window {}/{windows}: RSS {:.1} MiB, CPU {:.4} cores, lag p99 {:.4}s, writes {writes:.1}/min, reads {reads:.1}/min",
            w + 1,
            after.rss_kib as f64 / 1024.0,
            (after.cpu_s - before.cpu_s) / seconds,
            lag_p99.unwrap_or(f64::NAN),
        );
    }
    let mut result = json!({
        "scenario": "scale",
        "autoscaler": autoscaler.label(),
        "autoscaler_settings": match autoscaler {
            Autoscaler::Ebb(_) => "ebb run --leader-elect=false --metrics-api-addr off".to_string(),
            Autoscaler::Keda(_, rate) => format!(
                "KEDA v{} operator, --leader-elect=false, {}",
                xtask::cluster::keda::KEDA_VERSION,
                rate.describe()
            ),
        },
        "broker": broker.name(),
        "objects": n,
        "polling_interval_s": interval,
        "window_s": window.as_secs(),
        "windows": windows,
        "ready_s": process.ready().as_secs_f64(),
        "settled_s": settled.map(|d| d.as_secs_f64()),
        "all_polled_s": all_polled.as_secs_f64(),
        "broker_connections": median_spread(&connections),
        "apiserver_requests_per_min": per_minute
            .iter()
            .map(|(k, v)| (k.clone(), median_spread(v)))
            .collect::<serde_json::Map<_, _>>(),
        "machine": machine(),
        "commit": commit(),
    });
    for (name, values) in &measured {
        result[*name] = median_spread(values);
    }
    write_result(&label, &result)?;

    let activation = if activation_trials {
        let autoscaler = match autoscaler {
            Autoscaler::Ebb(binary) => activation::Autoscaler::Ebb(binary, &[]),
            Autoscaler::Keda(keda, rate) => activation::Autoscaler::Keda(keda, rate),
        };
        Some(activation::beside_scale_run(
            info,
            autoscaler,
            &ns,
            n,
            quick,
            || process.metrics(),
        )?)
    } else {
        None
    };

    // The autoscaler removes its finalizers while it runs.
    end_scenario(info, &ns, !quick)?;
    drop(process);
    match broker {
        Broker::RabbitMq => delete_queues(n)?,
        Broker::Prometheus => set_series(info, n, false)?,
        Broker::Kafka => delete_topics(info)?,
        Broker::Redis | Broker::ScaledJobRedis => {}
    }
    Ok((result, activation))
}

/// The topics of the Kafka variant: its objects' groups spread over these many.
const KAFKA_TOPICS: usize = 10;

/// The Kafka variant's topics, 3 partitions each, made with Kafka's own tool.
fn create_topics(info: &ClusterInfo) -> Result<()> {
    for t in 0..KAFKA_TOPICS {
        let topic = format!("bench-topic-{t}");
        xtask::cluster::streams::kafka_tool(
            "org.apache.kafka.tools.TopicCommand",
            &[
                "--bootstrap-server",
                &info.kafka_bootstrap,
                "--create",
                "--if-not-exists",
                "--topic",
                &topic,
                "--partitions",
                "3",
                "--replication-factor",
                "1",
            ],
            None,
        )?;
    }
    Ok(())
}

fn delete_topics(info: &ClusterInfo) -> Result<()> {
    xtask::cluster::streams::kafka_tool(
        "org.apache.kafka.tools.TopicCommand",
        &[
            "--bootstrap-server",
            &info.kafka_bootstrap,
            "--delete",
            "--topic",
            "bench-topic-.*",
        ],
        None,
    )?;
    Ok(())
}

/// An idle ScaledJob `name` in `ns` with `trigger`, polled every `interval` seconds.
fn scaled_job(ns: &str, name: &str, interval: u64, trigger: Value) -> Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "jobTargetRef": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "w", "image": "example.invalid/w:1"}]
            }}},
            "pollingInterval": interval,
            "triggers": [trigger]
        }
    })
}

/// The queues the RabbitMQ variant reads, declared through the management API.
fn declare_queues(n: usize) -> Result<()> {
    for i in 0..n {
        let path = format!("/api/queues/%2F/bench-w{i:05}");
        let (code, body) = http(
            ports::RABBITMQ_MANAGEMENT,
            "PUT",
            &path,
            Some(r#"{"durable":false}"#),
        )?;
        if !(200..300).contains(&code) {
            bail!("declaring {path}: HTTP {code} {body}");
        }
    }
    Ok(())
}

fn delete_queues(n: usize) -> Result<()> {
    for i in 0..n {
        http(
            ports::RABBITMQ_MANAGEMENT,
            "DELETE",
            &format!("/api/queues/%2F/bench-w{i:05}"),
            None,
        )?;
    }
    Ok(())
}

/// Sets (or deletes) the series `ebb_bench_backlog{object="w<i>"} 0` the Prometheus variant
/// queries, on the exporter Prometheus scrapes.
fn set_series(info: &ClusterInfo, n: usize, set: bool) -> Result<()> {
    let lines: String = (0..n)
        .map(|i| {
            let series = format!("ebb_bench_backlog{{object=\"w{i:05}\"}}");
            if set {
                format!("{series} 0\n")
            } else {
                format!("{series}\n")
            }
        })
        .collect();
    let port = info
        .prometheus_exporter_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(ports::PROMETHEUS_EXPORTER);
    let path = if set { "/set" } else { "/delete" };
    let (code, body) = http(port, "POST", path, Some(&lines))?;
    if !(200..300).contains(&code) {
        bail!("exporter {path}: HTTP {code} {body}");
    }
    Ok(())
}

/// Instant queries Prometheus has answered (its own `prometheus_http_requests_total`).
fn prometheus_queries() -> Result<f64> {
    let (code, body) = http(ports::PROMETHEUS, "GET", "/metrics", None)?;
    if code != 200 {
        bail!("Prometheus /metrics: HTTP {code}");
    }
    Ok(body
        .lines()
        .filter(|l| {
            l.starts_with("prometheus_http_requests_total{")
                && l.contains("handler=\"/api/v1/query\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// TCP connections ebb (`pid`) holds to Prometheus, from its `/proc/<pid>/net/tcp` sockets
/// (IPv4 loopback) in state ESTABLISHED.
fn prometheus_connections(pid: u32) -> Result<u64> {
    let own: std::collections::BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|link| {
            let text = link.to_string_lossy().to_string();
            Some(
                text.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))?;
    let remote = format!("0100007F:{:04X}", ports::PROMETHEUS);
    Ok(table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 9 && f[2] == remote && f[3] == "01" && own.contains(f[9])
        })
        .count() as u64)
}

/// AMQP connections RabbitMQ has open (the management API's list).
fn rabbitmq_connections() -> Result<u64> {
    let (code, body) = http(ports::RABBITMQ_MANAGEMENT, "GET", "/api/connections", None)?;
    if code != 200 {
        bail!("listing RabbitMQ connections: HTTP {code}");
    }
    let list: Value = serde_json::from_str(&body)?;
    Ok(list.as_array().map(|a| a.len() as u64).unwrap_or(0))
}

/// Prints the summary table of the scale runs (medians).
pub fn print_table(runs: &[Value]) {
    if runs.is_empty() {
        return;
    }
    let m = |r: &Value, k: &str| r[k]["median"].as_f64().unwrap_or(f64::NAN);
    println!("==> summary (scale; medians of the windows)");
    println!(
        "    {:>12} {:>10} {:>7} {:>9} {:>8} {:>9} {:>10} {:>10} {:>6} {:>9} {:>11} {:>10} {:>8}",
        "autoscaler",
        "broker",
        "objects",
        "interval",
        "RSS MiB",
        "CPU cores",
        "lag p50 s",
        "lag p99 s",
        "conns",
        "queries/s",
        "writes/min",
        "reads/min",
        "ready s"
    );
    for r in runs {
        println!(
            "    {:>12} {:>10} {:>7} {:>8}s {:>8.1} {:>9.4} {:>10.4} {:>10.4} {:>6} {:>9} {:>11.1} {:>10.1} {:>8.2}",
            r["autoscaler"].as_str().unwrap_or("ebb"),
            r["broker"].as_str().unwrap_or(""),
            r["objects"],
            r["polling_interval_s"],
            m(r, "rss_mib"),
            m(r, "cpu_cores"),
            m(r, "poll_lag_p50_s"),
            m(r, "poll_lag_p99_s"),
            m(r, "broker_connections"),
            r["broker_queries_per_s"]["median"]
                .as_f64()
                .map_or("-".to_string(), |q| format!("{q:.1}")),
            m(r, "apiserver_writes_per_min"),
            m(r, "apiserver_reads_per_min"),
            r["ready_s"].as_f64().unwrap_or(f64::NAN),
        );
    }
}

/// The side-by-side table of the runs that both ebb and KEDA (raised rate) made, with KEDA's
/// figure over ebb's (the ratio); printed, and written to `target/bench/side-by-side.md` for
/// docs/benchmarks.md.
pub fn print_side_by_side(runs: &[Value]) -> Result<()> {
    let m = |r: &Value, k: &str| r[k]["median"].as_f64().unwrap_or(f64::NAN);
    let same = |a: &Value, b: &Value| {
        ["broker", "objects", "polling_interval_s"]
            .iter()
            .all(|k| a[*k] == b[*k])
    };
    let mut lines = vec![
        "| broker | objects | interval | figure | ebb | KEDA | KEDA / ebb |".to_string(),
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |".to_string(),
    ];
    for ebb in runs.iter().filter(|r| r["autoscaler"] == "ebb") {
        for keda in runs
            .iter()
            .filter(|r| r["autoscaler"] != "ebb" && same(r, ebb))
        {
            let figures = [
                ("RSS (MiB)", m(ebb, "rss_mib"), m(keda, "rss_mib"), 1),
                ("CPU (cores)", m(ebb, "cpu_cores"), m(keda, "cpu_cores"), 4),
                (
                    "broker connections",
                    m(ebb, "broker_connections"),
                    m(keda, "broker_connections"),
                    0,
                ),
                (
                    "apiserver requests/min",
                    m(ebb, "apiserver_writes_per_min") + m(ebb, "apiserver_reads_per_min"),
                    m(keda, "apiserver_writes_per_min") + m(keda, "apiserver_reads_per_min"),
                    1,
                ),
                (
                    "poll lag p99 (ms)",
                    m(ebb, "poll_lag_p99_s") * 1e3,
                    m(keda, "poll_lag_p99_s") * 1e3,
                    1,
                ),
                (
                    "start to every object polled (s)",
                    ebb["all_polled_s"].as_f64().unwrap_or(f64::NAN),
                    keda["all_polled_s"].as_f64().unwrap_or(f64::NAN),
                    0,
                ),
            ];
            for (figure, e, k, digits) in figures {
                let ratio = if e > 0.0 && k.is_finite() {
                    format!("{:.1}x", k / e)
                } else {
                    "-".to_string()
                };
                lines.push(format!(
                    "| {} | {} | {} s | {figure}{} | {e:.digits$} | {k:.digits$} | {ratio} |",
                    ebb["broker"].as_str().unwrap_or(""),
                    ebb["objects"],
                    ebb["polling_interval_s"],
                    if keda["autoscaler"] == "keda-default" {
                        ", KEDA at its default rate"
                    } else {
                        ""
                    },
                ));
            }
        }
    }
    if lines.len() == 2 {
        return Ok(());
    }
    println!("==> side by side (scale; medians of the windows)");
    for line in &lines {
        println!("    {line}");
    }
    let out = xtask::workspace_root().join("target/bench/side-by-side.md");
    std::fs::write(&out, lines.join("\n") + "\n")?;
    println!("    wrote {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_write;

    #[test]
    fn reads_are_gets_lists_and_watches() {
        assert!(!is_write("get deployments/scale"));
        assert!(!is_write("watch scaledobjects"));
        assert!(is_write("patch scaledobjects/status"));
        assert!(is_write("create events"));
    }
}
