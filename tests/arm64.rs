//! arm64 disks made on this amd64 host. The arm64 Debian 13 image is made as the amd64 one is,
//! where no registry answers: debootstrap under emulation (scripts/ensure-debian-image
//! --platform linux/arm64, run by scripts/test). c2vm's Debian template then builds its kernel
//! layer under binfmt_misc and qemu-user-static, and the disk boots on qemu-system-aarch64's
//! `virt` machine with AAVMF, Secure Boot enforced. A FROM scratch app VM gets c2vm's generic
//! kernel bundle for arm64 (built the same way) and c2vm-init for aarch64. Boots of arm64 under
//! TCG are the suite's dearest: the Debian disk boots twice (the second after a kernel update),
//! the app once. The emulated builds take minutes, so they run without the host lock
//! (`Convert::emulated`), and the two tests run side by side.
mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::Path;

const ROOT_ARM64: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";

/// The kernel image c2vm built (or reused) for the conversion that said `said`.
fn kernel_image(said: &str) -> String {
    let at = said
        .find("c2vm-kernel:")
        .unwrap_or_else(|| panic!("no kernel image named in:\n{said}"));
    said[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == ':' || *c == '-')
        .collect()
}

/// `c2vm run` as a user types it, with no architecture flag.
fn c2vm_run(disk: &Path, args: &[&str]) -> std::process::Output {
    run(c2vm().arg("run").args(args).arg(disk))
}

/// The root filesystem's size in bytes, as the guest sees it.
const ROOT_SIZE: &str = "df -B1 --output=size / | tail -n 1 | tr -d ' '";

/// Where the host serves the newer kernel's packages to the guest (10.0.2.2 in QEMU's user
/// network is the host's loopback).
const KERNEL_PORT: u16 = 18094;

/// Debian 13 backports' cloud kernel for arm64, its split packages in one directory
/// (scripts/fetch-test-kernel-arm64, which scripts/test runs; `C2VM_TEST_KERNEL_ARM64` names it).
fn arm64_kernel_debs() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("C2VM_TEST_KERNEL_ARM64") {
        return dir.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-test-kernel-arm64");
    tool(script.to_str().unwrap(), &[]).trim().into()
}

/// A directory served over HTTP on 127.0.0.1 for as long as this lives.
fn file_server(dir: &Path, port: u16) -> Guard<std::process::Child> {
    let child = std::process::Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
        .arg(dir)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = killed_on_drop(child);
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "the file server did not start on port {port}");
    server
}

