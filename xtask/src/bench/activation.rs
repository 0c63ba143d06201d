//! The activation scenario: how long from pushing one item onto an idle object's Redis list
//! (past its activation threshold of 0) to its Deployment's `spec.replicas` becoming 1, as a
//! `kubectl get -w` on the Deployments sees it. 100 trials per group, each pushed at a random
//! moment within max(interval, 30 s) (10 s with `--quick`): every phase of the object's poll is
//! sampled, and the trials do not crowd the apiserver at once. The groups run side by side,
//! their pushes interleaved. Beside them, idle objects polled every 30 s:
//!
//! - `pollingInterval: 1` and `pollingInterval: 30` without annotations (for ebb, adaptive
//!   checks within `--activation-budget`, default 200 a second for the one Redis);
//! - `pollingInterval: 30` with the fast activation path
//!   (`ebb.sh/activation-polling-interval-ms: "250"`), which KEDA ignores.
//!
//! Redis's own count of the commands it processed (`INFO stats`) over the trials gives the
//! broker's load.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use xtask::cluster::{ClusterInfo, ports};

use super::peer::{self, Rate};
use super::{
    commit, create_objects, end_scenario, idle_redis_objects, machine, namespace, object_pair,
    redis_trigger, start_ebb, wait_polled, write_result,
};
use crate::host::{kubectl, redis_output, wait_for};

