use std::env;

/// The crate depends on the `bpf-linker` binary, which cargo cannot see: rebuild when it changes
/// (for example when `cargo xtask setup` relinks it against a new nightly's LLVM).
fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    if let Some(linker) = env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join("bpf-linker"))
            .find(|candidate| candidate.is_file())
    }) {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
