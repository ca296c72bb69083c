//! Writes the prost types of protos/dwcp/inference/v1/inference.proto to native/src/gen/ (committed, so that a
//! build of the extension needs cargo but no protoc). PROTOC names the compiler (make uses grpc_tools').
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = here.join("../..");
    let out = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| here.join("../src/gen"));
    std::fs::create_dir_all(&out)?;
    prost_build::Config::new()
        .out_dir(&out)
        .compile_protos(&[root.join("protos/dwcp/inference/v1/inference.proto")], &[root.join("protos")])
}