/// The autoscaler the trials measure.
#[derive(Clone, Copy)]
pub enum Autoscaler<'a> {
    /// A release `ebb run` with these extra arguments (`--activation-budget 0`, say).
    Ebb(&'a Path, &'a [&'a str]),
    /// KEDA's operator at a client rate.
    Keda(&'a xtask::cluster::keda::Keda, Rate),
}

const TRIALS: usize = 100;
const LABEL: &str = "activation";
/// The fast activation path's interval in the trials that use it.
const FAST_MS: u64 = 250;

struct Group {
    prefix: &'static str,
    interval: u64,
    fast: bool,
}

const GROUPS: [Group; 3] = [
    Group {
        prefix: "plain1s",
        interval: 1,
        fast: false,
    },
    Group {
        prefix: "plain30s",
        interval: 30,
        fast: false,
    },
    Group {
        prefix: "fast30s",
        interval: 30,
        fast: true,
    },
];

/// What the results call `autoscaler`, and the result's file name.
fn who_and_label(autoscaler: Autoscaler<'_>, idle: usize) -> (String, String) {
    match autoscaler {
        Autoscaler::Ebb(_, []) => ("ebb".to_string(), format!("{LABEL}-{idle}")),
        Autoscaler::Ebb(_, extra) => (
            format!("ebb {}", extra.join(" ")),
            format!(
                "{LABEL}-{idle}-{}",
                extra.join("").replace("--", "").replace(' ', "")
            ),
        ),
        Autoscaler::Keda(_, rate) => (
            format!(
                "KEDA v{}, {}",
                xtask::cluster::keda::KEDA_VERSION,
                rate.describe()
            ),
            format!("{LABEL}-{idle}-{}", rate.label()),
        ),
    }
}

fn announce(who: &str, idle: usize, beside: &str) {
    println!(
        "==> activation ({who}): {TRIALS} trials each of pollingInterval 1s, 30s, and 30s with the fast activation path ({FAST_MS} ms), beside {idle} idle ScaledObjects polled every 30s{beside}"
    );
}

/// The trials' ScaledObjects and Deployments in `ns`.
fn trial_objects(ns: &str) -> Vec<Value> {
    let mut items = Vec::new();
    for group in &GROUPS {
        for i in 0..TRIALS {
            let name = format!("{}-{i:03}", group.prefix);
            let annotations = if group.fast {
                json!({"ebb.sh/activation-polling-interval-ms": FAST_MS.to_string()})
            } else {
                json!({})
            };
            items.extend(object_pair(
                ns,
                &name,
                group.interval,
                redis_trigger(&format!("bench:{name}")),
                annotations,
            ));
        }
    }
    items
}

/// Runs every group beside `idle` idle objects of its own.
pub fn run(
    info: &ClusterInfo,
    autoscaler: Autoscaler<'_>,
    idle: usize,
    quick: bool,
) -> Result<Value> {
    let (who, label) = who_and_label(autoscaler, idle);
    announce(&who, idle, "");
    let ns = namespace(&label);
    let mut items = idle_redis_objects(&ns, "idle", idle, 30);
    items.extend(trial_objects(&ns));
    let mut redis =
        TcpStream::connect(("127.0.0.1", ports::REDIS)).context("connecting to Redis")?;
    empty_trial_lists(&mut redis)?;
    create_objects(info, &ns, &items)?;
    let total = idle + GROUPS.len() * TRIALS;
    let running = match autoscaler {
        Autoscaler::Ebb(binary, extra) => {
            let mut args = vec!["--metrics-api-addr", "off"];
            args.extend_from_slice(extra);
            let ebb = start_ebb(info, binary, &label, &args)?;
            wait_polled(total, Duration::from_secs(200 + total as u64 / 20))?;
            Running::Ebb(ebb)
        }
        Autoscaler::Keda(keda, rate) => {
            let keda = peer::start(info, keda, &ns, &label, rate, false)?;
            wait_for(
                "every object polled once",
                Duration::from_secs(600 + total as u64),
                || {
                    let text = peer::scrape().ok()?;
                    (peer::loop_latencies(&text, &ns).len() >= total).then_some(())
                },
            )?;
            Running::Keda(keda)
        }
    };
    let result = trials(info, &ns, &mut redis, &who, idle, quick)?;
    write_result(&label, &result)?;
    end_scenario(info, &ns, !quick)?;
    drop(running);
    empty_trial_lists(&mut redis)?;
    Ok(result)
}

/// Runs every group inside a scale run, whose `idle` objects in `ns` (polled every 30 s, the
/// windows measured) are the ones beside: the trial objects are added to its namespace, and
/// measured once `scrape` (the running autoscaler's `/metrics`) shows each polled. The scale
/// run deletes them with its namespace.
pub fn beside_scale_run(
    info: &ClusterInfo,
    autoscaler: Autoscaler<'_>,
    ns: &str,
    idle: usize,
    quick: bool,
    scrape: impl Fn() -> Result<String>,
) -> Result<Value> {
    let (who, label) = who_and_label(autoscaler, idle);
    announce(&who, idle, " (the scale run's)");
    let mut redis =
        TcpStream::connect(("127.0.0.1", ports::REDIS)).context("connecting to Redis")?;
    empty_trial_lists(&mut redis)?;
    create_objects(info, ns, &trial_objects(ns))?;
    // Both autoscalers report each object's last loop as
    // keda_internal_scale_loop_latency_seconds{namespace, resource}.
    let total = idle + GROUPS.len() * TRIALS;
    wait_for(
        "every trial object polled once",
        Duration::from_secs(300 + total as u64 / 10),
        || (peer::loop_latencies(&scrape().ok()?, ns).len() >= total).then_some(()),
    )?;
    let result = trials(info, ns, &mut redis, &who, idle, quick)?;
    write_result(&label, &result)?;
    empty_trial_lists(&mut redis)?;
    Ok(result)
}

/// The trials proper, on objects that have each been polled once: the pushes, each
/// Deployment's first `spec.replicas >= 1`, the latencies by group, Redis's load.
fn trials(
    info: &ClusterInfo,
    ns: &str,
    redis: &mut TcpStream,
    who: &str,
    idle: usize,
    quick: bool,
) -> Result<Value> {
    let commands_before = redis_commands()?;
    // Every Deployment's spec.replicas as it changes.
    let mut watch = kubectl(info)
        .args(["get", "deployments", "-n", ns, "-w"])
        .args(["-o", "jsonpath={.metadata.name} {.spec.replicas}{\"\\n\"}"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    let stdout = watch.stdout.take().context("kubectl stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let seen = Instant::now();
            if let Some((name, replicas)) = line.trim().split_once(' ')
                && replicas.parse::<i32>().is_ok_and(|r| r >= 1)
                && tx.send((name.to_string(), seen)).is_err()
            {
                return;
            }
        }
    });
    // The watch lists first: let its initial listing pass.
    std::thread::sleep(Duration::from_secs(2));
    while rx.try_recv().is_ok() {}

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    // A push moment for each trial of each group, uniform over its group's spread.
    let spread =
        |group: &Group| Duration::from_secs(group.interval.max(if quick { 10 } else { 30 }));
    let mut pushes: Vec<(Duration, String)> = Vec::new();
    for group in &GROUPS {
        for i in 0..TRIALS {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let offset = spread(group).mul_f64((seed % 1_000_000) as f64 / 1_000_000.0);
            pushes.push((offset, format!("{}-{i:03}", group.prefix)));
        }
    }
    pushes.sort();
    let start = Instant::now();
    let mut pushed: HashMap<String, Instant> = HashMap::new();
    let mut seen: HashMap<String, Instant> = HashMap::new();
    for (offset, name) in pushes {
        let at = start + offset;
        while let Some(wait) = at.checked_duration_since(Instant::now()) {
            if let Ok((name, when)) = rx.recv_timeout(wait) {
                seen.entry(name).or_insert(when);
            }
        }
        command(redis, &["RPUSH", &format!("bench:{name}"), "job"])?;
        pushed.insert(name, Instant::now());
    }
    // Each group's trials get their interval + 30 s after the last push of the group.
    let deadline = GROUPS
        .iter()
        .map(|g| start + spread(g) + Duration::from_secs(g.interval + 30))
        .max()
        .unwrap_or(start);
    while pushed.keys().any(|k| !seen.contains_key(k)) && Instant::now() < deadline {
        if let Ok((name, when)) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.entry(name).or_insert(when);
        }
    }
    let commands_per_s = (redis_commands()? - commands_before) / start.elapsed().as_secs_f64();
    println!("    Redis processed {commands_per_s:.0} commands a second during the trials");
    let mut groups = serde_json::Map::new();
    for group in &GROUPS {
        let mut latencies: Vec<f64> = pushed
            .iter()
            .filter(|(name, _)| {
                name.strip_prefix(group.prefix)
                    .is_some_and(|rest| rest.starts_with('-'))
            })
            .filter_map(|(name, at)| {
                Some(seen.get(name)?.saturating_duration_since(*at).as_secs_f64())
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        let missing = TRIALS - latencies.len();
        let q = |q: f64| -> Value {
            if latencies.is_empty() {
                return Value::Null;
            }
            let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
            json!(latencies[rank - 1])
        };
        println!(
            "    {}: p50 {}s, p99 {}s, max {}s, {missing} not activated within interval + 30s",
            group.prefix,
            q(0.5),
            q(0.99),
            q(1.0)
        );
        groups.insert(
            group.prefix.to_string(),
            json!({
                "polling_interval_s": group.interval,
                "activation_polling_ms": group.fast.then_some(FAST_MS),
                "trials": TRIALS,
                "pushes_spread_over_s": spread(group).as_secs(),
                "activated": latencies.len(),
                "latency_p50_s": q(0.5),
                "latency_p90_s": q(0.9),
                "latency_p99_s": q(0.99),
                "latency_max_s": q(1.0),
            }),
        );
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let result = json!({
        "scenario": "activation",
        "autoscaler": who,
        "idle_objects": idle,
        "redis_commands_per_s": commands_per_s,
        "groups": groups,
        "machine": machine(),
        "commit": commit(),
    });
    Ok(result)
}

/// The autoscaler running the trials (stopped when dropped).
enum Running {
    Ebb(#[allow(dead_code)] super::Running),
    Keda(#[allow(dead_code)] peer::Running),
}

/// Commands the dev Redis has processed since it started (`INFO stats`).
fn redis_commands() -> Result<f64> {
    let info = redis_output(&["INFO", "stats"])?;
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no total_commands_processed in Redis's INFO stats")
}

/// Deletes every trial's list.
fn empty_trial_lists(redis: &mut TcpStream) -> Result<()> {
    for group in &GROUPS {
        for i in 0..TRIALS {
            command(redis, &["DEL", &format!("bench:{}-{i:03}", group.prefix)])?;
        }
    }
    Ok(())
}

/// Sends one command over RESP and reads its one-line reply.
fn command(redis: &mut TcpStream, args: &[&str]) -> Result<()> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    redis.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        redis.read_exact(&mut byte)?;
        reply.push(byte[0]);
    }
    if reply.first() == Some(&b'-') {
        bail!("redis {args:?}: {}", String::from_utf8_lossy(&reply).trim());
    }
    Ok(())
}

/// Prints the activation summary.
pub fn print_table(result: &Value) {
    println!(
        "==> summary (activation, {}, {} idle objects beside; Redis {:.0} commands/s)",
        result["autoscaler"].as_str().unwrap_or("ebb"),
        result["idle_objects"],
        result["redis_commands_per_s"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "    {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "group", "interval", "fast ms", "p50 s", "p99 s", "max s", "activated"
    );
    if let Some(groups) = result["groups"].as_object() {
        for (name, g) in groups {
            println!(
                "    {:>10} {:>8}s {:>9} {:>9.3} {:>9.3} {:>9.3} {:>10}",
                name,
                g["polling_interval_s"],
                g["activation_polling_ms"],
                g["latency_p50_s"].as_f64().unwrap_or(f64::NAN),
                g["latency_p99_s"].as_f64().unwrap_or(f64::NAN),
                g["latency_max_s"].as_f64().unwrap_or(f64::NAN),
                g["activated"],
            );
        }
    }
}
