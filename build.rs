//! Builds `c2vm-init` (init/, its own workspace) as a static binary and hands its path to the
//! crate, which embeds it: a guest with no libc can run it, and `cargo install --path .` gives a
//! c2vm that carries its init. glibc's libc.a makes it static (`+crt-static`); no musl target is
//! needed. The init builds into target/c2vm-init, shared by every profile of c2vm.
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // Without the `cli` feature (the fuzz targets' build) nothing installs an init.
    if std::env::var_os("CARGO_FEATURE_CLI").is_none() {
        return;
    }
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let init = manifest.join("init");
    // config/: the schema crate init shares with c2vm.
    for path in ["src", "config", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", init.join(path).display());
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("target"))
        .join("c2vm-init");
    let x86_64 = build_init(&init, &target_dir, "x86_64-unknown-linux-gnu", None)
        .expect("building c2vm-init (init/) failed");
    println!("cargo:rustc-env=C2VM_INIT_BINARY={}", x86_64.display());
    // aarch64, where Debian's cross toolchain is installed (scripts/install-host-deps --arm64):
    // rustup cannot download the target here, but Debian's rustc-web is a rustc whose sysroot
    // (/usr/lib/rustlib) takes the aarch64 standard library of libstd-rust-web-dev:arm64, and
    // gcc-aarch64-linux-gnu links it against libc6-dev-arm64-cross's static libc. Without them
    // c2vm is built all the same, and says so when an arm64 guest needs c2vm-init.
    let cross_rustc =
        std::env::var_os("C2VM_AARCH64_RUSTC").unwrap_or_else(|| "/usr/bin/rustc".into());
    println!("cargo:rerun-if-env-changed=C2VM_AARCH64_RUSTC");
    let cross = Path::new("/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib").is_dir()
        && Path::new(&cross_rustc).exists()
        && Path::new("/usr/bin/aarch64-linux-gnu-gcc").exists();
    let aarch64 = match cross {
        true => build_init(
            &init,
            &target_dir,
            "aarch64-unknown-linux-gnu",
            Some(Path::new(&cross_rustc)),
        ),
        false => None,
    };
    let generated = match aarch64 {
        Some(path) => format!("Some(include_bytes!({:?}))", path.display().to_string()),
        None => "None".to_string(),
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("init_aarch64.rs"), generated).expect("writing init_aarch64.rs");
}

/// `cargo build` of init/ for `triple`, static; the binary's path, or None where a cross build
/// failed (said as a warning).
fn build_init(
    init: &Path,
    target_dir: &Path,
    triple: &str,
    rustc: Option<&Path>,
) -> Option<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--locked", "--target", triple])
        .arg("--manifest-path")
        .arg(init.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        // The outer build's flags (a fuzzer's sanitizers, coverage) are not the init's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        // Static, and random numbers from init's own getrandom backend (see init/src/main.rs).
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Ctarget-feature=+crt-static\x1f--cfg\x1fgetrandom_backend=\"custom\"",
        );
    if let Some(rustc) = rustc {
        command
            .env("RUSTC", rustc)
            // Not clippy's driver (`cargo clippy` sets it): it belongs to rustup's toolchain,
            // and this rustc is Debian's.
            .env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env(
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                "aarch64-linux-gnu-gcc",
            );
    }
    let status = command.status().expect("running cargo to build c2vm-init");
    if !status.success() {
        match rustc {
            None => return None,
            Some(_) => {
                println!("cargo:warning=building c2vm-init for {triple} failed; arm64 guests will not get c2vm-init");
                return None;
            }
        }
    }
    Some(target_dir.join(triple).join("release").join("c2vm-init"))
}
