//! Where the disks go: cloud formats (GCE, Azure, VMDK) checked structurally, compressed qcow2
//! by default, `--json`, KubeVirt containerDisks (engine, OCI layout, registry), c2vm as a
//! container with no privileges, shell completions and the man page.
mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const GIB: u64 = 1 << 30;

fn qemu_info(path: &Path) -> serde_json::Value {
    serde_json::from_str(&tool(
        "qemu-img",
        &["info", "--output=json", path.to_str().unwrap()],
    ))
    .unwrap()
}

/// The disks' comparisons say "different" only when the bytes differ: a `cmp` that could not
/// compare (a missing disk) fails the test with cmp's reason instead of passing an
/// `assert!(!same_bytes(..))`.
#[test]
fn same_bytes_tells_a_difference_from_a_comparison_that_failed() {
    let dir = scratch();
    let d = dir.path();
    let (a, b, c) = (d.join("a"), d.join("b"), d.join("c"));
    std::fs::write(&a, b"disk").unwrap();
    std::fs::write(&b, b"disk").unwrap();
    std::fs::write(&c, b"DISK").unwrap();
    assert!(same_bytes(&a, &b));
    assert!(!same_bytes(&a, &c));
    let missing = d.join("missing");
    let failed = std::panic::catch_unwind(|| same_bytes(&a, &missing))
        .expect_err("comparing with a missing file must fail, not say \"different\"");
    let said = failed
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        said.contains("could not compare") && said.contains("No such file or directory"),
        "{said}"
    );
}

