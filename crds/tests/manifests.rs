//! The committed CRD manifests are exactly what the types generate.

#[test]
fn committed_manifests_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let generated = ebb_crds::manifests().expect("manifests render");
    assert_eq!(generated.len(), 3, "three CRDs: ScaledObject, TA, CTA");
    for (file, yaml) in generated {
        let committed = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
        assert!(
            committed == yaml,
            "crds/manifests/{file} differs from what the types in crds/src generate; \
             run `cargo xtask crds` and commit the result"
        );
    }
    let on_disk = std::fs::read_dir(&dir).expect("manifests dir").count();
    assert_eq!(on_disk, 3, "crds/manifests/ holds a file no type generates");
}
