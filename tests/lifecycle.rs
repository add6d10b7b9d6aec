//! A VM lives on: its root grows to fill a larger virtual disk on first boot (systemd-repart +
//! systemd-growfs, the GPT backup header moved to the new end), an initramfs rebuilt inside the
//! VM and a kernel package installed there are what boots next, on BIOS and on UEFI with Secure
//! Boot enforced (the Debian 13 test rootfs has shim and the signed systemd-boot, so the disk has
//! the signed chain), and the kernel before stays behind a `previous` entry that boots too.
//!
//! One disk, three boots, where three tests took nine: each boot checks everything that holds at
//! that point of the VM's life. Both loaders read the same kernel and initramfs on the ESP, so the
//! new kernel boots once (UEFI), and the first boot (BIOS) already showed SYSLINUX booting the
//! ESP's default pair. The first two boots also carry disk_engine's checks of a converted rootfs
//! on each firmware, and the last `run --exec`'s exit status and exact stdout.
mod common;
use common::*;

/// The Debian 13 test rootfs with a second kernel package appended under /root/ (GNU tar -r on a
/// copy):
/// Debian's cloud flavour of the rootfs's own kernel, same ABI, whose version sorts after the
/// generic one; scripts/fetch-test-kernel downloads it once on the host. `dpkg -i` runs the same
/// kernel hooks as `apt-get install`, without the network and the `apt-get update` that took ~10
/// minutes inside a TCG guest.
fn rootfs_with_second_kernel(dir: &std::path::Path) -> std::path::PathBuf {
    let deb = test_kernel_deb();
    let rootfs = dir.join("rootfs.tar");
    std::fs::copy(test_rootfs_trixie(), &rootfs).unwrap();
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
    rootfs
}

/// Boot 1 (BIOS, the disk just resized): the root filled the disk; an initramfs hook that leaves
/// a marker in /run (which the real root inherits), `update-initramfs -u` reaches the ESP with
/// one kernel and one entry; then the second kernel package, whose own initramfs gets the hook
/// too, goes on the ESP, and the first stays behind `previous`. MODULES=dep: only this VM's
/// modules (virtio, ext4), found from the running kernel, which has the same ABI and devices;
/// under TCG `dpkg -i` takes 66 s with it and 138 s with Debian's default MODULES=most. zstd at
/// level 1, not initramfs-tools' 9: the level is not what is tested, and each build is emulated.
/// The script prints how long both builds took (`took-…`): they are most of this test's time
/// (92 s and 108 s of a 249 s boot, alone on a slow machine). Both stay: each kernel boots its
/// own rebuilt initramfs later.
const GROW_AND_UPDATE: &str = r#"set -e
echo size=$(df -B1 --output=size / | tail -n 1 | tr -d ' ')
echo state=$(systemctl is-system-running --wait || true)
echo up-after=$(cut -d' ' -f1 /proc/uptime)
old=$(uname -r)
mkdir -p /etc/initramfs-tools/scripts/init-top
cat > /etc/initramfs-tools/scripts/init-top/c2vm-marker <<'EOS'
#!/bin/sh
[ "$1" = prereqs ] && exit 0
echo initrd-v2 > /run/c2vm-initrd-marker
EOS
chmod 755 /etc/initramfs-tools/scripts/init-top/c2vm-marker
printf 'MODULES=dep\nCOMPRESSLEVEL=1\n' > /etc/initramfs-tools/conf.d/c2vm-test
t=$(date +%s); update-initramfs -u >/dev/null 2>&1
echo took-update-initramfs=$(($(date +%s) - t))
# (grep -c reads all of it: with -q, lsinitramfs's cpio would complain of the closed pipe)
[ "$(lsinitramfs /boot/initrd.img-$old | grep -c c2vm-marker)" -gt 0 ] && echo initrd=updated-on-esp
echo marker=$(cat /run/c2vm-initrd-marker 2>/dev/null || echo none)
echo entries-before=$(grep -c '^LABEL' /boot/syslinux/syslinux.cfg)
t=$(date +%s); DEBIAN_FRONTEND=noninteractive dpkg -i /root/linux-image-*-cloud-amd64_*.deb >/tmp/dpkg.log 2>&1 \
  || { tail -n 20 /tmp/dpkg.log; exit 4; }
