//! Compiles `proto/caskade/v1/caskade.proto` with protox, a pure-Rust protobuf compiler, so the
//! build needs no `protoc` on the machine. Writes the generated code and the encoded
//! descriptor set (served by gRPC reflection) to `OUT_DIR`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/caskade/v1/caskade.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("caskade_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .codec_path("crate::SizedCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
