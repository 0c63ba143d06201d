//! `postgresql`: not written yet (issue 20); registers nothing until it is.

use crate::registry::Registry;

/// Registers `postgresql` (nothing yet).
pub fn register(_registry: &mut Registry) {}
