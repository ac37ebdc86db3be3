//! Compiles `proto/spillway/v1/*.proto` with protox (a pure-Rust protobuf compiler, so no
//! system `protoc` is needed), generates the prost types and their protobuf-JSON serde impls.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTO_ROOT: &str = "../../proto";
const PROTO_FILES: &[&str] = &[
    "spillway/v1/counter.proto",
    "spillway/v1/write.proto",
    "spillway/v1/warmup.proto",
    "spillway/v1/dlq.proto",
];

/// The commit a build is made from, set by whoever builds (the Dockerfile's
/// `SPILLWAY_BUILD_COMMIT` build argument, CI); `unknown` when unset. Not read from git here:
/// a build script that watched the repository would rebuild every crate after each commit.
fn build_commit() -> String {
    println!("cargo:rerun-if-env-changed=SPILLWAY_BUILD_COMMIT");
    let commit: String = env::var("SPILLWAY_BUILD_COMMIT")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(64)
        .collect();
    if commit.is_empty() {
        "unknown".into()
    } else {
        commit
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rustc-env=SPILLWAY_COMMIT={}", build_commit());
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_bytes = descriptors.encode_to_vec();
    fs::write(out_dir.join("spillway_descriptor.bin"), &descriptor_bytes)?;

    prost_build::Config::new()
        // Well-known types come from pbjson-types, which carry the JSON mapping.
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".spillway"])?;
    Ok(())
}
