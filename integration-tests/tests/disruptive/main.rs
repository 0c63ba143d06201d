//! The disruptive integration tests: one test binary whose tests run one at a time. `cargo
//! xtask test` runs it after the parallel suite (`tests/suite/`), with `--test-threads=1`;
//! `cargo xtask chaos` runs `faults`, `operator_outage` and `churn` from it at length.
//!
//! A test belongs here, not in the suite, when it would disturb the tests running beside it or
//! they would disturb it:
//! - `faults`: kills and restarts the dev cluster's RabbitMQ, PostgreSQL, MariaDB, Prometheus,
//!   Kafka, NATS, ElasticMQ and kube-apiserver, which other tests use; counts ebb's AMQP connections on the whole broker; measures how late
//!   polls start, which wants a quiet machine.
//! - `operator_outage`: a Redis outage of its own, timed: every trigger reads again within two
//!   polls of the return (and `cargo xtask chaos` repeats it).
//! - `churn`: counts every client connection of the shared Redis (another test's connections
//!   would count) and the `ebb` process's RSS, while it loads the apiserver with 150 objects.
//! - `operator_leader`: Lease hand-overs timed to the lease duration, leaders killed; the
//!   processes write the cluster's one APIService's caBundle (in the metrics API turn, too).
//! - `shared_connections`: counts every connection of the shared Kafka, NATS and SQS servers
//!   (another test's connections would count).
//! - `redis_sentinel_failover`: fails over the shared Sentinel set that the suite's
//!   `redis_topologies` reads.
//! - `crd_rules`: swaps the cluster's ScaledObject CRD for one without its CEL rules for a
//!   moment, to store an object they would refuse.
//!
//! Run on its own, they are serialised all the same: each test takes [`serial`] first, so
//! `cargo test -p integration-tests --test disruptive` without `--test-threads=1` is safe too.

mod churn;
mod crd_rules;
mod faults;
mod operator_leader;
mod operator_outage;
mod redis_sentinel_failover;
mod shared_connections;

/// One test of this binary at a time, whatever `--test-threads` says.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This test's turn: the first statement of every test here, held to its end. A tokio Mutex
/// works across the tests' runtimes (each test has its own) and is not poisoned: a test that
/// fails gives its turn back as it unwinds, and the next one runs.
pub(crate) async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Every file in this directory is declared above: with `autotests = false` a file left out is
/// neither built nor run, silently.
#[test]
fn every_file_here_is_a_module_of_the_disruptive_binary() {
    integration_tests::assert_every_file_is_a_module("disruptive");
}

/// Every test in the files of this directory begins with `let _serial = crate::serial().await;`.
#[test]
fn every_disruptive_test_takes_its_turn_first() {
    const TURN: &str = "let _serial = crate::serial().await;";
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/disruptive");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/disruptive/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs") && !p.ends_with("main.rs"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "only {files:?} in {}", dir.display());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a test file");
        let mut tests = 0;
        let mut lines = text.lines().map(str::trim);
        while let Some(line) = lines.next() {
            if !(line.starts_with("#[tokio::test") || line == "#[test]") {
                continue;
            }
            tests += 1;
            let signature = lines.by_ref().find(|l| l.ends_with('{'));
            assert_eq!(
                lines.next(),
                Some(TURN),
                "{}: {signature:?} does not begin with `{TURN}`",
                file.display()
            );
        }
        assert!(tests > 0, "{}: no test found", file.display());
    }
}