/// An OCI layout whose index holds `images` (skopeo's `docker-daemon:` names) as one image per
/// platform, with no tags: what a multi-platform image looks like on disk.
fn multi_platform_layout(dir: &Path, images: &[(&str, &str)]) {
    for (image, arch) in images {
        tool(
            "skopeo",
            &[
                "--insecure-policy",
                "copy",
                "-q",
                &format!("docker-daemon:{image}"),
                &format!("oci:{}:{arch}", dir.display()),
            ],
        );
    }
    let path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for entry in index["manifests"].as_array_mut().unwrap() {
        let arch = entry["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap()
            .to_string();
        entry["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        entry.as_object_mut().unwrap().remove("annotations");
    }
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
#[ignore = "needs Docker with arm64 emulation (qemu-user-static), skopeo, mke2fs, qemu-system-aarch64 with AAVMF, and the backports kernel of scripts/fetch-test-kernel-arm64"]
fn debian_arm64_converts_on_amd64_and_boots_with_secure_boot_on_aavmf() {
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    let disk = d.join("arm64.raw");
    // The kernel layer is built under emulation: Debian's cloud kernel, whose package and
    // initramfs are a third of the standard one's, keeps that to minutes.
    let out = Convert::new(ARM64_IMAGE, &disk)
        .password_file(&pw)
        .args(["--platform", "linux/arm64", "--kernel-flavour", "cloud"])
        .arg("--json")
        .reproducible()
        .scratch_beside_output()
        .emulated(arm64_containers)
        .success();
    let said = stderr(&out);
    eprintln!("{said}");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["arch"], "arm64", "{report}");
    assert_eq!(report["secure_boot"]["enabled"], true, "{report}");
    assert!(
        report["kernel"].as_str().unwrap().ends_with("-cloud-arm64"),
        "{report}"
    );

    // The disk, as any tool sees it: GPT clean with the root typed root-arm64, ext4 and FAT
    // clean, the ESP with the arm64 chain and no BIOS loader, no boot code in the MBR.
    assert!(tool("sgdisk", &["-v", disk.to_str().unwrap()]).contains("No problems found"));
    let table: serde_json::Value =
        serde_json::from_str(&tool("sfdisk", &["--json", disk.to_str().unwrap()])).unwrap();
    assert_eq!(
        table["partitiontable"]["partitions"][1]["type"], ROOT_ARM64,
        "{table}"
    );
    let root = format!("{}?offset={}", disk.display(), partition_offset(&disk, 2));
    tool("e2fsck", &["-fn", &root]);
    let esp = d.join("esp.fat");
    copy_partition(&disk, 1, &esp);
    tool("fsck.fat", &["-n", esp.to_str().unwrap()]);
    let files = tool("mdir", &["-i", esp.to_str().unwrap(), "-/", "-b", "::"]);
    for f in [
        "::/EFI/BOOT/BOOTAA64.EFI",
        "::/EFI/BOOT/grubaa64.efi",
        "::/EFI/BOOT/mmaa64.efi",
        "::/loader/entries/c2vm.conf",
        format!("::/vmlinuz-{}", report["kernel"].as_str().unwrap()).as_str(),
    ] {
        assert!(files.lines().any(|l| l == f), "{f} missing:\n{files}");
    }
    // The kernel is on the ESP only: the root's /boot is the empty mount point.
    let boot = tool("debugfs", &["-R", "ls /boot", &root]);
    assert!(
        !boot.contains("vmlinuz") && !boot.contains("initrd"),
        "{boot}"
    );
    assert!(
        !files.contains("syslinux") && !files.contains("X64"),
        "{files}"
    );
    let mut mbr = [0u8; 440];
    std::io::Read::read_exact(&mut std::fs::File::open(&disk).unwrap(), &mut mbr).unwrap();
    assert!(mbr.iter().all(|b| *b == 0), "BIOS boot code in the MBR");

    // One boot, with no architecture flag: c2vm reads it from the disk. Secure Boot enforced
    // with Microsoft's keys; the kernel's console is the virt machine's PL011.
    let facts = facts_script(&[
        ("machine", "uname -m"),
        ("state", "systemctl is-system-running --wait"),
        (
            "dhcp",
            &format!("{WAIT_FOR_DHCP}; ip -4 -o addr show scope global dynamic | wc -l"),
        ),
        ("cmdline", "cat /proc/cmdline"),
        ("secure_boot", SECURE_BOOT_STATE),
        ("lockdown", "cat /sys/kernel/security/lockdown"),
    ]);
    // The same boot then updates the kernel as an admin would: Debian 13 backports' cloud
    // kernel for arm64 (scripts/fetch-test-kernel-arm64), fetched from the host over QEMU's user
    // network and installed with dpkg, whose hooks rebuild the initramfs and put the new pair
    // on the ESP. The initramfs holds only this VM's drivers (MODULES=dep), as in lifecycle's
    // update: less to build under emulation (dpkg took 213 s so, 273 s with Debian's
    // MODULES=most while another emulated build ran beside it). The disk is made larger first: the root grows to fill it at that boot.
    tool(
        "qemu-img",
        &["resize", "-f", "raw", disk.to_str().unwrap(), "3G"],
    );
    let kernel_debs = arm64_kernel_debs();
    let names: Vec<String> = std::fs::read_dir(&kernel_debs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let server = file_server(&kernel_debs, KERNEL_PORT);
    let update = format!(
        "set -e\nmkdir -p /root/k && cd /root/k\n\
         for f in {}; do /usr/lib/apt/apt-helper download-file \"http://10.0.2.2:{KERNEL_PORT}/$f\" \"$f\" >/dev/null 2>&1; done\n\
         printf 'MODULES=dep\\nCOMPRESSLEVEL=1\\n' > /etc/initramfs-tools/conf.d/c2vm-test\n\
         t=$(date +%s)\n\
         export DEBIAN_FRONTEND=noninteractive\n\
         {{ dpkg -i linux-base_*.deb && dpkg -i $(ls *.deb | grep -v '^linux-base_'); }} >/tmp/dpkg.log 2>&1 \
           || {{ tail -n 20 /tmp/dpkg.log; exit 4; }}\n\
         echo took-dpkg=$(($(date +%s) - t))\n\
         new=$(ls /boot/vmlinuz-* | sed 's,^/boot/vmlinuz-,,' | sort -V | tail -n 1)\n\
         echo new-kernel=$new\n\
         grep -qx \"linux /vmlinuz-$new\" /boot/loader/entries/c2vm.conf && echo esp-new=yes\n\
         grep -qx \"linux /vmlinuz-$(uname -r)\" /boot/loader/entries/c2vm-previous.conf && echo esp-previous=yes\n\
         echo in-root=$(find / -xdev \\( -name 'vmlinuz-*' -o -name 'initrd.img-*' \\) -type f | wc -l)\n\
         sync",
        names.join(" ")
    );
    let script = format!("{facts}{}\n{update}", facts_script(&[("size", ROOT_SIZE)]));
    let (status, guest) = Boot::new(&disk, "uefi-secure", &pw)
        .persist()
        .timeout(1200)
        .exec(&script);
    drop(server);
    assert_eq!(status, 0, "{guest}");
    let facts = Facts::parse(&guest);
    assert_eq!(&facts["machine"], "aarch64");
    assert_eq!(&facts["state"], "running");
    assert_eq!(&facts["dhcp"], "1");
    assert!(
        facts["cmdline"].contains("console=ttyAMA0,115200"),
        "{guest}"
    );
    assert_eq!(&facts["secure_boot"], "1");
    assert!(facts["lockdown"].contains("[integrity]"), "{guest}");
    let size: u64 = facts["size"].parse().unwrap();
    assert!(
        size > 2 << 30,
        "the root should fill the 3 GiB disk: {guest}"
    );
    assert_eq!(&facts["esp-new"], "yes", "{guest}");
    // The running kernel stays as the previous entry; both are on the ESP only.
    assert_eq!(&facts["esp-previous"], "yes", "{guest}");
    assert_eq!(&facts["in-root"], "0", "{guest}");
    let new_kernel = facts["new-kernel"].to_string();
    assert!(new_kernel.ends_with("-cloud-arm64"), "{guest}");
    assert_ne!(
        report["kernel"].as_str().unwrap(),
        new_kernel,
        "no newer kernel was installed: {guest}"
    );
    // The next boot, Secure Boot still enforced, runs the new kernel, signed by Debian.
    let booted = facts_script(&[
        ("kernel", "uname -r"),
        ("state", "systemctl is-system-running --wait"),
        ("secure_boot", SECURE_BOOT_STATE),
    ]);
    let (status, guest) = Boot::new(&disk, "uefi-secure", &pw)
        .timeout(600)
        .exec(&booted);
    assert_eq!(status, 0, "{guest}");
    let facts = Facts::parse(&guest);
    assert_eq!(facts["kernel"], new_kernel, "{guest}");
    assert_eq!(&facts["state"], "running", "{guest}");
    assert_eq!(&facts["secure_boot"], "1", "{guest}");

    // What an arm64 machine does not have, in one line each and before QEMU starts.
    let err = one_error(&c2vm_run(&disk, &["--firmware", "bios", "--expect", "x"]));
    assert!(err.contains("arm64 machines have no BIOS"), "{err}");
    let err = one_error(&c2vm_run(&disk, &["--machine", "pc", "--expect", "x"]));
    assert!(err.contains("QEMU's virt machine"), "{err}");
    // No AAVMF (hidden under an empty directory, in a mount namespace of this command alone).
    let empty = subdir(d, "empty");
    let out = run(std::process::Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount --bind \"$1\" /usr/share/AAVMF && exec \"$2\" run --expect x \"$3\"",
            "sh",
        ])
        .arg(&empty)
        .arg(env!("CARGO_BIN_EXE_c2vm"))
        .arg(&disk));
    let err = one_error(&out);
    assert!(
        err.contains("no AAVMF firmware") && err.contains("apt-get install qemu-efi-aarch64"),
        "{err}"
    );

    // The same image in a two-platform OCI layout, read with no engine: with no --platform the
    // host's image (amd64), with it the arm64 one, whose root filesystem is the engine's.
    let amd64 = "c2vm-test/small-amd64:latest";
    let small = small_rootfs(d);
    tool("docker", &["import", small.to_str().unwrap(), amd64]);
    let layout = d.join("layout");
    let arm64 = kernel_image(&said);
    multi_platform_layout(&layout, &[(amd64, "amd64"), (&arm64, "arm64")]);
    let source = format!("oci:{}", layout.display());
    let host = d.join("host.raw");
    let out = Convert::new(&source, &host)
        .arg("--json")
        .env("DOCKER_HOST", "unix:///nonexistent")
        .success();
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["arch"], "amd64", "{report}");
    std::fs::remove_file(&host).unwrap();
    let from_layout = d.join("layout-arm64.raw");
    Convert::new(&source, &from_layout)
        .password_file(&pw)
        .args([
            "--platform",
            "linux/arm64",
            "--kernel",
            "image",
            "--size",
            "2G",
        ])
        .env("DOCKER_HOST", "unix:///nonexistent")
        .reproducible()
        .scratch_beside_output()
        .success();
    // As a VMDK: `c2vm run` reads its architecture through qemu-img, and refuses BIOS for it.
    let vmdk = d.join("arm64.vmdk");
    Convert::new(&arm64, &vmdk)
        .password_file(&pw)
        .args(["--kernel", "image"])
        .success();
    assert!(tool("qemu-img", &["info", vmdk.to_str().unwrap()]).contains("file format: vmdk"));
    let err = one_error(&c2vm_run(&vmdk, &["--firmware", "bios", "--expect", "x"]));
    assert!(err.contains("arm64 machines have no BIOS"), "{err}");
    std::fs::remove_file(&vmdk).unwrap();
    // The engine's export of the same image, its own kernel, is the reference: its tree, read
    // back with debugfs, is the layout's (less what every export adds; see tests/transports.rs).
    std::fs::remove_file(&disk).unwrap();
    let from_engine = d.join("engine-arm64.raw");
    Convert::new(&arm64, &from_engine)
        .password_file(&pw)
        .args(["--kernel", "image", "--size", "2G"])
        .reproducible()
        .scratch_beside_output()
        .locked()
        .success();
    let listing = |disk: &Path, name: &str| {
        let work = d.join(name);
        std::fs::create_dir(&work).unwrap();
        let mut listing = root_listing(disk, &work);
        std::fs::remove_dir_all(&work).unwrap();
        std::fs::remove_file(disk).unwrap();
        for engine_only in ["etc/mtab", "dev/console"] {
            listing.remove(engine_only);
        }
        listing
    };
    let reference = listing(&from_engine, "engine-listing");
    assert!(reference.len() > 5000, "{}", reference.len());
    let diff = listing_diff(&reference, &listing(&from_layout, "layout-listing"), 20);
    assert!(
        diff.is_empty(),
        "the layout's arm64 tree differs from the engine's:\n{}",
        diff.join("\n")
    );
    // An index with no arm64 image: one line naming what it has, and no output.
    let only_amd64 = d.join("only-amd64");
    multi_platform_layout(&only_amd64, &[(amd64, "amd64")]);
    let none = d.join("none.raw");
    let out = Convert::new(&format!("oci:{}", only_amd64.display()), &none)
        .args(["--platform", "linux/arm64"])
        .env("DOCKER_HOST", "unix:///nonexistent")
        .output();
    let err = one_error(&out);
    assert!(
        err.contains("has no linux/arm64 image (it has linux/amd64)"),
        "{err}"
    );
    assert!(!none.exists());
    tool("docker", &["rmi", amd64]);
}

