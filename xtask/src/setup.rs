//! `cargo xtask setup`: install what a fresh machine lacks, idempotently.
//!
//! Every step checks first and only acts when something is missing, so a second run takes
//! seconds.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::cmd::{output, run, run_with_retry};

/// bpf-linker release that builds against our nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages the tests and later features need.
const DEBIAN_PACKAGES: &[&str] = &[
    "curl",
    "containerd",
    "runc",
    "protobuf-compiler",
    "stargz-snapshotter",
    // Headless browser for the `record report` page test.
    "chromium",
    // A real registry (distribution 2.8), skopeo to put images in it, htpasswd for its basic
    // auth and openssl for its TLS certificates: the registry push/pull tests.
    "docker-registry",
    "skopeo",
    "apache2-utils",
    "openssl",
    // `cargo xtask image`: the TLS roots it puts in the recorder's image; objcopy, which the
    // CRI tests strip the debug recorder with before packaging it.
    "ca-certificates",
    "binutils",
];

#[derive(clap::Args)]
pub struct Args {}

pub fn run_setup(_args: Args) -> anyhow::Result<()> {
    check_root()?;
    nightly_rust_src()?;
    bpf_linker()?;
    tracefs()?;
    debian_packages(DEBIAN_PACKAGES)?;
    kubectl()?;
    kubernetes_validate()?;
    eprintln!("setup: everything is in place");
    Ok(())
}

pub fn check_root() -> anyhow::Result<()> {
    let uid = output(Command::new("id").arg("-u"))?;
    if uid.trim() != "0" {
        bail!(
            "this needs root (loading eBPF programs, mounting tracefs and overlayfs); \
             run it as root, e.g. `sudo -E cargo xtask ...`"
        );
    }
    Ok(())
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        bail!(
            "the eBPF crate needs a nightly toolchain and none is installed \
             (`rustup toolchain install nightly --profile minimal`)"
        );
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if components.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the nightly toolchain");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// The nightly's own LLVM, which bpf-linker must match (a mismatch fails at link time with
/// `Invalid record`).
struct NightlyLlvm {
    lib_dir: PathBuf,
    /// e.g. `LLVM-22-rust-1.97.0-nightly`.
    dylib: String,
    /// e.g. `22`.
    major: String,
}

fn nightly_llvm() -> anyhow::Result<NightlyLlvm> {
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    for entry in fs::read_dir(&lib_dir).with_context(|| format!("listing {}", lib_dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        // libLLVM-22-rust-1.97.0-nightly.so
        if let Some(dylib) = name.strip_prefix("lib").and_then(|n| n.strip_suffix(".so"))
            && let Some(rest) = dylib.strip_prefix("LLVM-")
            && let Some((major, _)) = rest.split_once('-')
        {
            return Ok(NightlyLlvm {
                lib_dir: lib_dir.clone(),
                dylib: dylib.to_owned(),
                major: major.to_owned(),
            });
        }
    }
    bail!(
        "no libLLVM-*.so in the nightly sysroot {}",
        lib_dir.display()
    )
}

fn bpf_linker() -> anyhow::Result<()> {
    let llvm = nightly_llvm()?;
    let lib_dir = llvm.lib_dir.display().to_string();
    if let Ok(path) = output(Command::new("sh").args(["-c", "command -v bpf-linker"])) {
        // Linked to the nightly's libLLVM, resolved inside its sysroot: a new nightly moves or
        // renames that library and the line stops matching.
        let ldd = output(Command::new("ldd").arg(path.trim())).unwrap_or_default();
        let linked = ldd.lines().any(|l| {
            l.contains("libLLVM")
                && l.contains(&format!("=> {lib_dir}/"))
                && !l.contains("not found")
        });
        if linked {
            return Ok(());
        }
        eprintln!(
            "setup: bpf-linker is not linked to the nightly's LLVM in {lib_dir}; rebuilding it"
        );
    } else {
        eprintln!(
            "setup: installing bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {}",
            llvm.major
        );
    }
    // Link to the nightly's own LLVM rather than a system one, so the two can never disagree.
    let rustflags = format!(
        "-L native={lib_dir} -l dylib={} -C link-arg=-Wl,-rpath,{lib_dir}",
        llvm.dylib
    );
    run(Command::new("cargo").env("RUSTFLAGS", rustflags).args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--force",
        "--no-default-features",
        "--features",
        &format!("llvm-{},no-llvm-linking", llvm.major),
    ]))
}

fn tracefs() -> anyhow::Result<()> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    eprintln!("setup: mounting tracefs at /sys/kernel/tracing");
    run(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]))
}

pub fn debian_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages {}", missing.join(" "));
    // apt's lock can be held by another process (unattended upgrades): wait for it.
    let lock_wait = ["-o", "DPkg::Lock::Timeout=600"];
    run_with_retry(
        Command::new("apt-get")
            .args(lock_wait)
            .args(["update", "-q"]),
        3,
    )?;
    run_with_retry(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(lock_wait)
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
        3,
    )
}

/// `kubectl kustomize` builds the manifests in the tests. Debian's kubernetes-client ships
/// /usr/bin/kubectl, which machines with Google's `kubectl` package already own (dpkg would
/// refuse the overwrite), so it is installed only when no kubectl is there.
fn kubectl() -> anyhow::Result<()> {
    if output(Command::new("sh").args(["-c", "command -v kubectl"])).is_ok() {
        return Ok(());
    }
    debian_packages(&["kubernetes-client"])
}

/// The pinned validator of the Kubernetes manifests, in a venv of its own so that the system
/// Python stays untouched; the tests look for it there.
fn kubernetes_validate() -> anyhow::Result<()> {
    let pins_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes/validator-requirements.txt");
    let pins = fs::read_to_string(&pins_path)
        .with_context(|| format!("reading {}", pins_path.display()))?;
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = Path::new(&home).join(".cache/recorder/kubernetes-validate");
    // A copy of the pins, written last, marks a complete install of exactly those pins.
    let stamp = venv.join("requirements.txt");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == pins) {
        return Ok(());
    }
    eprintln!(
        "setup: installing the pinned kubernetes-validate into {}",
        venv.display()
    );
    // Debian's interpreter, not whichever python3 is first on PATH: the same on every machine.
    debian_packages(&["python3-venv"])?;
    if venv.exists() {
        fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    run(Command::new("/usr/bin/python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv))?;
    run_with_retry(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "-r",
            ])
            .arg(&pins_path),
        3,
    )?;
    fs::write(&stamp, pins).with_context(|| format!("writing {}", stamp.display()))
}
