//! The parallel integration suite: one test binary whose tests run side by side (libtest's
//! threads, one per core), against the one dev cluster. `cargo xtask test` runs it first, then
//! the disruptive tests (`tests/disruptive/`) one at a time.
//!
//! A test belongs here when it shares the cluster without disturbing the tests beside it:
//! - its objects live in a namespace of its own ([`integration_tests::setup`]), its in-process
//!   ebb watches that namespace only, and what it puts in Redis or RabbitMQ has a unique name
//!   (or a vhost of its own);
//! - it counts only what is its own: connections on a Redis database no other test uses (e.g.
//!   `redis_scaler` on database 11), on a vhost of its own, or requests of its own ebb;
//! - it stops and restarts none of the shared servers and needs no quiet machine to be on time;
//! - the cluster's one metrics APIService (`v1beta1.external.metrics.k8s.io`) and its port are
//!   taken in turns: [`integration_tests::metrics_api_turn`], which
//!   [`integration_tests::TestEnv::serve_metrics_api`] takes and `secrets` takes before it
//!   registers the APIService for its `ebb` process.
//!
//! Anything else goes in `tests/disruptive/`.

mod admission;
mod aws_sqs_scaler;
mod brokers;
mod control_plane;
mod crds;
mod deploy;
mod docs_commands;
mod docs_conformance;
mod examples;
mod explain;
mod external_scaler;
mod extreme_values;
mod image;
mod kafka_scaler;
mod kubectl_plugin;
mod kubernetes_workload_scaler;
mod metrics_api;
mod metrics_api_scaler;
mod nats_jetstream_scaler;
mod operator_activation;
mod operator_auth_providers;
mod operator_auth_refresh;
mod operator_auth_resolution;
mod operator_lifecycle;
mod operator_modifiers;
mod operator_rabbitmq;
mod operator_redis;
mod operator_supervision;
mod prometheus_scaler;
mod rabbitmq_scaler;
mod rbac;
mod redis_scaler;
mod redis_streams_scaler;
mod redis_tls;
mod redis_topologies;
mod scaled_jobs;
mod scalers_through_the_hpa;
mod secrets;
mod sql_scalers;
mod streams_through_the_hpa;

/// Every file in this directory is declared above: with `autotests = false` a file left out is
/// neither built nor run, silently.
#[test]
fn every_file_here_is_a_module_of_the_suite() {
    integration_tests::assert_every_file_is_a_module("suite");
}
