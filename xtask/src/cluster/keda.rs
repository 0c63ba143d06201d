//! KEDA, the benchmark's peer: its operator and metrics adapter built from the Go module proxy
//! at a pinned release, as the dev cluster's Kubernetes is, into `<cache>/keda-v<version>`,
//! with KEDA's own CRDs copied from the module beside them.
//!
//! A throwaway module requires `github.com/kedacore/keda/v2` at the pinned version and copies
//! the `replace` and `exclude` directives of KEDA's own go.mod (a dependency's are ignored, so
//! without them the build would resolve other versions than KEDA's release was built with).
//! The certificates the two programs need (the operator's gRPC metrics service is mutual TLS;
//! the adapter serves the aggregator) are generated beside the binaries.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::binaries::{cache_root, go_command, lock_cache, run};

/// The pinned KEDA release (v2.21.1 asks for Go 1.27; this machine has 1.26).
pub const KEDA_VERSION: &str = "2.21.0";

const MODULE: &str = "github.com/kedacore/keda/v2";

/// A built KEDA.
#[derive(Clone, Debug)]
pub struct Keda {
    /// The operator (`cmd/operator`).
    pub operator: PathBuf,
    /// The metrics adapter (`cmd/adapter`).
    pub adapter: PathBuf,
    /// KEDA's CRDs (`config/crd/bases/*.yaml`), one directory for `kubectl apply -f`.
    pub crds: PathBuf,
}

fn version_dir() -> PathBuf {
    cache_root().join(format!("keda-v{KEDA_VERSION}"))
}

/// The cached KEDA, built first when missing (about 10 minutes on two cores, once).
pub fn ensure() -> Result<Keda> {
    let root = cache_root();
    let dir = version_dir();
    let keda = Keda {
        operator: dir.join("bin/keda-operator"),
        adapter: dir.join("bin/keda-adapter"),
        crds: dir.join("crds"),
    };
    // Named for what it holds: an earlier layout (without the eventing CRDs) is built again.
    let stamp = dir.join(".complete-with-all-crds");
    fs::create_dir_all(&dir)?;
    let _lock = lock_cache(&root, "build.lock")?;
    if stamp.exists() && keda.operator.exists() && keda.adapter.exists() {
        println!("  KEDA v{KEDA_VERSION}: cached in {}", dir.display());
        return Ok(keda);
    }
    println!(
        "  building KEDA v{KEDA_VERSION} (operator and metrics adapter) from the Go module proxy into {}",
        dir.display()
    );
    println!("  a cold build takes about 10 minutes on two cores; it is cached afterwards");
    let started = Instant::now();
    let src = dir.join("src");
    fs::create_dir_all(&src)?;
    let _ = fs::remove_file(src.join("go.mod"));
    let _ = fs::remove_file(src.join("go.sum"));
    let mut init = go_command(&root);
    init.current_dir(&src)
        .args(["mod", "init", "ebb.local/keda-build"]);
    run(init, "go mod init")?;

    // Where the module lands, and its own go.mod's directives.
    let module = format!("{MODULE}@v{KEDA_VERSION}");
    let mut download = go_command(&root);
    download
        .current_dir(&src)
        .args(["mod", "download", "-json", &module]);
    let out = download.output().context("go mod download")?;
    if !out.status.success() {
        bail!(
            "go mod download {module}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let module_dir = PathBuf::from(info["Dir"].as_str().context("no Dir in go mod download")?);
    let go_mod = info["GoMod"]
        .as_str()
        .context("no GoMod in go mod download")?;
    let mut read = go_command(&root);
    read.current_dir(&src)
        .args(["mod", "edit", "-json", go_mod]);
    let out = read.output().context("go mod edit -json")?;
    if !out.status.success() {
        bail!(
            "reading KEDA's go.mod: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let keda_mod: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut edit = go_command(&root);
    edit.current_dir(&src)
        .args(["mod", "edit", &format!("-require={module}")]);
    for args in directives(&keda_mod) {
        edit.arg(args);
    }
    run(edit, "go mod edit")?;

    let bin = dir.join("bin");
    fs::create_dir_all(&bin)?;
    for (package, program) in [
        ("cmd/operator", "keda-operator"),
        ("cmd/adapter", "keda-adapter"),
    ] {
        let mut build = go_command(&root);
        build.current_dir(&src).args([
            "build",
            "-trimpath",
            "-ldflags",
            &format!("-s -w -X {MODULE}/version.Version={KEDA_VERSION}"),
            "-o",
        ]);
        build
            .arg(bin.join(program))
            .arg(format!("{MODULE}/{package}"));
        run(build, &format!("go build {MODULE}/{package}"))?;
    }

    // Every CRD of the release: the operator waits for its caches of each, the eventing ones
    // (CloudEventSource, ClusterCloudEventSource) included, and exits without them.
    fs::create_dir_all(&keda.crds)?;
    for entry in fs::read_dir(module_dir.join("config/crd/bases"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let file = path.file_name().context("a CRD file's name")?;
            fs::copy(&path, keda.crds.join(file))
                .with_context(|| format!("copying KEDA's CRD {}", path.display()))?;
        }
    }
    fs::write(&stamp, format!("keda=v{KEDA_VERSION}\n"))?;
    println!(
        "  built KEDA v{KEDA_VERSION} in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(keda)
}

/// `go mod edit` arguments repeating a go.mod's `replace` and `exclude` directives (from
/// `go mod edit -json`).
fn directives(go_mod: &serde_json::Value) -> Vec<String> {
    let version = |m: &serde_json::Value| -> String {
        let path = m["Path"].as_str().unwrap_or_default();
        match m["Version"].as_str() {
            Some(v) if !v.is_empty() => format!("{path}@{v}"),
            _ => path.to_string(),
        }
    };
    let mut args = Vec::new();
    for r in go_mod["Replace"].as_array().into_iter().flatten() {
        args.push(format!(
            "-replace={}={}",
            version(&r["Old"]),
            version(&r["New"])
        ));
    }
    for e in go_mod["Exclude"].as_array().into_iter().flatten() {
        args.push(format!("-exclude={}", version(e)));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn a_dependencys_replaces_and_excludes_are_repeated() {
        let go_mod = serde_json::json!({
            "Replace": [
                {"Old": {"Path": "a.example/x", "Version": "v0.1.0"},
                 "New": {"Path": "a.example/x", "Version": "v0.1.1-0.2026"}},
                {"Old": {"Path": "k8s.io/api"}, "New": {"Path": "k8s.io/api", "Version": "v0.35.5"}}
            ],
            "Exclude": [{"Path": "b.example/y", "Version": "v5.2.3"}]
        });
        assert_eq!(
            directives(&go_mod),
            [
                "-replace=a.example/x@v0.1.0=a.example/x@v0.1.1-0.2026",
                "-replace=k8s.io/api=k8s.io/api@v0.35.5",
                "-exclude=b.example/y@v5.2.3",
            ]
        );
        assert!(directives(&serde_json::json!({})).is_empty());
    }
}
