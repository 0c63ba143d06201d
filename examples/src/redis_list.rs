//! The Redis list worker: takes jobs off a list with `BLPOP`, one at a time, and "works" on
//! each for a configurable time. It is the workload the `redis` trigger of
//! `examples/redis-list-worker/` scales: the list's length is the backlog.
//!
//! Delivery is at most once: a job popped by a worker that then dies is lost. A worker that
//! must not lose jobs moves them to a processing list instead (`BLMOVE`) and removes them when
//! done; the scaling works the same, since ebb counts the pending list only.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt as _;
use redis::IntoConnectionInfo as _;

use crate::{ExampleError, settings};

/// How long one `BLPOP` waits for a job before the worker checks for shutdown again.
const BLOCK: Duration = Duration::from_secs(2);

/// Where the worker takes its jobs from and how long each takes.
#[derive(Clone)]
pub struct RedisListWorker {
    /// `host:port` of the Redis server (the same value as the trigger's `address`).
    pub address: String,
    /// Password, if the server wants one.
    pub password: Option<String>,
    /// Database number.
    pub database: i64,
    /// The list the jobs are pushed onto (`RPUSH`).
    pub list: String,
    /// Time spent on each job, standing in for real work.
    pub work_time: Duration,
}

impl RedisListWorker {
    /// From `REDIS_ADDRESS` (required), `REDIS_PASSWORD`, `REDIS_DATABASE` (default 0),
    /// `LIST_NAME` (required) and `WORK_MILLIS` (default 1000).
    pub fn from_env() -> Result<Self, ExampleError> {
        Ok(Self {
            address: settings::required("REDIS_ADDRESS")?,
            password: settings::optional("REDIS_PASSWORD"),
            database: settings::number_or("REDIS_DATABASE", 0)?,
            list: settings::required("LIST_NAME")?,
            work_time: settings::millis_or("WORK_MILLIS", Duration::from_secs(1))?,
        })
    }

    /// Takes and works on jobs until `shutdown` completes, then returns how many it did. A job
    /// in progress is finished first; a `BLPOP` is never abandoned half way (its job would be
    /// lost), so shutting down takes at most the block time plus one job.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<u64, ExampleError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut connection = self.connect().await?;
        let mut done = 0u64;
        while (&mut shutdown).now_or_never().is_none() {
            let job: Option<(String, Vec<u8>)> = redis::cmd("BLPOP")
                .arg(&self.list)
                .arg(BLOCK.as_secs_f64())
                .query_async(&mut connection)
                .await?;
            let Some((_, payload)) = job else { continue };
            tokio::time::sleep(self.work_time).await;
            done += 1;
            println!(
                "job {done} from {}: {}",
                self.list,
                preview(&String::from_utf8_lossy(&payload))
            );
        }
        Ok(done)
    }

    /// Takes one job (waiting up to the block time for one), works on it and returns it: what a
    /// Job of a ScaledJob does before it exits. `None` when the list stayed empty.
    pub async fn take_one(&self) -> Result<Option<String>, ExampleError> {
        let mut connection = self.connect().await?;
        let job: Option<(String, Vec<u8>)> = redis::cmd("BLPOP")
            .arg(&self.list)
            .arg(BLOCK.as_secs_f64())
            .query_async(&mut connection)
            .await?;
        let Some((_, payload)) = job else {
            return Ok(None);
        };
        tokio::time::sleep(self.work_time).await;
        let payload = String::from_utf8_lossy(&payload).into_owned();
        println!("job from {}: {}", self.list, preview(&payload));
        Ok(Some(payload))
    }

    async fn connect(&self) -> Result<redis::aio::MultiplexedConnection, ExampleError> {
        let info = format!("redis://{}", self.address).into_connection_info()?;
        let mut redis = info.redis_settings().clone().set_db(self.database);
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        let client = redis::Client::open(info.set_redis_settings(redis))?;
        // The default response timeout (500 ms) is shorter than a blocking pop.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
        Ok(client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }
}

/// At most 60 characters of a job, for the log.
fn preview(text: &str) -> String {
    let mut short: String = text.chars().take(60).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_short() {
        assert_eq!(preview("job-1"), "job-1");
        assert_eq!(preview(&"x".repeat(100)).chars().count(), 61);
    }
}
