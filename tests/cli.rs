//! The fast tier: usage errors through the real binary, runnable anywhere `cargo test` runs (an
//! ordinary user, no Docker daemon, no QEMU, no host tools, no network). Each case checks the exit
//! code (2 for what clap refuses, 1 for what c2vm refuses), the message that says what to do, no
//! panic, and that nothing was written. `convert` checks its arguments in the order of
//! `DiskPlan::from_args` (output format, output path, sizes, hostname, password, SSH key, work
//! dir, then host tools) before it looks at the source or asks for root, so the cases here pick
//! errors found before the host-tool check, or accept the errors that come first on this host.
mod common;
use common::*;
use std::path::Path;

/// Run c2vm with `args` in `dir`, require exit code 1 and one `c2vm: error:` line; its stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    fails_with_path(dir, args, None)
}

fn fails_with_path(dir: &Path, args: &[&str], path: Option<&Path>) -> String {
    let before = listing(dir);
    let mut cmd = c2vm();
    cmd.current_dir(dir).args(args);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let o = run(&mut cmd);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    the_error(&err);
    assert_eq!(listing(dir), before, "{args:?} wrote something");
    err
}

/// Run c2vm with `args`, require clap's usage-error exit code 2; its stderr.
fn usage_error(args: &[&str]) -> String {
    let o = run(c2vm().args(args));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    err
}

#[test]
fn help_and_version_exit_0() {
    let o = run(c2vm().arg("--version"));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o).trim(),
        format!("c2vm {}", env!("CARGO_PKG_VERSION"))
    );
    let o = run(c2vm().arg("--help"));
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    for word in [
        "convert",
        "build",
        "run",
        "Exit codes: 0 success, 1 failure, 2 usage error",
    ] {
        assert!(help.contains(word), "{word} missing from --help:\n{help}");
    }
}

#[test]
fn clap_usage_errors_exit_2_and_say_what_is_wrong() {
    assert!(usage_error(&[]).contains("Usage: c2vm"));
    let err = usage_error(&["convert"]);
    assert!(
        err.contains("required arguments were not provided"),
        "{err}"
    );
    assert!(err.contains("--output"), "{err}");
    let err = usage_error(&["--no-such-flag"]);
    assert!(
        err.contains("unexpected argument '--no-such-flag'"),
        "{err}"
    );
    let err = usage_error(&["convert", "x", "-o", "x.img", "--bootloader", "lilo"]);
    assert!(err.contains("invalid value 'lilo'"), "{err}");
    let err = usage_error(&["convert", "x", "-o", "x.img", "--sbom-format", "spdx"]);
    assert!(err.contains("--sbom <FILE>"), "{err}");
    let err = usage_error(&["convert", "x", "-o", "x.img", "--format", "udf"]);
    assert!(err.contains("invalid value 'udf'"), "{err}");
    let err = usage_error(&["convert", "x", "-o", "x.img", "--pull", "sometimes"]);
    assert!(err.contains("invalid value 'sometimes'"), "{err}");
    let err = usage_error(&["convert", "x", "-o", "x.img", "--app", "--no-app"]);
    assert!(
        err.contains("'--app' cannot be used with '--no-app'"),
        "{err}"
    );
    let err = usage_error(&[
        "convert",
        "x",
        "-o",
        "x.img",
        "--password-file",
        "pw",
        "--password-stdin",
    ]);
    assert!(
        err.contains("cannot be used with '--password-stdin'"),
        "{err}"
    );
    let err = usage_error(&["convert", "x", "-o", "x.img", "--dns", "not-an-ip"]);
    assert!(err.contains("invalid value 'not-an-ip'"), "{err}");
    // `--exec` alone goes through the guest's agent; `-d` is not a scripted run.
    let err = usage_error(&["run", "-d", "disk.img", "--exec", "true"]);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = usage_error(&["run", "disk.img", "--name", "web"]);
    assert!(
        err.contains("required arguments were not provided"),
        "{err}"
    );
    assert!(err.contains("--detach"), "{err}");
    let err = usage_error(&["exec", "web"]);
    assert!(
        err.contains("required arguments were not provided"),
        "{err}"
    );
    let err = usage_error(&["wait", "web"]);
    assert!(err.contains("--unit"), "{err}");
    let err = usage_error(&["run", "disk.img", "--memory", "lots"]);
    assert!(err.contains("invalid value 'lots'"), "{err}");
    let err = usage_error(&["run", "disk.img", "--firmware", "coreboot"]);
    assert!(err.contains("invalid value 'coreboot'"), "{err}");
    let err = usage_error(&["build"]);
    assert!(
        err.contains("required arguments were not provided"),
        "{err}"
    );
}

