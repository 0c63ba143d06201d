//! Upstream Kubernetes and etcd binaries, built from source through the Go module proxy into a
//! cache outside the repository, once per pinned version.
//!
//! `k8s.io/kubernetes` cannot be `go install`ed (its go.mod replaces the staging modules with
//! local paths), so a throwaway module requires it and replaces every staging module by its
//! published `v0.<minor>.<patch>` release. All five programs are built by one `go build` so shared
//! packages compile once; Go's module and build caches live beside the binaries and survive.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The pinned Kubernetes release (1.34: from 1.35 client-go prefers watch-list streaming).
pub const KUBERNETES_VERSION: &str = "1.34.4";
/// The etcd release, within the 3.6 line that Kubernetes 1.34 is tested with.
pub const ETCD_VERSION: &str = "3.6.5";
/// kwok, which fakes nodes and marks pods Running and Ready without kubelets.
pub const KWOK_VERSION: &str = "0.7.0";
/// Helm, only to render and lint `deploy/helm/ebb` in the tests.
pub const HELM_VERSION: &str = "3.21.4";
/// nats-server, with JetStream, for the `nats-jetstream` scaler's tests.
pub const NATS_VERSION: &str = "2.15.3";
/// Ory Hydra, a real OAuth 2.0 server, for the `kafka` trigger's SASL/OAUTHBEARER tests.
pub const HYDRA_VERSION: &str = "2.3.0";
/// The fork of `pop` Hydra's go.mod puts in place of `github.com/gobuffalo/pop/v6`.
const HYDRA_POP: &str = "github.com/ory/pop/v6@v6.2.1-0.20241121111754-e5dfc0f3344b";

/// Programs built from `k8s.io/kubernetes`.
const KUBERNETES_PROGRAMS: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
];

/// Staging modules that `k8s.io/kubernetes` replaces with local paths.
const STAGING_MODULES: [&str; 31] = [
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
];

/// Where the binaries of one pinned version live: `<cache>/k8s-v<version>/bin`.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// Directory holding every program.
    pub bin: PathBuf,
}

impl Binaries {
    /// Where the pinned version's binaries are (or will be) in the cache; builds nothing.
    pub fn cached() -> Self {
        Self {
            bin: version_dir().join("bin"),
        }
    }

    /// Path of one program.
    pub fn path(&self, program: &str) -> PathBuf {
        self.bin.join(program)
    }
}

/// The cache root: `$EBB_CACHE_DIR`, else `$XDG_CACHE_HOME/ebb`, else `~/.cache/ebb`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("EBB_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("ebb");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/ebb")
}

/// Holds `<root>/<file>` locked (exclusively, waiting for another holder) until dropped: one
/// build or fetch into a cache at a time, across checkouts.
pub fn lock_cache(root: &Path, file: &str) -> Result<nix::fcntl::Flock<fs::File>> {
    fs::create_dir_all(root)?;
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(file))?;
    nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", root.join(file).display()))
}

/// The cache directory of the pinned Kubernetes version: `<cache>/k8s-v<version>`.
fn version_dir() -> PathBuf {
    cache_root().join(format!("k8s-v{KUBERNETES_VERSION}"))
}

