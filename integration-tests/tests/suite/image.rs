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

/// The keys of the Dockerfile's `LABEL` instruction, sorted.
fn dockerfile_labels() -> Vec<String> {
    let text = std::fs::read_to_string(workspace_root().join("Dockerfile")).expect("Dockerfile");
    let mut keys: Vec<String> = text
        .lines()
        .map(|l| l.trim().trim_start_matches("LABEL").trim())
        .filter(|l| l.starts_with("org.opencontainers.image."))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    keys.sort();
    keys
}

/// `image.repository` of the chart's values (what deploy/ pulls too).
fn chart_repository() -> String {
    let values = std::fs::read_to_string(workspace_root().join("deploy/helm/ebb/values.yaml"))
        .expect("values.yaml");
    let values: Value = serde_norway::from_str(&values).expect("values.yaml is YAML");
    values["image"]["repository"]
        .as_str()
        .expect("image.repository")
        .to_string()
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
    // The same labels as the Dockerfile's, each set; the Dockerfile's version is the workspace's.
    let mut keys: Vec<&String> = labels.as_object().expect("labels").keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        dockerfile_labels().iter().collect::<Vec<_>>(),
        "LABEL"
    );
    for (key, value) in labels.as_object().expect("labels") {
        assert!(
            value.as_str().is_some_and(|v| !v.is_empty()),
            "label {key}: {labels}"
        );
    }
    let text = std::fs::read_to_string(workspace_root().join("Dockerfile")).expect("Dockerfile");
    assert_eq!(
        text.lines()
            .find_map(|l| l.strip_prefix("ARG EBB_VERSION=")),
        Some(VERSION),
        "the Dockerfile's EBB_VERSION is the workspace's version"
    );

    // Named as deploy/ and the chart pull it, for the loaders that take the name from the
    // archive: containerd's annotation, and docker save's manifest.json beside the layout.
    let reference = format!("{}:{VERSION}", chart_repository());
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        reference.as_str()
    );
    let docker: Value =
        serde_json::from_slice(&std::fs::read(layout.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(docker[0]["RepoTags"], serde_json::json!([reference]));
    let config_path = docker[0]["Config"].as_str().expect("Config");
    assert_eq!(
        config_path,
        manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .replace("sha256:", "blobs/sha256/")
    );
    for path in std::iter::once(config_path).chain(
        docker[0]["Layers"]
            .as_array()
            .expect("Layers")
            .iter()
            .filter_map(Value::as_str),
    ) {
        assert!(layout.join(path).is_file(), "manifest.json names {path}");
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
