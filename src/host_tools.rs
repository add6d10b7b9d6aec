//! Which package provides each program and file c2vm needs on the host, for the hint a missing
//! one gets. The table is `host-packages.txt` at the top of the repository, not a Rust list:
//! `scripts/install-host-deps` reads the same file, and the tests below check the Dockerfile and
//! the scripts against it, so a package name has one home.

const TABLE: &str = include_str!("../host-packages.txt");

/// One row of the table: what is needed and who provides it.
struct Row {
    need: &'static str,
    /// `A|B` where a release renamed the package: the newer name first.
    debian: &'static str,
    fedora: Option<&'static str>,
    /// `convert`, `run`, `setup` or `test` (the table's header says what each means); only the
    /// tests that check the scripts and the Dockerfile read it.
    #[cfg_attr(not(test), allow(dead_code))]
    set: &'static str,
}

fn rows() -> impl Iterator<Item = Row> {
    TABLE
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            Some(Row {
                need: fields.next()?,
                debian: fields.next()?,
                fedora: fields.next().filter(|p| *p != "-"),
                set: fields.next()?,
            })
        })
}

fn row(need: &str) -> Option<Row> {
    rows().find(|r| r.need == need)
}

/// The Debian package that provides `need` (a program or a file's path); for a need the table
/// does not know, its own name, the usual guess.
pub fn package_for(need: &str) -> &str {
    match row(need) {
        Some(r) => r.debian.split('|').next().unwrap_or(r.debian),
        None => need,
    }
}

