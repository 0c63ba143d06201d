//! `cron`: a fixed replica count inside timezone-aware time windows.

use crate::registry::Registry;

/// Registers `cron`.
pub fn register(_registry: &mut Registry) {}
