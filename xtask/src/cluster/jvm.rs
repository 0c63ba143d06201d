//! Servers that run on the JVM (Apache Kafka, ElasticMQ), fetched from Maven Central: each
//! server's jars and their runtime dependencies, resolved by Maven into the cache outside the
//! repository once per pinned version, and run with the machine's `java` (17 or later).
//!
//! No distribution tarball is downloaded: a throwaway POM lists the server's artifacts and
//! `mvn dependency:copy-dependencies` copies them with everything they need into
//! `<cache>/jvm/<server>-<version>/lib`; Maven's own repository lives beside it, so a second
//! fetch of a new version reuses what the first downloaded.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::binaries::cache_root;

/// The pinned Apache Kafka release (KRaft only since 4.0).
pub const KAFKA_VERSION: &str = "4.4.0";
/// The pinned ElasticMQ release, the SQS-compatible server (its JSON protocol included).
pub const ELASTICMQ_VERSION: &str = "1.7.1";
/// log4j 2, the logging backend the Kafka broker is given (its jars only carry the API).
const LOG4J_VERSION: &str = "2.26.1";
/// SLF4J 2's API, which log4j's bridge binds to. Named here because Maven's nearest-wins
/// resolution otherwise picks a 1.7 API from Kafka's tree, which finds no binding and makes the
/// broker log nothing at all (a failed start included).
const SLF4J_VERSION: &str = "2.0.17";

/// One JVM server: its Maven artifacts (`group:artifact:version`).
pub struct Bundle {
    /// Its name, also the cache directory's prefix.
    pub name: &'static str,
    /// Its version, for the cache directory and messages.
    pub version: &'static str,
    /// What the POM depends on.
    artifacts: &'static [(&'static str, &'static str, &'static str)],
}

/// The Kafka broker (core), the admin tools (topics, consumer groups, storage formatting) and a
/// log4j 2 backend.
pub const KAFKA: Bundle = Bundle {
    name: "kafka",
    version: KAFKA_VERSION,
    artifacts: &[
        ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
        ("org.apache.kafka", "kafka-tools", KAFKA_VERSION),
        (
            "org.apache.logging.log4j",
            "log4j-slf4j2-impl",
            LOG4J_VERSION,
        ),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        ("org.slf4j", "slf4j-api", SLF4J_VERSION),
    ],
};

/// ElasticMQ's standalone server.
pub const ELASTICMQ: Bundle = Bundle {
    name: "elasticmq",
    version: ELASTICMQ_VERSION,
    artifacts: &[("org.elasticmq", "elasticmq-server_2.13", ELASTICMQ_VERSION)],
};

/// Every bundle `up` fetches.
pub const BUNDLES: [&Bundle; 2] = [&KAFKA, &ELASTICMQ];

impl Bundle {
    /// Its cache directory: `<cache>/jvm/<name>-<version>`.
    fn dir(&self) -> PathBuf {
        cache_root()
            .join("jvm")
            .join(format!("{}-{}", self.name, self.version))
    }

    /// The folder of its jars (complete once [`ensure`] has returned).
    pub fn lib(&self) -> PathBuf {
        self.dir().join("lib")
    }

    /// The classpath of every jar in [`Bundle::lib`].
    pub fn classpath(&self) -> String {
        format!("{}/*", self.lib().display())
    }

    /// The list written into the stamp: a changed list fetches again.
    fn manifest(&self) -> String {
        self.artifacts
            .iter()
            .map(|(g, a, v)| format!("{g}:{a}:{v}\n"))
            .collect()
    }

    fn pom(&self) -> String {
        let dependencies: String = self
            .artifacts
            .iter()
            .map(|(g, a, v)| {
                format!(
                    "    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>\n"
                )
            })
            .collect();
        format!(
            "<project xmlns=\"http://maven.apache.org/POM/4.0.0\">\n\
             \x20 <modelVersion>4.0.0</modelVersion>\n\
             \x20 <groupId>ebb.local</groupId>\n\
             \x20 <artifactId>{name}-runtime</artifactId>\n\
             \x20 <version>1</version>\n\
             \x20 <packaging>pom</packaging>\n\
             \x20 <dependencies>\n{dependencies}  </dependencies>\n\
             </project>\n",
            name = self.name
        )
    }
}

