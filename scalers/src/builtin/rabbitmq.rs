//! `rabbitmq`: queue length or message rate over AMQP or the management API.

use crate::registry::Registry;

/// Registers `rabbitmq`.
pub fn register(_registry: &mut Registry) {}
