//! `cargo xtask crds`: writes the CRD manifests generated from the types in `crds/src`, to
//! `crds/manifests/` and to the Helm chart's `deploy/helm/ebb/crds/`.

use std::fs;

use anyhow::{Context, Result, bail};

use crate::workspace_root;

/// Where the generated CRDs go, relative to the workspace root.
const DIRS: [&str; 2] = ["crds/manifests", "deploy/helm/ebb/crds"];

/// Writes the CRD YAML into every folder of [`DIRS`]; with `check`, fails instead when any file
/// would change.
pub fn write(check: bool) -> Result<()> {
    let manifests = ebb_crds::manifests()?;
    let mut stale = Vec::new();
    for dir in DIRS {
        let dir_path = workspace_root().join(dir);
        fs::create_dir_all(&dir_path)?;
        for (file, yaml) in &manifests {
            let path = dir_path.join(file);
            let current = fs::read_to_string(&path).unwrap_or_default();
            if current == *yaml {
                continue;
            }
            if check {
                stale.push(format!("{dir}/{file}"));
            } else {
                fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated CRDs are out of date ({}); run `cargo xtask crds`",
            stale.join(", ")
        );
    }
    Ok(())
}
