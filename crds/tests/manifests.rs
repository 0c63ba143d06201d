//! The committed CRD manifests, in `crds/manifests/` and in the Helm chart, are exactly what
//! the types generate.

#[test]
fn committed_manifests_match_the_types() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let generated = ebb_crds::manifests().expect("manifests render");
    assert_eq!(
        generated.len(),
        4,
        "four CRDs: ScaledObject, ScaledJob, TA, CTA"
    );
    for dir in ["crds/manifests", "deploy/helm/ebb/crds"] {
        for (file, yaml) in &generated {
            let committed = std::fs::read_to_string(root.join(dir).join(file)).unwrap_or_default();
            assert!(
                committed == *yaml,
                "{dir}/{file} differs from what the types in crds/src generate; \
                 run `cargo xtask crds` and commit the result"
            );
        }
        let on_disk = std::fs::read_dir(root.join(dir))
            .expect("manifests dir")
            .count();
        assert_eq!(on_disk, 4, "{dir}/ holds a file no type generates");
    }
}
