//! The guest's installed packages, read from its package databases as the stream edit kept them
//! (no second read of the image): dpkg's `var/lib/dpkg/status` and Alpine's
//! `lib/apk/db/installed`, with the distribution from `os-release`. The rpm database is a
//! Berkeley DB or SQLite file c2vm does not read; its presence is said, never guessed at.
use super::tree::GuestTree;
use anyhow::{bail, Context, Result};

const DPKG_STATUS: &str = "var/lib/dpkg/status";
const APK_INSTALLED: &str = "lib/apk/db/installed";
/// os-release's two homes; `etc/os-release` is often a link to the other.
const OS_RELEASE: [&str; 2] = ["usr/lib/os-release", "etc/os-release"];
/// Where an rpm database lives (Fedora 36+ under /usr, older and RHEL-likes under /var).
const RPM_DATABASES: [&str; 4] = [
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
    "var/lib/rpm/rpmdb.sqlite",
    "var/lib/rpm/Packages",
    "var/lib/rpm/Packages.db",
];

/// What the stream edit copies as it passes, for [`read`]: the databases and os-release.
pub fn is_record(key: &[u8]) -> bool {
    [DPKG_STATUS, APK_INSTALLED]
        .iter()
        .chain(OS_RELEASE.iter())
        .any(|p| p.as_bytes() == key)
}

/// The package manager a package was installed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Dpkg,
    Apk,
}

impl Manager {
    /// Its database, as a guest path.
    pub fn database(self) -> &'static str {
        match self {
            Manager::Dpkg => "/var/lib/dpkg/status",
            Manager::Apk => "/lib/apk/db/installed",
        }
    }
}

/// One installed package, as its database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub manager: Manager,
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The source package (dpkg's `Source:`, apk's `o:`), where the database names it.
    pub source: Option<String>,
    /// dpkg's `Source: name (version)`, where it differs from the binary's.
    pub source_version: Option<String>,
    /// apk's `L:` as written there (not always a valid SPDX expression).
    pub license: Option<String>,
}

/// The distribution, from os-release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`: `debian`, `alpine`, `ubuntu`.
    pub id: String,
    /// `VERSION_ID`: `13`, `3.20.3`; empty on rolling releases (Debian sid, Arch).
    pub version_id: String,
    pub pretty_name: String,
}

/// Everything the guest's databases say, and what could not be read.
#[derive(Debug, Default)]
pub struct Inventory {
    pub os: Option<OsRelease>,
    pub packages: Vec<Package>,
    /// The databases read, as guest paths.
    pub read: Vec<&'static str>,
    /// One sentence each: a database that was damaged, too large to keep, or of a kind c2vm
    /// does not read.
    pub unread: Vec<String>,
}

impl Inventory {
    /// The installed package of that name (the machine's own architecture first, where a
    /// multiarch name is installed twice).
    pub fn package(&self, name: &str, arch: &str) -> Option<&Package> {
        let mut named = self.packages.iter().filter(|p| p.name == name);
        let first = named.clone().next();
        named.find(|p| p.arch == arch).or(first)
    }
}

/// Read the databases in `tree`. Nothing here fails the conversion: a database that cannot be
/// read is one sentence in [`Inventory::unread`].
pub fn read(tree: &GuestTree) -> Inventory {
    let mut inventory = Inventory {
        os: OS_RELEASE
            .iter()
            .find_map(|p| tree.contents(p.as_bytes()))
            .map(|text| parse_os_release(&String::from_utf8_lossy(&text))),
        ..Inventory::default()
    };
    for (key, manager) in [(DPKG_STATUS, Manager::Dpkg), (APK_INSTALLED, Manager::Apk)] {
        let path = manager.database();
        if tree.get(key.as_bytes()).is_none() {
            continue;
        }
        let Some(text) = tree.contents(key.as_bytes()) else {
            inventory.unread.push(format!(
                "{path} was not kept from the stream (larger than c2vm keeps, or not a regular file)"
            ));
            continue;
        };
        let parsed = match manager {
            Manager::Dpkg => parse_dpkg(&text),
            Manager::Apk => parse_apk(&text),
        };
        match parsed {
            Ok(packages) => {
                inventory.packages.extend(packages);
                inventory.read.push(path);
            }
            Err(e) => inventory
                .unread
                .push(format!("{path} could not be read: {e:#}")),
        }
    }
    if let Some(rpm) = RPM_DATABASES
        .iter()
        .find(|p| tree.get(p.as_bytes()).is_some())
    {
        inventory.unread.push(format!(
            "the rpm database (/{rpm}) is not read by c2vm: its packages are not listed"
        ));
    }
    inventory
}

