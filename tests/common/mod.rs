//! Shared helpers for the end-to-end tests: the real binary, real tools, real boots.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

// The tar builder the unit tests use as well.
#[path = "../../src/testutil.rs"]
mod testutil;
#[allow(unused_imports)] // as dead_code above: not every suite builds archives
pub use testutil::Tar;

pub const MIB: u64 = 1024 * 1024;
pub const PASSWORD: &str = "c2vm-Test-pw-4711";

pub fn c2vm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_c2vm"));
    cmd.stdin(Stdio::null());
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    let started = std::time::Instant::now();
    let out = cmd.output().expect("running a command");
    log_run(cmd, &out, started);
    out
}

/// As [`run`], with `input` on the command's stdin.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let started = std::time::Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a command");
    let mut stdin = child.stdin.take().expect("the command's stdin");
    // A command that fails before it reads its stdin has closed it: its output says why.
    match std::io::Write::write_all(&mut stdin, input) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
        _ => drop(stdin),
    }
    let out = child.wait_with_output().expect("waiting for a command");
    log_run(cmd, &out, started);
    out
}

/// The time each step took: a slow run's JUnit file (which keeps every test's output) then
/// says where its minutes went.
fn log_run(cmd: &Command, out: &Output, started: std::time::Instant) {
    eprintln!(
        "$ {:?}\n--- stderr ---\n{}--- took {:.1} s ---",
        cmd,
        String::from_utf8_lossy(&out.stderr),
        started.elapsed().as_secs_f64()
    );
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one `c2vm: error:` line in `said` (c2vm's stderr), which must hold exactly one.
#[allow(dead_code)]
pub fn the_error(said: &str) -> String {
    let errors: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("c2vm: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected: {said}");
    errors[0].to_string()
}

/// What c2vm says last when a signal stopped it (exit 130): `main`'s words in src/lib.rs.
pub const INTERRUPTED: &str = "c2vm: interrupted; cleaned up";

/// Whether c2vm's stderr, as lines, says it was interrupted: a line ending in [`INTERRUPTED`]
/// (a guest's console, relayed on the same stderr, may have left its last line unended).
pub fn says_interrupted<S: AsRef<str>>(lines: &[S]) -> bool {
    lines.iter().any(|l| l.as_ref().ends_with(INTERRUPTED))
}

/// A failure as a user meets it: exit 1 and one `c2vm: error:` line, which this returns.
#[allow(dead_code)]
pub fn one_error(out: &Output) -> String {
    let said = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    the_error(&said)
}

/// The ordinary user conversions run as in tests of "no root needed": a member of the `docker`
/// group, made once.
pub const USER: &str = "c2vm-user";

/// `c2vm`, run as [`USER`] (no root; the engine through the docker group). The binary is copied
/// where that user can reach it: a clone may sit under a root-only home.
pub fn c2vm_as_user() -> Command {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    let bin = BIN.get_or_init(|| {
        let exists = Command::new("id").arg(USER).output().expect("running id");
        if !exists.status.success() {
            // Two test processes may race here: the loser finds the user made.
            let _ = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .args(["--groups", "docker", USER])
                .status();
            tool("id", &[USER]);
        }
        let exe = Path::new(env!("CARGO_BIN_EXE_c2vm"));
        let stamp = std::fs::metadata(exe)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let dir = Path::new("/tmp/c2vm-user-bin");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let bin = dir.join(format!("c2vm-{stamp}"));
        if !bin.exists() {
            let tmp = dir.join(format!(".c2vm-{stamp}.{}", std::process::id()));
            std::fs::copy(exe, &tmp).unwrap();
            std::fs::rename(&tmp, &bin).unwrap();
        }
        bin
    });
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={USER}"),
        &format!("--regid={USER}"),
        "--init-groups",
        "--",
    ])
    .arg(bin)
    .env("HOME", "/tmp")
    .stdin(Stdio::null());
    cmd
}

/// A scratch directory [`USER`] may write in (its files stay readable by the test).
pub fn user_scratch() -> tempfile::TempDir {
    let dir = scratch();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    dir
}

/// Run a host tool and return its stdout, failing the test if it fails.
pub fn tool(program: &str, args: &[&str]) -> String {
    let started = std::time::Instant::now();
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    // As [`run`], the time of each step that took a while.
    let took = started.elapsed().as_secs_f64();
    if took >= 1.0 {
        eprintln!("$ {program} {args:?} --- took {took:.1} s ---");
    }
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
        PathBuf::from(run_script("make-test-rootfs", &[]))
    })
    .clone()
}

/// The Debian 13 test root filesystem, with shim and the signed systemd-boot (built once and
/// cached by `scripts/make-test-rootfs trixie`).
pub fn test_rootfs_trixie() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Ok(p) = std::env::var("C2VM_TEST_ROOTFS_TRIXIE") {
            return PathBuf::from(p);
        }
        let out = run(Command::new(script("make-test-rootfs")).arg("trixie"));
        assert!(
            out.status.success(),
            "scripts/make-test-rootfs trixie: {}",
            stderr(&out)
        );
        PathBuf::from(stdout(&out).trim())
    })
    .clone()
}