echo took-dpkg=$(($(date +%s) - t))
new=$(ls /boot/vmlinuz-* | sed 's,^/boot/vmlinuz-,,' | sort -V | tail -n 1)
[ "$new" != "$old" ] && echo "$new" > /root/new-kernel && echo "$old" > /root/old-kernel
grep -qx "  KERNEL /vmlinuz-$new" /boot/syslinux/syslinux.cfg \
  && grep -qx "linux /vmlinuz-$new" /boot/loader/entries/c2vm.conf \
  && grep -qx "initrd /initrd.img-$new" /boot/loader/entries/c2vm.conf && echo esp-new=yes
grep -qx "  KERNEL /vmlinuz-$old" /boot/syslinux/syslinux.cfg \
  && grep -qx "initrd /initrd.img-$old" /boot/loader/entries/c2vm-previous.conf && echo esp-previous=yes
echo labels=$(grep '^LABEL' /boot/syslinux/syslinux.cfg | tr '\n' ' ')
echo bls=$(ls /boot/loader/entries | tr '\n' ' ')
# The same package again: dpkg replaces files that exist, which on FAT needs c2vm's preinst hook
# (no backup link there). INITRD=No: the initramfs is not rebuilt, only the package's files.
t=$(date +%s); INITRD=No DEBIAN_FRONTEND=noninteractive dpkg -i /root/linux-image-*-cloud-amd64_*.deb \
  >/tmp/dpkg.log 2>&1 || { tail -n 20 /tmp/dpkg.log; exit 5; }
echo took-reinstall=$(($(date +%s) - t))
echo verify=$(dpkg -V "linux-image-$new" "linux-image-$old" | wc -l)
# One copy of each: the kernels and initramfs are on the ESP (/boot) and nowhere in the root.
echo on-esp=$(ls /boot | grep -cE '^(vmlinuz|initrd.img)-')
echo in-root=$(find / -xdev \( -name 'vmlinuz-*' -o -name 'initrd.img-*' \) -type f | wc -l)
chain() { cmp -s /usr/lib/shim/shimx64.efi.signed /boot/EFI/BOOT/BOOTX64.EFI \
  && cmp -s /usr/lib/shim/mmx64.efi.signed /boot/EFI/BOOT/mmx64.efi \
  && cmp -s /usr/lib/systemd/boot/efi/systemd-bootx64.efi.signed /boot/EFI/BOOT/grubx64.efi \
  && echo intact || echo stale; }
echo chain=$(chain)
echo stale > /boot/EFI/BOOT/mmx64.efi
dpkg --configure -a
echo chain-after-dpkg=$(chain)"#;

/// Every later boot: which kernel runs, its initramfs's marker, the root's size and state.
const BOOTED: &str = r#"k=$(uname -r)
[ "$k" = "$(cat /root/new-kernel)" ] && echo kernel=new
[ "$k" = "$(cat /root/old-kernel)" ] && echo kernel=old
echo marker=$(cat /run/c2vm-initrd-marker 2>/dev/null || echo none)
echo size=$(df -B1 --output=size / | tail -n 1 | tr -d ' ')
echo state=$(systemctl is-system-running --wait || true)"#;

