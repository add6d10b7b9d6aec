//! Images with no engine: `oci:`, `oci-archive:`, `docker-archive:` (both layouts) and
//! `docker://` from a real registry (Debian's docker-registry, plain HTTP and TLS with htpasswd
//! auth), made with skopeo. Each conversion runs with DOCKER_HOST pointing at nothing; its root
//! filesystem must hold what the engine's export holds, and every transport must give the same
//! disk, byte for byte; whiteouts; and bad input.
mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const NO_ENGINE: &str = "unix:///nonexistent/c2vm-test-no-engine.sock";
/// Stands in an SSH private key beside the public one: c2vm must never read it.
const PRIVATE_KEY_CANARY: &str = "-----BEGIN OPENSSH PRIVATE KEY----- c2vm-canary";

fn skopeo(args: &[&str]) {
    tool(
        "skopeo",
        &[&["--insecure-policy", "copy", "-q"], args].concat(),
    );
}

/// `debian:latest` with the kernel c2vm's Debian template adds: an image that boots with its
/// own kernel. Its tag is the note c2vm prints (the template's result is cached in the engine).
/// debian:latest from the engine, as an OCI layout at `dir` (tag `latest`).
fn debian_layout(dir: &Path) -> std::path::PathBuf {
    skopeo(&[
        "docker-daemon:debian:latest",
        &format!("oci:{}:latest", dir.display()),
    ]);
    dir.to_path_buf()
}

fn image_with_kernel(dir: &Path) -> String {
    let pw = password_file(dir);
    let out = Convert::new("debian:latest", &dir.join("template.raw"))
        .password_file(&pw)
        .locked()
        .success();
    let said = stderr(&out);
    std::fs::remove_file(dir.join("template.raw")).unwrap();
    let tag = regex::Regex::new(r"c2vm-kernel:[0-9a-f]{16}")
        .unwrap()
        .find(&said)
        .unwrap_or_else(|| panic!("no kernel image named in: {said}"))
        .as_str()
        .to_string();
    tag
}

/// An OCI layout inside a docker-archive, as Docker 25 and later write `docker save`:
/// `manifest.json` naming blobs of the layout, beside its `index.json`.
fn docker_archive_with_oci_layout(oci_dir: &Path, out: &Path) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci_dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci_dir.join(blob(digest))).unwrap()).unwrap();
    let docker_manifest = serde_json::json!([{
        "Config": blob(manifest["config"]["digest"].as_str().unwrap()),
        "RepoTags": ["c2vm-test/with-kernel:latest"],
        "Layers": manifest["layers"].as_array().unwrap().iter()
            .map(|l| blob(l["digest"].as_str().unwrap())).collect::<Vec<_>>(),
    }]);
    std::fs::write(
        oci_dir.join("manifest.json"),
        serde_json::to_vec(&docker_manifest).unwrap(),
    )
    .unwrap();
    tool(
        "tar",
        &[
            "-cf",
            out.to_str().unwrap(),
            "-C",
            oci_dir.to_str().unwrap(),
            ".",
        ],
    );
    std::fs::remove_file(oci_dir.join("manifest.json")).unwrap();
}

