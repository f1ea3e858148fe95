//! Compiles the vendored `UmaDB` protocol (client side only) with protox, a pure-Rust protobuf
//! compiler, for the side-by-side runs against `UmaDB`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/umadb/v1/umadb.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
