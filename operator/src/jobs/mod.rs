//! ScaledJobs: one Kubernetes Job per unit of pending work.
//!
//! Pure pieces so far: `decision` (how many Jobs a poll creates), `census` (which Jobs are
//! running, pending or beyond the history limits) and `template` (the Job created from a
//! ScaledJob). The controller and poll loop that use them are issue 21's next steps.

pub mod census;
pub mod decision;
pub mod template;