#[test]
#[ignore = "needs Docker with arm64 emulation (qemu-user-static), arm64v8/debian:stable, apt with the arm64 architecture (for busybox-static:arm64) and qemu-system-aarch64 with AAVMF"]
fn a_scratch_arm64_app_gets_the_generic_bundle_and_serves_through_publish() {
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    // A FROM scratch app for arm64, Debian's static busybox (busybox-static:arm64, fetched with
    // apt through the host's multiarch), made into a VM by `c2vm build --platform linux/arm64`:
    // with no kernel and no distribution it gets c2vm's generic bundle, built for arm64 under
    // emulation on arm64v8/debian:stable, and c2vm-init for aarch64 (built by build.rs with
    // Debian's cross toolchain) as PID 1. It serves a page until asked to stop (a CGI), then
    // exits with status 42.
    let context = build_context(
        d,
        "FROM scratch\nCOPY rootfs /\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"sh\", \"/app.sh\"]\n",
    );
    let rootfs = context.join("rootfs");
    let fetched = subdir(d, "deb");
    let out = run(std::process::Command::new("apt-get")
        .args(["download", "-q", "busybox-static:arm64"])
        .current_dir(&fetched));
    assert!(out.status.success(), "{}", stderr(&out));
    let deb = std::fs::read_dir(&fetched)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    tool(
        "dpkg-deb",
        &[
            "-x",
            deb.path().to_str().unwrap(),
            fetched.join("x").to_str().unwrap(),
        ],
    );
    let write = |path: &str, text: &str, mode: u32| {
        let path = rootfs.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
    };
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(fetched.join("x/bin/busybox"), rootfs.join("bin/busybox")).unwrap();
    write(
        "app.sh",
        "bb=/bin/busybox\n$bb mkdir -p /run/app\n\
         $bb httpd -p 8080 -h /www\n\
         while [ ! -e /run/app/stop ]; do $bb sleep 1; done\n\
         echo \"hello from $($bb uname -m)\"\nexit 42\n",
        0o755,
    );
    write("www/index.html", "served by an arm64 VM\n", 0o644);
    write(
        "www/cgi-bin/stop",
        "#!/bin/busybox sh\n/bin/busybox touch /run/app/stop\n\
         printf 'Content-Type: text/plain\\r\\n\\r\\nstopping\\n'\n",
        0o755,
    );
    // The generic bundle for arm64, built here first: its minutes under emulation run without
    // the host lock, with --kernel generic on its own base image, whose containers other tests'
    // checks leave out (see common::containers).
    let generic = d.join("generic.raw");
    let out = Convert::new(ARM64_BUNDLE_BASE, &generic)
        .password_file(&pw)
        .args(["--kernel", "generic"])
        .scratch_beside_output()
        .emulated(arm64_bundle_containers)
        .success();
    assert!(
        stderr(&out).contains("Kernel: c2vm's generic bundle"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&generic).unwrap();
    // Written as qcow2 and as a KubeVirt containerDisk (an OCI layout), whose config says arm64.
    let app = d.join("app.qcow2");
    let containerdisk = d.join("containerdisk");
    let lock = host_lock(); // docker build makes containers
    let out = run(c2vm()
        .arg("build")
        .arg(&context)
        .args(["--platform", "linux/arm64", "--json", "--containerdisk"])
        .arg(format!("oci:{}:v1", containerdisk.display()))
        .arg("-o")
        .arg(&app));
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    drop(lock);
    assert!(
        said.contains("Kernel: c2vm's generic bundle") && said.contains("Init: c2vm-init"),
        "{said}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["arch"], "arm64", "{report}");
    assert!(
        report["kernel"].as_str().unwrap().ends_with("-cloud-arm64"),
        "{report}"
    );
    let read_json = |path: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let blob = |digest: &serde_json::Value| {
        let digest = digest.as_str().unwrap().replace(':', "/");
        containerdisk.join("blobs").join(digest)
    };
    let index = read_json(containerdisk.join("index.json"));
    let manifest = read_json(blob(&index["manifests"][0]["digest"]));
    let config = read_json(blob(&manifest["config"]["digest"]));
    assert_eq!(config["architecture"], "arm64", "{config}");
    // Booted with Secure Boot enforced through the bundle's signed chain, its port published:
    // the page is served, the CGI stops the app, and its status leaves `c2vm run`.
    let started = std::time::Instant::now();
    let vm = std::process::Command::new(env!("CARGO_BIN_EXE_c2vm"))
        .args(["run", "--cpus", "1", "--firmware", "uefi-secure"])
        .args(["--publish", "18093:8080"])
        .arg(&app)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let curl = |path: &str| {
        let url = format!("http://127.0.0.1:18093{path}");
        let out = std::process::Command::new("curl")
            .args(["-s", "-m", "5", &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut page = String::new();
    while page.is_empty() && started.elapsed() < std::time::Duration::from_secs(300) {
        std::thread::sleep(std::time::Duration::from_secs(1));
        page = curl("/");
    }
    eprintln!("page after {:?}", started.elapsed());
    if page.is_empty() {
        // SAFETY: ends the VM's process group (c2vm and QEMU), so its console can be shown.
        unsafe { libc::kill(-(vm.id() as i32), libc::SIGTERM) };
    }
    let stopping = curl("/cgi-bin/stop");
    let out = vm.wait_with_output().unwrap();
    let console = stdout(&out);
    assert_eq!(page, "served by an arm64 VM\n", "{console}");
    assert_eq!(stopping, "stopping\n", "{console}");
    assert_eq!(out.status.code(), Some(42), "{console}\n{}", stderr(&out));
    assert!(console.contains("hello from aarch64"), "{console}");

    // The same disk as a VM that stays up: c2vm-init for aarch64 serves the guest agent.
    let state = subdir(d, "state");
    let c2vm_in = |args: &[&str]| {
        let mut cmd = c2vm();
        cmd.env("XDG_RUNTIME_DIR", &state).args(args);
        run(&mut cmd)
    };
    let started = std::time::Instant::now();
    let up = c2vm_in(&[
        "run",
        "-d",
        "--name",
        "arm",
        "--cpus",
        "1",
        app.to_str().unwrap(),
    ]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    eprintln!("agent answered after {:?}", started.elapsed());
    let out = c2vm_in(&[
        "exec",
        "arm",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox uname -m; echo apart >&2; exit 77",
    ]);
    assert_eq!(
        (out.status.code(), stdout(&out), stderr(&out)),
        (Some(77), "aarch64\n".to_string(), "apart\n".to_string())
    );
    let out = run_with_input(
        c2vm().env("XDG_RUNTIME_DIR", &state).args([
            "exec",
            "-i",
            "arm",
            "--",
            "/bin/busybox",
            "tr",
            "a-z",
            "A-Z",
        ]),
        b"arm",
    );
    assert_eq!(stdout(&out), "ARM");
    let out = c2vm_in(&["wait", "arm", "--port", "8080", "--timeout", "120"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = d.join("index.html");
    let out = c2vm_in(&["cp", "arm:/www/index.html", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&page).unwrap(),
        "served by an arm64 VM\n"
    );
    let out = c2vm_in(&["stop", "arm"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(listing(&state.join("c2vm/vms")), Vec::<String>::new());

    // The same app as an ISO (its UEFI boot image only: arm64 has no BIOS), booted as a CD on
    // AAVMF with Secure Boot enforced: the agent answers, and the root is the live overlay.
    let iso = d.join("app.iso");
    let lock = host_lock();
    let out = run(c2vm()
        .arg("build")
        .arg(&context)
        .args(["--platform", "linux/arm64", "-o"])
        .arg(&iso));
    drop(lock);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = el_torito(&iso);
    assert!(
        report.contains("El Torito boot img :   1  UEFI") && !report.contains("BIOS"),
        "{report}"
    );
    let started = std::time::Instant::now();
    let up = c2vm_in(&[
        "run",
        "-d",
        "--name",
        "arm-iso",
        "--cpus",
        "1",
        "--firmware",
        "uefi-secure",
        iso.to_str().unwrap(),
    ]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    eprintln!("ISO: agent answered after {:?}", started.elapsed());
    let out = c2vm_in(&[
        "exec",
        "arm-iso",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox uname -m; /bin/busybox grep -c '^overlay / overlay' /proc/mounts",
    ]);
    let _ = c2vm_in(&["kill", "arm-iso"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(0), "aarch64\n1\n".to_string()),
        "{}",
        stderr(&out)
    );
}
