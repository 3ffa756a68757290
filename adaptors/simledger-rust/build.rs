//! Generates the gRPC code from the repository's `proto/` with protox (a protobuf compiler in
//! Rust, from crates.io): no `protoc` binary is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../../proto";
    let files = [
        "ilphost/adaptor/v1/adaptor.proto",
        "ilphost/engine/v1/engine.proto",
        "ilphost/simledger/v1/simledger.proto",
        "ilphost/simledger/v1/peer_message.proto",
        "plugin/grpc_controller.proto",
    ];
    let descriptors = protox::compile(files, [root])?;
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    for file in files {
        println!("cargo:rerun-if-changed={root}/{file}");
    }
    println!("cargo:rerun-if-changed={root}/ilphost/types/v1/types.proto");
    Ok(())
}
