//! `cargo xtask image`: ebb's container image, built without a container engine or a registry.
//!
//! The static (musl) `ebb` binary is built on the host, and the image is written as an OCI image
//! layout by this module: one gzip layer holding the binary, Debian's CA bundle, a non-root user
//! (`nonroot`, 65532, as in distroless) and `/tmp`; the image config of the `Dockerfile` (user,
//! entrypoint, command, ports) and the `org.opencontainers.image.*` labels. Every timestamp in
//! the image is the commit's (or `SOURCE_DATE_EPOCH`), so the same commit and the same CA bundle
//! give the same digests. Written to `target/image/oci/` (a layout directory, as `umoci` and
//! `skopeo copy oci:` read it) and `target/image/ebb-<version>.oci.tar` (an OCI archive, as
//! `skopeo copy oci-archive:` and `podman load` read it, with docker save's `manifest.json`
//! beside the layout for `docker load`; no engine is on the build machine to try them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Options of `cargo xtask image`.
#[derive(clap::Args, Default)]
pub struct ImageArgs {
    /// Package this `ebb` binary instead of building the static one (it must be static).
    #[arg(long)]
    binary: Option<PathBuf>,
}

/// The Rust target of the image's binary.
pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// The image's user and group, distroless's `nonroot`.
const USER: u32 = 65532;
/// The CA bundle copied into the image (Debian's `ca-certificates`), at the same path.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The image's repository, as `deploy/` and the chart's `image.repository` name it.
pub const REPOSITORY: &str = "ghcr.io/ebb-sh/ebb";
/// The source repository, for the image's source label: the workspace's `repository`.
const SOURCE: &str = env!("CARGO_PKG_REPOSITORY");

/// Builds the image; returns the archive's path.
pub fn run(args: ImageArgs) -> Result<PathBuf> {
    let started = Instant::now();
    let root = xtask::workspace_root();
    let stamp = Stamp::of_head(&root)?;
    let binary = match args.binary {
        Some(path) => path,
        None => build_static_binary(&root, &stamp.commit)?,
    };
    let built = Instant::now();
    let version = env!("CARGO_PKG_VERSION");
    println!("==> writing the OCI image (target/image/)");
    let ebb = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    let ca = std::fs::read(CA_BUNDLE)
        .with_context(|| format!("reading {CA_BUNDLE} (Debian's ca-certificates)"))?;
    let image = Image::assemble(&rootfs(ebb, ca), version, &stamp)?;
    let out = crate::host::cargo_target_dir(&root).join("image");
    let layout = out.join("oci");
    if layout.exists() {
        std::fs::remove_dir_all(&layout)?;
    }
    image.write_layout(&layout)?;
    let archive = out.join(format!("ebb-{version}.oci.tar"));
    image.write_archive(&archive)?;
    check_with_umoci(&layout, version)?;
    println!(
        "    {} ({:.1} MiB; layer {:.1} MiB compressed, binary {:.1} MiB), manifest {}",
        archive.display(),
        file_mib(&archive)?,
        image.layer.len() as f64 / MIB,
        file_mib(&binary)?,
        image.manifest_digest
    );
    println!(
        "==> image done in {:.0}s (the binary's build {:.0}s)",
        started.elapsed().as_secs_f64(),
        built.duration_since(started).as_secs_f64()
    );
    Ok(archive)
}