/// Returns the cached binaries, building them when missing or not of the pinned versions.
pub fn ensure() -> Result<Binaries> {
    let root = cache_root();
    let dir = version_dir();
    fs::create_dir_all(&dir)?;
    // Two checkouts (a developer's and CI's) must not build into one cache at the same time.
    let _lock = lock_cache(&root, "build.lock")?;

    let binaries = Binaries::cached();
    let stamp = binaries.bin.join(".versions");
    let wanted = format!(
        "kubernetes=v{KUBERNETES_VERSION} etcd=v{ETCD_VERSION} kwok=v{KWOK_VERSION} helm=v{HELM_VERSION} nats=v{NATS_VERSION} hydra=v{HYDRA_VERSION}\n"
    );
    if fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        println!(
            "  Kubernetes v{KUBERNETES_VERSION}, etcd v{ETCD_VERSION}, kwok v{KWOK_VERSION}, helm v{HELM_VERSION}, nats-server v{NATS_VERSION}, hydra v{HYDRA_VERSION}: cached in {}",
            binaries.bin.display()
        );
        return Ok(binaries);
    }
    let stale: Vec<&str> = programs()
        .iter()
        .filter(|(program, args, expected)| {
            !reports_version(&binaries.path(program), args, expected)
        })
        .map(|(program, _, _)| *program)
        .collect();
    if stale
        .iter()
        .any(|p| !matches!(*p, "kwok" | "helm" | "nats-server" | "hydra"))
    {
        println!(
            "  building Kubernetes v{KUBERNETES_VERSION} and etcd v{ETCD_VERSION} from the Go module proxy into {}",
            binaries.bin.display()
        );
        println!("  a cold build takes about 8 minutes on two cores; it is cached afterwards");
        build_kubernetes(&root, &dir)?;
    }
    if stale.contains(&"kwok") {
        println!(
            "  building kwok v{KWOK_VERSION} (fake nodes) into {}",
            binaries.bin.display()
        );
        build_kwok(&root, &binaries.bin)?;
    }
    if stale.contains(&"helm") {
        println!(
            "  building helm v{HELM_VERSION} (to check deploy/helm) into {}",
            binaries.bin.display()
        );
        build_helm(&root, &binaries.bin)?;
    }
    if stale.contains(&"nats-server") {
        println!(
            "  building nats-server v{NATS_VERSION} (JetStream) into {}",
            binaries.bin.display()
        );
        build_nats(&root, &binaries.bin)?;
    }
    if stale.contains(&"hydra") {
        println!(
            "  building Ory Hydra v{HYDRA_VERSION} (OAuth 2.0, SQLite in memory) into {}",
            binaries.bin.display()
        );
        build_hydra(&root, &binaries.bin)?;
    }
    for (program, args, expected) in programs() {
        if !reports_version(&binaries.path(program), args, &expected) {
            bail!(
                "{} does not report version {expected} after building",
                binaries.path(program).display()
            );
        }
    }
    if stale.is_empty() {
        println!(
            "  Kubernetes v{KUBERNETES_VERSION}, etcd v{ETCD_VERSION}, kwok v{KWOK_VERSION}, helm v{HELM_VERSION}, nats-server v{NATS_VERSION}, hydra v{HYDRA_VERSION}: cached and verified in {}",
            binaries.bin.display()
        );
    }
    fs::write(&stamp, wanted)?;
    Ok(binaries)
}

