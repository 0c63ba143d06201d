//! A consumer that works through a RabbitMQ queue, acknowledging each message, until SIGTERM.
//!
//! Settings (environment): `AMQP_URL` (`amqp://user:password@host:5672/%2f`), `QUEUE_NAME`,
//! `PREFETCH` (unacknowledged messages at a time, default 1), `WORK_MILLIS` (time per
//! message, default 1000).

use ebb_examples::rabbitmq_queue::{ConsumerSettings, RabbitMqQueue};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rabbitmq-consumer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), ebb_examples::ExampleError> {
    let queue = RabbitMqQueue::from_env()?;
    let settings = ConsumerSettings::from_env()?;
    eprintln!("rabbitmq-consumer: consuming {}", queue.queue);
    let done = queue
        .consume(settings, ebb_examples::shutdown_signal())
        .await?;
    eprintln!("rabbitmq-consumer: stopping after {done} messages");
    Ok(())
}
