//! The one-pass conversion (the image's tar stream edited into `mke2fs -d -`): what it keeps of
//! every file, read back with debugfs, on both paths (the stream as an ordinary user, the
//! staging fallback as root with Debian 12's own mke2fs); reproducible disks; and the fallback's
//! one line. debian:latest booting from a non-root conversion is in tests/docker_source.rs.
mod common;
use common::*;
use std::path::{Path, PathBuf};

/// Debian 12's mke2fs 1.47.0, which reads no tar (scripts/fetch-old-mke2fs, cached).
fn old_mke2fs_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("C2VM_TEST_OLD_MKE2FS") {
        return PathBuf::from(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-old-mke2fs");
    PathBuf::from(tool(script.to_str().unwrap(), &[]).trim())
}

/// PATH with the old mke2fs first.
fn path_with_old_mke2fs() -> String {
    format!(
        "{}:{}",
        old_mke2fs_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The test root filesystem with entries for every property appended: owners, setgid and
/// sticky modes, an exact mtime, an empty file, a hardlink pair and a socket (left out).
fn rootfs_with_properties(dir: &Path) -> PathBuf {
    let mut t = Tar::new().owner(1234, 5678).mtime(1_650_000_000);
    use tar::EntryType::{Directory, Regular};
    // A socket in a tar: the mode's file type says so. No filesystem keeps one from an archive.
    for (name, kind, mode, data) in [
        ("opt/props/", Directory, 0o755, &b""[..]),
        ("opt/props/sticky/", Directory, 0o1777, b""),
        ("opt/props/setgid", Regular, 0o2755, b"x\n"),
        ("opt/props/empty", Regular, 0o600, b""),
        ("opt/props/hard1", Regular, 0o644, b"shared\n"),
        ("opt/props/sock", Regular, 0o140755, b""),
    ] {
        t.entry(name, kind, mode, None, data);
    }
    t.hardlink("opt/props/hard2", "opt/props/hard1");
    let combined = test_rootfs_plus(dir, &t.bytes());
    std::fs::set_permissions(
        &combined,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    combined
}

/// Everything a user would check in the root filesystem of `disk`, read back with debugfs.
fn assert_properties(disk: &Path, log: &str) {
    let root = format!("{}?offset={}", disk.display(), partition_offset(disk, 2));
    tool("e2fsck", &["-fn", &root]);
    let stat = |path: &str| tool("debugfs", &["-R", &format!("stat {path}"), &root]);
    let setgid = stat("/opt/props/setgid");
    assert!(setgid.contains("Mode:  02755"), "{setgid}");
    assert!(
        setgid.contains("User:  1234") && setgid.contains("Group:  5678"),
        "{setgid}"
    );
    assert!(
        setgid.contains(&format!("mtime: 0x{:08x}", 1_650_000_000u32)),
        "{setgid}"
    );
    assert!(stat("/opt/props/sticky").contains("Mode:  01777"));
    assert!(stat("/usr/bin/passwd").contains("Mode:  04755"));
    let empty = stat("/opt/props/empty");
    assert!(
        empty.contains("Size: 0") && empty.contains("Type: regular"),
        "{empty}"
    );
    let inode = |s: &str| {
        s.split_whitespace()
            .skip_while(|w| *w != "Inode:")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    let (h1, h2) = (stat("/opt/props/hard1"), stat("/opt/props/hard2"));
    assert!(h1.contains("Links: 2"), "{h1}");
    assert_eq!(inode(&h1), inode(&h2), "a hardlink pair is one inode");
    assert_eq!(
        tool("debugfs", &["-R", "cat /opt/props/hard2", &root]),
        "shared\n"
    );
    let listing = tool("debugfs", &["-R", "ls /opt/props", &root]);
    assert!(!listing.contains("sock"), "{listing}");
    assert!(
        log.contains("socket"),
        "the socket is left out with a note: {log}"
    );
    let caps = tool("debugfs", &["-R", "ea_list /opt/c2vm-test/cap-file", &root]);
    assert!(
        caps.contains("security.capability (20) = 01 00 00 02 00 20 00 00"),
        "{caps}"
    );
    assert!(caps.contains("user.c2vm (5) = \"hello\""), "{caps}");
    assert!(stat("/opt/c2vm-test/fifo").contains("Type: FIFO"));
    assert!(stat("/dev/null").contains("Type: character special"));
    let shadow = tool("debugfs", &["-R", "cat /etc/shadow", &root]);
    assert!(shadow.starts_with("root:$6$") && !shadow.contains(PASSWORD));
    let hostname = tool("debugfs", &["-R", "cat /etc/hostname", &root]);
    assert_eq!(hostname, "props\n");
}

#[test]
#[ignore = "needs root (to make a user and run the fallback), the debootstrap test rootfs and e2fsprogs 1.47.2 with Debian 12's mke2fs beside it; scripts/test runs it"]
fn every_property_survives_the_stream_as_a_user_and_the_staging_path_as_root() {
    let dir = user_scratch();
    let source = rootfs_with_properties(dir.path());
    let pw = password_file(dir.path());

    // One pass, as an ordinary user.
    let streamed = dir.path().join("streamed.img");
    let source = format!("rootfs:{}", source.display());
    let convert = |out: &Path| {
        Convert::new(&source, out)
            .password_file(&pw)
            .args(["--hostname", "props"])
    };
    let log = stderr(&convert(&streamed).by_user().success());
    assert!(!log.contains("slower path"), "{log}");
    assert_properties(&streamed, &log);

    // The fallback: Debian 12's own mke2fs first on PATH, as root, says why it is slower.
    let staged = dir.path().join("staged.img");
    let _lock = host_lock(); // stages in /dev/shm
    let log = stderr(
        &convert(&staged)
            .env("PATH", path_with_old_mke2fs())
            .success(),
    );
    assert!(
        log.contains("slower path") && log.contains("mke2fs 1.47.0"),
        "{log}"
    );
    assert_properties(&staged, &log);

    // A hostile archive on the fallback path: the stream edit's refusal is what the user reads,
    // not the unpacker's "truncated" that follows it.
    let hostile = dir.path().join("hostile.tar");
    Tar::new().file("../x", b"x\n").write(&hostile);
    let out = dir.path().join("hostile.img");
    let o = Convert::new(&format!("rootfs:{}", hostile.display()), &out)
        .env("PATH", path_with_old_mke2fs())
        .output();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing archive entry `../x`") && err.contains("climbs out"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
#[ignore = "needs root (to make a user) and Debian 12's mke2fs (scripts/fetch-old-mke2fs); scripts/test runs it"]
fn without_a_tar_reading_mke2fs_a_user_gets_one_line_saying_what_to_install() {
    let dir = user_scratch();
    let out = dir.path().join("out.img");
    // A tarball that is there (a missing one is said before the host is looked at); the host's
    // mke2fs is the error, before the tarball is read.
    let source = user_scratch();
    let tarball = source.path().join("root.tar");
    std::fs::write(&tarball, b"").unwrap();
    let o = Convert::new(&format!("rootfs:{}", tarball.display()), &out)
        .by_user()
        .env("PATH", path_with_old_mke2fs())
        .output();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("mke2fs 1.47.0 cannot read a tar stream")
            && err.contains("as root")
            && err.contains("1.47"),
        "{err}"
    );
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}

#[test]
#[ignore = "needs root (to make a user), dockerd with debian:latest and qemu-img; scripts/test runs it"]
fn the_same_image_and_options_give_the_same_bytes_with_source_date_epoch() {
    let dir = user_scratch();
    let convert_with = |name: &str, hostname: &str, epoch: bool, extra: &[&str]| -> PathBuf {
        let out = dir.path().join(name);
        let convert = Convert::new("debian:latest", &out)
            .by_user()
            .args(["--hostname", hostname])
            .args(extra)
            .locked(); // the daemon's containers
        if epoch {
            convert.reproducible()
        } else {
            convert
        }
        .success();
        out
    };
    let convert =
        |name: &str, hostname: &str, epoch: bool| convert_with(name, hostname, epoch, &[]);
    let a = convert("a.img", "repro", true);
    // How the image is fetched does not shape the disk: `--pull never` (the image is there).
    let b = convert_with("b.img", "repro", true, &["--pull", "never"]);
    assert!(
        same_bytes(&a, &b),
        "two raw disks from the same input, one with --pull never"
    );
    let qa = convert("a.qcow2", "repro", true);
    let qb = convert("b.qcow2", "repro", true);
    assert!(same_bytes(&qa, &qb), "two qcow2 disks from the same input");
    let other = convert("other.img", "elsewhere", true);
    assert!(!same_bytes(&a, &other), "another --hostname, another disk");
    let random = convert("random.img", "repro", false);
    assert!(
        !same_bytes(&a, &random),
        "without the variable, new identifiers"
    );
    let root = format!("{}?offset={}", a.display(), partition_offset(&a, 2));
    tool("e2fsck", &["-fn", &root]);
}
