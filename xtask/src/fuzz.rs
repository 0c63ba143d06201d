//! `cargo xtask fuzz`: ebb's fuzz targets (`fuzz/`) under libFuzzer with AddressSanitizer, each
//! for a number of seconds. Needs the nightly toolchain, which rustup installs when it is
//! missing. Each target's corpus grows in `target/fuzz/corpus/<target>/` and is reused by the
//! next run; an input that fails an assertion or crashes is saved to
//! `target/fuzz/artifacts/<target>/` and fails the command (fix it, then keep the input in
//! `fuzz/regressions/<target>/`, which the unit tests replay). Executions per target, for this
//! run and for every run kept in `target/fuzz/totals.json`, are printed at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Run only this target (repeatable); every target when absent.
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
    /// Targets run side by side (default: one per CPU core).
    #[arg(long)]
    jobs: Option<usize>,
}

/// The coverage and sanitizer flags cargo-fuzz uses, for a libFuzzer build.
const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks -Zsanitizer=address";

/// What one target's run came to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Tally {
    seconds: u64,
    executions: u64,
    runs: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.seconds += other.seconds;
        self.executions += other.executions;
        self.runs += other.runs;
    }
}

/// Runs the targets.
pub fn run(args: FuzzArgs) -> Result<()> {
    let root = xtask::workspace_root();
    let work = crate::host::cargo_target_dir(&root).join("fuzz");
    let all = targets(&root.join("fuzz/fuzz_targets"))?;
    let chosen: Vec<String> = if args.targets.is_empty() {
        all.clone()
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?}; the targets are: {}", all.join(", "));
            }
        }
        args.targets.clone()
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    println!(
        "==> cargo xtask fuzz: {} target(s) for {} s each, {jobs} at a time, under libFuzzer with \
         AddressSanitizer (nightly toolchain); corpora in {}",
        chosen.len(),
        args.seconds,
        work.join("corpus").display()
    );

    ensure_nightly()?;
    let binaries = build(&root, &work.join("build"))?;

    let queue = Mutex::new(chosen.clone());
    let results: Mutex<BTreeMap<String, Result<Tally, String>>> = Mutex::new(BTreeMap::new());
    // The queue's lock is taken and released inside `next`, never held while a target runs.
    let next = || queue.lock().ok().and_then(|mut q| q.pop());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(chosen.len()) {
            scope.spawn(|| {
                while let Some(target) = next() {
                    let outcome = fuzz_one(&root, &work, &binaries, &target, args.seconds)
                        .map_err(|e| format!("{e:#}"));
                    if let Ok(mut r) = results.lock() {
                        r.insert(target, outcome);
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();

    let totals_path = work.join("totals.json");
    let mut totals: BTreeMap<String, Tally> = std::fs::read(&totals_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    println!("==> fuzz summary ({} s per target)", args.seconds);
    println!(
        "    {:<22} {:>14} {:>10}   {:>16} {:>10}",
        "target", "executions", "exec/s", "all runs: execs", "seconds"
    );
    let mut failed = Vec::new();
    for (target, outcome) in &results {
        match outcome {
            Ok(tally) => {
                let total = totals.entry(target.clone()).or_default();
                total.add(tally);
                println!(
                    "    {:<22} {:>14} {:>10} {:>18} {:>10}",
                    target,
                    tally.executions,
                    tally.executions / tally.seconds.max(1),
                    total.executions,
                    total.seconds
                );
            }
            Err(e) => {
                println!("    {target:<22} FAILED: {e}");
                failed.push(target.clone());
            }
        }
    }
    std::fs::write(&totals_path, serde_json::to_vec_pretty(&totals)?)
        .with_context(|| format!("writing {}", totals_path.display()))?;
    if !failed.is_empty() {
        bail!("fuzz target(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The targets: one file each in `fuzz/fuzz_targets/`.
fn targets(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Installs the nightly toolchain through rustup unless it is there.
fn ensure_nightly() -> Result<()> {
    let listed = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("running rustup (the fuzz targets need a nightly toolchain through rustup)")?;
    if String::from_utf8_lossy(&listed.stdout)
        .lines()
        .any(|l| l.starts_with("nightly-"))
    {
        return Ok(());
    }
    println!("==> installing the nightly toolchain (rustup toolchain install nightly)");
    let status = Command::new("rustup")
        .args(["toolchain", "install", "nightly", "--profile", "minimal"])
        .status()?;
    if !status.success() {
        bail!("rustup toolchain install nightly failed ({status})");
    }
    Ok(())
}

/// The host's target triple, so the sanitizer flags reach the targets but not build scripts.
fn host_triple() -> Result<String> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "-vV"])
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV named no host triple")
}

/// Builds every target binary; returns the folder holding them.
fn build(root: &Path, build_dir: &Path) -> Result<PathBuf> {
    let host = host_triple()?;
    println!(
        "==> building the fuzz targets (cargo +nightly build --release -p ebb-fuzz --features \
         libfuzzer --target {host}, coverage and AddressSanitizer flags)"
    );
    let started = Instant::now();
    let status = Command::new("rustup")
        .args(["run", "nightly", "cargo", "build", "--release", "--locked"])
        .args(["--package", "ebb-fuzz", "--features", "libfuzzer", "--bins"])
        .args(["--target", &host])
        .env("CARGO_TARGET_DIR", build_dir)
        .env("RUSTFLAGS", RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .current_dir(root)
        .status()
        .context("running cargo +nightly")?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }
    println!("    built in {} s", started.elapsed().as_secs());
    Ok(build_dir.join(host).join("release"))
}

/// Fuzzes one target for `seconds`; its libFuzzer output goes to `logs/<target>.log`.
fn fuzz_one(
    root: &Path,
    work: &Path,
    binaries: &Path,
    target: &str,
    seconds: u64,
) -> Result<Tally> {
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    let logs = work.join("logs");
    for dir in [&corpus, &artifacts, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)?;
    println!("==> {target}: {seconds} s (log {})", log_path.display());
    let mut cmd = Command::new(binaries.join(target));
    cmd.arg(&corpus);
    // Kept crashes are read as a second corpus: they run first, and nothing is written there.
    let regressions = root.join("fuzz/regressions").join(target);
    if regressions.is_dir() {
        cmd.arg(&regressions);
    }
    let status = cmd
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(["-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048"])
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {}", binaries.join(target).display()))?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "libFuzzer stopped ({status}); the failing input is in {}; the log ends:\n{}",
            artifacts.display(),
            tail.join("\n")
        );
    }
    Ok(Tally {
        seconds,
        executions: final_stat(&text, "stat::number_of_executed_units:").unwrap_or(0),
        runs: 1,
    })
}

/// A number from libFuzzer's `-print_final_stats` block.
fn final_stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_execution_count_is_read_from_the_final_stats() {
        let log = "#2\tINITED cov: 10\nDone 1234 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 1234\nstat::peak_rss_mb: 40\n";
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units:"),
            Some(1234)
        );
        assert_eq!(
            final_stat("crashed early", "stat::number_of_executed_units:"),
            None
        );
    }

    #[test]
    fn every_entry_point_has_its_target_module() {
        let fuzz = xtask::workspace_root().join("fuzz");
        let names = targets(&fuzz.join("fuzz_targets")).unwrap();
        assert!(names.contains(&"formula".to_string()), "{names:?}");
        for name in &names {
            assert!(
                fuzz.join("src").join(format!("{name}.rs")).is_file(),
                "fuzz_targets/{name}.rs has no fuzz/src/{name}.rs"
            );
        }
    }
}
