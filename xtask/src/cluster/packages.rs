//! Debian packages the dev cluster runs: Redis, RabbitMQ (management plugin included),
//! PostgreSQL, MariaDB, Prometheus, openssl, protoc, and a JDK with Maven (for Kafka and ElasticMQ). Installed with apt when a program is
//! missing; their system services are not started.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// (program that must exist, Debian package providing it).
const REQUIRED: [(&str, &str); 12] = [
    ("/usr/bin/redis-server", "redis-server"),
    ("/usr/bin/redis-cli", "redis-tools"),
    ("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"),
    ("/usr/bin/epmd", "erlang-base"),
    ("/usr/bin/openssl", "openssl"),
    ("/usr/bin/protoc", "protobuf-compiler"),
    ("/usr/lib/postgresql/15/bin/postgres", "postgresql-15"),
    ("/usr/bin/pg_isready", "postgresql-client-15"),
    ("/usr/sbin/mariadbd", "mariadb-server"),
    ("/usr/bin/prometheus", "prometheus"),
    ("/usr/bin/java", "openjdk-17-jre-headless"),
    ("/usr/bin/mvn", "maven"),
];

/// Debian's umoci: `cargo xtask image` reads its image back with it, and the image's test
/// unpacks it with it.
pub const UMOCI: &str = "/usr/bin/umoci";

/// Debian's rsvg-convert (librsvg2-bin): `cargo xtask demo` renders its chart to PNG with it
/// when it is there, and the chart's test renders one with it.
pub const RSVG_CONVERT: &str = "/usr/bin/rsvg-convert";

/// Installs the packages whose programs are missing.
pub fn ensure() -> Result<()> {
    if !ensure_programs(&REQUIRED)? {
        println!(
            "  redis-server, rabbitmq-server, postgresql, mariadb-server, prometheus, openssl, protoc, java, maven: installed"
        );
    }
    Ok(())
}

/// Installs, with apt, the Debian package of each (program, package) whose program is missing;
/// whether it installed any.
pub fn ensure_programs(programs: &[(&str, &str)]) -> Result<bool> {
    let missing: Vec<&str> = programs
        .iter()
        .filter(|(program, _)| !Path::new(program).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    println!("  installing {} with apt-get", missing.join(" "));
    let sudo = !nix::unistd::geteuid().is_root();
    apt(sudo, &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing.iter());
    apt(sudo, &args)?;
    for (program, package) in programs {
        if !Path::new(program).exists() {
            bail!("{package} was installed but {program} is still missing");
        }
    }
    Ok(true)
}

fn apt(sudo: bool, args: &[&str]) -> Result<()> {
    let mut cmd = if sudo {
        // -n: fail at once instead of waiting for a password nobody will type (CI).
        let mut c = Command::new("sudo");
        c.args(["-n", "apt-get"]);
        c
    } else {
        Command::new("apt-get")
    };
    // Debian's maintainer scripts would start the system services; the dev cluster runs its
    // own instances on other ports, so a policy-rc.d refusal from the container is harmless.
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    let status = cmd
        .status()
        .with_context(|| format!("running apt-get {}", args.join(" ")))?;
    if !status.success() {
        bail!("apt-get {} failed ({status})", args.join(" "));
    }
    Ok(())
}
