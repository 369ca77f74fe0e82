//! Compiles `proto/*.proto` with protox (no protoc needed) into prost types and
//! tonic stubs.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [dir.join("jina.proto"), dir.join("docarray.proto")];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&dir])?;
    // Also kept encoded, for gRPC server reflection (Jina's gateway lists an
    // executor's services through it).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // Every `bytes` field decodes as `bytes::Bytes`: a frame's pixels are a slice
        // of the received buffer, never copied.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
