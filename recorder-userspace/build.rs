//! Builds the eBPF object with the nightly toolchain and bpf-linker; the binary embeds it.
//!
//! `AYA_BUILD_SKIP=1` skips that build (for work on code that never loads the programs) and
//! leaves an empty object, which the loader rejects with a clear error.

use std::{env, fs, io, path::PathBuf};

fn main() -> aya_build::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let out_dir = env::var_os("OUT_DIR")
            .map(PathBuf::from)
            .ok_or_else(|| io::Error::other("OUT_DIR not set"))?;
        fs::write(out_dir.join("recorder"), [])?;
        return Ok(());
    }
    let ebpf = aya_build::Package {
        name: "recorder-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../recorder-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default())
}