#[test]
#[ignore = "needs mke2fs, qemu-img, GNU tar"]
fn cloud_formats_hold_the_same_disk_in_the_shape_each_cloud_imports() {
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    // What is checked is each format's shape around the same disk, not what boots from it.
    let rootfs = format!("rootfs:{}", small_rootfs(d).display());
    let convert = |out: &Path, extra: &[&str]| {
        Convert::new(&rootfs, out)
            .password_file(&pw)
            .reproducible()
            .scratch_beside_output()
            .args(extra)
            .success()
    };
    let raw = d.join("disk.img");
    convert(&raw, &["--size", "2G"]);

    // GCE: exactly disk.raw, sparse (GNU oldgnu 'S'), a whole number of GiB, the same bytes.
    let gce = d.join("disk.tar.gz");
    convert(&gce, &["--size", "2G"]);
    let listing = tool("tar", &["-tvzf", gce.to_str().unwrap()]);
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(names, ["disk.raw"], "{listing}");
    let mut header = [0u8; 512];
    std::io::Read::read_exact(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&gce).unwrap()),
        &mut header,
    )
    .unwrap();
    assert_eq!(header[156], b'S', "disk.raw is not stored sparse");
    let unpacked = subdir(d, "gce");
    tool(
        "tar",
        &[
            "-xSzf",
            gce.to_str().unwrap(),
            "-C",
            unpacked.to_str().unwrap(),
        ],
    );
    let disk_raw = unpacked.join("disk.raw");
    assert_eq!(std::fs::metadata(&disk_raw).unwrap().len() % GIB, 0);
    assert!(
        same_bytes(&disk_raw, &raw),
        "GCE's disk.raw differs from the raw conversion"
    );
    // With --size auto too the disk is whole GiB.
    let auto = d.join("auto.tar.gz");
    convert(&auto, &[]);
    let listing = tool("tar", &["-tvzf", auto.to_str().unwrap()]);
    let size: u64 = listing.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(size > 0 && size % GIB == 0, "{listing}");

    // Azure: a fixed VHD of a whole number of MiB whose data is the raw disk.
    let vhd = d.join("disk.vhd");
    convert(&vhd, &["--size", "2G"]);
    // A fixed VHD is the data with a footer: qemu-img probes it as raw, so name the format.
    let info: serde_json::Value = serde_json::from_str(&tool(
        "qemu-img",
        &["info", "-f", "vpc", "--output=json", vhd.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(info["format"], "vpc", "{info}");
    let virtual_size = info["virtual-size"].as_u64().unwrap();
    assert_eq!(virtual_size % (1 << 20), 0, "{info}");
    let bytes = std::fs::read(&vhd).unwrap();
    let footer = &bytes[bytes.len() - 512..];
    assert_eq!(&footer[..8], b"conectix");
    assert_eq!(
        u32::from_be_bytes(footer[60..64].try_into().unwrap()),
        2,
        "the disk type is not fixed"
    );
    let back = d.join("vhd.raw");
    tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "vpc",
            "-O",
            "raw",
            vhd.to_str().unwrap(),
            back.to_str().unwrap(),
        ],
    );
    assert!(
        same_bytes(&back, &raw),
        "the VHD's data differs from the raw conversion"
    );

    // VMDK: streamOptimized by default (AWS and VMware import it), monolithicSparse on request.
    for (extra, create_type) in [
        (vec![], "streamOptimized"),
        (
            vec!["--vmdk-subformat", "monolithicSparse"],
            "monolithicSparse",
        ),
    ] {
        let vmdk = d.join(format!("{create_type}.vmdk"));
        convert(&vmdk, &extra);
        let info = qemu_info(&vmdk);
        assert_eq!(
            info["format-specific"]["data"]["create-type"], create_type,
            "{info}"
        );
        tool("qemu-img", &["check", vmdk.to_str().unwrap()]);
    }

    // --compress on a format without clusters is refused in one line.
    let out = Convert::new(&rootfs, &d.join("x.vhd"))
        .args(["--compress", "zstd"])
        .output();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--compress applies to qcow2"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[ignore = "needs the debootstrap test rootfs, mke2fs, qemu-img, blkid"]
fn json_says_what_the_disk_holds() {
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    let disk = d.join("disk.img");
    let said = stdout(
        &Convert::rootfs(&disk)
            .password_file(&pw)
            .reproducible()
            .scratch_beside_output()
            .args(["--json"])
            .success(),
    );
    let json: serde_json::Value = serde_json::from_str(&said).expect("--json prints JSON");
    let info = qemu_info(&disk);
    assert_eq!(json["format"], "raw");
    assert_eq!(json["virtual_size"], info["virtual-size"], "{json}");
    assert_eq!(json["allocated"], info["actual-size"], "{json}");
    assert_eq!(json["output"], disk.to_str().unwrap());
    let root_offset = json["partitions"]["root"]["offset"].as_u64().unwrap();
    assert_eq!(root_offset, partition_offset(&disk, 2));
    let uuid = tool(
        "blkid",
        &[
            "-p",
            "-O",
            &root_offset.to_string(),
            "-s",
            "UUID",
            "-o",
            "value",
            disk.to_str().unwrap(),
        ],
    );
    assert_eq!(json["identifiers"]["root_fs_uuid"], uuid.trim(), "{json}");
    assert!(json["kernel"].as_str().unwrap().starts_with("6."), "{json}");
    // Debian 12 has no signed systemd-boot: the test rootfs gets the unsigned loaders, and why.
    assert_eq!(json["secure_boot"]["enabled"], false, "{json}");
    assert!(
        json["secure_boot"]["reason"]
            .as_str()
            .unwrap()
            .contains("systemd-bootx64.efi.signed"),
        "{json}"
    );
    assert!(
        json["image"]["id"].as_str().unwrap().starts_with("sha256:"),
        "{json}"
    );
    for stage in ["rootfs", "esp", "bootloader"] {
        assert!(
            json["timings"][stage].as_f64().is_some(),
            "no {stage} timing: {json}"
        );
    }
}

#[test]
#[ignore = "needs Docker with debian:latest, mke2fs and qemu-img"]
fn debian_latest_qcow2_is_compressed_with_zstd_by_default() {
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    let convert = |out: &Path, extra: &[&str]| {
        Convert::new("debian:latest", out)
            .password_file(&pw)
            .args(extra)
            .locked()
            .success();
        std::fs::metadata(out).unwrap().len()
    };
    let small = d.join("zstd.qcow2");
    let plain = d.join("plain.qcow2");
    let compressed = convert(&small, &[]);
    let uncompressed = convert(&plain, &["--compress", "none"]);
    // Most of what is left is compressed already (xz modules, the zstd initramfs and the kernel,
    // twice: in /boot and on the ESP), and the one pass writes no zeroed blocks to squeeze:
    // about 63% of the uncompressed qcow2, and 35% of the 670 MiB disk of before the one pass.
    assert!(
        compressed * 100 <= uncompressed * 70,
        "the default qcow2 is {compressed} bytes, {}% of the uncompressed {uncompressed}",
        compressed * 100 / uncompressed
    );
    let info = qemu_info(&small);
    assert_eq!(
        info["format-specific"]["data"]["compression-type"], "zstd",
        "{info}"
    );
    // The other compression: what the qcow2 says, not the image, matters here (a small tree).
    let zlib = d.join("zlib.qcow2");
    Convert::new(&format!("rootfs:{}", small_rootfs(d).display()), &zlib)
        .password_file(&pw)
        .scratch_beside_output()
        .args(["--compress", "zlib"])
        .success();
    assert_eq!(
        qemu_info(&zlib)["format-specific"]["data"]["compression-type"],
        "zlib"
    );
}

#[test]
#[ignore = "needs Docker, skopeo, docker-registry, the debootstrap test rootfs, mke2fs, qemu-img"]
fn containerdisks_hold_only_the_disk_owned_by_qemu_in_the_engine_a_layout_and_a_registry() {
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    let registry = Registry::start("http");
    let remote = format!("{}/c2vm-test/containerdisk:1", registry.host());
    let layout = d.join("layout");
    let tag = "c2vm-test/containerdisk:latest";
    // Each goes with its SBOM and its provenance signed with an Ed25519 key; the same ones each
    // time (SOURCE_DATE_EPOCH, the same disk; Ed25519 signatures are deterministic).
    let sbom = d.join("vm.spdx.json");
    let provenance = d.join("vm.intoto.json");
    let key = d.join("key.pem");
    tool(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            key.to_str().unwrap(),
        ],
    );
    for dest in [
        tag.to_string(),
        format!("oci:{}:v1", layout.display()),
        format!("docker://{remote}"),
    ] {
        let _lock = host_lock();
        let disk = d.join("vm.qcow2");
        let _ = std::fs::remove_file(&disk);
        Convert::rootfs(&disk)
            .password_file(&pw)
            .reproducible()
            .scratch_beside_output()
            .args(["--containerdisk", &dest])
            .args(["--sbom", sbom.to_str().unwrap(), "--force"])
            .args(["--provenance", provenance.to_str().unwrap()])
            .args(["--sign-key", key.to_str().unwrap()])
            .success();
        assert!(disk.exists(), "the disk itself is written too");
    }

    // The engine's: one layer, the labels, and only disk/vm.qcow2 owned 107:107.
    let inspect: serde_json::Value =
        serde_json::from_str(&tool("docker", &["image", "inspect", tag])).unwrap();
    assert_eq!(
        inspect[0]["RootFS"]["Layers"].as_array().unwrap().len(),
        1,
        "{inspect}"
    );
    let labels = &inspect[0]["Config"]["Labels"];
    assert!(
        labels["io.c2vm.source"]
            .as_str()
            .unwrap()
            .starts_with("rootfs:"),
        "{labels}"
    );
    assert!(
        labels["io.c2vm.source.digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{labels}"
    );
    assert_eq!(labels["io.c2vm.version"], env!("CARGO_PKG_VERSION"));
    assert!(
        labels["io.c2vm.kernel"].as_str().unwrap().starts_with("6."),
        "{labels}"
    );
    let files = {
        let _lock = host_lock();
        let id = tool("docker", &["create", tag, "/none"]).trim().to_string();
        let export = Command::new("docker")
            .args(["export", &id])
            .output()
            .unwrap();
        tool("docker", &["rm", &id]);
        export.stdout
    };
    let mut archive = tar::Archive::new(files.as_slice());
    let mut regular = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        // The engine adds .dockerenv, /etc's mount points and empty /dev, /proc, /sys.
        if entry.header().entry_type().is_file() && entry.size() > 0 {
            let (uid, gid, mode) = (
                entry.header().uid().unwrap(),
                entry.header().gid().unwrap(),
                entry.header().mode().unwrap(),
            );
            let qcow2 = d.join("from-image.qcow2");
            let mut out = std::fs::File::create(&qcow2).unwrap();
            std::io::copy(&mut entry, &mut out).unwrap();
            tool("qemu-img", &["check", qcow2.to_str().unwrap()]);
            regular.push(format!("{name} {uid}:{gid} {:o}", mode & 0o7777));
        }
    }
    assert_eq!(regular, ["disk/vm.qcow2 107:107 440"]);
    tool("docker", &["rmi", tag]);

    // The layout's and the registry's, as skopeo reads them.
    for (source, flags) in [
        (format!("oci:{}:v1", layout.display()), vec![]),
        (format!("docker://{remote}"), vec!["--tls-verify=false"]),
    ] {
        let inspect: serde_json::Value = serde_json::from_str(&tool(
            "skopeo",
            &[&["inspect"], flags.as_slice(), &[source.as_str()]].concat(),
        ))
        .unwrap();
        assert_eq!(
            inspect["Layers"].as_array().unwrap().len(),
            1,
            "{source}: {inspect}"
        );
        assert_eq!(
            inspect["Labels"]["io.c2vm.version"],
            env!("CARGO_PKG_VERSION"),
            "{source}"
        );
        assert_eq!(
            inspect["Labels"]["org.opencontainers.image.title"], "vm.qcow2",
            "{source}"
        );
    }

    // The provenance: a DSSE envelope that securesystemslib verifies against the public key,
    // and refuses once a byte of its statement changes; the statement's subject is the disk,
    // and neither the password nor its file's name is in it.
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&provenance).unwrap()).unwrap();
    verify_dsse(&envelope, &key).unwrap();
    let statement: serde_json::Value =
        serde_json::from_slice(&base64_decode(envelope["payload"].as_str().unwrap())).unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(statement["subject"][0]["name"], "vm.qcow2");
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        sha256_hex(&std::fs::read(d.join("vm.qcow2")).unwrap()).as_str()
    );
    let text = statement.to_string();
    let password = std::fs::read_to_string(&pw).unwrap();
    let pw_name = pw.file_name().unwrap().to_str().unwrap();
    assert!(
        !text.contains(password.trim()) && !text.contains(pw_name),
        "{text}"
    );
    let mut tampered = envelope.clone();
    let mut payload = base64_decode(envelope["payload"].as_str().unwrap());
    payload[10] ^= 1;
    tampered["payload"] = base64_encode(&payload).into();
    assert!(
        verify_dsse(&tampered, &key).is_err(),
        "a changed byte verifies"
    );

    // Both are the containerDisk's referrers: an artifact of their type whose subject is the
    // containerDisk's manifest and whose one layer is the file's bytes. In the layout, its index
    // lists them beside the tag; in the registry (distribution 2.8, with no referrers API), the
    // fallback index tagged sha256-HEX of the subject does. (The provenance records where the
    // containerDisk went, so the layout's is its own: it verifies and names the same disk.)
    let attached = [
        ("application/spdx+json", &sbom),
        ("application/vnd.dsse.envelope.v1+json", &provenance),
    ];
    let check = |manifests: &[serde_json::Value],
                 subject: &str,
                 blob: &dyn Fn(&str) -> Vec<u8>,
                 layer: &dyn Fn(&str, &Path, &str)| {
        for (kind, file) in attached {
            let listed: Vec<&serde_json::Value> = manifests
                .iter()
                .filter(|m| m["artifactType"] == kind)
                .collect();
            assert_eq!(listed.len(), 1, "{kind}: {manifests:?}");
            let artifact: serde_json::Value =
                serde_json::from_slice(&blob(listed[0]["digest"].as_str().unwrap())).unwrap();
            assert_eq!(artifact["subject"]["digest"], subject, "{artifact}");
            layer(
                kind,
                file,
                artifact["layers"][0]["digest"].as_str().unwrap(),
            );
            assert_eq!(
                artifact["layers"][0]["annotations"]["org.opencontainers.image.title"],
                file.file_name().unwrap().to_str().unwrap()
            );
        }
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    let tagged = manifests
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "v1")
        .unwrap();
    let layout_blob = |digest: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let in_layout = |kind: &str, file: &Path, digest: &str| {
        let data = layout_blob(digest);
        if kind == "application/spdx+json" {
            assert_eq!(data, std::fs::read(file).unwrap());
        } else {
            let envelope: serde_json::Value = serde_json::from_slice(&data).unwrap();
            verify_dsse(&envelope, &key).unwrap();
            let payload = base64_decode(envelope["payload"].as_str().unwrap());
            let statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(statement["subject"], envelope_subject(&provenance));
        }
    };
    check(
        manifests,
        tagged["digest"].as_str().unwrap(),
        &layout_blob,
        &in_layout,
    );
    let pushed: serde_json::Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{remote}"),
        ],
    ))
    .unwrap();
    let subject = pushed["Digest"].as_str().unwrap();
    let repo = format!("http://{}/v2/c2vm-test/containerdisk", registry.host());
    let get = |what: &str| {
        tool(
            "curl",
            &[
                "-sf",
                "-H",
                "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
                &format!("{repo}/manifests/{what}"),
            ],
        )
        .into_bytes()
    };
    let fallback: serde_json::Value =
        serde_json::from_slice(&get(&subject.replace(':', "-"))).unwrap();
    let same_file = |_: &str, file: &Path, digest: &str| {
        let expected = format!("sha256:{}", sha256_hex(&std::fs::read(file).unwrap()));
        assert_eq!(digest, expected, "{}", file.display());
    };
    check(
        fallback["manifests"].as_array().unwrap(),
        subject,
        &get,
        &same_file,
    );
}

