//! `cargo xtask crds`: writes the CRD manifests generated from the types in `crds/src`.

use std::fs;

use anyhow::{Context, Result, bail};

use crate::workspace_root;

/// Writes `crds/manifests/*.yaml`; with `check`, fails instead when any file would change.
pub fn write(check: bool) -> Result<()> {
    let dir = workspace_root().join("crds/manifests");
    fs::create_dir_all(&dir)?;
    let mut stale = Vec::new();
    for (file, yaml) in ebb_crds::manifests()? {
        let path = dir.join(&file);
        let current = fs::read_to_string(&path).unwrap_or_default();
        if current == yaml {
            continue;
        }
        if check {
            stale.push(file);
        } else {
            fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        bail!(
            "crds/manifests is out of date ({}); run `cargo xtask crds`",
            stale.join(", ")
        );
    }
    Ok(())
}
