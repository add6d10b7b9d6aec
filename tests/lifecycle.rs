//! A VM lives on: its root grows to fill a larger virtual disk on first boot (systemd-repart +
//! systemd-growfs), the GPT backup header moves to the new end, and it keeps booting.
mod common;
use common::*;

#[test]
#[ignore = "needs root, the debootstrap test rootfs and QEMU; scripts/test runs it"]
fn root_grows_to_fill_a_resized_disk_and_keeps_booting() {
    let dir = scratch();
    let disk = dir.path().join("disk.img");
    let pw = password_file(dir.path());
    convert_rootfs(&disk, &pw);
    let shipped = std::fs::metadata(&disk).unwrap().len();
    assert!(
        shipped < 2 << 30,
        "--size auto ships a small disk, got {shipped}"
    );
    tool(
        "qemu-img",
        &["resize", "-f", "raw", disk.to_str().unwrap(), "8G"],
    );

    let boot = |firmware: &str| {
        // The size once boot is done: growing the root is part of it.
        let cmd = facts_script(&[
            ("state", "systemctl is-system-running --wait"),
            ("size", "df -B1 --output=size / | tail -n 1"),
        ]);
        let (code, text) = boot_exec_with(&disk, firmware, &pw, &cmd, true, 420);
        assert_eq!(code, 0, "{text}");
        let facts = Facts::parse(&text);
        let size: u64 = facts["size"].trim().parse().unwrap_or(0);
        (size, facts["state"].to_string())
    };
    let (size, state) = boot("bios");
    assert!(
        size > 7 << 30,
        "root should fill the 8 GiB disk, df says {size}"
    );
    assert_eq!(state, "running");
    let (size_again, state) = boot("uefi");
    assert_eq!(size_again, size, "second boot: same size");
    assert_eq!(state, "running");

    assert!(tool("sgdisk", &["-v", disk.to_str().unwrap()]).contains("No problems found"));
    let root = format!("{}?offset={}", disk.display(), partition_offset(&disk, 2));
    tool("e2fsck", &["-fn", &root]);
}

/// An initramfs change made inside the VM (`update-initramfs -u`) is the one that boots next,
/// on BIOS and UEFI (the hook copies it to the ESP; one kernel, so no fallback entry yet).
#[test]
#[ignore = "needs root, the debootstrap test rootfs and QEMU; scripts/test runs it"]
fn initramfs_updates_inside_the_vm_are_what_boots_next() {
    let dir = scratch();
    let disk = dir.path().join("disk.img");
    let pw = password_file(dir.path());
    convert_rootfs(&disk, &pw);
    let exec = |firmware: &str, cmd: &str| {
        let (code, text) = boot_exec_with(&disk, firmware, &pw, cmd, true, 900);
        assert_eq!(code, 0, "{text}");
        text
    };
    // An initramfs script that leaves a marker in /run, which the real root inherits.
    let update = r#"set -e
mkdir -p /etc/initramfs-tools/scripts/init-top
cat > /etc/initramfs-tools/scripts/init-top/c2vm-marker <<'EOS'
#!/bin/sh
[ "$1" = prereqs ] && exit 0
echo initrd-v2 > /run/c2vm-initrd-marker
EOS
chmod 755 /etc/initramfs-tools/scripts/init-top/c2vm-marker
# only this VM's modules: a full (MODULES=most) rebuild takes minutes under TCG
echo MODULES=dep > /etc/initramfs-tools/conf.d/c2vm-test
update-initramfs -u >/dev/null 2>&1
cmp /boot/initrd.img-$(uname -r) /boot/efi/initrd.img && echo esp-updated
cat /run/c2vm-initrd-marker 2>/dev/null || echo no-marker-yet"#;
    assert_eq!(exec("bios", update), "esp-updated\nno-marker-yet\n");
    let check = "cat /run/c2vm-initrd-marker; grep -c '^LABEL' /boot/efi/syslinux/syslinux.cfg";
    assert_eq!(exec("bios", check), "initrd-v2\n1\n");
    assert_eq!(exec("uefi", check), "initrd-v2\n1\n");
}

