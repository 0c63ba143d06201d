//! `cargo xtask chaos`: the fault and churn tests at length. The suite runs each fault once and
//! churns 150 objects; this injects each fault `--rounds` times (RabbitMQ and kube-apiserver
//! killed and restarted and the `ebb` process killed mid-cooldown in `faults`, the Redis
//! outage of `operator_outage`, a source slower than its timeout for longer), and churns
//! `--objects` ScaledObjects, printing what each round measured. They are modules of the
//! integration tests' disruptive binary (`integration-tests/tests/disruptive/`).

use std::time::Instant;

use anyhow::Result;
use xtask::cluster;

use crate::host::{self, cargo};

/// Options of `cargo xtask chaos`.
#[derive(clap::Args)]
pub struct ChaosArgs {
    /// Times each fault is injected.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// ScaledObjects created, updated and deleted by the churn test.
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    /// Leave the dev cluster running afterwards even if this run started it.
    #[arg(long)]
    keep_cluster: bool,
}

/// The modules of the disruptive test binary that inject faults or churn: name filters.
const TESTS: &[&str] = &["faults::", "operator_outage::", "churn::"];

/// Builds ebb, brings the cluster up and runs the fault and churn tests at length.
pub fn run(args: ChaosArgs) -> Result<()> {
    let started = Instant::now();
    println!(
        "==> cargo xtask chaos: each fault {} time(s) (RabbitMQ, Redis and kube-apiserver killed \
         and restarted, ebb killed with SIGKILL mid-cooldown, a source slower than its timeout), \
         then {} ScaledObjects churned, on the dev cluster",
        args.rounds, args.objects
    );
    let was_running = host::cluster_was_running();
    host::build_ebb_binary()?;
    cluster::up()?;
    let mut test_args = vec![
        "test",
        "--locked",
        "--package",
        "integration-tests",
        "--test",
        "disruptive",
        "--",
        "--nocapture",
        "--test-threads=1",
    ];
    test_args.extend(TESTS);
    let rounds = args.rounds.to_string();
    let objects = args.objects.to_string();
    let result = cargo(
        &test_args,
        &[
            ("EBB_CHAOS_ROUNDS", &rounds),
            ("EBB_CHURN_OBJECTS", &objects),
        ],
    );
    if !was_running && !args.keep_cluster {
        let down = cluster::down();
        result?;
        down?;
    } else {
        result?;
    }
    println!(
        "==> chaos finished in {}s: every fault and the churn passed",
        started.elapsed().as_secs()
    );
    Ok(())
}
