//! ScaledJobs: one Kubernetes Job per unit of pending work.
//!
//! - `controller`: the ScaledJob watch and reconcile (pause, checks, rollout, scalers, loop);
//! - `poll_loop`: one ScaledJob's polls (read, count, decide, create, clean up, status);
//! - `cache`: the Jobs and Pods of every ScaledJob, from two watches;
//! - `explain`: `ebb explain` for a ScaledJob, from its `status.lastPoll` and its Jobs;
//! - pure pieces: `decision` (how many Jobs a poll creates), `census` (which Jobs are running,
//!   pending or beyond the history limits) and `template` (the Job created from a ScaledJob).

pub mod cache;
pub mod census;
pub mod controller;
pub mod decision;
pub mod explain;
pub mod poll_loop;
pub mod template;

/// A std mutex's guard; a poisoned lock's data is still used (every writer leaves it whole).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