#[test]
#[ignore = "needs Docker, skopeo, docker-registry, mke2fs and QEMU"]
fn every_transport_gives_the_engines_tree_with_no_engine_and_one_boots() {
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    let image = image_with_kernel(d);

    // The reference: the same image through the engine, its own kernel.
    let engine_disk = d.join("engine.raw");
    // It makes a container: locked, not while another test counts them. The size is the
    // others' (below): the disk's UUIDs, and so fstab and the loader entries, depend on it.
    Convert::new(&image, &engine_disk)
        .reproducible()
        .args(["--kernel", "image", "--size", "2G"])
        .password_file(&pw)
        .locked()
        .success();
    let work = subdir(d, "engine-listing");
    let reference = root_listing(&engine_disk, &work);
    std::fs::remove_file(&engine_disk).unwrap();
    assert!(
        reference.len() > 5000,
        "the engine's tree is too small: {}",
        reference.len()
    );

    // The same image in every transport: skopeo reads it from the engine once, into a layout
    // with gzip layers (level 1: the fastest; compression is not what is tested), and writes
    // every other transport from that layout, reusing its compressed layers where it can.
    let oci = d.join("oci");
    skopeo(&[
        "--dest-compress-level",
        "1",
        &format!("docker-daemon:{image}"),
        &format!("oci:{}:latest", oci.display()),
    ]);
    let from_layout = format!("oci:{}:latest", oci.display());
    // The layers compressed with zstd (gzip is skopeo's default; docker-archive's legacy
    // layout holds plain tars).
    let oci_zstd = d.join("oci-zstd");
    skopeo(&[
        "--dest-compress-format",
        "zstd",
        &from_layout,
        &format!("oci:{}:latest", oci_zstd.display()),
    ]);
    let zstd_blobs = tool(
        "grep",
        &["-rl", "tar+zstd", oci_zstd.join("blobs").to_str().unwrap()],
    );
    assert!(!zstd_blobs.is_empty(), "skopeo wrote no zstd layer");
    let oci_archive = d.join("oci-archive.tar");
    skopeo(&[
        &from_layout,
        &format!("oci-archive:{}:latest", oci_archive.display()),
    ]);
    let docker_archive = d.join("docker-archive.tar");
    skopeo(&[
        &from_layout,
        &format!("docker-archive:{}:{image}", docker_archive.display()),
    ]);
    let docker_archive_oci = d.join("docker-archive-oci.tar");
    docker_archive_with_oci_layout(&oci, &docker_archive_oci);
    let registry = Registry::start("http");
    let remote = format!("{}/c2vm-test/with-kernel:latest", registry.host());
    skopeo(&[
        "--dest-tls-verify=false",
        &from_layout,
        &format!("docker://{remote}"),
    ]);

    let sources = [
        format!("oci:{}:latest", oci.display()),
        format!("oci:{}", oci_zstd.display()),
        format!("oci-archive:{}", oci_archive.display()),
        format!("docker-archive:{}:{image}", docker_archive.display()),
        format!("docker-archive:{}", docker_archive_oci.display()),
        format!("docker://{remote}"),
    ];
    // Every transport's tree is the engine's. The engine's disk differs in its bytes (an export
    // is one flattened archive, in another order), so its tree is compared through debugfs;
    // every engine-less transport merges the same layers into the same stream, so with a fixed
    // size (`--size auto` sizes the disk from an estimate that the layers' compressed sizes
    // shape) and a fixed epoch their disks are the same bytes: the first one's tree is compared
    // with the engine's, the others' bytes with the first one's.
    let listing_of = |disk: &Path, name: &str| {
        let work = d.join(format!("{name}-listing"));
        std::fs::create_dir(&work).unwrap();
        let mut listing = root_listing(disk, &work);
        std::fs::remove_dir_all(&work).unwrap();
        // What the engine adds to every container's export, and no layer holds: /etc/mtab as
        // a link to /proc/mounts (the image's own is ../proc/self/mounts), and an empty
        // /dev/console mount point in place of the image's device (which c2vm drops).
        for engine_only in ["etc/mtab", "dev/console"] {
            match reference.get(engine_only) {
                Some(v) => listing.insert(engine_only.to_string(), v.clone()),
                None => listing.remove(engine_only),
            };
        }
        listing
    };
    let first = d.join("t0.raw");
    for (n, source) in sources.iter().enumerate() {
        let disk = d.join(format!("t{n}.raw"));
        Convert::new(source, &disk)
            .env("DOCKER_HOST", NO_ENGINE)
            .reproducible()
            .scratch_beside_output()
            .password_file(&pw)
            .args(["--kernel", "image", "--size", "2G"])
            .success();
        let same = n > 0 && same_bytes(&disk, &first);
        if !same {
            // The first disk, or one whose bytes differ: its tree tells how.
            let diff = listing_diff(&reference, &listing_of(&disk, &format!("t{n}")), 20);
            assert!(
                diff.is_empty(),
                "{source} differs from the engine's export:\n{}",
                diff.join("\n")
            );
        }
        if n > 0 {
            assert!(
                same,
                "{source} gave other bytes than {}: {}",
                sources[0],
                first_difference(&disk, &first)
            );
            std::fs::remove_file(&disk).unwrap();
        }
    }

    // One of them boots (the layout's), to a login and a network: its kernel directly, as
    // loaders are disk_engine's subject.
    let (status, said) = boot_exec(
        &d.join("t0.raw"),
        DIRECT,
        &pw,
        &facts_script(&[
            ("state", "systemctl is-system-running --wait"),
            (
                "addr",
                &format!("{WAIT_FOR_DHCP}; ip -4 -o addr show scope global | awk '{{print $4}}'"),
            ),
        ]),
    );
    assert_eq!(status, 0, "guest said: {said}");
    let facts = Facts::parse(&said);
    assert!(
        facts["state"].contains("running") && facts["addr"].contains("10.0.2.15/24"),
        "guest said: {said}"
    );
}