#[test]
fn convert_refuses_bad_arguments_before_any_work() {
    let dir = scratch();
    let d = dir.path();
    // Never read: every case below fails before the source's contents are looked at (only
    // that it is there is checked before the secrets).
    std::fs::write(d.join("rootfs.tar"), b"").unwrap();
    let src = "rootfs:rootfs.tar";

    let err = fails(d, &["convert", src, "-o", "disk.txt"]);
    assert!(
        err.contains("cannot tell the disk format from `disk.txt`") && err.contains(".qcow2"),
        "{err}"
    );
    let err = fails(d, &["convert", src, "-o", "disk"]);
    assert!(
        err.contains("cannot tell the disk format from `disk`; use an extension"),
        "{err}"
    );

    // An existing output is kept without --force; a directory is never the output.
    std::fs::write(d.join("precious.img"), "precious").unwrap();
    let err = fails(d, &["convert", src, "-o", "precious.img"]);
    assert!(
        err.contains("precious.img already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("precious.img")).unwrap(),
        "precious"
    );
    std::fs::create_dir(d.join("adir.img")).unwrap();
    let err = fails(d, &["convert", src, "-o", "adir.img", "--force"]);
    assert!(
        err.contains("adir.img is a directory; give a file name for the disk"),
        "{err}"
    );
    let err = fails(d, &["convert", src, "-o", "nope/x.img"]);
    assert!(
        err.contains("the output directory nope does not exist"),
        "{err}"
    );

    // --sbom: its format from its name or --sbom-format; an existing one kept without --force.
    let err = fails(d, &["convert", src, "-o", "x.img", "--sbom", "x.json"]);
    assert!(
        err.contains("cannot tell the SBOM format from `x.json`")
            && err.contains("--sbom-format spdx|cyclonedx"),
        "{err}"
    );
    let err = fails(
        d,
        &["convert", src, "-o", "x.img", "--sbom", "precious.img"],
    );
    assert!(err.contains("cannot tell the SBOM format"), "{err}");
    std::fs::write(d.join("old.spdx.json"), "{}").unwrap();
    let err = fails(
        d,
        &["convert", src, "-o", "x.img", "--sbom", "old.spdx.json"],
    );
    assert!(err.contains("old.spdx.json already exists"), "{err}");
    let err = fails(
        d,
        &[
            "convert",
            src,
            "-o",
            "x.img",
            "--sbom",
            "x.img",
            "--sbom-format",
            "spdx",
        ],
    );
    assert!(err.contains("is the disk's own name"), "{err}");

    // --provenance: not the disk's or the SBOM's name, not an existing file; --sign-key needs
    // it, and a key c2vm does not sign with is refused in one line, nothing written.
    let err = fails(d, &["convert", src, "-o", "x.img", "--provenance", "x.img"]);
    assert!(err.contains("is the disk's own name"), "{err}");
    let both = ["--sbom", "s.spdx.json", "--provenance", "s.spdx.json"];
    let err = fails(d, &[&["convert", src, "-o", "x.img"][..], &both].concat());
    assert!(err.contains("is the SBOM's name too"), "{err}");
    let err = fails(
        d,
        &[
            "convert",
            src,
            "-o",
            "x.img",
            "--provenance",
            "old.spdx.json",
        ],
    );
    assert!(err.contains("old.spdx.json already exists"), "{err}");
    let err = usage_error(&["convert", "x", "-o", "x.img", "--sign-key", "k.pem"]);
    assert!(err.contains("--provenance <FILE>"), "{err}");
    let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIKEYTEXT\n-----END EC PRIVATE KEY-----\n";
    std::fs::write(d.join("sec1.pem"), sec1).unwrap();
    let signed = ["--provenance", "p.json", "--sign-key", "sec1.pem"];
    let err = fails(d, &[&["convert", src, "-o", "x.img"][..], &signed].concat());
    assert!(
        err.contains("--sign-key sec1.pem: a SEC1 EC key")
            && err.contains("openssl pkcs8 -topk8 -nocrypt")
            && !err.contains("KEYTEXT"),
        "{err}"
    );
    assert!(!d.join("p.json").exists() && !d.join("x.img").exists());

    // Sizes.
    let err = fails(d, &["convert", src, "-o", "x.img", "--size", "lots"]);
    assert!(
        err.contains("--size takes `auto` or a size") && err.contains("`lots` is not a size"),
        "{err}"
    );
    let err = fails(d, &["convert", src, "-o", "x.img", "--size", "4X"]);
    assert!(err.contains("unknown unit `X`"), "{err}");
    let err = fails(
        d,
        &["convert", src, "-o", "x.img", "--size", "99999999999T"],
    );
    assert!(
        err.contains("--size takes `auto` or a size")
            && err.contains("`99999999999T` is too large"),
        "{err}"
    );
    let err = fails(d, &["convert", src, "-o", "x.img", "--esp-size", "10M"]);
    assert!(err.contains("--esp-size must be"), "{err}");
    assert!(err.contains("at least 64M"), "{err}");
    let err = fails(d, &["convert", src, "-o", "x.img", "--esp-size", "lots"]);
    assert!(err.contains("--esp-size: `lots` is not a size"), "{err}");

    let err = fails(
        d,
        &[
            "convert",
            src,
            "-o",
            "x.img",
            "--hostname",
            "no_underscores",
        ],
    );
    assert!(
        err.contains("`no_underscores` is not a valid hostname"),
        "{err}"
    );

    // Secrets and keys: named, never echoed.
    let err = fails(
        d,
        &[
            "convert",
            src,
            "-o",
            "x.img",
            "--password-file",
            "missing-pw",
        ],
    );
    assert!(
        err.contains("opening the password file missing-pw"),
        "{err}"
    );
    let empty = scratch();
    std::fs::write(empty.path().join("pw"), "\n").unwrap();
    let pw = empty.path().join("pw");
    let err = fails(
        d,
        &[
            "convert",
            src,
            "-o",
            "x.img",
            "--password-file",
            pw.to_str().unwrap(),
        ],
    );
    assert!(err.contains("the password is empty"), "{err}");
    // An empty LUKS passphrase, at convert and at run: one line that names the option.
    let err = fails(
        d,
        &[
            "convert",
            src,
            "-o",
            "x.img",
            "--luks-passphrase-file",
            pw.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("--luks-passphrase-file") && err.contains("the passphrase is empty"),
        "{err}"
    );
    std::fs::write(empty.path().join("disk.img"), "").unwrap();
    let err = fails(
        empty.path(),
        &[
            "run",
            "disk.img",
            "--luks-passphrase-file",
            pw.to_str().unwrap(),
        ],
    );
    assert!(err.contains("the passphrase is empty"), "{err}");
    let err = fails(
        d,
        &["convert", src, "-o", "x.img", "--ssh-key", "missing.pub"],
    );
    assert!(
        err.contains("reading the SSH public key missing.pub"),
        "{err}"
    );
    let key = empty.path().join("id_ed25519");
    std::fs::write(
        &key,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nc2vm-not-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = fails(
        d,
        &[
            "convert",
            src,
            "-o",
            "x.img",
            "--ssh-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(err.contains("is not an SSH public key"), "{err}");
    assert!(!err.contains("c2vm-not-a-real-key"), "{err}");

    let err = fails(
        d,
        &["convert", src, "-o", "x.img", "--workdir", "no-such-dir"],
    );
    assert!(
        err.contains("work directory no-such-dir does not exist"),
        "{err}"
    );

    // `build` checks its disk options the same way, before it talks to a daemon.
    let err = fails(d, &["build", ".", "-o", "disk.txt"]);
    assert!(
        err.contains("cannot tell the disk format from `disk.txt`"),
        "{err}"
    );
}

#[test]
fn convert_without_host_tools_names_the_package_to_install() {
    let dir = scratch();
    let empty_path = subdir(dir.path(), "empty-bin");
    let work = subdir(dir.path(), "work");
    // A tarball that is there: a missing one is said before the host is looked at.
    std::fs::write(work.join("rootfs.tar"), b"").unwrap();
    for args in [
        &["convert", "rootfs:rootfs.tar", "-o", "x.img"][..],
        &["convert", "debian:latest", "-o", "x.qcow2"][..],
        &["build", ".", "-o", "x.img"][..],
    ] {
        let err = fails_with_path(&work, args, Some(&empty_path));
        // Which tool is checked first is c2vm's business; it is one of them, with its package.
        assert!(
            [
                ("mke2fs", "e2fsprogs"),
                ("syslinux", "syslinux"),
                ("mcopy", "mtools"),
                ("qemu-img", "qemu-utils"),
            ]
            .iter()
            .any(|(tool, package)| err.contains(&format!(
                "`{tool}` was not found on PATH; install it with `apt-get install {package}`"
            ))),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn convert_source_errors_come_before_the_host_is_probed() {
    // The source and the options are checked before any host tool is looked for, so these
    // errors are the same on every host, with e2fsprogs or without it, as root or not.
    let dir = scratch();
    let d = dir.path();
    let empty_path = subdir(d, "empty-bin");
    for path in [None, Some(empty_path.as_path())] {
        let err = fails_with_path(d, &["convert", "rootfs:", "-o", "x.img"], path);
        assert!(err.contains("`rootfs:` needs a path"), "{err}");
        let err = fails_with_path(d, &["convert", "not an image", "-o", "x.img"], path);
        assert!(
            err.contains("`not an image` is not an image reference"),
            "{err}"
        );
        let err = fails_with_path(d, &["convert", "rootfs:missing.tar", "-o", "x.img"], path);
        assert!(
            err.contains("opening the root filesystem tarball missing.tar"),
            "{err}"
        );
        let args = [
            "convert",
            "rootfs:r.tar",
            "-o",
            "x.img",
            "--stop-timeout",
            "5",
        ];
        let err = fails_with_path(d, &args, path);
        assert!(err.contains("drop --stop-timeout"), "{err}");
    }
}

#[test]
fn the_mke2fs_probe_writes_in_the_workdir_not_tmpdir() {
    // With --workdir, nothing goes to $TMPDIR: the probe of how mke2fs takes files included.
    // The conversion then fails on the tarball, past the probe.
    let dir = scratch();
    let d = dir.path();
    std::fs::create_dir(d.join("work")).unwrap();
    std::fs::write(d.join("bad.tar"), b"not a tar archive").unwrap();
    let o = run(c2vm()
        .current_dir(d)
        .env("TMPDIR", d.join("no-such-tmp"))
        .args([
            "convert",
            "rootfs:bad.tar",
            "-o",
            "x.img",
            "--workdir",
            "work",
        ]));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("no-such-tmp"), "{err}");
    assert!(err.contains("bad.tar is corrupt or truncated"), "{err}");
}

#[test]
fn run_refuses_bad_arguments_before_starting_qemu() {
    let dir = scratch();
    let d = dir.path();
    let err = fails(d, &["run", "missing.img"]);
    assert!(
        err.contains("missing.img does not exist; make one with `c2vm convert`"),
        "{err}"
    );
    // Any file will do: these are refused before QEMU or qemu-img look at it.
    std::fs::write(d.join("disk.img"), b"").unwrap();
    let err = fails(
        d,
        &[
            "run", "disk.img", "--login", "root:pw", "--exec", "true", "--expect", "login:",
        ],
    );
    assert!(
        err.contains("--expect and --exec do not go together"),
        "{err}"
    );
    let err = fails(d, &["run", "disk.img", "--login", "root", "--exec", "true"]);
    assert!(
        err.contains("--login root needs a password") && err.contains("--password-file"),
        "{err}"
    );
    let err = fails(d, &["run", "disk.img", "--login", "root:pw"]);
    assert!(err.contains("--login needs --exec"), "{err}");
    let err = fails(
        d,
        &[
            "run",
            "disk.img",
            "--login",
            "root",
            "--password-file",
            "missing-pw",
            "--exec",
            "true",
        ],
    );
    assert!(
        err.contains("opening the password file missing-pw"),
        "{err}"
    );
    // Settings for the boot are checked before QEMU starts, and no value is repeated.
    std::fs::write(d.join("plain-yaml"), "users: [s3cr3t]\n").unwrap();
    for (args, says) in [
        (
            &["--credential", "s3cr3t"][..],
            "--credential expects NAME=VALUE",
        ),
        (
            &["--credential", "bad/name=s3cr3t"],
            "`bad/name` is not a credential name",
        ),
        (
            &["--credential", "system.hostname=s3cr3t", "--hostname", "b"],
            "the credential system.hostname is given twice",
        ),
        (
            &["--credential-file", "c2vm.x=missing-file"],
            "--credential-file c2vm.x: reading missing-file",
        ),
        (
            &["--hostname", "not_a_name"],
            "`not_a_name` is not a valid hostname",
        ),
        (&["-e", "=s3cr3t"], "-e: `` is not a variable name"),
        (
            &["--cloud-init", "plain-yaml"],
            "cloud-init ignores user-data whose first line is not `#cloud-config`",
        ),
        (
            &["--cloud-init", "missing-ud"],
            "--cloud-init: reading missing-ud",
        ),
    ] {
        let mut all = vec!["run", "disk.img"];
        all.extend(args);
        let err = fails(d, &all);
        assert!(err.contains(says) && !err.contains("s3cr3t"), "{err}");
    }
    // Secure Boot firmware needs SMM (q35) and the disk's own loaders.
    for (extra, says) in [
        ("--machine=pc", "--firmware uefi-secure needs --machine q35"),
        (
            "--direct-kernel",
            "skip the loaders that --firmware uefi-secure is there to check",
        ),
    ] {
        let err = fails(d, &["run", "disk.img", "--firmware=uefi-secure", extra]);
        assert!(err.contains(says), "{err}");
    }
    // No QEMU on PATH: the disk says which QEMU it needs (an amd64 disk: its GPT's root
    // partition type), and that one is missing. qemu-img, which reads the disk's format, is
    // there where this machine has it; where not, it is the one named.
    let table = d.join("table.img");
    std::fs::write(&table, amd64_partition_table()).unwrap();
    let path = subdir(d, "bin");
    let qemu_img = ["/usr/bin/qemu-img", "/usr/local/bin/qemu-img"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if let Some(qemu_img) = qemu_img {
        std::os::unix::fs::symlink(qemu_img, path.join("qemu-img")).unwrap();
    }
    let err = fails_with_path(d, &["run", "table.img"], Some(&path));
    let (tool, package) = match qemu_img {
        Some(_) => ("qemu-system-x86_64", "qemu-system-x86"),
        None => ("qemu-img", "qemu-utils"),
    };
    assert!(
        err.contains(&format!("`{tool}` was not found on PATH"))
            && err.contains(&format!("apt-get install {package}")),
        "{err}"
    );
}

/// A protective MBR and a primary GPT with one entry, typed "Linux root x86-64".
fn amd64_partition_table() -> Vec<u8> {
    let mut disk = vec![0u8; 34 * 512];
    disk[510] = 0x55;
    disk[511] = 0xAA;
    let header = &mut disk[512..1024];
    header[..8].copy_from_slice(b"EFI PART");
    header[72..80].copy_from_slice(&2u64.to_le_bytes()); // entries at LBA 2
    header[80..84].copy_from_slice(&128u32.to_le_bytes());
    header[84..88].copy_from_slice(&128u32.to_le_bytes());
    // 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, mixed-endian as GPT stores it.
    disk[1024..1040].copy_from_slice(&[
        0xE3, 0xBC, 0x68, 0x4F, 0xCD, 0xE8, 0xB1, 0x4D, 0x96, 0xE7, 0xFB, 0xCA, 0xF9, 0x84, 0xB7,
        0x09,
    ]);
    disk
}

#[test]
fn convert_help_groups_its_options() {
    let o = run(c2vm().args(["convert", "--help"]));
    let help = String::from_utf8_lossy(&o.stdout);
    let headings: Vec<&str> = help
        .lines()
        .filter(|l| l.ends_with(':') && !l.starts_with(' '))
        .collect();
    assert_eq!(
        headings,
        [
            "Arguments:",
            "Options:",
            "Output:",
            "Disk:",
            "Boot:",
            "Kernel and init:",
            "Guest settings:",
            "Encryption:",
            "Image source:"
        ],
        "{help}"
    );
}

#[test]
fn commands_on_a_vm_that_does_not_exist_fail_in_one_line() {
    let dir = scratch();
    let d = dir.path();
    let state = subdir(d, "state");
    for args in [
        &["exec", "nosuch", "--", "true"][..],
        &["stop", "nosuch"],
        &["kill", "nosuch"],
        &["logs", "nosuch"],
        &["wait", "nosuch", "--file", "/x"],
        &["cp", "nosuch:/etc/hostname", "x"],
    ] {
        let o = run(c2vm()
            .current_dir(d)
            .env("XDG_RUNTIME_DIR", &state)
            .args(args));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            the_error(&err),
            "c2vm: error: no VM named nosuch; `c2vm ps` lists them, `c2vm run -d --name nosuch DISK` starts one",
            "{args:?}"
        );
    }
    let o = run(c2vm()
        .env("XDG_RUNTIME_DIR", &state)
        .args(["exec", "../x", "--", "true"]));
    assert!(
        stderr(&o).contains("`../x` is not a VM name"),
        "{}",
        stderr(&o)
    );
    let o = run(c2vm().env("XDG_RUNTIME_DIR", &state).args(["ps"]));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
}

#[test]
fn live_media_refuse_what_needs_a_writable_disk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (args, said) in [
        (
            &["convert", "rootfs:x.tar", "-o", "a.iso", "--size", "4G"][..],
            "--size sets a disk's size; an ISO's root is read-only",
        ),
        (
            &[
                "convert",
                "rootfs:x.tar",
                "-o",
                "a.iso",
                "--esp-size",
                "512M",
            ][..],
            "--esp-size sets a disk's EFI partition",
        ),
        (
            &[
                "convert",
                "rootfs:x.tar",
                "-o",
                "a.iso",
                "--luks-passphrase-file",
                "p",
            ][..],
            "an encrypted root needs a writable disk",
        ),
        (
            &[
                "convert",
                "rootfs:x.tar",
                "--format",
                "pxe",
                "-o",
                "set",
                "--sbom",
                "s.json",
            ][..],
            "a network boot set is a directory",
        ),
        (
            &[
                "convert",
                "rootfs:x.tar",
                "-o",
                "a.iso",
                "--containerdisk",
                "oci:cd",
            ][..],
            "--containerdisk wraps a qcow2 or raw disk",
        ),
        (
            &[
                "convert",
                "rootfs:x.tar",
                "-o",
                "a.iso",
                "--bootloader",
                "grub",
            ][..],
            "an ISO boots GRUB on BIOS and systemd-boot",
        ),
    ] {
        let err = fails(d, args);
        assert!(the_error(&err).contains(said), "{args:?}: {err}");
    }
    // A set's directory is replaced only with --force, and only if it holds a set.
    std::fs::create_dir(d.join("set")).unwrap();
    std::fs::write(d.join("set/notes.txt"), "mine").unwrap();
    let err = fails(
        d,
        &["convert", "rootfs:x.tar", "--format", "pxe", "-o", "set"],
    );
    assert!(
        err.contains("set already exists; use --force to replace it"),
        "{err}"
    );
    let err = fails(
        d,
        &[
            "convert",
            "rootfs:x.tar",
            "--format",
            "pxe",
            "-o",
            "set",
            "--force",
        ],
    );
    assert!(
        err.contains("is not a network boot set c2vm wrote"),
        "{err}"
    );

    // `run`: an ISO is read-only; --media is for ISOs; --netboot takes a set.
    let mut iso = vec![0u8; 17 * 2048];
    iso[16 * 2048 + 1..16 * 2048 + 6].copy_from_slice(b"CD001");
    std::fs::write(d.join("a.iso"), &iso).unwrap();
    std::fs::write(d.join("disk.img"), vec![0u8; 1 << 20]).unwrap();
    for (args, said) in [
        (
            &["run", "a.iso", "--persist"][..],
            "is an ISO, read-only by design",
        ),
        (
            &["run", "disk.img", "--media", "usb"][..],
            "--media applies to an ISO",
        ),
        (
            &["run", "--netboot", "set"][..],
            "is not a network boot set",
        ),
    ] {
        let err = fails(d, args);
        assert!(the_error(&err).contains(said), "{args:?}: {err}");
    }
}

#[test]
fn a_missing_xorriso_is_named_with_its_package() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // Everything but xorriso: tar2sqfs (found first) as a stand-in; no mke2fs, which a live
    // medium does not need.
    let stand_in = bin.join("tar2sqfs");
    std::fs::write(&stand_in, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        &stand_in,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(dir.path().join("x.tar"), [0u8; 1024]).unwrap();
    let err = fails_with_path(
        dir.path(),
        &["convert", "rootfs:x.tar", "-o", "a.iso"],
        Some(&bin),
    );
    assert!(
        the_error(&err)
            .contains("`xorriso` was not found on PATH; install it with `apt-get install xorriso`"),
        "{err}"
    );
}
