//! An encrypted root (`--luks-passphrase-file`): converted by an ordinary user, it is LUKS2 as
//! cryptsetup reads it, no byte of the filesystem shows in plain text, and cryptsetup's own code
//! decrypts it into a filesystem that `e2fsck -fn` passes. It unlocks at boot with the passphrase
//! `c2vm run` types, on UEFI with Secure Boot enforced and on BIOS; its root grows to a larger disk; an initramfs rebuilt in
//! the VM (what a kernel update runs) is what unlocks it next; a wrong passphrase ends the run in
//! one line. The scratch app on the generic bundle is in any_image.
//!
//! Device-mapper is not needed, here or in the conversion: cryptsetup's offline re-encryption
//! decrypts a copy of the partition as plain file I/O (this machine's kernel has no dm-crypt, so
//! `cryptsetup open` could not run here anyway).
mod common;
use common::*;
use std::path::Path;

const PASSPHRASE: &str = "correct horse battery 7731";

/// Whether `needle` is anywhere in the file (read a MiB at a time, overlapping).
fn file_contains(path: &Path, needle: &[u8]) -> bool {
    use std::io::Read;
    let mut file = std::fs::File::open(path).unwrap();
    let mut window = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return false;
        }
        window.extend_from_slice(&buf[..n]);
        if window.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        let keep = window.len().saturating_sub(needle.len());
        window.drain(..keep);
    }
}

/// The root filesystem of `disk` decrypted by cryptsetup into `work/plain.img`: the volume key
/// from the header with the passphrase, then an offline decryption of the data area (cryptsetup
/// 2.6 decrypts a LUKS2 volume offline only through a detached header with no data offset).
fn decrypt_root(disk: &Path, work: &Path, key_file: &Path) -> std::path::PathBuf {
    let part = work.join("root-part.img");
    copy_partition(disk, 2, &part);
    let volume_key = work.join("volume.key");
    tool(
        "cryptsetup",
        &[
            "luksDump",
            "--batch-mode",
            "--dump-volume-key",
            "--volume-key-file",
            volume_key.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
            part.to_str().unwrap(),
        ],
    );
    let plain = work.join("plain.img");
    tool(
        "dd",
        &[
            &format!("if={}", part.display()),
            &format!("of={}", plain.display()),
            "bs=1M",
            "skip=16",
            "conv=sparse",
            "status=none",
        ],
    );
    std::fs::remove_file(&part).unwrap();
    let header = work.join("detached-header");
    let (header, volume_key, plain_s) = (
        header.to_str().unwrap(),
        volume_key.to_str().unwrap(),
        plain.to_str().unwrap(),
    );
    let common = ["--batch-mode", "--disable-locks", "--key-file"];
    let mut format = vec![
        "luksFormat",
        "--type",
        "luks2",
        "--header",
        header,
        "--offset",
        "0",
    ];
    // The data's format as the issue gives it, written out here rather than taken from c2vm: a
    // disk in another format would not decrypt.
    format.extend([
        "--cipher",
        "aes-xts-plain64",
        "--key-size",
        "512",
        "--sector-size",
        "4096",
    ]);
    format.extend(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]);
    format.extend(["--volume-key-file", volume_key]);
    format.extend(common);
    format.extend([key_file.to_str().unwrap(), plain_s]);
    tool("cryptsetup", &format);
    let mut decrypt = vec!["reencrypt", "--decrypt", "--force-offline-reencrypt"];
    decrypt.extend(["--header", header]);
    decrypt.extend(common);
    decrypt.extend([key_file.to_str().unwrap(), plain_s]);
    tool("cryptsetup", &decrypt);
    plain
}

