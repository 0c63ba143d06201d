//! The RabbitMQ consumer and producer of `examples/rabbitmq-consumer/`. The consumer takes
//! messages off a durable queue with a prefetch window and acknowledges each when done; the
//! producer publishes persistent messages with publisher confirms. The `rabbitmq` trigger
//! scales the consumers on the queue's ready messages.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::{ExampleError, settings};

/// A durable queue on a RabbitMQ server.
#[derive(Clone)]
pub struct RabbitMqQueue {
    /// `amqp[s]://user:password@host:port/vhost` (the same value as the trigger's `host`;
    /// the default vhost `/` is written `%2f`).
    pub url: String,
    /// The queue's name.
    pub queue: String,
}

/// How the consumer works through the queue.
#[derive(Clone, Copy)]
pub struct ConsumerSettings {
    /// Messages delivered to this consumer before it has acknowledged them.
    pub prefetch: u16,
    /// Time spent on each message, standing in for real work.
    pub work_time: Duration,
}

impl ConsumerSettings {
    /// From `PREFETCH` (default 1) and `WORK_MILLIS` (default 1000).
    pub fn from_env() -> Result<Self, ExampleError> {
        Ok(Self {
            prefetch: settings::number_or("PREFETCH", 1)?,
            work_time: settings::millis_or("WORK_MILLIS", Duration::from_secs(1))?,
        })
    }
}

impl RabbitMqQueue {
    /// From `AMQP_URL` and `QUEUE_NAME` (both required).
    pub fn from_env() -> Result<Self, ExampleError> {
        Ok(Self {
            url: settings::required("AMQP_URL")?,
            queue: settings::required("QUEUE_NAME")?,
        })
    }

    /// A connection named `name` and a channel on which the queue is declared (durable, so it
    /// and its persistent messages survive a broker restart). Declaring is idempotent, so
    /// whichever of producer and consumer starts first creates it.
    async fn open(&self, name: &str) -> Result<(Connection, Channel), ExampleError> {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connection = Connection::connect(&self.url, properties).await?;
        let channel = connection.create_channel().await?;
        channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await?;
        Ok((connection, channel))
    }

    /// Consumes until `shutdown` completes, acknowledging each message after its work, and
    /// returns how many it did. Messages delivered but not yet acknowledged when it stops go
    /// back to the queue (RabbitMQ requeues them when the channel closes).
    pub async fn consume(
        &self,
        settings: ConsumerSettings,
        shutdown: impl Future<Output = ()>,
    ) -> Result<u64, ExampleError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let (connection, channel) = self.open("rabbitmq-consumer").await?;
        channel
            .basic_qos(settings.prefetch.max(1), BasicQosOptions::default())
            .await?;
        let mut deliveries = channel
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut done = 0u64;
        loop {
            let delivery = tokio::select! {
                () = &mut shutdown => break,
                next = deliveries.next() => match next {
                    Some(delivery) => delivery?,
                    // The broker cancelled the consumer (the queue was deleted).
                    None => break,
                },
            };
            tokio::time::sleep(settings.work_time).await;
            delivery.ack(BasicAckOptions::default()).await?;
            done += 1;
            println!(
                "message {done} from {}: {} bytes",
                self.queue,
                delivery.data.len()
            );
        }
        let _ = channel.close(200, "shutting down".into()).await;
        let _ = connection.close(200, "shutting down".into()).await;
        Ok(done)
    }

    /// Publishes `count` persistent messages `<prefix>-<n>`, each confirmed by the broker.
    pub async fn publish(&self, count: u64, prefix: &str) -> Result<(), ExampleError> {
        let (connection, channel) = self.open("rabbitmq-producer").await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        for n in 1..=count {
            let body = format!("{prefix}-{n}");
            let confirm = channel
                .basic_publish(
                    "".into(),
                    self.queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    // Delivery mode 2: persistent.
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await?;
            if confirm.is_nack() {
                return Err(ExampleError::Refused(format!(
                    "the broker refused message {n} for {} (nack)",
                    self.queue
                )));
            }
        }
        let _ = channel.close(200, "done".into()).await;
        let _ = connection.close(200, "done".into()).await;
        Ok(())
    }
}
