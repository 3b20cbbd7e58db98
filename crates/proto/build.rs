//! Compiles every `proto/*.proto` file of the workspace with tonic-build.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs nothing but cargo.
//! `bytes` fields decode as `bytes::Bytes`, so record payloads slice the request buffer instead
//! of being copied.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rerun-if-changed={}", root.display());

    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_build::configure()
        .bytes(["."])
        .compile_protos(&files, &[root])?;
    Ok(())
}