/// The guest's facts at each boot.
fn boot_facts(extra: &[(&str, &str)]) -> String {
    let dhcp =
        format!("{WAIT_FOR_DHCP}; ip -4 -o addr show scope global dynamic | awk '{{print $4}}'");
    let mut facts = vec![
        ("state", "systemctl is-system-running --wait || true"),
        ("root-source", "findmnt -no SOURCE /"),
        ("root-type", "lsblk -no TYPE \"$(findmnt -no SOURCE /)\""),
        (
            "cipher",
            "cryptsetup status c2vm_root | sed -n 's/^ *cipher: *//p'",
        ),
        (
            "root-size",
            "df -B1 --output=size / | tail -n 1 | tr -d ' '",
        ),
        ("hostname", "cat /proc/sys/kernel/hostname"),
        ("dhcp", &dhcp),
        (
            "failed",
            "systemctl --failed --no-legend --plain | cut -d' ' -f1",
        ),
    ];
    facts.extend_from_slice(extra);
    facts_script(&facts)
}

#[test]
#[ignore = "needs root, dockerd with debian:latest, the Debian mirror, cryptsetup and QEMU; scripts/test runs it"]
fn an_encrypted_root_is_luks2_on_disk_unlocks_at_boot_grows_and_unlocks_after_an_initramfs_rebuild()
{
    let dir = user_scratch();
    let pw = password_file(dir.path());
    let pass = dir.path().join("luks-passphrase");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    // What cryptsetup takes as a key file: the passphrase alone, as typed at the prompt.
    let key_file = dir.path().join("luks-key");
    std::fs::write(&key_file, PASSPHRASE).unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    // In the guest's /etc/hostname and /etc/hosts: plain text in the filesystem.
    let marker = format!("luks-marker-{nanos:09}");

    // Nothing left behind: no container (under the host lock, which every conversion that
    // makes one holds) and nothing in this test's own --workdir. /dev/shm is not looked at:
    // unlocked arm64 conversions of other tests stage there meanwhile.
    let work = subdir(dir.path(), "work");
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let convert = |convert: Convert| {
        let _lock = host_lock();
        let before = containers();
        let out = convert.arg("--workdir").arg(&work).output();
        assert_eq!(containers(), before, "c2vm left a container behind");
        assert!(listing(&work).is_empty(), "{:?}", listing(&work));
        out
    };

    // Too small for the files and the header: one line, nothing left behind.
    let small = dir.path().join("small.img");
    let out = convert(
        Convert::new("debian:latest", &small)
            .by_user()
            .arg("--luks-passphrase-file")
            .arg(&pass)
            .args(["--size", "300M"]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = one_error(&out);
    assert!(
        err.contains("too small") && err.contains("LUKS2 header"),
        "{err}"
    );
    assert!(!small.exists());

    let disk = dir.path().join("encrypted.img");
    let out = convert(
        Convert::new("debian:latest", &disk)
            .by_user()
            .password_file(&pw)
            .arg("--luks-passphrase-file")
            .arg(&pass)
            .args(["--hostname", &marker, "--json"]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("Root: encrypted (LUKS2"), "{log}");
    assert!(log.contains("Secure Boot: yes"), "{log}");
    assert!(!log.contains(PASSPHRASE), "{log}");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(!stdout(&out).contains(PASSPHRASE));
    let luks_uuid = report["encryption"]["luks_uuid"]
        .as_str()
        .unwrap()
        .to_string();

    // The header, as cryptsetup reads it at the partition's offset.
    let header = dir.path().join("header.img");
    copy_partition(&disk, 2, &header);
    let dump = tool("cryptsetup", &["luksDump", header.to_str().unwrap()]);
    std::fs::remove_file(&header).unwrap();
    for want in [
        "Version:       \t2",
        &format!("UUID:          \t{luks_uuid}"),
        "cipher: aes-xts-plain64",
        "sector: 4096 [bytes]",
        "offset: 16777216 [bytes]",
        "Key:        512 bits",
        "PBKDF:      argon2id",
    ] {
        assert!(dump.contains(want), "no `{want}` in:\n{dump}");
    }

    // No plain text of the filesystem anywhere on the disk; in the decrypted copy, the marker
    // (so the search can find it) and a clean filesystem holding it.
    assert!(
        !file_contains(&disk, marker.as_bytes()),
        "{marker} is readable on the disk"
    );
    let plain = decrypt_root(&disk, dir.path(), &key_file);
    assert!(file_contains(&plain, marker.as_bytes()));
    tool("e2fsck", &["-fn", plain.to_str().unwrap()]);
    let hostname = tool(
        "debugfs",
        &["-R", "cat /etc/hostname", plain.to_str().unwrap()],
    );
    assert_eq!(hostname.trim(), marker);
    let crypttab = tool(
        "debugfs",
        &["-R", "cat /etc/crypttab", plain.to_str().unwrap()],
    );
    assert!(
        crypttab.contains(&format!("c2vm_root UUID={luks_uuid} none luks,discard")),
        "{crypttab}"
    );
    std::fs::remove_file(&plain).unwrap();

    // Boot 1, UEFI with Secure Boot enforced (the encryption changes nothing of the signed
    // chain), the disk 1 GiB larger: the passphrase typed, the root on the mapping and
    // grown (partition, mapping, filesystem); then the initramfs rebuilt in the VM, with an
    // init-top script that leaves a marker in /run, and copied to the ESP by c2vm's hook.
    let before = report["encryption"]["filesystem"]["size"].as_u64().unwrap();
    tool(
        "qemu-img",
        &["resize", "-f", "raw", disk.to_str().unwrap(), "+1G"],
    );
    let luks = ["--luks-passphrase-file", pass.to_str().unwrap()];
    let rebuild = r#"mkdir -p /etc/initramfs-tools/scripts/init-top
cat > /etc/initramfs-tools/scripts/init-top/c2vm-marker <<'EOS'
#!/bin/sh
[ "$1" = prereqs ] && exit 0
echo rebuilt > /run/c2vm-initrd-marker
EOS
chmod 755 /etc/initramfs-tools/scripts/init-top/c2vm-marker
printf 'MODULES=dep\nCOMPRESSLEVEL=1\n' > /etc/initramfs-tools/conf.d/c2vm-test
update-initramfs -u >/dev/null 2>&1 && echo ok"#;
    let script = boot_facts(&[
        (
            "secure-boot",
            "od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | awk '{print $NF}'",
        ),
        ("rebuilt", rebuild),
        // The rebuilt initramfs is on the ESP (/boot), the one the loader boots.
        (
            "on-esp",
            "[ \"$(findmnt -no FSTYPE -T /boot/initrd.img-$(uname -r))\" = vfat ] && \
             grep -qx \"initrd /initrd.img-$(uname -r)\" /boot/loader/entries/c2vm.conf && echo yes",
        ),
        (
            "unlocks",
            "lsinitramfs /boot/initrd.img-$(uname -r) | grep -E 'bin/cryptsetup|askpass$|dm-crypt' | sed 's,.*/,,' | sort | tr '\\n' ' '",
        ),
    ]);
    let watched = run_watching(
        c2vm()
            .args([
                "run",
                "-vv",
                "--cpus",
                "1",
                "--firmware",
                "uefi-secure",
                "--persist",
            ])
            .args(luks)
            .args(["--login", "root", "--password-file"])
            .arg(&pw)
            .arg("--exec")
            .arg(&script)
            .arg(&disk),
        &[PASSPHRASE],
    );
    let said = stdout(&watched.output);
    eprintln!("--- boot 1 ---\n{said}\n{}", stderr(&watched.output));
    assert_eq!(
        watched.output.status.code(),
        Some(0),
        "{}",
        stderr(&watched.output)
    );
    assert!(watched.leaks.is_empty(), "{:?}", watched.leaks);
    assert!(!stderr(&watched.output).contains(PASSPHRASE));
    let facts = Facts::parse(&said);
    assert_eq!(&facts["state"], "running");
    assert_eq!(&facts["secure-boot"], "1", "Secure Boot enforced");
    assert_eq!(&facts["root-source"], "/dev/mapper/c2vm_root");
    assert_eq!(&facts["root-type"], "crypt");
    assert_eq!(&facts["cipher"], "aes-xts-plain64");
    assert_eq!(&facts["hostname"], marker);
    assert!(facts["dhcp"].starts_with("10.0.2."), "{said}");
    assert_eq!(&facts["failed"], "");
    let grown: u64 = facts["root-size"].parse().unwrap();
    assert!(
        grown > before + 900 * 1024 * 1024,
        "{grown} after {before}: {said}"
    );
    assert_eq!(&facts["rebuilt"], "ok");
    assert_eq!(&facts["on-esp"], "yes");
    // cryptsetup behind c2vm's wrapper (--disable-keyring), its prompt, and dm-crypt.
    let unlocks: Vec<&str> = facts["unlocks"].split_whitespace().collect();
    for file in ["askpass", "cryptsetup", "cryptsetup.c2vm"] {
        assert!(
            unlocks.contains(&file),
            "no {file} in the rebuilt initramfs: {unlocks:?}"
        );
    }
    assert!(
        unlocks.iter().any(|f| f.starts_with("dm-crypt.ko")),
        "{unlocks:?}"
    );

    // Boot 2, BIOS, in the background (`run -d`): c2vm types the passphrase at the console's
    // socket, and the rebuilt initramfs unlocks the root (its marker is in /run); the facts
    // through the agent, no login. The passphrase is in no file of the VM's, its console log
    // included (what is typed is not echoed).
    let state = subdir(dir.path(), "state");
    let c2vm_in = |args: &[&str]| {
        let mut cmd = c2vm();
        cmd.env("XDG_RUNTIME_DIR", &state).args(args);
        cmd
    };
    let up = run(c2vm_in(&["run", "-d", "--name", "enc", "--cpus", "1"])
        .args(luks)
        .arg(&disk));
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    let vm_dir = state.join("c2vm/vms/enc");
    for file in listing(&vm_dir) {
        let path = vm_dir.join(&file);
        if path.is_file() {
            assert!(
                !file_contains(&path, PASSPHRASE.as_bytes()),
                "the passphrase in {file}"
            );
        }
    }
    let out = run(c2vm_in(&["exec", "enc", "--", "sh", "-c"])
        .arg(boot_facts(&[("initrd", "cat /run/c2vm-initrd-marker")])));
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{said}{}", stderr(&out));
    let stop = run(&mut c2vm_in(&["stop", "enc"]));
    assert_eq!(stop.status.code(), Some(0), "{}", stderr(&stop));
    assert_eq!(listing(&state.join("c2vm/vms")), Vec::<String>::new());
    let facts = Facts::parse(&said);
    assert_eq!(&facts["state"], "running");
    assert_eq!(&facts["root-type"], "crypt");
    assert_eq!(&facts["initrd"], "rebuilt");

    // No passphrase for a scripted login: refused before QEMU starts, saying what to give.
    let out = run(c2vm()
        .args([
            "run",
            "--login",
            "root",
            "--exec",
            "true",
            "--password-file",
        ])
        .arg(&pw)
        .arg(&disk));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = the_error(&stderr(&out));
    assert!(
        err.contains("is encrypted") && err.contains("--luks-passphrase-file"),
        "{err}"
    );

    // A wrong passphrase: the guest asks again, and c2vm stops it and says so.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let out = run(c2vm()
        .args([
            "run",
            "--cpus",
            "1",
            "--direct-kernel",
            "--expect",
            "login: ",
            "--luks-passphrase-file",
        ])
        .arg(&wrong)
        .arg(&disk));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = the_error(&stderr(&out));
    assert!(err.contains("refused the passphrase"), "{err}");
}