/// The test root filesystem with the entries of the tar `extra` appended (GNU tar -A), as
/// `dir/rootfs.tar`.
pub fn test_rootfs_plus(dir: &Path, extra: &[u8]) -> PathBuf {
    let extra_path = dir.join("extra.tar");
    std::fs::write(&extra_path, extra).unwrap();
    let combined = dir.join("rootfs.tar");
    std::fs::copy(test_rootfs(), &combined).unwrap();
    tool(
        "tar",
        &[
            "-A",
            "-f",
            combined.to_str().unwrap(),
            extra_path.to_str().unwrap(),
        ],
    );
    combined
}

/// Something a test must undo however it ends (a failed assertion unwinds through it): a value,
/// and what to do with it on drop. It derefs to the value, so a test keeps using what it guards.
/// The one guard of the suites: [`Guard::on_drop`] for a bare action, [`killed_on_drop`] for a
/// process, [`tmpfs`] for a mount.
pub struct Guard<T> {
    value: T,
    undo: Option<Undo<T>>,
}

type Undo<T> = Box<dyn FnOnce(&mut T)>;

impl<T> Guard<T> {
    pub fn new(value: T, undo: impl FnOnce(&mut T) + 'static) -> Guard<T> {
        Guard {
            value,
            undo: Some(Box::new(undo)),
        }
    }
}

impl Guard<()> {
    pub fn on_drop(undo: impl FnOnce() + 'static) -> Guard<()> {
        Guard::new((), |_| undo())
    }
}

impl<T> std::ops::Deref for Guard<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for Guard<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if let Some(undo) = self.undo.take() {
            undo(&mut self.value);
        }
    }
}

/// `child`, killed and reaped when the test ends, unless it has ended by then.
pub fn killed_on_drop(child: std::process::Child) -> Guard<std::process::Child> {
    Guard::new(child, |child| {
        let _ = child.kill();
        let _ = child.wait();
    })
}

/// A tmpfs mounted at `dir` (made if missing) with `options` (`size=64M`, `ro,size=1M`), unmounted
/// when the test ends. Derefs to `dir`.
pub fn tmpfs(dir: &Path, options: &str) -> Guard<PathBuf> {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    tool(
        "mount",
        &["-t", "tmpfs", "-o", options, "tmpfs", dir.to_str().unwrap()],
    );
    Guard::new(dir.to_path_buf(), |dir| {
        let _ = Command::new("umount").arg(dir).status();
    })
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
    let started = std::time::Instant::now();
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    // Time a test spends here holds a test slot with nothing to do: say how much.
    let waited = started.elapsed().as_secs_f64();
    if waited >= 1.0 {
        eprintln!("--- waited {waited:.1} s for the host lock ---");
    }
    HostLock(file)
}

