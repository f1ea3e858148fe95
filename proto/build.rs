//! Compiles the `.proto` files with protox, a pure-Rust protobuf compiler, so the build needs
//! no `protoc` on the machine: Caskade's own `caskade/v1/caskade.proto` and, under
//! `kurrentdb/`, Caskade's description of KurrentDB's v1 wire protocol. Writes the generated
//! code and one encoded descriptor set of both (served by gRPC reflection) to `OUT_DIR`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/caskade/v1/caskade.proto",
    "proto/kurrentdb/shared.proto",
    "proto/kurrentdb/code.proto",
    "proto/kurrentdb/status.proto",
    "proto/kurrentdb/streams.proto",
    "proto/kurrentdb/serverfeatures.proto",
    "proto/kurrentdb/gossip.proto",
    "proto/kurrentdb/persistent.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("caskade_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .codec_path("crate::SizedCodec")
        // Maps as `BTreeMap`: a KurrentDB event carries three small metadata entries, which a
        // B-tree holds in one node without hashing them.
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}
