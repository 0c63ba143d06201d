//! A ScaledJob's worker: takes one job off a Redis list (`BLPOP`, waiting up to 2 s), works on
//! it and exits. ebb starts one Kubernetes Job per waiting item.
//!
//! Settings (environment): `REDIS_ADDRESS` (`host:port`), `REDIS_PASSWORD` (optional),
//! `REDIS_DATABASE` (default 0), `LIST_NAME`, `WORK_MILLIS` (time for the job, default 1000).

use ebb_examples::redis_list::RedisListWorker;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let worker = match RedisListWorker::from_env() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("redis-list-job: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match worker.take_one().await {
        Ok(Some(_)) => std::process::ExitCode::SUCCESS,
        // Another Job took it first: nothing to do is a success.
        Ok(None) => {
            eprintln!("redis-list-job: {} is empty", worker.list);
            std::process::ExitCode::SUCCESS
        }
        // A failure makes the Job retry (up to its backoffLimit); the item is still waiting.
        Err(e) => {
            eprintln!("redis-list-job: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
