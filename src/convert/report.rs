//! What c2vm tells the user after a conversion: what it wrote, how long each stage took, peak
//! memory, what runs at boot and which ports to forward. `scripts/bench` reads the `Timings:` and
//! `Peak memory:` lines.
use crate::arch::Arch;
use crate::credentials::Login;
use crate::disk::layout::Layout;
use crate::disk::Identifiers;
use crate::output::{self, provenance, sbom, DiskFormat, OutputTarget};
use crate::progress::{note, Timings};
use crate::rootfs::app::GuestApp;
use crate::units::MIB;
use std::path::Path;

/// Which image a disk was made from.
pub struct ImageIdentity<'a> {
    /// As the user named it.
    pub source: &'a str,
    /// The engine's image ID (its config's digest), or a tarball's sha256.
    pub id: &'a str,
    /// Its layers' diff IDs, where known.
    pub diff_ids: &'a [String],
}

/// What a finished conversion made.
pub struct Summary<'a> {
    pub output: &'a Path,
    pub format: DiskFormat,
    pub target: &'a OutputTarget,
    /// A disk's partitions (None for a live medium).
    pub layout: Option<&'a Layout>,
    pub ids: &'a Identifiers,
    pub image: ImageIdentity<'a>,
    /// `--json`: also the result as JSON on standard output.
    pub json: bool,
    /// Where `--containerdisk` put the KubeVirt image.
    pub containerdisk: Option<&'a str>,
    /// What `--sbom` wrote.
    pub sbom: Option<&'a sbom::Summary>,
    /// What `--provenance` wrote.
    pub provenance: Option<&'a provenance::Summary>,
    pub root_size: u64,
    pub kernel_version: &'a str,
    pub timings: &'a Timings,
    pub app: &'a GuestApp,
    /// Whether c2vm-init is PID 1 (it runs the image's process itself).
    pub c2vm_init: bool,
    /// Units of the image's own turned off because they start the image's command too.
    pub disabled_units: &'a [String],
    /// Whether the ESP has the Secure Boot chain, and what it is or why not.
    pub secure_boot: (bool, String),
    /// The machine the disk boots on.
    pub arch: Arch,
    /// How the disk can be logged into; None for c2vm-init's app VMs, which have no login.
    pub login: Option<&'a Login>,
    /// The root is LUKS2 (`--luks-passphrase-file`).
    pub encrypted: bool,
}

pub fn print(s: &Summary) {
    if s.json {
        // Standard output carries nothing else: CI reads it whole.
        println!(
            "{}",
            serde_json::to_string_pretty(&json(s)).unwrap_or_default()
        );
    }
    let (size, allocated) = output_sizes(s);
    note(&format!(
        "Wrote {} ({} {}, {} MiB, {} MiB allocated; root {} MiB, kernel {})",
        s.output.display(),
        s.arch,
        match s.format {
            DiskFormat::Iso => "ISO, root squashfs",
            DiskFormat::Pxe => "network boot set, root squashfs",
            format => output::qemu_format(format),
        },
        size / MIB,
        allocated / MIB,
        s.root_size / MIB,
        s.kernel_version
    ));
    note(&match &s.secure_boot {
        (true, chain) => format!("Secure Boot: yes ({chain})"),
        (false, why) => format!("Secure Boot: no ({why})"),
    });
    if s.encrypted {
        note(&format!(
            "Root: encrypted (LUKS2, aes-xts-plain64, UUID {}): the guest asks for the passphrase on its console at every boot; `c2vm run --luks-passphrase-file FILE` types it",
            s.ids.luks
        ));
    }
    if let Some(sbom) = s.sbom {
        note(&format!(
            "SBOM: {} ({}, {} packages)",
            sbom.path.display(),
            match sbom.format {
                sbom::SbomFormat::Spdx => "SPDX 2.3",
                sbom::SbomFormat::Cyclonedx => "CycloneDX 1.6",
            },
            sbom.packages
        ));
    }
    if let Some(provenance) = s.provenance {
        note(&format!(
            "Provenance: {} (SLSA v1 in-toto statement{})",
            provenance.path.display(),
            match &provenance.keyid {
                Some(keyid) => format!(", a DSSE envelope signed by key {keyid}"),
                None => ", unsigned".to_string(),
            }
        ));
    }
    match s.format {
        DiskFormat::Iso => note(&format!("The medium is read-only: what the VM writes stays in RAM and is lost at power-off. `c2vm run {}` boots it as a CD (`--media usb` as a USB stick); `dd` writes it to a stick", s.output.display())),
        DiskFormat::Pxe => note(&format!("The root is fetched into RAM at boot and checked: what the VM writes is lost at power-off. `c2vm run --netboot {}` boots it; on a network, serve the directory by HTTP or TFTP and chain boot.ipxe (iPXE), or use pxelinux.cfg/default or grub/grub.cfg with the set at the TFTP root", s.output.display())),
        _ => {}
    }
    note(&format!("Timings: {}", s.timings.line()));
    note(&format!(
        "Peak memory: {} MiB (c2vm), {} MiB (largest tool)",
        peak_rss_mib(libc::RUSAGE_SELF),
        crate::cmd::peak_tool_memory_kib() / 1024
    ));
    explain_app(s.app, s.disabled_units, s.output, s.c2vm_init);
    if s.c2vm_init {
        note(&format!(
            "c2vm-init runs the image's command as PID 1's only child; when it ends the VM powers off, and `c2vm run {}` exits with its status",
            s.output.display()
        ));
    } else if let Some(login) = s.login {
        note(&login.describe());
    }
}