#[test]
#[ignore = "needs Docker, skopeo, docker-registry and mke2fs"]
fn a_tls_registry_with_a_password_converts_and_says_what_is_wrong_when_it_cannot() {
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    let registry = Registry::start("tls");
    let remote = format!("docker://{}/c2vm-test/debian:latest", registry.host());
    let cert_dir = registry.cert_dir();
    let cert_dir = cert_dir.to_str().unwrap();
    // Into the registry that takes a password over TLS.
    let push = |from: &str, to: &str| {
        skopeo(&[
            "--dest-cert-dir",
            cert_dir,
            "--dest-creds",
            "c2vm:secret-pw",
            "--dest-compress-level",
            "1",
            from,
            to,
        ])
    };
    push("docker-daemon:debian:latest", &remote);
    // -vv everywhere: whatever c2vm logs, no secret may be in it.
    let convert_with = |extra: &[&str], stdin: &str, env: &[(&str, &Path)], disk: &Path| {
        let _ = std::fs::remove_file(disk);
        let out = Convert::new(&remote, disk)
            .verbose()
            .env("DOCKER_HOST", NO_ENGINE)
            .env("TMPDIR", d.join("tmp"))
            .envs(env.iter().copied())
            .args(extra)
            .stdin(stdin)
            .output();
        let all = format!("{}{}", stdout(&out), stderr(&out));
        for secret in ["secret-pw", PASSWORD, "$6$", PRIVATE_KEY_CANARY] {
            assert!(!all.contains(secret), "{secret:?} shows in -vv: {all}");
        }
        (out.status.code(), all, disk.exists())
    };
    let convert = |extra: &[&str], stdin: &str| {
        let extra = [&["--password-file", pw.to_str().unwrap()], extra].concat();
        convert_with(&extra, stdin, &[], &d.join("tls.raw"))
    };
    std::fs::create_dir(d.join("tmp")).unwrap();

    // Right CA, right password (read from stdin): debian:latest has no kernel, so a bundle is
    // needed, and with no engine to build c2vm's: refused in one line that says how, after the
    // layers were read and checked.
    let (code, said, made) = convert(&["--cert-dir", cert_dir, "--creds", "c2vm"], "secret-pw\n");
    assert_eq!(code, Some(1), "{said}");
    assert!(!made);
    assert!(
        said.contains("has no kernel in /boot") && said.contains("--kernel-image"),
        "{said}"
    );
    the_error(&said);

    // The same with a kernel bundle from the same registry: it converts. Every way of giving
    // the registry's password and the root password, with an SSH key whose private half lies
    // beside it: no secret in -vv or --json, and the same disk, byte for byte (how an image is
    // fetched does not shape the disk).
    let bundle = image_with_kernel(d);
    let remote_bundle = format!("docker://{}/c2vm-test/bundle:latest", registry.host());
    push(&format!("docker-daemon:{bundle}"), &remote_bundle);
    std::fs::write(d.join("id"), format!("{PRIVATE_KEY_CANARY}\n")).unwrap();
    std::fs::write(
        d.join("id.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDx c2vm-test\n",
    )
    .unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("c2vm:secret-pw");
    let auths = serde_json::json!({"auths": {registry.host(): {"auth": auth}}});
    std::fs::write(d.join("auth.json"), auths.to_string()).unwrap();
    let pw_path = pw.to_str().unwrap();
    let auth_file = d.join("auth.json");
    let key = d.join("id.pub");
    let epoch = Path::new(EPOCH);
    let common = [
        "--cert-dir",
        cert_dir,
        "--kernel-image",
        &remote_bundle,
        "--ssh-key",
    ];
    type Way<'a> = (&'a str, Vec<&'a str>, String, Vec<(&'a str, &'a Path)>);
    let ways: [Way; 3] = [
        (
            "--creds USER, password on stdin; --password-file",
            vec!["--creds", "c2vm", "--password-file", pw_path],
            "secret-pw\n".to_string(),
            vec![],
        ),
        (
            "--creds USER:PASS; --password-file",
            vec!["--creds", "c2vm:secret-pw", "--password-file", pw_path],
            String::new(),
            vec![],
        ),
        (
            "an auth file; --password-stdin",
            vec!["--password-stdin"],
            format!("{PASSWORD}\n"),
            vec![("REGISTRY_AUTH_FILE", auth_file.as_path())],
        ),
    ];
    let mut disks = Vec::new();
    for (i, (how, extra, stdin, env)) in ways.iter().enumerate() {
        let disk = d.join(format!("tls-{i}.raw"));
        let env = [&[("SOURCE_DATE_EPOCH", epoch)][..], env].concat();
        let extra = [&common[..], &[key.to_str().unwrap(), "--json"], extra].concat();
        let (code, said, made) = convert_with(&extra, stdin, &env, &disk);
        assert_eq!(code, Some(0), "{how}: {said}");
        assert!(made, "{how}");
        if i > 0 {
            assert!(
                same_bytes(&disk, &d.join("tls-0.raw")),
                "{how} gives another disk than {}",
                ways[0].0
            );
            std::fs::remove_file(&disk).unwrap();
        }
        disks.push(said);
    }
    let said = &disks[0];
    let disk = d.join("tls-0.raw");
    let part = d.join("root.ext4");
    copy_partition(&disk, 2, &part);
    tool("e2fsck", &["-fn", part.to_str().unwrap()]);
    // debian:latest has no init of its own: c2vm-init runs it, and the bundle's kernel is on
    // the ESP only.
    assert!(said.contains("c2vm-init"), "{said}");
    let esp = d.join("esp.fat");
    copy_partition(&disk, 1, &esp);
    let files = tool("mdir", &["-b", "-i", esp.to_str().unwrap(), "::/"]);
    assert!(
        files.contains("vmlinuz") && files.contains("initrd.img"),
        "ESP: {files}"
    );
    let boot = tool("debugfs", &["-R", "ls /boot", part.to_str().unwrap()]);
    assert!(
        !boot.contains("vmlinuz") && !boot.contains("initrd"),
        "{boot}"
    );
    std::fs::remove_file(&disk).unwrap();

    // Where an engine answers, it builds c2vm's generic bundle (or has it cached) for the image
    // with no kernel, whatever transport brought the image.
    let out = Convert::new(&remote, &d.join("engine-bundle.raw"))
        .env_remove("DOCKER_HOST")
        .env("TMPDIR", d.join("tmp"))
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .args(["--cert-dir", cert_dir])
        .password_file(&pw)
        .output();
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("c2vm's generic bundle"), "{said}");
    std::fs::remove_file(d.join("engine-bundle.raw")).unwrap();

    // Credentials from a containers auth file (REGISTRY_AUTH_FILE) and from docker's
    // config.json (DOCKER_CONFIG), with no --creds: the registry lets c2vm in, and it gets as
    // far as the missing kernel.
    let docker_config = subdir(d, "docker-config");
    std::fs::write(docker_config.join("config.json"), auths.to_string()).unwrap();
    for (variable, value) in [
        ("REGISTRY_AUTH_FILE", d.join("auth.json")),
        ("DOCKER_CONFIG", docker_config.clone()),
    ] {
        let out = Convert::new(&remote, &d.join("auth-file.raw"))
            .env("DOCKER_HOST", NO_ENGINE)
            .env("TMPDIR", d.join("tmp"))
            .env(variable, &value)
            .args(["--cert-dir", cert_dir])
            .password_file(&pw)
            .output();
        let said = stderr(&out);
        assert!(
            said.contains("has no kernel in /boot"),
            "{variable}: {said}"
        );
    }

    // Bad credentials, no credentials, no CA: one line each (the cause, then what to do, in
    // src/source/registry.rs's words), nothing left.
    let host = registry.host();
    for (extra, stdin, cause, what_to_do) in [
        (
            vec!["--cert-dir", cert_dir, "--creds", "c2vm"],
            "wrong\n",
            format!("registry {host} refused the credentials for "),
            format!("check --creds, REGISTRY_AUTH_FILE or `docker login {host}`"),
        ),
        (
            vec!["--cert-dir", cert_dir],
            "",
            format!("registry {host} needs credentials for "),
            format!("give --creds USER (the password on stdin), or log in (`docker login {host}`)"),
        ),
        (
            vec!["--creds", "c2vm"],
            "secret-pw\n",
            format!("the TLS certificate of registry {host} is not trusted ("),
            format!("give its CA with --cert-dir DIR (a directory holding ca.crt), put it in /etc/containers/certs.d/{host}/, or use --tls-verify=false"),
        ),
    ] {
        let (code, said, made) = convert(&extra, stdin);
        assert_eq!(code, Some(1), "{extra:?}: {said}");
        assert!(!made, "{extra:?} left an output");
        let error = the_error(&said);
        assert!(
            error.contains(&cause) && error.ends_with(&what_to_do),
            "{extra:?}: {said}"
        );
    }
    assert!(
        listing(&d.join("tmp")).is_empty(),
        "scratch left: {:?}",
        listing(&d.join("tmp"))
    );
}