#[test]
#[ignore = "needs root, the debootstrap test rootfs, the cloud kernel .deb (scripts/fetch-test-kernel) and QEMU; scripts/test runs it"]
fn the_root_grows_and_kernel_and_initramfs_updates_inside_the_vm_boot_next() {
    let dir = scratch();
    let disk = dir.path().join("disk.img");
    let pw = password_file(dir.path());
    let rootfs = rootfs_with_second_kernel(dir.path());
    // Locked: it stages in /dev/shm.
    let out = Convert::new(&format!("rootfs:{}", rootfs.display()), &disk)
        .password_file(&pw)
        .args(["--hostname", "vm-under-test", "--secure-boot", "on"])
        .locked()
        .output();
    assert!(out.status.success(), "convert failed: {}", stderr(&out));
    std::fs::remove_file(&rootfs).unwrap();
    let shipped = std::fs::metadata(&disk).unwrap().len();
    assert!(
        shipped < 2 << 30,
        "--size auto ships a small disk, got {shipped}"
    );
    tool(
        "qemu-img",
        &["resize", "-f", "raw", disk.to_str().unwrap(), "8G"],
    );
    let boot = |firmware: &str, cmd: &str, timeout: u32| {
        Boot::new(&disk, firmware, &pw)
            .persist()
            .timeout(timeout)
            .exec(cmd)
    };
    let boot_ok = |firmware: &str, cmd: &str, timeout: u32| {
        let (code, text) = boot(firmware, cmd, timeout);
        assert_eq!(code, 0, "{text}");
        let facts = Facts::parse(&text);
        // Every boot: the system is up with nothing failed.
        assert_eq!(&facts["state"], "running", "{text}");
        (facts, text)
    };

    // The first two boots also carry disk_engine's checks of a converted rootfs, on each
    // firmware: mounts, modes, hardlinks, setgid directory, hostname, a fresh machine-id.
    let (first, text) = boot_ok(
        "bios",
        &format!("{}\n{GROW_AND_UPDATE}", rootfs_guest_checks()),
        900,
    );
    assert_rootfs_guest(&text, "bios", "vm-under-test");
    let size: u64 = first["size"].parse().unwrap_or(0);
    assert!(
        size > 7 << 30,
        "the root should fill the 8 GiB disk: {text}"
    );
    assert_eq!(&first["initrd"], "updated-on-esp", "{text}");
    assert_eq!(
        &first["marker"], "none",
        "no marker before a reboot: {text}"
    );
    assert_eq!(
        &first["entries-before"], "1",
        "one kernel, one entry: {text}"
    );
    assert_eq!(&first["esp-new"], "yes", "{text}");
    assert_eq!(&first["esp-previous"], "yes", "{text}");
    assert_eq!(&first["labels"], "LABEL linux LABEL previous", "{text}");
    assert_eq!(&first["bls"], "c2vm-previous.conf c2vm.conf", "{text}");
    // A reinstall of the same kernel works on FAT, and leaves every file as its package has it;
    // both kernels are on the disk once.
    assert_eq!(&first["verify"], "0", "{text}");
    assert_eq!(&first["on-esp"], "4", "{text}");
    assert_eq!(&first["in-root"], "0", "{text}");
    // The Secure Boot chain on the ESP is the guest's; a stale file there is replaced after any
    // dpkg run (here one with nothing to do, so no kernel hook runs), as after an upgrade of shim.
    assert_eq!(&first["chain"], "intact", "{text}");
    assert_eq!(&first["chain-after-dpkg"], "intact", "{text}");

    // The new kernel, with an initramfs built inside the VM (the ESP's default pair, which
    // both loaders boot), with Secure Boot enforced: shim, the signed systemd-boot and the
    // kernel the package brought; the root keeps its size. Then the fallback is picked, as one
    // would at the boot menu.
    let pick_previous = format!(
        "{}\n{BOOTED}\necho secure-boot=$(od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | awk '{{print $NF}}')\n\
         sed -i 's/^DEFAULT linux/DEFAULT previous/' /boot/syslinux/syslinux.cfg; sync",
        rootfs_guest_checks()
    );
    let (facts, text) = boot_ok("uefi-secure", &pick_previous, 420);
    assert_rootfs_guest(&text, "uefi", "vm-under-test");
    assert_eq!(&facts["kernel"], "new", "{text}");
    assert_eq!(&facts["secure-boot"], "1", "{text}");
    assert_eq!(&facts["marker"], "initrd-v2", "{text}");
    assert_eq!(&facts["size"], &first["size"], "{text}");
    // The previous kernel still boots, with the initramfs `update-initramfs -u` made for it (on
    // BIOS, SYSLINUX once loaded the wrong initramfs for it).
    // Its command also ends as `run --exec` must report: the exit status and the exact stdout
    // (no trailing newline added, stderr left out).
    let (code, text) = boot(
        "bios",
        &format!("{BOOTED}\nprintf 'a b\\n\\tc'; echo oops >&2; exit 7"),
        420,
    );
    assert_eq!(code, 7, "{text}");
    assert!(text.ends_with("\na b\n\tc"), "exact stdout: {text:?}");
    assert!(!text.contains("oops"), "stderr in stdout: {text:?}");
    let facts = Facts::parse(&text);
    assert_eq!(&facts["state"], "running", "{text}");
    assert_eq!(&facts["kernel"], "old", "{text}");
    assert_eq!(&facts["marker"], "initrd-v2", "{text}");

    assert!(tool("sgdisk", &["-v", disk.to_str().unwrap()]).contains("No problems found"));
    let root = format!("{}?offset={}", disk.display(), partition_offset(&disk, 2));
    tool("e2fsck", &["-fn", &root]);
}
