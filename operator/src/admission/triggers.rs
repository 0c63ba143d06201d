//! Each trigger's metadata parsed offline by its own scaler's parser, so a typo
//! (`listLength: "ten"`) is refused at `kubectl apply` with the message the reconcile would
//! give, not found after the object is stored. This goes beyond KEDA, which stores the typo.
//!
//! Building a scaler only parses: its constructor takes a lease on a shared client, which
//! connects on first use, so nothing is dialled here. Authentication and `*FromEnv` values are
//! not resolved at admission (that needs Secrets and the workload's pod template): an error
//! that such a value could cure is left to the reconcile. An error about a value written in
//! the trigger's own metadata is refused whatever else the trigger has. A parser stops at its
//! first error, so a metadata typo behind a missing value that authentication may supply is
//! found at reconcile, not here.

use ebb_crds::scaled_object::ScaleTrigger;
use ebb_scalers::{Registry, ScalerError, Trigger};

/// Why a trigger was refused: the same text the reconcile reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRefused {
    /// The trigger's position in `spec.triggers`.
    pub index: usize,
    /// The scaler's message.
    pub message: String,
}

/// Parses every trigger of `triggers` with `registry`; the first refusal.
pub fn check(registry: &Registry, triggers: &[ScaleTrigger]) -> Result<(), TriggerRefused> {
    for (index, t) in triggers.iter().enumerate() {
        let trigger = Trigger {
            index,
            trigger_type: t.type_.clone(),
            name: t.name.clone(),
            metadata: t.metadata.clone(),
            metric_type: t.metric_type.clone(),
            ..Default::default()
        };
        let Err(e) = registry.build(&trigger) else {
            continue;
        };
        if curable(t, &e) {
            continue;
        }
        return Err(TriggerRefused {
            index,
            message: e.to_string(),
        });
    }
    Ok(())
}

/// Whether a value admission cannot see may cure `e`: the trigger has an authenticationRef or
/// `*FromEnv` keys, and the key at fault is not a value written in its metadata.
fn curable(t: &ScaleTrigger, e: &ScalerError) -> bool {
    let ScalerError::Config(config) = e else {
        return false;
    };
    let key = config.key.as_str();
    let from_env = |k: &str| k.ends_with("FromEnv");
    if from_env(key) || t.metadata.contains_key(&format!("{key}FromEnv")) {
        return true;
    }
    let unseen_sources = t.authentication_ref.is_some() || t.metadata.keys().any(|k| from_env(k));
    // A blank value reads as absent, as the scalers read it.
    let written = t.metadata.get(key).is_some_and(|v| !v.trim().is_empty());
    unseen_sources && !written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triggers(yaml: &str) -> Vec<ScaleTrigger> {
        serde_norway::from_str(yaml).expect("triggers")
    }

    fn check_yaml(yaml: &str) -> Result<(), String> {
        check(&Registry::with_builtins(), &triggers(yaml)).map_err(|r| r.message)
    }

    /// Plain `#[test]`s have no Tokio runtime: a constructor that spawned or dialled would
    /// panic here, so these also show that checking connects to nothing.
    #[test]
    fn a_bad_metadata_value_is_refused_with_the_scaler_s_message() {
        assert_eq!(
            check_yaml(
                "[{type: redis, metadata: {address: 'redis:6379', listName: q, listLength: ten}}]"
            ),
            Err("trigger 0 (redis): listLength: expected a number, got \"ten\"".into())
        );
        assert_eq!(
            check_yaml("[{type: redis, metadata: {address: 'redis:6379', listName: q}}, {type: kafka, metadata: {bootstrapServers: 'k:9092', consumerGroup: g, topic: t, lagThreshold: '-1'}}]")
                .unwrap_err()
                .split(':')
                .next(),
            Some("trigger 1 (kafka)")
        );
        assert!(
            check_yaml("[{type: rabbitmq, metadata: {host: 'amqp://u:p@rabbit/', queueName: q, mode: QueueLength, value: '5'}}]").is_ok()
        );
        assert_eq!(
            check_yaml("[{type: nope, metadata: {}}]"),
            Err("trigger 0: unknown trigger type \"nope\"".into())
        );
    }

    #[test]
    fn what_authentication_or_the_environment_could_supply_is_left_to_the_reconcile() {
        // No address at all: nothing else could give one.
        assert!(check_yaml("[{type: redis, metadata: {listName: q}}]").is_err());
        // The address may come from the TriggerAuthentication, or from the container's env.
        assert_eq!(
            check_yaml(
                "[{type: redis, authenticationRef: {name: redis-auth}, metadata: {listName: q}}]"
            ),
            Ok(())
        );
        assert_eq!(
            check_yaml("[{type: redis, metadata: {addressFromEnv: REDIS_ADDRESS, listName: q}}]"),
            Ok(())
        );
        // A blank value (as templates often render one) is absent, and may come from there too.
        assert_eq!(
            check_yaml(
                "[{type: redis, authenticationRef: {name: redis-auth}, metadata: {address: '', listName: q}}]"
            ),
            Ok(())
        );
        // A bad value written in the metadata is refused even with an authenticationRef.
        assert!(
            check_yaml("[{type: redis, authenticationRef: {name: redis-auth}, metadata: {address: 'redis:6379', listName: q, listLength: ten}}]")
                .unwrap_err()
                .contains("listLength")
        );
    }
}