/// How to install what provides `need`, for an error message:
/// "install it with `apt-get install e2fsprogs` (Fedora: `dnf install e2fsprogs`)".
pub fn install_hint(need: &str) -> String {
    let mut hint = format!("install it with `apt-get install {}`", package_for(need));
    if let Some(r) = row(need) {
        for older in r.debian.split('|').skip(1) {
            hint.push_str(&format!(" (`{older}` on older releases)"));
        }
        if let Some(fedora) = r.fedora {
            hint.push_str(&format!(" (Fedora: `dnf install {fedora}`)"));
        }
    }
    hint
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    const SETS: &[&str] = &["convert", "run", "setup", "arm64", "test"];

    fn repo_file(path: &str) -> String {
        let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
    }

    /// The Debian packages of the rows of `sets`, each `A|B` as written.
    fn packages(sets: &[&str]) -> BTreeSet<&'static str> {
        rows()
            .filter(|r| sets.contains(&r.set))
            .map(|r| r.debian)
            .collect()
    }

    /// Every Debian package name the table has, alternatives split.
    fn all_names() -> BTreeSet<&'static str> {
        rows().flat_map(|r| r.debian.split('|')).collect()
    }

    #[test]
    fn table_rows_are_well_formed() {
        let mut needs = BTreeSet::new();
        for line in TABLE.lines() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 4, "need, debian, fedora, for: {line}");
            assert!(SETS.contains(&fields[3]), "unknown set: {line}");
            assert!(needs.insert(fields[0]), "{} twice", fields[0]);
        }
        assert!(needs.len() > 20);
    }

    #[test]
    fn debugfs_hint_names_e2fsprogs() {
        let hint = install_hint("debugfs");
        assert!(hint.contains("`apt-get install e2fsprogs`"), "{hint}");
        assert!(hint.contains("`dnf install e2fsprogs`"), "{hint}");
        assert_eq!(package_for("qemu-system-x86_64"), "qemu-system-x86");
        assert!(install_hint("libarchive.so.13").contains("`libarchive13` on older releases"));
        assert_eq!(
            install_hint("no-such-tool"),
            "install it with `apt-get install no-such-tool`"
        );
    }

    /// Program names in `Cmd::new("…"`, `require("…")` and `Command::new("…"` outside the test
    /// modules of `src/`: the programs c2vm runs.
    fn programs_run(dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                programs_run(&path, found);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for call in ["Cmd::new(\"", "require(\"", "Command::new(\""] {
                for (at, _) in code.match_indices(call) {
                    let rest = &code[at + call.len()..];
                    found.insert(rest[..rest.find('"').unwrap()].to_string());
                }
            }
        }
    }

    #[test]
    fn every_program_and_file_c2vm_checks_is_in_the_table() {
        let mut programs = BTreeSet::new();
        programs_run(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut programs,
        );
        assert!(programs.contains("mke2fs") && programs.contains("debugfs"));
        for bootloader in [
            crate::boot::Bootloader::Syslinux,
            crate::boot::Bootloader::Grub,
        ] {
            for arch in crate::arch::Arch::ALL {
                let (tools, files) = crate::boot::host_needs(bootloader, arch);
                programs.extend(tools.iter().map(|s| s.to_string()).chain(files));
            }
            // Needed only without the guest's Secure Boot chain, so checked then.
            programs.insert(crate::boot::syslinux::systemd_boot_efi(
                crate::arch::Arch::Arm64,
            ));
            programs.insert(crate::boot::grub::efi_modules(crate::arch::Arch::Arm64));
        }
        let unknown: Vec<_> = programs.iter().filter(|p| row(p).is_none()).collect();
        assert!(unknown.is_empty(), "add to host-packages.txt: {unknown:?}");
    }

    /// The packages `script` names: words after `apt-get install` (options, their arguments and
    /// shell expansions left out), and inside `need+=(…)` and `for p in …; do`.
    fn named_packages(script: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        // A `RUN` line is a Dockerfile's inside a script: it installs into an image, not the host.
        for line in script
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("RUN "))
        {
            let words: Vec<&str> = if let Some((_, rest)) = line.split_once("apt-get install") {
                rest.split_whitespace()
                    .take_while(|w| !w.starts_with('>') && !w.contains(['`', ';', '|', '&']))
                    .collect()
            } else if let Some((_, rest)) = line.split_once("need+=(") {
                rest.split(')')
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect()
            } else if let Some(list) = line
                .strip_prefix("for p in ")
                .and_then(|l| l.strip_suffix("; do"))
            {
                list.split_whitespace().collect()
            } else {
                continue;
            };
            let mut option_argument = false;
            for w in words {
                if std::mem::take(&mut option_argument) {
                    continue;
                }
                option_argument = w == "-t";
                if !w.starts_with(['-', '$', '"', '\\']) {
                    names.insert(w.trim_end_matches(['"', '\'']).to_string());
                }
            }
        }
        names
    }

    #[test]
    fn scripts_name_only_packages_of_the_table() {
        let known = all_names();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for name in named_packages(&text) {
                assert!(
                    known.contains(name.as_str()),
                    "{} installs `{name}`, which host-packages.txt lacks",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn install_host_deps_takes_its_packages_from_the_table() {
        let script = repo_file("scripts/install-host-deps");
        assert!(script.contains("host-packages.txt"), "it reads the table");
        assert!(script.contains("sets=\" convert run setup \""));
        assert!(script.contains("--test) sets+=\"arm64 test \""));
        // The user's set is all the quickstart installs; the test suite adds the rest.
        let quickstart = repo_file("scripts/quickstart");
        assert!(quickstart.lines().any(|l| l == "scripts/install-host-deps"));
        let test = repo_file("scripts/test");
        assert!(test
            .lines()
            .any(|l| l == "scripts/install-host-deps --test"));
    }

    /// The packages of the Dockerfile's `apt-get install` command.
    fn dockerfile_packages(dockerfile: &str) -> BTreeSet<String> {
        let (_, rest) = dockerfile
            .split_once("apt-get install")
            .expect("the Dockerfile installs packages");
        let command = rest.split("&&").next().unwrap_or_default();
        command
            .split_whitespace()
            .filter(|w| !w.starts_with('-') && *w != "\\")
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn dockerfile_installs_exactly_what_convert_needs() {
        let installed = dockerfile_packages(&repo_file("scripts/container-image.Dockerfile"));
        let wanted = packages(&["convert"]);
        for want in &wanted {
            assert!(
                want.split('|').any(|p| installed.contains(p)),
                "the Dockerfile lacks {want}, which host-packages.txt needs for convert"
            );
        }
        for name in &installed {
            assert!(
                wanted.iter().any(|w| w.split('|').any(|p| p == name)),
                "the Dockerfile installs `{name}`, not a convert package of host-packages.txt"
            );
        }
    }

    #[test]
    fn the_parsers_see_what_they_must() {
        let script = "need+=(curl ca-certificates)\n\
                      for p in podman skopeo; do\n\
                      $SUDO env X=y apt-get install -y -qq -t bookworm-backports e2fsprogs >/dev/null\n\
                      apt-get install -y \"${need[@]}\"\n\
                      echo \"missing: apt-get install debian-archive-keyring\" >&2";
        let names: Vec<_> = named_packages(script).into_iter().collect();
        assert_eq!(
            names,
            [
                "ca-certificates",
                "curl",
                "debian-archive-keyring",
                "e2fsprogs",
                "podman",
                "skopeo"
            ]
        );
        let dockerfile = "RUN apt-get update \\\n && apt-get install -y --no-install-recommends \\\n  a b \\\n  c \\\n && rm -rf x";
        let names: Vec<_> = dockerfile_packages(dockerfile).into_iter().collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
