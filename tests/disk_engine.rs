//! The disk engine end to end: a debootstrap root filesystem tarball becomes a GPT disk, read back
//! with independent tools (sfdisk, e2fsck, fsck.fat, debugfs, qemu-img); GRUB's disk boots under
//! QEMU on BIOS and UEFI, where a login on the serial console checks what a user would (the
//! default loaders' disk boots in tests/lifecycle.rs, with the same checks).
mod common;
use common::*;

#[test]
#[ignore = "needs root, the debootstrap test rootfs and the tools of scripts/install-host-deps --test; scripts/test runs it"]
fn syslinux_and_systemd_boot_image_checks_clean_with_independent_tools() {
    let dir = scratch();
    let work = subdir(dir.path(), "work");
    let disk = dir.path().join("disk.img");
    Convert::rootfs(&disk)
        .password_file(&password_file(&work))
        .args(["--hostname", "vm-under-test", "--workdir"])
        .arg(&work)
        .success();
    assert_eq!(
        listing(&work),
        vec!["password"],
        "the work dir holds nothing but our password file"
    );
    assert_eq!(
        listing(dir.path()),
        vec!["disk.img", "work"],
        "no temporary output left beside the disk"
    );

    // The partition table, read back by sfdisk.
    let json: serde_json::Value =
        serde_json::from_str(&tool("sfdisk", &["--json", disk.to_str().unwrap()])).unwrap();
    let table = &json["partitiontable"];
    assert_eq!(&table["label"], "gpt");
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[0]["size"], 256 * 2048);
    assert!(parts[0]["attrs"]
        .as_str()
        .unwrap_or("")
        .contains("LegacyBIOSBootable"));
    assert_eq!(parts[1]["type"], "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
    assert_eq!(
        parts[1]["start"].as_u64().unwrap() % 2048,
        0,
        "root is 1 MiB aligned"
    );
    assert!(tool("sgdisk", &["-v", disk.to_str().unwrap()]).contains("No problems found"));
    // SYSLINUX's gptmbr.bin is the MBR boot code.
    let mbr = std::fs::read("/usr/lib/syslinux/mbr/gptmbr.bin").unwrap();
    let head = std::fs::read(&disk).map(|d| d[..440].to_vec()).unwrap();
    assert_eq!(head, mbr[..440]);
    // Sparse: far less allocated than the apparent size.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&disk).unwrap();
    assert!(
        meta.blocks() * 512 < meta.len() * 3 / 4,
        "raw output should be sparse"
    );

    // ext4: clean, pinned features, and the file metadata debugfs sees.
    let root_off = partition_offset(&disk, 2);
    let img = format!("{}?offset={root_off}", disk.display());
    tool("e2fsck", &["-fn", &img]);
    // (debugfs, not dumpe2fs: dumpe2fs 1.47.2 takes `?offset=` for a NAME=value device spec)
    let features = tool("debugfs", &["-R", "features", &img]);
    assert!(
        !features.contains("orphan_file") && !features.contains("metadata_csum_seed"),
        "{features}"
    );
    let stat = tool("debugfs", &["-R", "stat /usr/bin/passwd", &img]);
    assert!(stat.contains("Mode:  04755"), "{stat}");
    let caps = tool("debugfs", &["-R", "ea_list /opt/c2vm-test/cap-file", &img]);
    // cap_net_raw+ep as vfs_cap_data revision 2, and a user xattr, carried through tar and mke2fs
    assert!(
        caps.contains("security.capability (20) = 01 00 00 02 00 20 00 00"),
        "{caps}"
    );
    assert!(caps.contains("user.c2vm (5) = \"hello\""), "{caps}");
    let fifo = tool("debugfs", &["-R", "stat /opt/c2vm-test/fifo", &img]);
    assert!(fifo.contains("Type: FIFO"), "{fifo}");
    let null = tool("debugfs", &["-R", "stat /dev/null", &img]);
    assert!(null.contains("Type: character special"), "{null}");
    let shadow = tool("debugfs", &["-R", "cat /etc/shadow", &img]);
    assert!(shadow.starts_with("root:$6$") && !shadow.contains(PASSWORD));
    let console = tool("debugfs", &["-R", "stat /dev/console", &img]);
    assert!(
        !console.contains("Type: regular"),
        "no regular file at /dev/console"
    );

    // The ESP: clean FAT32 with the image's /boot (kernel, initramfs, config, System.map, under
    // their own names) and both loaders. The root's /boot is the empty mount point: the disk
    // holds the kernel once.
    let boot = tool("debugfs", &["-R", "ls /boot", &img]);
    assert!(
        !boot.contains("vmlinuz") && !boot.contains("initrd"),
        "{boot}"
    );
    let esp = dir.path().join("esp.fat");
    copy_partition(&disk, 1, &esp);
    let fsck = tool("fsck.fat", &["-n", esp.to_str().unwrap()]);
    assert!(
        !fsck.contains("differences") && !fsck.to_lowercase().contains("error"),
        "{fsck}"
    );
    // -a: SYSLINUX marks ldlinux.sys hidden and system
    let files = tool(
        "mdir",
        &["-i", esp.to_str().unwrap(), "-/", "-b", "-a", "::"],
    );
    for f in [
        "::/c2vm/kernel",
        "::/syslinux/ldlinux.sys",
        "::/syslinux/ldlinux.c32",
        "::/syslinux/syslinux.cfg",
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/loader/loader.conf",
        "::/loader/entries/c2vm.conf",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{f} missing from the ESP:\n{files}"
        );
    }
    for prefix in [
        "::/vmlinuz-",
        "::/initrd.img-",
        "::/config-",
        "::/System.map-",
    ] {
        assert!(
            files.lines().any(|l| l.starts_with(prefix)),
            "no {prefix}* on the ESP:\n{files}"
        );
    }
    std::fs::remove_file(&esp).unwrap();

    // Its boots on BIOS and UEFI are lifecycle's first two (tests/lifecycle.rs): the same
    // rootfs with the same loaders, checked there with rootfs_guest_checks() while the VM's
    // life goes on.
}

