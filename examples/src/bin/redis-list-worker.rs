//! A worker that takes jobs off a Redis list (`BLPOP`) until SIGTERM.
//!
//! Settings (environment): `REDIS_ADDRESS` (`host:port`), `REDIS_PASSWORD` (optional),
//! `REDIS_DATABASE` (default 0), `LIST_NAME`, `WORK_MILLIS` (time per job, default 1000).

use ebb_examples::redis_list::RedisListWorker;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redis-list-worker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), ebb_examples::ExampleError> {
    let worker = RedisListWorker::from_env()?;
    eprintln!("redis-list-worker: taking jobs from {}", worker.list);
    let done = worker.run(ebb_examples::shutdown_signal()).await?;
    eprintln!("redis-list-worker: stopping after {done} jobs");
    Ok(())
}
