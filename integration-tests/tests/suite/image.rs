//! The image `cargo xtask image` wrote (`cargo xtask test` writes it before the suite): its
//! archive unpacked as a user would unpack it, its config read as a runtime reads it, and its
//! binary run in a chroot of its own root filesystem, so what the image holds is proven rather
//! than described. umoci (Debian's, another implementation of the OCI format than the writer)
//! unpacks it; the config must say what the `Dockerfile` says.

use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::{expect_success, workspace_root};
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn archive() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join(format!("image/ebb-{VERSION}.oci.tar"));
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask image` writes it (`cargo xtask test` does so before the suite)",
        path.display()
    );
    path
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    expect_success(&out, what)
}

/// A blob of the layout in `dir`, by digest, as JSON.
fn blob(dir: &Path, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let bytes = std::fs::read(dir.join("blobs/sha256").join(hex)).expect("the blob");
    serde_json::from_slice(&bytes).expect("a JSON blob")
}

/// The Dockerfile's instruction `name` (the first), as written.
fn dockerfile(name: &str) -> String {
    let text = std::fs::read_to_string(workspace_root().join("Dockerfile")).expect("Dockerfile");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in the Dockerfile"))
        .trim()
        .to_string()
}

#[test]
fn the_image_archive_holds_a_static_ebb_that_runs_as_the_dockerfile_says() {
    let archive = archive();
    let dir = std::env::temp_dir().join(integration_tests::unique_name("ebb-image"));
    let layout = dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout),
        "tar -xf the image archive",
    );

    // The config, as a runtime finds it: index -> manifest -> config.
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"], VERSION,
        "the image is tagged with the workspace version"
    );
    let manifest = blob(&layout, entry["digest"].as_str().unwrap());
    let config = blob(&layout, manifest["config"]["digest"].as_str().unwrap());
    let c = &config["config"];
    assert_eq!(c["User"], dockerfile("USER"), "USER");
    assert_eq!(
        c["Entrypoint"],
        serde_json::from_str::<Value>(&dockerfile("ENTRYPOINT")).unwrap(),
        "ENTRYPOINT"
    );
    assert_eq!(
        c["Cmd"],
        serde_json::from_str::<Value>(&dockerfile("CMD")).unwrap(),
        "CMD"
    );
    let mut ports: Vec<String> = c["ExposedPorts"]
        .as_object()
        .expect("ExposedPorts")
        .keys()
        .cloned()
        .collect();
    ports.sort();
    let mut expected: Vec<String> = dockerfile("EXPOSE")
        .split_whitespace()
        .map(|p| format!("{p}/tcp"))
        .collect();
    expected.sort();
    assert_eq!(ports, expected, "EXPOSE");
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    let head = run(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(workspace_root()),
        "git rev-parse HEAD",
    );
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        head.trim(),
        "the image was built from this commit (run `cargo xtask image` again)"
    );
    for label in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.created",
        "org.opencontainers.image.source",
        "org.opencontainers.image.licenses",
    ] {
        assert!(labels[label].is_string(), "label {label}: {labels}");
    }

    // Unpacked by umoci into a runtime bundle: its root filesystem and runtime config.
    let bundle = dir.join("bundle");
    run(
        Command::new(xtask::cluster::packages::UMOCI)
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:{VERSION}", layout.display()))
            .arg(&bundle),
        "umoci unpack",
    );
    let runtime: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        runtime["process"]["args"],
        serde_json::json!(["/ebb", "run", "--log-format=json"])
    );
    assert_eq!(runtime["process"]["user"]["uid"], 65532);
    let rootfs = bundle.join("rootfs");
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    let ca = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(
        ca.matches("BEGIN CERTIFICATE").count() > 50,
        "a CA bundle in the image"
    );

    // The binary runs in a chroot of the image's files alone, as the image's user: it is
    // static and needs nothing else from the root filesystem.
    let out = run(
        Command::new("chroot")
            .arg("--userspec=65532:65532")
            .arg(&rootfs)
            .args(["/ebb", "version"]),
        "chroot <rootfs> /ebb version",
    );
    assert!(out.contains(VERSION), "ebb version: {out}");
    assert!(
        out.contains(&head.trim()[..12]),
        "ebb version names the commit: {out}"
    );
    assert!(out.contains("musl"), "a static musl build: {out}");
    let _ = std::fs::remove_dir_all(&dir);
}
