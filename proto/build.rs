//! Compiles the .proto files with the vendored protoc, so a build needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_build::configure()
        .codec_path("crate::codec::LeanCodec")
        .compile_protos(&["proto/ensemble.proto", "proto/peer.proto"], &["proto"])?;
    Ok(())
}