#[test]
#[ignore = "needs Docker, skopeo and mke2fs"]
fn whiteouts_and_opaque_directories_leave_exactly_what_docker_export_holds() {
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    let base = image_with_kernel(d);
    // Layer 2 makes files and directories; layer 3 deletes a file and a directory, and empties
    // a directory and fills it again (overlayfs writes an opaque directory for that).
    let ctx = build_context(
        d,
        &format!(
            "FROM {base}\n\
             RUN mkdir -p /w/dir/sub /w/opq && echo a > /w/file && echo b > /w/dir/sub/x \\\n \
                 && echo c > /w/opq/old && echo keep > /w/kept && ln /w/kept /w/kept-link\n\
             RUN rm /w/file && rm -r /w/dir && rm -r /w/opq && mkdir /w/opq && echo n > /w/opq/new\n"
        ),
    );
    let tag = "c2vm-test/whiteouts:latest";
    {
        let _lock = host_lock(); // a build makes containers
        tool("docker", &["build", "-q", "-t", tag, ctx.to_str().unwrap()]);
    }
    let saved = d.join("whiteouts.tar");
    tool("docker", &["save", "-o", saved.to_str().unwrap(), tag]);
    let layer_names = tool("tar", &["-tf", saved.to_str().unwrap()]);
    assert!(
        layer_names.matches("layer.tar").count() >= 3 || layer_names.matches("blobs/").count() >= 3
    );

    let disk = d.join("w.raw");
    Convert::new(&format!("docker-archive:{}", saved.display()), &disk)
        .env("DOCKER_HOST", NO_ENGINE)
        .reproducible()
        .scratch_beside_output()
        .password_file(&pw)
        .success();
    let work = subdir(d, "listing");
    let on_disk = root_listing(&disk, &work);

    let exported = {
        let _lock = host_lock();
        let id = tool("docker", &["create", tag, "/x"]).trim().to_string();
        let out = Command::new("docker")
            .args(["export", &id])
            .output()
            .unwrap();
        tool("docker", &["rm", &id]);
        assert!(out.status.success());
        tar_listing(out.stdout.as_slice())
    };
    let under_w = |l: &Listing| -> Listing {
        l.iter()
            .filter(|(k, _)| k.starts_with("w/") || *k == "w")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let w = under_w(&on_disk);
    assert_eq!(w, under_w(&exported));
    assert_eq!(
        w.keys().cloned().collect::<Vec<_>>(),
        ["w", "w/kept", "w/kept-link", "w/opq", "w/opq/new"]
    );
    // Everywhere else, the disk holds what the export holds, but for what guest setup writes
    // (/etc, /root, its boot-update and credentials scripts, the guest agent in
    // /usr/local/lib/c2vm, the D-Bus machine-id link, the /var/.updated stamp), what the
    // engine adds to every container (/.dockerenv, /dev), and /boot's files, which are on the
    // ESP (mounted there).
    let outside = |l: &Listing| -> Listing {
        l.iter()
            .filter(|(k, _)| {
                !(k.starts_with("etc/")
                    || k.starts_with("root/")
                    || k.starts_with("dev/")
                    || k.starts_with("usr/local/sbin/c2vm-")
                    || *k == "usr/local/lib/c2vm"
                    || k.starts_with("usr/local/lib/c2vm/")
                    || *k == ".dockerenv"
                    || *k == "var/lib/dbus/machine-id"
                    || *k == "var/.updated"
                    || k.starts_with("boot/"))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let diff = listing_diff(&outside(&exported), &outside(&on_disk), 20);
    assert!(
        diff.is_empty(),
        "the disk differs from docker export:\n{}",
        diff.join("\n")
    );
    tool("docker", &["rmi", tag]);
}

#[test]
#[ignore = "needs Docker, skopeo and mke2fs"]
fn broken_layouts_fail_in_one_line_and_leave_nothing() {
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    let layout = debian_layout(&d.join("good"));
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let read_json = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let sha = |data: &[u8]| {
        use sha2::Digest;
        format!("sha256:{:x}", sha2::Sha256::digest(data))
    };
    let copy = |name: &str| {
        let to = d.join(name);
        tool(
            "cp",
            &["-a", layout.to_str().unwrap(), to.to_str().unwrap()],
        );
        to
    };
    let index = read_json(&layout.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = read_json(&layout.join(blob(&manifest_digest)));
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // Write a changed manifest and point index.json at it.
    let with_manifest =
        |dir: &Path, manifest: &serde_json::Value, platform: Option<serde_json::Value>| {
            let bytes = serde_json::to_vec(manifest).unwrap();
            let digest = sha(&bytes);
            std::fs::write(dir.join(blob(&digest)), &bytes).unwrap();
            let mut index = read_json(&dir.join("index.json"));
            index["manifests"][0]["digest"] = digest.into();
            index["manifests"][0]["size"] = bytes.len().into();
            if let Some(p) = platform {
                index["manifests"][0]["platform"] = p;
            }
            std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        };

    let corrupt = copy("corrupt");
    let path = corrupt.join(blob(&layer));
    let mut data = std::fs::read(&path).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    std::fs::write(&path, &data).unwrap();

    let missing = copy("missing");
    std::fs::remove_file(missing.join(blob(&layer))).unwrap();

    let truncated = copy("truncated");
    let path = truncated.join(blob(&layer));
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, &data[..data.len() / 3]).unwrap();

    let unknown = copy("unknown-type");
    let mut m = manifest.clone();
    m["layers"][0]["mediaType"] = "application/vnd.example.not-a-layer".into();
    with_manifest(&unknown, &m, None);

    let arm = copy("arm64-only");
    with_manifest(
        &arm,
        &manifest,
        Some(serde_json::json!({"os": "linux", "architecture": "arm64"})),
    );

    let tmp = subdir(d, "tmp");
    for (layout, expect) in [
        (&corrupt, "does not match its digest"),
        (&missing, "has no blobs/sha256/"),
        (&truncated, "truncated or damaged"),
        (&unknown, "application/vnd.example.not-a-layer"),
        (&arm, "linux/arm64"),
    ] {
        let disk = d.join("out.raw");
        let out = Convert::new(&format!("oci:{}:latest", layout.display()), &disk)
            .env("DOCKER_HOST", NO_ENGINE)
            .env("TMPDIR", &tmp)
            .password_file(&pw)
            .args(["--kernel", "image"])
            .output();
        let said = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {said}", layout.display());
        assert!(
            the_error(&said).contains(expect),
            "{}: expected `{expect}` in: {said}",
            layout.display()
        );
        assert!(!disk.exists(), "{} left an output", layout.display());
        assert!(
            listing(&tmp).is_empty(),
            "scratch left: {:?}",
            listing(&tmp)
        );
    }
}

#[test]
#[ignore = "needs Docker (to copy debian:latest from), skopeo, docker-registry and mke2fs"]
fn a_signal_while_layers_stream_stops_within_five_seconds_and_leaves_nothing() {
    use std::io::BufRead;
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    let layout = debian_layout(&d.join("layout"));
    let registry = Registry::start("http");
    let remote = format!("docker://{}/c2vm-test/debian:latest", registry.host());
    skopeo(&[
        "--dest-tls-verify=false",
        "docker-daemon:debian:latest",
        &remote,
    ]);
    let tmp = subdir(d, "tmp");
    for (source, signal) in [
        (format!("oci:{}", layout.display()), libc::SIGINT),
        (remote.clone(), libc::SIGTERM),
    ] {
        let out = d.join("out.raw");
        let mut child = Convert::new(&source, &out)
            .env("DOCKER_HOST", NO_ENGINE)
            .env("TMPDIR", &tmp)
            .password_file(&pw)
            .command()
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let reached = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.starts_with("==> Reading the image's layers"));
        assert!(reached, "{source}: the layers were never read");
        let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = wait_exit(&mut child, std::time::Duration::from_secs(5), &source);
        let rest = rest.join().unwrap();
        assert_eq!(status.code(), Some(130), "{source}: {rest:?}");
        assert!(says_interrupted(&rest), "{source}: {rest:?}");
        assert!(!out.exists(), "{source} left an output");
        assert!(
            listing(&tmp).is_empty(),
            "{source} left scratch: {:?}",
            listing(&tmp)
        );
        let temp_outputs: Vec<String> = listing(d)
            .into_iter()
            .filter(|n| n.contains("out.raw"))
            .collect();
        assert!(temp_outputs.is_empty(), "{source} left {temp_outputs:?}");
    }
}

/// A minimal OCI layout at `dir` of `layers` (tar bytes, bottom first), gzipped.
fn oci_layout_of(dir: &Path, layers: &[Vec<u8>]) {
    use sha2::Digest;
    use std::io::Write;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let hex = format!("{:x}", sha2::Sha256::digest(data));
        std::fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let mut diff_ids = Vec::new();
    let mut descriptors = Vec::new();
    for layer in layers {
        diff_ids.push(format!("sha256:{:x}", sha2::Sha256::digest(layer)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(layer).unwrap();
        let (digest, size) = put(&gz.finish().unwrap());
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}));
    }
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": descriptors});
    let (digest, size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
#[ignore = "needs mke2fs"]
fn hostile_layers_are_refused_in_one_line_whichever_layer_holds_them() {
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    let base = Tar::new()
        .dir("etc/")
        .file("etc/os-release", b"ID=test\n")
        .bytes();
    let victim = subdir(d, "victim");
    let escape = format!("../../../../../../../..{}/escaped", victim.display());
    for (name, hostile, expect) in [
        (
            "dotdot",
            Tar::new().file(&escape, b"x").bytes(),
            "climbs out of the root",
        ),
        (
            "symlink",
            Tar::new()
                .symlink("etc/out", victim.to_str().unwrap())
                .file("etc/out/escaped", b"x")
                .bytes(),
            "refusing",
        ),
        (
            "whiteout",
            Tar::new().file("../.wh.etc", b"").bytes(),
            "climbs out of the root",
        ),
    ] {
        let layout = d.join(name);
        oci_layout_of(&layout, &[base.clone(), hostile]);
        let out = Convert::new(&format!("oci:{}", layout.display()), &d.join("out.raw"))
            .env("DOCKER_HOST", NO_ENGINE)
            .reproducible()
            .scratch_beside_output()
            .password_file(&pw)
            .output();
        let err = one_error(&out);
        assert!(err.contains(expect), "{name}: {err}");
        assert!(listing(&victim).is_empty(), "{name} wrote outside the tree");
        assert!(!d.join("out.raw").exists());
    }
}

#[test]
#[ignore = "needs mke2fs"]
fn an_engine_that_does_not_answer_is_said_with_why() {
    // An image with no kernel, read with no engine, asks for c2vm's generic bundle, which is
    // built in an engine: the error says why none answered, not only that none did.
    let dir = scratch();
    let d = dir.path();
    let layout = d.join("layout");
    let tree = Tar::new()
        .dir("etc/")
        .file("etc/os-release", b"ID=test\n")
        .bytes();
    oci_layout_of(&layout, &[tree]);
    for kernel in ["generic", "auto"] {
        let out = Convert::new(&format!("oci:{}", layout.display()), &d.join("out.raw"))
            .env("DOCKER_HOST", NO_ENGINE)
            .scratch_beside_output()
            .args(["--kernel", kernel])
            .output();
        let err = one_error(&out);
        assert!(
            err.contains(&format!(
                "no Docker or Podman engine answered (no Docker or Podman engine answers at {NO_ENGINE}"
            )),
            "--kernel {kernel}: {err}"
        );
        assert!(!d.join("out.raw").exists());
    }
}