#[test]
#[ignore = "needs root, the debootstrap test rootfs, GRUB, qemu-img and QEMU; scripts/test runs it"]
fn grub_qcow2_image_boots_on_bios_and_uefi() {
    let dir = scratch();
    let disk = dir.path().join("disk.qcow2");
    let log = stderr(
        &Convert::rootfs(&disk)
            .password_file(&password_file(dir.path()))
            .args(["--hostname", "vm-under-test", "--workdir"])
            .arg(dir.path())
            .args(["--bootloader", "grub"])
            .success(),
    );
    // The test rootfs has Debian's signed kernel but no shim or signed GRUB: `auto` writes the
    // host's GRUB and says why.
    assert!(
        log.contains(
            "Secure Boot: no (the image has no /usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
        ),
        "{log}"
    );
    let info: serde_json::Value = serde_json::from_str(&tool(
        "qemu-img",
        &["info", "--output=json", disk.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(info["format"], "qcow2");
    tool("qemu-img", &["check", disk.to_str().unwrap()]);
    let pw = password_file(dir.path());
    let (code, out) = boot_exec(&disk, "bios", &pw, &rootfs_guest_checks());
    assert_eq!(code, 0, "GRUB BIOS boot: {out}");
    assert_rootfs_guest(&out, "bios", "vm-under-test");
    // Debian 12's systemd 252 has no ImportCredential=: the guest's c2vm-credentials unit reads
    // /run/credentials/@system, where PID 1 put what fw_cfg brought. The hostname given at
    // boot replaces the disk's.
    let (code, out) = Boot::new(&disk, "uefi", &pw)
        .args(["--hostname", "vm-given-252"])
        .exec(&rootfs_guest_checks());
    assert_eq!(code, 0, "GRUB UEFI boot: {out}");
    assert_rootfs_guest(&out, "uefi", "vm-given-252");
    // `run --firmware uefi-secure` enforces Secure Boot with Microsoft's keys: this GRUB, built
    // on the host and signed by no one, is refused, and `run` says so at once (seconds, not
    // the timeout) with what to do.
    let started = std::time::Instant::now();
    let out = run(c2vm()
        .args([
            "run",
            "--firmware",
            "uefi-secure",
            "--cpus",
            "1",
            "--timeout",
            "300",
        ])
        .args(["--expect", "login:"])
        .arg(&disk));
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("UEFI with Secure Boot enforced"), "{said}");
    assert!(
        said.contains("Secure Boot refused the disk while waiting for")
            && said.contains("failed to load")
            && said.contains("--secure-boot on"),
        "{said}"
    );
    assert!(started.elapsed().as_secs() < 120, "{said}");
}

#[test]
#[ignore = "needs root, the debootstrap test rootfs and the tools of scripts/install-host-deps --test; scripts/test runs it (tests/cli.rs has the usage errors)"]
fn bad_input_fails_clearly_and_leaves_nothing_behind() {
    let dir = scratch();
    let work = subdir(dir.path(), "work");
    let out = dir.path().join("out.img");
    let attempt = |source: String, extra: &[&str]| {
        let o = Convert::new(&source, &out)
            .arg("--workdir")
            .arg(&work)
            .args(extra)
            .output();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.lines().any(|l| l.starts_with("c2vm: error:")), "{err}");
        assert!(!out.exists());
        assert_eq!(listing(&work), Vec::<String>::new(), "work dir left dirty");
        err
    };
    // A tarball without a kernel.
    let nokernel = dir.path().join("nokernel.tar");
    tool(
        "tar",
        &[
            "-C",
            "/usr/share/doc",
            "-cf",
            nokernel.to_str().unwrap(),
            "e2fsprogs",
        ],
    );
    let err = attempt(format!("rootfs:{}", nokernel.display()), &[]);
    assert!(err.contains("no kernel found"), "{err}");
    // A truncated one and random bytes.
    let truncated = dir.path().join("truncated.tar");
    let cut = std::fs::metadata(test_rootfs()).unwrap().len() / 3 + 100;
    let mut head = std::io::Read::take(std::fs::File::open(test_rootfs()).unwrap(), cut);
    std::io::copy(&mut head, &mut std::fs::File::create(&truncated).unwrap()).unwrap();
    let err = attempt(format!("rootfs:{}", truncated.display()), &[]);
    assert!(err.contains("corrupt or truncated"), "{err}");
    let noise = dir.path().join("noise.tar");
    std::fs::write(
        &noise,
        (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let err = attempt(format!("rootfs:{}", noise.display()), &[]);
    assert!(err.contains("corrupt or truncated"), "{err}");
    let missing = dir.path().join("missing.tar");
    let err = attempt(format!("rootfs:{}", missing.display()), &[]);
    // Which stage opens it first may change; the cause may not.
    assert!(
        the_error(&err).contains(&format!("{}: No such file or directory", missing.display())),
        "{err}"
    );
    // Too small: names the smallest size that fits, before mke2fs runs.
    let started = std::time::Instant::now();
    let err = attempt(
        format!("rootfs:{}", test_rootfs().display()),
        &["--size", "400M"],
    );
    assert!(
        started.elapsed().as_secs() < 4,
        "a size that cannot fit must fail before unpacking"
    );
    assert!(
        err.contains("too small") && err.contains("at least"),
        "{err}"
    );
    // --secure-boot on with a kernel that carries no signature: refused before the ESP.
    let err = attempt(
        format!("rootfs:{}", small_rootfs(dir.path()).display()),
        &["--secure-boot", "on"],
    );
    assert!(
        err.contains(
            "--secure-boot on: the kernel /boot/vmlinuz-6.1.0-0-amd64 carries no signature"
        ),
        "{err}"
    );
    // Not a size.
    let err = attempt(
        format!("rootfs:{}", test_rootfs().display()),
        &["--size", "lots"],
    );
    assert_eq!(
        the_error(&err),
        "c2vm: error: --size takes `auto` or a size such as 4G, 1536M, 2GiB: `lots` is not a size"
    );
    for f in [&nokernel, &truncated, &noise] {
        std::fs::remove_file(f).unwrap();
    }
    // An existing output is not overwritten without --force.
    std::fs::write(&out, "precious").unwrap();
    let o = Convert::rootfs(&out).output();
    assert_eq!(
        one_error(&o),
        format!(
            "c2vm: error: {} already exists; use --force to overwrite it",
            out.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious");
    // An output directory that does not exist fails at once.
    let o = Convert::rootfs(&dir.path().join("nope/x.img")).output();
    assert_eq!(
        one_error(&o),
        format!(
            "c2vm: error: the output directory {} does not exist; create it first",
            dir.path().join("nope").display()
        )
    );
    // Usage errors exit 2.
    let o = run(c2vm().arg("convert"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("required arguments were not provided"),
        "{}",
        stderr(&o)
    );
}

#[test]
#[ignore = "needs root (mounts tmpfs), the debootstrap test rootfs and the tools of scripts/install-host-deps --test; scripts/test runs it"]
fn a_full_disk_fails_clearly_and_leaves_nothing_behind() {
    let dir = scratch();
    let source = format!("rootfs:{}", test_rootfs().display());
    // The work dir fills up with the raw disk a qcow2 is made from (or, on the staging path,
    // while unpacking).
    let small_work = tmpfs(&dir.path().join("small-work"), "size=64M");
    let out = dir.path().join("out.qcow2");
    let o = Convert::new(&source, &out)
        .arg("--workdir")
        .arg(small_work.as_path())
        .output();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no space left"), "{err}");
    assert_eq!(listing(&small_work), Vec::<String>::new());
    assert!(!out.exists());
    // The output dir fills up while writing the disk.
    let small_out = tmpfs(&dir.path().join("small-out"), "size=200M");
    let out = small_out.join("out.img");
    // Locked: it stages in /dev/shm.
    let o = Convert::new(&source, &out).locked().output();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.to_lowercase().contains("space"), "{err}");
    assert_eq!(
        listing(&small_out),
        Vec::<String>::new(),
        "partial output left on the full disk"
    );
}

#[test]
#[ignore = "needs the debootstrap test rootfs and every host tool but the one it hides; scripts/test runs it"]
fn a_missing_host_tool_is_named_with_its_package_before_any_work() {
    let dir = scratch();
    let source = format!("rootfs:{}", test_rootfs().display());
    for (missing, package) in [
        ("mke2fs", "e2fsprogs"),
        ("syslinux", "syslinux"),
        ("mcopy", "mtools"),
        ("qemu-img", "qemu-utils"),
    ] {
        // A PATH holding every tool c2vm uses except one.
        let bin = dir.path().join(format!("bin-without-{missing}"));
        std::fs::create_dir(&bin).unwrap();
        for tool_name in ["mke2fs", "syslinux", "mcopy", "qemu-img"] {
            if tool_name != missing {
                let real = tool("sh", &["-c", &format!("command -v {tool_name}")]);
                std::os::unix::fs::symlink(real.trim(), bin.join(tool_name)).unwrap();
            }
        }
        let started = std::time::Instant::now();
        let o = Convert::new(&source, &dir.path().join("x.qcow2"))
            .env("PATH", &bin)
            .output();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            the_error(&err).contains(&format!(
                "`{missing}` was not found on PATH; install it with `apt-get install {package}`"
            )),
            "{missing}: {err}"
        );
        assert!(
            started.elapsed().as_secs() < 3,
            "should fail before unpacking"
        );
    }
    assert!(!dir.path().join("x.qcow2").exists());
}