/// `KEY=value` lines, values optionally quoted (os-release(5)).
fn parse_os_release(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value)
            .to_string();
        match key.trim() {
            "ID" => os.id = value,
            "VERSION_ID" => os.version_id = value,
            "PRETTY_NAME" => os.pretty_name = value,
            _ => {}
        }
    }
    os
}

/// dpkg's status file: RFC 822-like paragraphs, continuation lines indented. Only what is
/// installed is listed (`Status: install ok installed`, or `hold ok installed` for a package
/// held at its version): removed packages keep their configuration files there
/// (`deinstall ok config-files`).
fn parse_dpkg(data: &[u8]) -> Result<Vec<Package>> {
    let text = std::str::from_utf8(data).context("it is not UTF-8 text")?;
    let mut packages = Vec::new();
    for paragraph in paragraphs(text, true)? {
        let field = |name: &str| paragraph.field(name, true).map(|v| v.trim().to_string());
        if !is_installed(&field("Status").unwrap_or_default()) {
            continue;
        }
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else {
            bail!(
                "the installed package at line {} has no Package or no Version field",
                paragraph.line
            );
        };
        // `Source: glibc (2.41-12)`: the source's own version only where it differs.
        let (source, source_version) = match field("Source") {
            Some(s) => match s.split_once(' ') {
                Some((n, v)) => (
                    Some(n.to_string()),
                    Some(v.trim_matches(|c| c == '(' || c == ')').to_string()),
                ),
                None => (Some(s), None),
            },
            None => (None, None),
        };
        packages.push(Package {
            manager: Manager::Dpkg,
            name,
            version,
            arch: field("Architecture").unwrap_or_default(),
            source,
            source_version,
            license: None,
        });
    }
    Ok(packages)
}

/// dpkg's `Status: WANT ok STATE`: the files are on the disk in state `installed`, whatever is
/// wanted next (`install`, `hold`, or `deinstall` not yet done).
fn is_installed(status: &str) -> bool {
    let words: Vec<&str> = status.split_whitespace().collect();
    matches!(words.as_slice(), [_, "ok", "installed"])
}

/// apk's installed database: paragraphs of `K:value` lines (apk-tools' "database format").
fn parse_apk(data: &[u8]) -> Result<Vec<Package>> {
    let text = std::str::from_utf8(data).context("it is not UTF-8 text")?;
    let mut packages = Vec::new();
    for paragraph in paragraphs(text, false)? {
        let field = |name: &str| paragraph.field(name, false).map(str::to_string);
        let (Some(name), Some(version)) = (field("P"), field("V")) else {
            bail!(
                "the package at line {} has no P: or no V: line",
                paragraph.line
            );
        };
        packages.push(Package {
            manager: Manager::Apk,
            name,
            version,
            arch: field("A").unwrap_or_default(),
            source: field("o"),
            source_version: None,
            license: field("L"),
        });
    }
    Ok(packages)
}

/// One paragraph of a `Key:value` file.
struct Paragraph<'t> {
    /// The line it starts on.
    line: usize,
    fields: Vec<(&'t str, String)>,
}

impl Paragraph<'_> {
    /// A field's value; dpkg's names are case-insensitive (deb822(5)), apk's are not.
    fn field(&self, name: &str, any_case: bool) -> Option<&str> {
        (self.fields.iter())
            .find(|(k, _)| match any_case {
                true => k.eq_ignore_ascii_case(name),
                false => *k == name,
            })
            .map(|(_, v)| v.as_str())
    }
}

/// The paragraphs of a `Key:value` file; with `continued`, a line starting with a space or tab
/// goes on the field before it.
fn paragraphs(text: &str, continued: bool) -> Result<Vec<Paragraph<'_>>> {
    let mut out = Vec::new();
    let mut current: Option<Paragraph> = None;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.trim().is_empty() {
            out.extend(current.take());
            continue;
        }
        let fields = &mut current
            .get_or_insert_with(|| Paragraph {
                line: n,
                fields: Vec::new(),
            })
            .fields;
        if continued && (line.starts_with(' ') || line.starts_with('\t')) {
            let Some((_, value)) = fields.last_mut() else {
                bail!("line {n} continues a field, and there is none before it");
            };
            value.push('\n');
            value.push_str(line.trim());
            continue;
        }
        match line.split_once(':') {
            Some((key, value)) if is_field_name(key) => fields.push((key, value.to_string())),
            _ => bail!("line {n} is not a `Field: value` line"),
        }
    }
    out.extend(current);
    Ok(out)
}