/// Has `umoci` (Debian's, installed when missing) read the layout back: another
/// implementation of the format than the one that wrote it.
fn check_with_umoci(layout: &Path, version: &str) -> Result<()> {
    xtask::cluster::packages::ensure_programs(&[(xtask::cluster::packages::UMOCI, "umoci")])?;
    let out = Command::new(xtask::cluster::packages::UMOCI)
        .arg("stat")
        .arg("--image")
        .arg(format!("{}:{version}", layout.display()))
        .output()
        .context("running umoci")?;
    if !out.status.success() {
        bail!(
            "umoci stat of the written layout failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    println!("    umoci reads it back (umoci stat)");
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;

fn file_mib(path: &Path) -> Result<f64> {
    Ok(std::fs::metadata(path)?.len() as f64 / MIB)
}

/// Builds the stripped static `ebb` (release profile, musl), installing the musl target and
/// Debian's `musl-tools` when missing.
///
/// The commit is handed to the build as `EBB_GIT_COMMIT` (as the Dockerfile does), so `ebb
/// version` names the image's commit: the build script's own check of `.git` is not reliable
/// across worktrees sharing a target directory.
fn build_static_binary(root: &Path, commit: &str) -> Result<PathBuf> {
    ensure_musl_target()?;
    xtask::cluster::packages::ensure_programs(&[("/usr/bin/musl-gcc", "musl-tools")])?;
    println!("==> building the static ebb (cargo build --release --target {TARGET})");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--locked", "--target", TARGET])
        .args(["--package", "ebb-operator", "--bin", "ebb"])
        .env("EBB_GIT_COMMIT", commit.get(..12).unwrap_or(commit))
        .current_dir(root)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("building the static ebb failed ({status})");
    }
    let built = crate::host::cargo_target_dir(root)
        .join(TARGET)
        .join("release")
        .join("ebb");
    let stripped = built.with_file_name("ebb-stripped");
    let status = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&built)
        .status()
        .context("running strip (binutils)")?;
    if !status.success() {
        bail!("strip {} failed ({status})", built.display());
    }
    Ok(stripped)
}

/// `rustup target add` unless the target's standard library is installed.
fn ensure_musl_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (the image's static build needs the musl target)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    println!("  installing the {TARGET} target (rustup target add)");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()?;
    if !status.success() {
        bail!("rustup target add {TARGET} failed ({status})");
    }
    Ok(())
}

/// The commit the image is built from and its time (`SOURCE_DATE_EPOCH` overrides the time).
struct Stamp {
    commit: String,
    /// Seconds since the epoch.
    epoch: u64,
}

impl Stamp {
    fn of_head(root: &Path) -> Result<Self> {
        let git = |args: &[&str]| -> Result<String> {
            let out = Command::new("git").args(args).current_dir(root).output()?;
            if !out.status.success() {
                bail!(
                    "git {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let commit = git(&["rev-parse", "HEAD"])?;
        let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => v.parse().context("SOURCE_DATE_EPOCH: expected seconds")?,
            Err(_) => git(&["log", "-1", "--format=%ct"])?.parse()?,
        };
        Ok(Self { commit, epoch })
    }

    /// RFC 3339, UTC.
    fn rfc3339(&self) -> String {
        let days = (self.epoch / 86_400) as i64;
        let secs = self.epoch % 86_400;
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// One entry of the image's root filesystem.
struct Entry {
    path: &'static str,
    mode: u32,
    owner: u32,
    /// None: a directory.
    contents: Option<Vec<u8>>,
}

/// The root filesystem: what distroless's static image gives a Go or Rust static binary that
/// runs as `nonroot`, and the binary.
fn rootfs(ebb: Vec<u8>, ca_bundle: Vec<u8>) -> Vec<Entry> {
    let dir = |path, mode, owner| Entry {
        path,
        mode,
        owner,
        contents: None,
    };
    let file = |path, mode, contents: &str| Entry {
        path,
        mode,
        owner: 0,
        contents: Some(contents.as_bytes().to_vec()),
    };
    vec![
        dir("etc/", 0o755, 0),
        file(
            "etc/group",
            0o644,
            "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n",
        ),
        file(
            "etc/passwd",
            0o644,
            "root:x:0:0:root:/root:/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
             nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        ),
        dir("etc/ssl/", 0o755, 0),
        dir("etc/ssl/certs/", 0o755, 0),
        Entry {
            path: "etc/ssl/certs/ca-certificates.crt",
            mode: 0o644,
            owner: 0,
            contents: Some(ca_bundle),
        },
        dir("home/", 0o755, 0),
        dir("home/nonroot/", 0o700, USER),
        dir("tmp/", 0o1777, 0),
        Entry {
            path: "ebb",
            mode: 0o755,
            owner: 0,
            contents: Some(ebb),
        },
    ]
}

/// The image's blobs and the digests that name them.
struct Image {
    layer: Vec<u8>,
    layer_digest: String,
    config: Vec<u8>,
    config_digest: String,
    manifest: Vec<u8>,
    manifest_digest: String,
    version: String,
    epoch: u64,
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Image {
    fn assemble(entries: &[Entry], version: &str, stamp: &Stamp) -> Result<Self> {
        let tar = layer_tar(entries, stamp.epoch)?;
        let diff_id = sha256(&tar);
        let layer = gzip(&tar)?;
        let layer_digest = sha256(&layer);
        let created = stamp.rfc3339();
        let labels = json!({
            "org.opencontainers.image.title": "ebb",
            "org.opencontainers.image.description": "Event-driven autoscaling for Kubernetes, compatible with KEDA's API",
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.revision": stamp.commit,
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.source": SOURCE,
            "org.opencontainers.image.licenses": "Apache-2.0",
        });
        let config = serde_json::to_vec(&json!({
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": format!("{USER}:{USER}"),
                // distroless's environment and working directory, which the Dockerfile's
                // final stage inherits.
                "Env": [
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    format!("SSL_CERT_FILE={CA_BUNDLE}"),
                ],
                "Entrypoint": ["/ebb"],
                "Cmd": ["run", "--log-format=json"],
                "WorkingDir": "/home/nonroot",
                "ExposedPorts": {"6443/tcp": {}, "8080/tcp": {}, "9443/tcp": {}},
                "Labels": labels,
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": "cargo xtask image"}],
        }))?;
        let config_digest = sha256(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer.len(),
            }],
            "annotations": labels,
        }))?;
        let manifest_digest = sha256(&manifest);
        Ok(Self {
            layer,
            layer_digest,
            config,
            config_digest,
            manifest,
            manifest_digest,
            version: version.to_string(),
            epoch: stamp.epoch,
        })
    }

    /// The layout's files, by path: `oci-layout`, `index.json` and the blobs.
    fn files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": self.manifest_digest,
                "size": self.manifest.len(),
                "annotations": {
                    "org.opencontainers.image.ref.name": self.version,
                    // The full name, for loaders that take it from here (containerd's).
                    "io.containerd.image.name": self.reference(),
                },
            }],
        }))?;
        let blob = |digest: &str| format!("blobs/sha256/{}", &digest["sha256:".len()..]);
        Ok(vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".into(), index),
            (blob(&self.manifest_digest), self.manifest.clone()),
            (blob(&self.config_digest), self.config.clone()),
            (blob(&self.layer_digest), self.layer.clone()),
        ])
    }

    /// The image's name and tag, as `deploy/` and the chart's defaults pull it.
    fn reference(&self) -> String {
        format!("{REPOSITORY}:{}", self.version)
    }

    /// `manifest.json` of `docker save`'s format, beside the OCI layout in the archive, for
    /// `docker load` of engines that read only that format (it names the image too).
    fn docker_manifest(&self) -> Result<Vec<u8>> {
        let blob = |digest: &str| format!("blobs/sha256/{}", &digest["sha256:".len()..]);
        Ok(serde_json::to_vec(&json!([{
            "Config": blob(&self.config_digest),
            "RepoTags": [self.reference()],
            "Layers": [blob(&self.layer_digest)],
        }]))?)
    }

    fn write_layout(&self, dir: &Path) -> Result<()> {
        for (path, bytes) in self.files()? {
            let path = dir.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// The layout as one tar file (an OCI archive).
    fn write_archive(&self, path: &Path) -> Result<()> {
        let mut out = tar::Builder::new(Vec::new());
        for dir in ["blobs/", "blobs/sha256/"] {
            append(&mut out, dir, 0o755, 0, None, self.epoch)?;
        }
        let mut files = self.files()?;
        files.push(("manifest.json".into(), self.docker_manifest()?));
        for (name, bytes) in files {
            append(&mut out, &name, 0o644, 0, Some(&bytes), self.epoch)?;
        }
        std::fs::write(path, out.into_inner()?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// The layer: a tar of `entries` in order, every header fixed but for the path, mode, owner and
/// size, so that the same files give the same bytes.
fn layer_tar(entries: &[Entry], epoch: u64) -> Result<Vec<u8>> {
    let mut out = tar::Builder::new(Vec::new());
    for e in entries {
        append(
            &mut out,
            e.path,
            e.mode,
            e.owner,
            e.contents.as_deref(),
            epoch,
        )?;
    }
    Ok(out.into_inner()?)
}

fn append(
    out: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    owner: u32,
    contents: Option<&[u8]>,
    epoch: u64,
) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path)?;
    header.set_mode(mode);
    header.set_uid(u64::from(owner));
    header.set_gid(u64::from(owner));
    header.set_mtime(epoch);
    match contents {
        Some(bytes) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(bytes.len() as u64);
            header.set_cksum();
            out.append(&header, bytes)?;
        }
        None => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            header.set_cksum();
            out.append(&header, std::io::empty())?;
        }
    }
    Ok(())
}