/// Every program: (name, version arguments, text its version output must contain).
fn programs() -> [(&'static str, &'static [&'static str], String); 9] {
    let kubernetes = format!("Kubernetes v{KUBERNETES_VERSION}");
    [
        ("kube-apiserver", &["--version"], kubernetes.clone()),
        (
            "kube-controller-manager",
            &["--version"],
            kubernetes.clone(),
        ),
        ("kube-scheduler", &["--version"], kubernetes),
        (
            "kubectl",
            &["version", "--client"],
            format!("Client Version: v{KUBERNETES_VERSION}"),
        ),
        (
            "etcd",
            &["--version"],
            format!("etcd Version: {ETCD_VERSION}"),
        ),
        (
            "kwok",
            &["--version"],
            format!("kwok version v{KWOK_VERSION}"),
        ),
        ("helm", &["version", "--short"], format!("v{HELM_VERSION}")),
        (
            "nats-server",
            &["--version"],
            format!("nats-server: v{NATS_VERSION}"),
        ),
        ("hydra", &["version"], format!("v{HYDRA_VERSION}")),
    ]
}

/// Whether the program at `path` runs and reports `expected` in its version output.
fn reports_version(path: &Path, args: &[&str], expected: &str) -> bool {
    Command::new(path)
        .args(args)
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(expected))
}

/// A `go` command on the cache's module and build caches (no workspace, this machine's Go,
/// modules resolved as needed, no cgo).
pub fn go_command(root: &Path) -> Command {
    let mut cmd = Command::new("go");
    cmd.env("GOWORK", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0")
        .env("GOMODCACHE", root.join("go/mod"))
        .env("GOCACHE", root.join("go/build"));
    cmd
}

/// Runs a Go command quietly; its output is shown only when it fails.
pub fn run(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: is Go installed and on PATH?"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn build_kubernetes(root: &Path, dir: &Path) -> Result<()> {
    let src = dir.join("src");
    let bin = dir.join("bin");
    fs::create_dir_all(&src)?;
    fs::create_dir_all(&bin)?;
    let _ = fs::remove_file(src.join("go.mod"));
    let _ = fs::remove_file(src.join("go.sum"));

    let minor_patch = KUBERNETES_VERSION
        .split_once('.')
        .map(|(_, rest)| rest)
        .context("malformed KUBERNETES_VERSION")?;
    let mut init = go_command(root);
    init.current_dir(&src)
        .args(["mod", "init", "ebb.local/k8s-build"]);
    run(init, "go mod init")?;
    let mut edit = go_command(root);
    edit.current_dir(&src).arg("mod").arg("edit");
    edit.arg(format!("-require=k8s.io/kubernetes@v{KUBERNETES_VERSION}"));
    edit.arg(format!(
        "-require=go.etcd.io/etcd/server/v3@v{ETCD_VERSION}"
    ));
    for module in STAGING_MODULES {
        edit.arg(format!(
            "-replace=k8s.io/{module}=k8s.io/{module}@v0.{minor_patch}"
        ));
    }
    run(edit, "go mod edit")?;
    // Importing the mains keeps `go mod tidy` from dropping the requirements.
    fs::write(
        src.join("tools.go"),
        "//go:build tools\n\npackage tools\n\nimport (\n\t_ \"go.etcd.io/etcd/server/v3\"\n\t_ \"k8s.io/kubernetes/cmd/kube-apiserver\"\n\t_ \"k8s.io/kubernetes/cmd/kube-controller-manager\"\n\t_ \"k8s.io/kubernetes/cmd/kube-scheduler\"\n\t_ \"k8s.io/kubernetes/cmd/kubectl\"\n)\n",
    )?;
    println!("  downloading and resolving modules (go mod tidy)");
    let mut tidy = go_command(root);
    tidy.current_dir(&src).args(["mod", "tidy", "-e"]);
    run(tidy, "go mod tidy")?;

    let minor = minor_patch.split('.').next().unwrap_or_default();
    let mut ldflags = String::from("-s -w");
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        ldflags.push_str(&format!(
            " -X {pkg}.gitVersion=v{KUBERNETES_VERSION} -X {pkg}.gitMajor=1 -X {pkg}.gitMinor={minor} -X {pkg}.gitTreeState=clean"
        ));
    }
    let mut build = go_command(root);
    build
        .current_dir(&src)
        .args(["build", "-v", "-trimpath", "-tags=selinux,notest"])
        .arg(format!("-ldflags={ldflags}"))
        .arg("-o")
        .arg(format!("{}/", bin.display()))
        .args(KUBERNETES_PROGRAMS.map(|p| format!("k8s.io/kubernetes/cmd/{p}")))
        .arg("go.etcd.io/etcd/server/v3");
    go_build_with_progress(build, "go build (Kubernetes, etcd)")?;
    // `go build` names the etcd main after its import path (`server`, the `/v3` suffix dropped).
    for built in ["server", "v3"] {
        if bin.join(built).exists() {
            fs::rename(bin.join(built), bin.join("etcd"))?;
        }
    }
    // `ensure` verifies every program's version once the builds are done.
    Ok(())
}

/// kwok's module has no replace directives, so `go install` works.
fn build_kwok(root: &Path, bin: &Path) -> Result<()> {
    fs::create_dir_all(bin)?;
    let mut install = go_command(root);
    install
        .env("GOBIN", bin)
        .args(["install", "-v", "-trimpath"])
        .arg(format!("sigs.k8s.io/kwok/cmd/kwok@v{KWOK_VERSION}"));
    go_build_with_progress(install, "go install kwok")
}

/// Helm's module has no replace directives either; its version is stamped as its release does.
fn build_helm(root: &Path, bin: &Path) -> Result<()> {
    fs::create_dir_all(bin)?;
    let mut install = go_command(root);
    install
        .env("GOBIN", bin)
        .args(["install", "-v", "-trimpath", "-ldflags"])
        .arg(format!(
            "-s -w -X helm.sh/helm/v3/internal/version.version=v{HELM_VERSION}"
        ))
        .arg(format!("helm.sh/helm/v3/cmd/helm@v{HELM_VERSION}"));
    go_build_with_progress(install, "go install helm")
}

/// nats-server's module has no replace directives; its release stamps nothing we check beyond
/// the version compiled into the source.
fn build_nats(root: &Path, bin: &Path) -> Result<()> {
    fs::create_dir_all(bin)?;
    let mut install = go_command(root);
    install
        .env("GOBIN", bin)
        .args(["install", "-v", "-trimpath", "-ldflags=-s -w"])
        .arg(format!("github.com/nats-io/nats-server/v2@v{NATS_VERSION}"));
    go_build_with_progress(install, "go install nats-server")?;
    // `go install` names the program after the module's last path element.
    if bin.join("v2").exists() {
        fs::rename(bin.join("v2"), bin.join("nats-server"))?;
    }
    Ok(())
}

/// Hydra's go.mod replaces `pop` with Ory's fork (and its client with a directory the module's
/// zip leaves out), so it cannot be `go install`ed: a throwaway module requires it as a tool
/// with the fork's replace, and the client resolves to its published release. SQLite (cgo) is
/// built in so Hydra runs with `dsn: memory`, needing no database server.
fn build_hydra(root: &Path, bin: &Path) -> Result<()> {
    fs::create_dir_all(bin)?;
    let module = root.join("go/hydra-build");
    if module.exists() {
        fs::remove_dir_all(&module)?;
    }
    fs::create_dir_all(&module)?;
    fs::write(
        module.join("go.mod"),
        format!(
            "module ebb.dev/hydra-build\n\ngo 1.24\n\nreplace github.com/gobuffalo/pop/v6 => {}\n",
            HYDRA_POP.replace('@', " ")
        ),
    )?;
    let mut get = go_command(root);
    get.current_dir(&module)
        .args(["get", "-tool"])
        .arg(format!("github.com/ory/hydra/v2@v{HYDRA_VERSION}"));
    run(get, "go get hydra")?;
    let mut build = go_command(root);
    build
        .current_dir(&module)
        .env("CGO_ENABLED", "1")
        .args([
            "build",
            "-v",
            "-trimpath",
            "-tags",
            "sqlite,sqlite_omit_load_extension",
            "-ldflags",
        ])
        .arg(format!(
            "-s -w -X github.com/ory/hydra/v2/driver/config.Version=v{HYDRA_VERSION}"
        ))
        .arg("-o")
        .arg(bin.join("hydra"))
        .arg("github.com/ory/hydra/v2");
    go_build_with_progress(build, "go build hydra")
}

/// Runs a `go build -v`, printing a progress line every 200 compiled packages.
fn go_build_with_progress(mut cmd: Command, what: &str) -> Result<()> {
    let started = Instant::now();
    cmd.stdout(Stdio::inherit()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{what}: is Go installed?"))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut compiled = 0usize;
    let mut errors = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        // `-v` prints one bare import path per package; anything else is a diagnostic.
        if line.contains(' ') || line.starts_with('#') {
            errors.push(line);
            continue;
        }
        compiled += 1;
        if compiled.is_multiple_of(200) {
            println!(
                "    {what}: {compiled} packages compiled, {}s",
                started.elapsed().as_secs()
            );
        }
    }
    let status = child.wait()?;
    if !status.success() {
        for line in errors.iter().rev().take(40).rev() {
            eprintln!("    {line}");
        }
        bail!("{what} failed ({status})");
    }
    println!(
        "    {what}: done, {compiled} packages in {}s",
        started.elapsed().as_secs()
    );
    Ok(())
}
