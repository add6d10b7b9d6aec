//! The boot loaders' configuration texts, one template each in `templates/boot/`: the one home
//! of what SYSLINUX, systemd-boot and GRUB are told to boot.
//! c2vm renders them for the ESP at conversion, and renders them again into the guest for the
//! two states a kernel update can leave (the newest kernel alone, or with the previous one as a
//! fallback); there `c2vm-update-boot` (plain /bin/sh, no template engine) puts the set that
//! matches on the ESP. So a kernel update in the VM gives the entries a fresh conversion gives.
use super::{secure, Bootloader, KERNEL_NAMES_ON_ESP};
use crate::arch::Arch;
use anyhow::{Context, Result};
use serde::Serialize;

/// In the guest: the texts for each state, under their ESP paths.
const GUEST_TEXTS: &str = "/etc/c2vm/boot";
const LATEST: &str = "latest";
const WITH_PREVIOUS: &str = "with-previous";
/// GRUB's menu on the ESP, which the config built into GRUB reads.
pub const GRUB_CFG: &str = "grub/grub.cfg";
/// The kernel-update hook's script, in the guest.
pub const UPDATE_SCRIPT: &str = "/usr/local/sbin/c2vm-update-boot";

const SYSLINUX_CFG_TEMPLATE: &str = include_str!("../../templates/boot/syslinux.cfg");
const LOADER_CONF_TEMPLATE: &str = include_str!("../../templates/boot/loader.conf");
const ENTRY_CONF_TEMPLATE: &str = include_str!("../../templates/boot/entry.conf");
const GRUB_CFG_TEMPLATE: &str = include_str!("../../templates/boot/grub.cfg");
const KERNEL_NAMES_TEMPLATE: &str = include_str!("../../templates/boot/kernel");
const UPDATE_BOOT_TEMPLATE: &str = include_str!("../../templates/guest/c2vm-update-boot");

/// A kernel and its initramfs, by their names at the ESP's root (the guest's `/boot`, where
/// the kernel packages put them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelNames {
    pub kernel: String,
    pub initrd: String,
}

impl KernelNames {
    /// What the guest's texts name, for c2vm-update-boot to fill in: sed replaces the markers
    /// with the files it finds in `/boot`.
    fn marked(which: &str) -> KernelNames {
        KernelNames {
            kernel: format!("@C2VM_{which}KERNEL@"),
            initrd: format!("@C2VM_{which}INITRD@"),
        }
    }
}

/// One kernel the loaders offer.
#[derive(Serialize)]
struct Kernel<'a> {
    /// SYSLINUX's label, GRUB's menu entry id.
    label: &'static str,
    /// systemd-boot's and GRUB's menu title.
    title: &'static str,
    /// systemd-boot's entry file, without `.conf`.
    entry: &'static str,
    /// Its files at the ESP's root.
    files: &'a KernelNames,
}

/// The kernels on the ESP, the newest first: `newest`, and `previous` as a fallback.
fn kernels<'a>(newest: &'a KernelNames, previous: Option<&'a KernelNames>) -> Vec<Kernel<'a>> {
    let mut kernels = vec![Kernel {
        label: "linux",
        title: "c2vm",
        entry: "c2vm",
        files: newest,
    }];
    if let Some(files) = previous {
        kernels.push(Kernel {
            label: "previous",
            title: "c2vm (previous)",
            entry: "c2vm-previous",
            files,
        });
    }
    kernels
}

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // Block tags take their line with them, and files keep their last newline.
    env.set_trim_blocks(true);
    env.set_keep_trailing_newline(true);
    env
}

fn render(
    env: &minijinja::Environment,
    name: &str,
    template: &str,
    ctx: minijinja::Value,
) -> Result<String> {
    env.render_str(template, ctx)
        .with_context(|| format!("rendering the boot template {name}"))
}

