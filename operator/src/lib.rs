//! ebb's operator: the ScaledObject controller, the scale loop and the external metrics API.
//!
//! Pure decision logic lives in modules that take values and return decisions (`scale::decision`),
//! so it is tested without a cluster; the I/O around it is kept apart.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod cli;
pub mod client;
pub mod controller;
pub mod digest;
pub mod events;
pub mod explain;
pub mod get;
pub mod hpa;
pub mod jobs;
pub mod leader;
pub mod loops;
pub mod metric_store;
pub mod metrics_api;
pub mod run;
pub mod scale;
pub mod status;
pub mod supervise;
pub mod target;
pub mod target_watch;
pub mod triggers;
pub mod validate;
pub mod validation_error;
pub mod workload_pods;

#[cfg(test)]
mod module_graph;