/// A second kernel for the Debian 13 test rootfs: Debian's cloud flavour of its kernel, same ABI,
/// as a .deb (downloaded once and cached by scripts/fetch-test-kernel; `C2VM_TEST_KERNEL_DEB`
/// names it).
pub fn test_kernel_deb() -> PathBuf {
    if let Ok(p) = std::env::var("C2VM_TEST_KERNEL_DEB") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-test-kernel");
    let out = Command::new(&script)
        .arg(test_rootfs_trixie())
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

/// A new directory `name` in `dir`.
pub fn subdir(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir(&path).unwrap();
    path
}

pub fn password_file(dir: &Path) -> PathBuf {
    let p = dir.join("password");
    std::fs::write(&p, format!("{PASSWORD}\n")).unwrap();
    p
}

/// Whether two files hold the same bytes (`cmp`: a 2 GiB disk in about a second, where
/// hashing it took 12 s on a machine without SHA instructions). `cmp` exits 1 for "different";
/// when it cannot compare at all (it cannot run, a file is missing or unreadable: status 2)
/// this panics with what it said, so that trouble never reads as a difference.
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    // Not `cmp -s`, which silences the reason for trouble too; the line saying where the
    // files differ goes nowhere instead.
    let out = Command::new("cmp")
        .args([a, b])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running cmp {} {}: {e}", a.display(), b.display()));
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "cmp {} {} could not compare them ({}): {}",
            a.display(),
            b.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// Where two disks that should be the same bytes first differ, for the failure message: the byte
/// offset and the partition it falls in (`cmp`'s count starts at 1).
pub fn first_difference(a: &Path, b: &Path) -> String {
    let out = Command::new("cmp")
        .args([a, b])
        .output()
        .expect("running cmp");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let byte: Option<u64> = said
        .split("byte ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok());
    let Some(byte) = byte.map(|b| b - 1) else {
        return format!("cmp: {said}{}", String::from_utf8_lossy(&out.stderr));
    };
    let part = match (partition_offset(a, 1), partition_offset(a, 2)) {
        (_, root) if byte >= root => "the root partition",
        (esp, _) if byte >= esp => "the ESP",
        _ => "the partition table",
    };
    format!("first difference at byte {byte}, in {part}")
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

/// Boot `disk` (`firmware`: `bios`, `uefi` or [`DIRECT`]), log in as root and run `cmd`;
/// returns (status, stdout). [`Boot`] says more about the boot.
pub fn boot_exec(disk: &Path, firmware: &str, pw: &Path, cmd: &str) -> (i32, String) {
    Boot::new(disk, firmware, pw).exec(cmd)
}

/// A `firmware` for [`boot_exec`]: the disk's kernel booted directly (`c2vm run
/// --direct-kernel`), for a test that is not about firmware or boot loaders: seconds cheaper
/// under TCG.
pub const DIRECT: &str = "direct";

/// `c2vm run --login root --exec CMD DISK`, as the tests boot: say what else the boot takes
/// (`--persist`, a longer timeout, settings for this boot such as `--hostname` or
/// `--credential`), then [`Boot::exec`]. One vCPU: two TCG guests with two vCPUs each on a
/// loaded 2-core host can stall in the guest kernel.
pub struct Boot {
    disk: PathBuf,
    firmware: String,
    pw: PathBuf,
    persist: bool,
    timeout: u32,
    args: Vec<std::ffi::OsString>,
}

impl Boot {
    /// `firmware`: `bios`, `uefi`, `uefi-secure` or [`DIRECT`]; root's password in `pw`.
    pub fn new(disk: &Path, firmware: &str, pw: &Path) -> Boot {
        Boot {
            disk: disk.to_path_buf(),
            firmware: firmware.to_string(),
            pw: pw.to_path_buf(),
            persist: false,
            timeout: 420,
            args: Vec::new(),
        }
    }

    /// Keep the guest's changes on the disk (`--persist`).
    pub fn persist(mut self) -> Boot {
        self.persist = true;
        self
    }

    /// `--timeout`, in seconds (420 unless told).
    pub fn timeout(mut self, seconds: u32) -> Boot {
        self.timeout = seconds;
        self
    }

    /// More of `run`'s options: the settings for this boot.
    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Boot {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Boot, log in as root and run `cmd`; returns (status, stdout).
    pub fn exec(self, cmd: &str) -> (i32, String) {
        let mut command = c2vm();
        command.args(["run", "--cpus", "1", "--login", "root"]);
        command.args(&self.args);
        match self.firmware.as_str() {
            DIRECT => command.arg("--direct-kernel"),
            firmware => command.args(["--firmware", firmware]),
        };
        command.arg("--timeout").arg(self.timeout.to_string());
        if self.persist {
            command.arg("--persist");
        }
        let out = run(command
            .arg("--exec")
            .arg(cmd)
            .arg("--password-file")
            .arg(&self.pw)
            .arg(&self.disk));
        // The guest's facts, in the test's output too (JUnit keeps it): a slow run's boots then
        // say what they saw, and how long their work took where a script times it.
        let said = stdout(&out);
        eprintln!("--- guest stdout ---\n{said}\n--- end ---");
        (out.status.code().unwrap_or(-1), said)
    }
}

/// `SOURCE_DATE_EPOCH` of the conversions that must be reproducible.
pub const EPOCH: &str = "1700000000";

/// The arm64 Debian 13 image tests/arm64.rs converts (scripts/test makes it).
pub const ARM64_IMAGE: &str = "c2vm-test/debian-arm64:trixie";

/// The arm64 generic bundle's base: an image on [`ARM64_IMAGE`] with one label more, so that
/// the containers of the two arm64 tests' builds can be told apart (scripts/test makes it).
pub const ARM64_BUNDLE_BASE: &str = "arm64v8/debian:stable";

/// The ids of the containers, running or not, whose image is `image` or built on it.
fn containers_of(image: Option<&str>) -> std::collections::BTreeSet<String> {
    let filter = image.map(|i| format!("ancestor={i}"));
    let mut args = vec!["ps", "-aq", "--no-trunc"];
    if let Some(f) = &filter {
        args.extend(["--filter", f]);
    }
    tool("docker", &args).lines().map(String::from).collect()
}

fn ids(set: impl IntoIterator<Item = String>) -> String {
    set.into_iter().map(|id| format!("{id}\n")).collect()
}

/// The daemon's containers, running or not: the same before and after a conversion or build,
/// which must leave none behind. Those of the arm64 images and of what is built on them are left
/// out: their builds run for minutes under emulation without the [`host_lock`], and are checked
/// apart ([`arm64_containers`], [`arm64_bundle_containers`]).
pub fn containers() -> String {
    let arm64 = containers_of(Some(ARM64_IMAGE));
    ids(containers_of(None)
        .into_iter()
        .filter(|id| !arm64.contains(id)))
}

/// The containers of [`ARM64_IMAGE`] and of images built on it, but not on [`ARM64_BUNDLE_BASE`].
pub fn arm64_containers() -> String {
    let bundle = containers_of(Some(ARM64_BUNDLE_BASE));
    ids(containers_of(Some(ARM64_IMAGE))
        .into_iter()
        .filter(|id| !bundle.contains(id)))
}

/// The containers of [`ARM64_BUNDLE_BASE`] and of images built on it.
pub fn arm64_bundle_containers() -> String {
    ids(containers_of(Some(ARM64_BUNDLE_BASE)))
}

/// `c2vm convert SOURCE -o OUT`, as the tests run it: say what else it takes, then run it with
/// [`Convert::output`] (whatever the outcome) or [`Convert::success`] (it must succeed).
pub struct Convert {
    source: String,
    out: PathBuf,
    as_user: bool,
    verbose: bool,
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, std::ffi::OsString)>,
    env_remove: Vec<String>,
    stdin: Option<Vec<u8>>,
    lock: bool,
    nothing_left: bool,
    /// Containers compared before and after, when not [`containers`]: see [`Convert::emulated`].
    view: Option<fn() -> String>,
}

impl Convert {
    /// Run as root.
    pub fn new(source: &str, out: &Path) -> Convert {
        Convert {
            source: source.to_string(),
            out: out.to_path_buf(),
            as_user: false,
            verbose: false,
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            stdin: None,
            lock: false,
            nothing_left: false,
            view: None,
        }
    }

    /// The test root filesystem ([`test_rootfs`]), as root.
    pub fn rootfs(out: &Path) -> Convert {
        Convert::new(&format!("rootfs:{}", test_rootfs().display()), out)
    }

    /// Run as [`USER`] instead (no root; the engine through the docker group).
    pub fn by_user(mut self) -> Convert {
        self.as_user = true;
        self
    }

    pub fn password_file(self, pw: &Path) -> Convert {
        self.arg("--password-file").arg(pw)
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Convert {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<S: AsRef<std::ffi::OsStr>>(self, args: impl IntoIterator<Item = S>) -> Convert {
        args.into_iter().fold(self, Convert::arg)
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Convert {
        self.env.push((key.to_string(), value.as_ref().to_owned()));
        self
    }

    pub fn envs<K: AsRef<str>, V: AsRef<std::ffi::OsStr>>(
        self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Convert {
        vars.into_iter().fold(self, |convert, (key, value)| {
            convert.env(key.as_ref(), value)
        })
    }

    /// Without `key` in its environment (such as `DOCKER_HOST`: the default engine).
    pub fn env_remove(mut self, key: &str) -> Convert {
        self.env_remove.push(key.to_string());
        self
    }

    /// `c2vm -vv convert …`: every command it runs and every request, in its log.
    pub fn verbose(mut self) -> Convert {
        self.verbose = true;
        self
    }

    /// `input` on its stdin (a registry password for `--creds`), where it has none otherwise.
    pub fn stdin(mut self, input: &str) -> Convert {
        self.stdin = Some(input.as_bytes().to_vec());
        self
    }

    /// Reproducible identifiers and timestamps: `SOURCE_DATE_EPOCH` is [`EPOCH`].
    pub fn reproducible(self) -> Convert {
        self.env("SOURCE_DATE_EPOCH", EPOCH)
    }

    /// Scratch beside the output, not in /dev/shm, where other tests count what is left.
    pub fn scratch_beside_output(self) -> Convert {
        let dir = self
            .out
            .parent()
            .expect("an output in a directory")
            .to_owned();
        self.env("TMPDIR", dir)
    }

    /// Hold the [`host_lock`] while it runs: it makes containers or stages in /dev/shm.
    pub fn locked(mut self) -> Convert {
        self.lock = true;
        self
    }

    /// Locked, and checked afterwards: no container and no staging in /dev/shm left behind.
    pub fn leaving_nothing_behind(mut self) -> Convert {
        self.lock = true;
        self.nothing_left = true;
        self
    }

    /// A conversion of an arm64 image whose builds take minutes under emulation: without the
    /// [`host_lock`], checked afterwards for containers left behind in `view`
    /// ([`arm64_containers`] or [`arm64_bundle_containers`]), which no other test touches. Its
    /// scratch must be beside the output ([`Convert::scratch_beside_output`]), out of /dev/shm.
    pub fn emulated(mut self, view: fn() -> String) -> Convert {
        self.nothing_left = true;
        self.view = Some(view);
        self
    }

    /// The command line alone, for a test that drives the process itself (a signal at a stage,
    /// its stderr as it comes). Nothing of [`Convert::locked`], [`Convert::stdin`] or the checks
    /// afterwards: those belong to [`Convert::output`].
    pub fn command(&self) -> Command {
        let mut cmd = if self.as_user { c2vm_as_user() } else { c2vm() };
        if self.verbose {
            cmd.arg("-vv");
        }
        cmd.args(["convert", &self.source, "-o"])
            .arg(&self.out)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        for key in &self.env_remove {
            cmd.env_remove(key);
        }
        cmd
    }

    /// Run it, whatever the outcome.
    pub fn output(self) -> Output {
        let _lock = self.lock.then(host_lock);
        let containers = self.view.unwrap_or(containers);
        let before = self.nothing_left.then(containers);
        let mut cmd = self.command();
        let output = match &self.stdin {
            Some(input) => run_with_input(&mut cmd, input),
            None => run(&mut cmd),
        };
        if let Some(before) = before {
            assert_eq!(containers(), before, "c2vm left a container behind");
        }
        if self.nothing_left && self.view.is_none() {
            let leftovers: Vec<String> = listing(Path::new("/dev/shm"))
                .into_iter()
                .filter(|n| n.starts_with("c2vm-"))
                .collect();
            assert!(
                leftovers.is_empty(),
                "staging left in /dev/shm: {leftovers:?}"
            );
        }
        output
    }

    /// Run it; it must succeed.
    pub fn success(self) -> Output {
        let what = format!("convert {} {:?}", self.source, self.args);
        let output = self.output();
        assert!(
            output.status.success(),
            "{what} failed: {}",
            stderr(&output)
        );
        output
    }
}

/// A small root filesystem tarball, `dir/small-rootfs.tar`, for tests of what c2vm does with a
/// disk rather than what boots from it (formats, sizes): the names a conversion needs (a kernel
/// and initramfs in /boot, an /sbin/init), a few MiB of data that compresses little and some
/// that compresses well. It converts in about a second, where the debootstrap tree takes ten.
pub fn small_rootfs(dir: &Path) -> PathBuf {
    // Pseudo-random bytes (xorshift): stand-ins for a compressed kernel and initramfs.
    let noise = |len: usize, mut x: u64| -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let path = dir.join("small-rootfs.tar");
    let mut tar = Tar::new();
    for d in [
        "boot/",
        "etc/",
        "sbin/",
        "usr/",
        "usr/share/",
        "usr/share/doc/",
    ] {
        tar.dir(d);
    }
    tar.file("boot/vmlinuz-6.1.0-0-amd64", &noise(4 * MIB as usize, 1))
        .file("boot/initrd.img-6.1.0-0-amd64", &noise(2 * MIB as usize, 2))
        .entry(
            "sbin/init",
            tar::EntryType::Regular,
            0o755,
            None,
            b"#!/bin/sh\n",
        )
        .file("etc/os-release", b"ID=c2vm-test\nNAME=\"c2vm test\"\n")
        .file(
            "usr/share/doc/words",
            "c2vm small rootfs\n".repeat(64 * 1024).as_bytes(),
        )
        .write(&path);
    path
}

/// `c2vm convert rootfs:<test rootfs> -o disk --password-file pw`, which must succeed.
pub fn convert_rootfs(disk: &Path, pw: &Path) {
    Convert::rootfs(disk).password_file(pw).locked().success();
}

/// Guest shell: the firmware's SecureBoot variable, 1 where Secure Boot is enforced.
pub const SECURE_BOOT_STATE: &str = "od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | awk '{print $NF}'";

/// Guest shell: wait, at most 60 s, for an IPv4 address from DHCP. `systemctl
/// is-system-running --wait` returns before networkd has a lease, and on a slow host the lease
/// comes later still.
pub const WAIT_FOR_DHCP: &str = "for i in $(seq 60); do \
    ip -4 -o addr show scope global dynamic | grep -q . && break; sleep 1; done";

/// A guest script that prints each fact under its name: for each `(name, command)`, one
/// `name=LINE` per line of the command's output (`name=` alone when it printed nothing). Read it
/// back with [`Facts::parse`]: a fact that is missing or not there yet then fails under its own
/// name, instead of shifting every line after it. Commands run in order, so a fact can wait for
/// what it reads (see [`WAIT_FOR_DHCP`]).
pub fn facts_script(facts: &[(&str, &str)]) -> String {
    facts
        .iter()
        .map(|(name, command)| format!("printf '%s\\n' \"$({command})\" | sed 's/^/{name}=/'\n"))
        .collect()
}

/// What a [`facts_script`] printed, by name; a fact of several lines is one value, its lines
/// joined with `\n`. `facts["name"]` fails the test, with all the guest said, if it is missing.
pub struct Facts {
    said: String,
    values: std::collections::BTreeMap<String, String>,
}

impl Facts {
    pub fn parse(said: &str) -> Facts {
        let mut values = std::collections::BTreeMap::<String, String>::new();
        // Trailing blanks (`… | tr '\n' ' '`) are not part of a value.
        let lines = said.lines().map(str::trim_end);
        for (name, value) in lines.filter_map(|l| l.split_once('=')) {
            values
                .entry(name.to_string())
                .and_modify(|v| {
                    v.push('\n');
                    v.push_str(value);
                })
                .or_insert_with(|| value.to_string());
        }
        Facts {
            said: said.to_string(),
            values,
        }
    }
}

impl std::ops::Index<&str> for Facts {
    type Output = str;

    fn index(&self, name: &str) -> &str {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("the guest printed no `{name}=`; it said:\n{}", self.said))
    }
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

/// Copy partition `n` of `disk` to `to` (FAT tools take no offset).
pub fn copy_partition(disk: &Path, n: usize, to: &Path) {
    let json: serde_json::Value =
        serde_json::from_str(&tool("sfdisk", &["--json", disk.to_str().unwrap()])).unwrap();
    let part = &json["partitiontable"]["partitions"][n - 1];
    let (start, size) = (
        part["start"].as_u64().unwrap(),
        part["size"].as_u64().unwrap(),
    );
    tool(
        "dd",
        &[
            &format!("if={}", disk.display()),
            &format!("of={}", to.display()),
            // In bytes, a MiB at a time: 512-byte blocks took 26 s of system time for 2 GiB.
            "bs=1M",
            "iflag=skip_bytes,count_bytes",
            &format!("skip={}", start * 512),
            &format!("count={}", size * 512),
            "conv=sparse",
            "status=none",
        ],
    );
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

/// What a file is, as compared across conversions: `MODE uid:gid CONTENT`, the mode with its
/// type bits in octal (as debugfs shows it), the content a regular file's SHA-256 or a symlink's
/// target.
pub type Listing = std::collections::BTreeMap<String, String>;

/// Every entry of the root filesystem (partition 2) of `disk`, read back with debugfs: modes
/// and owners with `ls -p`, directory by directory, contents from `rdump`.
pub fn root_listing(disk: &Path, work: &Path) -> Listing {
    use sha2::Digest;
    let started = std::time::Instant::now();
    let part = work.join("root.ext4");
    copy_partition(disk, 2, &part);
    let dump = work.join("rdump");
    std::fs::create_dir(&dump).unwrap();
    tool(
        "debugfs",
        &[
            "-R",
            &format!("rdump / {}", dump.display()),
            part.to_str().unwrap(),
        ],
    );
    let mut listing = Listing::new();
    let mut dirs = vec![String::new()];
    while !dirs.is_empty() {
        // One debugfs run per level of the tree.
        let commands: String = dirs.iter().map(|d| format!("ls -p \"/{d}\"\n")).collect();
        let cmd_file = work.join("debugfs.cmds");
        std::fs::write(&cmd_file, commands).unwrap();
        let out = tool(
            "debugfs",
            &["-f", cmd_file.to_str().unwrap(), part.to_str().unwrap()],
        );
        let mut next = Vec::new();
        let mut current = String::new();
        for line in out.lines() {
            if let Some(cmd) = line.strip_prefix("debugfs: ls -p \"/") {
                current = cmd.trim_end_matches('"').to_string();
                continue;
            }
            // /inode/mode/uid/gid/name/size/
            let fields: Vec<&str> = line.split('/').collect();
            if fields.len() < 7 || matches!(fields[5], "." | "..") {
                continue;
            }
            let name = fields[5];
            let path = match current.as_str() {
                "" => name.to_string(),
                dir => format!("{dir}/{name}"),
            };
            if path == "lost+found" {
                continue;
            }
            let mode = fields[2];
            let content = match &mode[..mode.len() - 4] {
                "10" => format!(
                    "{:x}",
                    sha2::Sha256::digest(std::fs::read(dump.join(&path)).unwrap())
                ),
                "12" => std::fs::read_link(dump.join(&path))
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                "4" | "04" => {
                    next.push(path.clone());
                    String::new()
                }
                _ => String::new(),
            };
            listing.insert(
                path,
                format!("{mode:0>6} {}:{} {content}", fields[3], fields[4]),
            );
        }
        dirs = next;
    }
    eprintln!(
        "listing {}'s root took {:.1} s",
        disk.display(),
        started.elapsed().as_secs_f64()
    );
    listing
}

/// The same for a tar stream of a whole root filesystem (`docker export`).
pub fn tar_listing(archive: impl std::io::Read) -> Listing {
    use sha2::Digest;
    let mut listing = Listing::new();
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if path.is_empty() {
            continue;
        }
        let h = entry.header().clone();
        let perm = h.mode().unwrap() & 0o7777;
        let (kind, content) = match h.entry_type() {
            tar::EntryType::Directory => (0o040000, String::new()),
            tar::EntryType::Symlink => (
                0o120000,
                entry
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            ),
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let same = listing[target.trim_start_matches("./")].clone();
                listing.insert(path, same);
                continue;
            }
            tar::EntryType::Char => (0o020000, String::new()),
            tar::EntryType::Block => (0o060000, String::new()),
            tar::EntryType::Fifo => (0o010000, String::new()),
            _ => {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
                (0o100000, format!("{:x}", sha2::Sha256::digest(&data)))
            }
        };
        listing.insert(
            path,
            format!(
                "{:06o} {}:{} {content}",
                kind | perm,
                h.uid().unwrap(),
                h.gid().unwrap()
            ),
        );
    }
    listing
}

/// Where two listings differ, at most `limit` lines.
pub fn listing_diff(a: &Listing, b: &Listing, limit: usize) -> Vec<String> {
    let mut diff = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => diff.push(format!("only in the first: {k} {v}")),
            Some(w) if w != v => diff.push(format!("differs: {k}: {v} vs {w}")),
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            diff.push(format!("only in the second: {k} {v}"));
        }
    }
    diff.truncate(limit);
    diff
}

/// A script of this repository.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Run `scripts/NAME` with `env` set; its stdout, trimmed (panics with its stderr on failure).
pub fn run_script(name: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new(script(name))
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running scripts/{name}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A registry on 127.0.0.1 (scripts/start-registry), stopped when dropped.
pub struct Registry {
    // Declared first, so dropped first: the registry stops before its directory goes.
    _stop: Guard<()>,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Registry {
    /// `mode`: `http`, or `tls` (a test CA, htpasswd user c2vm, password secret-pw).
    pub fn start(mode: &str) -> Registry {
        let dir = scratch();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        tool(
            script("start-registry").to_str().unwrap(),
            &[dir.path().to_str().unwrap(), mode, &port.to_string()],
        );
        let path = dir.path().to_owned();
        let _stop = Guard::on_drop(move || {
            let _ = Command::new(script("start-registry"))
                .arg(path)
                .arg("stop")
                .status();
        });
        Registry { _stop, dir, port }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d").join(self.host())
    }
}

/// What a guest booted from the test rootfs ([`test_rootfs`], converted with `--hostname
/// vm-under-test`) reports: `/` ext4 rw, `/boot` the vfat ESP, setuid kept, our hostname,
/// the hardlink pair and setgid dir from the test tree, and which firmware booted it.
pub fn rootfs_guest_checks() -> String {
    facts_script(&[
        ("root", "findmnt -no FSTYPE,OPTIONS /"),
        ("esp", "findmnt -no FSTYPE /boot"),
        ("passwd_mode", "stat -c %a /usr/bin/passwd"),
        ("hostname", "hostname"),
        ("link_a", "stat -c '%h %i' /opt/c2vm-test/link-a"),
        ("link_b", "stat -c '%h %i' /opt/c2vm-test/link-b"),
        ("setgid_dir", "stat -c '%a %u:%g' /opt/c2vm-test/setgid-dir"),
        (
            "firmware",
            "test -d /sys/firmware/efi && echo uefi || echo bios",
        ),
        ("machine_id_bytes", "cat /etc/machine-id | wc -c"),
    ])
}

pub fn assert_rootfs_guest(out: &str, firmware: &str, hostname: &str) {
    let facts = Facts::parse(out);
    let root = &facts["root"];
    assert!(
        root.starts_with("ext4") && root.contains("rw"),
        "root: {root}"
    );
    assert_eq!(facts["esp"].trim(), "vfat", "ESP");
    assert_eq!(facts["passwd_mode"].trim(), "4755", "passwd mode");
    assert_eq!(facts["hostname"].trim(), hostname);
    let a: Vec<&str> = facts["link_a"].split_whitespace().collect();
    let b: Vec<&str> = facts["link_b"].split_whitespace().collect();
    assert_eq!((a[0], b[0]), ("2", "2"), "hardlink count");
    assert_eq!(a[1], b[1], "hardlinks share an inode");
    assert_eq!(facts["setgid_dir"].trim(), "2775 1000:1000");
    assert_eq!(facts["firmware"].trim(), firmware);
    assert_eq!(
        facts["machine_id_bytes"].trim(),
        "33",
        "systemd wrote a fresh machine-id"
    );
}

/// Every process's command line now (`ps -eo args`, read from /proc).
pub fn command_lines() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if !cmdline.is_empty() {
                found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
            }
        }
    }
    found
}

/// What [`run_watching`] saw while its command ran.
pub struct Watched {
    pub output: Output,
    /// Command lines of QEMU processes, each seen at least once.
    pub qemu: std::collections::BTreeSet<String>,
    /// Command lines of any process that held one of the secrets.
    pub leaks: std::collections::BTreeSet<String>,
}

/// Run `cmd` to its end while looking at every process's command line every 200 ms: what QEMU's
/// were, and which held one of `secrets` (values given at boot must reach no argv).
pub fn run_watching(cmd: &mut Command, secrets: &[&str]) -> Watched {
    let started = std::time::Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a command");
    let waiter = std::thread::spawn(move || child.wait_with_output().expect("waiting for it"));
    let (mut qemu, mut leaks) = (Default::default(), Default::default());
    let look = |qemu: &mut std::collections::BTreeSet<String>,
                leaks: &mut std::collections::BTreeSet<String>| {
        for line in command_lines() {
            if secrets.iter().any(|s| line.contains(s)) {
                leaks.insert(line.clone());
            }
            if line.starts_with("qemu-system-") {
                qemu.insert(line);
            }
        }
    };
    while !waiter.is_finished() {
        look(&mut qemu, &mut leaks);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let output = waiter.join().expect("the waiting thread");
    eprintln!(
        "$ {cmd:?}\n--- stderr ---\n{}--- took {:.1} s ---",
        String::from_utf8_lossy(&output.stderr),
        started.elapsed().as_secs_f64()
    );
    Watched {
        output,
        qemu,
        leaks,
    }
}

/// A real ed25519 key pair for ssh into a guest: (private key, public key file).
pub fn ssh_key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(name);
    tool(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            name,
            "-f",
            key.to_str().unwrap(),
        ],
    );
    (key.clone(), dir.join(format!("{name}.pub")))
}

/// `ssh -i key -p port root@127.0.0.1 command`, retried until it works or `limit` passes:
/// its stdout, or None.
pub fn ssh_until(
    key: &Path,
    port: u16,
    command: &str,
    limit: std::time::Duration,
) -> Option<String> {
    ssh_until_as("root", key, port, command, limit)
}

/// [`ssh_until`] as `user`.
pub fn ssh_until_as(
    user: &str,
    key: &Path,
    port: u16,
    command: &str,
    limit: std::time::Duration,
) -> Option<String> {
    let target = format!("{user}@127.0.0.1");
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        let out = Command::new("ssh")
            .args(["-i", key.to_str().unwrap(), "-p", &port.to_string()])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "LogLevel=ERROR",
                &target,
                command,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("running ssh");
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    None
}

/// A `FROM scratch` image: static busybox and its applets, then `tail` (more Dockerfile lines).
pub fn scratch_image(dir: &Path, tag: &str, tail: &str, files: &[(&str, &str)]) {
    let dockerfile = format!(
        "FROM debian:latest AS build\n\
         RUN apt-get update && apt-get install -y --no-install-recommends busybox-static && \\\n\
             mkdir -p /out/bin /out/www && cp /bin/busybox /out/bin/busybox && \\\n\
             for a in sh httpd id cat ip mkdir printf pwd sleep ls touch head tr stat; do ln -s busybox /out/bin/$a; done\n\
         FROM scratch\n\
         COPY --from=build /out/ /\n\
         ENV PATH=/bin\n\
         {tail}\n"
    );
    let ctx = dir.join(tag.replace(['/', ':'], "-"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for (name, text) in files {
        std::fs::write(ctx.join(name), text).unwrap();
    }
    let _lock = host_lock(); // builds make containers
    tool("docker", &["build", "-q", "-t", tag, ctx.to_str().unwrap()]);
}

/// The directory of the SBOM and provenance checkers' environment: C2VM_SBOM_TOOLS (as
/// scripts/test sets it), else scripts/install-sbom-tools' (made if needed).
pub fn sbom_tools() -> PathBuf {
    match std::env::var_os("C2VM_SBOM_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            stdout(&run(&mut Command::new(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-sbom-tools"),
            )))
            .trim(),
        ),
    }
}