/// `bootloader`'s texts on the ESP, as (ESP path, text), for `newest` alone or with `previous`.
/// SYSLINUX's config comes first (the ESP is written in this order); the kernel's names for
/// `c2vm run --direct-kernel` (whichever loader) last.
pub fn esp_texts(
    bootloader: Bootloader,
    arch: Arch,
    cmdline: &str,
    newest: &KernelNames,
    previous: Option<&KernelNames>,
) -> Result<Vec<(String, String)>> {
    let env = environment();
    let kernels = kernels(newest, previous);
    let ctx = |k: Option<&Kernel>| {
        minijinja::context! {
            cmdline => cmdline,
            kernels => &kernels,
            k => k,
        }
    };
    let mut out = Vec::new();
    match bootloader {
        Bootloader::Syslinux => {
            if arch.has_bios() {
                out.push((
                    "syslinux/syslinux.cfg".to_string(),
                    render(&env, "syslinux.cfg", SYSLINUX_CFG_TEMPLATE, ctx(None))?,
                ));
            }
            out.push((
                "loader/loader.conf".to_string(),
                render(&env, "loader.conf", LOADER_CONF_TEMPLATE, ctx(None))?,
            ));
            for k in &kernels {
                out.push((
                    format!("loader/entries/{}.conf", k.entry),
                    render(&env, "entry.conf", ENTRY_CONF_TEMPLATE, ctx(Some(k)))?,
                ));
            }
        }
        Bootloader::Grub => out.push((
            GRUB_CFG.to_string(),
            render(&env, "grub.cfg", GRUB_CFG_TEMPLATE, ctx(None))?,
        )),
    }
    out.push((
        KERNEL_NAMES_ON_ESP.to_string(),
        render(&env, "kernel", KERNEL_NAMES_TEMPLATE, ctx(None))?,
    ));
    Ok(out)
}

/// The names [`esp_texts`] wrote to `c2vm/kernel`, read back: kernel, then initramfs.
pub fn parse_kernel_names(text: &str) -> Option<KernelNames> {
    let mut lines = text.lines().map(|l| l.trim_start_matches('/'));
    let (kernel, initrd) = (lines.next()?, lines.next()?);
    let ok = |n: &str| !n.is_empty() && !n.contains("..");
    (ok(kernel) && ok(initrd)).then(|| KernelNames {
        kernel: kernel.to_string(),
        initrd: initrd.to_string(),
    })
}

/// What the guest's kernel-update hook needs, as (guest path, contents, mode): every loader's
/// texts for both states (which loader the disk has, the script sees on the ESP), with markers
/// where the kernels' names go, and the script.
pub fn guest_files(cmdline: &str, arch: Arch) -> Result<Vec<(String, String, u32)>> {
    let (newest, previous) = (KernelNames::marked(""), KernelNames::marked("PREVIOUS_"));
    let mut files: Vec<(String, String, u32)> = Vec::new();
    for (state, previous) in [(LATEST, None), (WITH_PREVIOUS, Some(&previous))] {
        for bootloader in [Bootloader::Syslinux, Bootloader::Grub] {
            for (path, text) in esp_texts(bootloader, arch, cmdline, &newest, previous)? {
                let path = format!("{GUEST_TEXTS}/{state}/{path}");
                if !files.iter().any(|(p, _, _)| *p == path) {
                    files.push((path, text, 0o644));
                }
            }
        }
    }
    files.push((UPDATE_SCRIPT.to_string(), update_script(arch)?, 0o755));
    Ok(files)
}

