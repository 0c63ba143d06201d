//! Every built-in scaler's trigger parsing: a trigger of a registered type with metadata,
//! authentication parameters and environment drawn from the keys the scalers read and from
//! arbitrary text. Building must answer a scaler or a ConfigError, never panic; no connection is
//! opened by a build.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use ebb_scalers::{Registry, Trigger};

/// Keys the built-in scalers read (metadata, authentication and `*FromEnv`).
const KEYS: &[&str] = &[
    "account",
    "accountID",
    "activationLagCount",
    "activationLagThreshold",
    "activationListLength",
    "activationQueryValue",
    "activationQueueLength",
    "activationTargetQueryValue",
    "activationTargetValue",
    "activationThreshold",
    "activationValue",
    "address",
    "addresses",
    "addressesFromEnv",
    "addressFromEnv",
    "apiKey",
    "authMode",
    "authModes",
    "awsAccessKeyID",
    "awsAccessKeyId",
    "awsAccessKeyIDFromEnv",
    "awsEndpoint",
    "awsRegion",
    "awsRoleArn",
    "awsSecretAccessKey",
    "awsSecretAccessKeyFromEnv",
    "awsSessionToken",
    "bearerToken",
    "ca",
    "caCert",
    "cert",
    "connection",
    "connectionFromEnv",
    "connectionString",
    "connectionStringFromEnv",
    "consumer",
    "consumerGroup",
    "containerName",
    "credentialsFromEnv",
    "customAuthHeader",
    "customAuthValue",
    "customHeaders",
    "databaseIndex",
    "dbName",
    "desiredReplicas",
    "enableTLS",
    "end",
    "excludeUnacknowledged",
    "format",
    "GoogleApplicationCredentials",
    "host",
    "hostFromEnv",
    "hosts",
    "identityOwner",
    "ignoreNullValues",
    "key",
    "keyParamName",
    "keyPassword",
    "lagCount",
    "lagThreshold",
    "listLength",
    "listName",
    "method",
    "mode",
    "namespace",
    "natsServerMonitoringEndpoint",
    "operation",
    "pageSize",
    "password",
    "passwordFromEnv",
    "pendingEntriesCount",
    "podSelector",
    "port",
    "portFromEnv",
    "ports",
    "protocol",
    "query",
    "queryParameters",
    "queryValue",
    "queueLength",
    "queueName",
    "queueURL",
    "queueURLFromEnv",
    "scaleOnDelayed",
    "scaleOnInFlight",
    "scalerAddress",
    "sentinelMaster",
    "sentinelPassword",
    "sentinelUsername",
    "serverAddress",
    "sslmode",
    "start",
    "stream",
    "streamLength",
    "targetQueryValue",
    "targetValue",
    "threshold",
    "timeout",
    "timezone",
    "tls",
    "tlsClientCert",
    "tlsClientKey",
    "token",
    "tokenFromEnv",
    "unsafeSsl",
    "url",
    "useHttps",
    "useRegex",
    "userName",
    "username",
    "usernameFromEnv",
    "value",
    "valueLocation",
    "vhostName",
];

/// Values worth trying for any key, besides arbitrary text.
const VALUES: &[&str] = &[
    "",
    " ",
    "0",
    "-1",
    "1",
    "1.5",
    "1e308",
    "-1e308",
    "1e-320",
    "NaN",
    "inf",
    "-inf",
    "2147483647",
    "2147483648",
    "-2147483649",
    "9223372036854775808",
    "18446744073709551616",
    "true",
    "false",
    "TRUE",
    "localhost",
    "localhost:6379",
    "127.0.0.1:0",
    "[::1]:6379",
    "host:99999",
    ":",
    "a:b:c",
    "app in (a,b),!c",
    "x notin (",
    "redis://user:pass@localhost:6379/0",
    "rediss://localhost:6379",
    "amqp://guest:guest@localhost:5672/%2f",
    "amqps://localhost:5671/vhost",
    "http://guest:guest@localhost:15672/",
    "https://localhost:1/metrics?x=1",
    "http://[::1",
    "unix:///tmp/x",
    "* * * * *",
    "0 */5 * * * *",
    "@hourly",
    "61 25 * * *",
    "Europe/Berlin",
    "Mars/Olympus",
    "json",
    "yaml",
    "xml",
    "prometheus",
    "QueueLength",
    "MessageRate",
    "AverageValue",
    "Value",
    "Utilization",
    "GET",
    "POST",
    "basic",
    "bearer",
    "apiKey",
    "tls,basic",
    "a.b.0.#",
    "a\\.b",
    "*",
    "#(x)",
    "metric{label=\"v\"}",
    "metric{label=\"v\"",
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    "queue.*",
    "(",
    "a,b,c",
    "1,2,3",
    "postgresql://user:pass@localhost:5432/db?sslmode=require",
    "host=localhost user=u sslmode=verify-full",
    "verify-ca",
    "disable",
    "u:p@tcp(localhost:3306)/db?tls=true",
    "sum(rate(x[1m]))",
];

#[derive(Debug, Arbitrary)]
enum Text {
    Known(u8),
    Other(String),
}

impl Text {
    fn resolve(&self, table: &[&str]) -> String {
        match self {
            Text::Known(i) => table[usize::from(*i) % table.len()].to_string(),
            Text::Other(s) => s.clone(),
        }
    }
}

/// What one run reads from the fuzzer's bytes.
#[derive(Debug, Arbitrary)]
struct Input {
    trigger_type: Text,
    index: u16,
    name: Option<String>,
    metric_type: Option<Text>,
    metadata: Vec<(Text, Text)>,
    auth_params: Vec<(Text, Text)>,
    env: Vec<(Text, Text)>,
}

fn registry() -> &'static (Registry, Vec<String>) {
    static REGISTRY: OnceLock<(Registry, Vec<String>)> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let registry = Registry::with_builtins();
        let types = registry.types().map(str::to_string).collect();
        (registry, types)
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}

fn map(pairs: &[(Text, Text)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.resolve(KEYS), v.resolve(VALUES)))
        .collect()
}

/// One input: bytes the fuzzer chose, read as structured [`Input`].
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let (registry, types) = registry();
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    let trigger = Trigger {
        index: usize::from(input.index),
        trigger_type: input.trigger_type.resolve(&types),
        name: input.name,
        metadata: map(&input.metadata),
        metric_type: input.metric_type.map(|t| t.resolve(VALUES)),
        auth_params: map(&input.auth_params),
        resolved_env: map(&input.env),
        scaled_object_name: "fuzz".into(),
        scaled_object_namespace: "default".into(),
    };
    // Some constructors prepare lazy clients that need a runtime to exist; none may connect.
    let _entered = runtime().enter();
    if let Ok(scaler) = registry.build(&trigger) {
        // A built scaler names its metrics without I/O, with targets the HPA can be given.
        for spec in scaler.metric_specs() {
            if let ebb_scalers::MetricSpec::External { name, target, .. } = spec {
                assert!(!name.is_empty(), "an External metric without a name");
                assert!(
                    target.is_finite() && target >= 0.0,
                    "metric {name}: target {target}"
                );
            }
        }
    }
}