/// A kernel package installed inside the VM is the kernel that boots next, on BIOS and UEFI; the
/// one before stays on the ESP behind a `previous` entry, which boots too (picked on BIOS, where
/// SYSLINUX once loaded the wrong initramfs for it). The package is Debian's cloud flavour of the
/// test rootfs's own kernel, a second kernel package beside linux-image-amd64 whose version sorts
/// after the generic one; scripts/fetch-test-kernel downloads it once on the host and the test
/// puts it into the root filesystem. `dpkg -i` runs the same kernel hooks as `apt-get install`,
/// without the network and the `apt-get update` that took ~10 minutes inside a TCG guest.
#[test]
#[ignore = "needs root, the debootstrap test rootfs, the cloud kernel .deb (scripts/fetch-test-kernel) and QEMU; scripts/test runs it"]
fn a_kernel_installed_in_the_vm_boots_next_and_the_old_one_stays_as_fallback() {
    let dir = scratch();
    let disk = dir.path().join("disk.img");
    let pw = password_file(dir.path());
    let deb = test_kernel_deb();
    // The test rootfs with the .deb appended under /root/ (GNU tar -r on a copy).
    let rootfs = dir.path().join("rootfs.tar");
    std::fs::copy(test_rootfs(), &rootfs).unwrap();
    tool(
        "tar",
        &[
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--transform=s,^,./root/,",
            "-C",
            deb.parent().unwrap().to_str().unwrap(),
            "-rf",
            rootfs.to_str().unwrap(),
            deb.file_name().unwrap().to_str().unwrap(),
        ],
    );
    // Room for a second kernel and its modules (auto size leaves too little headroom for one).
    Convert::new(&format!("rootfs:{}", rootfs.display()), &disk)
        .args(["--size", "3G"])
        .password_file(&pw)
        .locked() // stages in /dev/shm
        .success();
    std::fs::remove_file(&rootfs).unwrap();
    let exec_within = |firmware: &str, cmd: &str, timeout: u32| {
        let (code, text) = boot_exec_with(&disk, firmware, &pw, cmd, true, timeout);
        assert_eq!(code, 0, "{text}");
        text
    };
    let exec = |firmware: &str, cmd: &str| exec_within(firmware, cmd, 420);
    // The new kernel's initramfs is MODULES=dep: the modules this VM's root disk needs (virtio,
    // ext4), found from the running kernel, which has the same ABI and the same devices; the
    // boots below prove it finds the root. Measured under TCG, `dpkg -i` takes 66 s with dep
    // and 138 s with Debian's default MODULES=most. The old kernel keeps its MODULES=most one.
    let install = r#"set -e
old=$(uname -r)
echo MODULES=dep > /etc/initramfs-tools/conf.d/c2vm-test
DEBIAN_FRONTEND=noninteractive dpkg -i /root/linux-image-*-cloud-amd64_*.deb >/tmp/dpkg.log 2>&1 \
  || { tail -n 20 /tmp/dpkg.log; exit 4; }
new=$(ls /boot/vmlinuz-* | sed 's,^/boot/vmlinuz-,,' | sort -V | tail -n 1)
[ "$new" != "$old" ] && echo "$new" > /root/new-kernel && echo "$old" > /root/old-kernel
cmp "/boot/vmlinuz-$new" /boot/efi/vmlinuz && echo esp-has-new
cmp "/boot/vmlinuz-$old" /boot/efi/previous/vmlinuz && cmp "/boot/initrd.img-$old" /boot/efi/previous/initrd.img && echo esp-keeps-old
grep '^LABEL' /boot/efi/syslinux/syslinux.cfg
ls /boot/efi/loader/entries"#;
    assert_eq!(
        exec_within("bios", install, 900),
        "esp-has-new\nesp-keeps-old\nLABEL linux\nLABEL previous\nc2vm-previous.conf\nc2vm.conf\n"
    );
    let booted = "[ \"$(uname -r)\" = \"$(cat /root/new-kernel)\" ] && echo new; [ \"$(uname -r)\" = \"$(cat /root/old-kernel)\" ] && echo old; true";
    assert_eq!(exec("bios", booted), "new\n");
    // Pick the fallback, as one would at the boot menu: the previous kernel still boots.
    let pick_previous =
        "sed -i 's/^DEFAULT linux/DEFAULT previous/' /boot/efi/syslinux/syslinux.cfg; sync";
    assert_eq!(exec("uefi", &format!("{booted}; {pick_previous}")), "new\n");
    assert_eq!(exec("bios", booted), "old\n");
}
