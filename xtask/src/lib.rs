//! ebb's developer commands, as a library so the integration tests can bring the dev cluster up
//! with the same code as `cargo xtask cluster up`.

pub mod cluster;
pub mod crds;

use std::path::{Path, PathBuf};

/// The workspace root: the directory holding this crate's folder.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}