/// The `java` to run servers with: `$JAVA_HOME/bin/java`, else the one on PATH.
pub fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|java| java.exists())
        .unwrap_or_else(|| PathBuf::from("java"))
}

/// Fetches every bundle that is not cached yet; checks that `java` is 17 or later.
pub fn ensure() -> Result<()> {
    check_java()?;
    let root = cache_root();
    fs::create_dir_all(&root)?;
    // One fetch at a time per cache, as for the Kubernetes build.
    let _lock = super::binaries::lock_cache(&root, "jvm.lock")?;
    for bundle in BUNDLES {
        let stamp = bundle.dir().join(".complete");
        if fs::read_to_string(&stamp).ok().as_deref() == Some(bundle.manifest().as_str()) {
            println!(
                "  {} {}: cached in {}",
                bundle.name,
                bundle.version,
                bundle.lib().display()
            );
            continue;
        }
        let started = Instant::now();
        println!(
            "  fetching {} {} and its dependencies from Maven Central into {}",
            bundle.name,
            bundle.version,
            bundle.lib().display()
        );
        fetch(bundle, &root)?;
        fs::write(&stamp, bundle.manifest())?;
        let jars = fs::read_dir(bundle.lib())?.count();
        println!(
            "    {}: {jars} jars in {}s",
            bundle.name,
            started.elapsed().as_secs()
        );
    }
    Ok(())
}

fn fetch(bundle: &Bundle, root: &Path) -> Result<()> {
    let dir = bundle.dir();
    fs::create_dir_all(&dir)?;
    let lib = bundle.lib();
    if lib.exists() {
        fs::remove_dir_all(&lib)?;
    }
    fs::write(dir.join("pom.xml"), bundle.pom())?;
    let out = Command::new("mvn")
        .current_dir(&dir)
        .args(["-B", "-q", "-f", "pom.xml"])
        .arg(format!(
            "-Dmaven.repo.local={}",
            root.join("maven/repository").display()
        ))
        .arg("dependency:copy-dependencies")
        .arg("-DincludeScope=runtime")
        .arg(format!("-DoutputDirectory={}", lib.display()))
        .output()
        .context("running mvn: is Maven installed (Debian package maven)?")?;
    if !out.status.success() {
        bail!(
            "fetching {} {} with Maven failed ({}):\n{}{}",
            bundle.name,
            bundle.version,
            out.status,
            super::tail_text(&String::from_utf8_lossy(&out.stdout), 30),
            super::tail_text(&String::from_utf8_lossy(&out.stderr), 30),
        );
    }
    Ok(())
}

/// Fails unless `java -version` reports 17 or later.
fn check_java() -> Result<()> {
    let out = Command::new(java()).arg("-version").output().context(
        "running java -version: is a JDK installed (Debian package openjdk-17-jre-headless)?",
    )?;
    // `java -version` prints to stderr: `openjdk version "17.0.15" 2025-04-15`.
    let text = String::from_utf8_lossy(&out.stderr);
    let major =
        java_major(&text).with_context(|| format!("cannot read the Java version from {text:?}"))?;
    if major < 17 {
        bail!(
            "Kafka 4 and ElasticMQ need Java 17 or later; {java:?} is {major}",
            java = java()
        );
    }
    Ok(())
}

/// The major version in `java -version`'s output (`"17.0.15"` → 17, `"1.8.0_392"` → 8).
fn java_major(text: &str) -> Option<u32> {
    let quoted = text.split('"').nth(1)?;
    let mut parts = quoted.split(['.', '_', '-', '+']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_versions_are_read_old_and_new() {
        assert_eq!(
            java_major("openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime"),
            Some(17)
        );
        assert_eq!(java_major("java version \"1.8.0_392\""), Some(8));
        assert_eq!(java_major("openjdk version \"25\" 2025-09-16"), Some(25));
        assert_eq!(java_major("no version here"), None);
    }

    #[test]
    fn the_pom_lists_every_artifact_and_the_stamp_changes_with_them() {
        let pom = KAFKA.pom();
        for (g, a, v) in KAFKA.artifacts {
            assert!(pom.contains(&format!(
                "<groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version>"
            )));
        }
        assert_ne!(KAFKA.manifest(), ELASTICMQ.manifest());
        assert!(
            KAFKA
                .lib()
                .ends_with(format!("jvm/kafka-{KAFKA_VERSION}/lib"))
        );
    }
}
