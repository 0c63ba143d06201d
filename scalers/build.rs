//! Generates the external scaler protocol's client and server from `proto/externalscaler.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/externalscaler.proto");
    tonic_prost_build::configure()
        // Ordered, so a metadata map can key a cache and compares like `Trigger::metadata`.
        .btree_map(".externalscaler.ScaledObjectRef.scalerMetadata")
        // The metadata may hold credentials: Debug is written by hand (keys only).
        .skip_debug([".externalscaler.ScaledObjectRef"])
        .compile_protos(&["proto/externalscaler.proto"], &["proto"])?;
    Ok(())
}
