//! `cargo xtask test`: every check CI runs, in order, each step announced and timed.

use std::time::Instant;

use anyhow::Result;
use xtask::cluster;

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Leave the dev cluster running afterwards even if this run started it.
    #[arg(long)]
    keep_cluster: bool,
    /// Skip the integration tests (no cluster needed).
    #[arg(long)]
    unit_only: bool,
}

struct Step {
    name: &'static str,
    seconds: u64,
}

/// Runs fmt, clippy, the unit tests, then the integration tests and the demo on the dev cluster.
pub fn run(args: TestArgs) -> Result<()> {
    let started = Instant::now();
    let mut steps = Vec::new();
    println!(
        "==> cargo xtask test: Debian packages, fmt check, clippy (warnings denied), unit tests, then"
    );
    println!(
        "    integration tests against a real local Kubernetes, Redis, RabbitMQ, PostgreSQL, MariaDB,"
    );
    println!(
        "    Prometheus, Kafka, NATS and an SQS server (with the container image built first), then the demo"
    );

    // protoc (for the external scaler's gRPC code) comes from Debian like the servers, and the
    // build needs it before clippy runs: a fresh machine installs the packages first.
    step(&mut steps, "Debian packages", cluster::packages::ensure)?;
    step(&mut steps, "rustfmt --check", || {
        cargo(&["fmt", "--all", "--", "--check"])
    })?;
    step(&mut steps, "clippy -D warnings", || {
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    step(&mut steps, "unit tests", || {
        cargo(&[
            "test",
            "--workspace",
            "--locked",
            "--exclude",
            "integration-tests",
        ])
    })?;

    if !args.unit_only {
        let was_running = crate::host::cluster_was_running();
        step(
            &mut steps,
            "build the ebb binary",
            crate::host::build_ebb_binary,
        )?;
        // The image's test in the suite unpacks and runs what this step writes.
        step(
            &mut steps,
            "container image (static build, OCI archive)",
            || crate::image::run(crate::image::ImageArgs::default()).map(|_| ()),
        )?;
        step(&mut steps, "dev cluster up", || cluster::up().map(|_| ()))?;
        // Two test binaries: the suite's tests side by side, then the disruptive ones (they
        // kill and restart shared servers, or time what other tests would slow) one at a time.
        let result = step(&mut steps, "integration suite", || {
            cargo(&[
                "test",
                "--locked",
                "--package",
                "integration-tests",
                "--test",
                "suite",
            ])
        })
        .and_then(|()| {
            step(&mut steps, "integration disruptive", || {
                cargo(&[
                    "test",
                    "--locked",
                    "--package",
                    "integration-tests",
                    "--test",
                    "disruptive",
                    "--",
                    "--test-threads=1",
                ])
            })
        })
        .and_then(|()| {
            // The README's first command, end to end: it fails unless the workers go
            // 0 -> 1 -> N -> 1 -> 0 as it says.
            step(
                &mut steps,
                "cargo xtask demo",
                crate::demo::run_on_the_running_cluster,
            )
        });
        if !was_running && !args.keep_cluster {
            let down = step(&mut steps, "dev cluster down", cluster::down);
            // A test failure is the news; a teardown problem is reported after it.
            result?;
            down?;
        } else {
            println!("==> leaving the dev cluster running (`cargo xtask cluster down` stops it)");
            result?;
        }
    }

    println!("==> summary");
    for s in &steps {
        println!("    {:<24} {:>5}s", s.name, s.seconds);
    }
    println!("    {:<24} {:>5}s", "total", started.elapsed().as_secs());
    Ok(())
}

fn step(steps: &mut Vec<Step>, name: &'static str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("==> {name}");
    let started = Instant::now();
    let result = f();
    steps.push(Step {
        name,
        seconds: started.elapsed().as_secs(),
    });
    if let Err(e) = &result {
        println!("==> {name} FAILED: {e:#}");
    }
    result
}

/// `cargo ARGS` in the workspace root.
fn cargo(args: &[&str]) -> Result<()> {
    crate::host::cargo(args, &[])
}
