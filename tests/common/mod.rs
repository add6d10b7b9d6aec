//! Shared helpers for the end-to-end tests: the real binary, real tools, real boots.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub const MIB: u64 = 1024 * 1024;
pub const PASSWORD: &str = "c2vm-Test-pw-4711";

pub fn c2vm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_c2vm"));
    cmd.stdin(Stdio::null());
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running a command");
    eprintln!(
        "$ {:?}\n--- stderr ---\n{}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run a host tool and return its stdout, failing the test if it fails.
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The debootstrap test root filesystem (built once and cached by scripts/make-test-rootfs).
pub fn test_rootfs() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Ok(p) = std::env::var("C2VM_TEST_ROOTFS") {
            return PathBuf::from(p);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-test-rootfs");
        let out = Command::new(&script)
            .output()
            .expect("running scripts/make-test-rootfs");
        assert!(
            out.status.success(),
            "scripts/make-test-rootfs failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
    })
    .clone()
}

/// A lock shared by every test process on this machine, held while a test converts through the
/// Docker daemon or stages in /dev/shm (c2vm's default), so that "no container left behind" and
/// "no staging left in /dev/shm" stay exact. `cargo test` runs one test binary at a time, but
/// nextest runs tests of different binaries at once, each in its own process, where a `static
/// Mutex` serialises nothing. Released when dropped, or when the process dies.
pub struct HostLock(std::fs::File);

pub fn host_lock() -> HostLock {
    let path = Path::new("/tmp/c2vm-tests.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    HostLock(file)
}

/// A second kernel for the test rootfs: Debian's cloud flavour of its kernel, same ABI, as a .deb
/// (downloaded once and cached by scripts/fetch-test-kernel; `C2VM_TEST_KERNEL_DEB` names it).
pub fn test_kernel_deb() -> PathBuf {
    if let Ok(p) = std::env::var("C2VM_TEST_KERNEL_DEB") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-test-kernel");
    let out = Command::new(&script)
        .arg(test_rootfs())
        .output()
        .expect("running scripts/fetch-test-kernel");
    assert!(
        out.status.success(),
        "scripts/fetch-test-kernel failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A directory for one test; checked empty afterwards by the tests that care.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("c2vm-test.")
        .tempdir()
        .expect("temp dir")
}

pub fn password_file(dir: &Path) -> PathBuf {
    let p = dir.join("password");
    std::fs::write(&p, format!("{PASSWORD}\n")).unwrap();
    p
}

/// Names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Boot `disk`, log in as root and run `cmd`; returns (status, stdout).
pub fn boot_exec(disk: &Path, firmware: &str, pw: &Path, cmd: &str) -> (i32, String) {
    boot_exec_with(disk, firmware, pw, cmd, false, 420)
}

/// As [`boot_exec`], optionally keeping changes (`--persist`). One vCPU: two TCG guests with two
/// vCPUs each on a loaded 2-core host can stall in the guest kernel.
pub fn boot_exec_with(
    disk: &Path,
    firmware: &str,
    pw: &Path,
    cmd: &str,
    persist: bool,
    timeout: u32,
) -> (i32, String) {
    let mut command = c2vm();
    command.args([
        "run",
        "--cpus",
        "1",
        "--firmware",
        firmware,
        "--login",
        "root",
    ]);
    command.arg("--timeout").arg(timeout.to_string());
    if persist {
        command.arg("--persist");
    }
    let out = run(command
        .arg("--exec")
        .arg(cmd)
        .arg("--password-file")
        .arg(pw)
        .arg(disk));
    (out.status.code().unwrap_or(-1), stdout(&out))
}

/// `c2vm convert rootfs:<test rootfs> -o disk --password-file pw`, which must succeed.
pub fn convert_rootfs(disk: &Path, pw: &Path) {
    let _lock = host_lock();
    let out = run(c2vm()
        .arg("convert")
        .arg(format!("rootfs:{}", test_rootfs().display()))
        .arg("-o")
        .arg(disk)
        .arg("--password-file")
        .arg(pw));
    assert!(out.status.success(), "convert failed: {}", stderr(&out));
}

/// Byte offset of partition `n` (1-based) read back with `sfdisk --json`.
pub fn partition_offset(disk: &Path, n: usize) -> u64 {
    let json: serde_json::Value =
        serde_json::from_str(&tool("sfdisk", &["--json", disk.to_str().unwrap()])).unwrap();
    json["partitiontable"]["partitions"][n - 1]["start"]
        .as_u64()
        .unwrap()
        * 512
}

/// Wait for `child` to exit, failing the test if it takes longer than `limit`.
pub fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    what: &str,
) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return status;
        }
        assert!(
            started.elapsed() < limit,
            "{what} did not end within {limit:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A Docker build context `dir/ctx` holding `dockerfile` as its Dockerfile.
pub fn build_context(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir(&ctx).expect("creating the build context");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("writing the Dockerfile");
    ctx
}
