//! The registry builds scalers by trigger type, and no input makes a constructor panic.

use ebb_scalers::{MetricSpec, Registry, ScalerError, Trigger};
use proptest::prelude::*;

fn trigger(trigger_type: &str, meta: &[(&str, &str)], metric_type: Option<&str>) -> Trigger {
    Trigger {
        index: 3,
        trigger_type: trigger_type.into(),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        metric_type: metric_type.map(String::from),
        ..Default::default()
    }
}

#[test]
fn builds_registered_types_and_names_unknown_ones() {
    let registry = Registry::with_builtins();
    let types: Vec<&str> = registry.types().collect();
    assert!(
        types.contains(&"cpu") && types.contains(&"memory"),
        "{types:?}"
    );

    let memory = registry
        .build(&trigger(
            "memory",
            &[("value", "512Mi")],
            Some("AverageValue"),
        ))
        .expect("memory trigger builds");
    assert!(
        matches!(&memory.metric_specs()[0], MetricSpec::Resource { resource, .. } if resource == "memory")
    );

    let err = registry
        .build(&trigger("kafka-ish", &[], None))
        .err()
        .expect("unknown type");
    assert!(matches!(err, ScalerError::UnknownType { index: 3, .. }));
    assert_eq!(
        err.to_string(),
        "trigger 3: unknown trigger type \"kafka-ish\""
    );
    assert_eq!(err.label(), "unknown_type");
}

#[test]
fn a_custom_build_can_register_its_own_scaler() {
    let mut registry = Registry::new();
    registry.register("cpu-twice", |t| {
        let mut t = t.clone();
        t.trigger_type = "cpu".into();
        Registry::with_builtins().build(&t)
    });
    assert!(
        registry
            .build(&trigger(
                "cpu-twice",
                &[("value", "50")],
                Some("Utilization")
            ))
            .is_ok()
    );
    assert!(
        registry.build(&trigger("cpu", &[], None)).is_err(),
        "only what was registered"
    );
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ._:/-]{0,12}",
        any::<String>(),
        Just(String::new()),
        Just("NaN".to_string()),
        Just("-1".to_string()),
        Just("1e999".to_string()),
        Just("Europe/Berlin".to_string()),
        Just("0 6 * * 1-5".to_string()),
        Just("*/15 22-23 L * SUN#2".to_string()),
        Just("127.0.0.1:1".to_string()),
    ]
}

/// Keys every scaler reads, mixed with arbitrary ones, so the parsers are actually exercised.
fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "value",
            "type",
            "containerName",
            "address",
            "addressFromEnv",
            "listName",
            "listLength",
            "activationListLength",
            "host",
            "hostFromEnv",
            "queueName",
            "mode",
            "protocol",
            "url",
            "valueLocation",
            "format",
            "authMode",
            "timezone",
            "start",
            "end",
            "desiredReplicas",
            "scalerAddress",
            "enableTLS",
            "databaseIndex",
            "addresses",
            "hosts",
            "ports",
            "sentinelMaster",
            "stream",
            "consumerGroup",
            "pendingEntriesCount",
            "streamLength",
            "lagCount",
            "activationLagCount",
            "caCert",
            "tlsClientCert",
            "unsafeSsl",
            "vhostName",
            "useRegex",
            "operation",
            "pageSize",
            "excludeUnacknowledged",
            "activationValue",
            "targetValue",
            "activationTargetValue",
            "timeout",
            "method",
            "tls",
            "ca",
            "cert",
            "key",
            "serverAddress",
            "query",
            "threshold",
            "activationThreshold",
            "namespace",
            "customHeaders",
            "queryParameters",
            "ignoreNullValues",
            "authModes",
            "bearerToken",
            "username",
            "password",
            "customAuthHeader",
            "customAuthValue",
            "awsRoleArn",
            "identityOwner",
            "GoogleApplicationCredentials",
            "targetQueryValue",
            "activationTargetQueryValue",
            "connection",
            "connectionFromEnv",
            "userName",
            "dbName",
            "sslmode",
            "passwordFromEnv",
            "port",
            "keyPassword",
            "queryValue",
            "activationQueryValue",
            "connectionString",
            "connectionStringFromEnv",
            "portFromEnv",
            "usernameFromEnv",
            "podSelector",
        ])
        .prop_map(String::from),
        any_text(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_metadata_makes_any_constructor_panic(
        type_index in 0usize..64,
        metadata in prop::collection::btree_map(any_key(), any_text(), 0..8),
        auth in prop::collection::btree_map(any_key(), any_text(), 0..3),
        env in prop::collection::btree_map(any_text(), any_text(), 0..3),
        metric_type in prop::option::of(prop_oneof![
            Just("AverageValue".to_string()), Just("Value".to_string()),
            Just("Utilization".to_string()), any_text(),
        ]),
    ) {
        let registry = Registry::with_builtins();
        let types: Vec<String> = registry.types().map(String::from).collect();
        let trigger_type = types[type_index % types.len()].clone();
        let t = Trigger {
            index: 0,
            trigger_type,
            name: None,
            metadata,
            metric_type,
            auth_params: auth,
            resolved_env: env,
            ..Default::default()
        };
        // Either a scaler or an error naming the trigger; never a panic.
        if let Err(e) = registry.build(&t) {
            prop_assert!(e.to_string().starts_with("trigger 0"), "{e}");
        }
    }
}