/// An SBOM c2vm wrote, checked by its format's own validator (`pyspdxtools`, or
/// cyclonedx-python-lib's strict JSON schema validation; scripts/install-sbom-tools, whose
/// directory scripts/test passes as C2VM_SBOM_TOOLS), and parsed.
pub fn validated_sbom(path: &Path) -> serde_json::Value {
    let tools = sbom_tools();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let out = if name.ends_with(".spdx.json") {
        run(Command::new(tools.join("pyspdxtools")).arg("-i").arg(path))
    } else {
        let script = "import sys\n\
            from cyclonedx.validation.json import JsonStrictValidator\n\
            from cyclonedx.schema import SchemaVersion\n\
            error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
            print(error or '')\n\
            sys.exit(1 if error else 0)\n";
        run(Command::new(tools.join("python3"))
            .args(["-c", script])
            .arg(path))
    };
    assert!(
        out.status.success(),
        "{name} does not validate: {}{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The packages of a guest's database an SBOM lists, as `name version` lines, sorted: those
/// with a package URL of `kind` (`deb`, `apk`), from SPDX's packages or CycloneDX's components.
pub fn sbom_packages(sbom: &serde_json::Value, kind: &str) -> Vec<String> {
    let prefix = format!("pkg:{kind}/");
    let items = sbom["packages"]
        .as_array()
        .or_else(|| sbom["components"].as_array())
        .cloned()
        .unwrap_or_default();
    let mut out: Vec<String> = items
        .iter()
        .filter(|p| {
            let purl = p["purl"].as_str().map(str::to_string).or_else(|| {
                p["externalRefs"].as_array().and_then(|refs| {
                    refs.iter()
                        .find(|r| r["referenceType"] == "purl")
                        .and_then(|r| r["referenceLocator"].as_str().map(str::to_string))
                })
            });
            purl.is_some_and(|u| u.starts_with(&prefix))
        })
        .map(|p| {
            let version = p["versionInfo"].as_str().or(p["version"].as_str());
            format!("{} {}", p["name"].as_str().unwrap(), version.unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The first non-empty answer of `http://127.0.0.1:PORT/` (curl), polled until `timeout`; empty
/// if none came.
pub fn first_page(port: u16, timeout: std::time::Duration) -> String {
    let started = std::time::Instant::now();
    let url = format!("http://127.0.0.1:{port}/");
    while started.elapsed() < timeout {
        if let Ok(o) = Command::new("curl").args(["-s", "-m", "2", &url]).output() {
            let page = String::from_utf8_lossy(&o.stdout).into_owned();
            if !page.is_empty() {
                return page;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    String::new()
}

/// `xorriso -report_el_torito plain` of an ISO: its El Torito boot images.
pub fn el_torito(iso: &Path) -> String {
    tool(
        "xorriso",
        &[
            "-indev",
            iso.to_str().unwrap(),
            "-report_el_torito",
            "plain",
        ],
    )
}