/// Gzip with no name and no time in its header.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write as _;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes)?;
    Ok(gz.finish()?)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use serde_json::Value;

    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            commit: "0123456789abcdef".into(),
            epoch: 1_764_936_000,
        }
    }

    #[test]
    fn dates_are_written_as_rfc3339() {
        assert_eq!(stamp().rfc3339(), "2025-12-05T12:00:00Z");
        assert_eq!(
            Stamp {
                commit: String::new(),
                epoch: 0
            }
            .rfc3339(),
            "1970-01-01T00:00:00Z"
        );
        // A leap day.
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn the_same_files_give_the_same_image() {
        let a =
            Image::assemble(&rootfs(b"ebb".to_vec(), b"ca".to_vec()), "0.1.0", &stamp()).unwrap();
        let b =
            Image::assemble(&rootfs(b"ebb".to_vec(), b"ca".to_vec()), "0.1.0", &stamp()).unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        let c =
            Image::assemble(&rootfs(b"ebb2".to_vec(), b"ca".to_vec()), "0.1.0", &stamp()).unwrap();
        assert_ne!(a.layer_digest, c.layer_digest);
    }

    #[test]
    fn every_blob_is_named_by_its_digest_and_the_config_names_the_layer() {
        let image =
            Image::assemble(&rootfs(b"ebb".to_vec(), b"ca".to_vec()), "0.1.0", &stamp()).unwrap();
        for (path, bytes) in image.files().unwrap() {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256(&bytes), format!("sha256:{hex}"), "{path}");
            }
        }
        let config: Value = serde_json::from_slice(&image.config).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&image.layer[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&tar));
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.revision"],
            "0123456789abcdef"
        );
        let mut paths = Vec::new();
        for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
            let entry = entry.unwrap();
            paths.push(entry.path().unwrap().to_string_lossy().into_owned());
        }
        assert!(paths.contains(&"ebb".to_string()), "{paths:?}");
        assert!(paths.contains(&"etc/ssl/certs/ca-certificates.crt".to_string()));
    }
}
