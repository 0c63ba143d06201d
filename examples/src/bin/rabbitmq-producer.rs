//! Publishes messages to a RabbitMQ queue, to give the consumers (and ebb) something to do.
//!
//! Usage: `rabbitmq-producer [COUNT]` (default 1), with `AMQP_URL` and `QUEUE_NAME` set as for
//! `rabbitmq-consumer`.

use ebb_examples::rabbitmq_queue::RabbitMqQueue;
use ebb_examples::settings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rabbitmq-producer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), ebb_examples::ExampleError> {
    let queue = RabbitMqQueue::from_env()?;
    let count: u64 = match std::env::args().nth(1) {
        Some(text) => settings::parse_number("COUNT", &text)?,
        None => 1,
    };
    queue.publish(count, "order").await?;
    eprintln!(
        "rabbitmq-producer: published {count} messages to {}",
        queue.queue
    );
    Ok(())
}
