//! The `postgresql` and `mysql` scalers against the dev cluster's real PostgreSQL and MariaDB:
//! a query's value and activity, every way of giving the connection, TLS (MariaDB: a user
//! admitted over TLS only, and the session's own cipher), and what must be an
//! error (a wrong password, a NULL, no row, no server), never a 0; 200 triggers share a handful
//! of connections, as the server itself counts them. Tables are set up with the servers' own
//! command-line clients.

use std::time::Duration;

use ebb_scalers::{MetricsAndActivity, Registry, Scaler, Trigger};
use integration_tests::{dead_address, mariadb, psql, setup, unique_name};

fn trigger(
    trigger_type: &str,
    index: usize,
    meta: &[(&str, &str)],
    auth: &[(&str, &str)],
) -> Trigger {
    let map = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Trigger {
        index,
        trigger_type: trigger_type.into(),
        metadata: map(meta),
        auth_params: map(auth),
        ..Default::default()
    }
}

async fn poll(scaler: &dyn Scaler) -> Result<MetricsAndActivity, String> {
    let name = scaler.metric_specs()[0]
        .external_name()
        .expect("an external metric")
        .to_string();
    scaler
        .metrics_and_activity(&name)
        .await
        .map_err(|e| e.to_string())
}

async fn value(scaler: &dyn Scaler) -> (f64, bool) {
    let got = poll(scaler).await.unwrap_or_else(|e| panic!("{e}"));
    (got.values[0].value, got.active)
}