/// The subject of the statement in the DSSE envelope `path`.
fn envelope_subject(path: &Path) -> serde_json::Value {
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let payload = base64_decode(envelope["payload"].as_str().unwrap());
    serde_json::from_slice::<serde_json::Value>(&payload).unwrap()["subject"].clone()
}

/// securesystemslib's verification of a DSSE envelope against the public half of the PEM
/// private key `key`, told the key's id as c2vm names it (the sha256 of its DER public key, as
/// openssl writes it).
fn verify_dsse(envelope: &serde_json::Value, key: &Path) -> Result<(), String> {
    let public = tool(
        "openssl",
        &["pkey", "-in", key.to_str().unwrap(), "-pubout"],
    );
    let der = Command::new("openssl")
        .args([
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ])
        .output()
        .unwrap()
        .stdout;
    let script = "import json, sys\n\
        from securesystemslib.dsse import Envelope\n\
        from securesystemslib.signer import SSlibKey\n\
        from cryptography.hazmat.primitives.serialization import load_pem_public_key\n\
        args = json.load(sys.stdin)\n\
        key = SSlibKey.from_crypto(load_pem_public_key(args['public'].encode()), keyid=args['keyid'])\n\
        Envelope.from_dict(args['envelope']).verify([key], 1)\n";
    let input = serde_json::json!({
        "public": public,
        "keyid": sha256_hex(&der),
        "envelope": envelope,
    });
    let out = run_with_input(
        Command::new(sbom_tools().join("python3")).args(["-c", script]),
        input.to_string().as_bytes(),
    );
    match out.status.success() {
        true => Ok(()),
        false => Err(stderr(&out)),
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
#[ignore = "needs Docker with debian:latest, the test user, and QEMU"]
fn c2vm_runs_as_a_container_with_no_privileges_and_the_disk_is_the_callers() {
    // The c2vm under test, not a second (release) build of it.
    let image = run_script(
        "container-image",
        &[("C2VM_BIN", env!("CARGO_BIN_EXE_c2vm"))],
    );
    let _ = c2vm_as_user(); // makes the test user, in the docker group
    let out_dir = user_scratch();
    let pw = password_file(out_dir.path());
    let uid = tool("id", &["-u", USER]).trim().to_string();
    let gid = tool("id", &["-g", USER]).trim().to_string();
    let socket_gid = tool("stat", &["-c", "%g", "/var/run/docker.sock"])
        .trim()
        .to_string();
    let output = {
        let _lock = host_lock();
        run(Command::new("docker")
            .args([
                "run",
                "--rm",
                "-v",
                "/var/run/docker.sock:/var/run/docker.sock",
                "-v",
            ])
            .arg(format!("{}:/out", out_dir.path().display()))
            .args([
                "--user",
                &format!("{uid}:{gid}"),
                "--group-add",
                &socket_gid,
                &image,
            ])
            .args([
                "convert",
                "debian:latest",
                "-o",
                "/out/d.qcow2",
                "--password-file",
                "/out/password",
            ]))
    };
    assert!(
        output.status.success(),
        "c2vm in a container: {}",
        stderr(&output)
    );
    let disk = out_dir.path().join("d.qcow2");
    let owner = tool("stat", &["-c", "%u:%g", disk.to_str().unwrap()]);
    assert_eq!(owner.trim(), format!("{uid}:{gid}"));
    let inspect = tool(
        "docker",
        &["image", "inspect", "-f", "{{.Config.User}}", &image],
    );
    assert!(
        inspect.trim().is_empty() || inspect.trim() == "root",
        "{inspect}"
    );
    // The default qcow2 (zstd, checked above on the host's c2vm), made larger before its first
    // boot: it boots, and the root fills the new size.
    let info = qemu_info(&disk);
    assert_eq!(
        info["format-specific"]["data"]["compression-type"], "zstd",
        "{info}"
    );
    let before = info["virtual-size"].as_u64().unwrap();
    tool(
        "qemu-img",
        &["resize", "-f", "qcow2", disk.to_str().unwrap(), "+2G"],
    );
    let (status, said) = boot_exec(
        &disk,
        DIRECT,
        &pw,
        "sed -n 's/^ID=/id=/p' /etc/os-release; systemctl is-system-running --wait >/dev/null; \
         echo root=$(df -B1 --output=size / | tail -n1)",
    );
    assert_eq!(status, 0, "{said}");
    let facts = Facts::parse(&said);
    assert_eq!(&facts["id"], "debian", "{said}");
    let root: u64 = facts["root"]
        .parse()
        .unwrap_or_else(|_| panic!("guest said: {said}"));
    assert!(
        root > before,
        "the root ({root} bytes) did not grow past the old disk ({before})"
    );
}

#[test]
#[ignore = "needs bash and man-db"]
fn completions_complete_and_the_man_page_names_every_subcommand() {
    let dir = scratch();
    let d = dir.path();
    let script = d.join("c2vm.bash");
    let out = run(c2vm().args(["completions", "bash"]));
    assert!(out.status.success());
    std::fs::write(&script, &out.stdout).unwrap();
    tool("bash", &["-n", script.to_str().unwrap()]);
    let completed = tool(
        "bash",
        &[
            "-c",
            &format!(
                "source {}; COMP_WORDS=(c2vm con); COMP_CWORD=1; COMP_LINE='c2vm con'; COMP_POINT=8; _c2vm c2vm con c2vm; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ),
        ],
    );
    assert_eq!(completed.trim(), "convert", "{completed}");
    for shell in ["zsh", "fish"] {
        let out = run(c2vm().args(["completions", shell]));
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }

    let man = d.join("man");
    let out = run(c2vm().arg("man").arg(&man));
    assert!(out.status.success(), "{}", stderr(&out));
    let page = tool(
        "man",
        &["-l", "-P", "cat", man.join("c2vm.1").to_str().unwrap()],
    );
    for sub in ["convert", "build", "run", "completions", "man"] {
        assert!(page.contains(sub), "c2vm.1 does not name {sub}:\n{page}");
        let sub_page = man.join(format!("c2vm-{sub}.1"));
        assert!(sub_page.exists(), "no {}", sub_page.display());
    }
    let convert = tool(
        "man",
        &[
            "-l",
            "-P",
            "cat",
            man.join("c2vm-convert.1").to_str().unwrap(),
        ],
    );
    assert!(
        convert.contains("--containerdisk") && convert.contains("--compress"),
        "{convert}"
    );
}
