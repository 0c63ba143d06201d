//! The activation scenario: how long from pushing one item onto an idle object's Redis list
//! (past its activation threshold of 0) to its Deployment's `spec.replicas` becoming 1, as a
//! `kubectl get -w` on the Deployments sees it. 100 trials per group, each pushed at a random
//! moment within max(interval, 30 s) (10 s with `--quick`): every phase of the object's poll is
//! sampled, and the trials do not crowd the apiserver at once. The groups run side by side,
//! their pushes interleaved. Beside them, idle objects polled every 30 s:
//!
//! - plain polling at `pollingInterval: 1` and `pollingInterval: 30`;
//! - `pollingInterval: 30` with the fast activation path
//!   (`ebb.sh/activation-polling-interval-ms: "250"`).

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

use super::{
    commit, create_objects, end_scenario, idle_redis_objects, machine, namespace, object_pair,
    redis_trigger, start_ebb, wait_polled, write_result,
};
use crate::host::kubectl;

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

/// Runs every group beside `idle` idle objects.
pub fn run(info: &ClusterInfo, binary: &Path, idle: usize, quick: bool) -> Result<Value> {
    println!(
        "==> activation: {TRIALS} trials each of pollingInterval 1s, 30s, and 30s with the fast activation path ({FAST_MS} ms), beside {idle} idle ScaledObjects polled every 30s"
    );
    let ns = namespace(LABEL);
    let mut items = idle_redis_objects(&ns, "idle", idle, 30);
    for group in &GROUPS {
        for i in 0..TRIALS {
            let name = format!("{}-{i:03}", group.prefix);
            let annotations = if group.fast {
                json!({"ebb.sh/activation-polling-interval-ms": FAST_MS.to_string()})
            } else {
                json!({})
            };
            items.extend(object_pair(
                &ns,
                &name,
                group.interval,
                redis_trigger(&format!("bench:{name}")),
                annotations,
            ));
        }
    }
    let mut redis =
        TcpStream::connect(("127.0.0.1", ports::REDIS)).context("connecting to Redis")?;
    empty_trial_lists(&mut redis)?;
    create_objects(info, &ns, &items)?;
    let total = idle + GROUPS.len() * TRIALS;
    let ebb = start_ebb(info, binary, LABEL, &["--metrics-api-addr", "off"])?;
    wait_polled(total, Duration::from_secs(200 + total as u64 / 20))?;

    // Every Deployment's spec.replicas as it changes.
    let mut watch = kubectl(info)
        .args(["get", "deployments", "-n", &ns, "-w"])
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
        command(&mut redis, &["RPUSH", &format!("bench:{name}"), "job"])?;
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
        "idle_objects": idle,
        "groups": groups,
        "machine": machine(),
        "commit": commit(),
    });
    write_result(LABEL, &result)?;
    end_scenario(info, &ns, !quick)?;
    drop(ebb);
    empty_trial_lists(&mut redis)?;
    Ok(result)
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
        "==> summary (activation, {} idle objects beside)",
        result["idle_objects"]
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
