//! Builds `c2vm-init` (init/, its own workspace) as a static binary and hands its path to the
//! crate, which embeds it: a guest with no libc can run it, and `cargo install --path .` gives a
//! c2vm that carries its init. glibc's libc.a makes it static (`+crt-static`); no musl target is
//! needed. The init builds into target/c2vm-init, shared by every profile of c2vm.
use std::path::PathBuf;
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
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let triple = "x86_64-unknown-linux-gnu";
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--target", triple])
        .arg("--manifest-path")
        .arg(init.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's flags (a fuzzer's sanitizers, coverage) are not the init's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        // Static, and random numbers from init's own getrandom backend (see init/src/main.rs).
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Ctarget-feature=+crt-static\x1f--cfg\x1fgetrandom_backend=\"custom\"",
        )
        .status()
        .expect("running cargo to build c2vm-init");
    assert!(status.success(), "building c2vm-init (init/) failed");
    let binary = target_dir.join(triple).join("release").join("c2vm-init");
    println!("cargo:rustc-env=C2VM_INIT_BINARY={}", binary.display());
}
