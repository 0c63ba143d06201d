//! ScaledJobs: one Kubernetes Job per unit of pending work.
//!
//! `decision` holds the pure arithmetic of a poll (how many Jobs to create); the controller and
//! the poll loop that create, count and clean up Jobs come with issue 21's next steps.

pub mod decision;