/// A field name: printable ASCII, no spaces or colons (deb822(5)).
fn is_field_name(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tree::{tests::tree, Kind};

    const STATUS: &str = "\
Package: openssl
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 3.5.1-1
Depends: libc6 (>= 2.34),
 libssl3t64 (>= 3.5.1)
Conffiles:
 /etc/ssl/openssl.cnf 12345
Description: Secure Sockets Layer toolkit
 This package contains the openssl binary.
 .
 More text.

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: halfgone
Status: install reinstreq half-installed
Architecture: amd64
Version: 2.0

Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc (2.41-12)
Version: 2.41-12+b1

Package: libc6
Status: hold ok installed
Architecture: i386
Source: glibc
Version: 1:2.41-12
";

    #[test]
    fn dpkg_status_lists_installed_packages_only() {
        let packages = parse_dpkg(STATUS.as_bytes()).unwrap();
        let names: Vec<_> = packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.arch.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("openssl", "3.5.1-1", "amd64"),
                ("libc6", "2.41-12+b1", "amd64"),
                ("libc6", "1:2.41-12", "i386")
            ]
        );
        assert_eq!(packages[1].source.as_deref(), Some("glibc"));
        assert_eq!(packages[1].source_version.as_deref(), Some("2.41-12"));
        assert_eq!(packages[2].source_version, None);
        assert_eq!(packages[0].source, None);
    }

    #[test]
    fn a_damaged_dpkg_status_is_an_error_naming_the_line() {
        let err = parse_dpkg(b"Package: a\nStatus: install ok installed\nthis is not a field\n")
            .unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = parse_dpkg(b" continued\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = parse_dpkg(b"Status: install ok installed\nVersion: 1\n").unwrap_err();
        assert!(err.to_string().contains("no Package"), "{err}");
        assert!(parse_dpkg(b"Package: a\xff\n").is_err());
    }

    #[test]
    fn apk_installed_lists_every_paragraph() {
        let db = "\
C:Q1abc=
P:busybox
V:1.36.1-r29
A:x86_64
L:GPL-2.0-only
o:busybox
F:bin
R:busybox

P:musl
V:1.2.5-r0
A:x86_64
L:MIT
o:musl
";
        let packages = parse_apk(db.as_bytes()).unwrap();
        assert_eq!(packages.len(), 2);
        assert_eq!(packages[0].name, "busybox");
        assert_eq!(packages[0].version, "1.36.1-r29");
        assert_eq!(packages[0].license.as_deref(), Some("GPL-2.0-only"));
        assert_eq!(packages[1].source.as_deref(), Some("musl"));
        assert!(parse_apk(b"P:x\nno colon here\n").is_err());
        assert!(parse_apk(b"P:x\n").is_err());
    }

    #[test]
    fn os_release_values_are_unquoted() {
        let os = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nID=debian\nVERSION_ID='13'\n",
        );
        assert_eq!(os.id, "debian");
        assert_eq!(os.version_id, "13");
        assert_eq!(os.pretty_name, "Debian GNU/Linux 13 (trixie)");
    }

    #[test]
    fn the_inventory_says_what_it_could_not_read() {
        let t = tree(&[
            (
                "etc/os-release",
                Kind::File,
                0o644,
                b"ID=fedora\nVERSION_ID=42\n",
            ),
            ("var/lib/dpkg/status", Kind::File, 0o644, b"garbage line\n"),
            (
                "lib/apk/db/installed",
                Kind::File,
                0o644,
                b"P:a\nV:1\nA:x86_64\n",
            ),
            ("usr/lib/sysimage/rpm/rpmdb.sqlite", Kind::File, 0o644, b""),
        ]);
        let inv = read(&t);
        assert_eq!(inv.os.as_ref().unwrap().id, "fedora");
        assert_eq!(inv.packages.len(), 1);
        assert_eq!(inv.read, ["/lib/apk/db/installed"]);
        assert_eq!(inv.unread.len(), 2, "{:?}", inv.unread);
        assert!(inv.unread[0].starts_with("/var/lib/dpkg/status could not be read: line 1"));
        assert!(inv.unread[1].contains("rpm database"));
    }
}