/// c2vm-update-boot with the ESP's names and the texts' place filled in.
fn update_script(arch: Arch) -> Result<String> {
    let [shim, mok_manager, systemd_boot, grub] = secure::guest_paths(arch);
    let (newest, previous) = (KernelNames::marked(""), KernelNames::marked("PREVIOUS_"));
    render(
        &environment(),
        "c2vm-update-boot",
        UPDATE_BOOT_TEMPLATE,
        minijinja::context! {
            newest => newest,
            previous => previous,
            texts => GUEST_TEXTS,
            latest => LATEST,
            with_previous => WITH_PREVIOUS,
            shim_on_esp => arch.uefi_default(),
            loader_on_esp => secure::loader_on_esp(arch),
            mok_manager_on_esp => secure::mok_manager_on_esp(arch),
            shim => shim,
            mok_manager => mok_manager,
            systemd_boot => systemd_boot,
            grub => grub,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    /// Quotes, `$` and a backslash: the guest copies the texts, it never re-reads the line.
    const CMDLINE: &str =
        r#"root=UUID=x rw console=tty0 console=ttyS0,115200 quiet loglevel=3 a="b c" $HOME \x"#;

    fn as_map(texts: Vec<(String, String)>) -> BTreeMap<String, String> {
        texts.into_iter().collect()
    }

    fn names(version: &str) -> KernelNames {
        KernelNames {
            kernel: format!("vmlinuz-{version}"),
            initrd: format!("initrd.img-{version}"),
        }
    }

    /// A kernel of Debian 13's, whose version has a `+` in it.
    fn new() -> KernelNames {
        names("6.12.9+deb13-amd64")
    }

    fn old() -> KernelNames {
        names("6.12.8+deb13-amd64")
    }

    #[test]
    fn configs_boot_the_kernel_on_serial_without_delay() {
        let texts = as_map(
            esp_texts(
                Bootloader::Syslinux,
                Arch::Amd64,
                "root=UUID=x rw console=ttyS0,115200",
                &new(),
                None,
            )
            .unwrap(),
        );
        let cfg = &texts["syslinux/syslinux.cfg"];
        assert!(cfg.starts_with("SERIAL 0 115200\n"));
        assert!(cfg.contains("TIMEOUT 0") && cfg.contains("PROMPT 0"));
        assert!(cfg.contains("APPEND root=UUID=x rw console=ttyS0,115200"));
        assert!(texts["loader/loader.conf"].contains("timeout 0"));
        let entry =
            as_map(esp_texts(Bootloader::Syslinux, Arch::Amd64, "a b", &new(), None).unwrap());
        assert!(entry["loader/entries/c2vm.conf"].contains("options a b\n"));
    }

    /// The disk's SYSLINUX and systemd-boot texts, exactly; the `previous` entry is what the
    /// guest writes after a kernel update.
    #[test]
    fn syslinux_and_systemd_boot_texts_are_exact() {
        let latest = esp_texts(Bootloader::Syslinux, Arch::Amd64, "A B", &new(), None).unwrap();
        let paths: Vec<&str> = latest.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "syslinux/syslinux.cfg",
                "loader/loader.conf",
                "loader/entries/c2vm.conf",
                KERNEL_NAMES_ON_ESP,
            ]
        );
        let latest = as_map(latest);
        assert_eq!(
            latest["syslinux/syslinux.cfg"],
            "SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\n\n\
             LABEL linux\n  KERNEL /vmlinuz-6.12.9+deb13-amd64\n  \
             INITRD /initrd.img-6.12.9+deb13-amd64\n  APPEND A B\n"
        );
        assert_eq!(
            latest["loader/loader.conf"],
            "default c2vm.conf\ntimeout 0\nconsole-mode keep\n"
        );
        assert_eq!(
            latest["loader/entries/c2vm.conf"],
            "title c2vm\nlinux /vmlinuz-6.12.9+deb13-amd64\n\
             initrd /initrd.img-6.12.9+deb13-amd64\noptions A B\n"
        );
        assert_eq!(
            parse_kernel_names(&latest[KERNEL_NAMES_ON_ESP]),
            Some(new())
        );
        let both = as_map(
            esp_texts(
                Bootloader::Syslinux,
                Arch::Amd64,
                "A B",
                &new(),
                Some(&old()),
            )
            .unwrap(),
        );
        assert_eq!(
            both["syslinux/syslinux.cfg"],
            format!(
                "{}\nLABEL previous\n  KERNEL /vmlinuz-6.12.8+deb13-amd64\n  \
                 INITRD /initrd.img-6.12.8+deb13-amd64\n  APPEND A B\n",
                latest["syslinux/syslinux.cfg"]
            )
        );
        assert_eq!(both["loader/loader.conf"], latest["loader/loader.conf"]);
        assert_eq!(
            both["loader/entries/c2vm.conf"],
            latest["loader/entries/c2vm.conf"]
        );
        assert_eq!(both[KERNEL_NAMES_ON_ESP], latest[KERNEL_NAMES_ON_ESP]);
        assert_eq!(
            both["loader/entries/c2vm-previous.conf"],
            "title c2vm (previous)\nlinux /vmlinuz-6.12.8+deb13-amd64\n\
             initrd /initrd.img-6.12.8+deb13-amd64\noptions A B\n"
        );
    }

    #[test]
    fn kernel_names_read_back_refuse_what_is_not_a_name() {
        assert_eq!(
            parse_kernel_names("/vmlinuz-1\n/initrd.img-1\n"),
            Some(names("1"))
        );
        assert_eq!(parse_kernel_names("/vmlinuz-1\n"), None);
        assert_eq!(parse_kernel_names("/../vmlinuz\n/initrd\n"), None);
    }

    #[test]
    fn grub_menu_boots_the_newest_at_once_and_offers_the_previous() {
        let latest = esp_texts(Bootloader::Grub, Arch::Amd64, "A B", &new(), None).unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[0].0, GRUB_CFG);
        assert_eq!(
            latest[0].1,
            "set default=linux\nset timeout=0\n\n\
             menuentry 'c2vm' --id linux {\n  linux /vmlinuz-6.12.9+deb13-amd64 A B\n  \
             initrd /initrd.img-6.12.9+deb13-amd64\n}\n"
        );
        let both = esp_texts(Bootloader::Grub, Arch::Amd64, "A B", &new(), Some(&old())).unwrap();
        assert_eq!(
            both[0].1,
            format!(
                "{}\nmenuentry 'c2vm (previous)' --id previous {{\n  \
                 linux /vmlinuz-6.12.8+deb13-amd64 A B\n  \
                 initrd /initrd.img-6.12.8+deb13-amd64\n}}\n",
                latest[0].1
            )
        );
        // GRUB's own parser accepts both, where the host has it.
        if Path::new("/usr/bin/grub-script-check").exists() {
            for (_, text) in latest.iter().take(1).chain(both.iter().take(1)) {
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("grub.cfg");
                std::fs::write(&file, text).unwrap();
                let status = std::process::Command::new("grub-script-check")
                    .arg(&file)
                    .status()
                    .unwrap();
                assert!(status.success(), "{text}");
            }
        }
    }

    /// A guest root on the host: c2vm's files for the hook, and in /boot an ESP as
    /// `bootloader`'s conversion writes it (texts, loader directories, the kernel).
    struct Guest {
        dir: tempfile::TempDir,
    }

    /// The kernel a Guest starts with.
    const CONVERTED: &str = "6.1.0-9-amd64";

    impl Guest {
        fn new(bootloader: Bootloader) -> Guest {
            Guest::for_arch(bootloader, Arch::Amd64)
        }

        fn for_arch(bootloader: Bootloader, arch: Arch) -> Guest {
            let guest = Guest {
                dir: tempfile::tempdir().unwrap(),
            };
            for (path, text, _) in guest_files(CMDLINE, arch).unwrap() {
                guest.write(&path, text.as_bytes());
            }
            let converted = names(CONVERTED);
            for (path, text) in esp_texts(bootloader, arch, CMDLINE, &converted, None).unwrap() {
                guest.write(&format!("boot/{path}"), text.as_bytes());
            }
            guest.write(&format!("boot/{}", arch.uefi_default()), b"efi");
            guest.kernel(&converted.kernel, &converted.initrd);
            guest
        }

        fn path(&self, rel: &str) -> std::path::PathBuf {
            self.dir.path().join(rel.trim_start_matches('/'))
        }

        fn write(&self, rel: &str, data: &[u8]) {
            let path = self.path(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        }

        fn read(&self, rel: &str) -> String {
            std::fs::read_to_string(self.path(rel)).unwrap()
        }

        /// A kernel and its initramfs, their contents naming them.
        fn kernel(&self, kernel: &str, initrd: &str) {
            self.write(&format!("boot/{kernel}"), kernel.as_bytes());
            self.write(&format!("boot/{initrd}"), initrd.as_bytes());
        }

        fn update_boot(&self) {
            let out = std::process::Command::new("/bin/sh")
                .arg(self.path(UPDATE_SCRIPT))
                .env("C2VM_ROOT", self.dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "c2vm-update-boot failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// Every text on the ESP: all files but the kernels, initramfs and EFI binaries.
        fn esp_texts(&self) -> BTreeMap<String, String> {
            fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
                for entry in std::fs::read_dir(dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        walk(&path, base, out);
                        continue;
                    }
                    let rel = path.strip_prefix(base).unwrap().to_str().unwrap();
                    let kernel = ["vmlinuz-", "initrd", "initramfs-", "EFI/"];
                    if !kernel.iter().any(|k| rel.starts_with(k)) {
                        out.insert(rel.to_string(), std::fs::read_to_string(&path).unwrap());
                    }
                }
            }
            let mut out = BTreeMap::new();
            let esp = self.path("boot");
            walk(&esp, &esp, &mut out);
            out
        }

        /// What the loaders boot, newest first, by the names the record on the ESP gives and
        /// the previous entry (systemd-boot's).
        fn booted(&self) -> (String, Option<String>) {
            let names = parse_kernel_names(&self.read(&format!("boot/{KERNEL_NAMES_ON_ESP}")));
            let previous =
                std::fs::read_to_string(self.path("boot/loader/entries/c2vm-previous.conf"))
                    .ok()
                    .and_then(|t| {
                        t.lines()
                            .find_map(|l| l.strip_prefix("linux /").map(str::to_string))
                    });
            (names.unwrap().kernel, previous)
        }
    }

    /// What the disk has after a kernel update in the VM is what a conversion writes: with the
    /// previous kernel's entry while there is one, without it once it is gone. No kernel is
    /// copied: the texts name the files the packages wrote.
    fn kernel_updates_give_the_conversions_texts(bootloader: Bootloader) {
        let guest = Guest::new(bootloader);
        let converted = guest.esp_texts();
        guest.update_boot();
        assert_eq!(guest.esp_texts(), converted);
        assert_eq!(
            converted,
            as_map(esp_texts(bootloader, Arch::Amd64, CMDLINE, &names(CONVERTED), None).unwrap())
        );

        // 10 after 9, as versions go.
        let files_before = std::fs::read_dir(guest.path("boot")).unwrap().count();
        guest.kernel("vmlinuz-6.1.0-10-amd64", "initrd.img-6.1.0-10-amd64");
        guest.update_boot();
        let (new, old) = (names("6.1.0-10-amd64"), names(CONVERTED));
        assert_eq!(
            guest.esp_texts(),
            as_map(esp_texts(bootloader, Arch::Amd64, CMDLINE, &new, Some(&old)).unwrap())
        );
        let files_after = std::fs::read_dir(guest.path("boot")).unwrap().count();
        assert_eq!(
            files_after,
            files_before + 2,
            "only the package's two files came"
        );

        std::fs::remove_file(guest.path("boot/vmlinuz-6.1.0-9-amd64")).unwrap();
        guest.update_boot();
        assert_eq!(
            guest.esp_texts(),
            as_map(esp_texts(bootloader, Arch::Amd64, CMDLINE, &new, None).unwrap())
        );
    }

    #[test]
    fn a_kernel_update_gives_syslinux_and_systemd_boot_the_conversions_texts() {
        kernel_updates_give_the_conversions_texts(Bootloader::Syslinux);
    }

    #[test]
    fn a_kernel_update_gives_grub_the_conversions_texts() {
        kernel_updates_give_the_conversions_texts(Bootloader::Grub);
    }

    /// Where the ESP has the Secure Boot chain, the guest's newer signed files replace it, with
    /// the loader of the disk's kind; an incomplete set in the guest changes nothing.
    #[test]
    fn an_upgrade_of_shim_or_the_loader_reaches_the_esp_whole() {
        let cases = [(Bootloader::Syslinux, 2), (Bootloader::Grub, 3)]
            .into_iter()
            .flat_map(|case| Arch::ALL.map(|arch| (case, arch)));
        for ((bootloader, loader), arch) in cases {
            let guest = Guest::for_arch(bootloader, arch);
            let esp = [
                arch.uefi_default(),
                secure::mok_manager_on_esp(arch),
                secure::loader_on_esp(arch),
            ];
            for file in &esp {
                guest.write(&format!("boot/{file}"), b"old");
            }
            let [shim, mok, systemd_boot, grub] = secure::guest_paths(arch);
            for path in [&shim, &mok, &systemd_boot, &grub] {
                guest.write(path, format!("new {path}").as_bytes());
            }
            let incomplete = guest.path(&mok);
            std::fs::rename(&incomplete, guest.path("mok.away")).unwrap();
            guest.update_boot();
            for file in &esp {
                assert_eq!(guest.read(&format!("boot/{file}")), "old", "{file}");
            }
            std::fs::rename(guest.path("mok.away"), &incomplete).unwrap();
            guest.update_boot();
            let loader = [&shim, &mok, &systemd_boot, &grub][loader];
            assert_eq!(
                guest.read(&format!("boot/{}", esp[0])),
                format!("new {shim}")
            );
            assert_eq!(
                guest.read(&format!("boot/{}", esp[1])),
                format!("new {mok}")
            );
            assert_eq!(
                guest.read(&format!("boot/{}", esp[2])),
                format!("new {loader}")
            );
            assert!(!guest.path(&format!("boot/{}.c2vm-new", esp[2])).exists());
        }
    }

    #[test]
    fn kernels_are_found_under_fedora_and_alpine_names() {
        let guest = Guest::new(Bootloader::Syslinux);
        std::fs::remove_file(guest.path("boot/vmlinuz-6.1.0-9-amd64")).unwrap();
        guest.kernel(
            "vmlinuz-6.5.6-300.fc39.x86_64",
            "initramfs-6.5.6-300.fc39.x86_64.img",
        );
        guest.kernel(
            "vmlinuz-6.5.12-300.fc39.x86_64",
            "initramfs-6.5.12-300.fc39.x86_64.img",
        );
        guest.kernel(
            "vmlinuz-0-rescue-0123abcd",
            "initramfs-0-rescue-0123abcd.img",
        );
        guest.update_boot();
        assert_eq!(
            guest.booted(),
            (
                "vmlinuz-6.5.12-300.fc39.x86_64".to_string(),
                Some("vmlinuz-6.5.6-300.fc39.x86_64".to_string())
            )
        );
        assert!(guest
            .read("boot/syslinux/syslinux.cfg")
            .contains("INITRD /initramfs-6.5.12-300.fc39.x86_64.img\n"));

        let guest = Guest::new(Bootloader::Syslinux);
        std::fs::remove_file(guest.path("boot/vmlinuz-6.1.0-9-amd64")).unwrap();
        guest.kernel("vmlinuz-virt", "initramfs-virt");
        guest.update_boot();
        assert_eq!(guest.booted(), ("vmlinuz-virt".to_string(), None));
        assert!(guest
            .read("boot/loader/entries/c2vm.conf")
            .contains("initrd /initramfs-virt\n"));
    }

    /// sed's replacement text takes `&`, `|` and `\` as they are.
    #[test]
    fn a_kernel_name_with_seds_special_characters_is_written_as_it_is() {
        let guest = Guest::new(Bootloader::Grub);
        guest.kernel("vmlinuz-7.0&a|b\\c", "initrd.img-7.0&a|b\\c");
        guest.update_boot();
        let cfg = guest.read("boot/grub/grub.cfg");
        assert!(cfg.contains("linux /vmlinuz-7.0&a|b\\c "), "{cfg}");
    }

    #[test]
    fn a_kernel_without_an_initramfs_or_an_unmounted_esp_is_left_alone() {
        let guest = Guest::new(Bootloader::Syslinux);
        let converted = guest.esp_texts();
        guest.write("boot/vmlinuz-6.1.0-10-amd64", b"no initramfs yet");
        guest.update_boot();
        assert_eq!(guest.esp_texts(), converted);

        // No ESP at /boot: the kernel package wrote into the root's own directory.
        let guest = Guest::new(Bootloader::Syslinux);
        std::fs::remove_dir_all(guest.path("boot")).unwrap();
        guest.kernel("vmlinuz-6.1.0-9-amd64", "initrd.img-6.1.0-9-amd64");
        guest.update_boot();
        assert!(guest.esp_texts().is_empty());
    }
}