#[tokio::test]
async fn postgresql_reads_a_query_over_every_connection_form() {
    let env = setup("postgresql-scaler").await;
    let url = env.cluster.postgres_url.clone();
    let table = unique_name("jobs").replace('-', "_");
    psql(
        &url,
        &format!("CREATE TABLE {table} (id serial, state text)"),
    );
    let query = format!("SELECT COUNT(*) FROM {table} WHERE state = 'waiting'");
    let registry = Registry::with_builtins();
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("a port")
        .to_string();

    let meta = |extra: &[(&'static str, &str)]| {
        let mut m = vec![
            ("query", query.as_str()),
            ("targetQueryValue", "5"),
            ("activationTargetQueryValue", "2"),
        ];
        m.extend_from_slice(extra);
        m.into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    let build = |meta: &[(String, String)], auth: &[(&str, &str)]| {
        let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        registry
            .build(&trigger("postgresql", 0, &meta, auth))
            .unwrap_or_else(|e| panic!("{e}"))
    };

    // A libpq URL in the auth parameter `connection`, and the fields one by one, TLS required.
    let by_url = build(&meta(&[]), &[("connection", &url)]);
    let by_fields = build(
        &meta(&[
            ("host", "127.0.0.1"),
            ("port", &port),
            ("userName", "postgres"),
            ("dbName", "postgres"),
            ("sslmode", "require"),
        ]),
        &[("password", "ebb-dev")],
    );
    for scaler in [&by_url, &by_fields] {
        assert_eq!(value(scaler.as_ref()).await, (0.0, false));
    }
    psql(
        &url,
        &format!("INSERT INTO {table} (state) SELECT 'waiting' FROM generate_series(1, 3)"),
    );
    for scaler in [&by_url, &by_fields] {
        assert_eq!(value(scaler.as_ref()).await, (3.0, true));
    }

    // What must be an error: a NULL, no row, a wrong password (never quoted), no server.
    for bad_query in [
        format!("SELECT NULL::int FROM {table} LIMIT 1"),
        format!("SELECT 1 FROM {table} WHERE false"),
    ] {
        let scaler = build(
            &[
                ("query".to_string(), bad_query.clone()),
                ("targetQueryValue".to_string(), "5".to_string()),
            ],
            &[("connection", &url)],
        );
        let err = poll(scaler.as_ref())
            .await
            .expect_err("a NULL or no row is an error");
        assert!(!err.is_empty(), "{bad_query}");
    }
    let wrong = url.replace("ebb-dev", "not-the-password");
    let err = poll(build(&meta(&[]), &[("connection", &wrong)]).as_ref())
        .await
        .expect_err("a wrong password");
    assert!(err.contains("password"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    let nobody = format!("postgresql://postgres:ebb-dev@{}/postgres", dead_address());
    let started = tokio::time::Instant::now();
    poll(build(&meta(&[]), &[("connection", &nobody)]).as_ref())
        .await
        .expect_err("nobody listens");
    assert!(started.elapsed() < Duration::from_secs(10));

    // 200 triggers with one user share a handful of connections, as PostgreSQL counts them.
    let user = unique_name("share").replace('-', "_");
    psql(&url, &format!("CREATE USER {user} PASSWORD 'ebb-dev'"));
    psql(&url, &format!("GRANT SELECT ON {table} TO {user}"));
    let shared_url = url.replace("postgres:ebb-dev", &format!("{user}:ebb-dev"));
    let scalers: Vec<_> = (0..200)
        .map(|_| build(&meta(&[]), &[("connection", &shared_url)]))
        .collect();
    for scaler in &scalers {
        assert_eq!(value(scaler.as_ref()).await.0, 3.0);
    }
    let connections: u32 = psql(
        &url,
        &format!("SELECT COUNT(*) FROM pg_stat_activity WHERE usename = '{user}'"),
    )
    .parse()
    .expect("a count");
    assert!(
        (1..=4).contains(&connections),
        "{connections} connections for 200 triggers"
    );
    drop(scalers);
    psql(&url, &format!("DROP TABLE {table}"));
}

#[tokio::test]
async fn mysql_reads_a_query_over_every_connection_form() {
    let env = setup("mysql-scaler").await;
    let address = env.cluster.mysql_address.clone();
    let user = env.cluster.mysql_user.clone();
    let (host, port) = address.split_once(':').expect("host:port");
    let table = unique_name("jobs").replace('-', "_");
    mariadb(
        &address,
        &user,
        &format!("CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, state TEXT)"),
    );
    let query = format!("SELECT COUNT(*) FROM {table} WHERE state = 'waiting'");
    let registry = Registry::with_builtins();
    let dsn = format!("{}:{}@tcp({address})/{}", user.0, user.1, user.2);

    let meta = vec![
        ("query", query.as_str()),
        ("queryValue", "5"),
        ("activationQueryValue", "2"),
    ];
    let build = |meta: &[(&str, &str)], auth: &[(&str, &str)]| {
        registry
            .build(&trigger("mysql", 0, meta, auth))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let by_dsn = build(&meta, &[("connectionString", &dsn)]);
    let mut field_meta = meta.clone();
    field_meta.extend([
        ("host", host),
        ("port", port),
        ("username", user.0.as_str()),
        ("dbName", user.2.as_str()),
    ]);
    let by_fields = build(&field_meta, &[("password", &user.1)]);
    for scaler in [&by_dsn, &by_fields] {
        assert_eq!(value(scaler.as_ref()).await, (0.0, false));
    }
    mariadb(
        &address,
        &user,
        &format!("INSERT INTO {table} (state) VALUES ('waiting'), ('waiting'), ('waiting')"),
    );
    for scaler in [&by_dsn, &by_fields] {
        assert_eq!(value(scaler.as_ref()).await, (3.0, true));
    }

    for bad_query in [
        format!("SELECT NULL FROM {table} LIMIT 1"),
        format!("SELECT 1 FROM {table} WHERE false"),
    ] {
        let scaler = build(
            &[("query", bad_query.as_str()), ("queryValue", "5")],
            &[("connectionString", &dsn)],
        );
        poll(scaler.as_ref())
            .await
            .expect_err("a NULL or no row is an error");
    }
    let wrong = dsn.replace(&format!(":{}@", user.1), ":not-the-password@");
    let err = poll(build(&meta, &[("connectionString", &wrong)]).as_ref())
        .await
        .expect_err("a wrong password");
    assert!(
        err.contains("Access denied") || err.contains("denied"),
        "{err}"
    );
    assert!(!err.contains("not-the-password"), "{err}");
    let nobody = format!("{}:{}@tcp({})/{}", user.0, user.1, dead_address(), user.2);
    let started = tokio::time::Instant::now();
    poll(build(&meta, &[("connectionString", &nobody)]).as_ref())
        .await
        .expect_err("nobody listens");
    assert!(started.elapsed() < Duration::from_secs(10));

    // TLS: a user the server admits over TLS only, and a query whose answer says whether the
    // session is encrypted (1) or not (0).
    let tls_user = unique_name("tls").replace('-', "_");
    mariadb(
        &address,
        &user,
        &format!(
            "CREATE USER '{tls_user}'@'%' IDENTIFIED BY 'ebb-dev' REQUIRE SSL; GRANT SELECT ON {}.* TO '{tls_user}'@'%'",
            user.2
        ),
    );
    let encrypted = "SELECT COUNT(*) FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher' AND VARIABLE_VALUE <> ''";
    let tls_meta = |extra: &[(&'static str, &'static str)]| {
        let mut m = vec![("query", encrypted), ("queryValue", "5")];
        m.extend_from_slice(extra);
        m
    };
    let ca = std::fs::read_to_string(&env.cluster.tls_ca).expect("the dev CA");
    let tls_dsn = format!("{tls_user}:ebb-dev@tcp({address})/{}", user.2);
    // `tls: enable` with the dev CA, verified; the DSN's own `tls=skip-verify`.
    let verified = build(
        &tls_meta(&[("tls", "enable")]),
        &[("connectionString", &tls_dsn), ("ca", &ca)],
    );
    let unverified = build(
        &tls_meta(&[]),
        &[("connectionString", &format!("{tls_dsn}?tls=skip-verify"))],
    );
    for scaler in [&verified, &unverified] {
        assert_eq!(value(scaler.as_ref()).await.0, 1.0, "an encrypted session");
    }
    // Without TLS the server refuses the user; with TLS but without the CA the certificate
    // is not trusted.
    let plain = poll(build(&tls_meta(&[]), &[("connectionString", &tls_dsn)]).as_ref())
        .await
        .expect_err("the user requires TLS");
    assert!(plain.contains("denied"), "{plain}");
    let untrusted = poll(
        build(
            &tls_meta(&[("tls", "enable")]),
            &[("connectionString", &tls_dsn)],
        )
        .as_ref(),
    )
    .await
    .expect_err("an unknown CA");
    assert!(!untrusted.is_empty());
    mariadb(&address, &user, &format!("DROP USER '{tls_user}'@'%'"));

    // 200 triggers with one user share a handful of connections, as MariaDB counts them.
    let shared = unique_name("share").replace('-', "_");
    mariadb(
        &address,
        &user,
        &format!(
            "CREATE USER '{shared}'@'%' IDENTIFIED BY 'ebb-dev'; GRANT SELECT ON {}.* TO '{shared}'@'%'",
            user.2
        ),
    );
    let shared_dsn = format!("{shared}:ebb-dev@tcp({address})/{}", user.2);
    let scalers: Vec<_> = (0..200)
        .map(|_| build(&meta, &[("connectionString", &shared_dsn)]))
        .collect();
    for scaler in &scalers {
        assert_eq!(value(scaler.as_ref()).await.0, 3.0);
    }
    let connections: u32 = mariadb(
        &address,
        &user,
        &format!("SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{shared}'"),
    )
    .parse()
    .expect("a count");
    assert!(
        (1..=4).contains(&connections),
        "{connections} connections for 200 triggers"
    );
    drop(scalers);
    mariadb(
        &address,
        &user,
        &format!("DROP TABLE {table}; DROP USER '{shared}'@'%'"),
    );
}