/// The output's bytes and allocated bytes: a network boot set's are its files'.
fn output_sizes(s: &Summary) -> (u64, u64) {
    if s.format != DiskFormat::Pxe {
        return output::sizes(s.output);
    }
    let files = std::fs::read_dir(s.output).into_iter().flatten().flatten();
    files
        .map(|f| output::sizes(&f.path()))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// The result for programs (`--json`): what was written, from what, with which identifiers,
/// and how long each stage took.
fn json(s: &Summary) -> serde_json::Value {
    let (file_size, allocated) = output_sizes(s);
    let extent =
        |e: &crate::disk::layout::Extent| serde_json::json!({"offset": e.start, "size": e.size});
    serde_json::json!({
        "output": s.output,
        "format": s.format,
        "arch": s.arch,
        "compression": match s.format {
            DiskFormat::Qcow2 => serde_json::to_value(s.target.compress).unwrap_or_default(),
            DiskFormat::Gce => "gzip".into(),
            _ => serde_json::Value::Null,
        },
        "vmdk_subformat": match s.format {
            DiskFormat::Vmdk => serde_json::to_value(s.target.vmdk_subformat).unwrap_or_default(),
            _ => serde_json::Value::Null,
        },
        "virtual_size": s.layout.map_or(file_size, |l| l.disk_size),
        "file_size": file_size,
        "allocated": allocated,
        "partitions": s.layout.map(|l| serde_json::json!({
            "esp": extent(&l.esp),
            "root": extent(&l.root),
        })),
        "live": s.layout.is_none().then(|| serde_json::json!({
            "label": s.ids.live_label(),
            "root": {"type": "squashfs", "size": s.root_size},
        })),
        "identifiers": {
            "gpt_disk": s.ids.gpt.disk.to_string(),
            "gpt_esp": s.ids.gpt.esp.to_string(),
            "gpt_root": s.ids.gpt.root.to_string(),
            "root_fs_uuid": s.ids.root_fs.to_string(),
            "esp_volume_id": s.ids.esp_uuid(),
        },
        "kernel": s.kernel_version,
        "encryption": s.encrypted.then(|| serde_json::json!({
            "type": "luks2",
            "cipher": "aes-xts-plain64",
            "luks_uuid": s.ids.luks.to_string(),
            "filesystem": s.layout.map(|l| extent(&l.filesystem())),
        })),
        "secure_boot": match &s.secure_boot {
            (true, chain) => serde_json::json!({"enabled": true, "chain": chain}),
            (false, why) => serde_json::json!({"enabled": false, "reason": why}),
        },
        "init": if s.c2vm_init { "c2vm-init" } else { "image" },
        "login": s.login,
        "app": s.app.service.as_ref().map(|a| &a.argv),
        "image": {
            "source": s.image.source,
            "id": s.image.id,
            "diff_ids": s.image.diff_ids,
        },
        "containerdisk": s.containerdisk,
        "sbom": s.sbom,
        "provenance": s.provenance,
        "timings": s.timings.stages().iter().map(|(name, d)| (name.to_string(), serde_json::json!(d.as_secs_f64()))).collect::<serde_json::Map<_, _>>(),
    })
}

/// Tell the user what runs at boot and which ports to forward.
fn explain_app(config: &GuestApp, disabled_units: &[String], output: &Path, c2vm_init: bool) {
    if let Some(spec) = config.service.as_ref().filter(|_| !c2vm_init) {
        let argv: Vec<String> = spec
            .argv
            .iter()
            .map(|a| shell_escape::unix::escape(a.into()).into_owned())
            .collect();
        let user = if spec.user.is_empty() {
            "root"
        } else {
            spec.user.as_str()
        };
        note(&format!(
            "At boot the VM runs the image's command as the service c2vm-app, as {user}: {} (--no-app turns this off)",
            argv.join(" ")
        ));
        if !disabled_units.is_empty() {
            note(&format!(
                "Disabled {}: it starts the same program as the image's command",
                disabled_units.join(", ")
            ));
        }
    }
    if !config.exposed_ports.is_empty() {
        let publish: Vec<String> = config
            .exposed_ports
            .iter()
            .filter_map(|p| publish_flag(p))
            .collect();
        note(&format!(
            "The image exposes {}: forward them with `c2vm run {} {}`",
            config.exposed_ports.join(", "),
            output.display(),
            publish.join(" ")
        ));
    }
}

/// `80/tcp` → `--publish 8080:80`: ports below 1024 need root on the host, so suggest one above.
fn publish_flag(exposed: &str) -> Option<String> {
    let (port, proto) = exposed.split_once('/').unwrap_or((exposed, "tcp"));
    let port: u16 = port.parse().ok()?;
    let host = if port < 1024 {
        port as u32 + 8000
    } else {
        port as u32
    };
    let suffix = if proto == "tcp" {
        String::new()
    } else {
        format!("/{proto}")
    };
    Some(format!("--publish {host}:{port}{suffix}"))
}

fn peak_rss_mib(who: libc::c_int) -> u64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss.max(0) as u64 / 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_ports_become_publish_flags() {
        assert_eq!(publish_flag("80/tcp").unwrap(), "--publish 8080:80");
        assert_eq!(publish_flag("5353/udp").unwrap(), "--publish 5353:5353/udp");
        assert_eq!(publish_flag("http"), None);
    }

    #[test]
    fn timings_list_stages_in_order() {
        let mut t = Timings::default();
        t.time("a", || Ok(())).unwrap();
        t.time("b", || Ok(())).unwrap();
        let err = t.time("c", || -> anyhow::Result<()> { anyhow::bail!("no") });
        assert_eq!(err.unwrap_err().to_string(), "no");
        assert!(t.line().starts_with("a 0.") && t.line().contains(", b 0."));
        assert!(!t.line().contains("c "), "{}", t.line());
    }
}
